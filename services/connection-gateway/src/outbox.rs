//! What other tasks hand a logged-in connection: frames to send (kicks, subscribed users'
//! statuses) and a request to close.
//!
//! The connection task owns its socket and writes itself; the outbox is only the mailbox. It
//! allocates nothing until something is posted (an idle device's outbox is a few words), and the
//! task is woken through one waker instead of a channel.

use std::{
    collections::VecDeque,
    task::{Context, Poll},
};

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use presence_proto::v1::{Kicked, UserStatus};
use std::sync::Arc;

/// One posted item.
#[derive(Debug)]
pub enum Outbound {
    /// Write `Kicked`, then close the connection.
    Kick(Box<Kicked>),
    /// Write `StatusChanged`. A newer status of the same user replaces one not yet written: a
    /// subscriber needs the latest, and the queue stays within one item per subscription.
    Status(Arc<UserStatus>),
}

/// Why [`Outbox::post`] did not take an item.
#[derive(Debug, PartialEq, Eq)]
pub enum PostError {
    /// `capacity` items wait already: the device does not keep up.
    Full,
    /// The connection has ended.
    Closed,
}

#[derive(Default)]
struct Mailbox {
    items: VecDeque<Outbound>,
    /// Close without writing anything more.
    close: bool,
    /// The connection is gone: nothing is taken any more.
    ended: bool,
}

/// What the connection takes out in one go.
#[derive(Debug, Default)]
pub struct Delivery {
    pub items: VecDeque<Outbound>,
    pub close: bool,
}

/// A connection's mailbox; shared through its session entry.
pub struct Outbox {
    mailbox: Mutex<Mailbox>,
    waker: AtomicWaker,
    capacity: usize,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self { mailbox: Mutex::default(), waker: AtomicWaker::new(), capacity: capacity.max(1) }
    }

    /// Posts an item and wakes the connection.
    pub fn post(&self, item: Outbound) -> Result<(), PostError> {
        {
            let mut mailbox = self.mailbox.lock();
            if mailbox.ended || mailbox.close {
                return Err(PostError::Closed);
            }
            if let Outbound::Status(status) = &item
                && let Some(queued) = mailbox.items.iter_mut().find_map(|queued| match queued {
                    Outbound::Status(queued) if queued.user_id == status.user_id => Some(queued),
                    _ => None,
                })
            {
                if status.user_version > queued.user_version {
                    *queued = status.clone();
                }
            } else if mailbox.items.len() >= self.capacity {
                return Err(PostError::Full);
            } else {
                mailbox.items.push_back(item);
            }
        }
        self.waker.wake();
        Ok(())
    }

    /// Asks the connection to close at once, without writing what is posted.
    pub fn close(&self) {
        self.mailbox.lock().close = true;
        self.waker.wake();
    }

    /// Takes everything posted, or registers the task to be woken by the next post or close.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Delivery> {
        if let Some(delivery) = self.take() {
            return Poll::Ready(delivery);
        }
        self.waker.register(cx.waker());
        // A post between the check and the registration woke nobody: look again.
        self.take().map_or(Poll::Pending, Poll::Ready)
    }

    fn take(&self) -> Option<Delivery> {
        let mut mailbox = self.mailbox.lock();
        if mailbox.items.is_empty() && !mailbox.close {
            return None;
        }
        let close = std::mem::take(&mut mailbox.close);
        // Taking the queue frees its buffer: an idle connection holds none.
        Some(Delivery { items: std::mem::take(&mut mailbox.items), close })
    }

    /// The connection has ended: later posts fail, and what is left is returned.
    pub fn end(&self) -> Delivery {
        let mut mailbox = self.mailbox.lock();
        mailbox.ended = true;
        Delivery { items: std::mem::take(&mut mailbox.items), close: std::mem::take(&mut mailbox.close) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::{Wake, Waker},
    };

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn kick() -> Outbound {
        Outbound::Kick(Box::default())
    }

    #[test]
    fn a_post_wakes_the_waiting_connection_and_is_taken_once() {
        let outbox = Outbox::new(4);
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(outbox.poll_take(&mut cx).is_pending());
        outbox.post(kick()).unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        let Poll::Ready(delivery) = outbox.poll_take(&mut cx) else { panic!("nothing taken") };
        assert_eq!(delivery.items.len(), 1);
        assert!(!delivery.close);
        assert!(outbox.poll_take(&mut cx).is_pending());
    }

    #[test]
    fn a_full_outbox_refuses_and_a_closed_one_too() {
        let outbox = Outbox::new(2);
        outbox.post(kick()).unwrap();
        outbox.post(kick()).unwrap();
        assert_eq!(outbox.post(kick()), Err(PostError::Full));
        outbox.close();
        assert_eq!(outbox.post(kick()), Err(PostError::Closed));
        let left = outbox.end();
        assert_eq!(left.items.len(), 2);
        assert!(left.close);
        assert_eq!(outbox.post(kick()), Err(PostError::Closed));
    }

    #[test]
    fn a_newer_status_of_a_user_replaces_the_queued_one() {
        let outbox = Outbox::new(2);
        let status = |user: &str, version| {
            Outbound::Status(Arc::new(UserStatus {
                user_id: user.into(),
                user_version: version,
                ..Default::default()
            }))
        };
        outbox.post(status("bob", 1)).unwrap();
        outbox.post(status("bob", 3)).unwrap();
        outbox.post(status("bob", 2)).unwrap();
        outbox.post(status("carol", 1)).unwrap();
        assert_eq!(outbox.post(kick()), Err(PostError::Full));
        let versions: Vec<(String, u64)> = outbox
            .end()
            .items
            .into_iter()
            .map(|item| match item {
                Outbound::Status(s) => (s.user_id.clone(), s.user_version),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(versions, [("bob".to_owned(), 3), ("carol".to_owned(), 1)]);
    }

    #[test]
    fn close_alone_is_delivered() {
        let outbox = Outbox::new(1);
        outbox.close();
        let waker = Waker::noop();
        let Poll::Ready(delivery) = outbox.poll_take(&mut Context::from_waker(waker)) else {
            panic!("close not delivered")
        };
        assert!(delivery.close && delivery.items.is_empty());
    }
}
