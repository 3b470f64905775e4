//! Outbound connections from many loopback source addresses.
//!
//! One (source, destination) address pair has ~28k ephemeral ports; spreading clients over
//! 127.0.0.x sources lifts that. Binding a source address normally reserves a port at bind time
//! and collapses the connect rate; `IP_BIND_ADDRESS_NO_PORT` defers the port choice to connect.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsRawFd,
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

/// The `i`-th of `count` loopback source addresses: 127.0.0.2, 127.0.0.3, ...
pub fn source_addr(i: usize, count: usize) -> Ipv4Addr {
    let n = 2 + (i % count.clamp(1, 250)) as u32;
    Ipv4Addr::from(0x7f00_0000 | n)
}

/// Connects to `target` from `source` (port chosen at connect time).
pub async fn connect_from(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    bind_address_no_port(&socket)?;
    socket.bind(&SocketAddrV4::new(source, 0).into())?;
    let socket = TcpSocket::from_std_stream(socket.into());
    socket.connect(target).await
}

/// A listener with a deep accept queue: a connect storm overflows the default 1024 and shows up
/// as 1 s SYN retransmits in the tail.
pub fn listen(addr: SocketAddr, backlog: i32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // Several processes may share the port: one process cannot hold more sockets than its
    // file-descriptor limit (20,000 here).
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    tokio::net::TcpListener::from_std(socket.into())
}

fn bind_address_no_port(socket: &Socket) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor we own, a c_int option value and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_cycle_within_loopback() {
        assert_eq!(source_addr(0, 10), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_addr(10, 10), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_addr(1000, 250), Ipv4Addr::new(127, 0, 0, 2));
        assert!(source_addr(249, 250).is_loopback());
    }

    #[tokio::test]
    async fn connects_from_a_chosen_loopback_source() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let client = connect_from(Ipv4Addr::new(127, 0, 0, 7), target).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), Ipv4Addr::new(127, 0, 0, 7));
        assert_eq!(client.local_addr().unwrap().ip(), Ipv4Addr::new(127, 0, 0, 7));
    }
}
