//! The snapshot store: compressed, checksummed state files written atomically.
//!
//! A snapshot is written to a temporary file, synced, renamed into place and the directory
//! synced, so a crash leaves either the old set of snapshots or the new one, never half a
//! file under a snapshot name. The newest `keep_count` snapshots are kept.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::format::{u32_at, u64_at};
use crate::sync_dir;

/// First bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RMSNAPSH";
/// Layout version of the snapshot file written; version 1 files (without an events mark)
/// still read.
pub const SNAPSHOT_VERSION: u32 = 2;
/// The first layout version, which recorded no events mark.
const SNAPSHOT_VERSION_1: u32 = 1;
const HEADER_SIZE_BYTES: usize = 64;
const COMPRESSION_ZSTD: u32 = 1;

/// A snapshot file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Sequence of the last command applied to the state.
    pub seq: u64,
    /// The file.
    pub path: PathBuf,
    /// File size.
    pub size_bytes: u64,
}

/// What a snapshot records about the output at its sequence: the position (sequence, index)
/// of the last event that the commands up to and including the snapshot's sequence produced.
/// Start-up may replay from a snapshot only into an output that holds at least that event;
/// an output behind it would otherwise be left with a permanent gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsMark {
    /// A version 1 file: the mark was not recorded.
    Unrecorded,
    /// The commands up to the snapshot produced no event.
    NoEvents,
    /// The last event of the commands up to the snapshot, as (sequence, index).
    Last(u64, u32),
}

impl EventsMark {
    /// The position, if the mark is recorded and events exist.
    pub fn last(self) -> Option<(u64, u32)> {
        match self {
            EventsMark::Last(seq, index) => Some((seq, index)),
            EventsMark::Unrecorded | EventsMark::NoEvents => None,
        }
    }
}

/// A snapshot read back: the state and the output's mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The matcher state bytes.
    pub state: Vec<u8>,
    /// What the output held at the snapshot's sequence.
    pub events_mark: EventsMark,
}

/// Why a snapshot cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error from the system.
        source: std::io::Error,
    },
    /// The file is not a valid snapshot.
    #[error("{path}: invalid snapshot: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

fn io(path: &Path, source: std::io::Error) -> SnapshotError {
    SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The folder of snapshots.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    keep_count: usize,
}

fn file_name(seq: u64) -> String {
    format!("snapshot-{seq:020}.snap")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl SnapshotStore {
    /// A store in `dir` (created if missing) keeping the newest `keep_count` snapshots.
    pub fn open(dir: &Path, keep_count: usize) -> Result<SnapshotStore, SnapshotError> {
        assert!(
            keep_count >= 1,
            "keep_count is validated by the configuration"
        );
        std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
        Ok(SnapshotStore {
            dir: dir.to_path_buf(),
            keep_count,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Snapshots on disk, newest first (by name; validity is checked on read).
    pub fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        let mut snapshots = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|source| io(&self.dir, source))? {
            let entry = entry.map_err(|source| io(&self.dir, source))?;
            let name = entry.file_name();
            if let Some(seq) = name.to_str().and_then(parse_file_name) {
                let size_bytes = match entry.metadata() {
                    Ok(metadata) => metadata.len(),
                    // Removed since the directory was read (by another thread's pruning).
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(io(&entry.path(), source)),
                };
                snapshots.push(SnapshotInfo {
                    seq,
                    path: entry.path(),
                    size_bytes,
                });
            }
        }
        snapshots.sort_by_key(|info| std::cmp::Reverse(info.seq));
        Ok(snapshots)
    }

    /// Writes the state after sequence `seq` and drops snapshots beyond `keep_count`.
    pub fn write(
        &self,
        seq: u64,
        last_event: Option<(u64, u32)>,
        state: &[u8],
    ) -> Result<SnapshotInfo, SnapshotError> {
        let path = self.dir.join(file_name(seq));
        let bytes = encode_snapshot(seq, last_event, state).map_err(|source| io(&path, source))?;
        self.write_file(seq, &bytes, true)
    }

    /// Stores a whole snapshot file made elsewhere (a cluster leader's, sent to a follower
    /// that is behind), after checking it is a valid snapshot of the state after `seq`;
    /// drops snapshots beyond `keep_count`.
    ///
    /// Unlike [`SnapshotStore::write`] it drops nothing: the installer still has to record
    /// that its log now starts at this snapshot, and until then the older snapshots may be
    /// the ones a restart needs. The next write drops what is beyond `keep_count`.
    pub fn install(&self, seq: u64, bytes: &[u8]) -> Result<SnapshotInfo, SnapshotError> {
        decode_snapshot(seq, bytes).map_err(|problem| SnapshotError::Invalid {
            path: self.dir.join(file_name(seq)),
            problem,
        })?;
        self.write_file(seq, bytes, false)
    }

    /// The bytes of one snapshot file, unchecked (they are checked where they are read).
    pub fn read_bytes(&self, info: &SnapshotInfo) -> Result<Vec<u8>, SnapshotError> {
        std::fs::read(&info.path).map_err(|source| io(&info.path, source))
    }

    fn write_file(
        &self,
        seq: u64,
        bytes: &[u8],
        drop_old: bool,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let path = self.dir.join(file_name(seq));
        let temp = self.dir.join(format!("{}.tmp", file_name(seq)));
        let mut file = std::fs::File::create(&temp).map_err(|source| io(&temp, source))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|source| io(&temp, source))?;
        drop(file);
        std::fs::rename(&temp, &path).map_err(|source| io(&path, source))?;
        sync_dir(&self.dir)
            .map_err(|error| io(&self.dir, std::io::Error::other(error.to_string())))?;
        let kept_count = if drop_old {
            self.keep_count
        } else {
            usize::MAX
        };
        for old in self.list()?.into_iter().skip(kept_count) {
            // Another thread of a cluster member (its replica installing, its shadow
            // writing) may have removed it already.
            match std::fs::remove_file(&old.path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(io(&old.path, source)),
            }
        }
        Ok(SnapshotInfo {
            seq,
            size_bytes: bytes.len() as u64,
            path,
        })
    }

    /// Reads and checks one snapshot.
    pub fn read(&self, info: &SnapshotInfo) -> Result<Snapshot, SnapshotError> {
        let bytes = std::fs::read(&info.path).map_err(|source| io(&info.path, source))?;
        decode_snapshot(info.seq, &bytes).map_err(|problem| SnapshotError::Invalid {
            path: info.path.clone(),
            problem,
        })
    }
}

/// The bytes of a snapshot file (header and compressed state) for the state after command
/// `seq`, whose last event before it is `last_event` (`docs/snapshot-format.md`).
pub fn encode_snapshot(
    seq: u64,
    last_event: Option<(u64, u32)>,
    state: &[u8],
) -> std::io::Result<Vec<u8>> {
    if let Some((event_seq, _)) = last_event {
        assert!(
            event_seq != 0 && event_seq <= seq,
            "the last event before snapshot {seq} has sequence {event_seq}"
        );
    }
    let payload = zstd::bulk::compress(state, 3)?;
    let mut header = [0u8; HEADER_SIZE_BYTES];
    header[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&COMPRESSION_ZSTD.to_le_bytes());
    header[16..24].copy_from_slice(&seq.to_le_bytes());
    header[24..32].copy_from_slice(&(state.len() as u64).to_le_bytes());
    header[32..40].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    header[40..44].copy_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    // Sequence 0 (no command has it) says the commands produced no event.
    let (event_seq, event_index) = last_event.unwrap_or((0, 0));
    header[44..52].copy_from_slice(&event_seq.to_le_bytes());
    header[52..56].copy_from_slice(&event_index.to_le_bytes());
    let header_crc = crc32c::crc32c(&header[0..60]);
    header[60..64].copy_from_slice(&header_crc.to_le_bytes());
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// Checks and decodes the bytes of a snapshot file that its name says is of sequence
/// `named_seq`; Err says what is wrong.
pub fn decode_snapshot(named_seq: u64, bytes: &[u8]) -> Result<Snapshot, String> {
    if bytes.len() < HEADER_SIZE_BYTES {
        return Err(format!("only {} bytes", bytes.len()));
    }
    if bytes[0..8] != SNAPSHOT_MAGIC {
        return Err("bad magic".into());
    }
    if crc32c::crc32c(&bytes[0..60]) != u32_at(bytes, 60) {
        return Err("header checksum mismatch".into());
    }
    let version = u32_at(bytes, 8);
    let known_version = version == SNAPSHOT_VERSION || version == SNAPSHOT_VERSION_1;
    if !known_version || u32_at(bytes, 12) != COMPRESSION_ZSTD {
        return Err(format!("unsupported version {version} or compression"));
    }
    let seq = u64_at(bytes, 16);
    if seq != named_seq {
        return Err(format!("file name says sequence {named_seq}, header {seq}"));
    }
    let events_mark = if version == SNAPSHOT_VERSION_1 {
        EventsMark::Unrecorded
    } else {
        match u64_at(bytes, 44) {
            0 => EventsMark::NoEvents,
            event_seq if event_seq > seq => {
                return Err(format!(
                    "events mark at sequence {event_seq}, after the snapshot's {seq}"
                ))
            }
            event_seq => EventsMark::Last(event_seq, u32_at(bytes, 52)),
        }
    };
    let state_size = u64_at(bytes, 24) as usize;
    let payload_size = u64_at(bytes, 32) as usize;
    let payload = &bytes[HEADER_SIZE_BYTES..];
    if payload.len() != payload_size {
        return Err(format!(
            "payload is {} bytes, header says {payload_size}",
            payload.len()
        ));
    }
    if crc32c::crc32c(payload) != u32_at(bytes, 40) {
        return Err("payload checksum mismatch".into());
    }
    let state = zstd::bulk::decompress(payload, state_size)
        .map_err(|error| format!("decompression failed: {error}"))?;
    if state.len() != state_size {
        return Err(format!(
            "state is {} bytes, header says {state_size}",
            state.len()
        ));
    }
    Ok(Snapshot { state, events_mark })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_keep_and_detect_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path(), 2).unwrap();
        for seq in [10u64, 20, 30] {
            store
                .write(
                    seq,
                    Some((seq - 1, 3)),
                    format!("state after {seq}").as_bytes(),
                )
                .unwrap();
        }
        let listed = store.list().unwrap();
        assert_eq!(
            listed.iter().map(|info| info.seq).collect::<Vec<_>>(),
            vec![30, 20]
        );
        let newest = store.read(&listed[0]).unwrap();
        assert_eq!(newest.state, b"state after 30");
        assert_eq!(newest.events_mark, EventsMark::Last(29, 3));

        let mut bytes = std::fs::read(&listed[0].path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&listed[0].path, &bytes).unwrap();
        let error = store.read(&listed[0]).unwrap_err().to_string();
        assert!(error.contains("payload checksum mismatch"), "{error}");
        assert_eq!(store.read(&listed[1]).unwrap().state, b"state after 20");
    }

    /// An installed file (a leader's) is checked, stored whole and drops nothing; the next
    /// write drops what is beyond `keep_count`. A damaged file is refused and not stored.
    #[test]
    fn an_install_checks_the_file_and_drops_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path(), 1).unwrap();
        store.write(10, None, b"ten").unwrap();
        let bytes = encode_snapshot(20, Some((19, 0)), b"twenty").unwrap();
        let mut damaged = bytes.clone();
        damaged[70] ^= 1;
        assert!(store.install(20, &damaged).is_err());
        assert!(
            store.install(21, &bytes).is_err(),
            "named for another sequence"
        );
        assert_eq!(store.list().unwrap().len(), 1);
        store.install(20, &bytes).unwrap();
        let kept: Vec<u64> = store.list().unwrap().iter().map(|info| info.seq).collect();
        assert_eq!(kept, [20, 10]);
        assert_eq!(store.read_bytes(&store.list().unwrap()[0]).unwrap(), bytes);
        store.write(30, None, b"thirty").unwrap();
        let kept: Vec<u64> = store.list().unwrap().iter().map(|info| info.seq).collect();
        assert_eq!(kept, [30]);
    }

    #[test]
    fn a_snapshot_of_commands_without_events_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path(), 1).unwrap();
        let info = store.write(5, None, b"empty").unwrap();
        assert_eq!(store.read(&info).unwrap().events_mark, EventsMark::NoEvents);
    }

    /// A version 1 file, laid out by hand as `docs/snapshot-format.md` describes it (bytes
    /// 44..60 reserved), still reads, with its mark unrecorded.
    #[test]
    fn version_1_files_read_without_a_mark() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path(), 1).unwrap();
        let state = b"version one state";
        let payload = zstd::bulk::compress(state, 3).unwrap();
        let mut header = [0u8; HEADER_SIZE_BYTES];
        header[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
        header[8..12].copy_from_slice(&1u32.to_le_bytes());
        header[12..16].copy_from_slice(&COMPRESSION_ZSTD.to_le_bytes());
        header[16..24].copy_from_slice(&7u64.to_le_bytes());
        header[24..32].copy_from_slice(&(state.len() as u64).to_le_bytes());
        header[32..40].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        header[40..44].copy_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        let header_crc = crc32c::crc32c(&header[0..60]);
        header[60..64].copy_from_slice(&header_crc.to_le_bytes());
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&payload);
        std::fs::write(dir.path().join(file_name(7)), bytes).unwrap();
        let info = &store.list().unwrap()[0];
        let snapshot = store.read(info).unwrap();
        assert_eq!(snapshot.state, state);
        assert_eq!(snapshot.events_mark, EventsMark::Unrecorded);
    }
}
