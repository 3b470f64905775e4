//! `GET /v1/users/{user_id}/presence`: one user, with devices.

use axum::{extract::State, response::Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::CallerApp,
    error::{ApiError, ErrorResponse},
    extract::ApiPath,
    presence_json::{RESULT_JSON_BYTES, UserPresenceJson, json_response},
    routes::check_user_id,
    state::AppState,
};

/// One user's presence (with `devices`) and the snapshot's feed position.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPresenceResponse<'a> {
    #[serde(flatten)]
    pub presence: UserPresenceJson<'a>,
    /// The app's event `seq` this snapshot reflects.
    pub as_of_seq: u64,
}

/// Presence of one user of the calling app, with devices.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/presence",
    tag = "presence",
    // The pattern is presence_proto::limits::ID_PATTERN (an attribute takes only a literal).
    params(("user_id" = String, Path, min_length = 1, max_length = 256,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$",
        description = "The app's user id, 1 to 256 bytes of UTF-8 without control characters, percent-encoded")),
    responses(
        (status = 200, description = "The user's presence; unknown users are `offline`", body = UserPresenceResponse),
        (status = 400, description = "`invalid_user_id`, `invalid_path` or `bad_request`", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn presence(
    app: CallerApp,
    State(state): State<AppState>,
    ApiPath(user_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    check_user_id(&user_id)?;
    let reply = state.registry.query(app.id(), vec![user_id], true).await?;
    let Some(first) = reply.results.first() else {
        tracing::error!("registry answered a one-user query with no result");
        return Err(ApiError::Internal);
    };
    let response =
        UserPresenceResponse { presence: UserPresenceJson::new(first, true), as_of_seq: reply.as_of_seq };
    Ok(json_response(&response, RESULT_JSON_BYTES * 4))
}
