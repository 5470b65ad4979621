//! One upgraded WebSocket: a reader task that turns frames into driver
//! commands, and a writer task that writes the core's pre-encoded frames.
//!
//! `read_frame` is not cancel-safe, so the reader has its own task and is
//! never raced in `select!`; it is aborted when the socket must close. The
//! writer takes each [`Transmit`] (everything queued for this socket) and
//! writes it with vectored writes, then reports completion to the driver.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{OpCode, Role, WebSocketError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::core::Transmit;
use crate::metrics::Metrics;
use crate::shell::driver::{Attachment, Command, ConnKey};

/// How long a closing socket gets to flush its FIN before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Most slices handed to one `write_vectored` call (below every OS's IOV_MAX).
const MAX_IO_SLICES: usize = 64;

/// Starts the reader and writer of an upgraded socket.
pub(crate) fn spawn<S>(
    stream: S,
    attachment: Attachment,
    commands: mpsc::Sender<Command>,
    max_message_bytes: usize,
    metrics: Arc<Metrics>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let Attachment {
        key,
        outbound,
        kill,
    } = attachment;
    let reader = tokio::spawn(read_loop(
        read_half,
        key,
        commands.clone(),
        max_message_bytes,
    ));
    tokio::spawn(write_loop(
        write_half, key, outbound, kill, reader, commands, metrics,
    ));
}

/// Reads frames until the socket ends, the peer closes, or the task is aborted.
async fn read_loop<R>(
    read_half: R,
    key: ConnKey,
    commands: mpsc::Sender<Command>,
    max_message_bytes: usize,
) where
    R: AsyncRead + Unpin,
{
    // The write half is never used: auto-pong and auto-close are off, so the
    // library has nothing to send; the core answers pings and closes.
    let (mut ws, _) =
        fastwebsockets::after_handshake_split(read_half, tokio::io::sink(), Role::Server);
    ws.set_auto_close(false);
    ws.set_auto_pong(false);
    // The library refuses a frame whose length is >= the limit; ours is inclusive.
    ws.set_max_message_size(max_message_bytes.saturating_add(1));

    // A fragmented message being collected: its opcode and bytes so far.
    let mut partial: Option<(OpCode, Vec<u8>)> = None;
    loop {
        let frame = ws
            .read_frame(&mut |_| std::future::ready(Ok::<(), std::io::Error>(())))
            .await;
        let command = match frame {
            Ok(frame) => match frame.opcode {
                OpCode::Text | OpCode::Binary if partial.is_some() => {
                    // A new message inside a fragmented one: protocol error.
                    Command::Closed { key }
                }
                OpCode::Text | OpCode::Binary if !frame.fin => {
                    partial = Some((frame.opcode, frame.payload.to_vec()));
                    continue;
                }
                OpCode::Text => Command::Text {
                    key,
                    payload: Bytes::copy_from_slice(&frame.payload),
                },
                OpCode::Binary => Command::Binary { key },
                OpCode::Continuation => {
                    let Some((opcode, mut bytes)) = partial.take() else {
                        let _ = commands.send(Command::Closed { key }).await;
                        return;
                    };
                    bytes.extend_from_slice(&frame.payload);
                    if bytes.len() > max_message_bytes {
                        Command::TooBig { key }
                    } else if !frame.fin {
                        partial = Some((opcode, bytes));
                        continue;
                    } else if opcode == OpCode::Text {
                        Command::Text {
                            key,
                            payload: Bytes::from(bytes),
                        }
                    } else {
                        Command::Binary { key }
                    }
                }
                OpCode::Ping => Command::Ping {
                    key,
                    payload: Bytes::copy_from_slice(&frame.payload),
                },
                OpCode::Pong => Command::Pong { key },
                OpCode::Close => Command::PeerClose { key },
            },
            Err(WebSocketError::FrameTooLarge) => Command::TooBig { key },
            // The library consumed the frame and dropped its payload; the core
            // answers any invalid UTF-8 with a `bad_frame` error, so hand it
            // bytes that are invalid in the same way. The stream stays usable.
            Err(WebSocketError::InvalidUTF8) => Command::Text {
                key,
                payload: Bytes::from_static(&[0xFF]),
            },
            Err(error) => {
                tracing::debug!(conn = %key.conn, %error, "read ended");
                Command::Closed { key }
            }
        };
        // After these the socket's remaining bytes cannot be trusted (or the
        // peer said goodbye); the core closes and the driver drops the socket.
        let last = matches!(
            command,
            Command::TooBig { .. } | Command::PeerClose { .. } | Command::Closed { .. }
        );
        if commands.send(command).await.is_err() || last {
            return;
        }
    }
}

/// Writes what the core sends until the driver drops the connection.
async fn write_loop<W>(
    mut write_half: W,
    key: ConnKey,
    mut outbound: mpsc::UnboundedReceiver<Transmit>,
    mut kill: tokio::sync::oneshot::Receiver<()>,
    mut reader: JoinHandle<()>,
    commands: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
) where
    W: AsyncWrite + Unpin,
{
    loop {
        // Cancelling a write is fine here: it only happens when the socket is
        // being abandoned (a slow consumer past its grace period).
        let transmit = tokio::select! {
            biased;
            _ = &mut kill => break,
            transmit = outbound.recv() => match transmit {
                Some(transmit) => transmit,
                None => break,
            },
        };
        let bytes: usize = transmit.frames.iter().map(Bytes::len).sum();
        let written = tokio::select! {
            biased;
            _ = &mut kill => break,
            result = write_all_vectored(&mut write_half, &transmit.frames) => result,
        };
        match written {
            Ok(()) => {
                metrics.record_write(transmit.frames.len(), bytes);
                if commands.send(Command::WriteComplete { key }).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                tracing::debug!(conn = %key.conn, %error, "write failed");
                let _ = commands.send(Command::Closed { key }).await;
                break;
            }
        }
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, write_half.shutdown()).await;
    // A client that got our close frame answers and hangs up; waiting for
    // that (briefly) lets the socket close with FIN instead of RST, so the
    // client reliably reads the close frame before the connection ends.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut reader).await;
    reader.abort();
}

/// Writes every frame, as few `write_vectored` calls as the kernel allows.
async fn write_all_vectored<W>(writer: &mut W, frames: &[Bytes]) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut index = 0;
    let mut offset = 0;
    loop {
        // Skip empty frames so a write never gets an all-empty slice list.
        while index < frames.len() && frames[index].len() == offset {
            index += 1;
            offset = 0;
        }
        if index == frames.len() {
            break;
        }
        let slices: Vec<IoSlice<'_>> = std::iter::once(&frames[index][offset..])
            .chain(frames[index + 1..].iter().map(|f| &f[..]))
            .take(MAX_IO_SLICES)
            .map(IoSlice::new)
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while index < frames.len() && written > 0 {
            let left = frames[index].len() - offset;
            if written >= left {
                written -= left;
                index += 1;
                offset = 0;
            } else {
                offset += written;
                written = 0;
            }
        }
    }
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn vectored_write_sends_every_byte_in_order() {
        let frames: Vec<Bytes> = (0..200u8)
            .map(|i| Bytes::from(vec![i; usize::from(i % 7)]))
            .collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        // A tiny duplex buffer forces many partial writes.
        let (mut a, mut b) = tokio::io::duplex(5);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut out)
                .await
                .unwrap();
            out
        });
        write_all_vectored(&mut a, &frames).await.unwrap();
        drop(a);
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, expected);
    }
}
