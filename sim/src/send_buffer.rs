//! The kernel's socket send buffer (`SO_SNDBUF`, which the server sets from
//! `WS_SOCKET_SEND_BUFFER`), modelled in bytes for the simulated network.
//!
//! Turmoil bounds a TCP stream by segments, not bytes, so without this model
//! a simulation could not check the per-client memory bound, which counts
//! what a client that never reads leaves in the server host's socket
//! buffers. The server's side of every accepted stream takes at most `limit`
//! bytes its client has not read yet (in flight or waiting in the client's
//! receive queue: a real host holds them until they are acknowledged, and a
//! client that never reads stops acknowledging once its receive window is
//! full). The client's side reports what it read, which frees room.
//!
//! The ledger also keeps, per connection, the most unread bytes the server
//! ever had written and when the server dropped its end: what the
//! hostile-clients scenario checks from outside.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the ledger knows of one connection, keyed by the client's address.
#[derive(Debug, Default, Clone)]
pub struct Account {
    /// Bytes the server wrote into the socket.
    pub written: u64,
    /// Bytes the client read from it.
    pub read: u64,
    /// The most bytes that were written and not yet read at once: what the
    /// socket held for this client at its fullest.
    pub peak_unread: u64,
    /// Simulated time at which the server dropped its end, if it has.
    pub dropped_at: Option<Duration>,
    /// The server's writer, waiting for the client to read.
    waker: Option<Waker>,
}

impl Account {
    /// Bytes written and not yet read.
    pub fn unread(&self) -> u64 {
        self.written - self.read
    }
}

/// The shared ledger of every connection's send buffer in one run.
#[derive(Debug, Default)]
struct Ledger {
    /// Room per connection in bytes; 0 = unbounded (the kernel's
    /// autotuning, which the real server no longer uses by default).
    limit: usize,
    /// Per client address.
    accounts: HashMap<SocketAddr, Account>,
}

/// A cheap handle on the run's send-buffer ledger; the server's accept loop
/// and every client hold a clone.
#[derive(Debug, Clone, Default)]
pub struct SendBuffers {
    /// The ledger. A mutex only because hosts' tasks must be `Send`: turmoil
    /// runs every host on one thread.
    ledger: Arc<Mutex<Ledger>>,
}

impl SendBuffers {
    /// Sets the room per connection (`WS_SOCKET_SEND_BUFFER`; 0 = unbounded).
    pub fn set_limit(&self, limit: usize) {
        self.lock().limit = limit;
    }

    /// The room per connection.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// The account of the client at `client`, if the server ever wrote to
    /// it or it ever read.
    pub fn account(&self, client: SocketAddr) -> Option<Account> {
        self.lock().accounts.get(&client).cloned()
    }

    /// Every account, by client address.
    pub fn accounts(&self) -> Vec<(SocketAddr, Account)> {
        let mut all: Vec<_> = self
            .lock()
            .accounts
            .iter()
            .map(|(addr, account)| (*addr, account.clone()))
            .collect();
        all.sort_by_key(|(addr, _)| *addr);
        all
    }

    /// Bytes written and not yet read, over every connection the server
    /// still holds: what the server host's socket buffers hold now.
    pub fn unread_total(&self) -> u64 {
        self.lock()
            .accounts
            .values()
            .filter(|account| account.dropped_at.is_none())
            .map(Account::unread)
            .sum()
    }

    /// The client at `client` read `n` bytes: room for the server's writer.
    fn read(&self, client: SocketAddr, n: usize) {
        let mut ledger = self.lock();
        let account = ledger.accounts.entry(client).or_default();
        account.read += n as u64;
        if let Some(waker) = account.waker.take() {
            waker.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // Single updates only: a poisoned ledger is still consistent.
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The server's side of an accepted stream, within its send buffer.
pub struct ServerStream {
    /// The simulated stream.
    inner: turmoil::net::TcpStream,
    /// The client's address: its account in the ledger.
    client: SocketAddr,
    /// The run's ledger.
    buffers: SendBuffers,
}

impl ServerStream {
    /// Wraps a stream accepted from `client`.
    pub fn new(
        inner: turmoil::net::TcpStream,
        client: SocketAddr,
        buffers: SendBuffers,
    ) -> ServerStream {
        buffers.lock().accounts.entry(client).or_default();
        ServerStream {
            inner,
            client,
            buffers,
        }
    }
}

impl Drop for ServerStream {
    fn drop(&mut self) {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        let mut ledger = self.buffers.lock();
        let account = ledger.accounts.entry(self.client).or_default();
        account.dropped_at.get_or_insert(at);
        account.waker = None;
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // A kernel copies a whole vectored write into its buffer at once;
        // turmoil would take only the first slice, one segment per frame,
        // and its segment bound would then bind before the byte bound.
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut joined = Vec::with_capacity(total);
        for buf in bufs {
            joined.extend_from_slice(buf);
        }
        self.poll_write(cx, &joined)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = {
            let mut ledger = self.buffers.lock();
            let limit = ledger.limit;
            let account = ledger.accounts.entry(self.client).or_default();
            if limit == 0 {
                buf.len()
            } else {
                let free = (limit as u64).saturating_sub(account.unread());
                if free == 0 {
                    // Full: wait for the client to read, as a kernel would.
                    account.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                buf.len().min(usize::try_from(free).unwrap_or(usize::MAX))
            }
        };
        let client = self.client;
        let buffers = self.buffers.clone();
        let written = Pin::new(&mut self.inner).poll_write(cx, &buf[..room]);
        if let Poll::Ready(Ok(n)) = &written {
            let mut ledger = buffers.lock();
            let account = ledger.accounts.entry(client).or_default();
            account.written += *n as u64;
            account.peak_unread = account.peak_unread.max(account.unread());
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client's side of a stream: reports every byte it reads to the ledger,
/// which frees room in the server's send buffer.
pub struct ClientStream {
    /// The simulated stream.
    inner: turmoil::net::TcpStream,
    /// This client's address (the key the server's side uses).
    local: SocketAddr,
    /// The run's ledger.
    buffers: SendBuffers,
}

impl ClientStream {
    /// Wraps a connected client stream.
    pub fn new(inner: turmoil::net::TcpStream, buffers: SendBuffers) -> io::Result<ClientStream> {
        let local = inner.local_addr()?;
        Ok(ClientStream {
            inner,
            local,
            buffers,
        })
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.buffers.read(self.local, n);
        }
        read
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
