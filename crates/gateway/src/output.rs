//! A session's outbound side: the bytes waiting for its socket, written by whichever thread
//! has something to send. The Responder stage writes acks and events straight to the socket
//! (non-blocking, under the session's lock), so a reply costs no hand-over to the gateway's
//! runtime thread; the session's task writes its refusals (`throttled`, `busy`) and errors.
//! Only what the socket does not take at once is left for the session's writer task, which
//! waits for the socket to drain.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use ringmatch_proto::EVENT_SIZE_BYTES;
use tokio::sync::Notify;

use crate::protocol::{encode_frame, ErrorCode, Frame};

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The session does not read: its queue is full. It is being disconnected.
    Full,
    /// The session is closing or closed.
    Closed,
}

/// The bytes of one frame carrying an event: the unit of the queue limit.
pub const EVENT_FRAME_SIZE_BYTES: usize = 4 + 1 + EVENT_SIZE_BYTES;

/// A session's outbound queue and socket, shared by the session's tasks and the Responder.
#[derive(Debug)]
pub struct SessionOutput {
    socket: TcpStream,
    state: Mutex<OutputState>,
    /// Wakes the session's writer task: bytes are left for it, or the session is closing.
    wake: Notify,
    /// The most bytes that may wait for the socket.
    limit_bytes: usize,
    /// Set once the session is closing or its socket broke (mirrors the state's flags), so
    /// the session task can check it per command without the lock.
    ended: AtomicBool,
}

#[derive(Debug)]
struct OutputState {
    /// Encoded frames; `bytes[written..]` has not reached the socket yet.
    bytes: Vec<u8>,
    written: usize,
    /// No more frames are taken; the writer sends what is left, then ends the session.
    closing: bool,
    /// Closing because the queue filled.
    slow: bool,
    /// Set when the socket failed: nothing more can be written.
    broken: bool,
    /// When bytes last went to the socket (heartbeats are sent when it was long ago).
    last_write: Instant,
}

/// What the session's writer task should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Duty {
    /// Nothing is queued.
    Idle,
    /// Bytes are queued for the writer.
    Write,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is on the socket.
    All,
    /// The socket takes no more now; the rest waits.
    Blocked,
    /// The socket failed.
    Broken,
}

impl SessionOutput {
    /// An output writing to `socket` (a non-blocking handle on the session's connection) that
    /// holds at most `queue_depth_frames` event frames' worth of bytes the socket has not taken.
    pub fn new(socket: TcpStream, queue_depth_frames: usize) -> SessionOutput {
        SessionOutput {
            socket,
            state: Mutex::new(OutputState {
                bytes: Vec::with_capacity(16 * 1024),
                written: 0,
                closing: false,
                slow: false,
                broken: false,
                last_write: Instant::now(),
            }),
            wake: Notify::new(),
            limit_bytes: queue_depth_frames.max(1) * EVENT_FRAME_SIZE_BYTES,
            ended: AtomicBool::new(false),
        }
    }

    /// Queues a frame (it reaches the socket at the next [`flush`](Self::flush)). A session
    /// whose unsent bytes would pass the limit is closed as a slow consumer instead.
    pub fn queue(&self, frame: &Frame) -> Result<(), Refused> {
        let mut state = self.state.lock().expect("session output lock");
        if state.closing || state.broken {
            return Err(Refused::Closed);
        }
        if state.bytes.len() - state.written + EVENT_FRAME_SIZE_BYTES > self.limit_bytes {
            // The last frame goes past the limit: it tells the client why it is cut off.
            state.closing = true;
            state.slow = true;
            self.ended.store(true, Ordering::Release);
            encode_frame(
                &Frame::Error {
                    code: ErrorCode::SlowConsumer as u16,
                    text: "responses were not read; the queue filled".into(),
                },
                &mut state.bytes,
            );
            drop(state);
            self.wake.notify_one();
            return Err(Refused::Full);
        }
        state.compact();
        encode_frame(frame, &mut state.bytes);
        Ok(())
    }

    /// Queues a last frame (an error) even past the limit, and closes the session: nothing
    /// more is taken, and the writer ends the session once the queue is written.
    pub fn close_with(&self, frame: Option<Frame>) {
        let mut state = self.state.lock().expect("session output lock");
        if !state.closing && !state.broken {
            if let Some(frame) = frame {
                encode_frame(&frame, &mut state.bytes);
            }
        }
        state.closing = true;
        self.ended.store(true, Ordering::Release);
        drop(state);
        self.wake.notify_one();
    }

    /// Writes what the socket takes now, without waiting. What is left is the writer task's:
    /// it is woken to wait for the socket.
    pub fn flush(&self) -> Flushed {
        let flushed = self.write_now();
        if flushed != Flushed::All {
            self.wake.notify_one();
        }
        flushed
    }

    /// What the writer task should do now.
    pub(crate) fn duty(&self) -> Duty {
        let state = self.state.lock().expect("session output lock");
        if state.written == state.bytes.len() {
            Duty::Idle
        } else {
            Duty::Write
        }
    }

    /// Writes what the socket takes now; the writer task's flush.
    pub(crate) fn write_now(&self) -> Flushed {
        let mut state = self.state.lock().expect("session output lock");
        if state.broken {
            return Flushed::Broken;
        }
        let mut socket = &self.socket;
        while state.written < state.bytes.len() {
            match socket.write(&state.bytes[state.written..]) {
                Ok(0) => {
                    state.broken = true;
                    self.ended.store(true, Ordering::Release);
                    return Flushed::Broken;
                }
                Ok(count) => {
                    state.written += count;
                    state.last_write = Instant::now();
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    return Flushed::Blocked;
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    state.broken = true;
                    self.ended.store(true, Ordering::Release);
                    return Flushed::Broken;
                }
            }
        }
        state.bytes.clear();
        state.written = 0;
        Flushed::All
    }

    /// Queues a heartbeat if nothing was written for `interval`; returns when to look again.
    pub(crate) fn heartbeat_due(&self, interval: std::time::Duration) -> Option<Instant> {
        let mut state = self.state.lock().expect("session output lock");
        let due = state.last_write + interval;
        if state.closing || state.broken || Instant::now() < due {
            return Some(due);
        }
        state.compact();
        encode_frame(&Frame::Heartbeat, &mut state.bytes);
        state.last_write = Instant::now();
        None
    }

    /// Whether the session is closing or its socket broke, without taking the lock.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// (closing, slow) of the session.
    pub(crate) fn closing(&self) -> (bool, bool) {
        let state = self.state.lock().expect("session output lock");
        (state.closing || state.broken, state.slow)
    }

    /// Waits until another thread wakes the writer.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Shuts the connection down for writing (the end of the session).
    pub(crate) fn shutdown(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Write);
    }
}

impl OutputState {
    /// Drops the bytes already written, so the queue does not grow while the socket keeps up.
    fn compact(&mut self) {
        if self.written > 0 {
            self.bytes.drain(..self.written);
            self.written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Flushed, Refused, SessionOutput, EVENT_FRAME_SIZE_BYTES};
    use crate::protocol::{decode_frame, Decoded, Frame};
    use ringmatch_proto::{CommandType, Event, EventType};
    use std::io::Read;

    fn event(seq: u64) -> Event {
        let mut event = Event::empty(EventType::Accepted, CommandType::Place);
        event.seq = seq;
        event
    }

    fn ack(seq: u64) -> Frame {
        Frame::Ack {
            client_order_id: seq,
            seq,
        }
    }

    fn decoded(mut bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Ok(Decoded::Frame(frame, length)) = decode_frame(bytes, 1 << 16) {
            frames.push(frame);
            bytes = &bytes[length..];
        }
        assert!(bytes.is_empty(), "trailing bytes");
        frames
    }

    /// A connected pair of loopback sockets: (the server side, non-blocking; the client side).
    fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (server, client)
    }

    #[test]
    fn queued_frames_reach_the_socket_in_order_at_the_flush() {
        let (server, mut client) = socket_pair();
        let output = SessionOutput::new(server, 100);
        output.queue(&ack(3)).unwrap();
        output.queue(&Frame::Event(event(3))).unwrap();
        assert_eq!(output.flush(), Flushed::All);
        let mut bytes = vec![0u8; 2 * EVENT_FRAME_SIZE_BYTES + 64];
        let mut read = 0;
        while decoded_prefix(&bytes[..read]) < 2 {
            read += client.read(&mut bytes[read..]).unwrap();
        }
        assert_eq!(
            decoded(&bytes[..read]),
            vec![
                Frame::Ack {
                    client_order_id: 3,
                    seq: 3
                },
                Frame::Event(event(3))
            ]
        );
    }

    fn decoded_prefix(mut bytes: &[u8]) -> usize {
        let mut count = 0;
        while let Ok(Decoded::Frame(_, length)) = decode_frame(bytes, 1 << 16) {
            count += 1;
            bytes = &bytes[length..];
        }
        count
    }

    #[test]
    fn a_session_that_does_not_read_is_refused_once_its_queue_fills_and_never_blocks_the_sender() {
        let (server, _client) = socket_pair();
        let output = SessionOutput::new(server, 64);
        // The client never reads: the kernel's buffers fill, then 64 frames' worth of bytes
        // wait in the queue, then the session is refused, each flush returning at once.
        let mut refused = None;
        for seq in 0..1_000_000u64 {
            match output.queue(&Frame::Event(event(seq))) {
                Ok(()) => {
                    output.flush();
                }
                Err(reason) => {
                    refused = Some(reason);
                    break;
                }
            }
        }
        assert_eq!(refused, Some(Refused::Full));
        assert_eq!(output.closing(), (true, true));
        assert_eq!(output.queue(&Frame::Heartbeat), Err(Refused::Closed));
    }
}
