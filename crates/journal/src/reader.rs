//! Streams journal records from any sequence, checking each one again (length, CRC32C and
//! sequence continuity), as replay and catch-up must not trust what the writer checked.
//! Records have one fixed size, so a reader starts at its first record's offset in its
//! segment rather than reading the segment's earlier records (a cluster leader reads the
//! recent tail to send it, many times a second).

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::format::{
    record_at, JournalRecord, RecordAt, JOURNAL_VERSION, SEGMENT_HEADER_SIZE_BYTES,
};
use crate::journal::list_segments;
use crate::JournalError;

/// An iterator over records, in sequence order, from a starting sequence to the end.
pub struct JournalReader {
    segments: Vec<(u64, PathBuf)>,
    segment_index: usize,
    map: Option<Mmap>,
    offset: usize,
    /// Layout version of the loaded segment.
    version: u32,
    next_seq: u64,
    from_seq: u64,
    failed: bool,
    /// For the first segment loaded: go straight to the record of `from_seq`.
    seek: bool,
}

impl JournalReader {
    /// A reader over `dir` yielding records with sequence `from_seq` onward. Fails if the
    /// journal does not reach back to `from_seq` (unless it is empty from there on).
    pub fn open(dir: &Path, from_seq: u64) -> Result<JournalReader, JournalError> {
        let segments = list_segments(dir)?;
        let first_seq = segments.first().map_or(from_seq, |(first, _)| *first);
        if from_seq < first_seq {
            return Err(JournalError::Missing {
                seq: from_seq,
                first_seq,
                next_seq: first_seq,
            });
        }
        // Start in the last segment that begins at or before `from_seq`.
        let segment_index = segments
            .iter()
            .rposition(|(first, _)| *first <= from_seq)
            .unwrap_or(0);
        let next_seq = segments
            .get(segment_index)
            .map_or(from_seq, |(first, _)| *first);
        Ok(JournalReader {
            segments,
            segment_index,
            map: None,
            offset: SEGMENT_HEADER_SIZE_BYTES,
            version: JOURNAL_VERSION,
            next_seq,
            from_seq,
            failed: false,
            seek: true,
        })
    }

    /// Sequence of the next record that would be read.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.max(self.from_seq)
    }

    fn load(&mut self) -> Result<bool, JournalError> {
        let Some((first_seq, path)) = self.segments.get(self.segment_index) else {
            return Ok(false);
        };
        if *first_seq != self.next_seq {
            return Err(JournalError::Gap {
                path: path.clone(),
                expected: self.next_seq,
                found: *first_seq,
            });
        }
        let file = std::fs::File::open(path).map_err(|source| JournalError::io(path, source))?;
        // SAFETY: segment files are only written through the journal by the lock holder; every
        // record read through this map is checked by length, CRC and sequence before use.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(|source| JournalError::io(path, source))?;
        let header = crate::format::SegmentHeader::decode(&map).map_err(|problem| {
            JournalError::BadSegment {
                path: path.clone(),
                problem,
            }
        })?;
        self.version = header.version;
        self.offset = SEGMENT_HEADER_SIZE_BYTES;
        if std::mem::take(&mut self.seek) && self.from_seq > self.next_seq {
            // The record of `from_seq`, if this segment holds it, is at a known offset; what
            // lies there is checked like any record (a different sequence is a gap).
            let skipped = (self.from_seq - self.next_seq) as usize;
            let offset = SEGMENT_HEADER_SIZE_BYTES
                + skipped * crate::format::record_size_bytes(header.version);
            if offset <= map.len() {
                self.offset = offset;
                self.next_seq = self.from_seq;
            }
        }
        self.map = Some(map);
        Ok(true)
    }

    fn read_next(&mut self) -> Result<Option<JournalRecord>, JournalError> {
        loop {
            if self.map.is_none() && !self.load()? {
                return Ok(None);
            }
            let map = self.map.as_ref().expect("loaded above");
            match record_at(map, self.offset, self.version) {
                RecordAt::Valid(record, length) => {
                    let path = &self.segments[self.segment_index].1;
                    if record.seq != self.next_seq {
                        return Err(JournalError::Gap {
                            path: path.clone(),
                            expected: self.next_seq,
                            found: record.seq,
                        });
                    }
                    self.offset += length;
                    self.next_seq += 1;
                    if record.seq >= self.from_seq {
                        return Ok(Some(record));
                    }
                }
                RecordAt::End => {
                    // The end of this segment's data: the next segment must go on from here.
                    if self.segment_index + 1 >= self.segments.len() {
                        return Ok(None);
                    }
                    self.segment_index += 1;
                    self.map = None;
                }
                RecordAt::Bad(problem) => {
                    return Err(JournalError::Corrupt {
                        path: self.segments[self.segment_index].1.clone(),
                        offset: self.offset as u64,
                        seq: self.next_seq,
                        problem,
                    });
                }
            }
        }
    }
}

impl Iterator for JournalReader {
    type Item = Result<JournalRecord, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.read_next() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => None,
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}
