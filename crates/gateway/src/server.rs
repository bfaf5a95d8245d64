//! The gateway server: a TCP listener whose sessions log in, send commands onto the input ring
//! and receive their events from the Responder. It runs on its own tokio runtime, never on an
//! engine thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use ringmatch_pipeline::{now_ns, Submitter};
use ringmatch_proto::{Command, CommandType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::auth::Credential;
use crate::metrics::{GatewayMetrics, SessionEnd};
use crate::output::{Duty, Flushed, SessionOutput};
use crate::protocol::{
    decode_frame, encode_frame, Decoded, ErrorCode, Frame, LOGIN_FLAG_CANCEL_ON_DISCONNECT,
    PROTOCOL_VERSION,
};
use crate::responder::Registration;

/// Limits and credentials of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Longest frame accepted (bytes after the length prefix).
    pub frame_size_max_bytes: usize,
    /// Most sessions at once.
    pub sessions_max: usize,
    /// Most commands per second per session (a one-second burst is allowed).
    pub session_commands_per_second_max: u32,
    /// Most frames waiting to be written to one session, counted in event frames' worth of
    /// bytes beyond what its socket has taken; a session whose queue fills is disconnected.
    pub session_queue_depth_max: usize,
    /// How often each side sends a heartbeat when otherwise silent.
    pub heartbeat_interval: Duration,
    /// A session that sends nothing for this long is dropped.
    pub session_timeout: Duration,
    /// The logins.
    pub credentials: Vec<Credential>,
}

struct Context {
    config: GatewayConfig,
    credentials: HashMap<u32, Credential>,
    registrations: Sender<Registration>,
    sessions_count: AtomicUsize,
    next_session_id: AtomicU32,
    stop: watch::Receiver<bool>,
    metrics: Arc<GatewayMetrics>,
}

/// The running gateway.
pub struct Gateway {
    runtime: tokio::runtime::Runtime,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    context: Arc<Context>,
}

impl Gateway {
    /// Binds the listener and starts serving. `registrations` connects sessions to the
    /// Responder; `submitter` is cloned for each session; `metrics` is shared with the
    /// Responder (see [`crate::responder`]).
    pub fn start(
        config: GatewayConfig,
        submitter: Submitter,
        registrations: Sender<Registration>,
        metrics: Arc<GatewayMetrics>,
    ) -> std::io::Result<Gateway> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gateway")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind(config.listen))?;
        let local_addr = listener.local_addr()?;
        let (stop_sender, stop) = watch::channel(false);
        let credentials = config
            .credentials
            .iter()
            .map(|credential| (credential.account, credential.clone()))
            .collect();
        let context = Arc::new(Context {
            config,
            credentials,
            registrations,
            sessions_count: AtomicUsize::new(0),
            next_session_id: AtomicU32::new(1),
            stop,
            metrics,
        });
        runtime.spawn(accept_loop(listener, Arc::clone(&context), submitter));
        Ok(Gateway {
            runtime,
            local_addr,
            stop: stop_sender,
            context,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sessions connected now.
    pub fn sessions_count(&self) -> usize {
        self.context.sessions_count.load(Ordering::Relaxed)
    }

    /// Stops accepting, tells every session the server is shutting down, and waits (at most
    /// `grace`) for them to end, so their ring handles are released.
    pub fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let deadline = Instant::now() + grace;
        while self.context.sessions_count.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.runtime.shutdown_timeout(Duration::from_millis(200));
    }
}

async fn accept_loop(listener: TcpListener, context: Arc<Context>, submitter: Submitter) {
    let mut stop = context.stop.clone();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                context.metrics.connections.fetch_add(1, Ordering::Relaxed);
                let count = context.sessions_count.fetch_add(1, Ordering::AcqRel) + 1;
                let context = Arc::clone(&context);
                if count > context.config.sessions_max {
                    context.metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, sessions_max = context.config.sessions_max, "connection refused: the gateway has its maximum number of sessions");
                    tokio::spawn(async move {
                        refuse(stream, ErrorCode::TooManySessions, "the gateway has its maximum number of sessions").await;
                        context.sessions_count.fetch_sub(1, Ordering::AcqRel);
                    });
                    continue;
                }
                let submitter = submitter.clone();
                tokio::spawn(async move {
                    run_session(stream, peer, &context, submitter).await;
                    context.sessions_count.fetch_sub(1, Ordering::AcqRel);
                });
            }
        }
    }
}

async fn refuse(mut stream: TcpStream, code: ErrorCode, text: &str) {
    write_error(&mut stream, code, text).await;
}

/// How many bytes one socket read may add to a session's input buffer.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes read from a session and not yet decoded. Frames are decoded in place from `start`;
/// the consumed prefix is dropped once per socket read, not once per frame.
struct InputBuffer {
    bytes: Vec<u8>,
    start: usize,
}

impl InputBuffer {
    fn new() -> InputBuffer {
        InputBuffer {
            bytes: Vec::with_capacity(READ_CHUNK_BYTES),
            start: 0,
        }
    }

    /// The next whole frame already buffered, if any.
    fn decode(
        &mut self,
        frame_size_max_bytes: usize,
    ) -> Result<Option<Frame>, (ErrorCode, String)> {
        match decode_frame(&self.bytes[self.start..], frame_size_max_bytes) {
            Ok(Decoded::Frame(frame, length)) => {
                self.start += length;
                if self.start == self.bytes.len() {
                    self.bytes.clear();
                    self.start = 0;
                }
                Ok(Some(frame))
            }
            Ok(Decoded::Incomplete) => Ok(None),
            Err(crate::protocol::FrameError::TooLarge { length, max }) => Err((
                ErrorCode::FrameTooLarge,
                format!("frame of {length} bytes; the maximum is {max}"),
            )),
            Err(error) => Err((ErrorCode::MalformedFrame, error.to_string())),
        }
    }

    /// Reads once from the socket; false at the end of the stream or on an error.
    async fn fill(&mut self, reader: &mut OwnedReadHalf) -> bool {
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.reserve(READ_CHUNK_BYTES);
        matches!(reader.read_buf(&mut self.bytes).await, Ok(read) if read > 0)
    }
}

/// Reads until one whole frame is buffered; Ok(None) on a clean end of stream.
async fn read_frame(
    reader: &mut OwnedReadHalf,
    buffer: &mut InputBuffer,
    frame_size_max_bytes: usize,
) -> Result<Option<Frame>, (ErrorCode, String)> {
    loop {
        if let Some(frame) = buffer.decode(frame_size_max_bytes)? {
            return Ok(Some(frame));
        }
        if !buffer.fill(reader).await {
            return Ok(None);
        }
    }
}

/// The connection, still on the runtime, and a second (non-blocking) handle on it for the
/// threads that write to it directly: this session's acks and the Responder's events.
fn with_direct_handle(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let stream = stream.into_std()?;
    let direct = stream.try_clone()?;
    Ok((TcpStream::from_std(stream)?, direct))
}

async fn run_session(
    stream: TcpStream,
    peer: SocketAddr,
    context: &Context,
    mut submitter: Submitter,
) {
    let config = &context.config;
    let refused = |reason: &str| {
        context
            .metrics
            .logins_refused
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, reason, "login refused");
    };
    let Ok((stream, socket)) = with_direct_handle(stream) else {
        return;
    };
    let (mut reader, mut writer) = stream.into_split();
    let mut buffer = InputBuffer::new();
    let login = tokio::time::timeout(
        config.session_timeout,
        read_frame(&mut reader, &mut buffer, config.frame_size_max_bytes),
    )
    .await;
    let (account, flags, credential) = match login {
        Ok(Ok(Some(Frame::Login {
            version,
            flags,
            account,
            token,
        }))) => {
            if version != PROTOCOL_VERSION {
                refused(&format!("protocol version {version}"));
                return write_error(&mut writer, ErrorCode::UnsupportedVersion, &format!("protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}")).await;
            }
            match context.credentials.get(&account) {
                Some(credential) if credential.verify(&token) => {
                    (account, flags, credential.clone())
                }
                _ => {
                    refused(&format!(
                        "unknown account or wrong token (account {account})"
                    ));
                    return write_error(
                        &mut writer,
                        ErrorCode::LoginFailed,
                        "unknown account or wrong token",
                    )
                    .await;
                }
            }
        }
        Ok(Ok(Some(_))) => {
            refused("the first frame was not a login");
            return write_error(
                &mut writer,
                ErrorCode::NotLoggedIn,
                "the first frame must be a login",
            )
            .await;
        }
        Ok(Ok(None)) => return,
        Ok(Err((code, text))) => {
            refused(&text);
            return write_error(&mut writer, code, &text).await;
        }
        Err(_) => {
            refused("no login before the session timeout");
            return write_error(
                &mut writer,
                ErrorCode::Timeout,
                "no login before the session timeout",
            )
            .await;
        }
    };
    let drop_copy = !credential.drop_copy_accounts.is_empty();
    let session_id = context.next_session_id.fetch_add(1, Ordering::Relaxed);
    context
        .metrics
        .logins_accepted
        .fetch_add(1, Ordering::Relaxed);
    context
        .metrics
        .sessions_active
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(%peer, account, session_id, drop_copy, "session logged in");
    let output = Arc::new(SessionOutput::new(socket, config.session_queue_depth_max));
    let _ = output.queue(&Frame::LoginAccepted {
        account,
        session_id,
        heartbeat_interval_ms: config.heartbeat_interval.as_millis() as u32,
    });
    output.flush();
    let _ = context.registrations.send(Registration::Add {
        session_id,
        account: (!drop_copy).then_some(account),
        drop_copy_accounts: credential.drop_copy_accounts.clone(),
        output: Arc::clone(&output),
    });
    let writer_task = tokio::spawn(write_loop(
        writer,
        Arc::clone(&output),
        config.heartbeat_interval,
    ));

    let (end, outcome) = read_loop(
        &mut reader,
        &mut buffer,
        context,
        &mut submitter,
        &output,
        session_id,
        account,
        drop_copy,
    )
    .await;
    // The Responder may have cut the session off for not reading while the session task was
    // waiting for input: the client's close or silence that followed is not why it ended.
    let end = if output.has_ended() && output.closing().1 {
        SessionEnd::SlowConsumer
    } else {
        end
    };
    let _ = context
        .registrations
        .send(Registration::Remove { session_id });
    context
        .metrics
        .sessions_active
        .fetch_sub(1, Ordering::Relaxed);
    context.metrics.session_ended(end);
    match &outcome {
        Some((_, text)) => {
            tracing::info!(%peer, account, session_id, reason = end.name(), detail = %text, "session ended")
        }
        None => tracing::info!(%peer, account, session_id, reason = end.name(), "session ended"),
    }
    output.close_with(outcome.map(|(code, text)| Frame::Error {
        code: code as u16,
        text,
    }));
    if flags & LOGIN_FLAG_CANCEL_ON_DISCONNECT != 0 && !drop_copy {
        let mut command = Command::empty(CommandType::MassCancel);
        command.account = account;
        command.timestamp_ns = now_ns();
        for _ in 0..1_000 {
            if submitter.try_submit_from(0, &command).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    drop(submitter);
    let _ = writer_task.await;
}

/// Sends an error frame (for at most a second) and closes the writing side.
async fn write_error<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    code: ErrorCode,
    text: &str,
) {
    let mut bytes = Vec::new();
    encode_frame(
        &Frame::Error {
            code: code as u16,
            text: text.into(),
        },
        &mut bytes,
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.write_all(&bytes)).await;
    let _ = writer.shutdown().await;
}

/// Handles frames until the session ends; returns the error to send, if any.
#[allow(clippy::too_many_arguments)]
async fn read_loop(
    reader: &mut OwnedReadHalf,
    buffer: &mut InputBuffer,
    context: &Context,
    submitter: &mut Submitter,
    output: &SessionOutput,
    session_id: u32,
    account: u32,
    drop_copy: bool,
) -> (SessionEnd, Option<(ErrorCode, String)>) {
    let config = &context.config;
    let rate = f64::from(config.session_commands_per_second_max);
    let mut tokens = rate;
    let mut refilled_at = Instant::now();
    let mut stop = context.stop.clone();
    let mut refused_since_flush = false;
    loop {
        // Frames already buffered are handled without touching the timer or the socket: one
        // read of a busy session brings hundreds of them.
        let frame = match buffer.decode(config.frame_size_max_bytes) {
            Err(problem) => return (SessionEnd::ProtocolError, Some(problem)),
            Ok(Some(frame)) => Ok(Ok(Some(frame))),
            Ok(None) => {
                // Everything read so far is handled. Acks and events leave in the Responder's
                // writes, once each command is durable; refusals leave now.
                if refused_since_flush {
                    output.flush();
                    refused_since_flush = false;
                }
                tokio::select! {
                _ = stop.changed() => return (SessionEnd::ShuttingDown, Some((ErrorCode::ShuttingDown, "the server is shutting down".into()))),
                read = tokio::time::timeout(config.session_timeout, read_frame(reader, buffer, config.frame_size_max_bytes)) => read,
                }
            }
        };
        let frame = match frame {
            Err(_) => {
                return (
                    SessionEnd::Timeout,
                    Some((
                        ErrorCode::Timeout,
                        "nothing received within the session timeout".into(),
                    )),
                )
            }
            Ok(Err(problem)) => return (SessionEnd::ProtocolError, Some(problem)),
            Ok(Ok(None)) => return (SessionEnd::Closed, None),
            Ok(Ok(Some(frame))) => frame,
        };
        match frame {
            Frame::Heartbeat => {}
            Frame::Logout => return (SessionEnd::Logout, None),
            Frame::Command(mut command) => {
                if drop_copy {
                    return (
                        SessionEnd::ProtocolError,
                        Some((
                            ErrorCode::ReadOnlySession,
                            "a drop-copy session cannot send commands".into(),
                        )),
                    );
                }
                // The Responder closes a session whose queue filled (it does not read its
                // replies); the session takes no more commands once it is closing. Accepted
                // commands queue nothing here (their ack comes from the Responder), so this is
                // where the session task learns it (a flag, not the output's lock, per command).
                if output.has_ended() {
                    let (_, slow) = output.closing();
                    return if slow {
                        (
                            SessionEnd::SlowConsumer,
                            Some((
                                ErrorCode::SlowConsumer,
                                "the session's outbound queue is full".into(),
                            )),
                        )
                    } else {
                        // Its socket failed under a write: the client is gone.
                        (
                            SessionEnd::Closed,
                            Some((ErrorCode::ShuttingDown, "the session is closing".into())),
                        )
                    };
                }
                let now = Instant::now();
                tokens = (tokens + now.duration_since(refilled_at).as_secs_f64() * rate).min(rate);
                refilled_at = now;
                let client_order_id = command.client_order_id;
                // An accepted command gets no reply here: the Responder acknowledges it once
                // it is durable, just before its first event.
                let refusal = if tokens < 1.0 {
                    context.metrics.throttled.fetch_add(1, Ordering::Relaxed);
                    Frame::Throttled { client_order_id }
                } else {
                    tokens -= 1.0;
                    // A session acts for its own account only, and the gateway stamps ingress.
                    command.account = account;
                    command.timestamp_ns = now_ns();
                    match command.command_type {
                        CommandType::Snapshot => {
                            return (
                                SessionEnd::ProtocolError,
                                Some((
                                    ErrorCode::MalformedFrame,
                                    "snapshot is an admin command".into(),
                                )),
                            )
                        }
                        CommandType::Term => {
                            return (
                                SessionEnd::ProtocolError,
                                Some((
                                    ErrorCode::MalformedFrame,
                                    "term records are written by the cluster's leader".into(),
                                )),
                            )
                        }
                        CommandType::Time => {
                            return (
                                SessionEnd::ProtocolError,
                                Some((
                                    ErrorCode::MalformedFrame,
                                    "time records are written by the engine's clock".into(),
                                )),
                            )
                        }
                        _ => {}
                    }
                    match submitter.try_submit_from(session_id, &command) {
                        Ok(_) => {
                            context.metrics.commands.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(_) => {
                            context.metrics.busy.fetch_add(1, Ordering::Relaxed);
                            Frame::Busy { client_order_id }
                        }
                    }
                };
                refused_since_flush = true;
                if output.queue(&refusal).is_err() {
                    return (
                        SessionEnd::SlowConsumer,
                        Some((
                            ErrorCode::SlowConsumer,
                            "the session's outbound queue is full".into(),
                        )),
                    );
                }
            }
            Frame::Login { .. } => {
                return (
                    SessionEnd::ProtocolError,
                    Some((ErrorCode::NotLoggedIn, "already logged in".into())),
                )
            }
            _ => {
                return (
                    SessionEnd::ProtocolError,
                    Some((
                        ErrorCode::MalformedFrame,
                        "a server-to-client frame was sent to the server".into(),
                    )),
                )
            }
        }
    }
}

/// How long a closing session's last frames may take to reach a client that reads; a slow
/// consumer gets less.
const CLOSE_FLUSH_FOR: Duration = Duration::from_secs(1);
const CLOSE_FLUSH_SLOW_FOR: Duration = Duration::from_millis(100);

/// Writes what a session's output could not write at once (waiting for the socket to take
/// it), sends heartbeats while the session is otherwise silent, and ends the connection once
/// the session closes and its last frames are out.
async fn write_loop(
    writer: OwnedWriteHalf,
    output: Arc<SessionOutput>,
    heartbeat_interval: Duration,
) {
    let socket: &TcpStream = writer.as_ref();
    let mut next_heartbeat = Instant::now() + heartbeat_interval;
    loop {
        let (closing, slow) = output.closing();
        if closing {
            let wait = if slow {
                CLOSE_FLUSH_SLOW_FOR
            } else {
                CLOSE_FLUSH_FOR
            };
            let _ = tokio::time::timeout(wait, write_queued(socket, &output)).await;
            break;
        }
        let wake_at = next_heartbeat;
        match output.duty() {
            Duty::Idle => {}
            Duty::Write => {
                // While the socket takes nothing, still notice a session that is closing (its
                // queue filled): it gets a bounded last flush, never an endless wait.
                tokio::select! {
                    written = write_queued(socket, &output) => {
                        if !written {
                            break;
                        }
                    }
                    () = output.woken() => continue,
                }
            }
        }
        tokio::select! {
            () = output.woken() => {}
            () = tokio::time::sleep_until(wake_at.into()) => {
                if Instant::now() >= next_heartbeat {
                    match output.heartbeat_due(heartbeat_interval) {
                        Some(due) => next_heartbeat = due,
                        None => next_heartbeat = Instant::now() + heartbeat_interval,
                    }
                }
            }
        }
    }
    output.shutdown();
}

/// Writes the session's queue, waiting for the socket as long as it takes; false if the
/// socket failed.
async fn write_queued(socket: &TcpStream, output: &SessionOutput) -> bool {
    loop {
        let written = socket.try_io(Interest::WRITABLE, || match output.write_now() {
            Flushed::Blocked => Err(std::io::ErrorKind::WouldBlock.into()),
            flushed => Ok(flushed),
        });
        match written {
            Ok(Flushed::All) => return true,
            Ok(_) => return false,
            Err(_) => {
                if socket.writable().await.is_err() {
                    return false;
                }
            }
        }
    }
}
