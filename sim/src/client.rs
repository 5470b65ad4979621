//! A real WebSocket client on a turmoil host: fastwebsockets' client
//! handshake through hyper's client connection over a turmoil `TcpStream`.
//! A reader task logs every frame it reads into the [`Recorder`]; it can be
//! paused to play a slow consumer, and the handle writes protocol frames (or
//! deliberately broken ones).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError, WebSocketWrite};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::recorder::{ClientName, Happening, MsgId, Recorder};
use crate::send_buffer::{ClientStream, SendBuffers};

/// The write half of a client's WebSocket, shared by the handle (requests)
/// and the reader (the pongs and close echoes fastwebsockets obliges it to
/// send).
type Writer = WebSocketWrite<tokio::io::WriteHalf<TokioIo<Upgraded>>>;

/// Why a client could not do what the scenario asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("connect failed: {0}")]
    Connect(#[from] std::io::Error),
    /// The server answered the upgrade with this HTTP status.
    #[error("upgrade refused with HTTP {0}")]
    Refused(u16),
    /// The WebSocket layer failed.
    #[error("websocket: {0}")]
    WebSocket(WebSocketError),
    /// A deadline of the harness passed.
    #[error("timed out: {0}")]
    TimedOut(&'static str),
}

impl From<WebSocketError> for ClientError {
    fn from(error: WebSocketError) -> Self {
        match error {
            WebSocketError::InvalidStatusCode(status) => ClientError::Refused(status),
            other => ClientError::WebSocket(other),
        }
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The client's name in the trace.
    pub name: ClientName,
    /// The server's turmoil host name.
    pub server: String,
    /// The server's port.
    pub port: u16,
    /// The JWT, sent as `Authorization: Bearer`.
    pub token: String,
    /// Connect-time channels (`?channels=`).
    pub channels: Vec<String>,
    /// The run's send-buffer ledger, told what this client reads.
    pub send_buffers: SendBuffers,
}

/// What the reader has seen, for the scenario to wait on.
#[derive(Debug, Default, Clone)]
pub struct ClientState {
    /// The `connected` frame arrived.
    pub connected: bool,
    /// The connection ended: `Some(code)` for a close frame, `Some(None)`
    /// for a socket that ended without one.
    pub closed: Option<Option<u16>>,
    /// `message` frames read.
    pub messages: usize,
    /// `error` frame codes read.
    pub errors: Vec<String>,
    /// The server's subscription set from the last ack.
    pub current: Vec<String>,
    /// Acks (`subscribed` / `unsubscribed`) read.
    pub acks: usize,
    /// `positions` of the last `subscribed` ack that had them, by channel:
    /// where a client's cursor starts (protocol "Client rule").
    pub positions: BTreeMap<String, String>,
    /// `recovered` of the last `subscribed` ack that had it, by channel.
    pub recovered: BTreeMap<String, bool>,
    /// Every `message` read, in order, for building cursors and comparing
    /// streams exactly.
    pub log: Vec<Delivery>,
    /// `refresh_required` frames read.
    pub refresh_asked: usize,
    /// `refreshed` answers read.
    pub refreshed: usize,
}

/// One `message` frame as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its `channel`.
    pub channel: String,
    /// Its `pos`, verbatim.
    pub pos: String,
    /// Whether it was marked `"snapshot":true` (not applied to cursors).
    pub snapshot: bool,
}

/// One connected client.
pub struct SimClient {
    /// Its name in the trace.
    name: ClientName,
    /// The shared write half.
    writer: Arc<tokio::sync::Mutex<Writer>>,
    /// `true` while the reader must not read (slow consumer).
    paused: watch::Sender<bool>,
    /// What the reader has seen.
    state: Arc<Mutex<ClientState>>,
    /// The reader task.
    reader: JoinHandle<()>,
    /// The shared log.
    recorder: Recorder,
    /// Request ids, so acks can be told apart.
    next_id: u64,
}

/// Hyper's client connection task runs on the host's runtime.
#[derive(Clone, Copy)]
struct SpawnExecutor;

impl<Fut> hyper::rt::Executor<Fut> for SpawnExecutor
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, fut: Fut) {
        tokio::task::spawn(fut);
    }
}

impl SimClient {
    /// Connects, upgrades and starts the reader. Retries a refused TCP
    /// connection a bounded number of times (the server host may still be
    /// starting). An HTTP refusal is recorded and returned.
    pub async fn connect(
        options: ClientOptions,
        recorder: Recorder,
    ) -> Result<SimClient, ClientError> {
        recorder.record(Happening::Connecting {
            client: options.name.clone(),
            channels: options.channels.clone(),
        });
        let result = tokio::time::timeout(Duration::from_secs(10), handshake(&options)).await;
        let ws = match result {
            Ok(Ok(ws)) => ws,
            Ok(Err(error)) => {
                let status = match &error {
                    ClientError::Refused(status) => *status,
                    _ => 0,
                };
                recorder.record(Happening::Refused {
                    client: options.name.clone(),
                    status,
                });
                return Err(error);
            }
            Err(_) => {
                recorder.record(Happening::Refused {
                    client: options.name.clone(),
                    status: 0,
                });
                return Err(ClientError::TimedOut("handshake"));
            }
        };
        let (read, write) = ws.split(tokio::io::split);
        let writer = Arc::new(tokio::sync::Mutex::new(write));
        let (paused, paused_rx) = watch::channel(false);
        let state = Arc::new(Mutex::new(ClientState::default()));
        let reader = tokio::spawn(read_loop(
            options.name.clone(),
            read,
            writer.clone(),
            paused_rx,
            state.clone(),
            recorder.clone(),
        ));
        Ok(SimClient {
            name: options.name,
            writer,
            paused,
            state,
            reader,
            recorder,
            next_id: 1,
        })
    }

    /// Its name in the trace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A snapshot of what the reader has seen.
    pub fn state(&self) -> ClientState {
        lock(&self.state).clone()
    }

    /// Waits (bounded, in simulated time) until `done` holds for the state.
    pub async fn wait_for(
        &self,
        what: &'static str,
        limit: Duration,
        done: impl Fn(&ClientState) -> bool,
    ) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if done(&lock(&self.state)) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::TimedOut(what));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the `connected` frame.
    pub async fn wait_connected(&self) -> Result<(), ClientError> {
        self.wait_for("connected frame", Duration::from_secs(10), |state| {
            state.connected
        })
        .await
    }

    /// Waits until the server's view of the subscription set (from the last
    /// ack) is exactly `expected`.
    pub async fn wait_subscribed(&self, expected: &[String]) -> Result<(), ClientError> {
        let mut expected = expected.to_vec();
        expected.sort();
        self.wait_for("subscription ack", Duration::from_secs(10), move |state| {
            let mut current = state.current.clone();
            current.sort();
            current == expected
        })
        .await
    }

    /// Sends `subscribe` (logged before it is written, so the log's order
    /// bounds when the server may act on it).
    pub async fn subscribe(&mut self, channels: &[String]) -> Result<(), ClientError> {
        self.recorder.record(Happening::SubscribeSent {
            client: self.name.clone(),
            channels: channels.to_vec(),
        });
        let id = self.take_id();
        let frame = serde_json::json!({"type": "subscribe", "channels": channels, "id": id});
        self.send_text(&frame.to_string()).await
    }

    /// Sends `subscribe` with `since` cursors (recover), logged before it
    /// is written as [`Happening::RecoverSent`].
    pub async fn subscribe_since(
        &mut self,
        channels: &[String],
        since: &BTreeMap<String, String>,
    ) -> Result<(), ClientError> {
        self.recorder.record(Happening::RecoverSent {
            client: self.name.clone(),
            channels: channels.to_vec(),
        });
        let id = self.take_id();
        let frame = serde_json::json!({"type": "subscribe", "channels": channels, "since": since, "id": id});
        self.send_text(&frame.to_string()).await
    }

    /// Sends `unsubscribe` (logged before it is written).
    pub async fn unsubscribe(&mut self, channels: &[String]) -> Result<(), ClientError> {
        self.recorder.record(Happening::UnsubscribeSent {
            client: self.name.clone(),
            channels: channels.to_vec(),
        });
        let id = self.take_id();
        let frame = serde_json::json!({"type": "unsubscribe", "channels": channels, "id": id});
        self.send_text(&frame.to_string()).await
    }

    /// Writes one text frame with exactly these bytes (which need not be
    /// JSON, or even UTF-8: bad clients send anything).
    pub async fn send_text(&self, text: &str) -> Result<(), ClientError> {
        self.send_frame(OpCode::Text, Bytes::copy_from_slice(text.as_bytes()))
            .await
    }

    /// Writes one frame of `opcode` carrying `payload`.
    pub async fn send_frame(&self, opcode: OpCode, payload: Bytes) -> Result<(), ClientError> {
        let frame = Frame::new(true, opcode, None, Payload::Owned(payload.to_vec()));
        // Bounded: a write into a socket the server has abandoned may wait
        // for buffer space forever.
        let write = async {
            let mut writer = self.writer.lock().await;
            writer.write_frame(frame).await
        };
        match tokio::time::timeout(Duration::from_secs(5), write).await {
            Ok(written) => Ok(written?),
            Err(_) => Err(ClientError::TimedOut("frame write")),
        }
    }

    /// Stops reading the socket: the server's writes back up (turmoil has
    /// TCP flow control), as with a slow consumer.
    pub fn pause(&self) {
        self.recorder.record(Happening::Paused {
            client: self.name.clone(),
        });
        self.paused.send_replace(true);
    }

    /// Reads again.
    pub fn resume(&self) {
        self.recorder.record(Happening::Resumed {
            client: self.name.clone(),
        });
        self.paused.send_replace(false);
    }

    /// Closes with 1000 and waits (bounded) for the reader to see the end.
    pub async fn leave(self) {
        self.recorder.record(Happening::Left {
            client: self.name.clone(),
        });
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut writer = self.writer.lock().await;
            let _ = writer.write_frame(Frame::close(1000, b"bye")).await;
        })
        .await;
        self.paused.send_replace(false);
        let mut reader = self.reader;
        if tokio::time::timeout(Duration::from_secs(5), &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }

    /// Drops the connection without a close frame (a vanished client).
    pub fn vanish(self) {
        self.recorder.record(Happening::Left {
            client: self.name.clone(),
        });
        self.reader.abort();
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

async fn handshake(
    options: &ClientOptions,
) -> Result<fastwebsockets::WebSocket<TokioIo<Upgraded>>, ClientError> {
    let mut attempts = 0;
    let stream = loop {
        match turmoil::net::TcpStream::connect((options.server.as_str(), options.port)).await {
            Ok(stream) => break stream,
            Err(error) if attempts < 50 => {
                attempts += 1;
                tracing::debug!(%error, "server not up yet");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error.into()),
        }
    };
    let stream = ClientStream::new(stream, options.send_buffers.clone())?;
    let mut uri = String::from("/ws");
    if !options.channels.is_empty() {
        uri.push_str("?channels=");
        uri.push_str(&options.channels.join(","));
    }
    let request = hyper::Request::builder()
        .method("GET")
        .uri(uri)
        .header("Host", options.server.as_str())
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", options.token),
        )
        .body(Empty::<Bytes>::new())
        .expect("the request is built from valid parts");
    let (ws, _response) =
        fastwebsockets::handshake::client(&SpawnExecutor, request, stream).await?;
    Ok(ws)
}

type Reader = fastwebsockets::WebSocketRead<tokio::io::ReadHalf<TokioIo<Upgraded>>>;

async fn read_loop(
    name: ClientName,
    mut read: Reader,
    writer: Arc<tokio::sync::Mutex<Writer>>,
    mut paused: watch::Receiver<bool>,
    state: Arc<Mutex<ClientState>>,
    recorder: Recorder,
) {
    // Pongs and close echoes are best effort and bounded: a reader must never
    // stall behind a write into a socket the server has abandoned.
    let mut send_obligated = |frame: Frame<'static>| {
        let writer = writer.clone();
        async move {
            let write = async { writer.lock().await.write_frame(frame).await };
            let _ = tokio::time::timeout(Duration::from_millis(500), write).await;
            Ok::<(), WebSocketError>(())
        }
    };
    loop {
        // Pausing only between frames: read_frame is not cancel-safe.
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                break;
            }
        }
        let frame = match read.read_frame(&mut send_obligated).await {
            Ok(frame) => frame,
            Err(error) => {
                tracing::debug!(client = %name, %error, "connection ended");
                end(&name, &state, &recorder, None);
                return;
            }
        };
        match frame.opcode {
            OpCode::Close => {
                let code = (frame.payload.len() >= 2)
                    .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                end(&name, &state, &recorder, code);
                return;
            }
            OpCode::Text => on_text(&name, &frame.payload, &state, &recorder),
            OpCode::Pong | OpCode::Ping => {}
            other => recorder.record(Happening::Unexpected {
                client: name.clone(),
                what: format!("{other:?} frame"),
            }),
        }
    }
}

fn end(name: &str, state: &Mutex<ClientState>, recorder: &Recorder, code: Option<u16>) {
    let mut state = lock(state);
    if state.closed.is_none() {
        state.closed = Some(code);
        recorder.record(Happening::Closed {
            client: name.to_owned(),
            code,
        });
    }
}

fn on_text(name: &str, payload: &[u8], state: &Mutex<ClientState>, recorder: &Recorder) {
    let unexpected = |what: String| {
        recorder.record(Happening::Unexpected {
            client: name.to_owned(),
            what,
        })
    };
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(value) => value,
        Err(error) => return unexpected(format!("non-JSON text frame: {error}")),
    };
    // Array batching, if the server was configured for it.
    let frames = match value {
        serde_json::Value::Array(items) => items,
        single => vec![single],
    };
    for frame in frames {
        let kind = frame["type"].as_str().unwrap_or_default();
        match kind {
            "connected" => {
                lock(state).connected = true;
                recorder.record(Happening::Connected {
                    client: name.to_owned(),
                });
            }
            "subscribed" | "unsubscribed" => {
                let current: Vec<String> = frame["current"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect();
                {
                    let mut state = lock(state);
                    state.current = current.clone();
                    state.acks += 1;
                    if let Some(positions) = frame["positions"].as_object() {
                        state.positions = positions
                            .iter()
                            .filter_map(|(c, p)| Some((c.clone(), p.as_str()?.to_owned())))
                            .collect();
                    }
                    if let Some(recovered) = frame["recovered"].as_object() {
                        state.recovered = recovered
                            .iter()
                            .filter_map(|(c, r)| Some((c.clone(), r.as_bool()?)))
                            .collect();
                    }
                }
                recorder.record(Happening::Subscriptions {
                    client: name.to_owned(),
                    current,
                });
            }
            "message" => {
                let channel = frame["channel"].as_str().unwrap_or_default().to_owned();
                let Some(msg) = frame["pos"].as_str().and_then(MsgId::parse) else {
                    unexpected(format!("message without a partition:offset pos: {frame}"));
                    continue;
                };
                {
                    let mut state = lock(state);
                    state.messages += 1;
                    state.log.push(Delivery {
                        channel: channel.clone(),
                        pos: frame["pos"].as_str().unwrap_or_default().to_owned(),
                        snapshot: frame["snapshot"].as_bool() == Some(true),
                    });
                }
                recorder.record(Happening::Received {
                    client: name.to_owned(),
                    channel,
                    msg,
                });
            }
            "error" => {
                let code = frame["code"].as_str().unwrap_or_default().to_owned();
                lock(state).errors.push(code.clone());
                recorder.record(Happening::ErrorFrame {
                    client: name.to_owned(),
                    code,
                });
            }
            "refresh_required" => lock(state).refresh_asked += 1,
            "refreshed" => lock(state).refreshed += 1,
            "ping" | "pong" => {}
            _ => unexpected(format!("unknown frame {frame}")),
        }
    }
}

fn lock(state: &Mutex<ClientState>) -> std::sync::MutexGuard<'_, ClientState> {
    // Single pushes and flag flips only: a poisoned lock is still consistent.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
