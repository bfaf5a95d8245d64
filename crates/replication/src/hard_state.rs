//! The Raft hard state (term, vote, commit, log start) on disk: `<data>/raft-state`, 96 bytes, written
//! whole to a temporary file, synced, renamed into place and the directory synced, so a crash
//! leaves either the old state or the new one (layout in `docs/replication-protocol.md`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ReplicationError;

/// First bytes of the file.
pub const HARD_STATE_MAGIC: [u8; 8] = *b"RMRAFTHS";
/// Layout version of the file this build writes; version 1 (64 bytes, no log start) still
/// reads.
pub const HARD_STATE_VERSION: u32 = 2;
/// Bytes of the file (version 2).
pub const HARD_STATE_SIZE_BYTES: usize = 96;
/// Bytes of a version 1 file.
pub const HARD_STATE_V1_SIZE_BYTES: usize = 64;
/// The file's name in the data directory.
pub const HARD_STATE_FILE_NAME: &str = "raft-state";

/// Flag bit: the journal is being replaced by a snapshot from the leader and must be
/// emptied to start after the log start (an install a crash interrupted).
const FLAG_LOG_RESET_PENDING: u32 = 1;

/// What a node must remember across a crash to vote safely, and where its log starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term the node has seen.
    pub term: u64,
    /// The node it voted for in that term (0: none).
    pub vote: u64,
    /// A commit index known when the state was stored. It may lag the real one: a lagging
    /// commit is safe (the leader tells it again), a commit ahead of the log never is.
    pub commit: u64,
    /// The index of the last entry covered by a snapshot rather than by the journal: the
    /// Raft log starts at `log_start + 1` (0: the journal holds the log from index 1).
    pub log_start: u64,
    /// The term of the entry at `log_start` (0 when `log_start` is 0).
    pub log_start_term: u64,
    /// The journal must still be emptied to restart at `log_start + 1` (a snapshot install
    /// that a crash interrupted).
    pub log_reset_pending: bool,
}

/// Whose hard state a file holds: a file of another node or cluster is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The cluster's id.
    pub cluster_id: u64,
    /// The node's id in it.
    pub node_id: u64,
}

/// The 96 bytes of the file.
pub fn encode_hard_state(owner: Owner, state: &HardState) -> [u8; HARD_STATE_SIZE_BYTES] {
    let mut out = [0u8; HARD_STATE_SIZE_BYTES];
    out[0..8].copy_from_slice(&HARD_STATE_MAGIC);
    out[8..12].copy_from_slice(&HARD_STATE_VERSION.to_le_bytes());
    let flags = if state.log_reset_pending {
        FLAG_LOG_RESET_PENDING
    } else {
        0
    };
    out[12..16].copy_from_slice(&flags.to_le_bytes());
    out[16..24].copy_from_slice(&owner.cluster_id.to_le_bytes());
    out[24..32].copy_from_slice(&owner.node_id.to_le_bytes());
    out[32..40].copy_from_slice(&state.term.to_le_bytes());
    out[40..48].copy_from_slice(&state.vote.to_le_bytes());
    out[48..56].copy_from_slice(&state.commit.to_le_bytes());
    out[56..64].copy_from_slice(&state.log_start.to_le_bytes());
    out[64..72].copy_from_slice(&state.log_start_term.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..92]);
    out[92..96].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Reads and checks the file's bytes (version 2, or version 1); the error says what is
/// wrong.
pub fn decode_hard_state(owner: Owner, bytes: &[u8]) -> Result<HardState, String> {
    if bytes.len() < 12 {
        return Err(format!("the file is {} bytes, too short", bytes.len()));
    }
    if bytes[0..8] != HARD_STATE_MAGIC {
        return Err("bad magic (not a ringmatch Raft state file)".into());
    }
    let u64_at = |offset: usize| {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&bytes[offset..offset + 8]);
        u64::from_le_bytes(raw)
    };
    let u32_at = |offset: usize| {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(&bytes[offset..offset + 4]);
        u32::from_le_bytes(raw)
    };
    let version = u32_at(8);
    let (size, crc_at, reserved) = match version {
        1 => (HARD_STATE_V1_SIZE_BYTES, 60, 56..60),
        2 => (HARD_STATE_SIZE_BYTES, 92, 72..92),
        _ => {
            return Err(format!(
                "unsupported version {version} (this build reads 1 and {HARD_STATE_VERSION})"
            ))
        }
    };
    if bytes.len() != size {
        return Err(format!(
            "the file is {} bytes, not {size} (version {version})",
            bytes.len()
        ));
    }
    if crc32c::crc32c(&bytes[0..crc_at]) != u32_at(crc_at) {
        return Err("checksum mismatch".into());
    }
    let flags = u32_at(12);
    let flags_defined = if version == 1 {
        0
    } else {
        FLAG_LOG_RESET_PENDING
    };
    if flags & !flags_defined != 0 || bytes[reserved].iter().any(|&b| b != 0) {
        return Err("reserved bytes are not zero".into());
    }
    let stored = Owner {
        cluster_id: u64_at(16),
        node_id: u64_at(24),
    };
    if stored != owner {
        return Err(format!(
            "it belongs to node {} of cluster {}, and this is node {} of cluster {}",
            stored.node_id, stored.cluster_id, owner.node_id, owner.cluster_id
        ));
    }
    let (log_start, log_start_term) = if version == 1 {
        (0, 0)
    } else {
        (u64_at(56), u64_at(64))
    };
    if log_start > u64_at(48) {
        return Err(format!(
            "the log start {log_start} is past the commit index {}",
            u64_at(48)
        ));
    }
    Ok(HardState {
        term: u64_at(32),
        vote: u64_at(40),
        commit: u64_at(48),
        log_start,
        log_start_term,
        log_reset_pending: flags & FLAG_LOG_RESET_PENDING != 0,
    })
}

/// Where the node keeps its hard state.
pub trait HardStatePort: Send + 'static {
    /// The stored state; `None` when the node has never stored one (a new node).
    fn load(&self) -> Result<Option<HardState>, ReplicationError>;
    /// Stores `state`; durable when this returns.
    fn store(&mut self, state: &HardState) -> Result<(), ReplicationError>;
}

/// The hard state in a file of the data directory.
#[derive(Debug)]
pub struct HardStateFile {
    dir: PathBuf,
    owner: Owner,
}

impl HardStateFile {
    /// The file `raft-state` in `dir` (which must exist), holding `owner`'s state.
    pub fn new(dir: &Path, owner: Owner) -> HardStateFile {
        HardStateFile {
            dir: dir.to_path_buf(),
            owner,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(HARD_STATE_FILE_NAME)
    }
}

fn io(path: &Path, source: std::io::Error) -> ReplicationError {
    ReplicationError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl HardStatePort for HardStateFile {
    fn load(&self) -> Result<Option<HardState>, ReplicationError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => decode_hard_state(self.owner, &bytes)
                .map(Some)
                .map_err(|reason| ReplicationError::BadHardState { path, reason }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io(&path, error)),
        }
    }

    fn store(&mut self, state: &HardState) -> Result<(), ReplicationError> {
        let path = self.path();
        let temp = self.dir.join(format!("{HARD_STATE_FILE_NAME}.tmp"));
        let bytes = encode_hard_state(self.owner, state);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|error| io(&temp, error))?;
        file.write_all(&bytes).map_err(|error| io(&temp, error))?;
        file.sync_all().map_err(|error| io(&temp, error))?;
        fs::rename(&temp, &path).map_err(|error| io(&path, error))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| io(&self.dir, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: Owner = Owner {
        cluster_id: 7,
        node_id: 2,
    };

    #[test]
    fn the_layout_is_the_documented_one() {
        let state = HardState {
            term: 3,
            vote: 1,
            commit: 0x0102,
            log_start: 0x0101,
            log_start_term: 2,
            log_reset_pending: true,
        };
        let bytes = encode_hard_state(OWNER, &state);
        assert_eq!(&bytes[0..8], b"RMRAFTHS");
        assert_eq!(bytes[8..12], [2, 0, 0, 0]);
        assert_eq!(bytes[12..16], [1, 0, 0, 0]);
        assert_eq!(bytes[16], 7);
        assert_eq!(bytes[24], 2);
        assert_eq!(bytes[32], 3);
        assert_eq!(bytes[40], 1);
        assert_eq!(bytes[48..50], [0x02, 0x01]);
        assert_eq!(bytes[56..58], [0x01, 0x01]);
        assert_eq!(bytes[64], 2);
        assert_eq!(decode_hard_state(OWNER, &bytes), Ok(state));
    }

    /// A version 1 file (64 bytes, CRC at 60) still reads, with the log starting at 1.
    #[test]
    fn a_version_1_file_still_reads() {
        let mut v1 = [0u8; HARD_STATE_V1_SIZE_BYTES];
        v1[0..8].copy_from_slice(b"RMRAFTHS");
        v1[8] = 1;
        v1[16] = 7;
        v1[24] = 2;
        v1[32] = 5;
        v1[40] = 3;
        v1[48] = 9;
        let crc = crc32c::crc32c(&v1[0..60]);
        v1[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_hard_state(OWNER, &v1),
            Ok(HardState {
                term: 5,
                vote: 3,
                commit: 9,
                ..HardState::default()
            })
        );
        v1[12] = 1;
        assert!(decode_hard_state(OWNER, &v1).is_err());
    }

    #[test]
    fn any_flipped_bit_and_another_owner_are_refused() {
        let bytes = encode_hard_state(OWNER, &HardState::default());
        for bit in 0..HARD_STATE_SIZE_BYTES * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_hard_state(OWNER, &damaged).is_err(), "bit {bit}");
        }
        let other = Owner {
            cluster_id: 7,
            node_id: 3,
        };
        let error = decode_hard_state(other, &bytes).unwrap_err();
        assert!(error.contains("belongs to node 2 of cluster 7"), "{error}");
    }

    #[test]
    fn a_stored_state_is_read_back_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = HardStateFile::new(dir.path(), OWNER);
        assert_eq!(file.load().unwrap(), None);
        for term in 1..=3 {
            let state = HardState {
                term,
                vote: term % 3,
                commit: term * 10,
                log_start: term * 5,
                log_start_term: term - 1,
                log_reset_pending: term == 2,
            };
            file.store(&state).unwrap();
            assert_eq!(
                HardStateFile::new(dir.path(), OWNER).load().unwrap(),
                Some(state)
            );
        }
        assert!(!dir.path().join("raft-state.tmp").exists());
        fs::write(dir.path().join(HARD_STATE_FILE_NAME), b"short").unwrap();
        let error = file.load().unwrap_err().to_string();
        assert!(
            error.contains("raft-state") && error.contains("5 bytes"),
            "{error}"
        );
    }
}
