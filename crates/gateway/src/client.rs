//! The client library: a blocking order-entry session over TCP, used by tests, tools and load
//! generators. See `docs/order-entry-protocol.md` for an example.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use ringmatch_proto::{Command, CommandType, OrderKind, SelfTradePrevention, Side, TimeInForce};

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
                client.heartbeat_interval = Duration::from_millis(u64::from(heartbeat_interval_ms));
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

    /// The heartbeat interval the server gave at login: send something at least this often.
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
        Ok(())
    }

    /// Sends one command (the server sets its account and timestamp).
    pub fn send(&mut self, command: &Command) -> Result<(), ClientError> {
        self.send_frame(&Frame::Command(*command))
    }

    /// Places a GTC limit order.
    pub fn place_limit(
        &mut self,
        instrument: u32,
        side: Side,
        price: i64,
        qty: u64,
        client_order_id: u64,
    ) -> Result<(), ClientError> {
        let mut command = Command::limit(self.account, instrument, side, price, qty);
        command.client_order_id = client_order_id;
        self.send(&command)
    }

    /// Places any order.
    #[allow(clippy::too_many_arguments)]
    pub fn place(
        &mut self,
        instrument: u32,
        side: Side,
        kind: OrderKind,
        tif: TimeInForce,
        price: i64,
        qty: u64,
        client_order_id: u64,
        stp: SelfTradePrevention,
    ) -> Result<(), ClientError> {
        let mut command = Command::limit(self.account, instrument, side, price, qty);
        command.kind = kind;
        command.tif = tif;
        command.client_order_id = client_order_id;
        command.stp = stp;
        self.send(&command)
    }

    /// Cancels by engine order id.
    pub fn cancel(&mut self, order_id: u64) -> Result<(), ClientError> {
        let mut command = Command::empty(CommandType::Cancel);
        command.account = self.account;
        command.order_id = order_id;
        self.send(&command)
    }

    /// Replaces price and/or total quantity.
    pub fn replace(
        &mut self,
        order_id: u64,
        price: Option<i64>,
        qty: Option<u64>,
    ) -> Result<(), ClientError> {
        let mut command = Command::empty(CommandType::Replace);
        command.account = self.account;
        command.order_id = order_id;
        command.has_price = price.is_some();
        command.price = price.unwrap_or(0);
        command.has_qty = qty.is_some();
        command.qty = qty.unwrap_or(0);
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
    /// like any frame. An error frame is returned (the connection closes after it).
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Frame>, ClientError> {
        // Taken only when the buffer runs dry: a busy session decodes many frames per read.
        let mut deadline = None;
        loop {
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
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + timeout);
            if now >= deadline {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(deadline - now))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(error) => return Err(error.into()),
            }
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

/// The client's socket, for tests that need to send raw bytes on a logged-in session.
pub fn raw_socket(client: &Client) -> &TcpStream {
    &client.stream
}
