//! `POST /v1/presence/query`: the presence of up to 500 users at once.

use axum::{extract::State, response::Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    auth::CallerApp,
    error::{ApiError, ErrorResponse},
    extract::ApiJson,
    presence_json::{RESULT_JSON_BYTES, UserPresenceJson, json_response},
    routes::check_user_id,
    state::AppState,
};

/// Most users one query may name (http-api.md; the registry enforces the same bound).
pub use presence_proto::limits::MAX_IDS_PER_QUERY as MAX_QUERY_USERS;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// 1 to 500 user ids; results come back in this order (duplicates included).
    #[schema(schema_with = crate::routes::user_ids_schema)]
    pub user_ids: Vec<String>,
    /// List each user's devices. Default false.
    #[serde(default)]
    #[schema(default = false)]
    pub detail: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryResponse<'a> {
    /// One per requested id, in request order; unknown users are `offline`.
    pub results: Vec<UserPresenceJson<'a>>,
    /// The app's event `seq` this snapshot reflects: events after it are not in it.
    pub as_of_seq: u64,
}

/// Presence of several users of the calling app.
#[utoipa::path(
    post,
    path = "/v1/presence/query",
    tag = "presence",
    request_body = QueryBody,
    responses(
        (status = 200, description = "Presence of each user, in request order", body = QueryResponse),
        (status = 400, description = "`no_user_ids`, `too_many_user_ids`, `invalid_user_id`, \
            `invalid_json`, `invalid_body` or `bad_request`", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn query(
    app: CallerApp,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<QueryBody>,
) -> Result<Response, ApiError> {
    if body.user_ids.is_empty() {
        return Err(ApiError::bad_request("no_user_ids", "user_ids must name at least one user"));
    }
    if body.user_ids.len() > MAX_QUERY_USERS {
        return Err(ApiError::bad_request(
            "too_many_user_ids",
            format!("user_ids names {} users; at most {MAX_QUERY_USERS} per query", body.user_ids.len()),
        ));
    }
    body.user_ids.iter().try_for_each(|id| check_user_id(id))?;
    let reply = state.registry.query(app.id(), body.user_ids, body.detail).await?;
    let results: Vec<_> = reply.results.iter().map(|p| UserPresenceJson::new(p, body.detail)).collect();
    let size = results.len() * RESULT_JSON_BYTES * if body.detail { 3 } else { 1 };
    Ok(json_response(&QueryResponse { results, as_of_seq: reply.as_of_seq }, size))
}
