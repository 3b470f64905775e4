//! `GET /v1/events`: the calling app's feed, paged by `seq`, in the callbacks' JSON.

use axum::{Json, extract::State};
use presence_proto::json::PresenceEventJson;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::CallerApp,
    error::{ApiError, ErrorResponse},
    extract::ApiQuery,
    routes::check_limit,
    state::AppState,
};

pub use presence_proto::limits::{DEFAULT_EVENTS_PAGE as DEFAULT_LIMIT, MAX_EVENTS_PAGE as MAX_LIMIT};
/// `seq` is a Postgres `bigint`: a cursor past its range names no event, and a client that sends
/// one has a bug worth telling it about.
pub const MAX_AFTER_SEQ: u64 = i64::MAX as u64;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Events with a `seq` greater than this, 0 to 2^63-1. Default 0 (from the start).
    #[serde(default)]
    #[param(default = 0, minimum = 0, maximum = 9223372036854775807_u64)]
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
        (status = 400, description = "`invalid_limit`, `invalid_query` or `bad_request`", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn events(
    app: CallerApp,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<EventsParams>,
) -> Result<Json<EventsResponse>, ApiError> {
    check_limit(params.limit, MAX_LIMIT)?;
    if params.after_seq > MAX_AFTER_SEQ {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("after_seq must be 0 to {MAX_AFTER_SEQ}, got {}", params.after_seq),
        ));
    }
    let events = state.registry.read_events(app.id(), params.after_seq, params.limit).await?;
    let next_after_seq = events.last().map_or(params.after_seq, |e| e.seq);
    // The registry reads by app; this filter only guards against a registry bug leaking events.
    let events = events.iter().filter(|e| e.app_id == app.id()).map(PresenceEventJson::from).collect();
    Ok(Json(EventsResponse { events, next_after_seq }))
}
