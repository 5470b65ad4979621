//! Writing one [`Transmit`]: everything queued for a socket, as few
//! vectored writes as the kernel allows, resumable where a full socket
//! buffer stopped it. The driver tries first without waiting; the
//! connection's task finishes what the kernel did not take.

use std::io::{self, IoSlice};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;

use crate::core::Transmit;
use crate::metrics::Metrics;
use crate::shell::socket::Socket;

/// Most slices handed to one vectored write: Linux's `UIO_MAXIOV` (also
/// IOV_MAX on macOS and the BSDs). A saturated server's transmit carries
/// 40–130 frames; a lower cap split it into two or three system calls, and
/// a write's fixed kernel cost is most of what a delivery costs.
const MAX_IO_SLICES: usize = 1024;

/// Slices that fit on the stack; a longer transmit collects them in a `Vec`.
const STACK_IO_SLICES: usize = 64;

/// One transmit being written, and how far it got: a socket's write in
/// flight.
pub(crate) struct PendingWrite {
    /// The frames, in order.
    frames: Vec<Bytes>,
    /// The first frame not completely written.
    index: usize,
    /// Bytes of `frames[index]` already written.
    offset: usize,
    /// When the oldest message in it was ingested, for `publish_to_send`.
    oldest_ingest: Option<Instant>,
}

/// A write that reached the kernel: what metrics need to know of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    /// Frames written.
    pub(crate) frames: usize,
    /// Bytes written.
    pub(crate) bytes: usize,
    /// When its oldest message was ingested.
    pub(crate) oldest_ingest: Option<Instant>,
}

impl Written {
    /// Counts the write in `metrics`: once per write, at its completion; the
    /// oldest message in it is the one that waited longest.
    pub(crate) fn record(self, metrics: &Metrics) {
        metrics.record_write(self.frames, self.bytes);
        if let Some(ingested) = self.oldest_ingest {
            metrics.record_publish_to_send(ingested.elapsed());
        }
    }
}

/// How the driver's attempt to write a transmit went.
pub(crate) enum WriteStart {
    /// All of it is with the kernel.
    Done(Written),
    /// The kernel took part; the task writes the rest and reports `WriteComplete`.
    HandedOver,
    /// The socket failed.
    Failed(io::Error),
}

impl PendingWrite {
    pub(crate) fn new(transmit: Transmit) -> PendingWrite {
        PendingWrite {
            frames: transmit.frames,
            index: 0,
            offset: 0,
            oldest_ingest: transmit.oldest_ingest,
        }
    }

    pub(crate) fn written(&self) -> Written {
        Written {
            frames: self.frames.len(),
            bytes: self.frames.iter().map(Bytes::len).sum(),
            oldest_ingest: self.oldest_ingest,
        }
    }

    /// Writes until every byte is with the kernel (`Ready(Ok)`), the socket
    /// is full (`Pending`, `cx` registered), or it fails.
    pub(crate) fn poll_write<S: Socket + ?Sized>(
        &mut self,
        socket: &S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        self.write_with(|slices| match slices {
            [] => socket.poll_flush(cx).map_ok(|()| 0),
            _ => socket.poll_write_vectored(cx, slices),
        })
    }

    /// Writes until every byte is with the kernel (`Ready(Ok)`), the socket
    /// is full (`Pending`, nobody to wake), or it fails; never yields.
    pub(crate) fn try_write<S: Socket + ?Sized>(&mut self, socket: &S) -> Poll<io::Result<()>> {
        self.write_with(|slices| match slices {
            [] => socket
                .poll_flush(&mut Context::from_waker(std::task::Waker::noop()))
                .map_ok(|()| 0),
            _ => match socket.try_write_vectored(slices) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
                other => Poll::Ready(other),
            },
        })
    }

    /// The write loop over `write`, one vectored write per call; once every
    /// byte is written, `write(&[])` flushes what the socket kept.
    fn write_with(
        &mut self,
        mut write: impl FnMut(&[IoSlice<'_>]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<()>> {
        loop {
            // Skip empty frames so a write never gets an all-empty slice list.
            while self.index < self.frames.len() && self.frames[self.index].len() == self.offset {
                self.index += 1;
                self.offset = 0;
            }
            if self.index == self.frames.len() {
                return write(&[]).map_ok(|_| ());
            }
            let first = &self.frames[self.index][self.offset..];
            let rest = self.frames[self.index + 1..].iter().map(|f| &f[..]);
            let unwritten = std::iter::once(first).chain(rest).map(IoSlice::new);
            let count = (self.frames.len() - self.index).min(MAX_IO_SLICES);
            let result = if count <= STACK_IO_SLICES {
                let mut slices = [IoSlice::new(&[]); STACK_IO_SLICES];
                for (slot, slice) in slices.iter_mut().zip(unwritten) {
                    *slot = slice;
                }
                write(&slices[..count])
            } else {
                let slices: Vec<IoSlice<'_>> = unwritten.take(count).collect();
                write(&slices)
            };
            let mut written = match result {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            };
            while written > 0 {
                let left = self.frames[self.index].len() - self.offset;
                if written >= left {
                    written -= left;
                    self.index += 1;
                    self.offset = 0;
                } else {
                    self.offset += written;
                    written = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::shell::socket::Buffered;

    #[test]
    fn a_transmit_of_hundreds_of_frames_is_one_vectored_write() {
        let frames: Vec<Bytes> = (0..300u16)
            .map(|i| Bytes::from(i.to_be_bytes().to_vec()))
            .collect();
        let mut write = PendingWrite {
            frames,
            index: 0,
            offset: 0,
            oldest_ingest: None,
        };
        let mut calls = Vec::new();
        let mut written = Vec::new();
        let result = write.write_with(|slices| {
            calls.push(slices.len());
            for slice in slices {
                written.extend_from_slice(slice);
            }
            Poll::Ready(Ok(slices.iter().map(|s| s.len()).sum()))
        });
        assert!(matches!(result, Poll::Ready(Ok(()))));
        // One write with every frame, then the flush (no slices).
        assert_eq!(calls, vec![300, 0]);
        let expected: Vec<u8> = (0..300u16).flat_map(u16::to_be_bytes).collect();
        assert_eq!(written, expected);
    }

    #[tokio::test]
    async fn a_transmit_is_written_in_order_through_many_partial_writes() {
        let frames: Vec<Bytes> = (0..200u8)
            .map(|i| Bytes::from(vec![i; usize::from(i % 7)]))
            .collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        // A tiny duplex buffer forces many partial writes and waits.
        let (ours, mut theirs) = tokio::io::duplex(5);
        let socket = Buffered::new(ours);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut out)
                .await
                .unwrap();
            out
        });
        let mut write = PendingWrite {
            frames,
            index: 0,
            offset: 0,
            oldest_ingest: None,
        };
        std::future::poll_fn(|cx| write.poll_write(&socket, cx))
            .await
            .unwrap();
        assert_eq!(write.written().bytes, expected.len());
        socket.shutdown_write();
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, expected);
    }
}
