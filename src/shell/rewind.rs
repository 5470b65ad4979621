//! The first byte of a connection on the TLS port: [`Rewind`] gives it back
//! to the TLS handshake that needs it, and [`refuse`] closes a connection
//! that turned out not to be TLS (answering plain HTTP first) without a
//! reset.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How long a connection that is not TLS gets to read our answer and close
/// its side before it is dropped.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// Closes a connection that will not be served: writes `answer`, sends FIN,
/// and reads (and drops) what the client still sends for a moment, so the
/// close is a FIN the client sees after the answer rather than a reset.
pub(crate) async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    answer: Option<&[u8]>,
) {
    let _ = tokio::time::timeout(REFUSAL_GRACE, async {
        if let Some(answer) = answer {
            stream.write_all(answer).await?;
        }
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        let mut budget: usize = 64 * 1024;
        while budget > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            budget = budget.saturating_sub(n);
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

/// A stream whose first byte was read to tell TLS from plain HTTP, and
/// which gives that byte back before the rest.
#[derive(Debug)]
pub(crate) struct Rewind<S> {
    /// The byte read ahead, until it is read again.
    first: Option<u8>,
    /// The connection.
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner`, with `first` read from it already.
    pub(crate) fn new(first: u8, inner: S) -> Rewind<S> {
        Rewind {
            first: Some(first),
            inner,
        }
    }

    /// The connection (without the byte, if it was not read again).
    pub(crate) fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() > 0
            && let Some(first) = self.first.take()
        {
            buf.put_slice(&[first]);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rewind_gives_the_first_byte_back_before_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"bcd").await.unwrap();
        drop(client);
        let mut rewound = Rewind {
            first: Some(b'a'),
            inner: server,
        };
        let mut all = Vec::new();
        rewound.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"abcd");
    }
}
