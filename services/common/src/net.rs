//! Binding listeners, with errors that name the address (every service binds one or two).

use std::net::SocketAddr;

use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
#[error("binding {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

impl BindError {
    /// A `map_err` adapter for binds done elsewhere (e.g. with SO_REUSEPORT).
    pub fn at(addr: SocketAddr) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self { addr, source }
    }
}

/// Binds `addr` and returns the listener with the address it got (port 0 picks one).
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let listener = TcpListener::bind(addr).await.map_err(BindError::at(addr))?;
    let local = listener.local_addr().map_err(BindError::at(addr))?;
    Ok((listener, local))
}
