//! Simulated storage behind the pipeline's ports, with the page cache modelled: what a write
//! puts in the page cache survives a process crash (kill -9, a panic) but not a power loss;
//! at a power loss each file keeps what was synced plus a seed-chosen part of what was not,
//! and the last sector written may be torn. Files are written sequentially here (journal
//! records, event records), so what survives of the unsynced part is a prefix of it.
//!
//! - [`SimJournal`]: journal records in the real record layout (length, CRC32C, sequence,
//!   timestamp, command), read back with the journal's own checks; reopening after a crash
//!   cuts the torn tail as the real journal does.
//! - [`SimSnapshots`]: snapshot files in the real format (`encode_snapshot` /
//!   `decode_snapshot`), written whole or not at all (temporary file, sync, rename).
//! - [`SimEventsFile`]: the events file: resume point, skip and compare on replay, synced only
//!   by the snapshot writer, as the real one.
//! - [`SimHardState`]: a cluster node's Raft hard state, replaced whole and synced.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use ringmatch_journal::{
    decode_snapshot, encode_snapshot, record_at, Durability, JournalError, JournalRecord,
    JournalStats, RecordAt, Snapshot, SnapshotError, SnapshotInfo, JOURNAL_VERSION,
    RECORD_SIZE_BYTES,
};
use ringmatch_pipeline::ports::{JournalPort, SnapshotPort};
use ringmatch_pipeline::{EventPosition, OutputDurability, OutputSink, ResumableOutput};
use ringmatch_proto::Event;
use ringmatch_replication::{HardState, HardStatePort, LogPort, ReplicationError};

use crate::rng::Rng;

/// Bytes of a sector: the unit a power loss may tear.
pub const SECTOR_SIZE_BYTES: usize = 512;

/// A value shared by a port (owned by a stage) and the simulated disk.
pub type Shared<T> = Arc<Mutex<T>>;

/// Locks a shared value; the simulator is single-threaded, so a lock is never contended.
pub fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, T> {
    shared.lock().expect("the simulator is single-threaded")
}

/// How a node stops unexpectedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// The process dies (kill -9, a fatal panic): the page cache survives.
    Process,
    /// The machine loses power: only what was synced survives for sure.
    PowerLoss,
}

/// Faults armed for the next operation of a port.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// The next journal sync fails.
    pub journal_sync_fails: bool,
    /// The journal cannot grow past this many bytes (disk full).
    pub journal_capacity_bytes: Option<usize>,
    /// The next events-file sync fails.
    pub events_sync_fails: bool,
    /// The next snapshot write fails (disk full).
    pub snapshot_write_fails: bool,
    /// The next write of the events file fails.
    pub events_write_fails: bool,
}

fn io_error(what: &str) -> std::io::Error {
    std::io::Error::other(format!("simulated fault: {what}"))
}

/// The journal's file as the disk holds it.
#[derive(Debug)]
pub struct JournalImage {
    /// What the page cache holds (what reads see).
    pub bytes: Vec<u8>,
    /// How much of `bytes` is synced.
    pub synced_len: usize,
    /// The sequence of the first record (1 unless a cluster member's log was compacted or
    /// restarted after a snapshot; both change it durably at once).
    pub first_seq: u64,
}

impl JournalImage {
    /// An empty journal.
    pub fn new() -> JournalImage {
        JournalImage {
            bytes: Vec::new(),
            synced_len: 0,
            first_seq: 1,
        }
    }

    /// Applies a crash: a power loss keeps the synced bytes and a seed-chosen prefix of the
    /// rest, maybe with its last sector torn (random bytes past a seed-chosen point). With
    /// `page_reorder`, each unsynced sector survives or not on its own instead (writeback and
    /// the device may persist them in any order), and what did not survive reads as the
    /// zeros the preallocated segment held.
    pub fn crash(&mut self, crash: Crash, rng: &mut Rng, page_reorder: bool) {
        if crash == Crash::Process {
            return;
        }
        if page_reorder {
            let mut sector = self.synced_len / SECTOR_SIZE_BYTES * SECTOR_SIZE_BYTES;
            while sector < self.bytes.len() {
                let end = (sector + SECTOR_SIZE_BYTES).min(self.bytes.len());
                if rng.chance(500) {
                    for byte in &mut self.bytes[sector.max(self.synced_len)..end] {
                        *byte = 0;
                    }
                }
                sector = end;
            }
            return;
        }
        let unsynced = self.bytes.len() - self.synced_len;
        let kept = self.synced_len + rng.below(unsynced as u64 + 1) as usize;
        self.bytes.truncate(kept);
        if kept > self.synced_len && rng.chance(300) {
            let sector_start = (kept - 1) / SECTOR_SIZE_BYTES * SECTOR_SIZE_BYTES;
            let torn_from = sector_start.max(self.synced_len)
                + rng.below((kept - sector_start.max(self.synced_len)) as u64) as usize;
            for byte in &mut self.bytes[torn_from..kept] {
                *byte = rng.next_u64() as u8;
            }
        }
    }

    /// What opening the journal finds: its records up to the first that is not valid, and the
    /// next sequence. As the real journal does, what follows is cut as a torn tail when no
    /// valid record lies after it, and refused as damage before the tail when one does.
    pub fn open(&mut self) -> Result<u64, String> {
        let mut offset = 0;
        let mut next_seq = self.first_seq;
        while let RecordAt::Valid(record, length) = record_at(&self.bytes, offset, JOURNAL_VERSION)
        {
            assert_eq!(record.seq, next_seq, "journal records are contiguous");
            next_seq += 1;
            offset += length;
        }
        let mut later = offset + RECORD_SIZE_BYTES;
        while later + RECORD_SIZE_BYTES <= self.bytes.len() {
            if let RecordAt::Valid(record, _) = record_at(&self.bytes, later, JOURNAL_VERSION) {
                return Err(format!(
                    "journal damaged before its tail: sequence {next_seq} at offset {offset} is \
                     not a record, but sequence {} follows it",
                    record.seq
                ));
            }
            later += RECORD_SIZE_BYTES;
        }
        self.bytes.truncate(offset);
        self.synced_len = offset;
        Ok(next_seq)
    }

    /// Every valid record, in order.
    pub fn records(&self) -> Vec<JournalRecord> {
        let mut records = Vec::new();
        let mut offset = 0;
        while let RecordAt::Valid(record, length) = record_at(&self.bytes, offset, JOURNAL_VERSION)
        {
            records.push(record);
            offset += length;
        }
        records
    }
}

impl Default for JournalImage {
    fn default() -> Self {
        JournalImage::new()
    }
}

/// The journal port over a [`JournalImage`].
pub struct SimJournal {
    image: Shared<JournalImage>,
    faults: Shared<Faults>,
    durability: Durability,
    next_seq: u64,
    stats: Arc<JournalStats>,
}

impl SimJournal {
    /// The journal on `image` (opened: its torn tail cut), with `durability`; Err when the
    /// journal refuses to open (damage before its tail).
    pub fn open(
        image: Shared<JournalImage>,
        faults: Shared<Faults>,
        durability: Durability,
    ) -> Result<SimJournal, String> {
        let next_seq = lock(&image).open()?;
        Ok(SimJournal {
            image,
            faults,
            durability,
            next_seq,
            stats: Arc::default(),
        })
    }

    fn sync(&mut self) -> Result<(), JournalError> {
        let mut faults = lock(&self.faults);
        if std::mem::take(&mut faults.journal_sync_fails) {
            return Err(JournalError::Io {
                path: PathBuf::from("sim/journal"),
                source: io_error("fsync failed"),
            });
        }
        let mut image = lock(&self.image);
        image.synced_len = image.bytes.len();
        Ok(())
    }
}

impl JournalPort for SimJournal {
    fn append(&mut self, record: &JournalRecord) -> Result<(), JournalError> {
        assert_eq!(record.seq, self.next_seq, "appends come in sequence order");
        {
            let mut image = lock(&self.image);
            let capacity = lock(&self.faults).journal_capacity_bytes;
            if capacity.is_some_and(|capacity| image.bytes.len() + RECORD_SIZE_BYTES > capacity) {
                return Err(JournalError::Io {
                    path: PathBuf::from("sim/journal"),
                    source: io_error("no space left on the device"),
                });
            }
            let start = image.bytes.len();
            image.bytes.resize(start + RECORD_SIZE_BYTES, 0);
            record.encode_into(&mut image.bytes[start..]);
        }
        self.next_seq += 1;
        if self.durability == Durability::Every {
            self.sync()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), JournalError> {
        match self.durability {
            Durability::Batch => self.sync(),
            Durability::Every | Durability::None => Ok(()),
        }
    }

    fn commits_sync(&self) -> bool {
        self.durability == Durability::Batch
    }

    fn first_seq(&self) -> u64 {
        lock(&self.image).first_seq
    }

    fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn records_from(
        &self,
        seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<JournalRecord, JournalError>> + '_>, JournalError>
    {
        let image = lock(&self.image);
        let records = image.records();
        let from = (seq - image.first_seq) as usize;
        Ok(Box::new(records.into_iter().skip(from).map(Ok)))
    }

    fn stats(&self) -> Arc<JournalStats> {
        Arc::clone(&self.stats)
    }

    fn sync_all(&mut self) -> Result<(), JournalError> {
        self.sync()
    }

    fn segments_dir(&self) -> Option<&std::path::Path> {
        None
    }
}

impl LogPort for SimJournal {
    fn truncate_from(&mut self, seq: u64) -> Result<(), JournalError> {
        let mut image = lock(&self.image);
        assert!(
            seq >= image.first_seq && seq <= self.next_seq,
            "a cut within the journal"
        );
        let offset = (seq - image.first_seq) as usize * RECORD_SIZE_BYTES;
        image.bytes.truncate(offset);
        // The cut is synced at once (as the port promises): a crash never brings the cut
        // records back.
        image.synced_len = image.synced_len.min(offset);
        self.next_seq = seq;
        Ok(())
    }

    /// Durable at once, as the real journal's is once it returns.
    fn reset_to(&mut self, next_seq: u64) -> Result<(), JournalError> {
        let mut image = lock(&self.image);
        image.bytes.clear();
        image.synced_len = 0;
        image.first_seq = next_seq;
        self.next_seq = next_seq;
        Ok(())
    }

    /// Drops exactly the records before `seq` (the real journal drops whole segments, so
    /// it may keep some), durably at once. Only synced records are ever dropped.
    fn retain_from(
        &mut self,
        seq: u64,
        _archive: Option<&std::path::Path>,
    ) -> Result<(), JournalError> {
        let mut image = lock(&self.image);
        if seq <= image.first_seq {
            return Ok(());
        }
        let dropped = ((seq - image.first_seq) as usize * RECORD_SIZE_BYTES).min(image.synced_len);
        image.bytes.drain(..dropped);
        image.synced_len -= dropped;
        image.first_seq += (dropped / RECORD_SIZE_BYTES) as u64;
        Ok(())
    }
}

/// The Raft hard state as the disk holds it: replaced whole and synced on every store
/// (unless `durable` is off, to show what forgetting it breaks: then a store never reaches
/// the disk).
pub struct SimHardState {
    stored: Shared<Option<HardState>>,
    durable: bool,
}

impl SimHardState {
    /// The port over `stored`.
    pub fn new(stored: Shared<Option<HardState>>, durable: bool) -> SimHardState {
        SimHardState { stored, durable }
    }
}

impl HardStatePort for SimHardState {
    fn load(&self) -> Result<Option<HardState>, ReplicationError> {
        Ok(*lock(&self.stored))
    }

    fn store(&mut self, state: &HardState) -> Result<(), ReplicationError> {
        if self.durable {
            *lock(&self.stored) = Some(*state);
        }
        Ok(())
    }
}

/// A cluster member's snapshot files, for Raft: the newest is sent to a follower behind the
/// member's log start, and one from the leader is installed here. Whole files only, durable
/// once stored (as the real store writes, syncs and renames them).
pub struct SimRaftSnapshots {
    files: Shared<BTreeMap<u64, Vec<u8>>>,
    keep_count: usize,
}

impl SimRaftSnapshots {
    /// The port over `files`, keeping the newest `keep_count`.
    pub fn new(files: Shared<BTreeMap<u64, Vec<u8>>>, keep_count: usize) -> SimRaftSnapshots {
        SimRaftSnapshots { files, keep_count }
    }

    /// Writes the snapshot file of `state`, the state after `seq` (the shadow matcher's).
    pub fn write(&self, seq: u64, state: &[u8]) {
        let bytes = encode_snapshot(seq, None, state).expect("a snapshot encodes");
        self.store(seq, bytes);
    }

    fn store(&self, seq: u64, bytes: Vec<u8>) {
        let mut files = lock(&self.files);
        files.insert(seq, bytes);
        while files.len() > self.keep_count {
            files.pop_first();
        }
    }
}

impl ringmatch_replication::SnapshotPort for SimRaftSnapshots {
    fn newest(&self) -> Result<Option<(u64, Vec<u8>)>, ReplicationError> {
        Ok(lock(&self.files)
            .last_key_value()
            .map(|(seq, bytes)| (*seq, bytes.clone())))
    }

    fn install(&mut self, seq: u64, bytes: &[u8]) -> Result<(), ReplicationError> {
        decode_snapshot(seq, bytes).map_err(ReplicationError::Snapshot)?;
        self.store(seq, bytes.to_vec());
        Ok(())
    }
}

/// The snapshot folder as the disk holds it: whole files only (each written to a temporary
/// file, synced, then renamed into place).
#[derive(Debug, Default)]
pub struct SnapshotsImage {
    /// (sequence, file bytes), oldest first.
    pub files: Vec<(u64, Vec<u8>)>,
}

/// The snapshot port over a [`SnapshotsImage`].
pub struct SimSnapshots {
    image: Shared<SnapshotsImage>,
    faults: Shared<Faults>,
    keep_count: usize,
    /// Revert of the events-mark fix: snapshots record no mark, as before version 2 every
    /// snapshot was trusted whatever the output held.
    forget_marks: bool,
}

impl SimSnapshots {
    /// The store on `image`, keeping the newest `keep_count`.
    pub fn new(
        image: Shared<SnapshotsImage>,
        faults: Shared<Faults>,
        keep_count: usize,
        forget_marks: bool,
    ) -> SimSnapshots {
        SimSnapshots {
            image,
            faults,
            keep_count,
            forget_marks,
        }
    }

    fn info(seq: u64, size_bytes: usize) -> SnapshotInfo {
        SnapshotInfo {
            seq,
            path: PathBuf::from(format!("sim/snapshot-{seq:020}.snap")),
            size_bytes: size_bytes as u64,
        }
    }
}

impl SnapshotPort for SimSnapshots {
    fn write(
        &self,
        seq: u64,
        last_event: Option<(u64, u32)>,
        state: &[u8],
    ) -> Result<SnapshotInfo, SnapshotError> {
        let path = Self::info(seq, 0).path;
        if std::mem::take(&mut lock(&self.faults).snapshot_write_fails) {
            return Err(SnapshotError::Io {
                path,
                source: io_error("no space left on the device"),
            });
        }
        let last_event = if self.forget_marks { None } else { last_event };
        let bytes =
            encode_snapshot(seq, last_event, state).map_err(|source| SnapshotError::Io {
                path: path.clone(),
                source,
            })?;
        let size_bytes = bytes.len();
        let mut image = lock(&self.image);
        image.files.retain(|(existing, _)| *existing != seq);
        image.files.push((seq, bytes));
        image.files.sort_by_key(|(seq, _)| *seq);
        let excess = image.files.len().saturating_sub(self.keep_count);
        image.files.drain(..excess);
        Ok(Self::info(seq, size_bytes))
    }

    fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        let image = lock(&self.image);
        Ok(image
            .files
            .iter()
            .rev()
            .map(|(seq, bytes)| Self::info(*seq, bytes.len()))
            .collect())
    }

    fn read(&self, info: &SnapshotInfo) -> Result<Snapshot, SnapshotError> {
        let image = lock(&self.image);
        let bytes = image
            .files
            .iter()
            .find(|(seq, _)| *seq == info.seq)
            .map(|(_, bytes)| bytes.clone())
            .ok_or_else(|| SnapshotError::Invalid {
                path: info.path.clone(),
                problem: "gone".into(),
            })?;
        decode_snapshot(info.seq, &bytes).map_err(|problem| SnapshotError::Invalid {
            path: info.path.clone(),
            problem,
        })
    }
}

/// The events file as the disk holds it.
#[derive(Debug, Default)]
pub struct EventsImage {
    /// The records the page cache holds (handed to the operating system).
    pub records: Vec<Event>,
    /// How many of them are synced.
    pub synced_count: usize,
}

impl EventsImage {
    /// Applies a crash: a power loss keeps the synced records and a seed-chosen prefix of the
    /// rest (a torn last record is cut on open, like the real file's).
    pub fn crash(&mut self, crash: Crash, rng: &mut Rng) {
        if crash == Crash::Process {
            return;
        }
        let unsynced = self.records.len() - self.synced_count;
        let kept = self.synced_count + rng.below(unsynced as u64 + 1) as usize;
        self.records.truncate(kept);
    }
}

/// The events-file output port over an [`EventsImage`].
pub struct SimEventsFile {
    image: Shared<EventsImage>,
    faults: Shared<Faults>,
    /// The last record the file held at open.
    resume: Option<Event>,
    /// Events written since the last end of batch, still in the process (a buffered writer).
    buffered: Vec<Event>,
    last_position: Option<EventPosition>,
    /// Replayed events skipped because the file held them.
    skipped_count: u64,
    /// Set when a replayed event differed from the stored one at the resume point (the real
    /// file panics there).
    pub mismatch: Option<String>,
    /// Revert of the sync fix: the snapshot writer counts events durable once handed over,
    /// without a sync, as before.
    unsynced_snapshots: bool,
}

impl SimEventsFile {
    /// Opens the file on `image` for a journal whose next sequence is `journal_next_seq`:
    /// records of commands the journal does not hold are dropped, the last one left is the
    /// resume point.
    pub fn open(
        image: Shared<EventsImage>,
        faults: Shared<Faults>,
        journal_next_seq: u64,
        unsynced_snapshots: bool,
    ) -> SimEventsFile {
        let resume = {
            let mut held = lock(&image);
            while held
                .records
                .last()
                .is_some_and(|event| event.seq >= journal_next_seq)
            {
                held.records.pop();
            }
            held.synced_count = held.records.len();
            held.records.last().copied()
        };
        SimEventsFile {
            image,
            faults,
            resume,
            buffered: Vec::new(),
            last_position: resume.map(|event| (event.seq, event.index)),
            skipped_count: 0,
            mismatch: None,
            unsynced_snapshots,
        }
    }
}

impl OutputSink for SimEventsFile {
    fn push(&mut self, event: &Event) {
        self.last_position = Some((event.seq, event.index));
        if let Some(resume) = self.resume {
            let position = (event.seq, event.index);
            let resume_position = (resume.seq, resume.index);
            if position <= resume_position {
                if position == resume_position && *event != resume && self.mismatch.is_none() {
                    self.mismatch = Some(format!(
                        "replay produced a different event at the resume point {position:?}"
                    ));
                }
                self.skipped_count += 1;
                return;
            }
            self.resume = None;
        }
        self.buffered.push(*event);
    }

    fn end_of_batch(&mut self) {
        lock(&self.image).records.append(&mut self.buffered);
    }

    fn durability(&self) -> OutputDurability {
        if self.unsynced_snapshots {
            return OutputDurability::AtEndOfBatch;
        }
        let (image, faults) = (Arc::clone(&self.image), Arc::clone(&self.faults));
        OutputDurability::Synced(Box::new(move || {
            if std::mem::take(&mut lock(&faults).events_sync_fails) {
                return Err(io_error("fdatasync of the events file failed"));
            }
            let mut held = lock(&image);
            held.synced_count = held.records.len();
            Ok(())
        }))
    }

    fn last_event_position(&self) -> Option<EventPosition> {
        self.last_position
    }
}

impl ResumableOutput for SimEventsFile {
    fn resume_position(&self) -> Option<EventPosition> {
        self.resume.map(|event| (event.seq, event.index))
    }

    fn skipped_count(&self) -> u64 {
        self.skipped_count
    }
}
