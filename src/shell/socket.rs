//! The byte stream under an upgraded WebSocket, driven by readiness so that
//! an idle socket holds no buffer: the connection task waits until bytes are
//! there and only then reads them, and the driver writes straight into the
//! socket without a task switch when the kernel has room.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, BytesMut};
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// What the shell needs from a connected stream. Every method takes `&self`
/// so the driver (writes) and the connection task (reads) share one socket.
pub(crate) trait Socket: Send + Sync + 'static {
    /// Ready once a read would not block (bytes, EOF or an error are there).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Reads what is there now; `WouldBlock` when nothing is.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes as much of `bufs` as the socket takes now; `WouldBlock` when it
    /// takes nothing. Never yields to the scheduler: the driver writes
    /// thousands of sockets in one turn, and tokio's per-turn budget would
    /// otherwise push most of them onto their tasks.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Writes as much of `bufs` as the socket takes now; `Pending` (with `cx`
    /// registered) when it takes nothing.
    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;

    /// Pushes out bytes a write accepted but kept (a TLS stream encrypts
    /// into its own buffer and returns before the kernel took it all):
    /// `Ready` once all are with the kernel, `Pending` (with `cx`
    /// registered) while they are not. A plain socket keeps nothing.
    fn poll_flush(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Sends FIN: no more bytes will be written.
    fn shutdown_write(&self);
}

impl Socket for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // send/sendmsg rather than writev: a socket call skips the file
        // layer (a few hundred ns per write, measured by perf).
        self.try_io(Interest::WRITABLE, || {
            let socket = socket2::SockRef::from(self);
            match bufs {
                [one] => socket.send(one),
                _ => socket.send_vectored(bufs),
            }
        })
    }

    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_write_ready(cx))?;
            match Socket::try_write_vectored(self, bufs) {
                // The readiness was stale; tokio cleared it, so polling
                // again registers `cx` for the next edge.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
        }
    }

    fn shutdown_write(&self) {
        let _ = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Write);
    }
}

/// [`Socket`] over any tokio stream, for streams that are not a tokio
/// `TcpStream`: the simulation's, and TLS streams (whose decrypted bytes can
/// be waiting in rustls while the kernel has none). It reads ahead to learn
/// that bytes are there; the read-ahead buffer is freed once taken, so an
/// idle socket holds none.
pub(crate) struct Buffered<S> {
    /// The read half and what it read ahead to learn that bytes were there.
    reader: Mutex<ReadAhead<S>>,
    /// The write half.
    writer: Mutex<WriteHalf<S>>,
}

/// The read side of [`Buffered`].
struct ReadAhead<S> {
    /// The stream's read half.
    half: ReadHalf<S>,
    /// Bytes read to answer `poll_read_ready` and not yet taken.
    ahead: BytesMut,
    /// The stream ended (or failed); reads return 0 from now on.
    ended: bool,
}

/// How much [`Buffered`] reads ahead at a time.
const READ_AHEAD: usize = 4096;

impl<S: AsyncRead + AsyncWrite + Send + 'static> Buffered<S> {
    /// Wraps `stream`.
    pub(crate) fn new(stream: S) -> Buffered<S> {
        let (half, writer) = tokio::io::split(stream);
        Buffered {
            reader: Mutex::new(ReadAhead {
                half,
                ahead: BytesMut::new(),
                ended: false,
            }),
            writer: Mutex::new(writer),
        }
    }
}

impl<S> ReadAhead<S>
where
    S: AsyncRead,
{
    /// Fills `ahead` from the stream unless it already holds something.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.ahead.is_empty() || self.ended {
            return Poll::Ready(Ok(()));
        }
        let mut chunk = [0u8; READ_AHEAD];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.half).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().is_empty() {
                    self.ended = true;
                }
                self.ahead.extend_from_slice(buf.filled());
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Socket for Buffered<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.reader).poll_fill(cx)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut reader = lock(&self.reader);
        match reader.poll_fill(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => {
                let n = buf.len().min(reader.ahead.len());
                buf[..n].copy_from_slice(&reader.ahead[..n]);
                reader.ahead.advance(n);
                if reader.ahead.is_empty() {
                    reader.ahead = BytesMut::new();
                }
                Ok(n)
            }
            Poll::Ready(Err(error)) => Err(error),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_write_vectored(&mut cx, bufs) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.writer)).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.writer)).poll_flush(cx)
    }

    fn shutdown_write(&self) {
        let mut cx = Context::from_waker(Waker::noop());
        let _ = Pin::new(&mut *lock(&self.writer)).poll_shutdown(&mut cx);
    }
}

/// Locks `mutex`, ignoring poisoning: the guarded data is plain I/O state
/// that stays consistent even if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffered_reads_after_readiness_and_sees_eof() {
        let (client, server) = tokio::io::duplex(64);
        let socket = Buffered::new(server);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(socket.poll_read_ready(&mut cx).is_pending());
        let mut buf = [0u8; 8];
        assert_eq!(
            socket.try_read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let mut client = client;
        tokio::io::AsyncWriteExt::write_all(&mut client, b"hello")
            .await
            .unwrap();
        std::future::poll_fn(|cx| socket.poll_read_ready(cx))
            .await
            .unwrap();
        assert_eq!(socket.try_read(&mut buf[..3]).unwrap(), 3);
        assert_eq!(socket.try_read(&mut buf).unwrap(), 2);
        drop(client);
        std::future::poll_fn(|cx| socket.poll_read_ready(cx))
            .await
            .unwrap();
        assert_eq!(socket.try_read(&mut buf).unwrap(), 0);
    }
}
