//! The embedded output sink: an append-only file of 128-byte event records.
//!
//! Layout (`docs/events-file-format.md`): a 64-byte header (magic `RMEVENTS`, version, record
//! size) and then event records back to back, in (sequence, index) order. The file is derived
//! data: what the journal still holds can be rebuilt from it, so the Publisher writes it with
//! plain `write` calls and never waits for a sync. The snapshot writer syncs it (through
//! [`EventsFile::sync_handle`]) before each snapshot, since start-up cannot rebuild the
//! events of commands before the snapshot it starts from. On open a partial last record is
//! cut, and the last complete record gives the resume point.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ringmatch_proto::{Event, EVENT_SIZE_BYTES};

/// First bytes of an events file.
pub const EVENTS_MAGIC: [u8; 8] = *b"RMEVENTS";
/// Layout version of the events file.
pub const EVENTS_FILE_VERSION: u32 = 1;
/// Bytes before the first record.
pub const EVENTS_HEADER_SIZE_BYTES: u64 = 64;

fn header() -> [u8; EVENTS_HEADER_SIZE_BYTES as usize] {
    let mut out = [0u8; EVENTS_HEADER_SIZE_BYTES as usize];
    out[0..8].copy_from_slice(&EVENTS_MAGIC);
    out[8..12].copy_from_slice(&EVENTS_FILE_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(EVENT_SIZE_BYTES as u32).to_le_bytes());
    out
}

/// Problems with the events file.
#[derive(Debug, thiserror::Error)]
pub enum EventsFileError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error from the system.
        source: std::io::Error,
    },
    /// The file is not an events file of this version, or holds a bad record mid-file.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// (sequence, index) of an event: the total order of the output.
pub type EventPosition = (u64, u32);

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsFileReport {
    /// Complete records in the file.
    pub records_count: u64,
    /// Position of the last record: events at or before it are already out.
    pub resume_point: Option<EventPosition>,
    /// Bytes cut from a partial or invalid tail.
    pub cut_bytes_count: u64,
    /// Records dropped because they came from commands the journal no longer holds.
    pub dropped_ahead_count: u64,
}

/// Appends events, skipping those already in the file.
pub struct EventsFile {
    path: PathBuf,
    writer: BufWriter<File>,
    resume_point: Option<EventPosition>,
    last_event: Option<Event>,
    written_count: u64,
    skipped_count: u64,
    /// The newest event pushed (skipped or written), or the last one held at open.
    last_position: Option<EventPosition>,
    report: EventsFileReport,
}

impl EventsFile {
    /// Opens or creates `path`; cuts a partial tail; drops records of commands at or after
    /// `journal_next_seq` (the journal lost them, so they will be produced again differently).
    pub fn open(
        path: &Path,
        journal_next_seq: u64,
    ) -> Result<(EventsFile, EventsFileReport), EventsFileError> {
        let io = |source| EventsFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |problem: String| EventsFileError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut length = file.metadata().map_err(io)?.len();
        if length < EVENTS_HEADER_SIZE_BYTES {
            file.set_len(0).map_err(io)?;
            file.write_all(&header()).map_err(io)?;
            file.sync_all().map_err(io)?;
            length = EVENTS_HEADER_SIZE_BYTES;
        }
        let mut existing = [0u8; EVENTS_HEADER_SIZE_BYTES as usize];
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.read_exact(&mut existing).map_err(io)?;
        if existing != header() {
            return Err(invalid(
                "not a version 1 ringmatch events file (bad header)".into(),
            ));
        }
        let record_size = EVENT_SIZE_BYTES as u64;
        let complete_end = EVENTS_HEADER_SIZE_BYTES
            + (length - EVENTS_HEADER_SIZE_BYTES) / record_size * record_size;
        let mut cut_bytes_count = length - complete_end;
        let mut end = complete_end;
        let mut dropped_ahead_count = 0;
        let mut last_event = None;
        // Walk back from the end: an undecodable last record is a torn write and is cut; so
        // are records of commands the journal does not hold.
        while end > EVENTS_HEADER_SIZE_BYTES {
            let mut record = [0u8; EVENT_SIZE_BYTES];
            file.seek(SeekFrom::Start(end - record_size)).map_err(io)?;
            file.read_exact(&mut record).map_err(io)?;
            match Event::decode(&record) {
                Ok(event) if event.seq < journal_next_seq => {
                    last_event = Some(event);
                    break;
                }
                Ok(_) => dropped_ahead_count += 1,
                Err(_) if end == complete_end => cut_bytes_count += record_size,
                Err(error) => {
                    return Err(invalid(format!(
                        "bad record at offset {}: {error}",
                        end - record_size
                    )))
                }
            }
            end -= record_size;
        }
        file.set_len(end).map_err(io)?;
        file.seek(SeekFrom::Start(end)).map_err(io)?;
        let resume_point = last_event.map(|event| (event.seq, event.index));
        let report = EventsFileReport {
            records_count: (end - EVENTS_HEADER_SIZE_BYTES) / record_size,
            resume_point,
            cut_bytes_count,
            dropped_ahead_count,
        };
        Ok((
            EventsFile {
                path: path.to_path_buf(),
                writer: BufWriter::with_capacity(1 << 16, file),
                resume_point,
                last_event,
                written_count: 0,
                skipped_count: 0,
                last_position: resume_point,
                report: report.clone(),
            },
            report,
        ))
    }

    /// Writes `event` unless it is at or before the resume point. A replayed event that is
    /// the last one already in the file must equal it byte for byte: anything else means the
    /// replay is not deterministic (or the configuration changed) and the output would be
    /// wrong, so that is a panic.
    pub fn push(&mut self, event: &Event) -> Result<(), EventsFileError> {
        self.last_position = Some((event.seq, event.index));
        if let Some(resume_point) = self.resume_point {
            let position = (event.seq, event.index);
            if position <= resume_point {
                if position == resume_point {
                    assert_eq!(
                        Some(*event),
                        self.last_event,
                        "replay produced a different event at the resume point"
                    );
                }
                self.skipped_count += 1;
                return Ok(());
            }
            self.resume_point = None;
        }
        self.writer
            .write_all(&event.to_bytes())
            .map_err(|source| EventsFileError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.written_count += 1;
        Ok(())
    }

    /// Hands buffered records to the operating system (no fsync: the file is derived data).
    pub fn flush(&mut self) -> Result<(), EventsFileError> {
        self.writer.flush().map_err(|source| EventsFileError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The newest event pushed (skipped or written), or the last one the file held at open.
    pub fn last_event_position(&self) -> Option<EventPosition> {
        self.last_position
    }

    /// A second handle on the file, for syncing it from another thread: a sync through it
    /// makes durable everything written (and flushed) through this one before the sync.
    pub fn sync_handle(&self) -> Result<File, EventsFileError> {
        self.writer
            .get_ref()
            .try_clone()
            .map_err(|source| EventsFileError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Events written since open.
    pub fn written_count(&self) -> u64 {
        self.written_count
    }

    /// What opening the file found.
    pub fn report(&self) -> &EventsFileReport {
        &self.report
    }

    /// Replayed events skipped since open.
    pub fn skipped_count(&self) -> u64 {
        self.skipped_count
    }
}

impl Drop for EventsFile {
    fn drop(&mut self) {
        // Best effort: the records are derived data and are rebuilt from the journal anyway.
        let _ = self.writer.flush();
    }
}

/// Reads every event of an events file (for `ringmatch events dump` and tests).
pub fn read_events(path: &Path) -> Result<Vec<Event>, EventsFileError> {
    let bytes = std::fs::read(path).map_err(|source| EventsFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |problem: String| EventsFileError::Invalid {
        path: path.to_path_buf(),
        problem,
    };
    if bytes.len() < EVENTS_HEADER_SIZE_BYTES as usize
        || bytes[..EVENTS_HEADER_SIZE_BYTES as usize] != header()
    {
        return Err(invalid(
            "not a version 1 ringmatch events file (bad header)".into(),
        ));
    }
    bytes[EVENTS_HEADER_SIZE_BYTES as usize..]
        .chunks(EVENT_SIZE_BYTES)
        .enumerate()
        .map(|(index, chunk)| {
            Event::decode(chunk).map_err(|error| invalid(format!("record {index}: {error}")))
        })
        .collect()
}
