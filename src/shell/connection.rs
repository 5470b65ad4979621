//! One upgraded WebSocket: the task that serves it, reading frames and
//! finishing the writes the driver hands over through its [`Link`].
//!
//! Writes are described in `link.rs`.
//!
//! Reads: the task waits for readiness, then reads what is there into a
//! buffer that lives only while a frame is incomplete, so an idle socket
//! holds no read buffer at all.

use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use crate::core::ConnId;
use crate::proto::client_frames::{FrameReader, Inbound};
use crate::shell::admission::Admitted;
use crate::shell::driver::Command;
use crate::shell::link::{Link, Wake};
use crate::shell::socket::{Buffered, Socket};

/// How long a closing socket gets to see the client's FIN before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Bytes read from the socket per read call, into a stack buffer.
const READ_CHUNK: usize = 8 * 1024;

/// Most bytes read per wake-up before the frames are handed on, so one busy
/// client cannot hold the task.
const READ_BUDGET: usize = 64 * 1024;

/// Hands a command to the driver, evaluating to false when the driver is
/// gone. At once when its queue has room; otherwise the wait is boxed. A
/// macro rather than an `async fn` so that no command-sized future is
/// stored in the serving task, which every idle connection pays for.
macro_rules! send {
    ($commands:expr, $command:expr) => {{
        // Bound first, so no command-sized temporary lives across the wait.
        let wait = match $commands.try_send($command) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
            Err(mpsc::error::TrySendError::Full(command)) => {
                Ok(Some(Box::pin($commands.send(command))))
            }
        };
        match wait {
            Ok(None) => true,
            Ok(Some(wait)) => wait.await.is_ok(),
            Err(()) => false,
        }
    }};
}

/// Takes over an upgraded stream: hands the driver its [`Link`] and starts
/// the task that serves it. A tokio TCP stream is used as is; anything else
/// (the simulation's streams) through the buffered adapter.
pub(crate) async fn start(
    upgraded: Upgraded,
    conn: ConnId,
    commands: mpsc::Sender<Command>,
    reader: FrameReader,
    admitted: Arc<Admitted>,
) {
    let admitted = Some(admitted);
    match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
        Ok(parts) => {
            let link = Link::new(parts.io.into_inner(), admitted);
            attach(link, conn, parts.read_buf, commands, reader).await;
        }
        Err(upgraded) => {
            let link = Link::new(Buffered::new(TokioIo::new(upgraded)), admitted);
            attach(link, conn, Bytes::new(), commands, reader).await;
        }
    }
}

/// Gives the driver its share of `link`, then serves it in a task of its
/// own, so the socket's long life carries only what serving needs.
async fn attach<S: Socket>(
    link: Link<S>,
    conn: ConnId,
    early: Bytes,
    commands: mpsc::Sender<Command>,
    reader: FrameReader,
) {
    let link = Arc::new(link);
    let shared: Arc<Link> = link.clone();
    let attach = Command::Attach { conn, link: shared };
    if commands.send(attach).await.is_ok() {
        tokio::spawn(serve(link, conn, early, commands, reader));
    }
}

/// Serves one connection until it ends: reads frames into driver commands
/// and finishes handed-over writes. `early` holds bytes that arrived with
/// the handshake. `conn` is the connection's handle: its generation makes
/// the commands of a dead connection's task miss the connection that reuses
/// the slot.
///
/// This future lives as long as the socket, idle or not, so it is kept
/// small (measured by `benches/footprint.rs`): an `async move` block rather than an
/// `async fn` (whose parameters would be stored twice), no temporaries held
/// across a wait, and the waits that are rare and large (room in a full
/// driver queue, the close's timer) boxed so they cost nothing until used.
fn serve<S: Socket>(
    link: Arc<Link<S>>,
    conn: ConnId,
    early: Bytes,
    commands: mpsc::Sender<Command>,
    mut reader: FrameReader,
) -> impl Future<Output = ()> + Send {
    let mut input = (!early.is_empty()).then(|| Box::new(BytesMut::from(&early[..])));
    async move {
        // Set once the client's input ended (EOF as `UnexpectedEof`).
        let mut ended: Option<io::Error> = None;
        loop {
            loop {
                let command = match forward_frames(&mut reader, &mut input, conn, &commands) {
                    Forwarded::All => break,
                    Forwarded::Over => return,
                    Forwarded::Full(command) => command,
                };
                if !send!(commands, command) {
                    return;
                }
            }
            if let Some(error) = ended.take() {
                let closed = Command::Closed {
                    conn,
                    error: (error.kind() != io::ErrorKind::UnexpectedEof).then_some(error),
                };
                send!(commands, closed);
                return;
            }
            let wake = std::future::poll_fn(|cx| link.poll_wake(cx)).await;
            match wake {
                Wake::Close => break,
                Wake::Written(written) => {
                    if !send!(commands, Command::WriteComplete { conn, written }) {
                        return;
                    }
                }
                Wake::Failed(error) => {
                    let closed = Command::Closed {
                        conn,
                        error: Some(error),
                    };
                    send!(commands, closed);
                    return;
                }
                Wake::Readable => {
                    match read_available(&link.socket, &mut input, reader.has_failed()) {
                        Ok(ReadState::Open) => {}
                        Ok(ReadState::Ended) => ended = Some(io::ErrorKind::UnexpectedEof.into()),
                        Err(error) => ended = Some(error),
                    }
                }
            }
        }
        Box::pin(linger(&link)).await;
    }
}

/// Whether the socket has more to give.
enum ReadState {
    /// It may: wait for readiness again.
    Open,
    /// The client sent FIN.
    Ended,
}

/// Reads what the socket has (up to [`READ_BUDGET`]) onto `input` (created
/// when needed), or drops it if the stream already failed.
fn read_available<S: Socket + ?Sized>(
    socket: &S,
    input: &mut Option<Box<BytesMut>>,
    discard: bool,
) -> io::Result<ReadState> {
    let mut chunk = [0u8; READ_CHUNK];
    let mut total = 0;
    while total < READ_BUDGET {
        match socket.try_read(&mut chunk) {
            Ok(0) => return Ok(ReadState::Ended),
            Ok(n) => {
                if !discard {
                    input.get_or_insert_default().extend_from_slice(&chunk[..n]);
                }
                total += n;
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(ReadState::Open)
}

/// How far [`forward_frames`] got.
enum Forwarded {
    /// Every complete frame is with the driver.
    All,
    /// The driver's queue is full: the command waits for room, then
    /// forwarding goes on. (Even after a frame no client may send: the task
    /// stays to discard what follows until the core has written its close.)
    Full(Command),
    /// The driver is gone.
    Over,
}

/// Hands the complete frames in `input` to the driver while its queue has
/// room. Frees `input` once it is empty: an idle socket holds no buffer.
fn forward_frames(
    reader: &mut FrameReader,
    input: &mut Option<Box<BytesMut>>,
    conn: ConnId,
    commands: &mpsc::Sender<Command>,
) -> Forwarded {
    let Some(buffer) = input.as_mut() else {
        return Forwarded::All;
    };
    while let Some(inbound) = reader.next(buffer) {
        match commands.try_send(command_for(inbound, conn)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Forwarded::Over,
            Err(mpsc::error::TrySendError::Full(command)) => return Forwarded::Full(command),
        }
    }
    if buffer.is_empty() {
        *input = None;
    }
    Forwarded::All
}

/// The driver command for a client frame.
fn command_for(inbound: Inbound, conn: ConnId) -> Command {
    match inbound {
        Inbound::Text(payload) => Command::Text { conn, payload },
        Inbound::Binary => Command::Binary { conn },
        Inbound::Ping(payload) => Command::Ping { conn, payload },
        Inbound::Pong => Command::Pong { conn },
        Inbound::Close => Command::PeerClose { conn },
        // The core answers with 1009; the task stays to write the close
        // and drain the rest of the frame, so the client gets it.
        Inbound::TooBig => Command::TooBig { conn },
        // The core answers with 1002 (RFC 6455 §7.4.1) and drops the socket
        // once that is written or its grace passes; the reader discards
        // everything after the violation meanwhile.
        // The core answers with 1007; as with 1009, the task stays to write
        // the close while the reader discards what follows.
        Inbound::BadCompressedData => Command::BadCompressedData { conn },
        Inbound::Invalid(why) => {
            tracing::debug!(why, "client broke the protocol");
            Command::ProtocolError { conn }
        }
    }
}

/// Closes gracefully: FIN, then wait (briefly) for the client's, reading
/// and dropping whatever it still sends. Waiting lets the socket close with
/// FIN instead of RST, so the client reliably reads the close frame; reading
/// keeps unread bytes (the rest of an oversized frame) from causing an RST.
async fn linger<S: Socket + ?Sized>(link: &Link<S>) {
    link.socket.shutdown_write();
    let until_eof = std::future::poll_fn(|cx| {
        loop {
            match link.socket.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
            let mut discard = None;
            match read_available(&link.socket, &mut discard, true) {
                Ok(ReadState::Open) => {}
                Ok(ReadState::Ended) | Err(_) => return Poll::Ready(()),
            }
        }
    });
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, until_eof).await;
}

/// The size in bytes of the future that serves one connection, measured on
/// a real loopback socket. It is what every idle connection costs most (the
/// future lives as long as the socket), so `benches/footprint.rs` reports it
/// against its budget; not an API.
#[doc(hidden)]
pub async fn serving_future_size() -> io::Result<usize> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let client = tokio::net::TcpStream::connect(listener.local_addr()?);
    let (client, accepted) = tokio::join!(client, listener.accept());
    let (_client, (server, _)) = (client?, accepted?);
    let conn = crate::core::ConnId::new(0, 0);
    let link = Arc::new(Link::new(server, None));
    let (commands, _rx) = mpsc::channel(1);
    let serving = serve(link, conn, Bytes::new(), commands, FrameReader::new(1024));
    Ok(std::mem::size_of_val(&serving))
}

#[cfg(test)]
mod tests {
    /// tokio stores the future in a 128-byte-aligned task cell: 32 bytes of
    /// header, 16 of scheduler and id, the future plus an 8-byte tag, and a
    /// 48-byte trailer. Up to 152 bytes the cell is 256 bytes; one byte more
    /// and every connection's task takes 384.
    #[tokio::test]
    async fn the_serving_future_keeps_the_task_in_256_bytes() {
        let size = super::serving_future_size()
            .await
            .expect("a loopback socket pair");
        assert!(size <= 152, "serve() future grew to {size} bytes");
    }
}
