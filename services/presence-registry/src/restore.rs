//! Start-up: the state of every user as the last commit left it.
//!
//! Online devices come back as online on their gateway, which gets one lease to re-attach and
//! re-assert them (see [`crate::registry::Registry::reconcile`]); push_online devices simply
//! survive. Nothing here writes an event.

use std::collections::HashMap;

use sqlx::PgPool;

use crate::{
    gateways::Gateways,
    store,
    user_state::UserState,
    user_table::{UserKey, UserTable},
};

/// Loads `users` and `devices` into `users`; gateways holding online devices are expected back.
pub async fn restore(pool: &PgPool, users: &UserTable, gateways: &Gateways) -> Result<usize, sqlx::Error> {
    let mut states: HashMap<UserKey, UserState> = store::users(pool).await?.into_iter().collect();
    for (key, device) in store::devices(pool).await? {
        if device.is_online() {
            gateways.grant_restart_lease(&device.gateway_id);
        }
        states.entry(key).or_default().devices.push(device);
    }
    let count = states.len();
    for (key, state) in states {
        users.restore(key, state);
    }
    Ok(count)
}
