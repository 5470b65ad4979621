//! The server's [`Accept`] over a turmoil listener: the real `run` serves
//! connections from simulated hosts exactly as it serves tokio TCP.

use std::net::SocketAddr;

use ws_realtime::shell::Accept;

use crate::send_buffer::{SendBuffers, ServerStream};

/// A turmoil TCP listener the server accepts from.
pub struct TurmoilAccept {
    /// The bound simulated listener.
    listener: turmoil::net::TcpListener,
    /// The send buffers of the accepted streams (the model of `SO_SNDBUF`).
    buffers: SendBuffers,
}

impl TurmoilAccept {
    /// Binds `port` on every address of the current host; accepted streams
    /// write within `buffers`' send-buffer model.
    pub async fn bind(port: u16, buffers: SendBuffers) -> std::io::Result<TurmoilAccept> {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
        Ok(TurmoilAccept { listener, buffers })
    }
}

impl Accept for TurmoilAccept {
    type Stream = ServerStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        let (stream, client) = self.listener.accept().await?;
        Ok((
            ServerStream::new(stream, client, self.buffers.clone()),
            client,
        ))
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}
