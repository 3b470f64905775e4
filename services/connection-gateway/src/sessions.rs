//! The sessions this gateway holds, by session id: where a kick from the registry finds its
//! connection, and what a re-attach asserts as live.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use compact_str::CompactString;
use dashmap::DashMap;
use parking_lot::Mutex;
use presence_proto::v1::{Kicked, LiveSession, UserStatus};
use uuid::Uuid;

use crate::outbox::{Outbound, Outbox, PostError};

/// One session's entry. Ids up to 24 bytes are stored inline: most take no allocation.
pub struct SessionHandle {
    pub app_id: CompactString,
    pub user_id: CompactString,
    pub device_id: CompactString,
    /// False while the registry's LoginReply is in flight: not yet part of a snapshot.
    pub confirmed: AtomicBool,
    /// Set once the registry forced this session offline: no Disconnect is reported for it.
    pub kicked: AtomicBool,
    /// The connection's mailbox.
    pub outbox: Outbox,
    /// The users this session subscribes to (boxed: most sessions subscribe to none).
    pub subscribed: Mutex<Option<Box<HashSet<CompactString>>>>,
}

impl SessionHandle {
    pub fn new(app_id: &str, user_id: &str, device_id: &str, outbox_capacity: usize) -> Self {
        Self {
            app_id: app_id.into(),
            user_id: user_id.into(),
            device_id: device_id.into(),
            confirmed: AtomicBool::new(false),
            kicked: AtomicBool::new(false),
            outbox: Outbox::new(outbox_capacity),
            subscribed: Mutex::new(None),
        }
    }
}

/// Session ids are UUIDs the gateway makes, kept as 16 bytes rather than 36 characters.
#[derive(Default, Clone)]
pub struct SessionTable {
    sessions: Arc<DashMap<Uuid, Arc<SessionHandle>>>,
}

impl SessionTable {
    pub fn insert(&self, session_id: Uuid, handle: Arc<SessionHandle>) {
        self.sessions.insert(session_id, handle);
    }

    pub fn remove(&self, session_id: &Uuid) {
        self.sessions.remove(session_id);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Delivers a kick: `Kicked` then close. False when no such session is here (an id that is
    /// no UUID cannot be ours).
    pub fn kick(&self, session_id: &str, kicked: Kicked) -> bool {
        let Ok(id) = Uuid::parse_str(session_id) else { return false };
        let Some(handle) = self.sessions.get(&id).map(|h| h.clone()) else { return false };
        handle.kicked.store(true, Ordering::Release);
        if handle.outbox.post(Outbound::Kick(Box::new(kicked))).is_err() {
            // The device does not read, or the connection is ending: close without the frame.
            handle.outbox.close();
        }
        true
    }

    /// Posts a subscribed user's status to a session; false if the session is gone. A device
    /// that does not read is closed (its outbox holds at most one status per subscription).
    pub fn post_status(&self, session_id: &Uuid, status: Arc<UserStatus>) -> bool {
        let Some(handle) = self.sessions.get(session_id).map(|h| h.clone()) else { return false };
        match handle.outbox.post(Outbound::Status(status)) {
            Ok(()) => true,
            Err(PostError::Full) => {
                handle.outbox.close();
                false
            }
            Err(PostError::Closed) => false,
        }
    }

    /// Items posted to a session and not yet taken (tests).
    #[cfg(test)]
    pub fn queued(&self, session_id: &Uuid) -> usize {
        self.sessions.get(session_id).map_or(0, |h| h.outbox.end().items.len())
    }

    /// Every session, for the attach snapshot. Logins still in flight are marked pending: the
    /// registry may commit them at any moment, so they are not gone, but not confirmed either.
    pub fn live(&self) -> Vec<LiveSession> {
        self.sessions
            .iter()
            .map(|e| LiveSession {
                app_id: e.value().app_id.to_string(),
                user_id: e.value().user_id.to_string(),
                device_id: e.value().device_id.to_string(),
                session_id: e.key().to_string(),
                pending: !e.value().confirmed.load(Ordering::Acquire),
            })
            .collect()
    }

    /// Closes every logged-in connection (shutdown).
    pub fn close_all(&self) {
        for entry in self.sessions.iter() {
            entry.value().outbox.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll, Waker};

    #[test]
    fn a_kick_reaches_its_session_by_id_and_marks_it() {
        let table = SessionTable::default();
        let id = Uuid::now_v7();
        let handle = Arc::new(SessionHandle::new("app", "u1", "phone", 4));
        table.insert(id, handle.clone());
        assert!(!table.kick(&Uuid::now_v7().to_string(), Kicked::default()), "another session");
        assert!(!table.kick("not-a-uuid", Kicked::default()));
        assert!(table.kick(&id.to_string(), Kicked { reason: "policy".into(), ..Default::default() }));
        assert!(handle.kicked.load(Ordering::Acquire));
        let Poll::Ready(delivery) = handle.outbox.poll_take(&mut Context::from_waker(Waker::noop())) else {
            panic!("no kick posted")
        };
        assert!(matches!(delivery.items.front(), Some(Outbound::Kick(k)) if k.reason == "policy"));
    }

    #[test]
    fn a_kick_that_finds_the_outbox_full_closes_the_connection() {
        let table = SessionTable::default();
        let id = Uuid::now_v7();
        let handle = Arc::new(SessionHandle::new("app", "u1", "phone", 1));
        table.insert(id, handle.clone());
        assert!(table.kick(&id.to_string(), Kicked::default()));
        assert!(table.kick(&id.to_string(), Kicked::default()));
        let left = handle.outbox.end();
        assert_eq!(left.items.len(), 1);
        assert!(left.close);
    }
}

#[cfg(test)]
mod size {
    use super::*;

    /// A held session's entry: ids inline, the outbox without a queue. Printed for the
    /// per-connection breakdown in docs/benchmarks.md.
    #[test]
    fn a_session_entry_is_small() {
        let handle = std::mem::size_of::<SessionHandle>();
        let entry = std::mem::size_of::<(Uuid, Arc<SessionHandle>)>();
        eprintln!("SessionHandle: {handle} bytes (+16 Arc counts), table entry: {entry} bytes");
        assert!(handle <= 192, "SessionHandle is {handle} bytes");
        assert_eq!(entry, 24);
    }
}
