//! The journal against real files: append and replay, roll-over, reopen, torn tails, damage
//! before the tail, the directory lock, retention, pages mapped ahead of the writer, and
//! journals checked in by versions 1 and 2 (a version 1 journal is written on in version 2).

use std::path::{Path, PathBuf};

use ringmatch_journal::{
    list_segments, DamagePolicy, Durability, Journal, JournalConfig, JournalError, JournalReader,
    JournalRecord, RECORD_SIZE_BYTES, SEGMENT_HEADER_SIZE_BYTES,
};
use ringmatch_proto::{Command, Side};

fn record(seq: u64) -> JournalRecord {
    let side = if seq % 2 == 0 { Side::Buy } else { Side::Sell };
    let mut command = Command::limit(
        seq as u32 % 7 + 1,
        1,
        side,
        100 + (seq % 13) as i64,
        seq % 5 + 1,
    );
    command.timestamp_ns = 1_000 * seq;
    JournalRecord {
        seq,
        timestamp_ns: 1_000 * seq,
        command,
    }
}

fn config(dir: &Path, records_per_segment: usize, durability: Durability) -> JournalConfig {
    JournalConfig {
        dir: dir.to_path_buf(),
        segment_size_bytes: (SEGMENT_HEADER_SIZE_BYTES + records_per_segment * RECORD_SIZE_BYTES)
            as u64,
        durability,
    }
}

fn write(dir: &Path, count: u64, records_per_segment: usize) {
    let (mut journal, report) = Journal::open(
        config(dir, records_per_segment, Durability::Batch),
        DamagePolicy::Refuse,
    )
    .unwrap();
    for seq in report.next_seq..report.next_seq + count {
        journal.append(&record(seq)).unwrap();
        if seq % 10 == 0 {
            journal.commit().unwrap();
        }
    }
    journal.commit().unwrap();
}

fn read_all(dir: &Path, from_seq: u64) -> Vec<JournalRecord> {
    JournalReader::open(dir, from_seq)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn last_segment(dir: &Path) -> PathBuf {
    list_segments(dir).unwrap().last().unwrap().1.clone()
}

#[test]
fn records_replay_from_any_sequence_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 95, 10);
    assert_eq!(list_segments(dir.path()).unwrap().len(), 10);
    write(dir.path(), 30, 10);
    let all = read_all(dir.path(), 1);
    assert_eq!(all.len(), 125);
    assert!(all
        .iter()
        .enumerate()
        .all(|(index, r)| *r == record(index as u64 + 1)));
    for from in [1u64, 9, 10, 11, 57, 125] {
        let tail = read_all(dir.path(), from);
        assert_eq!(tail.first().map(|r| r.seq), Some(from));
        assert_eq!(tail.len() as u64, 126 - from);
    }
    assert!(read_all(dir.path(), 126).is_empty());
    let (journal, report) = Journal::open(
        config(dir.path(), 10, Durability::None),
        DamagePolicy::Refuse,
    )
    .unwrap();
    assert_eq!(
        (report.first_seq, report.next_seq, journal.next_seq()),
        (1, 126, 126)
    );
    assert!(report.tail_cut.is_none());
}

/// A reader that starts in the middle of a segment goes straight to its first record, and
/// still checks it: a damaged record there is an error, and the records after it read.
#[test]
fn a_reader_from_mid_segment_checks_the_record_it_starts_at() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 100, 50);
    let segment = &list_segments(dir.path()).unwrap()[1];
    assert_eq!(segment.0, 51);
    // Damage the record of sequence 57 (the seventh of the second segment).
    let mut bytes = std::fs::read(&segment.1).unwrap();
    bytes[SEGMENT_HEADER_SIZE_BYTES + 6 * RECORD_SIZE_BYTES + 20] ^= 0xff;
    std::fs::write(&segment.1, &bytes).unwrap();
    let from_57: Vec<_> = JournalReader::open(dir.path(), 57).unwrap().collect();
    assert!(
        matches!(
            from_57.first(),
            Some(Err(JournalError::Corrupt { seq: 57, .. }))
        ),
        "{from_57:?}"
    );
    let from_58 = read_all(dir.path(), 58);
    assert_eq!(from_58.len(), 43);
    assert_eq!(from_58[0], record(58));
    // Past the end: nothing.
    assert!(read_all(dir.path(), 101).is_empty());
}

#[test]
fn segments_are_preallocated_with_real_blocks() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 3, 1000);
    let path = last_segment(dir.path());
    let metadata = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        metadata.len(),
        (SEGMENT_HEADER_SIZE_BYTES + 1000 * RECORD_SIZE_BYTES) as u64
    );
    assert!(
        metadata.blocks() * 512 >= metadata.len(),
        "sparse segment: {} blocks",
        metadata.blocks()
    );
}

#[test]
fn a_torn_tail_is_cut_and_reported() {
    fn half_written(bytes: &mut [u8], offset: usize) {
        bytes[offset + 40..offset + RECORD_SIZE_BYTES].fill(0);
    }
    fn flipped_byte(bytes: &mut [u8], offset: usize) {
        bytes[offset + 30] ^= 0x10;
    }
    fn zeroed_length(bytes: &mut [u8], offset: usize) {
        bytes[offset..offset + 4].fill(0);
    }
    fn garbage_length(bytes: &mut [u8], offset: usize) {
        bytes[offset] = 0x77;
    }
    type Damage = fn(&mut [u8], usize);
    let cases: [(&str, Damage); 4] = [
        ("half-written record", half_written),
        ("flipped byte", flipped_byte),
        ("zeroed length", zeroed_length),
        ("garbage length", garbage_length),
    ];
    for (name, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 25, 10);
        let path = last_segment(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        // The last record (seq 25) is the 5th in the third segment.
        let offset = SEGMENT_HEADER_SIZE_BYTES + 4 * RECORD_SIZE_BYTES;
        damage(&mut bytes, offset);
        std::fs::write(&path, &bytes).unwrap();

        let (journal, report) = Journal::open(
            config(dir.path(), 10, Durability::Batch),
            DamagePolicy::Refuse,
        )
        .unwrap();
        assert_eq!(report.next_seq, 25, "{name}");
        let cut = report
            .tail_cut
            .unwrap_or_else(|| panic!("{name}: no cut reported"));
        assert_eq!((cut.offset, cut.from_seq), (offset as u64, 25), "{name}");
        assert!(cut.bytes_count > 0 || name == "zeroed length", "{name}");
        drop(journal);
        assert_eq!(read_all(dir.path(), 1).len(), 24, "{name}");
        // Appending after the cut continues the sequence, and reopening is clean.
        write(dir.path(), 3, 10);
        assert_eq!(
            read_all(dir.path(), 20)
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            (20..28).collect::<Vec<_>>()
        );
        let (_, report) = Journal::open(
            config(dir.path(), 10, Durability::Batch),
            DamagePolicy::Refuse,
        )
        .unwrap();
        assert!(report.tail_cut.is_none(), "{name}");
    }
}

#[test]
fn a_truncated_last_segment_is_cut_at_its_last_whole_record_and_extended() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 25, 10);
    let path = last_segment(dir.path());
    // Keep the header, four whole records and half of the fifth.
    let keep = SEGMENT_HEADER_SIZE_BYTES + 4 * RECORD_SIZE_BYTES + RECORD_SIZE_BYTES / 2;
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(keep as u64)
        .unwrap();
    let (journal, report) = Journal::open(
        config(dir.path(), 10, Durability::Batch),
        DamagePolicy::Refuse,
    )
    .unwrap();
    assert_eq!(report.next_seq, 25);
    assert!(report.tail_cut.is_some());
    drop(journal);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        (SEGMENT_HEADER_SIZE_BYTES + 10 * RECORD_SIZE_BYTES) as u64
    );
    write(dir.path(), 6, 10);
    assert_eq!(read_all(dir.path(), 1).len(), 30);
}

#[test]
fn damage_before_the_tail_stops_start_up_unless_the_operator_cuts() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 35, 10);
    let segments = list_segments(dir.path()).unwrap();
    let damaged = segments[1].1.clone();
    let mut bytes = std::fs::read(&damaged).unwrap();
    let offset = SEGMENT_HEADER_SIZE_BYTES + 3 * RECORD_SIZE_BYTES;
    bytes[offset + 50] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();

    let error = match Journal::open(
        config(dir.path(), 10, Durability::Batch),
        DamagePolicy::Refuse,
    ) {
        Err(error) => error,
        Ok(_) => panic!("damage before the tail was accepted"),
    };
    match &error {
        JournalError::Corrupt {
            path,
            offset: at,
            seq,
            ..
        } => {
            assert_eq!((path, *at, *seq), (&damaged, offset as u64, 14));
        }
        other => panic!("unexpected error {other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("offset") && message.contains("14") && message.contains("journal-"),
        "{message}"
    );
    // Nothing was changed by the refusal.
    assert_eq!(std::fs::read(&damaged).unwrap(), bytes);
    assert_eq!(list_segments(dir.path()).unwrap().len(), 4);
    // The replay reader refuses too.
    let replay: Vec<_> = JournalReader::open(dir.path(), 1).unwrap().collect();
    assert!(matches!(
        replay.last(),
        Some(Err(JournalError::Corrupt { .. }))
    ));

    let (journal, report) = Journal::open(
        config(dir.path(), 10, Durability::Batch),
        DamagePolicy::CutAtDamage,
    )
    .unwrap();
    let cut = report.damage_cut.expect("damage cut reported");
    assert_eq!((cut.from_seq, cut.quarantined.len()), (14, 2));
    assert_eq!(journal.next_seq(), 14);
    drop(journal);
    assert_eq!(read_all(dir.path(), 1).len(), 13);
    assert!(dir
        .path()
        .join("quarantine")
        .join(cut.quarantined[0].file_name().unwrap())
        .exists());
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_journal, _) = Journal::open(
        config(dir.path(), 10, Durability::None),
        DamagePolicy::Refuse,
    )
    .unwrap();
    let second = Journal::open(
        config(dir.path(), 10, Durability::None),
        DamagePolicy::Refuse,
    );
    assert!(matches!(second, Err(JournalError::Locked(_))));
}

#[test]
fn retention_removes_or_archives_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 45, 10);
    let (mut journal, _) = Journal::open(
        config(dir.path(), 10, Durability::Batch),
        DamagePolicy::Refuse,
    )
    .unwrap();
    let archive = dir.path().join("archive");
    // Segments start at 1, 11, 21, 31, 41: keeping from 25 drops the first two.
    let moved = journal.retain_from(25, Some(&archive)).unwrap();
    assert_eq!(moved.len(), 2);
    assert_eq!(journal.first_seq(), 21);
    assert_eq!(read_all(dir.path(), 21).len(), 25);
    assert!(matches!(
        JournalReader::open(dir.path(), 5),
        Err(JournalError::Missing { .. })
    ));
    let removed = journal.retain_from(45, None).unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(list_segments(&archive).unwrap().len(), 2);
}

/// A journal written by format version 1 (64-byte commands) is checked in: this build
/// reads it.
#[test]
fn the_checked_in_version_1_journal_still_reads() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/journal-v1");
    let records = read_all(&fixture, 1);
    assert_eq!(records.len(), 12);
    assert!(records
        .iter()
        .enumerate()
        .all(|(index, r)| *r == record(index as u64 + 1)));
    assert_eq!(
        read_all(&fixture, 10).len(),
        3,
        "a reader seeks in a version 1 segment"
    );
    let inspection = ringmatch_journal::inspect(&fixture).unwrap();
    assert_eq!((inspection.next_seq, inspection.torn_tail), (13, None));
}

/// A journal that ends with a version 1 segment writes on in a new version 2 segment, reads
/// through both, and cuts back into the old one (a cluster follower's overridden tail) and
/// writes on from there in a new segment again.
#[test]
fn a_version_1_journal_is_written_on_in_version_2_segments() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/journal-v1");
    let dir = tempfile::tempdir().unwrap();
    for (_, path) in list_segments(&fixture).unwrap() {
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    write(dir.path(), 8, 8);
    let segments = list_segments(dir.path()).unwrap();
    let firsts: Vec<u64> = segments.iter().map(|(first, _)| *first).collect();
    assert_eq!(firsts, [1, 9, 13]);
    let versions: Vec<u8> = segments
        .iter()
        .map(|(_, path)| std::fs::read(path).unwrap()[8])
        .collect();
    assert_eq!(versions, [1, 1, 2]);
    let records = read_all(dir.path(), 1);
    assert_eq!(records.len(), 20);
    assert!(records
        .iter()
        .enumerate()
        .all(|(index, r)| *r == record(index as u64 + 1)));
    assert_eq!(read_all(dir.path(), 15).len(), 6);

    let (mut journal, report) = Journal::open(
        config(dir.path(), 8, Durability::Batch),
        DamagePolicy::Refuse,
    )
    .unwrap();
    assert_eq!(report.next_seq, 21);
    journal.truncate_from(11).unwrap();
    for seq in 11..=14 {
        journal.append(&record(seq)).unwrap();
    }
    journal.commit().unwrap();
    drop(journal);
    let firsts: Vec<u64> = list_segments(dir.path())
        .unwrap()
        .iter()
        .map(|(first, _)| *first)
        .collect();
    assert_eq!(firsts, [1, 9, 11]);
    let records = read_all(dir.path(), 1);
    assert_eq!(records.len(), 14);
    assert!(records
        .iter()
        .enumerate()
        .all(|(index, r)| *r == record(index as u64 + 1)));
}

/// A journal of the current layout (version 2) is checked in too. This build must read it,
/// and must write the same bytes for the same records. `UPDATE_FIXTURES=1` rewrites it (only
/// right together with a format version bump).
#[test]
fn the_checked_in_version_2_journal_still_reads_and_matches() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/journal-v2");
    let fresh = tempfile::tempdir().unwrap();
    write(fresh.path(), 12, 8);
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::create_dir_all(&fixture).unwrap();
        for (_, path) in list_segments(&fixture).unwrap() {
            std::fs::remove_file(path).unwrap();
        }
        for (_, path) in list_segments(fresh.path()).unwrap() {
            std::fs::copy(&path, fixture.join(path.file_name().unwrap())).unwrap();
        }
    }
    let records = read_all(&fixture, 1);
    assert_eq!(records.len(), 12);
    assert!(records
        .iter()
        .enumerate()
        .all(|(index, r)| *r == record(index as u64 + 1)));
    let checked_in = list_segments(&fixture).unwrap();
    let written = list_segments(fresh.path()).unwrap();
    assert_eq!(checked_in.len(), written.len());
    for ((_, a), (_, b)) in checked_in.iter().zip(&written) {
        let bytes = std::fs::read(a).unwrap();
        assert_eq!(&bytes[8..12], &2u32.to_le_bytes());
        assert_eq!(
            bytes,
            std::fs::read(b).unwrap(),
            "journal layout changed: bump JOURNAL_VERSION"
        );
    }
}

/// Minor page faults of the calling thread so far (`/proc/thread-self/stat`, field 10).
fn minor_faults_of_this_thread() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name.split(' ').nth(7).unwrap().parse().unwrap()
}

#[test]
fn appends_find_the_pages_ahead_already_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, report) = Journal::open(
        config(dir.path(), 400_000, Durability::None),
        DamagePolicy::Refuse,
    )
    .unwrap();
    if !journal.settle_prefault() {
        // Linux before 5.14 has no MADV_POPULATE_WRITE; appends fault pages in themselves.
        eprintln!("prefaulting is unavailable on this kernel; nothing to check");
        return;
    }
    // 4 MiB of records, inside the range kept mapped ahead of the writer.
    let count = ((4 << 20) / RECORD_SIZE_BYTES) as u64;
    let pages = count as usize * RECORD_SIZE_BYTES / 4096;
    let before = minor_faults_of_this_thread();
    for seq in report.next_seq..report.next_seq + count {
        journal.append(&record(seq)).unwrap();
    }
    let faults = minor_faults_of_this_thread() - before;
    // Without the prefaulter every page faults once: about `pages` faults.
    assert!(
        faults < pages as u64 / 10,
        "{faults} page faults while writing {pages} pages"
    );
    drop(journal);
    assert_eq!(read_all(dir.path(), report.next_seq).len() as u64, count);
}

fn standby_file(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("journal-{first_seq:020}.standby.seg.tmp"))
}

#[test]
fn closing_abandons_a_next_segment_still_being_made() {
    // Past half of a 128 MiB segment the next one is asked for; the journal closes at once.
    // Making the next segment (128 MiB of zeros, a megabyte at a time) stops and its file is
    // removed: closing does not wait for a segment nobody will use.
    let dir = tempfile::tempdir().unwrap();
    let records_per_segment = (128 << 20) / RECORD_SIZE_BYTES;
    let (mut journal, report) = Journal::open(
        config(dir.path(), records_per_segment, Durability::None),
        DamagePolicy::Refuse,
    )
    .unwrap();
    let half = (records_per_segment / 2) as u64 + 1;
    for seq in report.next_seq..report.next_seq + half {
        journal.append(&record(seq)).unwrap();
    }
    drop(journal);
    let standby = standby_file(dir.path(), report.next_seq + records_per_segment as u64);
    assert!(
        !standby.exists(),
        "{} was left behind by a closed journal",
        standby.display()
    );
    // The journal reopens with every record.
    assert_eq!(read_all(dir.path(), report.next_seq).len() as u64, half);
}

#[test]
fn the_next_segment_is_made_once_the_active_one_is_half_full_and_a_roll_installs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(
        config(dir.path(), 10, Durability::None),
        DamagePolicy::Refuse,
    )
    .unwrap();
    for seq in 1..=4 {
        journal.append(&record(seq)).unwrap();
    }
    journal.settle_prefault();
    assert!(
        !standby_file(dir.path(), 11).exists(),
        "asked for too early"
    );
    // The fifth of ten records makes the segment half full: the segment that starts at 11 is
    // made by the segment maker under a temporary name, full size and zeroed.
    journal.append(&record(5)).unwrap();
    journal.settle_prefault();
    let standby = standby_file(dir.path(), 11);
    assert!(standby.exists());
    let bytes = std::fs::read(&standby).unwrap();
    assert_eq!(
        bytes.len(),
        SEGMENT_HEADER_SIZE_BYTES + 10 * RECORD_SIZE_BYTES
    );
    assert!(bytes[SEGMENT_HEADER_SIZE_BYTES..]
        .iter()
        .all(|byte| *byte == 0));
    assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
    for seq in 6..=11 {
        journal.append(&record(seq)).unwrap();
    }
    // The roll gave it its name.
    assert!(!standby.exists());
    assert_eq!(
        last_segment(dir.path()),
        dir.path().join("journal-00000000000000000011.seg")
    );
    drop(journal);
    let expected: Vec<JournalRecord> = (1..=11).map(record).collect();
    assert_eq!(read_all(dir.path(), 1), expected);
}

#[test]
fn a_standby_segment_left_behind_is_removed_on_open_and_the_journal_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 7, 10);
    // A crash while the next segment was being made leaves it behind, partly written (a
    // journal that closes while it is being made removes it itself).
    std::fs::write(standby_file(dir.path(), 11), vec![0u8; 4096]).unwrap();
    // Reopened (as after a crash): the leftover is removed at once...
    let (journal, report) = Journal::open(
        config(dir.path(), 10, Durability::Batch),
        DamagePolicy::Refuse,
    )
    .unwrap();
    assert_eq!(report.next_seq, 8);
    assert!(!standby_file(dir.path(), 11).exists());
    drop(journal);
    // ...and the journal goes on across the next roll.
    write(dir.path(), 10, 10);
    assert!(!standby_file(dir.path(), 11).exists());
    assert_eq!(
        list_segments(dir.path())
            .unwrap()
            .iter()
            .map(|(first, _)| *first)
            .collect::<Vec<_>>(),
        vec![1, 11]
    );
    let expected: Vec<JournalRecord> = (1..=17).map(record).collect();
    assert_eq!(read_all(dir.path(), 1), expected);
}

/// A cut of the tail (a cluster follower's overridden entries), within the active segment
/// and across segments: the cut records never come back, and appends go on from the cut.
#[test]
fn a_cut_tail_is_gone_after_a_reopen_and_appends_go_on_from_it() {
    let other = |seq: u64| {
        let mut replaced = record(seq);
        replaced.command.qty += 100;
        replaced
    };
    for (cut_at, expect_segments) in [(9u64, 3usize), (3, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(
            config(dir.path(), 4, Durability::Batch),
            DamagePolicy::Refuse,
        )
        .unwrap();
        for seq in 1..=10 {
            journal.append(&record(seq)).unwrap();
        }
        journal.commit().unwrap();
        journal.truncate_from(cut_at).unwrap();
        assert_eq!(journal.next_seq(), cut_at);
        assert_eq!(list_segments(dir.path()).unwrap().len(), expect_segments);
        for seq in cut_at..=12 {
            journal.append(&other(seq)).unwrap();
        }
        journal.commit().unwrap();
        drop(journal);
        let expected: Vec<JournalRecord> = (1..cut_at)
            .map(record)
            .chain((cut_at..=12).map(other))
            .collect();
        assert_eq!(read_all(dir.path(), 1), expected, "cut at {cut_at}");
        let (journal, report) = Journal::open(
            config(dir.path(), 4, Durability::Batch),
            DamagePolicy::Refuse,
        )
        .unwrap();
        assert_eq!(
            (report.next_seq, report.tail_cut),
            (13, None),
            "cut at {cut_at}"
        );
        drop(journal);
        // A cut with nothing written after it is as final.
        let (mut journal, _) = Journal::open(
            config(dir.path(), 4, Durability::Batch),
            DamagePolicy::Refuse,
        )
        .unwrap();
        journal.truncate_from(cut_at).unwrap();
        drop(journal);
        assert_eq!(
            read_all(dir.path(), 1),
            (1..cut_at).map(record).collect::<Vec<_>>()
        );
        let (_, report) = Journal::open(
            config(dir.path(), 4, Durability::Batch),
            DamagePolicy::Refuse,
        )
        .unwrap();
        assert_eq!((report.next_seq, report.tail_cut), (cut_at, None));
    }
}
