//! `ringmatch bench`: open-loop load through the whole pipeline (journal on), with the
//! crossbeam-channel baseline of the same topology in the same run.
//!
//! Each command is stamped with its *intended* send time (start + i / rate), not the time it
//! was actually sent, so time spent waiting behind a slow pipeline counts as latency
//! (coordinated omission is corrected). Flat out, the intended time is the send time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringmatch_journal::{DamagePolicy, Durability, Journal, JournalConfig};
use ringmatch_matcher::workload::{exchange_core_mix, mix_config, MixShape};
use ringmatch_matcher::Engine;
use ringmatch_pipeline::{
    now_ns, Busy, CrossbeamPipeline, EventPosition, EventsFile, Metrics, NullSink,
    OutputDurability, OutputSink, Pipeline, PipelineConfig, Retention, Stage, StageCores, WaitKind,
};
use ringmatch_proto::Command;

use crate::report::{hdr_log, hgrm, svg_series};

/// Options of a pipeline benchmark.
#[derive(Debug, Clone)]
pub struct PipelineBenchOptions {
    /// Commands sent (after the 1,000-order warm-up, which is sent too).
    pub commands_count: usize,
    /// Offered rate in commands per second; None: flat out.
    pub rate_per_second: Option<u64>,
    /// Journal policy.
    pub durability: Durability,
    /// Wait strategy of the ring pipeline.
    pub wait: WaitKind,
    /// Also run the crossbeam baseline.
    pub baseline: bool,
    /// Write events to an events file (otherwise the Publisher only counts them).
    pub events_file: bool,
    /// Where histograms and the plot go.
    pub out_dir: PathBuf,
    /// Workload seed.
    pub seed: u64,
    /// Runs of each implementation (alternating); throughput is the median, histograms are
    /// merged over the runs.
    pub repeat_count: usize,
    /// Cores for the stage threads of both pipelines (and the journal's helper); None: all.
    pub stage_cores: Option<Vec<usize>>,
    /// Cores for the driver (the producer); None: all.
    pub driver_cores: Option<Vec<usize>>,
}

/// Which threads are about to start on the calling thread: it takes their cores, and threads
/// it starts inherit them.
enum Placement {
    Stages,
    Driver,
}

fn place(options: &PipelineBenchOptions, placement: Placement) -> anyhow::Result<()> {
    let (what, cores) = match placement {
        Placement::Stages => ("--stage-cores", &options.stage_cores),
        Placement::Driver => ("--driver-cores", &options.driver_cores),
    };
    if options.stage_cores.is_none() && options.driver_cores.is_none() {
        return Ok(());
    }
    // The main thread is the driver of one run and then starts the next run's stages, so a
    // side without cores of its own gets every core back.
    let all = ALL_CORES.get_or_init(ringmatch_pipeline::available_cores);
    let cores = cores.as_deref().unwrap_or(all);
    ringmatch_pipeline::restrict_thread_to_cores(what, cores)?;
    Ok(())
}

/// Every core, as seen before the bench restricts its main thread.
static ALL_CORES: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();

/// What one implementation measured.
pub struct BenchRun {
    /// `ringmatch` or `crossbeam`.
    pub name: &'static str,
    /// Commands sent.
    pub commands_count: u64,
    /// From the first send until the Publisher reported the last command done (summed over
    /// repeats).
    pub elapsed: Duration,
    /// From then until the pipeline had stopped: its final journal sync and thread joins
    /// (summed over repeats). Not part of `elapsed`.
    pub shutdown: Duration,
    /// Latency from intended send time to each stage.
    pub stages: Vec<(Stage, Histogram<u64>)>,
    /// Times the producer found the input full.
    pub busy_count: u64,
    /// Throughput of each repeat, commands per second.
    pub throughputs: Vec<f64>,
}

impl BenchRun {
    /// Median commands per second over the repeats.
    pub fn throughput(&self) -> f64 {
        let mut sorted = self.throughputs.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    /// Folds another repeat of the same implementation into this one.
    fn merge(&mut self, other: BenchRun) {
        self.commands_count += other.commands_count;
        self.elapsed += other.elapsed;
        self.shutdown += other.shutdown;
        self.busy_count += other.busy_count;
        self.throughputs.extend(other.throughputs);
        for ((_, mine), (_, theirs)) in self.stages.iter_mut().zip(other.stages) {
            mine.add(&theirs).expect("histograms share bounds");
        }
    }
}

/// Something commands can be submitted to.
pub(crate) trait Input {
    /// Takes a prefix of `commands` (which is not empty) and says how long it was: 0 when the
    /// input is full.
    fn try_submit_prefix(&mut self, commands: &[Command]) -> usize;
}

impl Input for ringmatch_pipeline::Submitter {
    /// All of them with one claim of the ring, or none.
    fn try_submit_prefix(&mut self, commands: &[Command]) -> usize {
        match self.try_submit_batch_from(0, commands) {
            Ok(_) => commands.len(),
            Err(Busy) => 0,
        }
    }
}

impl Input for ringmatch_pipeline::CrossbeamSubmitter {
    /// One channel send per command (channels have no batch send), up to the first refusal.
    fn try_submit_prefix(&mut self, commands: &[Command]) -> usize {
        commands
            .iter()
            .take_while(|command| self.try_submit(command).is_ok())
            .count()
    }
}

/// The most commands the driver hands over at once: as many as one word of the input ring's
/// availability bitmap covers.
const DRIVE_BATCH_MAX: usize = 64;

/// Sends every command open-loop at the offered rate. Every command that is due when the
/// driver looks (flat out: the next ones; at a rate: each whose intended send time has come)
/// is handed over in one batch of at most [`DRIVE_BATCH_MAX`], the way a gateway hands over
/// the commands of one read.
pub(crate) fn drive(input: &mut dyn Input, commands: &[Command], rate_per_second: Option<u64>) {
    let interval_ns = rate_per_second.map(|rate| 1_000_000_000 / rate.max(1));
    let start_ns = now_ns();
    let intended_ns = |index: usize, interval_ns: u64| start_ns + index as u64 * interval_ns;
    let mut batch: Vec<Command> = Vec::with_capacity(DRIVE_BATCH_MAX);
    let mut next = 0;
    while next < commands.len() {
        batch.clear();
        let due = &commands[next..commands.len().min(next + DRIVE_BATCH_MAX)];
        match interval_ns {
            None => {
                let now = now_ns();
                batch.extend(due.iter().map(|command| Command {
                    timestamp_ns: now,
                    ..*command
                }));
            }
            Some(interval_ns) => {
                crate::pacing::wait_until(intended_ns(next, interval_ns));
                let now = now_ns();
                for (offset, command) in due.iter().enumerate() {
                    let intended = intended_ns(next + offset, interval_ns);
                    // The first is due: wait_until returned at or after its time.
                    if offset > 0 && intended > now {
                        break;
                    }
                    batch.push(Command {
                        timestamp_ns: intended,
                        ..*command
                    });
                }
            }
        }
        // While the input is full, spin briefly, yield a little, then sleep: on 2 cores a
        // producer that keeps yielding takes the CPU the stages need to drain the ring.
        let mut taken = 0;
        let mut polls = 0u32;
        while taken < batch.len() {
            let count = input.try_submit_prefix(&batch[taken..]);
            taken += count;
            if count > 0 {
                continue;
            }
            polls += 1;
            if polls < 64 {
                std::hint::spin_loop();
            } else if polls < 128 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
        next += batch.len();
    }
}

/// The warm-up and `count` commands of the exchange-core mix with `seed`.
pub(crate) fn mix_commands(count: usize, seed: u64) -> Vec<Command> {
    let workload = exchange_core_mix(count, seed, MixShape::default());
    workload
        .warmup
        .iter()
        .chain(&workload.commands)
        .copied()
        .collect()
}

/// An empty journal in `dir/journal` (removing `dir` first).
pub(crate) fn fresh_journal(dir: &Path, durability: Durability) -> anyhow::Result<Journal> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let (journal, _) = Journal::open(
        JournalConfig {
            dir: dir.join("journal"),
            segment_size_bytes: 256 << 20,
            durability,
        },
        DamagePolicy::Refuse,
    )?;
    Ok(journal)
}

fn sink(options: &PipelineBenchOptions, dir: &Path) -> anyhow::Result<Box<dyn OutputSinkBox>> {
    Ok(if options.events_file {
        Box::new(EventsFile::open(&dir.join("events.bin"), 1)?.0)
    } else {
        Box::new(NullSink::default())
    })
}

/// An object-safe output sink, so the bench can choose one at run time.
trait OutputSinkBox: Send {
    fn push_event(&mut self, event: &ringmatch_proto::Event);
    fn end(&mut self);
}

impl<S: OutputSink> OutputSinkBox for S {
    fn push_event(&mut self, event: &ringmatch_proto::Event) {
        self.push(event);
    }
    fn end(&mut self) {
        self.end_of_batch();
    }
}

struct Boxed(Box<dyn OutputSinkBox>);

impl OutputSink for Boxed {
    fn push(&mut self, event: &ringmatch_proto::Event) {
        self.0.push_event(event);
    }
    fn end_of_batch(&mut self) {
        self.0.end();
    }
    // The pipeline benchmarks take no snapshots, which is all these two serve.
    fn durability(&self) -> OutputDurability {
        OutputDurability::AtEndOfBatch
    }
    fn last_event_position(&self) -> Option<EventPosition> {
        None
    }
}

/// Waits until the Publisher reports `last_seq` (the last command sent) done and returns
/// when that was seen, within about 100 us. Every command of the mix has events. Should the
/// Publisher stop short of it (the last commands had no events), the wait ends once no stage
/// has moved for a second after the Matcher finished it; should the pipeline stop moving
/// before that (a stage died), it ends after 10 s without progress. Either way it says so.
fn wait_until_published(name: &str, metrics: &Metrics, last_seq: u64) -> Instant {
    use std::sync::atomic::Ordering;
    let stage = |stage: Stage| metrics.stage_seq[stage as usize].load(Ordering::Acquire);
    let mut last_seen = Stage::ALL.map(stage);
    let mut moved_at = Instant::now();
    while stage(Stage::Published) < last_seq {
        std::thread::sleep(Duration::from_micros(50));
        let seen = Stage::ALL.map(stage);
        if seen != last_seen {
            last_seen = seen;
            moved_at = Instant::now();
            continue;
        }
        let still = moved_at.elapsed();
        if stage(Stage::Matched) >= last_seq && still >= Duration::from_secs(1) {
            eprintln!(
                "{name}: the Publisher stopped at sequence {} of {last_seq}; timing ends there",
                stage(Stage::Published)
            );
            return moved_at;
        }
        if still >= Duration::from_secs(10) {
            eprintln!(
                "{name}: no stage moved for 10 s (sequences {seen:?}, last sent {last_seq}); \
                 timing ends there"
            );
            return moved_at;
        }
    }
    Instant::now()
}

fn collect(
    name: &'static str,
    metrics: &Metrics,
    commands_count: usize,
    elapsed: Duration,
    shutdown: Duration,
) -> BenchRun {
    BenchRun {
        name,
        commands_count: commands_count as u64,
        elapsed,
        shutdown,
        stages: Stage::ALL
            .iter()
            .map(|&stage| (stage, metrics.latency(stage)))
            .collect(),
        busy_count: metrics
            .busy_count
            .load(std::sync::atomic::Ordering::Relaxed),
        throughputs: vec![commands_count as f64 / elapsed.as_secs_f64()],
    }
}

/// The pipeline shape every benchmark uses: 64k input slots, 256k output slots, no pinning.
pub(crate) fn bench_pipeline_config(
    wait: WaitKind,
    snapshot_every_commands: u64,
) -> PipelineConfig {
    PipelineConfig {
        input_ring_slots_count: 1 << 16,
        output_ring_slots_count: 1 << 18,
        wait,
        cores: StageCores::default(),
        snapshot_every_commands,
        retention: Retention::Keep,
    }
}

fn run_ringmatch(
    options: &PipelineBenchOptions,
    commands: &[Command],
    dir: &Path,
) -> anyhow::Result<BenchRun> {
    place(options, Placement::Stages)?;
    let journal = fresh_journal(dir, options.durability)?;
    let last_seq = journal.next_seq() + commands.len() as u64 - 1;
    let config = bench_pipeline_config(options.wait, 0);
    let engine = Engine::new(mix_config())?;
    let pipeline = Pipeline::start(&config, engine, journal, Boxed(sink(options, dir)?), None)?;
    let metrics = pipeline.metrics();
    let mut submitter = pipeline.submitter();
    place(options, Placement::Driver)?;
    let started = Instant::now();
    drive(&mut submitter, commands, options.rate_per_second);
    let done = wait_until_published("ringmatch", &metrics, last_seq);
    drop(submitter);
    pipeline.shutdown();
    Ok(collect(
        "ringmatch",
        &metrics,
        commands.len(),
        done - started,
        done.elapsed(),
    ))
}

fn run_crossbeam(
    options: &PipelineBenchOptions,
    commands: &[Command],
    dir: &Path,
) -> anyhow::Result<BenchRun> {
    place(options, Placement::Stages)?;
    let journal = fresh_journal(dir, options.durability)?;
    let last_seq = journal.next_seq() + commands.len() as u64 - 1;
    let engine = Engine::new(mix_config())?;
    let mut pipeline =
        CrossbeamPipeline::start(1 << 16, engine, journal, Boxed(sink(options, dir)?));
    let metrics = pipeline.metrics();
    place(options, Placement::Driver)?;
    let started = Instant::now();
    drive(pipeline.submitter(), commands, options.rate_per_second);
    let done = wait_until_published("crossbeam", &metrics, last_seq);
    pipeline.shutdown();
    Ok(collect(
        "crossbeam",
        &metrics,
        commands.len(),
        done - started,
        done.elapsed(),
    ))
}

const QUANTILES: [(f64, &str); 6] = [
    (0.5, "p50"),
    (0.9, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (0.9999, "p99.99"),
    (1.0, "max"),
];

fn micros(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1_000.0
}

/// Runs the benchmark, prints the report and writes the files.
pub fn run(options: &PipelineBenchOptions) -> anyhow::Result<Vec<BenchRun>> {
    std::fs::create_dir_all(&options.out_dir)?;
    let commands = mix_commands(options.commands_count, options.seed);
    let rate = options.rate_per_second.map_or_else(
        || "flat out".to_string(),
        |rate| format!("{rate} commands/s offered"),
    );
    println!(
        "pipeline bench: {} commands (exchange-core mix, seed {}), {rate}, journal {}, wait {}, \
         output {}",
        commands.len(),
        options.seed,
        options.durability.name(),
        options.wait.name(),
        if options.events_file {
            "events file"
        } else {
            "counted only"
        }
    );
    let cores = |cores: &Option<Vec<usize>>| {
        cores
            .as_ref()
            .map_or_else(|| "all".to_string(), |cores| format!("{cores:?}"))
    };
    if options.stage_cores.is_some() || options.driver_cores.is_some() {
        println!(
            "stages on cores {}, driver on cores {}",
            cores(&options.stage_cores),
            cores(&options.driver_cores)
        );
    }
    let scratch = options.out_dir.join("scratch");
    let mut runs: Vec<BenchRun> = Vec::new();
    for repeat in 0..options.repeat_count.max(1) {
        let mut this_round = vec![run_ringmatch(
            options,
            &commands,
            &scratch.join("ringmatch"),
        )?];
        if options.baseline {
            this_round.push(run_crossbeam(
                options,
                &commands,
                &scratch.join("crossbeam"),
            )?);
        }
        for run in &this_round {
            println!(
                "  run {}: {} {:.0} commands/s (then {:.0} ms to shut down)",
                repeat + 1,
                run.name,
                run.throughputs[0],
                run.shutdown.as_secs_f64() * 1e3
            );
        }
        if runs.is_empty() {
            runs = this_round;
        } else {
            for (total, run) in runs.iter_mut().zip(this_round) {
                total.merge(run);
            }
        }
    }
    std::fs::remove_dir_all(&scratch)?;
    print_report(&runs);
    write_files(options, &runs)?;
    Ok(runs)
}

fn print_report(runs: &[BenchRun]) {
    for run in runs {
        println!(
            "{}: median {:.0} commands/s over {} runs ({} commands in {:.3} s), input full {} times",
            run.name,
            run.throughput(),
            run.throughputs.len(),
            run.commands_count,
            run.elapsed.as_secs_f64(),
            run.busy_count
        );
    }
    let mut header = format!("{:<11} {:<11}", "pipeline", "stage");
    for (_, name) in QUANTILES {
        let _ = write!(header, " {:>10}", format!("{name} us"));
    }
    println!("{header}");
    for run in runs {
        for (stage, histogram) in &run.stages {
            let mut line = format!("{:<11} {:<11}", run.name, stage.name());
            for (quantile, _) in QUANTILES {
                let _ = write!(line, " {:>10.1}", micros(histogram, quantile));
            }
            println!("{line}");
        }
    }
    if let [ring, crossbeam] = runs {
        println!(
            "ringmatch / crossbeam median throughput: {:.2}x",
            ring.throughput() / crossbeam.throughput()
        );
    }
}

fn write_files(options: &PipelineBenchOptions, runs: &[BenchRun]) -> anyhow::Result<()> {
    let mut tags = Vec::new();
    for run in runs {
        for (stage, histogram) in &run.stages {
            let tag = format!("{}-{}", run.name, stage.name());
            std::fs::write(options.out_dir.join(format!("{tag}.hgrm")), hgrm(histogram))?;
            tags.push((tag, histogram, run.elapsed));
        }
    }
    // One histogram per pipeline and stage, over all its runs (each run is a few seconds).
    let tagged: Vec<crate::report::Interval<'_>> = tags
        .iter()
        .map(|(tag, histogram, elapsed)| (tag.as_str(), Duration::ZERO, *elapsed, *histogram))
        .collect();
    std::fs::write(options.out_dir.join("latency.hlog"), hdr_log(&tagged)?)?;
    std::fs::write(options.out_dir.join("latency.svg"), svg_plot(runs))?;
    println!(
        "wrote {}: *.hgrm, latency.hlog, latency.svg",
        options.out_dir.display()
    );
    Ok(())
}

/// A percentile plot: x is the percentile on a log scale of 1/(1-p), y the latency in µs
/// (log scale), one line per pipeline and stage.
pub fn svg_plot(runs: &[BenchRun]) -> String {
    let series: Vec<(String, bool, &Histogram<u64>)> = runs
        .iter()
        .flat_map(|run| {
            run.stages.iter().map(move |(stage, histogram)| {
                (
                    format!("{} {}", run.name, stage.name()),
                    run.name == "ringmatch",
                    histogram,
                )
            })
        })
        .collect();
    svg_series(&series)
}

/// `ringmatch bench --restart`: how long start-up takes after `commands_count` commands with a
/// snapshot every `snapshot_every_commands`, and how fast a full replay (no snapshot) runs.
pub fn run_restart(
    commands_count: usize,
    snapshot_every_commands: u64,
    out_dir: &Path,
    seed: u64,
) -> anyhow::Result<()> {
    use ringmatch_pipeline::{recover, RecoveryOptions};
    let dir = out_dir.join("restart-data");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let options = RecoveryOptions {
        matcher: mix_config(),
        journal: JournalConfig {
            dir: dir.join("journal"),
            segment_size_bytes: 256 << 20,
            durability: Durability::None,
        },
        damage_policy: DamagePolicy::Refuse,
        snapshot_dir: dir.join("snapshots"),
        snapshots_kept_count: 3,
        events_path: dir.join("events.bin"),
    };
    println!(
        "restart bench: generating {commands_count} commands (exchange-core mix, seed {seed})"
    );
    let workload = exchange_core_mix(commands_count, seed, MixShape::default());
    let commands: Vec<Command> = workload
        .warmup
        .iter()
        .chain(&workload.commands)
        .copied()
        .collect();
    drop(workload);
    let recovered = recover(&options, &mut |_| {})?;
    let config = bench_pipeline_config(WaitKind::Phased, snapshot_every_commands);
    let pipeline = Pipeline::start(
        &config,
        recovered.engine,
        recovered.journal,
        recovered.output,
        Some(recovered.snapshots),
    )?;
    let started = Instant::now();
    let mut submitter = pipeline.submitter();
    drive(&mut submitter, &commands, None);
    drop(submitter);
    pipeline.shutdown();
    println!(
        "wrote {} commands through the pipeline (journal none, events file, snapshot every {snapshot_every_commands}) in {:.1} s",
        commands.len(),
        started.elapsed().as_secs_f64()
    );
    drop(commands);

    for (label, keep_snapshots) in [
        ("with snapshots", true),
        ("full replay, no snapshot", false),
    ] {
        if !keep_snapshots {
            std::fs::rename(dir.join("snapshots"), dir.join("snapshots-aside"))?;
        }
        let mut times = Vec::new();
        let mut replayed = 0;
        let mut replay_seconds = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let recovered = recover(&options, &mut |_| {})?;
            times.push(started.elapsed().as_secs_f64());
            replayed = recovered.replayed_count;
            replay_seconds.push(recovered.replay_duration.as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        replay_seconds.sort_by(f64::total_cmp);
        let rate = if replayed >= 100_000 {
            format!(
                " at {:.2} million/s",
                replayed as f64 / replay_seconds[1] / 1e6
            )
        } else {
            String::new()
        };
        println!(
            "restart {label}: ready in {:.3} s (median of 3: journal open and scan, snapshot \
             load, replay of {replayed} commands{rate})",
            times[1]
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// One snapshot copied in steps, as the running Matcher copies it.
struct CopyRound {
    begin_ns: u64,
    step_median_ns: u64,
    step_max_ns: u64,
    steps_count: usize,
    copy_ms: f64,
    encode_ms: f64,
}

/// `ringmatch bench --snapshot-pause`: how long the matcher pauses for a snapshot at 100,000
/// and 1,000,000 resting orders (beginning it, and each step of its copy, as the pipeline's
/// Matcher takes them; beside it, what encoding the whole state on the matcher cost before),
/// how long the encode then takes off the matcher, and the writer thread's compress and store.
pub fn run_snapshot_pause(out_dir: &Path) -> anyhow::Result<()> {
    use ringmatch_journal::SnapshotStore;
    use ringmatch_matcher::{CountingSink, InstrumentSpec, Limits, MatcherConfig};
    use ringmatch_proto::Side;
    for resting_count in [100_000u32, 1_000_000] {
        let config = MatcherConfig {
            instruments: vec![InstrumentSpec {
                id: 1,
                symbol: "DEMO".into(),
                tick_size: 1,
                lot_size: 1,
                min_price: 1,
                max_price: 1_000_000,
                max_qty: 1_000_000,
                session_end_ns: None,
            }],
            limits: Limits {
                orders_per_book_max: resting_count,
                orders_max: resting_count,
                accounts_max: 10_000,
                instruments_max: 1,
                ..Limits::default()
            },
        };
        let mut engine = Engine::new(config)?;
        let mut sink = CountingSink::default();
        for index in 0..resting_count {
            // Bids below 500,000 and asks above it, spread over many levels, never crossing.
            let (side, price) = if index % 2 == 0 {
                (Side::Buy, 499_999 - i64::from(index % 200_000))
            } else {
                (Side::Sell, 500_001 + i64::from(index % 200_000))
            };
            let mut command =
                Command::limit(1 + index % 1_000, 1, side, price, 1 + u64::from(index % 50));
            command.client_order_id = u64::from(index) + 1;
            engine.apply(u64::from(index) + 1, &command, &mut sink);
        }
        anyhow::ensure!(
            engine.resting_orders_count() == resting_count,
            "orders did not all rest"
        );
        // Before: the whole state encoded on the Matcher's thread while it waits.
        let mut stop_the_world_ms = Vec::new();
        let mut state = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            state = engine.encode_state();
            stop_the_world_ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        stop_the_world_ms.sort_by(f64::total_cmp);
        // Now: begun in O(instruments), copied in steps between commands, encoded elsewhere.
        let started = Instant::now();
        engine.reserve_snapshot_copy();
        let reserve_ms = started.elapsed().as_secs_f64() * 1e3;
        let step_bytes = ringmatch_pipeline::SNAPSHOT_STEP_BYTES;
        let mut rounds = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            engine.begin_snapshot();
            let begin_ns = started.elapsed().as_nanos() as u64;
            let mut steps_ns = Vec::new();
            let frozen = loop {
                let started = Instant::now();
                let copied = engine.snapshot_step(step_bytes);
                steps_ns.push(started.elapsed().as_nanos() as u64);
                if let Some(frozen) = copied {
                    break frozen;
                }
            };
            let started = Instant::now();
            let encoded = frozen.encode();
            let encode_ms = started.elapsed().as_secs_f64() * 1e3;
            anyhow::ensure!(
                encoded == state,
                "the copied snapshot differs from the state"
            );
            engine.give_back_snapshot(frozen);
            steps_ns.sort_unstable();
            rounds.push(CopyRound {
                begin_ns,
                step_median_ns: steps_ns[steps_ns.len() / 2],
                step_max_ns: *steps_ns.last().expect("one step at least"),
                steps_count: steps_ns.len(),
                copy_ms: (begin_ns + steps_ns.iter().sum::<u64>()) as f64 / 1e6,
                encode_ms,
            });
        }
        let median = |key: &dyn Fn(&CopyRound) -> f64| {
            let mut values: Vec<f64> = rounds.iter().map(key).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let dir = out_dir.join("snapshot-pause");
        let store = SnapshotStore::open(&dir, 1)?;
        let started = Instant::now();
        let info = store.write(u64::from(resting_count), None, &state)?;
        let write_ms = started.elapsed().as_secs_f64() * 1e3;
        std::fs::remove_dir_all(&dir)?;
        println!(
            "snapshot at {resting_count} resting orders (medians of 5): matcher pause: begin {:.1} us, \
             longest step {:.1} us (median step {:.1} us, {} steps of {} KiB, {:.1} ms in all on \
             the matcher thread; copy buffers reserved once in {:.1} ms); encode off the matcher \
             {:.1} ms ({} bytes); before, encoding on the matcher paused it {:.1} ms; writer \
             thread {:.1} ms to compress, write and sync {} bytes",
            median(&|round| round.begin_ns as f64 / 1e3),
            median(&|round| round.step_max_ns as f64 / 1e3),
            median(&|round| round.step_median_ns as f64 / 1e3),
            rounds[0].steps_count,
            step_bytes / 1024,
            median(&|round| round.copy_ms),
            reserve_ms,
            median(&|round| round.encode_ms),
            state.len(),
            stop_the_world_ms[2],
            write_ms,
            info.size_bytes
        );
    }
    Ok(())
}
