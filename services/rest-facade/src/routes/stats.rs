//! `GET /v1/stats`: how many of the app's users and devices are online now.

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::CallerApp,
    error::{ApiError, ErrorResponse},
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    /// Users with a connected device.
    pub online_users: u64,
    /// Users with no connected device but a push-enabled one that disconnected without logging out.
    pub push_online_users: u64,
    /// Connected devices by platform name; platforms with none are left out.
    #[schema(example = json!({"ios": 120, "web": 31}))]
    pub online_devices: BTreeMap<String, u64>,
    /// The app's event `seq` these counts reflect at least.
    pub as_of_seq: u64,
}

/// Online counts of the calling app, kept by the registries as states change (not a scan).
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "presence",
    responses(
        (status = 200, description = "The app's online counts", body = StatsResponse),
        (status = 400, description = "`bad_request`", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn stats(app: CallerApp, State(state): State<AppState>) -> Result<Json<StatsResponse>, ApiError> {
    let reply = state.registry.stats(app.id()).await?;
    Ok(Json(StatsResponse {
        online_users: reply.online_users,
        push_online_users: reply.push_online_users,
        online_devices: reply.online_devices.into_iter().collect(),
        as_of_seq: reply.as_of_seq,
    }))
}
