//! The sessions this gateway holds, by session id: where a kick from the registry finds its
//! connection, and what a re-attach asserts as live.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use dashmap::DashMap;
use presence_proto::v1::{Kicked, LiveSession};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a connection's writer is asked to do.
#[derive(Debug)]
pub enum Outbound {
    /// Write this frame.
    Frame(Box<presence_proto::v1::ServerFrame>),
    /// Write `Kicked`, then close the connection.
    Kick(Box<Kicked>),
}

/// One session's entry.
pub struct SessionHandle {
    pub app_id: String,
    pub user_id: String,
    pub device_id: String,
    /// False while the registry's LoginReply is in flight: not yet part of a snapshot.
    pub confirmed: AtomicBool,
    /// Weak: only the connection itself keeps its queue open, so once it has queued its last
    /// frame (LogoutOk, Error) and dropped its sender, the writer flushes and closes at once.
    pub outbound: mpsc::WeakSender<Outbound>,
    /// Closes the connection at once (a kick that finds the outbound queue full).
    pub close: CancellationToken,
    /// Set once the registry forced this session offline: no Disconnect is reported for it.
    pub kicked: AtomicBool,
}

#[derive(Default, Clone)]
pub struct SessionTable {
    sessions: Arc<DashMap<String, Arc<SessionHandle>>>,
}

impl SessionTable {
    pub fn insert(&self, session_id: String, handle: Arc<SessionHandle>) {
        self.sessions.insert(session_id, handle);
    }

    pub fn remove(&self, session_id: &str) {
        self.sessions.remove(session_id);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Delivers a kick: `Kicked` then close. False when no such session is here.
    pub fn kick(&self, session_id: &str, kicked: Kicked) -> bool {
        let Some(handle) = self.sessions.get(session_id).map(|h| h.clone()) else { return false };
        handle.kicked.store(true, Ordering::Release);
        let queued =
            handle.outbound.upgrade().is_some_and(|tx| tx.try_send(Outbound::Kick(Box::new(kicked))).is_ok());
        if !queued {
            // Queue full (the device does not read) or already closing: close without the frame.
            handle.close.cancel();
        }
        true
    }

    /// Every session, for the attach snapshot. Logins still in flight are marked pending: the
    /// registry may commit them at any moment, so they are not gone, but not confirmed either.
    pub fn live(&self) -> Vec<LiveSession> {
        self.sessions
            .iter()
            .map(|e| LiveSession {
                app_id: e.value().app_id.clone(),
                user_id: e.value().user_id.clone(),
                device_id: e.value().device_id.clone(),
                session_id: e.key().clone(),
                pending: !e.value().confirmed.load(Ordering::Acquire),
            })
            .collect()
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self) {
        for entry in self.sessions.iter() {
            entry.value().close.cancel();
        }
    }
}
