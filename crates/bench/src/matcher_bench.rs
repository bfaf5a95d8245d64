//! `ringmatch bench --matcher-only`: single-threaded matcher throughput on the exchange-core
//! mix (or, with `--mix order-types`, the mix with stops, OCOs, icebergs and GTD orders),
//! fast engine and naive reference book side by side on the same command stream.

use std::time::{Duration, Instant};

use ringmatch_matcher::workload::{
    exchange_core_mix, mix_config, order_types_mix, MixShape, Workload,
};
use ringmatch_matcher::{CountingSink, Engine, NaiveBook, OrderMatcher};

/// Options of a matcher-only run.
#[derive(Debug, Clone)]
pub struct MatcherBenchOptions {
    /// Commands in the measured stream.
    pub commands_count: usize,
    /// Timed runs of the fast engine (the median is reported).
    pub runs_count: usize,
    /// Commands the naive book runs (it is far slower, so it gets a prefix of the stream).
    pub naive_commands_count: usize,
    /// Workload seed.
    pub seed: u64,
    /// Also time the same stream with a client order id on every place (so the resend
    /// window remembers each), in alternating runs, and report the ratio.
    pub client_order_ids: bool,
    /// Run this stream file (`crate::stream_file`) instead of generating the mix.
    pub stream: Option<std::path::PathBuf>,
    /// Generate the mix with stops, OCOs, icebergs and GTD orders
    /// ([`ringmatch_matcher::workload::order_types_mix`]), and also time the plain mix of the
    /// same length and seed in alternating runs.
    pub order_types: bool,
}

/// What one implementation did.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Commands timed.
    pub commands_count: usize,
    /// Wall time of each run.
    pub durations: Vec<Duration>,
    /// State hash at the end (equal across runs and implementations on the same prefix).
    pub state_hash: u64,
    /// Events produced in one run.
    pub events_count: u64,
}

impl RunResult {
    /// Median commands per second over the runs.
    pub fn median_commands_per_second(&self) -> f64 {
        let mut rates: Vec<f64> = self
            .durations
            .iter()
            .map(|duration| self.commands_count as f64 / duration.as_secs_f64())
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    }

    /// Median nanoseconds per command.
    pub fn median_ns_per_command(&self) -> f64 {
        1e9 / self.median_commands_per_second()
    }
}

/// Times `commands` on a fresh matcher (after the warm-up), `runs_count` times.
pub fn time_matcher<M: OrderMatcher>(
    make: impl Fn() -> M,
    workload: &Workload,
    commands_count: usize,
    runs_count: usize,
) -> RunResult {
    let mut durations = Vec::with_capacity(runs_count);
    let mut state_hash = 0;
    let mut events_count = 0;
    for _ in 0..runs_count {
        let mut matcher = make();
        let mut sink = CountingSink::default();
        let mut seq = 0u64;
        for command in &workload.warmup {
            seq += 1;
            matcher.apply_command(seq, command, &mut sink);
        }
        let mut sink = CountingSink::default();
        let started = Instant::now();
        for command in &workload.commands[..commands_count] {
            seq += 1;
            matcher.apply_command(seq, command, &mut sink);
        }
        durations.push(started.elapsed());
        state_hash = matcher.hash();
        events_count = std::hint::black_box(sink).events_count;
    }
    RunResult {
        commands_count,
        durations,
        state_hash,
        events_count,
    }
}

/// Runs the benchmark and prints a report.
pub fn run(options: MatcherBenchOptions) -> anyhow::Result<()> {
    let generated_at = Instant::now();
    let (workload, source) = match &options.stream {
        Some(path) => (
            crate::stream_file::read_stream(path)?,
            format!("stream file {}", path.display()),
        ),
        None if options.order_types => (
            order_types_mix(options.commands_count, options.seed, MixShape::default()),
            format!(
                "exchange-core mix with stops, OCOs, icebergs and GTD orders, seed {}",
                options.seed
            ),
        ),
        None => (
            exchange_core_mix(options.commands_count, options.seed, MixShape::default()),
            format!("exchange-core mix, seed {}", options.seed),
        ),
    };
    println!(
        "workload: {source}, {} warm-up + {} commands ({}), {:.1}% of commands traded \
         (ready in {:.1?})",
        workload.warmup.len(),
        workload.commands.len(),
        workload.mix(),
        100.0 * workload.trading_commands_count as f64 / workload.commands.len() as f64,
        generated_at.elapsed()
    );
    if options.order_types {
        println!("order types in the stream: {}", workload.order_types);
    }
    let book_shape = {
        let mut engine = Engine::new(mix_config()).expect("valid mix config");
        let mut sink = CountingSink::default();
        for (index, command) in workload.warmup.iter().chain(&workload.commands).enumerate() {
            engine.apply(index as u64 + 1, command, &mut sink);
        }
        let levels_count = |side| engine.depth(1, side, usize::MAX).map_or(0, |d| d.len());
        (
            engine.resting_orders_count(),
            levels_count(ringmatch_proto::Side::Buy) + levels_count(ringmatch_proto::Side::Sell),
        )
    };
    println!(
        "book after the stream: {} resting orders over {} price levels",
        book_shape.0, book_shape.1
    );
    // A stream file has its own length.
    let commands_count = workload.commands.len();
    let fast = time_matcher(
        || Engine::new(mix_config()).expect("valid mix config"),
        &workload,
        commands_count,
        options.runs_count,
    );
    let naive_commands_count = options.naive_commands_count.min(commands_count);
    let naive = time_matcher(
        || NaiveBook::new(mix_config()).expect("valid mix config"),
        &workload,
        naive_commands_count,
        1,
    );
    let fast_on_prefix = time_matcher(
        || Engine::new(mix_config()).expect("valid mix config"),
        &workload,
        naive_commands_count,
        1,
    );
    anyhow::ensure!(
        fast_on_prefix.state_hash == naive.state_hash,
        "fast engine and naive book disagree on the state hash after {naive_commands_count} commands"
    );
    println!(
        "{:<14} {:>12} {:>6} {:>16} {:>12}",
        "matcher", "commands", "runs", "median cmd/s", "ns/cmd"
    );
    for (name, result) in [("fast engine", &fast), ("naive book", &naive)] {
        println!(
            "{:<14} {:>12} {:>6} {:>16.0} {:>12.1}",
            name,
            result.commands_count,
            result.durations.len(),
            result.median_commands_per_second(),
            result.median_ns_per_command()
        );
    }
    println!(
        "fast / naive: {:.1}x; state hashes equal after {} commands ({:#018x}); fast engine \
         emitted {} events per run",
        fast.median_commands_per_second() / naive.median_commands_per_second(),
        naive_commands_count,
        naive.state_hash,
        fast.events_count
    );
    if options.client_order_ids {
        compare_client_order_ids(&workload, &options);
    }
    if options.order_types {
        compare_with_the_plain_mix(&workload, &options);
    }
    Ok(())
}

/// The order-types stream against the plain mix of the same length and seed, one run of each
/// in turn: what a stream with stops, OCOs, icebergs and expiries costs per command.
fn compare_with_the_plain_mix(workload: &Workload, options: &MatcherBenchOptions) {
    let plain = exchange_core_mix(workload.commands.len(), options.seed, MixShape::default());
    let mut ratios = Vec::with_capacity(options.runs_count);
    let (mut plain_rates, mut order_types_rates) = (Vec::new(), Vec::new());
    for _ in 0..options.runs_count {
        let make = || Engine::new(mix_config()).expect("valid mix config");
        let plain_run = time_matcher(make, &plain, plain.commands.len(), 1);
        let order_types_run = time_matcher(make, workload, workload.commands.len(), 1);
        plain_rates.push(plain_run.median_commands_per_second());
        order_types_rates.push(order_types_run.median_commands_per_second());
        ratios.push(
            order_types_run.median_commands_per_second() / plain_run.median_commands_per_second(),
        );
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "order types / plain mix, per pair: {}; median {:.3} (medians {:.0} and {:.0} cmd/s)",
        ratios
            .iter()
            .map(|ratio| format!("{ratio:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        median(&mut ratios.clone()),
        median(&mut order_types_rates),
        median(&mut plain_rates)
    );
}

/// The same stream with and without a client order id on every place, one run of each in
/// turn: what remembering every place in the resend window costs the matcher.
fn compare_client_order_ids(workload: &Workload, options: &MatcherBenchOptions) {
    let mut with_ids = workload.clone();
    let mut next_id = 0u64;
    for command in with_ids
        .warmup
        .iter_mut()
        .chain(with_ids.commands.iter_mut())
    {
        if command.command_type == ringmatch_proto::CommandType::Place {
            next_id += 1;
            command.client_order_id = next_id;
        }
    }
    let mut ratios = Vec::with_capacity(options.runs_count);
    for _ in 0..options.runs_count {
        let make = || Engine::new(mix_config()).expect("valid mix config");
        let plain = time_matcher(make, workload, workload.commands.len(), 1);
        let ids = time_matcher(make, &with_ids, workload.commands.len(), 1);
        ratios.push(ids.median_commands_per_second() / plain.median_commands_per_second());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "client order ids on every place ({next_id} places, resend window of {}): with / \
         without, per pair: {}; median {:.3}",
        mix_config().limits.resends_max,
        ratios
            .iter()
            .map(|ratio| format!("{ratio:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        ratios[ratios.len() / 2]
    );
}
