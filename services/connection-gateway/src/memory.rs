//! Gives memory freed after a burst (a login storm, a mass disconnect) back to the system.
//!
//! glibc keeps freed memory in its arenas: after 100k logins about a third of a gateway's heap
//! is free but held, between the long-lived connection states (docs/benchmarks.md, section 2).
//! `malloc_trim` returns the free pages. It walks the arenas under their locks (milliseconds for
//! a heap of 100 MB), so it runs on a timer and on a blocking thread, never in a connection.

use std::time::Duration;

use presence_common::Shutdown;

/// Trims every `every` until `shutdown`; `None` turns it off.
pub async fn trim_periodically(every: Option<Duration>, shutdown: Shutdown) {
    let Some(every) = every else { return };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Spawned: a long walk must not hold a worker thread.
        if tokio::task::spawn_blocking(trim).await.is_err() {
            return;
        }
    }
}

/// Returns free heap pages to the system; true if any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: malloc_trim has no preconditions; it takes glibc's own arena locks.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators return memory by themselves (or not at all): nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// Frees a heap's worth of small blocks while one block at its top stays live (so the heap
    /// cannot simply shrink from the top), then trims: the free pages in between go back.
    #[test]
    fn trimming_returns_the_free_pages_of_a_fragmented_heap() {
        let blocks: Vec<Box<[u8; 1024]>> = (0..50_000).map(|_| Box::new([1u8; 1024])).collect();
        let keep = Box::new([2u8; 1024]);
        drop(blocks);
        assert!(super::trim(), "nothing was returned");
        assert_eq!(keep[0], 2);
    }
}
