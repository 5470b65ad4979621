//! What the driver and one connection's task share: the [`Link`] (the
//! socket plus the handover of a write the driver could not finish). Its own
//! file so that the driver and the connection's task both build on it
//! without importing each other.
//!
//! Writes: the driver writes each [`Transmit`] (everything queued for the
//! socket) straight into the socket, in vectored writes, with no task switch.
//! Only when the kernel's buffer is full does it hand the rest to the
//! connection's task, which finishes it when the socket drains and reports
//! `WriteComplete`. One wake-up per socket per transmit, and usually none.

use std::io;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::core::Transmit;
use crate::shell::admission::Admitted;
use crate::shell::socket::{Socket, lock};
use crate::shell::write::{PendingWrite, WriteStart, Written};

/// What the driver and a connection's task share.
///
/// Every open connection holds one in an `Arc`, so its size is counted in
/// 16-byte malloc steps: at 88 bytes the `Arc` takes a 112-byte block, at 96
/// (with the connection's handle, which its task now keeps: the task's
/// 256-byte block had room for it) a 128-byte one.
pub(crate) struct Link<S: ?Sized = dyn Socket> {
    /// The handover between driver and task, locked briefly by either.
    state: Mutex<Handover>,
    /// This socket's share of the connection limits counted from accept,
    /// released when the last holder of the link drops it.
    _admitted: Option<Arc<Admitted>>,
    /// The socket; last, so a `Link` of any socket type can be shared as a
    /// `Link<dyn Socket>`.
    pub(super) socket: S,
}

/// What the driver hands the connection's task.
#[derive(Default)]
struct Handover {
    /// A write the driver could not finish without blocking; the task writes
    /// the rest when the socket drains. At most one: the core sends the next
    /// transmit only after this one completes.
    pending: Option<Box<PendingWrite>>,
    /// Set once the socket must close (the core dropped the connection).
    closing: bool,
    /// The task's waker, so a handover wakes it.
    waker: Option<Waker>,
}

impl<S: Socket> Link<S> {
    pub(super) fn new(socket: S, admitted: Option<Arc<Admitted>>) -> Link<S> {
        Link {
            state: Mutex::new(Handover::default()),
            _admitted: admitted,
            socket,
        }
    }
}

impl<S: Socket + ?Sized> Link<S> {
    /// The driver's write: as much of `transmit` as the kernel takes now,
    /// and the rest handed to the connection's task.
    pub(crate) fn start_write(&self, transmit: Transmit) -> WriteStart {
        let mut write = PendingWrite::new(transmit);
        match write.try_write(&self.socket) {
            Poll::Ready(Ok(())) => WriteStart::Done(write.written()),
            Poll::Ready(Err(error)) => WriteStart::Failed(error),
            Poll::Pending => {
                let waker = {
                    let mut state = lock(&self.state);
                    state.pending = Some(Box::new(write));
                    state.waker.clone()
                };
                if let Some(waker) = waker {
                    waker.wake();
                }
                WriteStart::HandedOver
            }
        }
    }

    /// Tells the connection's task to close the socket (it drops any write
    /// still pending: the connection is being abandoned).
    pub(crate) fn close(&self) {
        let waker = {
            let mut state = lock(&self.state);
            state.closing = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// What the task should do next; registers `cx` for all of it.
    pub(super) fn poll_wake(&self, cx: &mut Context<'_>) -> Poll<Wake> {
        let mut state = lock(&self.state);
        if state.closing {
            return Poll::Ready(Wake::Close);
        }
        if let Some(write) = state.pending.as_mut() {
            match write.poll_write(&self.socket, cx) {
                Poll::Ready(Ok(())) => {
                    let written = write.written();
                    state.pending = None;
                    return Poll::Ready(Wake::Written(written));
                }
                Poll::Ready(Err(error)) => {
                    state.pending = None;
                    return Poll::Ready(Wake::Failed(error));
                }
                Poll::Pending => {}
            }
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        drop(state);
        match self.socket.poll_read_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Wake::Readable),
            Poll::Ready(Err(error)) => Poll::Ready(Wake::Failed(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Why the connection's task woke.
pub(super) enum Wake {
    /// The driver closed the connection.
    Close,
    /// The handed-over write is with the kernel.
    Written(Written),
    /// The socket failed.
    Failed(io::Error),
    /// Bytes (or EOF) are waiting.
    Readable,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Arc` around a link is 16 bytes more; at 88 bytes it takes a
    /// 112-byte malloc block, at 96 a 128-byte one, for every connection.
    #[test]
    fn a_tcp_link_fits_a_112_byte_allocation() {
        let size = std::mem::size_of::<Link<tokio::net::TcpStream>>();
        assert!(size <= 88, "Link<TcpStream> grew to {size} bytes");
    }
}
