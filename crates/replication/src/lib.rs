//! Replication for a ringmatch cluster, on raft-rs: the journal is the Raft log
//! ([`log::LogStore`]: journal sequence = Raft index, terms kept by term records), the hard
//! state lives beside it ([`hard_state`]), [`node::Node`] drives raft-rs's `RawNode` over
//! them, and [`frame`] is the versioned framing Raft messages travel in between nodes
//! (`docs/replication-protocol.md`).
//!
//! [`transport`] carries the frames over TCP and [`replica`] is the production driver: the
//! thread that owns a node, ticks it and lets other threads wait for a commit.
//!
//! It deliberately does not know order-book rules (a committed record is handed back to the
//! caller's matcher as it is). The node itself knows no threads, sockets or clocks: its
//! driver owns the timer and the transport, so the seeded simulator drives the very same
//! node over a simulated network.
//! Membership is static: the `[cluster]` configuration names every member.

pub mod frame;
pub mod hard_state;
pub mod log;
pub mod node;
pub mod proposals;
pub mod replica;
pub mod replicated;
pub mod transport;

use std::path::PathBuf;

pub use frame::{decode_frame, encode_frame, Decoded, FrameError, Route};
pub use hard_state::{HardState, HardStateFile, HardStatePort, Owner};
pub use log::{LogPort, LogStore, SnapshotPort, TermRuns};
pub use node::{Committed, MemberProgress, Node, NodeConfig, NodeStatus, Outbox, Role};
pub use proposals::{Outcome, Proposals};
pub use raft::eraftpb::{Entry, Message, MessageType};
pub use replica::{CommitHook, Compactor, Replica, WaitError};
pub use replicated::{CommitLink, OnDeposed, ReplicatedJournal};
pub use transport::{PeerAddress, Transport, TransportStats, Waker};

use ringmatch_journal::JournalError;

/// Why replication failed or refused something.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The `[cluster]` configuration is not usable.
    #[error("cluster configuration: {0}")]
    Config(String),
    /// The journal failed.
    #[error(transparent)]
    Journal(JournalError),
    /// The journal does not hold a valid Raft log.
    #[error("the journal is not a valid Raft log: {0}")]
    BadLog(String),
    /// An entry that cannot be journaled.
    #[error("entry {index} cannot be journaled: {reason}")]
    BadEntry {
        /// Its index.
        index: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The hard-state file is damaged or another node's.
    #[error("{}: {reason}", path.display())]
    BadHardState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A command was offered to a node that is not the leader.
    #[error("this node is not the leader (the leader is node {leader_id}; 0: none known)")]
    NotLeader {
        /// The leader this node knows of, 0 if none.
        leader_id: u64,
    },
    /// A message or request refused without harm.
    #[error("refused: {0}")]
    Refused(String),
    /// Something this build does not do yet.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A snapshot could not be read, checked or stored.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// raft-rs failed.
    #[error("raft: {0}")]
    Raft(raft::Error),
}
