//! `POST /v1/users/{user_id}/kick`: an admin kick of some or all of a user's devices.

use axum::{Json, extract::State};
use presence_proto::{json::KickedDeviceJson, v1::Platform};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    auth::CallerApp,
    error::{ApiError, ErrorResponse},
    extract::{ApiPath, OptionalJson},
    routes::check_user_id,
    state::AppState,
};

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KickBody {
    /// Only devices of these platforms; absent (or no body at all) = every device. An empty list
    /// is refused (`no_platforms`) rather than read as "all".
    #[schema(example = json!(["ios"]))]
    pub platforms: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KickResponse {
    /// The devices forced offline; each received `Kicked{reason:"admin"}`.
    pub kicked_devices: Vec<KickedDeviceJson>,
}

fn platforms(names: Option<Vec<String>>) -> Result<Vec<Platform>, ApiError> {
    let Some(names) = names else { return Ok(Vec::new()) };
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "no_platforms",
            "platforms is empty; omit it to kick every device",
        ));
    }
    names
        .iter()
        .map(|name| {
            Platform::from_name(name)
                .map_err(|err| ApiError::bad_request("unknown_platform", err.to_string()))
        })
        .collect()
}

/// Forces devices of one user of the calling app offline.
#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/kick",
    tag = "presence",
    params(("user_id" = String, Path, description = "The app's user id (1 to 256 bytes)")),
    request_body(content = Option<KickBody>, description = "Optional; absent = every device"),
    responses(
        (status = 200, description = "The devices forced offline (none if the user had none)", body = KickResponse),
        (status = 400, description = "`unknown_platform`, `no_platforms`, `invalid_user_id`, \
            `invalid_json` or `invalid_body`", body = ErrorResponse),
        (status = 401, description = "Missing or unknown API key", body = ErrorResponse),
        (status = 503, description = "Registry unavailable", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn kick(
    app: CallerApp,
    State(state): State<AppState>,
    ApiPath(user_id): ApiPath<String>,
    OptionalJson(body): OptionalJson<KickBody>,
) -> Result<Json<KickResponse>, ApiError> {
    check_user_id(&user_id)?;
    let platforms = platforms(body.unwrap_or_default().platforms)?;
    let kicked = state.registry.kick(app.id(), &user_id, &platforms).await?;
    tracing::info!(app_id = app.id(), %user_id, kicked = kicked.len(), "admin kick");
    Ok(Json(KickResponse { kicked_devices: kicked.iter().map(KickedDeviceJson::from).collect() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_names_follow_the_contract() {
        assert_eq!(platforms(None).unwrap(), vec![]);
        assert_eq!(
            platforms(Some(vec!["ios".into(), "android_pad".into()])).unwrap(),
            vec![Platform::Ios, Platform::AndroidPad]
        );
        assert_eq!(platforms(Some(vec!["IOS".into()])).unwrap_err().code(), "unknown_platform");
        assert_eq!(platforms(Some(vec![])).unwrap_err().code(), "no_platforms");
    }
}
