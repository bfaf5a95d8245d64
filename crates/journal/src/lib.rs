//! The durable half of ringmatch: a segmented, memory-mapped journal of input commands and a
//! store of compressed, checksummed snapshots.
//!
//! The journal appends one record per command (length, CRC32C, sequence, ingress timestamp,
//! the command record) to preallocated segment files, and makes them durable by the
//! configured policy: never (`none`), at the end of each ring batch (`batch`, a group commit),
//! or after every record (`every`). Opening a journal finds and cuts a torn tail, and refuses
//! to start when damage lies before the tail. [`JournalReader`] streams records from any
//! sequence for replay. [`SnapshotStore`] writes state snapshots atomically and finds the
//! newest valid one. Formats: `docs/journal-format.md`, `docs/snapshot-format.md`.
//!
//! This crate deliberately knows nothing of order books, matching rules, rings or Kafka: it
//! stores command records and opaque state bytes.

mod format;
mod journal;
mod lock;
mod reader;
mod snapshot;

use std::path::{Path, PathBuf};

pub use format::{
    parse_segment_file_name, record_at, record_size_bytes, segment_file_name, JournalRecord,
    RecordAt, SegmentHeader, JOURNAL_VERSION, JOURNAL_VERSION_OLDEST, RECORD_HEADER_SIZE_BYTES,
    RECORD_SIZE_BYTES, SEGMENT_HEADER_SIZE_BYTES, SEGMENT_MAGIC,
};
pub use journal::{
    inspect, list_segments, retain_segments, DamageCut, DamagePolicy, Durability, Inspection,
    Journal, JournalConfig, JournalStats, OpenReport, SegmentSummary, TailCut,
};
pub use lock::DirLock;
pub use reader::JournalReader;
pub use snapshot::{
    decode_snapshot, encode_snapshot, EventsMark, Snapshot, SnapshotError, SnapshotInfo,
    SnapshotStore, SNAPSHOT_MAGIC, SNAPSHOT_VERSION,
};

/// Operating errors of the journal. A broken internal invariant is a panic instead.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error from the system.
        source: std::io::Error,
    },
    /// A record before the tail is damaged; start-up must not go on silently.
    #[error(
        "journal damaged before its tail: {path} at offset {offset}, where sequence {seq} was \
         expected ({problem}); valid records follow it. Restore the file, or start with \
         --cut-damaged-journal to cut the journal there (later records are moved aside)"
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// Sequence the record should have had.
        seq: u64,
        /// What is wrong with it.
        problem: String,
    },
    /// A segment file's header is invalid.
    #[error("{path}: not a valid journal segment: {problem}")]
    BadSegment {
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Sequences are not contiguous between or within segments.
    #[error("{path}: expected sequence {expected}, found {found}")]
    Gap {
        /// The segment file.
        path: PathBuf,
        /// Sequence expected.
        expected: u64,
        /// Sequence found.
        found: u64,
    },
    /// The records asked for are no longer (or not yet) in the journal.
    #[error("sequence {seq} is not in the journal (it holds {first_seq}..{next_seq})")]
    Missing {
        /// Sequence asked for.
        seq: u64,
        /// First sequence held.
        first_seq: u64,
        /// Next sequence to be written.
        next_seq: u64,
    },
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another process (its LOCK file is held)")]
    Locked(PathBuf),
}

impl JournalError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Fsyncs a directory so a rename or a new file in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    std::fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| JournalError::io(dir, source))
}
