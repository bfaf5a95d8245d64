//! Byte layouts of journal segments and records (see `docs/journal-format.md`).

use ringmatch_proto::{Command, COMMAND_SIZE_BYTES, COMMAND_V1_SIZE_BYTES};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RMJOURNL";
/// Layout version of the segments this build writes: version 2 records hold version 2
/// (128-byte) commands. Segments of version 1 (64-byte commands) still read; a journal that
/// ends with one writes on in a new segment.
pub const JOURNAL_VERSION: u32 = 2;
/// The oldest segment version this build reads.
pub const JOURNAL_VERSION_OLDEST: u32 = 1;
/// Bytes of the segment header; records start here.
pub const SEGMENT_HEADER_SIZE_BYTES: usize = 64;
/// Bytes of a record header (length, CRC32C, sequence, timestamp).
pub const RECORD_HEADER_SIZE_BYTES: usize = 24;
/// Bytes of a record carrying one command, in the segments this build writes.
pub const RECORD_SIZE_BYTES: usize = RECORD_HEADER_SIZE_BYTES + COMMAND_SIZE_BYTES;

/// Bytes of a record in a segment of `version` (which [`SegmentHeader::decode`] accepted).
pub const fn record_size_bytes(version: u32) -> usize {
    match version {
        1 => RECORD_HEADER_SIZE_BYTES + COMMAND_V1_SIZE_BYTES,
        _ => RECORD_SIZE_BYTES,
    }
}

const _: () = assert!(RECORD_SIZE_BYTES % 8 == 0);
const _: () = assert!(record_size_bytes(1) % 8 == 0);

/// The header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence of the first record in the segment.
    pub first_seq: u64,
    /// Size of the whole (preallocated) segment file.
    pub segment_size_bytes: u64,
    /// Layout version of its records.
    pub version: u32,
}

impl SegmentHeader {
    /// The 64 header bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_SIZE_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_SIZE_BYTES];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..16].copy_from_slice(&(SEGMENT_HEADER_SIZE_BYTES as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.segment_size_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads and checks a header; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, String> {
        if bytes.len() < SEGMENT_HEADER_SIZE_BYTES {
            return Err(format!(
                "file is {} bytes, shorter than a header",
                bytes.len()
            ));
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err("bad magic (not a ringmatch journal segment)".into());
        }
        let version = u32_at(bytes, 8);
        if !(JOURNAL_VERSION_OLDEST..=JOURNAL_VERSION).contains(&version) {
            return Err(format!(
                "unsupported journal version {version} (this build reads \
                 {JOURNAL_VERSION_OLDEST} to {JOURNAL_VERSION})"
            ));
        }
        let stored_crc = u32_at(bytes, 60);
        if crc32c::crc32c(&bytes[0..60]) != stored_crc {
            return Err("segment header checksum mismatch".into());
        }
        if u32_at(bytes, 12) as usize != SEGMENT_HEADER_SIZE_BYTES
            || bytes[32..60].iter().any(|&b| b != 0)
        {
            return Err("segment header has unexpected fields".into());
        }
        Ok(SegmentHeader {
            first_seq: u64_at(bytes, 16),
            segment_size_bytes: u64_at(bytes, 24),
            version,
        })
    }
}

/// One journaled command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalRecord {
    /// Sequence of the command.
    pub seq: u64,
    /// Ingress timestamp, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The command.
    pub command: Command,
}

impl JournalRecord {
    /// Writes the record into `out` (exactly [`RECORD_SIZE_BYTES`] long), as this build's
    /// segments hold it.
    pub fn encode_into(&self, out: &mut [u8]) {
        assert_eq!(out.len(), RECORD_SIZE_BYTES);
        out[0..4].copy_from_slice(&(RECORD_SIZE_BYTES as u32).to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        let mut command = [0u8; COMMAND_SIZE_BYTES];
        self.command.encode(&mut command);
        out[24..RECORD_SIZE_BYTES].copy_from_slice(&command);
        let crc = crc32c::crc32c(&out[8..RECORD_SIZE_BYTES]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// What lies at an offset of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordAt {
    /// A zero length: no record was ever written here.
    End,
    /// A valid record of `length_bytes` bytes.
    Valid(JournalRecord, usize),
    /// Something that is not a valid record.
    Bad(String),
}

/// Reads the record at `offset` of `segment` (the whole segment's bytes), a segment of
/// `version`: its records are [`record_size_bytes`] long and hold commands of the same
/// version.
pub fn record_at(segment: &[u8], offset: usize, version: u32) -> RecordAt {
    let remaining = segment.len().saturating_sub(offset);
    if remaining < 4 {
        return RecordAt::End;
    }
    let length = u32_at(segment, offset) as usize;
    if length == 0 {
        return RecordAt::End;
    }
    if length != record_size_bytes(version) {
        return RecordAt::Bad(format!("bad record length {length}"));
    }
    if length > remaining {
        return RecordAt::Bad(format!(
            "record of {length} bytes runs past the segment end"
        ));
    }
    let bytes = &segment[offset..offset + length];
    if crc32c::crc32c(&bytes[8..]) != u32_at(bytes, 4) {
        return RecordAt::Bad("record checksum mismatch".into());
    }
    if u32::from(bytes[24]) != version {
        return RecordAt::Bad(format!(
            "record holds a command of version {} in a segment of version {version}",
            bytes[24]
        ));
    }
    match Command::decode(&bytes[24..]) {
        Ok(command) => RecordAt::Valid(
            JournalRecord {
                seq: u64_at(bytes, 8),
                timestamp_ns: u64_at(bytes, 16),
                command,
            },
            length,
        ),
        Err(error) => RecordAt::Bad(format!("record holds a bad command: {error}")),
    }
}

pub(crate) fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(raw)
}

pub(crate) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(raw)
}

/// File name of the segment whose first record has sequence `first_seq`.
pub fn segment_file_name(first_seq: u64) -> String {
    format!("journal-{first_seq:020}.seg")
}

/// The first sequence named by a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("journal-")?.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmatch_proto::Side;

    #[test]
    fn a_record_round_trips_and_any_flipped_bit_is_caught() {
        let record = JournalRecord {
            seq: 42,
            timestamp_ns: 7,
            command: Command::limit(3, 1, Side::Buy, 100, 5),
        };
        let mut bytes = vec![0u8; RECORD_SIZE_BYTES];
        record.encode_into(&mut bytes);
        assert_eq!(
            record_at(&bytes, 0, JOURNAL_VERSION),
            RecordAt::Valid(record, RECORD_SIZE_BYTES)
        );
        for bit in 0..RECORD_SIZE_BYTES * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(record_at(&damaged, 0, JOURNAL_VERSION), RecordAt::Valid(..)),
                "bit {bit}"
            );
        }
        // A segment of another version has records of another length.
        assert!(matches!(record_at(&bytes, 0, 1), RecordAt::Bad(_)));
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(17), "journal-00000000000000000017.seg");
        assert_eq!(parse_segment_file_name(&segment_file_name(17)), Some(17));
        assert_eq!(parse_segment_file_name("journal-17.seg"), None);
    }
}
