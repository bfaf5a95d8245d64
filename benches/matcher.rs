//! Matcher throughput on the exchange-core mix: the fast engine beside the naive reference
//! book, single-threaded, on the same command stream.

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringmatch_benches::matcher_workload;
use ringmatch_matcher::workload::mix_config;
use ringmatch_matcher::{CountingSink, Engine, NaiveBook, OrderMatcher};

/// Commands timed per iteration for the fast engine.
const FAST_COMMANDS_COUNT: usize = 200_000;
/// Commands timed per iteration for the naive book (it is far slower).
const NAIVE_COMMANDS_COUNT: usize = 5_000;

fn warmed<M: OrderMatcher>(mut matcher: M, warmup: &[ringmatch_matcher::Command]) -> M {
    let mut sink = CountingSink::default();
    for (index, command) in warmup.iter().enumerate() {
        matcher.apply_command(index as u64 + 1, command, &mut sink);
    }
    matcher
}

fn run<M: OrderMatcher>(
    mut matcher: M,
    commands: &[ringmatch_matcher::Command],
    first_seq: u64,
) -> u64 {
    let mut sink = CountingSink::default();
    for (index, command) in commands.iter().enumerate() {
        matcher.apply_command(first_seq + index as u64, command, &mut sink);
    }
    sink.checksum
}

fn exchange_core_mix(c: &mut Criterion) {
    let workload = matcher_workload(FAST_COMMANDS_COUNT);
    let first_seq = workload.warmup.len() as u64 + 1;
    let mut group = c.benchmark_group("exchange_core_mix");
    group.sample_size(10);

    group.throughput(Throughput::Elements(FAST_COMMANDS_COUNT as u64));
    group.bench_function("fast_engine", |b| {
        b.iter_batched(
            || warmed(Engine::new(mix_config()).unwrap(), &workload.warmup),
            |engine| run(engine, &workload.commands, first_seq),
            BatchSize::LargeInput,
        )
    });

    group.throughput(Throughput::Elements(NAIVE_COMMANDS_COUNT as u64));
    group.bench_function("naive_book", |b| {
        b.iter_batched(
            || warmed(NaiveBook::new(mix_config()).unwrap(), &workload.warmup),
            |book| run(book, &workload.commands[..NAIVE_COMMANDS_COUNT], first_seq),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = exchange_core_mix
}
criterion_main!(benches);
