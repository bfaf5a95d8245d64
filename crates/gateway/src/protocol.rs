//! The order-entry session protocol: length-prefixed frames carrying the wire records plus a
//! few session messages. Layout: `docs/order-entry-protocol.md`.
//!
//! Decoding is incremental and never panics: [`decode_frame`] takes the bytes received so far
//! and says whether a whole frame is there, how long it is, or what is wrong with it.

use ringmatch_proto::le::{u16_at, u32_at, u64_at};
use ringmatch_proto::{Command, DecodeError, Event, COMMAND_SIZE_BYTES, EVENT_SIZE_BYTES};

/// Version of the session protocol, sent in the login frame. Version 2: an `ack` means the
/// command is durable under the journal's policy (version 1 acknowledged on the input ring).
pub const PROTOCOL_VERSION: u8 = 2;
/// Bytes of the length prefix.
pub const LENGTH_PREFIX_SIZE_BYTES: usize = 4;
/// Longest token a login may carry.
pub const TOKEN_SIZE_MAX_BYTES: usize = 64;
/// Longest error text the server sends.
pub const ERROR_TEXT_SIZE_MAX_BYTES: usize = 256;

/// Frame type codes (stable: on the wire).
pub mod frame_type {
    /// Client → server: log in (must be the first frame).
    pub const LOGIN: u8 = 1;
    /// Server → client: login accepted.
    pub const LOGIN_ACCEPTED: u8 = 2;
    /// Server → client: an error; the server closes the connection after it.
    pub const ERROR: u8 = 3;
    /// Client → server: one command record.
    pub const COMMAND: u8 = 4;
    /// Server → client: one event record.
    pub const EVENT: u8 = 5;
    /// Both ways: I am alive.
    pub const HEARTBEAT: u8 = 6;
    /// Server → client: a command was refused by the session's rate limit.
    pub const THROTTLED: u8 = 7;
    /// Server → client: a command was refused because the engine's input ring is full.
    pub const BUSY: u8 = 8;
    /// Client → server: log out (the server closes the connection).
    pub const LOGOUT: u8 = 9;
    /// Server → client: a command is durable with this sequence (see the protocol document).
    pub const ACK: u8 = 10;
}

/// Error codes of the error frame (stable: on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The first frame was not a login, or a second login came.
    NotLoggedIn = 1,
    /// Unknown account or wrong token.
    LoginFailed = 2,
    /// The frame is malformed (type, length, or content).
    MalformedFrame = 3,
    /// The frame is longer than the configured maximum.
    FrameTooLarge = 4,
    /// The server has its maximum number of sessions.
    TooManySessions = 5,
    /// The session sent nothing for longer than the timeout.
    Timeout = 6,
    /// The session did not read its responses and its queue filled.
    SlowConsumer = 7,
    /// The protocol version is not supported.
    UnsupportedVersion = 8,
    /// A drop-copy session sent a command.
    ReadOnlySession = 9,
    /// The server is shutting down.
    ShuttingDown = 10,
    /// This cluster member does not lead; the text names the leader's order-entry address
    /// when one is known ("... order entry at HOST:PORT").
    NotLeader = 11,
}

impl ErrorCode {
    /// The code for a number.
    pub fn from_code(code: u16) -> Option<ErrorCode> {
        use ErrorCode::*;
        Some(match code {
            1 => NotLoggedIn,
            2 => LoginFailed,
            3 => MalformedFrame,
            4 => FrameTooLarge,
            5 => TooManySessions,
            6 => Timeout,
            7 => SlowConsumer,
            8 => UnsupportedVersion,
            9 => ReadOnlySession,
            10 => ShuttingDown,
            11 => NotLeader,
            _ => return None,
        })
    }
}

/// Login flag: cancel this account's orders when the session ends.
pub const LOGIN_FLAG_CANCEL_ON_DISCONNECT: u8 = 1;

/// One frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Log in.
    Login {
        /// Protocol version (must be [`PROTOCOL_VERSION`]).
        version: u8,
        /// Login flags.
        flags: u8,
        /// Account.
        account: u32,
        /// Secret token.
        token: Vec<u8>,
    },
    /// Login accepted.
    LoginAccepted {
        /// The session's account.
        account: u32,
        /// Session id assigned by the server.
        session_id: u32,
        /// How often the server expects a heartbeat, milliseconds.
        heartbeat_interval_ms: u32,
    },
    /// An error; the connection closes.
    Error {
        /// What went wrong.
        code: u16,
        /// Details for people.
        text: String,
    },
    /// A command.
    Command(Command),
    /// An event.
    Event(Event),
    /// Heartbeat.
    Heartbeat,
    /// Refused by the rate limit.
    Throttled {
        /// The refused command's client order id.
        client_order_id: u64,
    },
    /// Refused: the engine's input is full.
    Busy {
        /// The refused command's client order id.
        client_order_id: u64,
    },
    /// Log out.
    Logout,
    /// A command was taken.
    Ack {
        /// Its client order id.
        client_order_id: u64,
        /// Its sequence.
        seq: u64,
    },
}

/// Why received bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is zero.
    #[error("empty frame")]
    Empty,
    /// The length prefix is over the maximum.
    #[error("frame of {length} bytes is over the maximum of {max}")]
    TooLarge {
        /// Length announced.
        length: usize,
        /// Maximum allowed.
        max: usize,
    },
    /// Unknown frame type.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// The body length does not fit the frame type.
    #[error("frame type {frame_type} with a body of {length} bytes")]
    BadLength {
        /// Frame type.
        frame_type: u8,
        /// Body length.
        length: usize,
    },
    /// A record inside the frame is invalid.
    #[error("bad record: {0}")]
    Record(#[from] DecodeError),
    /// A text field is not UTF-8.
    #[error("text is not UTF-8")]
    Text,
    /// Reserved bytes are not zero.
    #[error("reserved bytes are not zero")]
    Reserved,
}

/// The outcome of looking at received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed.
    Incomplete,
    /// A whole frame, taking this many bytes.
    Frame(Frame, usize),
}

/// Decodes the frame at the start of `bytes`, if it is all there. `max_frame_bytes` bounds the
/// length prefix (the bytes after it), checked before waiting for the body.
pub fn decode_frame(bytes: &[u8], max_frame_bytes: usize) -> Result<Decoded, FrameError> {
    if bytes.len() < LENGTH_PREFIX_SIZE_BYTES {
        return Ok(Decoded::Incomplete);
    }
    let length = u32_at(bytes, 0) as usize;
    if length == 0 {
        return Err(FrameError::Empty);
    }
    if length > max_frame_bytes {
        return Err(FrameError::TooLarge {
            length,
            max: max_frame_bytes,
        });
    }
    let total = LENGTH_PREFIX_SIZE_BYTES + length;
    if bytes.len() < total {
        return Ok(Decoded::Incomplete);
    }
    let frame_type = bytes[4];
    let body = &bytes[5..total];
    let bad_length = || FrameError::BadLength {
        frame_type,
        length: body.len(),
    };
    let frame = match frame_type {
        frame_type::LOGIN => {
            if body.len() < 10 {
                return Err(bad_length());
            }
            let token_length = u16_at(body, 8) as usize;
            if token_length > TOKEN_SIZE_MAX_BYTES || body.len() != 10 + token_length {
                return Err(bad_length());
            }
            if body[2] != 0 || body[3] != 0 {
                return Err(FrameError::Reserved);
            }
            Frame::Login {
                version: body[0],
                flags: body[1],
                account: u32_at(body, 4),
                token: body[10..].to_vec(),
            }
        }
        frame_type::LOGIN_ACCEPTED => {
            if body.len() != 12 {
                return Err(bad_length());
            }
            Frame::LoginAccepted {
                account: u32_at(body, 0),
                session_id: u32_at(body, 4),
                heartbeat_interval_ms: u32_at(body, 8),
            }
        }
        frame_type::ERROR => {
            if body.len() < 4
                || body.len() != 4 + u16_at(body, 2) as usize
                || body.len() > 4 + ERROR_TEXT_SIZE_MAX_BYTES
            {
                return Err(bad_length());
            }
            Frame::Error {
                code: u16_at(body, 0),
                text: String::from_utf8(body[4..].to_vec()).map_err(|_| FrameError::Text)?,
            }
        }
        frame_type::COMMAND => {
            // A command record of either version: 128 bytes, or 64 of version 1.
            let size = body
                .first()
                .and_then(|&version| Command::encoded_size(version));
            if body.len() != size.unwrap_or(COMMAND_SIZE_BYTES) {
                return Err(bad_length());
            }
            Frame::Command(Command::decode(body)?)
        }
        frame_type::EVENT => {
            if body.len() != EVENT_SIZE_BYTES {
                return Err(bad_length());
            }
            Frame::Event(Event::decode(body)?)
        }
        frame_type::HEARTBEAT | frame_type::LOGOUT => {
            if !body.is_empty() {
                return Err(bad_length());
            }
            if frame_type == frame_type::HEARTBEAT {
                Frame::Heartbeat
            } else {
                Frame::Logout
            }
        }
        frame_type::THROTTLED | frame_type::BUSY => {
            if body.len() != 8 {
                return Err(bad_length());
            }
            let client_order_id = u64_at(body, 0);
            if frame_type == frame_type::THROTTLED {
                Frame::Throttled { client_order_id }
            } else {
                Frame::Busy { client_order_id }
            }
        }
        frame_type::ACK => {
            if body.len() != 16 {
                return Err(bad_length());
            }
            Frame::Ack {
                client_order_id: u64_at(body, 0),
                seq: u64_at(body, 8),
            }
        }
        other => return Err(FrameError::UnknownType(other)),
    };
    Ok(Decoded::Frame(frame, total))
}

/// Appends the encoded frame to `out`.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    match frame {
        Frame::Login {
            version,
            flags,
            account,
            token,
        } => {
            assert!(token.len() <= TOKEN_SIZE_MAX_BYTES, "token too long");
            out.push(frame_type::LOGIN);
            out.extend_from_slice(&[*version, *flags, 0, 0]);
            out.extend_from_slice(&account.to_le_bytes());
            out.extend_from_slice(&(token.len() as u16).to_le_bytes());
            out.extend_from_slice(token);
        }
        Frame::LoginAccepted {
            account,
            session_id,
            heartbeat_interval_ms,
        } => {
            out.push(frame_type::LOGIN_ACCEPTED);
            out.extend_from_slice(&account.to_le_bytes());
            out.extend_from_slice(&session_id.to_le_bytes());
            out.extend_from_slice(&heartbeat_interval_ms.to_le_bytes());
        }
        Frame::Error { code, text } => {
            let mut end = text.len().min(ERROR_TEXT_SIZE_MAX_BYTES);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let text = &text.as_bytes()[..end];
            out.push(frame_type::ERROR);
            out.extend_from_slice(&code.to_le_bytes());
            out.extend_from_slice(&(text.len() as u16).to_le_bytes());
            out.extend_from_slice(text);
        }
        Frame::Command(command) => {
            out.push(frame_type::COMMAND);
            out.extend_from_slice(&command.to_bytes());
        }
        Frame::Event(event) => {
            out.push(frame_type::EVENT);
            out.extend_from_slice(&event.to_bytes());
        }
        Frame::Heartbeat => out.push(frame_type::HEARTBEAT),
        Frame::Logout => out.push(frame_type::LOGOUT),
        Frame::Throttled { client_order_id } => {
            out.push(frame_type::THROTTLED);
            out.extend_from_slice(&client_order_id.to_le_bytes());
        }
        Frame::Busy { client_order_id } => {
            out.push(frame_type::BUSY);
            out.extend_from_slice(&client_order_id.to_le_bytes());
        }
        Frame::Ack {
            client_order_id,
            seq,
        } => {
            out.push(frame_type::ACK);
            out.extend_from_slice(&client_order_id.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
        }
    }
    let length = (out.len() - start - LENGTH_PREFIX_SIZE_BYTES) as u32;
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmatch_proto::{CommandType, EventType, Side};

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Login {
                version: PROTOCOL_VERSION,
                flags: LOGIN_FLAG_CANCEL_ON_DISCONNECT,
                account: 7,
                token: b"secret-token".to_vec(),
            },
            Frame::LoginAccepted {
                account: 7,
                session_id: 3,
                heartbeat_interval_ms: 1_000,
            },
            Frame::Error {
                code: ErrorCode::LoginFailed as u16,
                text: "unknown account or wrong token".into(),
            },
            Frame::Command(Command::limit(7, 1, Side::Buy, 100, 5)),
            Frame::Event(Event::empty(EventType::Level, CommandType::Place)),
            Frame::Heartbeat,
            Frame::Throttled { client_order_id: 9 },
            Frame::Busy {
                client_order_id: 10,
            },
            Frame::Logout,
            Frame::Ack {
                client_order_id: 11,
                seq: 12,
            },
        ]
    }

    #[test]
    fn every_frame_round_trips_and_partial_input_waits() {
        for frame in samples() {
            let mut bytes = Vec::new();
            encode_frame(&frame, &mut bytes);
            assert_eq!(
                decode_frame(&bytes, 1024),
                Ok(Decoded::Frame(frame.clone(), bytes.len()))
            );
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode_frame(&bytes[..cut], 1024),
                    Ok(Decoded::Incomplete),
                    "{frame:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn the_command_frame_is_the_documented_bytes() {
        let mut bytes = Vec::new();
        let command = Command::limit(7, 1, Side::Buy, 100, 5);
        encode_frame(&Frame::Command(command), &mut bytes);
        assert_eq!(&bytes[..5], &[129, 0, 0, 0, 4]);
        assert_eq!(&bytes[5..], &command.to_bytes());
        // A version 1 record (64 bytes) still reads; a body whose length is not its
        // version's is malformed.
        let mut v1 = [0u8; 64];
        command.encode_v1(&mut v1);
        let mut old = vec![65, 0, 0, 0, 4];
        old.extend_from_slice(&v1);
        assert_eq!(
            decode_frame(&old, 1024),
            Ok(Decoded::Frame(Frame::Command(command), old.len()))
        );
        let mut mixed = vec![65, 0, 0, 0, 4];
        mixed.extend_from_slice(&command.to_bytes()[..64]);
        assert!(matches!(
            decode_frame(&mixed, 1024),
            Err(FrameError::BadLength { .. })
        ));
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        assert_eq!(decode_frame(&[0, 0, 0, 0], 1024), Err(FrameError::Empty));
        assert_eq!(
            decode_frame(&[0, 0, 1, 0], 1024),
            Err(FrameError::TooLarge {
                length: 65_536,
                max: 1024
            })
        );
        assert_eq!(
            decode_frame(&[1, 0, 0, 0, 99], 1024),
            Err(FrameError::UnknownType(99))
        );
        assert_eq!(
            decode_frame(&[2, 0, 0, 0, frame_type::HEARTBEAT, 0], 1024),
            Err(FrameError::BadLength {
                frame_type: frame_type::HEARTBEAT,
                length: 1
            })
        );
        let mut bytes = Vec::new();
        encode_frame(
            &Frame::Command(Command::limit(7, 1, Side::Buy, 100, 5)),
            &mut bytes,
        );
        bytes[5] = 9; // command record version
        assert!(matches!(
            decode_frame(&bytes, 1024),
            Err(FrameError::Record(_))
        ));
    }

    #[test]
    fn no_byte_string_panics() {
        // Deterministic pseudo-random garbage plus every single-byte change of every sample.
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let length = (state % 80) as usize;
            let bytes: Vec<u8> = (0..length).map(|i| (state >> (i % 56)) as u8).collect();
            let _ = decode_frame(&bytes, 1024);
        }
        for frame in samples() {
            let mut good = Vec::new();
            encode_frame(&frame, &mut good);
            for offset in 0..good.len() {
                for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                    let mut bytes = good.clone();
                    bytes[offset] = value;
                    // Whatever decodes must re-encode to exactly the bytes it came from.
                    if let Ok(Decoded::Frame(frame, length)) = decode_frame(&bytes, 1024) {
                        let mut encoded = Vec::new();
                        encode_frame(&frame, &mut encoded);
                        assert_eq!(encoded, bytes[..length], "{frame:?}");
                    }
                }
            }
        }
    }
}
