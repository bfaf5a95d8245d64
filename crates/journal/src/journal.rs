//! The journal writer: open (with recovery), append, group commit, roll over, retention.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use memmap2::{Advice, Mmap, MmapMut, MmapRaw};

use crate::format::{
    parse_segment_file_name, record_at, record_size_bytes, segment_file_name, JournalRecord,
    RecordAt, SegmentHeader, JOURNAL_VERSION, RECORD_SIZE_BYTES, SEGMENT_HEADER_SIZE_BYTES,
};
use crate::lock::DirLock;
use crate::{sync_dir, JournalError};

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Never synced by the journal: records live in the page cache (survive a process crash,
    /// not a power loss).
    None,
    /// Synced at the end of each ring batch: one sync covers the whole batch (group commit).
    Batch,
    /// Synced after every record.
    Every,
}

impl Durability {
    /// Parses `none`, `batch` or `every`.
    pub fn from_name(name: &str) -> Option<Durability> {
        match name {
            "none" => Some(Durability::None),
            "batch" => Some(Durability::Batch),
            "every" => Some(Durability::Every),
            _ => None,
        }
    }

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Batch => "batch",
            Durability::Every => "every",
        }
    }
}

/// What to do when damage is found before the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamagePolicy {
    /// Refuse to open (the default).
    Refuse,
    /// Cut the journal at the damaged record; later segments are moved to `quarantine/`.
    CutAtDamage,
}

/// Where and how the journal is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Directory of the segment files.
    pub dir: PathBuf,
    /// Size of each preallocated segment file.
    pub segment_size_bytes: u64,
    /// Sync policy.
    pub durability: Durability,
}

/// A torn tail that was cut off on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    /// Segment holding the tail.
    pub path: PathBuf,
    /// Offset of the first byte cut.
    pub offset: u64,
    /// Non-zero bytes that were cut.
    pub bytes_count: u64,
    /// Sequence the first cut record would have had.
    pub from_seq: u64,
}

/// Damage before the tail that the operator chose to cut at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamageCut {
    /// Segment holding the damaged record.
    pub path: PathBuf,
    /// Offset of the damaged record.
    pub offset: u64,
    /// Sequence the damaged record should have had.
    pub from_seq: u64,
    /// What was wrong.
    pub problem: String,
    /// Segment files moved to the quarantine folder.
    pub quarantined: Vec<PathBuf>,
}

/// What opening the journal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// First sequence held (equal to `next_seq` when the journal is empty).
    pub first_seq: u64,
    /// Sequence the next append must have.
    pub next_seq: u64,
    /// Segment files.
    pub segments_count: usize,
    /// A torn tail that was cut, if any.
    pub tail_cut: Option<TailCut>,
    /// Damage that was cut under [`DamagePolicy::CutAtDamage`], if any.
    pub damage_cut: Option<DamageCut>,
}

/// Counters the journal keeps for metrics (read from any thread).
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Record bytes appended since start.
    pub bytes_written: AtomicU64,
    /// Records appended since start.
    pub records_written: AtomicU64,
    /// Syncs made since start.
    pub syncs_count: AtomicU64,
    /// Total time spent in syncs, nanoseconds.
    pub sync_time_ns: AtomicU64,
    /// Highest sequence known durable under the policy (or written, under `none`).
    pub durable_seq: AtomicU64,
    /// Sequence of the next append.
    pub next_seq: AtomicU64,
}

struct ActiveSegment {
    path: PathBuf,
    _file: File,
    /// Written only by the journal; shared with the prefaulter, which only advises the kernel
    /// about it.
    map: Arc<MmapRaw>,
    offset: usize,
    synced_offset: usize,
    /// Layout version of the segment's records: only a segment of this build's version is
    /// appended to (a journal that ends with an older one rolls at its first append).
    version: u32,
    /// End of the range handed to the prefaulter so far.
    prefault_requested_to: usize,
}

impl ActiveSegment {
    fn new(path: PathBuf, file: File, map: MmapRaw, offset: usize, version: u32) -> ActiveSegment {
        ActiveSegment {
            path,
            _file: file,
            map: Arc::new(map),
            offset,
            synced_offset: offset,
            version,
            // Requests start on a page boundary and then step in whole chunks.
            prefault_requested_to: offset & !(PAGE_SIZE_BYTES - 1),
        }
    }
}

/// How far ahead of the write position the active segment's pages are kept mapped writable.
const PREFAULT_LEAD_BYTES: usize = 8 << 20;
/// How much the prefaulter maps per request (whole pages).
const PREFAULT_CHUNK_BYTES: usize = 1 << 20;
/// The smallest page size `madvise` ranges are aligned to.
const PAGE_SIZE_BYTES: usize = 4096;

/// Work for the prefaulter.
enum PrefaultRequest {
    /// Map `map[from..to]` writable.
    Range {
        map: Arc<MmapRaw>,
        from: usize,
        to: usize,
    },
    /// Answer once every earlier request is done (false: prefaulting is unavailable).
    Settle(mpsc::Sender<bool>),
    /// Unmap and close a segment the journal has moved past.
    Retire(ActiveSegment),
}

/// The next segment, asked of the segment maker before the active one is full.
struct Standby {
    first_seq: u64,
    ready: mpsc::Receiver<Result<PathBuf, JournalError>>,
}

/// Maps the active segment's pages writable ahead of the writer, on its own thread.
///
/// Without it, the first write to each 4 KiB page of a fresh segment faults, and the fault
/// reads the (preallocated, unwritten) page in by zeroing it, all on the Journaler's thread: a
/// profile had that at a third of the Journaler's time, and it was the Journaler's whole p99
/// at 100,000 commands/s. `MADV_POPULATE_WRITE` does the same work here instead. Best effort:
/// a kernel without it (before Linux 5.14) leaves the faults where they were.
///
/// The same thread unmaps the segment the journal has moved past. The next segment file
/// (allocation, zeros, header and sync) is made while the active one is being filled by a
/// thread of its own at normal priority, paced a megabyte at a time, so a roll on the
/// Journaler's thread only renames and maps a file. Not on the nice-19 thread: the writer
/// waits for that file at its roll, and when every core was busy (three cluster members on
/// two cores, all rolling at the same index) the starved helper held a member's roll, and
/// with it the member's acks to its leader, for up to 1.3 s.
struct Prefaulter {
    sender: Option<mpsc::Sender<PrefaultRequest>>,
    /// Set when the journal closes: a segment still being made is abandoned.
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The thread making the next segment file, once one was asked for.
    maker: Option<JoinHandle<()>>,
}

impl Prefaulter {
    fn start() -> Prefaulter {
        let (sender, receiver) = mpsc::channel::<PrefaultRequest>();
        let closing = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("journal-prefault".into())
            .spawn(move || {
                lower_this_threads_priority();
                let mut available = true;
                for request in receiver {
                    match request {
                        PrefaultRequest::Range { map, mut from, to } => {
                            while available && from < to {
                                let len = PREFAULT_CHUNK_BYTES.min(to - from);
                                // An error means the kernel cannot do it (before 5.14): the
                                // writer's own faults do the work from then on.
                                available =
                                    map.advise_range(Advice::PopulateWrite, from, len).is_ok();
                                from += len;
                            }
                        }
                        PrefaultRequest::Settle(reply) => {
                            let _ = reply.send(available);
                        }
                        PrefaultRequest::Retire(segment) => drop(segment),
                    }
                }
            })
            .ok();
        Prefaulter {
            sender: thread.is_some().then_some(sender),
            closing,
            thread,
            maker: None,
        }
    }

    /// Keeps the pages of `segment` mapped up to `PREFAULT_LEAD_BYTES` past its write position.
    fn keep_ahead(&self, segment: &mut ActiveSegment) {
        let Some(sender) = &self.sender else { return };
        let target = (segment.offset + PREFAULT_LEAD_BYTES).min(segment.map.len());
        while segment.prefault_requested_to < target {
            let from = segment.prefault_requested_to;
            let to = (from + PREFAULT_CHUNK_BYTES).min(segment.map.len());
            let request = PrefaultRequest::Range {
                map: Arc::clone(&segment.map),
                from,
                to,
            };
            if sender.send(request).is_err() {
                return;
            }
            segment.prefault_requested_to = to;
        }
    }
}

impl Prefaulter {
    /// Asks for the segment that starts at `first_seq` to be made ahead of need, on a thread
    /// of its own (made at once, on this thread, if that thread cannot be started).
    fn prepare(&mut self, config: &JournalConfig, first_seq: u64) -> Standby {
        let (reply, ready) = mpsc::channel();
        // The one before has answered (its standby was received or abandoned): this only
        // reaps it.
        if let Some(maker) = self.maker.take() {
            let _ = maker.join();
        }
        let dir = config.dir.clone();
        let segment_size_bytes = config.segment_size_bytes;
        let closing = Arc::clone(&self.closing);
        let made_reply = reply.clone();
        let spawned = std::thread::Builder::new()
            .name("journal-segment".into())
            .spawn(move || {
                let _ = made_reply.send(prepare_segment_file(
                    &dir,
                    segment_size_bytes,
                    first_seq,
                    STANDBY_TEMP_SUFFIX,
                    Some(&closing),
                ));
            });
        match spawned {
            Ok(maker) => self.maker = Some(maker),
            Err(_) => {
                let _ = reply.send(prepare_segment_file(
                    &config.dir,
                    config.segment_size_bytes,
                    first_seq,
                    STANDBY_TEMP_SUFFIX,
                    None,
                ));
            }
        }
        Standby { first_seq, ready }
    }

    /// Unmaps and closes `segment` on the helper thread (here, if it is not running).
    fn retire(&self, segment: ActiveSegment) {
        if let Some(sender) = &self.sender {
            let _ = sender.send(PrefaultRequest::Retire(segment));
        }
    }

    /// Waits until every request so far is done, the next segment's making included; false
    /// if prefaulting is unavailable.
    fn settle(&mut self) -> bool {
        // Its answer stays in the standby's channel for the roll.
        if let Some(maker) = self.maker.take() {
            let _ = maker.join();
        }
        let Some(sender) = &self.sender else {
            return false;
        };
        let (reply, answer) = mpsc::channel();
        sender.send(PrefaultRequest::Settle(reply)).is_ok() && answer.recv().unwrap_or(false)
    }
}

impl Drop for Prefaulter {
    fn drop(&mut self) {
        // A closing journal needs no next segment: stop making it rather than wait for it
        // (up to a second for a 256 MiB segment here).
        self.closing.store(true, Ordering::Relaxed);
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(maker) = self.maker.take() {
            let _ = maker.join();
        }
    }
}

/// The journal writer. Owns the data directory lock.
pub struct Journal {
    config: JournalConfig,
    segment: ActiveSegment,
    next_seq: u64,
    first_seq: u64,
    stats: Arc<JournalStats>,
    /// Stopped before the lock is released.
    prefaulter: Prefaulter,
    /// The next segment, asked for once the active one is half full: a roll then only
    /// renames and maps it instead of making and syncing a new file on the Journaler.
    standby: Option<Standby>,
    _lock: DirLock,
}

/// Segment files of a directory, sorted by first sequence.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut segments = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|source| JournalError::io(dir, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| JournalError::io(dir, source))?;
        let name = entry.file_name();
        if let Some(first_seq) = name.to_str().and_then(parse_segment_file_name) {
            segments.push((first_seq, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

fn map_read_only(path: &Path) -> Result<Mmap, JournalError> {
    let file = File::open(path).map_err(|source| JournalError::io(path, source))?;
    // SAFETY: the journal's files are only written by the process holding the directory lock,
    // through the journal itself; concurrent readers see bytes that are either old or new, and
    // every record is checked by length, CRC and sequence before use.
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(&file) }.map_err(|source| JournalError::io(path, source))?;
    Ok(map)
}

fn open_read_write(path: &Path) -> Result<File, JournalError> {
    File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| JournalError::io(path, source))
}

/// Maps the segment being written.
fn map_active(path: &Path) -> Result<(File, MmapRaw), JournalError> {
    let file = open_read_write(path)?;
    let map = MmapRaw::map_raw(&file).map_err(|source| JournalError::io(path, source))?;
    Ok((file, map))
}

fn map_read_write(path: &Path) -> Result<(File, MmapMut), JournalError> {
    let file = open_read_write(path)?;
    // SAFETY: as in `map_read_only`; in addition only this process (holding the lock) maps a
    // segment writable, and only the journal writes through the map.
    #[allow(unsafe_code)]
    let map =
        unsafe { MmapMut::map_mut(&file) }.map_err(|source| JournalError::io(path, source))?;
    Ok((file, map))
}

/// The state of a scanned segment.
struct Scanned {
    path: PathBuf,
    header: SegmentHeader,
    /// Offset just after the last valid record.
    end_offset: usize,
    /// Sequence after the last valid record.
    next_seq: u64,
    /// A bad record, if the scan stopped on one: (offset, problem).
    bad: Option<(usize, String)>,
}

fn scan_segment(path: &Path, first_seq_by_name: u64) -> Result<Scanned, JournalError> {
    let map = map_read_only(path)?;
    let header = SegmentHeader::decode(&map).map_err(|problem| JournalError::BadSegment {
        path: path.to_path_buf(),
        problem,
    })?;
    // A file shorter than its header says was truncated (by a copy, or a full disk): its
    // records are scanned as far as they go, and the writer extends it again.
    if header.first_seq != first_seq_by_name || header.segment_size_bytes < map.len() as u64 {
        return Err(JournalError::BadSegment {
            path: path.to_path_buf(),
            problem: format!(
                "header says first sequence {} and size {}, file says {} and {}",
                header.first_seq,
                header.segment_size_bytes,
                first_seq_by_name,
                map.len()
            ),
        });
    }
    let mut offset = SEGMENT_HEADER_SIZE_BYTES;
    let mut next_seq = header.first_seq;
    let bad = loop {
        match record_at(&map, offset, header.version) {
            // The end of the data must be followed by nothing but zeroes; anything else is a
            // partly written record whose length never made it.
            RecordAt::End if non_zero_end(&map, offset) > offset => {
                break Some((offset, "zero length followed by written bytes".into()))
            }
            RecordAt::End => break None,
            RecordAt::Bad(problem) => break Some((offset, problem)),
            RecordAt::Valid(record, length) => {
                if record.seq != next_seq {
                    break Some((offset, format!("record has sequence {}", record.seq)));
                }
                next_seq += 1;
                offset += length;
            }
        }
    };
    Ok(Scanned {
        path: path.to_path_buf(),
        header,
        end_offset: offset,
        next_seq,
        bad,
    })
}

/// Whether any valid record lies in `map` (a segment of `version`) at an 8-aligned offset at
/// or after `from`.
fn valid_record_from(map: &[u8], from: usize, version: u32) -> Option<(usize, u64)> {
    let mut offset = from.next_multiple_of(8);
    while offset + record_size_bytes(version) <= map.len() {
        if let RecordAt::Valid(record, _) = record_at(map, offset, version) {
            return Some((offset, record.seq));
        }
        offset += 8;
    }
    None
}

/// Offset one past the last non-zero byte of `map`, at or after `from`.
fn non_zero_end(map: &[u8], from: usize) -> usize {
    map[from..]
        .iter()
        .rposition(|&byte| byte != 0)
        .map_or(from, |index| from + index + 1)
}

/// One segment as `inspect` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The file.
    pub path: PathBuf,
    /// First sequence (from the header).
    pub first_seq: u64,
    /// Valid records before the first problem or the end of data.
    pub records_count: u64,
    /// Bytes of valid records.
    pub data_bytes: u64,
    /// File size.
    pub size_bytes: u64,
}

/// A read-only look at a journal, classifying any problem the way [`Journal::open`] would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Segments in order.
    pub segments: Vec<SegmentSummary>,
    /// First sequence held.
    pub first_seq: u64,
    /// Sequence after the last valid record.
    pub next_seq: u64,
    /// A torn tail that the next open would cut: (segment, offset, problem).
    pub torn_tail: Option<(PathBuf, u64, String)>,
    /// Damage before the tail that would stop start-up: (segment, offset, sequence, problem).
    pub damage: Option<(PathBuf, u64, u64, String)>,
}

/// Inspects the journal in `dir` without changing anything (no lock is taken).
pub fn inspect(dir: &Path) -> Result<Inspection, JournalError> {
    let segments = list_segments(dir)?;
    let first_seq = segments.first().map_or(1, |(first, _)| *first);
    let mut next_seq = first_seq;
    let mut summaries = Vec::new();
    let mut torn_tail = None;
    let mut damage = None;
    for (index, (first_by_name, path)) in segments.iter().enumerate() {
        if *first_by_name != next_seq {
            damage = Some((
                path.clone(),
                0,
                next_seq,
                format!("segment starts at sequence {first_by_name}"),
            ));
            break;
        }
        let scanned = scan_segment(path, *first_by_name)?;
        let size_bytes = std::fs::metadata(path)
            .map_err(|source| JournalError::io(path, source))?
            .len();
        summaries.push(SegmentSummary {
            path: path.clone(),
            first_seq: *first_by_name,
            records_count: scanned.next_seq - first_by_name,
            data_bytes: (scanned.end_offset - SEGMENT_HEADER_SIZE_BYTES) as u64,
            size_bytes,
        });
        next_seq = scanned.next_seq;
        if let Some((offset, problem)) = scanned.bad.clone() {
            if Journal::find_valid_after(&scanned, offset, &segments[index + 1..])? {
                damage = Some((path.clone(), offset as u64, next_seq, problem));
            } else {
                torn_tail = Some((path.clone(), offset as u64, problem));
            }
            break;
        }
    }
    Ok(Inspection {
        segments: summaries,
        first_seq,
        next_seq,
        torn_tail,
        damage,
    })
}

impl Journal {
    /// Opens (creating if needed) the journal in `config.dir`, recovering from a crash: a
    /// torn tail is cut; damage before the tail is an error unless `policy` says to cut.
    pub fn open(
        config: JournalConfig,
        policy: DamagePolicy,
    ) -> Result<(Journal, OpenReport), JournalError> {
        assert!(
            config.segment_size_bytes >= (SEGMENT_HEADER_SIZE_BYTES + RECORD_SIZE_BYTES) as u64,
            "segment_size_bytes is validated by the configuration"
        );
        std::fs::create_dir_all(&config.dir)
            .map_err(|source| JournalError::io(&config.dir, source))?;
        let lock = DirLock::acquire(&config.dir)?;
        remove_temp_files(&config.dir)?;
        let mut segments = list_segments(&config.dir)?;
        let mut tail_cut = None;
        let mut damage_cut = None;
        let mut next_seq = segments.first().map_or(1, |(first_seq, _)| *first_seq);
        let first_seq = next_seq;
        let mut kept_count = 0;
        for index in 0..segments.len() {
            let (first_by_name, path) = segments[index].clone();
            if first_by_name != next_seq {
                return Err(JournalError::Gap {
                    path,
                    expected: next_seq,
                    found: first_by_name,
                });
            }
            let scanned = scan_segment(&path, first_by_name)?;
            next_seq = scanned.next_seq;
            kept_count = index + 1;
            let Some((offset, problem)) = scanned.bad.clone() else {
                continue;
            };
            // Something that is not a record. If any valid record follows, it is damage before
            // the tail; otherwise it is a torn tail.
            let later = &segments[index + 1..];
            let damage = Self::find_valid_after(&scanned, offset, later)?;
            if damage && policy == DamagePolicy::Refuse {
                return Err(JournalError::Corrupt {
                    path,
                    offset: offset as u64,
                    seq: next_seq,
                    problem,
                });
            }
            let bytes_count = Self::zero_from(&scanned.path, offset)?;
            let quarantined = Self::set_aside(&config.dir, later, damage)?;
            if damage {
                damage_cut = Some(DamageCut {
                    path,
                    offset: offset as u64,
                    from_seq: next_seq,
                    problem,
                    quarantined,
                });
            } else {
                tail_cut = Some(TailCut {
                    path,
                    offset: offset as u64,
                    bytes_count,
                    from_seq: next_seq,
                });
            }
            break;
        }
        segments.truncate(kept_count);
        let stats = Arc::new(JournalStats::default());
        let segment = match segments.last() {
            Some((first, path)) => {
                let scanned = scan_segment(path, *first)?;
                assert!(scanned.bad.is_none(), "a cut segment scans clean");
                extend_to(path, scanned.header.segment_size_bytes)?;
                let (file, map) = map_active(path)?;
                ActiveSegment::new(
                    path.clone(),
                    file,
                    map,
                    scanned.end_offset,
                    scanned.header.version,
                )
            }
            None => Self::create_segment(&config, next_seq)?,
        };
        let mut segment = segment;
        let prefaulter = Prefaulter::start();
        prefaulter.keep_ahead(&mut segment);
        stats.next_seq.store(next_seq, Ordering::Relaxed);
        stats.durable_seq.store(next_seq - 1, Ordering::Relaxed);
        let report = OpenReport {
            first_seq,
            next_seq,
            segments_count: segments.len().max(1),
            tail_cut,
            damage_cut,
        };
        Ok((
            Journal {
                config,
                segment,
                next_seq,
                first_seq,
                stats,
                prefaulter,
                standby: None,
                _lock: lock,
            },
            report,
        ))
    }

    fn find_valid_after(
        scanned: &Scanned,
        offset: usize,
        later: &[(u64, PathBuf)],
    ) -> Result<bool, JournalError> {
        let map = map_read_only(&scanned.path)?;
        if valid_record_from(&map, offset + 8, scanned.header.version).is_some() {
            return Ok(true);
        }
        for (first_seq, path) in later {
            // A later segment with a valid header that holds records, or with a bad header,
            // means data lies past the bad record.
            match scan_segment(path, *first_seq) {
                Ok(later_scan) if later_scan.next_seq == *first_seq && later_scan.bad.is_none() => {
                }
                _ => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Zeroes `path` from `offset` on and syncs it; returns how many non-zero bytes there were.
    fn zero_from(path: &Path, offset: usize) -> Result<u64, JournalError> {
        let (_file, mut map) = map_read_write(path)?;
        let end = non_zero_end(&map, offset);
        map[offset..end].fill(0);
        map.flush()
            .map_err(|source| JournalError::io(path, source))?;
        Ok((end - offset) as u64)
    }

    /// Removes later segments after a tail cut (they hold no records), or moves them to
    /// `quarantine/` after a damage cut.
    fn set_aside(
        dir: &Path,
        later: &[(u64, PathBuf)],
        damage: bool,
    ) -> Result<Vec<PathBuf>, JournalError> {
        let mut moved = Vec::new();
        if damage && !later.is_empty() {
            let quarantine = dir.join("quarantine");
            std::fs::create_dir_all(&quarantine)
                .map_err(|source| JournalError::io(&quarantine, source))?;
            for (_, path) in later {
                let target = quarantine.join(path.file_name().expect("segment files have names"));
                std::fs::rename(path, &target).map_err(|source| JournalError::io(path, source))?;
                moved.push(target);
            }
        } else {
            for (_, path) in later {
                std::fs::remove_file(path).map_err(|source| JournalError::io(path, source))?;
            }
        }
        sync_dir(dir)?;
        Ok(moved)
    }

    /// Makes a segment file and installs it, on the calling thread (at open, when there is
    /// no segment yet).
    fn create_segment(
        config: &JournalConfig,
        first_seq: u64,
    ) -> Result<ActiveSegment, JournalError> {
        let temp = prepare_segment_file(
            &config.dir,
            config.segment_size_bytes,
            first_seq,
            SEGMENT_TEMP_SUFFIX,
            None,
        )?;
        install_segment(&config.dir, first_seq, &temp, true)
    }

    /// Waits until the pages ahead of the write position are mapped and the next segment, if
    /// asked for, is made; false if this kernel cannot map them ahead (then appends fault them
    /// in themselves). For tests and tools.
    pub fn settle_prefault(&mut self) -> bool {
        self.prefaulter.settle()
    }

    /// Sequence the next append must carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// First sequence held.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The configuration.
    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    /// Shared counters for metrics.
    pub fn stats(&self) -> Arc<JournalStats> {
        Arc::clone(&self.stats)
    }

    /// The segment being written.
    pub fn active_segment(&self) -> (&Path, u64) {
        (&self.segment.path, self.segment.offset as u64)
    }

    /// Appends one record. Its sequence must be exactly the next one.
    pub fn append(&mut self, record: &JournalRecord) -> Result<(), JournalError> {
        assert_eq!(record.seq, self.next_seq, "journal append out of sequence");
        if self.segment.offset + RECORD_SIZE_BYTES > self.segment.map.len()
            || self.segment.version != JOURNAL_VERSION
        {
            self.roll()?;
        }
        let offset = self.segment.offset;
        // SAFETY: `offset + RECORD_SIZE_BYTES` is within the map (checked above, and the
        // segment file is never truncated while mapped); only this journal writes through the
        // map, and this slice is the only reference to these bytes while it lives. The
        // prefaulter only advises the kernel about the map.
        #[allow(unsafe_code)]
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                self.segment.map.as_mut_ptr().add(offset),
                RECORD_SIZE_BYTES,
            )
        };
        record.encode_into(bytes);
        self.segment.offset += RECORD_SIZE_BYTES;
        if self.segment.offset + PREFAULT_LEAD_BYTES > self.segment.prefault_requested_to
            && self.segment.prefault_requested_to < self.segment.map.len()
        {
            self.prefaulter.keep_ahead(&mut self.segment);
        }
        self.next_seq += 1;
        if self.standby.is_none() && self.segment.offset * 2 >= self.segment.map.len() {
            // Asked for once the active segment is half full. Records have a fixed size, so
            // the sequence the next segment starts at is known.
            let records_left = (self.segment.map.len() - self.segment.offset) / RECORD_SIZE_BYTES;
            self.standby = Some(
                self.prefaulter
                    .prepare(&self.config, self.next_seq + records_left as u64),
            );
        }
        self.stats.next_seq.store(self.next_seq, Ordering::Relaxed);
        self.stats
            .bytes_written
            .fetch_add(RECORD_SIZE_BYTES as u64, Ordering::Relaxed);
        self.stats.records_written.fetch_add(1, Ordering::Relaxed);
        match self.config.durability {
            Durability::Every => self.sync(),
            Durability::None => {
                self.stats
                    .durable_seq
                    .store(self.next_seq - 1, Ordering::Relaxed);
                Ok(())
            }
            Durability::Batch => Ok(()),
        }
    }

    /// End of a batch: under `batch`, syncs everything appended since the last sync.
    pub fn commit(&mut self) -> Result<(), JournalError> {
        match self.config.durability {
            Durability::Batch => self.sync(),
            Durability::None | Durability::Every => Ok(()),
        }
    }

    /// Syncs everything appended so far to disk, whatever the policy.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        let segment = &mut self.segment;
        if segment.offset > segment.synced_offset {
            let started = std::time::Instant::now();
            segment
                .map
                .flush_range(
                    segment.synced_offset,
                    segment.offset - segment.synced_offset,
                )
                .map_err(|source| JournalError::io(&segment.path, source))?;
            segment.synced_offset = segment.offset;
            self.stats.syncs_count.fetch_add(1, Ordering::Relaxed);
            self.stats
                .sync_time_ns
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        self.stats
            .durable_seq
            .store(self.next_seq - 1, Ordering::Relaxed);
        Ok(())
    }

    fn roll(&mut self) -> Result<(), JournalError> {
        if self.config.durability != Durability::None {
            self.sync()?;
        }
        let first_seq = self.next_seq;
        let standby = match self.standby.take() {
            Some(standby) if standby.first_seq == first_seq => standby,
            other => {
                // Not asked for yet (a segment rolled before it was half full), or made for
                // another sequence (never expected): drop it and make the right one now.
                if let Some(Ok(Ok(path))) = other.map(|standby| standby.ready.recv()) {
                    let _ = std::fs::remove_file(path);
                }
                self.prefaulter.prepare(&self.config, first_seq)
            }
        };
        let temp = standby.ready.recv().unwrap_or_else(|_| {
            prepare_segment_file(
                &self.config.dir,
                self.config.segment_size_bytes,
                first_seq,
                STANDBY_TEMP_SUFFIX,
                None,
            )
        })?;
        let next = install_segment(
            &self.config.dir,
            first_seq,
            &temp,
            self.config.durability != Durability::None,
        )?;
        let done = std::mem::replace(&mut self.segment, next);
        // Unmapping a full segment (its written pages and their page tables) took about a
        // millisecond per 16 MiB on the Journaler's thread; the helper does it instead.
        self.prefaulter.retire(done);
        self.prefaulter.keep_ahead(&mut self.segment);
        Ok(())
    }

    /// Removes every record from `seq` on, and syncs the cut before returning, so a crash
    /// never brings those records back (a cluster follower's uncommitted tail that its
    /// leader overrode). Later segments are deleted and the one holding `seq` becomes the
    /// active segment again. `seq` must lie from the first sequence held to the next one.
    pub fn truncate_from(&mut self, seq: u64) -> Result<(), JournalError> {
        assert!(
            seq >= self.first_seq && seq <= self.next_seq,
            "a cut at {seq} outside the journal ({}..{})",
            self.first_seq,
            self.next_seq
        );
        if seq == self.next_seq {
            return Ok(());
        }
        let active_record_size = record_size_bytes(self.segment.version);
        let records_in_active =
            (self.segment.offset - SEGMENT_HEADER_SIZE_BYTES) / active_record_size;
        let active_first_seq = self.next_seq - records_in_active as u64;
        if seq >= active_first_seq {
            let from =
                SEGMENT_HEADER_SIZE_BYTES + (seq - active_first_seq) as usize * active_record_size;
            let length = self.segment.offset - from;
            // SAFETY: `from..offset` lies within the map (it was written by `append`); only
            // this journal writes through the map, and this slice is the only reference to
            // these bytes while it lives.
            #[allow(unsafe_code)]
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(self.segment.map.as_mut_ptr().add(from), length)
            };
            bytes.fill(0);
            self.segment
                .map
                .flush_range(from, length)
                .map_err(|source| JournalError::io(&self.segment.path, source))?;
            self.segment.offset = from;
            self.segment.synced_offset = from;
        } else {
            let segments = list_segments(&self.config.dir)?;
            let (holder_first_seq, holder) = segments
                .iter()
                .rev()
                .find(|(first, _)| *first <= seq)
                .cloned()
                .expect("the first segment starts at or before the first sequence held");
            let holder_version = scan_segment(&holder, holder_first_seq)?.header.version;
            let from = SEGMENT_HEADER_SIZE_BYTES
                + (seq - holder_first_seq) as usize * record_size_bytes(holder_version);
            // The later segments go first, newest first, and the directory is synced before
            // the holder is cut: a crash in between leaves the holder whole, a journal that
            // opens (its tail is cut again), never a segment that ends before the next one
            // starts.
            for (first, path) in segments.iter().rev() {
                if *first > holder_first_seq {
                    std::fs::remove_file(path).map_err(|source| JournalError::io(path, source))?;
                }
            }
            sync_dir(&self.config.dir)?;
            Self::zero_from(&holder, from)?;
            let (file, map) = map_active(&holder)?;
            let done = std::mem::replace(
                &mut self.segment,
                ActiveSegment::new(holder, file, map, from, holder_version),
            );
            self.prefaulter.retire(done);
            self.prefaulter.keep_ahead(&mut self.segment);
        }
        self.next_seq = seq;
        self.stats.next_seq.store(seq, Ordering::Relaxed);
        self.stats.durable_seq.store(seq - 1, Ordering::Relaxed);
        Ok(())
    }

    /// Empties the journal and restarts it at `next_seq`, durably: every segment file is
    /// removed (newest first, then the directory synced) and a new one that starts at
    /// `next_seq` is made. A cluster follower does this when it installs its leader's
    /// snapshot of the state after `next_seq - 1`, since what it held may disagree with the
    /// leader's log. A crash part way leaves the journal empty, or holding only what it held
    /// (the caller records that the reset is pending, and does it again).
    pub fn reset_to(&mut self, next_seq: u64) -> Result<(), JournalError> {
        assert!(next_seq >= 1, "sequences start at 1");
        if let Some(standby) = self.standby.take() {
            if let Ok(Ok(path)) = standby.ready.recv() {
                let _ = std::fs::remove_file(path);
            }
        }
        for (_, path) in list_segments(&self.config.dir)?.iter().rev() {
            std::fs::remove_file(path).map_err(|source| JournalError::io(path, source))?;
        }
        sync_dir(&self.config.dir)?;
        let next = Self::create_segment(&self.config, next_seq)?;
        let done = std::mem::replace(&mut self.segment, next);
        self.prefaulter.retire(done);
        self.prefaulter.keep_ahead(&mut self.segment);
        self.next_seq = next_seq;
        self.first_seq = next_seq;
        self.stats.next_seq.store(next_seq, Ordering::Relaxed);
        self.stats
            .durable_seq
            .store(next_seq - 1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes (or moves to `archive`) every segment whose records all come before `seq`.
    /// The active segment is never removed. Returns the segments removed or moved.
    pub fn retain_from(
        &mut self,
        seq: u64,
        archive: Option<&Path>,
    ) -> Result<Vec<PathBuf>, JournalError> {
        let removed = retain_segments(&self.config.dir, seq, archive)?;
        if let Some((first_seq, _)) = list_segments(&self.config.dir)?.first() {
            self.first_seq = *first_seq;
        }
        Ok(removed)
    }
}

/// Deletes the segments of the journal in `dir` that hold only records before `seq`, or
/// moves them to `archive`; returns their paths. The last segment (the one being written) is
/// never touched, nor one whose successor starts after `seq`, so this may run on any thread
/// while the journal is open (the snapshot writer runs it, never the Journaler).
pub fn retain_segments(
    dir: &Path,
    seq: u64,
    archive: Option<&Path>,
) -> Result<Vec<PathBuf>, JournalError> {
    let segments = list_segments(dir)?;
    let mut removed = Vec::new();
    for pair in segments.windows(2) {
        let ((_, path), (next_first_seq, _)) = (&pair[0], &pair[1]);
        if *next_first_seq > seq {
            break;
        }
        match archive {
            Some(folder) => {
                std::fs::create_dir_all(folder)
                    .map_err(|source| JournalError::io(folder, source))?;
                let target = folder.join(path.file_name().expect("segment files have names"));
                std::fs::rename(path, &target).map_err(|source| JournalError::io(path, source))?;
                removed.push(target);
            }
            None => {
                std::fs::remove_file(path).map_err(|source| JournalError::io(path, source))?;
                removed.push(path.clone());
            }
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Makes a (truncated) segment file at least `size_bytes` long, with real zeroed blocks.
fn extend_to(path: &Path, size_bytes: u64) -> Result<(), JournalError> {
    let file = File::options()
        .write(true)
        .open(path)
        .map_err(|source| JournalError::io(path, source))?;
    let length = file
        .metadata()
        .map_err(|source| JournalError::io(path, source))?
        .len();
    if length >= size_bytes {
        return Ok(());
    }
    // SAFETY: posix_fallocate only reads the descriptor, which `file` keeps open.
    #[allow(unsafe_code)]
    let result = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size_bytes as libc::off_t) };
    if result != 0 {
        return Err(JournalError::io(
            path,
            std::io::Error::from_raw_os_error(result),
        ));
    }
    file.sync_all()
        .map_err(|source| JournalError::io(path, source))
}

/// Gives the calling thread the lowest priority (nice 19): the helper's work has slack, and on
/// a machine with fewer cores than busy threads it must not take a core the stages need.
/// Best effort: a failure leaves the default priority.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: on Linux, setpriority with PRIO_PROCESS and 0 changes only the calling thread's
    // nice value; no memory is passed.
    #[allow(unsafe_code)]
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// The name ending of a segment file being created on the Journaler's thread.
const SEGMENT_TEMP_SUFFIX: &str = ".seg.tmp";
/// The name ending of the next segment, made ahead of need by the journal's segment maker.
/// It also ends in `.seg.tmp`, so a crash leaves nothing that open does not remove.
const STANDBY_TEMP_SUFFIX: &str = ".standby.seg.tmp";

/// Creates a segment file under a temporary name: full size with real blocks, its header,
/// synced. Returns the temporary path. In the `background` (the segment maker), zeros are
/// written a megabyte at a time with pauses, and the work stops, removing the file, once the
/// flag given is set.
fn prepare_segment_file(
    dir: &Path,
    segment_size_bytes: u64,
    first_seq: u64,
    suffix: &str,
    background: Option<&AtomicBool>,
) -> Result<PathBuf, JournalError> {
    let name = segment_file_name(first_seq);
    let temp = dir.join(format!(
        "{}{suffix}",
        name.strip_suffix(".seg").unwrap_or(&name)
    ));
    if background.is_some_and(|closing| closing.load(Ordering::Relaxed)) {
        return Err(closed_while_made(&temp));
    }
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|source| JournalError::io(&temp, source))?;
    // Real blocks, not a sparse file: appends never wait for block allocation and a full
    // disk is found now, not in the middle of a write through the map.
    // SAFETY: posix_fallocate only reads the descriptor, which `file` keeps open.
    #[allow(unsafe_code)]
    let result =
        unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, segment_size_bytes as libc::off_t) };
    if result != 0 {
        return Err(JournalError::io(
            &temp,
            std::io::Error::from_raw_os_error(result),
        ));
    }
    // Then write the zeros for real. Allocated but unwritten space is converted on the first
    // write through the map, inside the filesystem's journal: on ext4 that first write waited
    // for the filesystem's commit, up to about 20 ms a page here, on the Journaler's thread.
    // Written now, every page is also already in the page cache.
    let zeros = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < segment_size_bytes {
        let len = (segment_size_bytes - offset).min(zeros.len() as u64) as usize;
        std::os::unix::fs::FileExt::write_all_at(&file, &zeros[..len], offset)
            .map_err(|source| JournalError::io(&temp, source))?;
        offset += len as u64;
        if let Some(closing) = background {
            if closing.load(Ordering::Relaxed) {
                return Err(abandon(file, &temp));
            }
            // In the background, a megabyte at a time: the stages keep the cores.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    let header = SegmentHeader {
        first_seq,
        segment_size_bytes,
        version: JOURNAL_VERSION,
    };
    std::os::unix::fs::FileExt::write_all_at(&file, &header.encode(), 0)
        .and_then(|()| file.sync_all())
        .map_err(|source| JournalError::io(&temp, source))?;
    Ok(temp)
}

/// Removes a segment file whose making was abandoned; the error to answer with.
fn abandon(file: File, temp: &Path) -> JournalError {
    drop(file);
    let _ = std::fs::remove_file(temp);
    closed_while_made(temp)
}

fn closed_while_made(temp: &Path) -> JournalError {
    JournalError::io(
        temp,
        std::io::Error::other("the journal closed while this segment was made"),
    )
}

/// Gives a prepared segment file its name and maps it as the active segment. The directory
/// is synced when `sync_directory` is set (every policy but `none`, which promises nothing
/// after a crash: a lost rename leaves a temporary file that open removes, and the journal
/// then ends with the previous, full segment).
fn install_segment(
    dir: &Path,
    first_seq: u64,
    temp: &Path,
    sync_directory: bool,
) -> Result<ActiveSegment, JournalError> {
    let path = dir.join(segment_file_name(first_seq));
    std::fs::rename(temp, &path).map_err(|source| JournalError::io(&path, source))?;
    if sync_directory {
        sync_dir(dir)?;
    }
    let (file, map) = map_active(&path)?;
    Ok(ActiveSegment::new(
        path,
        file,
        map,
        SEGMENT_HEADER_SIZE_BYTES,
        JOURNAL_VERSION,
    ))
}

fn remove_temp_files(dir: &Path) -> Result<(), JournalError> {
    let entries = std::fs::read_dir(dir).map_err(|source| JournalError::io(dir, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| JournalError::io(dir, source))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("journal-") && name.ends_with(SEGMENT_TEMP_SUFFIX) {
            std::fs::remove_file(entry.path())
                .map_err(|source| JournalError::io(&entry.path(), source))?;
        }
    }
    Ok(())
}
