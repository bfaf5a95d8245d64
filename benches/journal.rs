//! Journal throughput: appending command records under policy `none` (page cache only), and
//! replaying them with the checking reader.

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
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = journal
}
criterion_main!(benches);
