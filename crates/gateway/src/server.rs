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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::auth::Credential;
use crate::protocol::{
    decode_frame, encode_frame, Decoded, ErrorCode, Frame, LOGIN_FLAG_CANCEL_ON_DISCONNECT,
    PROTOCOL_VERSION,
};
use crate::responder::{Registration, SessionShared};

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
    /// Most frames waiting to be written to one session; a session whose queue fills is
    /// disconnected.
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
    /// Responder; `submitter` is cloned for each session.
    pub fn start(
        config: GatewayConfig,
        submitter: Submitter,
        registrations: Sender<Registration>,
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
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let count = context.sessions_count.fetch_add(1, Ordering::AcqRel) + 1;
                let context = Arc::clone(&context);
                if count > context.config.sessions_max {
                    tokio::spawn(async move {
                        refuse(stream, ErrorCode::TooManySessions, "the gateway has its maximum number of sessions").await;
                        context.sessions_count.fetch_sub(1, Ordering::AcqRel);
                    });
                    continue;
                }
                let submitter = submitter.clone();
                tokio::spawn(async move {
                    run_session(stream, &context, submitter).await;
                    context.sessions_count.fetch_sub(1, Ordering::AcqRel);
                });
            }
        }
    }
}

async fn refuse(mut stream: TcpStream, code: ErrorCode, text: &str) {
    write_error(&mut stream, code, text).await;
}

/// Reads until one whole frame is buffered; Ok(None) on a clean end of stream.
async fn read_frame(
    reader: &mut OwnedReadHalf,
    buffer: &mut Vec<u8>,
    frame_size_max_bytes: usize,
) -> Result<Option<Frame>, (ErrorCode, String)> {
    loop {
        match decode_frame(buffer, frame_size_max_bytes) {
            Ok(Decoded::Frame(frame, length)) => {
                buffer.drain(..length);
                return Ok(Some(frame));
            }
            Ok(Decoded::Incomplete) => {}
            Err(crate::protocol::FrameError::TooLarge { length, max }) => {
                return Err((
                    ErrorCode::FrameTooLarge,
                    format!("frame of {length} bytes; the maximum is {max}"),
                ))
            }
            Err(error) => return Err((ErrorCode::MalformedFrame, error.to_string())),
        }
        let mut chunk = [0u8; 4096];
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}

async fn run_session(stream: TcpStream, context: &Context, mut submitter: Submitter) {
    let config = &context.config;
    let (mut reader, mut writer) = stream.into_split();
    let mut buffer = Vec::with_capacity(8192);
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
                return write_error(&mut writer, ErrorCode::UnsupportedVersion, &format!("protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}")).await;
            }
            match context.credentials.get(&account) {
                Some(credential) if credential.verify(&token) => {
                    (account, flags, credential.clone())
                }
                _ => {
                    return write_error(
                        &mut writer,
                        ErrorCode::LoginFailed,
                        "unknown account or wrong token",
                    )
                    .await
                }
            }
        }
        Ok(Ok(Some(_))) => {
            return write_error(
                &mut writer,
                ErrorCode::NotLoggedIn,
                "the first frame must be a login",
            )
            .await
        }
        Ok(Ok(None)) => return,
        Ok(Err((code, text))) => return write_error(&mut writer, code, &text).await,
        Err(_) => {
            return write_error(
                &mut writer,
                ErrorCode::Timeout,
                "no login before the session timeout",
            )
            .await
        }
    };
    let drop_copy = !credential.drop_copy_accounts.is_empty();
    let session_id = context.next_session_id.fetch_add(1, Ordering::Relaxed);
    let (sender, receiver) = mpsc::channel::<Frame>(config.session_queue_depth_max);
    let shared = Arc::new(SessionShared::default());
    let _ = context.registrations.send(Registration::Add {
        session_id,
        account: (!drop_copy).then_some(account),
        drop_copy_accounts: credential.drop_copy_accounts.clone(),
        sender: sender.clone(),
        shared: Arc::clone(&shared),
    });
    let _ = sender.try_send(Frame::LoginAccepted {
        account,
        session_id,
        heartbeat_interval_ms: config.heartbeat_interval.as_millis() as u32,
    });
    let writer_task = tokio::spawn(write_loop(
        writer,
        receiver,
        Arc::clone(&shared),
        config.heartbeat_interval,
        context.stop.clone(),
    ));

    let outcome = read_loop(
        &mut reader,
        &mut buffer,
        context,
        &mut submitter,
        &sender,
        session_id,
        account,
        drop_copy,
    )
    .await;
    let _ = context
        .registrations
        .send(Registration::Remove { session_id });
    if let Some((code, text)) = outcome {
        let _ = sender.try_send(Frame::Error {
            code: code as u16,
            text,
        });
    }
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
    drop(sender);
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
    buffer: &mut Vec<u8>,
    context: &Context,
    submitter: &mut Submitter,
    sender: &mpsc::Sender<Frame>,
    session_id: u32,
    account: u32,
    drop_copy: bool,
) -> Option<(ErrorCode, String)> {
    let config = &context.config;
    let rate = f64::from(config.session_commands_per_second_max);
    let mut tokens = rate;
    let mut refilled_at = Instant::now();
    let mut stop = context.stop.clone();
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => return Some((ErrorCode::ShuttingDown, "the server is shutting down".into())),
            read = tokio::time::timeout(config.session_timeout, read_frame(reader, buffer, config.frame_size_max_bytes)) => read,
        };
        let frame = match frame {
            Err(_) => {
                return Some((
                    ErrorCode::Timeout,
                    "nothing received within the session timeout".into(),
                ))
            }
            Ok(Err(problem)) => return Some(problem),
            Ok(Ok(None)) => return None,
            Ok(Ok(Some(frame))) => frame,
        };
        match frame {
            Frame::Heartbeat => {}
            Frame::Logout => return None,
            Frame::Command(mut command) => {
                if drop_copy {
                    return Some((
                        ErrorCode::ReadOnlySession,
                        "a drop-copy session cannot send commands".into(),
                    ));
                }
                let now = Instant::now();
                tokens = (tokens + now.duration_since(refilled_at).as_secs_f64() * rate).min(rate);
                refilled_at = now;
                let client_order_id = command.client_order_id;
                let reply = if tokens < 1.0 {
                    Frame::Throttled { client_order_id }
                } else {
                    tokens -= 1.0;
                    // A session acts for its own account only, and the gateway stamps ingress.
                    command.account = account;
                    command.timestamp_ns = now_ns();
                    if command.command_type == CommandType::Snapshot {
                        return Some((
                            ErrorCode::MalformedFrame,
                            "snapshot is an admin command".into(),
                        ));
                    }
                    match submitter.try_submit_from(session_id, &command) {
                        Ok(seq) => Frame::Ack {
                            client_order_id,
                            seq,
                        },
                        Err(_) => Frame::Busy { client_order_id },
                    }
                };
                if sender.try_send(reply).is_err() {
                    return Some((
                        ErrorCode::SlowConsumer,
                        "the session's outbound queue is full".into(),
                    ));
                }
            }
            Frame::Login { .. } => {
                return Some((ErrorCode::NotLoggedIn, "already logged in".into()))
            }
            _ => {
                return Some((
                    ErrorCode::MalformedFrame,
                    "a server-to-client frame was sent to the server".into(),
                ))
            }
        }
    }
}

async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut receiver: mpsc::Receiver<Frame>,
    shared: Arc<SessionShared>,
    heartbeat_interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut bytes = Vec::with_capacity(64 * 1024);
    loop {
        bytes.clear();
        tokio::select! {
            frame = receiver.recv() => {
                let Some(frame) = frame else { break };
                let last = matches!(frame, Frame::Error { .. });
                encode_frame(&frame, &mut bytes);
                // Batch whatever else is already queued into the same write.
                while bytes.len() < 60 * 1024 {
                    match receiver.try_recv() {
                        Ok(next) => encode_frame(&next, &mut bytes),
                        Err(_) => break,
                    }
                }
                if writer.write_all(&bytes).await.is_err() || last {
                    break;
                }
            }
            _ = shared.close.notified() => {
                if shared.slow.load(Ordering::Acquire) {
                    encode_frame(&Frame::Error { code: ErrorCode::SlowConsumer as u16, text: "responses were not read; the queue filled".into() }, &mut bytes);
                    let _ = tokio::time::timeout(Duration::from_millis(100), writer.write_all(&bytes)).await;
                }
                break;
            }
            _ = tokio::time::sleep(heartbeat_interval) => {
                encode_frame(&Frame::Heartbeat, &mut bytes);
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            _ = stop.changed() => {}
        }
    }
    let _ = writer.shutdown().await;
}
