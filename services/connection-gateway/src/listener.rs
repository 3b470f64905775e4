//! The device listener: SO_REUSEPORT so several gateway processes share one port, and the
//! file-descriptor limit raised so one process can hold 100k+ connections.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Pending connections the kernel queues for us.
const BACKLOG: i32 = 4096;

/// Binds `addr` with SO_REUSEADDR and SO_REUSEPORT.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the resulting soft limit.
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(%err, "cannot raise RLIMIT_NOFILE");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024)
        }
    }
}

/// Default connection cap: the descriptor limit minus room for everything else.
pub fn default_max_connections(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(256)).unwrap_or(usize::MAX).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_listeners_share_a_port() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind(addr).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
    }

    #[test]
    fn the_limit_leaves_headroom() {
        assert_eq!(default_max_connections(1024), 768);
        assert_eq!(default_max_connections(100), 16);
        assert!(raise_nofile_limit() >= 16);
    }
}
