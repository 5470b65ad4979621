//! The server's [`Accept`] over a turmoil listener: the real `run` serves
//! connections from simulated hosts exactly as it serves tokio TCP.

use std::net::SocketAddr;

use ws_realtime::shell::Accept;

/// A turmoil TCP listener the server accepts from.
pub struct TurmoilAccept {
    /// The bound simulated listener.
    listener: turmoil::net::TcpListener,
}

impl TurmoilAccept {
    /// Binds `port` on every address of the current host.
    pub async fn bind(port: u16) -> std::io::Result<TurmoilAccept> {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
        Ok(TurmoilAccept { listener })
    }
}

impl Accept for TurmoilAccept {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        self.listener.accept().await
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}
