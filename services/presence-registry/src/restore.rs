//! Start-up: the state of every user as the last commit left it.
//!
//! Online devices come back as online on their gateway, which gets one lease to re-attach and
//! re-assert them (see [`crate::registry::Registry::reconcile`]); push_online devices simply
//! survive. Nothing here writes an event.

use std::collections::HashMap;

use presence_proto::v1::{DeviceStatus, EventReason, Platform};
use sqlx::PgPool;

use crate::{
    gateways::Gateways,
    session_table::{SessionTable, UserKey},
    user_state::{Device, UserState},
};

#[derive(sqlx::FromRow)]
struct UserRow {
    app_id: String,
    user_id: String,
    version: i64,
    last_seen_ms: Option<i64>,
    last_reason: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DeviceRow {
    app_id: String,
    user_id: String,
    device_id: String,
    platform: String,
    status: String,
    session_id: String,
    gateway_id: String,
    since_ms: i64,
    client_version: String,
    push_enabled: bool,
    peer_addr: String,
    disconnected_at_ms: Option<i64>,
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Loads `users` and `devices` into `sessions`; gateways holding online devices are expected back.
pub async fn restore(
    pool: &PgPool,
    sessions: &SessionTable,
    gateways: &Gateways,
) -> Result<usize, sqlx::Error> {
    let users: Vec<UserRow> =
        sqlx::query_as("SELECT app_id, user_id, version, last_seen_ms, last_reason FROM users")
            .fetch_all(pool)
            .await?;
    let mut states: HashMap<UserKey, UserState> = users
        .into_iter()
        .map(|row| {
            let state = UserState {
                devices: Vec::new(),
                version: to_u64(row.version),
                last_seen_ms: row.last_seen_ms.map(to_u64),
                last_reason: row.last_reason.and_then(|r| EventReason::from_name(&r).ok()),
            };
            (UserKey { app_id: row.app_id, user_id: row.user_id }, state)
        })
        .collect();

    let devices: Vec<DeviceRow> = sqlx::query_as(
        "SELECT app_id, user_id, device_id, platform, status, session_id, gateway_id, since_ms, client_version, \
         push_enabled, peer_addr, disconnected_at_ms FROM devices ORDER BY since_ms",
    )
    .fetch_all(pool)
    .await?;
    for row in devices {
        let status = DeviceStatus::from_name(&row.status).unwrap_or(DeviceStatus::Online);
        if status == DeviceStatus::Online {
            gateways.expect(&row.gateway_id);
        }
        let device = Device {
            device_id: row.device_id,
            platform: Platform::from_name(&row.platform).unwrap_or(Platform::Unspecified),
            status,
            session_id: row.session_id,
            gateway_id: row.gateway_id,
            since_ms: to_u64(row.since_ms),
            client_version: row.client_version,
            push_enabled: row.push_enabled,
            peer_addr: row.peer_addr,
            disconnected_at_ms: row.disconnected_at_ms.map(to_u64),
        };
        states.entry(UserKey { app_id: row.app_id, user_id: row.user_id }).or_default().devices.push(device);
    }
    let count = states.len();
    for (key, state) in states {
        sessions.restore(key, state);
    }
    Ok(count)
}
