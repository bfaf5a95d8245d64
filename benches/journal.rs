//! Journal throughput: appending command records under policy `none` (page cache only), and
//! replaying them with the checking reader; and the one append that rolls to a new segment.

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringmatch_benches::matcher_workload;
use ringmatch_journal::{
    DamagePolicy, Durability, Journal, JournalConfig, JournalReader, JournalRecord,
};

const RECORDS_COUNT: usize = 1_000_000;

fn config(dir: &std::path::Path) -> JournalConfig {
    JournalConfig {
        dir: dir.to_path_buf(),
        segment_size_bytes: 128 << 20,
        durability: Durability::None,
    }
}

fn journal(c: &mut Criterion) {
    let workload = matcher_workload(RECORDS_COUNT);
    let records: Vec<JournalRecord> = workload
        .commands
        .iter()
        .enumerate()
        .map(|(index, command)| JournalRecord {
            seq: index as u64 + 1,
            timestamp_ns: command.timestamp_ns,
            command: *command,
        })
        .collect();
    let mut group = c.benchmark_group("journal");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS_COUNT as u64));

    group.bench_function("append_policy_none", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let (journal, _) = Journal::open(config(dir.path()), DamagePolicy::Refuse).unwrap();
                (dir, journal)
            },
            |(dir, mut journal)| {
                for record in &records {
                    journal.append(record).unwrap();
                }
                journal.commit().unwrap();
                (dir, journal)
            },
            BatchSize::PerIteration,
        )
    });

    let dir = tempfile::tempdir().unwrap();
    {
        let (mut journal, _) = Journal::open(config(dir.path()), DamagePolicy::Refuse).unwrap();
        for record in &records {
            journal.append(record).unwrap();
        }
        journal.sync().unwrap();
    }
    group.bench_function("replay_read", |b| {
        b.iter(|| {
            let mut count = 0u64;
            for record in JournalReader::open(dir.path(), 1).unwrap() {
                count += record.unwrap().seq & 1;
            }
            count
        })
    });
    group.finish();

    // The append that fills a 16 MiB segment and rolls to the next, when the journal's helper
    // thread has had time to make it (as under a paced load).
    let mut group = c.benchmark_group("journal");
    group.sample_size(10);
    group.bench_function("roll_16MiB_policy_none", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let (mut journal, _) = Journal::open(
                    JournalConfig {
                        segment_size_bytes: 16 << 20,
                        ..config(dir.path())
                    },
                    DamagePolicy::Refuse,
                )
                .unwrap();
                let first_segment = journal.active_segment().0.to_path_buf();
                let mut index = 0;
                loop {
                    let mut record = records[index % records.len()];
                    record.seq = index as u64 + 1;
                    index += 1;
                    if index % 4096 == 0 {
                        journal.settle_prefault();
                    }
                    let started = std::time::Instant::now();
                    journal.append(&record).unwrap();
                    let took = started.elapsed();
                    if journal.active_segment().0 != first_segment {
                        total += took;
                        break;
                    }
                }
            }
            total
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = journal
}
criterion_main!(benches);
