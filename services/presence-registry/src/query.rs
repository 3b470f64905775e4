//! The batch query: many users' presence as of one position of the app's feed.
//!
//! The snapshot is exact: each result reflects every event of the app up to `as_of_seq` and none
//! after it. Users are read one by one without waiting in the common case: a user with no change
//! in flight (its view readable, or else its lock free) holds every committed event, and its
//! `applied_seq` tells whether it holds one newer than `as_of_seq`. If one does (the user changed
//! while the query ran), the query reads again with every one of its users locked at once.

use std::{sync::Arc, time::Instant};

use presence_proto::limits::MAX_IDS_PER_QUERY;
use presence_proto::{query_request::UserIds, v1::UserPresence};

use crate::{
    cell_map::Hashed,
    partitions::Partition,
    registry::{FORWARD_DEADLINE, Registry, RegistryError},
    user_state::UserState,
    user_table::{AppUsers, UserCell, UsersReader},
};

impl Registry {
    /// Presence of `user_ids` in order (each result without `user_id`: the caller holds the ids),
    /// and the feed position it reflects. Users of partitions served by other registries are asked
    /// of them (one call per registry); `as_of_seq` is then the smallest of the parts'.
    pub async fn query(
        &self,
        app_id: &str,
        user_ids: &UserIds,
        detail: bool,
    ) -> Result<(Vec<UserPresence>, u64), RegistryError> {
        self.check_query(app_id, user_ids)?;
        let partitions: Vec<u32> = user_ids.iter().map(|id| self.partitions.of(app_id, id)).collect();
        let tables = self.served_partitions(&partitions);
        let (local, remote): (Vec<usize>, Vec<usize>) =
            (0..user_ids.len()).partition(|i| tables[&partitions[*i]].is_some());
        if remote.is_empty() {
            return self
                .snapshot(Batch { app_id, user_ids, partitions: &partitions, tables: &tables, detail })
                .await;
        }
        let local_ids = user_ids.select(&local);
        let local_partitions: Vec<u32> = local.iter().map(|i| partitions[*i]).collect();
        let remote_ids = user_ids.select(&remote);
        let deadline = Instant::now() + FORWARD_DEADLINE;
        // The peers' part first: its requests are on their way while this registry reads its own.
        let (there, here) = futures::join!(self.peers.query(app_id, &remote_ids, detail, deadline), async {
            if local_ids.is_empty() {
                Ok((Vec::new(), u64::MAX))
            } else {
                self.snapshot(Batch {
                    app_id,
                    user_ids: &local_ids,
                    partitions: &local_partitions,
                    tables: &tables,
                    detail,
                })
                .await
            }
        });
        let (here, here_seq) = here?;
        let there = there.map_err(|status| RegistryError::Peer(status.message().to_owned()))?;
        let mut results = vec![UserPresence::default(); user_ids.len()];
        for (i, presence) in local.into_iter().zip(here) {
            results[i] = presence;
        }
        for (i, presence) in remote.into_iter().zip(there.results) {
            results[i] = presence;
        }
        Ok((results, here_seq.min(there.as_of_seq)))
    }

    /// [`Registry::query`] of users whose partitions this registry serves (a query another
    /// registry forwarded): any other is refused as not ours.
    pub async fn query_here(
        &self,
        app_id: &str,
        user_ids: &UserIds,
        detail: bool,
    ) -> Result<(Vec<UserPresence>, u64), RegistryError> {
        self.check_query(app_id, user_ids)?;
        let partitions: Vec<u32> = user_ids.iter().map(|id| self.partitions.of(app_id, id)).collect();
        let tables = self.served_partitions(&partitions);
        if let Some(p) = partitions.iter().find(|p| tables[*p].is_none()) {
            return Err(RegistryError::NotOwner(*p));
        }
        self.snapshot(Batch { app_id, user_ids, partitions: &partitions, tables: &tables, detail }).await
    }

    fn check_query(&self, app_id: &str, user_ids: &UserIds) -> Result<(), RegistryError> {
        if user_ids.is_empty() || user_ids.len() > MAX_IDS_PER_QUERY {
            return Err(RegistryError::BadRequest(format!(
                "user_ids must hold 1 to {MAX_IDS_PER_QUERY} ids"
            )));
        }
        if self.apps.get(app_id).is_none() {
            return Err(RegistryError::UnknownApp(app_id.to_owned()));
        }
        Ok(())
    }

    /// Each partition of `partitions` once, if it is served here.
    fn served_partitions(&self, partitions: &[u32]) -> PartitionMap {
        let mut map = PartitionMap(vec![None; self.partitions.count() as usize]);
        for &p in partitions {
            if let Some(slot) = map.0.get_mut(p as usize).filter(|slot| slot.is_none()) {
                *slot = Some(self.ownership.serving_epoch(p).and(self.partitions.get(p)));
            }
        }
        map
    }

    /// The users' presence (without `user_id`) and `as_of_seq`.
    async fn snapshot(&self, batch: Batch<'_>) -> Result<(Vec<UserPresence>, u64), RegistryError> {
        let Batch { app_id, detail, .. } = batch;
        // Read first: every event up to it is applied once we see the user's view readable or its
        // lock free (a change holds both from before its commit until it is applied), and its
        // user's cell exists (made before the commit).
        let as_of_seq = self.log.last_seq(app_id);
        let Views { mut results, mut newest, busy } = read_views(batch)?;
        for (i, cell) in busy {
            let state = cell.lock().await;
            newest = newest.max(state.applied_seq);
            results[i] = state.presence("", detail);
        }
        if newest <= as_of_seq {
            return Ok((results, as_of_seq));
        }
        Ok(self.snapshot_locked(batch).await)
    }

    /// [`Registry::snapshot`] with every user locked while it reads, for when one changed meanwhile.
    /// Locks are taken in address order so that two such queries cannot deadlock (a change holds
    /// one user's lock only).
    async fn snapshot_locked(&self, batch: Batch<'_>) -> (Vec<UserPresence>, u64) {
        let Batch { app_id, user_ids, partitions, tables, detail } = batch;
        let cell_of =
            |id: &str, p: &u32| tables[p].as_ref().and_then(|partition| partition.users.get_user(app_id, id));
        let address = |cell: &UserCell| Arc::as_ptr(cell) as usize;
        loop {
            let cells: Vec<Option<UserCell>> =
                user_ids.iter().zip(partitions).map(|(id, p)| cell_of(id, p)).collect();
            let mut order: Vec<&UserCell> = cells.iter().flatten().collect();
            order.sort_unstable_by_key(|cell| address(cell));
            order.dedup_by_key(|cell| address(cell));
            let mut guards = Vec::with_capacity(order.len());
            for cell in order {
                guards.push((address(cell), cell.lock().await));
            }
            // Nothing of these users can change now: every event of theirs up to here is applied.
            let as_of_seq = self.log.last_seq(app_id);
            // A user first seen meanwhile may have an event up to `as_of_seq`: read again with it.
            let appeared = cells
                .iter()
                .zip(user_ids.iter().zip(partitions))
                .any(|(cell, (id, p))| cell.is_none() && cell_of(id, p).is_some());
            if appeared {
                continue;
            }
            let results = cells
                .iter()
                .map(|cell| {
                    let state = cell.as_ref().and_then(|cell| {
                        let at = guards.binary_search_by_key(&address(cell), |(at, _)| *at).ok()?;
                        Some(&*guards[at].1)
                    });
                    state
                        .map_or_else(|| UserState::default().presence("", detail), |s| s.presence("", detail))
                })
                .collect();
            return (results, as_of_seq);
        }
    }
}

/// What [`read_views`] found.
struct Views {
    results: Vec<UserPresence>,
    /// The newest event applied to any user read.
    newest: u64,
    /// Users with a change in flight: each one's position and cell, to read under its lock.
    busy: Vec<(usize, UserCell)>,
}

/// Users between the prefetch of a user's entry and its look-up (its slot is prefetched twice as
/// far ahead): enough for the lines to arrive (a few hundred ns), few enough that they are still
/// in cache.
const PREFETCH_AHEAD: usize = 8;

/// Reads the batch's users from their views, without waiting. Every partition map the batch
/// touches is read at once, in partition order (as every query takes them, so two queries and a
/// first login waiting between them cannot deadlock), and the loop over the users takes no lock:
/// an atomic operation per partition would keep the CPU from overlapping one user's cache misses
/// with the next's. Each user's slot and entry are prefetched ahead of its look-up, so that the
/// misses of several users are in flight at once. Users are read in the batch's order, so each
/// result is built once, in its place.
fn read_views(batch: Batch<'_>) -> Result<Views, RegistryError> {
    let Batch { app_id, user_ids, partitions, tables, detail } = batch;
    // The app's users of each partition the batch touches, in partition order (`tables` may hold
    // more: those of the rest of a query, asked of other registries).
    let mut touched = vec![false; tables.0.len()];
    for &p in partitions {
        if let Some(touched) = touched.get_mut(p as usize) {
            *touched = true;
        }
    }
    let mut app_users = Vec::new();
    for (p, _) in touched.iter().enumerate().filter(|(_, touched)| **touched) {
        let Some(partition) = &tables[&(p as u32)] else { return Err(RegistryError::NotOwner(p as u32)) };
        app_users.push((p, partition.users.app_users(app_id)));
    }
    let readers: Vec<(usize, Option<UsersReader<'_>>)> =
        app_users.iter().map(|(p, users)| (*p, users.as_deref().map(AppUsers::reader))).collect();
    let mut reader_of: Vec<Option<&UsersReader<'_>>> = vec![None; tables.0.len()];
    for (p, reader) in &readers {
        reader_of[*p] = reader.as_ref();
    }
    // Each user's partition reader and hash (none if the app has no user in that partition).
    let located: Vec<Option<(&UsersReader<'_>, Hashed)>> = user_ids
        .iter()
        .zip(partitions)
        .map(|(id, p)| reader_of.get(*p as usize).copied().flatten().map(|r| (r, r.hashed(id))))
        .collect();

    let unknown = UserState::default().presence("", detail);
    let mut views = Views { results: Vec::with_capacity(user_ids.len()), newest: 0, busy: Vec::new() };
    for (i, user_id) in user_ids.iter().enumerate() {
        if let Some(Some((reader, hashed))) = located.get(i + 2 * PREFETCH_AHEAD) {
            reader.prefetch_slot(*hashed);
        }
        if let Some(Some((reader, hashed))) = located.get(i + PREFETCH_AHEAD) {
            reader.prefetch_entry(*hashed);
        }
        let found = located[i].and_then(|(reader, hashed)| reader.presence(user_id, hashed, detail));
        views.results.push(match found {
            None => unknown.clone(),
            Some(Ok((seq, presence))) => {
                views.newest = views.newest.max(seq);
                presence
            }
            Some(Err(cell)) => {
                views.busy.push((i, cell));
                unknown.clone()
            }
        });
    }
    Ok(views)
}

/// The users of one query served here, each with its partition.
#[derive(Clone, Copy)]
struct Batch<'a> {
    app_id: &'a str,
    user_ids: &'a UserIds,
    partitions: &'a [u32],
    tables: &'a PartitionMap,
    detail: bool,
}

/// The partitions a query touches, indexed by number, each looked up once: `Some(None)` when
/// not served here.
struct PartitionMap(Vec<Option<Option<Arc<Partition>>>>);

impl std::ops::Index<&u32> for PartitionMap {
    type Output = Option<Arc<Partition>>;

    fn index(&self, p: &u32) -> &Option<Arc<Partition>> {
        // Every partition of the query was looked up when the map was built.
        self.0.get(*p as usize).and_then(Option::as_ref).unwrap_or(&None)
    }
}
