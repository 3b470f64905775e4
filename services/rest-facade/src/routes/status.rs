//! `PUT /v1/users/{user_id}/status`: the app backend sets (or clears) a user's custom status.

use axum::{Json, extract::State};
use presence_proto::limits::{MAX_CUSTOM_STATUS_LEN, is_valid_text};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    auth::CallerApp,
    error::{ApiError, ErrorResponse},
    extract::{ApiJson, ApiPath},
    routes::check_user_id,
    state::AppState,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    /// At most 256 bytes of UTF-8 without control characters; `""` clears it.
    #[schema(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$", example = "in a meeting")]
    pub custom_status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    pub custom_status: String,
    /// The user's event counter after the change (unchanged if the status already was this one).
    pub user_version: u64,
}

/// Sets the custom status of one user of the calling app: shared by the user's devices, pushed
/// to subscribers, and an event (`action: "status"`, reason `custom_status`). It lasts while the
/// user is online or push_online.
#[utoipa::path(
    put,
    path = "/v1/users/{user_id}/status",
    tag = "presence",
    // The pattern is presence_proto::limits::ID_PATTERN (an attribute takes only a literal).
    params(("user_id" = String, Path, min_length = 1, max_length = 256,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$",
        description = "The app's user id, 1 to 256 bytes of UTF-8 without control characters, percent-encoded")),
    request_body = StatusBody,
    responses(
        (status = 200, description = "The custom status is set", body = StatusResponse),
        (status = 400, description = "`invalid_custom_status`, `invalid_user_id`, `invalid_json`, \
            `invalid_body`, `invalid_path` or `bad_request`", body = ErrorResponse),
        (status = 409, description = "`user_offline`: the user is offline", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn set_status(
    app: CallerApp,
    State(state): State<AppState>,
    ApiPath(user_id): ApiPath<String>,
    ApiJson(body): ApiJson<StatusBody>,
) -> Result<Json<StatusResponse>, ApiError> {
    check_user_id(&user_id)?;
    if !is_valid_text(&body.custom_status, MAX_CUSTOM_STATUS_LEN) {
        return Err(ApiError::bad_request(
            "invalid_custom_status",
            format!("custom_status must be at most {MAX_CUSTOM_STATUS_LEN} bytes without control characters"),
        ));
    }
    let user_version = state.registry.set_custom_status(app.id(), &user_id, &body.custom_status).await?;
    Ok(Json(StatusResponse { custom_status: body.custom_status, user_version }))
}
