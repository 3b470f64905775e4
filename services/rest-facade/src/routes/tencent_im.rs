//! Tencent IM compatibility for apps that migrate: `POST /v4/openim/query_online_status` answers
//! in Tencent IM's shapes, so an app switches by changing a host name (docs/http-api.md, "Tencent
//! IM compatibility"). The key travels as `usersig` (with `sdkappid` = the app id) or as the usual
//! `Authorization: Bearer`. Tencent IM answers every error with HTTP 200; here an error also has
//! its HTTP status (400, 401, 503), with the same envelope, so generic HTTP clients see it too.

use axum::{
    Json,
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use presence_proto::{
    limits::{MAX_IDS_PER_QUERY, is_valid_id},
    v1::{DeviceStatus, Platform, PresenceStatus, UserPresence},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{auth::bearer_key, error::ApiError, state::AppState};

/// Tencent IM's error codes, as its clients check them.
mod code {
    /// The signature (here: the API key) is not valid.
    pub const BAD_SIGNATURE: i32 = 70003;
    /// The body is not valid JSON of the expected shape.
    pub const BAD_JSON: i32 = 90001;
    /// A field is missing or out of range.
    pub const BAD_FIELD: i32 = 90002;
    /// Server error; retry.
    pub const INTERNAL: i32 = 91000;
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
// Tencent IM's clients send every one of these; the last three are accepted and not used.
#[allow(dead_code)]
pub struct TencentParams {
    /// The app id.
    pub sdkappid: Option<String>,
    /// The app's REST API key (what Tencent IM calls the UserSig of the admin account).
    pub usersig: Option<String>,
    /// The admin account (ignored).
    pub identifier: Option<String>,
    /// A random number (ignored).
    pub random: Option<String>,
    /// `json` (ignored).
    pub contenttype: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct QueryOnlineStatus {
    /// 1 to 500 user ids.
    #[schema(schema_with = crate::routes::user_ids_schema)]
    pub To_Account: Vec<String>,
    /// 1: also list each user's devices (`Detail`). A JSON number: `1.0` is 1 as well.
    #[schema(value_type = Option<u8>, minimum = 0, maximum = 1)]
    #[serde(default)]
    pub IsNeedDetail: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[allow(non_snake_case)]
pub struct TencentStatus {
    pub To_Account: String,
    /// `Online`, `PushOnline` or `Offline`.
    pub State: String,
    /// Only with `IsNeedDetail: 1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub Detail: Option<Vec<TencentDevice>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[allow(non_snake_case)]
pub struct TencentDevice {
    /// `IPhone`, `Android`, `Web`, `Windows`, `iPad`, `Mac`, `Linux`, `AndroidPad`, `MiniProgram`.
    pub Platform: String,
    /// `Online` or `PushOnline`.
    pub Status: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[allow(non_snake_case)]
pub struct TencentResponse {
    /// `OK` or `FAIL`.
    pub ActionStatus: String,
    pub ErrorInfo: String,
    /// 0 when `OK`.
    pub ErrorCode: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub QueryResult: Option<Vec<TencentStatus>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ErrorList: Option<Vec<serde_json::Value>>,
}

fn fail(status: StatusCode, code: i32, info: impl Into<String>) -> Response {
    let body = TencentResponse {
        ActionStatus: "FAIL".into(),
        ErrorInfo: info.into(),
        ErrorCode: code,
        QueryResult: None,
        ErrorList: None,
    };
    (status, Json(body)).into_response()
}

/// Tencent IM's names of our platforms.
fn platform_name(raw: i32) -> &'static str {
    match Platform::try_from(raw).unwrap_or(Platform::Unspecified) {
        Platform::Ios => "IPhone",
        Platform::Android => "Android",
        Platform::Web => "Web",
        Platform::Windows => "Windows",
        Platform::Ipad => "iPad",
        Platform::Mac => "Mac",
        Platform::Linux => "Linux",
        Platform::AndroidPad => "AndroidPad",
        Platform::MiniProgram => "MiniProgram",
        Platform::Unspecified => "Unknown",
    }
}

fn state_name(status: PresenceStatus) -> &'static str {
    match status {
        PresenceStatus::Online => "Online",
        PresenceStatus::PushOnline => "PushOnline",
        PresenceStatus::Offline | PresenceStatus::Unspecified => "Offline",
    }
}

fn tencent_status(presence: &UserPresence, detail: bool) -> TencentStatus {
    let devices = presence.devices.iter().map(|d| TencentDevice {
        Platform: platform_name(d.platform).to_owned(),
        Status: if d.status() == DeviceStatus::PushOnline { "PushOnline" } else { "Online" }.to_owned(),
    });
    TencentStatus {
        To_Account: presence.user_id.clone(),
        State: state_name(presence.status()).to_owned(),
        Detail: detail.then(|| devices.collect()),
    }
}

/// The app of the request's key: `usersig` (with `sdkappid` naming that app) or Bearer.
fn caller(state: &AppState, params: &TencentParams, headers: &HeaderMap) -> Option<String> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_key);
    let key = params.usersig.as_deref().or(bearer).filter(|k| !k.is_empty())?;
    let app = state.apps.find_by_api_key(key)?;
    match &params.sdkappid {
        Some(sdkappid) if *sdkappid != app.app_id => None,
        _ => Some(app.app_id.clone()),
    }
}

/// Tencent IM's `query_online_status`: the status of 1 to 500 users of the calling app.
#[utoipa::path(
    post,
    path = "/v4/openim/query_online_status",
    tag = "tencent-im",
    params(TencentParams),
    request_body = QueryOnlineStatus,
    responses(
        (status = 200, description = "`ActionStatus: OK` with `QueryResult` in request order", body = TencentResponse),
        (status = 400, description = "`ActionStatus: FAIL`: `ErrorCode` 90001 (not JSON of this shape) or 90002 \
            (`To_Account` empty, over 500 or with an invalid id)", body = TencentResponse),
        (status = 401, description = "`ActionStatus: FAIL`, `ErrorCode` 70003: no valid key for `sdkappid`",
            body = TencentResponse),
    ),
    security((), ("api_key" = []))
)]
pub async fn query_online_status(
    State(state): State<AppState>,
    Query(params): Query<TencentParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(app_id) = caller(&state, &params, &headers) else {
        return fail(StatusCode::UNAUTHORIZED, code::BAD_SIGNATURE, "usersig or sdkappid is not valid");
    };
    let request: QueryOnlineStatus = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return fail(StatusCode::BAD_REQUEST, code::BAD_JSON, format!("the body is not valid: {err}"));
        }
    };
    if request.To_Account.is_empty() || request.To_Account.len() > MAX_IDS_PER_QUERY {
        return fail(StatusCode::BAD_REQUEST, code::BAD_FIELD, "To_Account must hold 1 to 500 accounts");
    }
    let need_detail = request.IsNeedDetail.unwrap_or(0.0);
    if !(need_detail == 0.0 || need_detail == 1.0) || !request.To_Account.iter().all(|id| is_valid_id(id)) {
        return fail(
            StatusCode::BAD_REQUEST,
            code::BAD_FIELD,
            "IsNeedDetail must be 0 or 1, accounts 1 to 256 bytes",
        );
    }
    let detail = need_detail == 1.0;
    match state.registry.query(&app_id, request.To_Account, detail).await {
        Ok(reply) => Json(TencentResponse {
            ActionStatus: "OK".into(),
            ErrorInfo: String::new(),
            ErrorCode: 0,
            QueryResult: Some(reply.results.iter().map(|p| tencent_status(p, detail)).collect()),
            ErrorList: Some(Vec::new()),
        })
        .into_response(),
        Err(ApiError::Unavailable) => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            code::INTERNAL,
            "the presence registry is unavailable; retry",
        ),
        Err(err) => fail(err.status(), code::INTERNAL, err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_proto::v1::DevicePresence;

    #[test]
    fn a_user_is_shown_with_tencent_names() {
        let presence = UserPresence {
            user_id: "u1".into(),
            status: PresenceStatus::Online as i32,
            devices: vec![
                DevicePresence {
                    platform: Platform::Ios as i32,
                    status: DeviceStatus::Online as i32,
                    ..Default::default()
                },
                DevicePresence {
                    platform: Platform::Android as i32,
                    status: DeviceStatus::PushOnline as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let json = serde_json::to_value(tencent_status(&presence, true)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"To_Account": "u1", "State": "Online", "Detail": [
                {"Platform": "IPhone", "Status": "Online"}, {"Platform": "Android", "Status": "PushOnline"}]})
        );
        let plain = serde_json::to_value(tencent_status(&presence, false)).unwrap();
        assert!(plain.get("Detail").is_none());
    }
}
