//! The partitions this process holds, each with its own users.
//!
//! A partition's state exists here only while this process owns it (see
//! [`presence_common::partition_lease`]). Every change of a user holds its partition's gate for
//! reading until the change is committed and applied, so a hand-over (which takes the gate for
//! writing) waits for in-flight changes before it releases the lease.

use std::sync::Arc;

use parking_lot::RwLock;
use presence_proto::partition::partition_of;

use crate::{counts::PartitionCounts, user_table::UserTable};

/// One held partition.
#[derive(Default)]
pub struct Partition {
    pub users: UserTable,
    pub gate: Arc<tokio::sync::RwLock<()>>,
    /// Its users counted by app, kept with every applied change.
    pub counts: PartitionCounts,
}

pub struct Partitions {
    slots: Vec<RwLock<Option<Arc<Partition>>>>,
}

impl Partitions {
    pub fn new(count: u32) -> Self {
        Self { slots: (0..count.max(1)).map(|_| RwLock::new(None)).collect() }
    }

    /// P, the deployment's partition count.
    pub fn count(&self) -> u32 {
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }

    pub fn of(&self, app_id: &str, user_id: &str) -> u32 {
        partition_of(app_id, user_id, self.count())
    }

    /// The partition's state, if held.
    pub fn get(&self, partition: u32) -> Option<Arc<Partition>> {
        self.slots.get(partition as usize)?.read().clone()
    }

    pub fn install(&self, partition: u32, state: Arc<Partition>) {
        if let Some(slot) = self.slots.get(partition as usize) {
            *slot.write() = Some(state);
        }
    }

    pub fn remove(&self, partition: u32) -> Option<Arc<Partition>> {
        self.slots.get(partition as usize)?.write().take()
    }

    /// Every partition held now.
    pub fn held(&self) -> Vec<Arc<Partition>> {
        self.slots.iter().filter_map(|slot| slot.read().clone()).collect()
    }
}
