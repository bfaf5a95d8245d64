//! The replication framing: how one Raft message travels between two nodes of a cluster
//! (layout in `docs/replication-protocol.md`). A frame names its cluster and both ends and
//! checksums its payload, so a frame from another cluster, a garbled frame or one addressed
//! to another node is refused before Raft sees it.

use protobuf::Message as _;
use raft::eraftpb::Message;
use ringmatch_proto::le::{u16_at, u32_at, u64_at};

/// First bytes of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"RMRP";
/// Version of the framing. Version 2: a normal entry carries a 128-byte (version 2) command.
pub const FRAME_VERSION: u16 = 2;
/// Bytes of a frame header.
pub const FRAME_HEADER_SIZE_BYTES: usize = 40;
/// The largest payload a frame may carry.
pub const FRAME_PAYLOAD_MAX_BYTES: usize = 64 << 20;
/// Frame kind: the payload is one Raft message (`eraftpb.Message`, protobuf).
pub const KIND_RAFT_MESSAGE: u16 = 1;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes do not start with the frame magic.
    #[error("not a replication frame (bad magic)")]
    BadMagic,
    /// A framing version this build does not speak.
    #[error("unsupported replication framing version {0} (this build speaks {FRAME_VERSION})")]
    Version(u16),
    /// A frame kind this build does not know.
    #[error("unknown frame kind {0}")]
    Kind(u16),
    /// The frame comes from another cluster.
    #[error("frame of cluster {got}, but this is cluster {expected}")]
    WrongCluster {
        /// This node's cluster.
        expected: u64,
        /// The frame's.
        got: u64,
    },
    /// The frame is for another node.
    #[error("frame for node {got}, but this is node {expected}")]
    WrongNode {
        /// This node.
        expected: u64,
        /// The frame's addressee.
        got: u64,
    },
    /// The payload is longer than any frame may be.
    #[error("frame payload of {0} bytes exceeds the limit of {FRAME_PAYLOAD_MAX_BYTES}")]
    TooLong(usize),
    /// The payload does not match its checksum.
    #[error("frame payload checksum mismatch")]
    Checksum,
    /// The payload is not a Raft message, or not the one the header names.
    #[error("bad frame payload: {0}")]
    Payload(String),
}

/// The ends of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The cluster's id.
    pub cluster_id: u64,
    /// The sending node.
    pub from: u64,
    /// The receiving node.
    pub to: u64,
}

/// Appends the frame carrying `message` to `out`.
pub fn encode_frame(cluster_id: u64, message: &Message, out: &mut Vec<u8>) {
    let payload = message
        .write_to_bytes()
        .expect("a Raft message always encodes");
    let start = out.len();
    out.resize(start + FRAME_HEADER_SIZE_BYTES, 0);
    let header = &mut out[start..];
    header[0..4].copy_from_slice(&FRAME_MAGIC);
    header[4..6].copy_from_slice(&FRAME_VERSION.to_le_bytes());
    header[6..8].copy_from_slice(&KIND_RAFT_MESSAGE.to_le_bytes());
    header[8..16].copy_from_slice(&cluster_id.to_le_bytes());
    header[16..24].copy_from_slice(&message.from.to_le_bytes());
    header[24..32].copy_from_slice(&message.to.to_le_bytes());
    header[32..36].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[36..40].copy_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// What the start of a byte stream holds.
#[derive(Debug)]
pub enum Decoded {
    /// Not yet a whole frame: at least this many bytes are needed in all.
    Incomplete(usize),
    /// One whole frame of `used` bytes.
    Frame {
        /// Who sent it to whom.
        route: Route,
        /// The message.
        message: Box<Message>,
        /// Bytes of the stream the frame took.
        used: usize,
    },
}

/// Reads the frame at the start of `bytes`, for node `node_id` of cluster `cluster_id`.
/// Checks the header as soon as it is whole, so a stream of garbage is refused at once
/// rather than waited on.
pub fn decode_frame(cluster_id: u64, node_id: u64, bytes: &[u8]) -> Result<Decoded, FrameError> {
    if bytes.len() >= 4 && bytes[0..4] != FRAME_MAGIC {
        return Err(FrameError::BadMagic);
    }
    if bytes.len() < FRAME_HEADER_SIZE_BYTES {
        return Ok(Decoded::Incomplete(FRAME_HEADER_SIZE_BYTES));
    }
    let version = u16_at(bytes, 4);
    if version != FRAME_VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = u16_at(bytes, 6);
    if kind != KIND_RAFT_MESSAGE {
        return Err(FrameError::Kind(kind));
    }
    let route = Route {
        cluster_id: u64_at(bytes, 8),
        from: u64_at(bytes, 16),
        to: u64_at(bytes, 24),
    };
    if route.cluster_id != cluster_id {
        return Err(FrameError::WrongCluster {
            expected: cluster_id,
            got: route.cluster_id,
        });
    }
    if route.to != node_id {
        return Err(FrameError::WrongNode {
            expected: node_id,
            got: route.to,
        });
    }
    let length = u32_at(bytes, 32) as usize;
    if length > FRAME_PAYLOAD_MAX_BYTES {
        return Err(FrameError::TooLong(length));
    }
    let used = FRAME_HEADER_SIZE_BYTES + length;
    if bytes.len() < used {
        return Ok(Decoded::Incomplete(used));
    }
    let payload = &bytes[FRAME_HEADER_SIZE_BYTES..used];
    if crc32c::crc32c(payload) != u32_at(bytes, 36) {
        return Err(FrameError::Checksum);
    }
    let message = Message::parse_from_bytes(payload)
        .map_err(|error| FrameError::Payload(error.to_string()))?;
    if message.from != route.from || message.to != route.to {
        return Err(FrameError::Payload(format!(
            "the message is from {} to {}, the header says from {} to {}",
            message.from, message.to, route.from, route.to
        )));
    }
    Ok(Decoded::Frame {
        route,
        message: Box::new(message),
        used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType};

    fn append(from: u64, to: u64) -> Message {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgAppend);
        message.from = from;
        message.to = to;
        message.term = 4;
        message.index = 9;
        message.log_term = 3;
        let entry = Entry {
            index: 10,
            term: 4,
            data: vec![1, 2, 3].into(),
            ..Entry::default()
        };
        message.entries = vec![entry].into();
        message
    }

    #[test]
    fn a_frame_round_trips_and_its_header_is_the_documented_one() {
        let mut bytes = Vec::new();
        encode_frame(77, &append(1, 2), &mut bytes);
        assert_eq!(&bytes[0..4], b"RMRP");
        assert_eq!(bytes[4..8], [2, 0, 1, 0]);
        assert_eq!(bytes[8], 77);
        assert_eq!(bytes[16], 1);
        assert_eq!(bytes[24], 2);
        assert_eq!(
            u32_at(&bytes, 32) as usize,
            bytes.len() - FRAME_HEADER_SIZE_BYTES
        );
        match decode_frame(77, 2, &bytes).unwrap() {
            Decoded::Frame {
                route,
                message,
                used,
            } => {
                assert_eq!(
                    route,
                    Route {
                        cluster_id: 77,
                        from: 1,
                        to: 2
                    }
                );
                assert_eq!(*message, append(1, 2));
                assert_eq!(used, bytes.len());
            }
            Decoded::Incomplete(_) => panic!("a whole frame"),
        }
    }

    #[test]
    fn a_partial_frame_asks_for_more_and_garbage_is_refused_at_once() {
        let mut bytes = Vec::new();
        encode_frame(77, &append(1, 2), &mut bytes);
        for length in 0..bytes.len() {
            match decode_frame(77, 2, &bytes[..length]) {
                Ok(Decoded::Incomplete(needed)) => assert!(needed > length),
                other => panic!("length {length}: {other:?}"),
            }
        }
        assert_eq!(
            decode_frame(77, 2, b"GET / HTTP/1.1\r\n").unwrap_err(),
            FrameError::BadMagic
        );
    }

    #[test]
    fn frames_of_another_cluster_or_node_and_damaged_frames_are_refused() {
        let mut bytes = Vec::new();
        encode_frame(77, &append(1, 2), &mut bytes);
        assert_eq!(
            decode_frame(78, 2, &bytes).unwrap_err(),
            FrameError::WrongCluster {
                expected: 78,
                got: 77
            }
        );
        assert_eq!(
            decode_frame(77, 3, &bytes).unwrap_err(),
            FrameError::WrongNode {
                expected: 3,
                got: 2
            }
        );
        for offset in FRAME_HEADER_SIZE_BYTES..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[offset] ^= 0x40;
            assert_eq!(
                decode_frame(77, 2, &damaged).unwrap_err(),
                FrameError::Checksum,
                "payload byte {offset}"
            );
        }
        for other in [1u8, 3] {
            let mut version = bytes.clone();
            version[4] = other;
            assert_eq!(
                decode_frame(77, 2, &version).unwrap_err(),
                FrameError::Version(u16::from(other))
            );
        }
        let mut long = bytes.clone();
        long[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_frame(77, 2, &long).unwrap_err(),
            FrameError::TooLong(_)
        ));
        // A header that lies about the sender.
        let mut lying = Vec::new();
        encode_frame(77, &append(1, 2), &mut lying);
        lying[16] = 3;
        assert!(matches!(
            decode_frame(77, 2, &lying).unwrap_err(),
            FrameError::Payload(_)
        ));
    }
}
