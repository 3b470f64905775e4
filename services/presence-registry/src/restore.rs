//! Taking over partitions: their users' state as the last commit left it, whoever made it.
//!
//! Online devices come back as online on their gateway. A gateway not attached here gets one
//! lease to attach and re-assert them (see [`crate::registry::Registry::reconcile`]); attached
//! gateways are asked to re-attach (resync), so that kicks the previous owner could not send and
//! disconnects it never heard of are settled. push_online devices simply survive. Nothing here
//! writes an event.

use std::{collections::HashMap, sync::Arc};

use presence_common::partition_lease::PartitionHolder;

use crate::{
    counts::Counts, partitions::Partition, registry::Registry, store, user_state::UserState,
    user_table::UserKey,
};

impl Registry {
    /// Loads `partitions` from Postgres and installs them (not yet served).
    async fn restore(&self, partitions: &[u32]) -> Result<usize, sqlx::Error> {
        let mut states: HashMap<UserKey, UserState> =
            store::users_in(&self.pool, partitions).await?.into_iter().collect();
        for (key, device) in store::devices_in(&self.pool, partitions).await? {
            if device.is_online() {
                self.gateways.grant_restart_lease(&device.gateway_id);
            }
            states.entry(key).or_default().devices.push(device);
        }
        let positions = store::last_positions(&self.pool, partitions).await?;
        let loaded: HashMap<u32, Arc<Partition>> =
            partitions.iter().map(|p| (*p, Arc::new(Partition::default()))).collect();
        let count = states.len();
        for (key, state) in states {
            let p = self.partitions.of(&key.app_id, &key.user_id);
            if let Some(partition) = loaded.get(&p) {
                partition.counts.add(&key.app_id, &Counts::of(&state));
                partition.users.restore(key, state);
            }
        }
        for (p, partition) in loaded {
            self.log.hold_partition(p, positions.get(&p).copied().unwrap_or(0));
            self.partitions.install(p, partition);
        }
        self.log.refresh_seqs().await.map_err(|err| sqlx::Error::Protocol(err.to_string()))?;
        Ok(count)
    }
}

impl PartitionHolder for Registry {
    async fn acquired(&self, partitions: &[(u32, i64)]) -> Result<(), String> {
        let ids: Vec<u32> = partitions.iter().map(|(p, _)| *p).collect();
        let users = self.restore(&ids).await.map_err(|err| err.to_string())?;
        tracing::info!(partitions = ids.len(), users, "partitions restored");
        Ok(())
    }

    async fn drain(&self, partition: u32) {
        if let Some(state) = self.partitions.get(partition) {
            // Every change in flight holds the gate for reading until it is applied.
            let _drained = state.gate.write().await;
        }
    }

    fn dropped(&self, partition: u32) {
        self.partitions.remove(partition);
        self.log.release_partition(partition);
    }

    fn serving(&self, _partitions: &[u32]) {
        self.gateways.resync_all();
    }
}
