//! `GET /v1/events`: the calling app's feed, paged by `seq`, in the callbacks' JSON.

use axum::{Json, extract::State};
use presence_proto::json::PresenceEventJson;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::CallerApp,
    error::{ApiError, ErrorResponse},
    extract::ApiQuery,
    state::AppState,
};

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Events with a `seq` greater than this. Default 0 (from the start).
    #[serde(default)]
    #[param(default = 0)]
    pub after_seq: u64,
    /// Most events returned, 1 to 1000. Default 100.
    #[serde(default = "default_limit")]
    #[param(default = 100, minimum = 1, maximum = 1000)]
    pub limit: u32,
}

fn default_limit() -> u32 {
    DEFAULT_LIMIT
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventsResponse {
    /// In `seq` order; each exactly as the callbacks POST it.
    pub events: Vec<PresenceEventJson>,
    /// The `after_seq` of the next page: the last event's `seq`, or the request's when empty.
    pub next_after_seq: u64,
}

/// The calling app's presence events after a cursor.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(EventsParams),
    responses(
        (status = 200, description = "A page of events (empty once caught up)", body = EventsResponse),
        (status = 400, description = "`invalid_limit` or `invalid_query`", body = ErrorResponse),
        (status = 401, description = "Missing or unknown API key", body = ErrorResponse),
        (status = 503, description = "Registry unavailable", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn events(
    app: CallerApp,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<EventsParams>,
) -> Result<Json<EventsResponse>, ApiError> {
    if !(1..=MAX_LIMIT).contains(&params.limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1 to {MAX_LIMIT}, got {}", params.limit),
        ));
    }
    let events = state.registry.read_events(app.id(), params.after_seq, params.limit).await?;
    let next_after_seq = events.last().map_or(params.after_seq, |e| e.seq);
    // The registry reads by app; this filter only guards against a registry bug leaking events.
    let events = events.iter().filter(|e| e.app_id == app.id()).map(PresenceEventJson::from).collect();
    Ok(Json(EventsResponse { events, next_after_seq }))
}
