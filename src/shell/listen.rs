//! Listeners: the [`Accept`] trait the server is generic over (tokio TCP
//! here, turmoil in `sim/`), the TCP listener and its options, and what a
//! worker opens on its own runtime ([`MakeAccept`]): a ready listener, or
//! its own socket of a port shared with `SO_REUSEPORT`.

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::config::ServerConfig;
/// A listener: yields connected byte streams and their peer addresses.
pub trait Accept: Send + 'static {
    /// A connected stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection.
    fn accept(
        &mut self,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// The address it listens on (with the real port when bound to port 0).
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
}

/// [`Accept`] over a tokio TCP listener.
#[derive(Debug)]
pub struct TcpAccept {
    /// The bound listener.
    listener: TcpListener,
}

/// How the listening socket is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    /// The listen backlog (`WS_LISTEN_BACKLOG`).
    pub backlog: u32,
    /// `SO_SNDBUF` (`WS_SOCKET_SEND_BUFFER`), inherited by every accepted
    /// socket; 0 keeps the kernel's autotuning.
    pub send_buffer: usize,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            backlog: crate::config::server::system_somaxconn(),
            send_buffer: crate::config::server::DEFAULT_SOCKET_SEND_BUFFER,
        }
    }
}

impl From<&ServerConfig> for ListenOptions {
    fn from(config: &ServerConfig) -> ListenOptions {
        ListenOptions {
            backlog: config.listen_backlog,
            send_buffer: config.socket_send_buffer,
        }
    }
}

impl TcpAccept {
    /// Binds `address` with the default [`ListenOptions`].
    pub async fn bind(address: SocketAddr) -> std::io::Result<TcpAccept> {
        TcpAccept::listen(address, &ListenOptions::default()).await
    }

    /// Binds `address` and listens with `options`. The send buffer is set on
    /// the listening socket, so accepted sockets inherit it (and the lock
    /// that keeps the kernel from autotuning it) at no cost per accept.
    pub async fn listen(
        address: SocketAddr,
        options: &ListenOptions,
    ) -> std::io::Result<TcpAccept> {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if options.send_buffer > 0 {
            socket.set_send_buffer_size(u32::try_from(options.send_buffer).unwrap_or(u32::MAX))?;
        }
        socket.bind(address)?;
        Ok(TcpAccept {
            listener: socket.listen(options.backlog)?,
        })
    }
}

impl Accept for TcpAccept {
    type Stream = tokio::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        let (stream, remote) = self.listener.accept().await?;
        // Frames are coalesced per write already; waiting for more would only
        // add latency.
        let _ = stream.set_nodelay(true);
        Ok((stream, remote))
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A listener a worker opens on its own runtime: a ready [`Accept`]
/// ([`Ready`]), or a socket bound with `SO_REUSEPORT` that starts listening
/// on the worker's thread ([`ReusePort`]).
pub trait MakeAccept: Send + 'static {
    /// The listener it becomes.
    type Accept: Accept;
    /// Where it listens, for the log line.
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
    /// Starts listening (on the calling worker's runtime).
    fn make(self) -> std::io::Result<Self::Accept>;
}

/// An [`Accept`] that is ready as it is.
#[derive(Debug)]
pub struct Ready<A>(pub A);

impl<A: Accept> MakeAccept for Ready<A> {
    type Accept = A;

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn make(self) -> std::io::Result<A> {
        Ok(self.0)
    }
}

/// One worker's socket of a port shared with `SO_REUSEPORT`: the kernel
/// spreads new connections over the workers' listeners, and each socket is
/// accepted on, and stays on, its worker's thread.
#[derive(Debug)]
pub struct ReusePort {
    /// Listening already, so connections wait in its backlog from the moment
    /// the address is logged (a client that connects at once is not
    /// refused); registered with a runtime only on the worker's thread, in
    /// [`MakeAccept::make`].
    listener: std::net::TcpListener,
}

impl ReusePort {
    /// `count` sockets bound to `address` with `SO_REUSEPORT` (the first
    /// picks the port when `address` has port 0, the others take the same).
    pub fn bind(
        address: SocketAddr,
        options: &ListenOptions,
        count: usize,
    ) -> std::io::Result<Vec<ReusePort>> {
        let mut address = address;
        let mut sockets = Vec::with_capacity(count);
        for _ in 0..count {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(address),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            if options.send_buffer > 0 {
                socket.set_send_buffer_size(options.send_buffer)?;
            }
            socket.bind(&address.into())?;
            socket.listen(i32::try_from(options.backlog).unwrap_or(i32::MAX))?;
            socket.set_nonblocking(true)?;
            let listener = std::net::TcpListener::from(socket);
            address = listener.local_addr()?;
            sockets.push(ReusePort { listener });
        }
        Ok(sockets)
    }
}

impl MakeAccept for ReusePort {
    type Accept = TcpAccept;

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    fn make(self) -> std::io::Result<TcpAccept> {
        Ok(TcpAccept {
            listener: tokio::net::TcpListener::from_std(self.listener)?,
        })
    }
}
