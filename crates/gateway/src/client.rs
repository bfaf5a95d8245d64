//! The client library: an order-entry session over TCP. Orders are built by name
//! ([`Order`], [`Replace`]); heartbeats go out by themselves whenever the session sends or
//! waits ([`Client::recv`]), and [`Client::keep_alive`] sends one when due for a caller busy
//! elsewhere; [`Client::recv`] waits for a frame, [`Client::try_recv`] never waits. See
//! `docs/order-entry-protocol.md` and `examples/place_order.rs`.
//!
//! ```no_run
//! use std::time::Duration;
//! use ringmatch_gateway::{Client, Frame, LoginOptions, Order};
//!
//! let mut client = Client::connect("127.0.0.1:8711", 1, b"demo-token-1", LoginOptions::default())?;
//! client.place(&Order::buy(1).limit(100).qty(5).client_order_id(1))?;
//! let frames = client.recv_until(Duration::from_secs(5), |frame| matches!(frame, Frame::Ack { .. }))?;
//! # let _ = frames;
//! # Ok::<(), ringmatch_gateway::ClientError>(())
//! ```

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use ringmatch_proto::{Command, CommandType};

use crate::order::{Order, Replace};

use crate::protocol::{
    decode_frame, encode_frame, Decoded, Frame, FrameError, LOGIN_FLAG_CANCEL_ON_DISCONNECT,
    PROTOCOL_VERSION,
};

/// Client-side failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent a frame this client cannot read.
    #[error("bad frame from the server: {0}")]
    Frame(#[from] FrameError),
    /// The server refused the login or ended the session with an error.
    #[error("server error {code}: {text}")]
    Server {
        /// Error code.
        code: u16,
        /// Details.
        text: String,
    },
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
    /// The caller asked for something the client cannot do.
    #[error("{0}")]
    Usage(String),
}

/// Login options.
#[derive(Debug, Clone, Default)]
pub struct LoginOptions {
    /// Cancel this account's orders when the session ends.
    pub cancel_on_disconnect: bool,
}

/// One logged-in session.
pub struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already decoded; dropped once per socket read, not once per frame.
    buffer_start: usize,
    out: Vec<u8>,
    account: u32,
    session_id: u32,
    heartbeat_interval: Duration,
    /// When this session last sent anything (a heartbeat is due one interval later).
    last_sent: Instant,
}

const FRAME_SIZE_MAX_BYTES: usize = 1 << 16;

impl Client {
    /// Connects and logs in; fails with [`ClientError::Server`] if the login is refused.
    pub fn connect(
        address: impl ToSocketAddrs,
        account: u32,
        token: &[u8],
        options: LoginOptions,
    ) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        let mut client = Client {
            stream,
            buffer: Vec::with_capacity(64 * 1024),
            buffer_start: 0,
            out: Vec::with_capacity(4096),
            account,
            session_id: 0,
            heartbeat_interval: Duration::from_secs(1),
            last_sent: Instant::now(),
        };
        client.send_frame(&Frame::Login {
            version: PROTOCOL_VERSION,
            flags: if options.cancel_on_disconnect {
                LOGIN_FLAG_CANCEL_ON_DISCONNECT
            } else {
                0
            },
            account,
            token: token.to_vec(),
        })?;
        match client.recv(Duration::from_secs(10))? {
            Some(Frame::LoginAccepted {
                session_id,
                heartbeat_interval_ms,
                ..
            }) => {
                client.session_id = session_id;
                // Never more often than every 10 ms, whatever the server says.
                client.heartbeat_interval =
                    Duration::from_millis(u64::from(heartbeat_interval_ms).max(10));
                Ok(client)
            }
            Some(Frame::Error { code, text }) => Err(ClientError::Server { code, text }),
            Some(_) => Err(ClientError::Closed),
            None => Err(ClientError::Timeout),
        }
    }

    /// The session's account.
    pub fn account(&self) -> u32 {
        self.account
    }

    /// The server's id for this session.
    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    /// The heartbeat interval the server gave at login: the session sends something at least
    /// this often while the caller sends or waits in [`Client::recv`].
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// The server's address.
    pub fn peer_address(&self) -> Result<String, ClientError> {
        Ok(self.stream.peer_addr()?.to_string())
    }

    /// Sends one frame.
    pub fn send_frame(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.out.clear();
        encode_frame(frame, &mut self.out);
        self.stream.write_all(&self.out)?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Sends a heartbeat if one is due (nothing sent for a heartbeat interval): for a caller
    /// that neither sends nor waits in [`Client::recv`] for a while.
    pub fn keep_alive(&mut self) -> Result<(), ClientError> {
        if self.last_sent.elapsed() >= self.heartbeat_interval {
            self.heartbeat()?;
        }
        Ok(())
    }

    /// Sends one command (the server sets its account and timestamp).
    pub fn send(&mut self, command: &Command) -> Result<(), ClientError> {
        self.send_frame(&Frame::Command(*command))
    }

    /// Sends several commands in one write (the server reads them as one burst).
    pub fn send_batch(&mut self, commands: &[Command]) -> Result<(), ClientError> {
        self.out.clear();
        for command in commands {
            encode_frame(&Frame::Command(*command), &mut self.out);
        }
        self.stream.write_all(&self.out)?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Places an order.
    pub fn place(&mut self, order: &Order) -> Result<(), ClientError> {
        let command = order.to_command(self.account)?;
        self.send(&command)
    }

    /// Cancels by engine order id.
    pub fn cancel(&mut self, order_id: u64) -> Result<(), ClientError> {
        let mut command = Command::empty(CommandType::Cancel);
        command.account = self.account;
        command.order_id = order_id;
        self.send(&command)
    }

    /// Replaces a resting order's price and/or total quantity.
    pub fn replace(&mut self, replace: &Replace) -> Result<(), ClientError> {
        let command = replace.to_command(self.account)?;
        self.send(&command)
    }

    /// Cancels every order of the account (on `instrument`, or all when 0).
    pub fn mass_cancel(&mut self, instrument: u32) -> Result<(), ClientError> {
        let mut command = Command::empty(CommandType::MassCancel);
        command.account = self.account;
        command.instrument = instrument;
        self.send(&command)
    }

    /// Asks for the account's resting orders (on `instrument`, or all when 0): the answer is
    /// one `order_status` event per order, then an `open_orders_end` event with the count.
    pub fn open_orders(&mut self, instrument: u32) -> Result<(), ClientError> {
        let mut command = Command::empty(CommandType::OpenOrders);
        command.account = self.account;
        command.instrument = instrument;
        self.send(&command)
    }

    /// Sends a heartbeat.
    pub fn heartbeat(&mut self) -> Result<(), ClientError> {
        self.send_frame(&Frame::Heartbeat)
    }

    /// The next frame, waiting at most `timeout`; Ok(None) on timeout. Heartbeats are returned
    /// like any frame, and sent when due while waiting. An error frame is returned (the
    /// connection closes after it).
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Frame>, ClientError> {
        // Taken only when the buffer runs dry: a busy session decodes many frames per read.
        let mut deadline = None;
        loop {
            if let Some(frame) = self.decode_buffered()? {
                return Ok(Some(frame));
            }
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + timeout);
            if now >= deadline {
                return Ok(None);
            }
            let heartbeat_due = self.last_sent + self.heartbeat_interval;
            if now >= heartbeat_due {
                // A heartbeat that cannot be written (the server has closed the session) is
                // not the error to report: reading on shows why the session ended.
                if self.heartbeat().is_err() {
                    self.last_sent = now;
                }
                continue;
            }
            self.stream
                .set_read_timeout(Some(deadline.min(heartbeat_due) - now))?;
            match self.read_some() {
                Ok(()) => {}
                Err(ClientError::Io(error))
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// The next frame if one has arrived, without waiting: Ok(None) when there is none yet.
    pub fn try_recv(&mut self) -> Result<Option<Frame>, ClientError> {
        if let Some(frame) = self.decode_buffered()? {
            return Ok(Some(frame));
        }
        self.stream.set_nonblocking(true)?;
        let read = self.read_some();
        self.stream.set_nonblocking(false)?;
        match read {
            Ok(()) => self.decode_buffered(),
            Err(ClientError::Io(error)) if error.kind() == std::io::ErrorKind::WouldBlock => {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// A whole frame from the bytes already read, if there is one.
    fn decode_buffered(&mut self) -> Result<Option<Frame>, ClientError> {
        if let Decoded::Frame(frame, length) =
            decode_frame(&self.buffer[self.buffer_start..], FRAME_SIZE_MAX_BYTES)?
        {
            self.buffer_start += length;
            if self.buffer_start == self.buffer.len() {
                self.buffer.clear();
                self.buffer_start = 0;
            }
            return Ok(Some(frame));
        }
        if self.buffer_start > 0 {
            self.buffer.drain(..self.buffer_start);
            self.buffer_start = 0;
        }
        Ok(None)
    }

    /// One read of the socket into the buffer.
    fn read_some(&mut self) -> Result<(), ClientError> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(ClientError::Closed),
            Ok(read) => {
                self.buffer.extend_from_slice(&chunk[..read]);
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Frames until `done` returns true for one (inclusive), skipping heartbeats, or until
    /// `timeout` passes.
    pub fn recv_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Frame) -> bool,
    ) -> Result<Vec<Frame>, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        while let Some(frame) = self.recv(deadline.saturating_duration_since(Instant::now()))? {
            if frame == Frame::Heartbeat {
                continue;
            }
            let finished = done(&frame);
            frames.push(frame);
            if finished {
                return Ok(frames);
            }
        }
        Err(ClientError::Timeout)
    }

    /// Logs out and closes.
    pub fn logout(mut self) -> Result<(), ClientError> {
        self.send_frame(&Frame::Logout)
    }
}

impl Client {
    /// Ends the client and hands over its logged-in connection, with the bytes already read
    /// from it and not yet decoded: for a driver that speaks the frames itself (a load
    /// generator, a test of malformed input). Heartbeats are then the caller's.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        let pending = self.buffer[self.buffer_start..].to_vec();
        (self.stream, pending)
    }
}
