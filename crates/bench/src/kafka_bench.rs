//! `ringmatch bench --kafka HOST:PORT`: the whole pipeline publishing to a real broker, on
//! fresh topics, measuring records committed per second and output lag. `scripts/bench-kafka.sh`
//! runs Kafka's own `ProducerPerformance` with the same record count and size beside it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringmatch_journal::Durability;
use ringmatch_kafka::{Delivery, EventEncoder, KafkaConfig, KafkaOutput};
use ringmatch_matcher::workload::mix_config;
use ringmatch_matcher::Engine;
use ringmatch_pipeline::{Pipeline, WaitKind};
use ringmatch_proto::EVENT_SIZE_BYTES;

use crate::pipeline_bench::{bench_pipeline_config, drive, fresh_journal, mix_commands};

/// Options of the Kafka benchmark.
#[derive(Debug, Clone)]
pub struct KafkaBenchOptions {
    /// The broker.
    pub bootstrap: String,
    /// Delivery guarantee.
    pub delivery: Delivery,
    /// Commands sent (after the warm-up, which is sent too).
    pub commands_count: usize,
    /// Offered rate in commands per second; None: flat out.
    pub rate_per_second: Option<u64>,
    /// Journal policy.
    pub durability: Durability,
    /// Wait strategy.
    pub wait: WaitKind,
    /// Partitions of each topic.
    pub partitions: i32,
    /// Commit interval.
    pub commit_interval: Duration,
    /// Where the scratch journal and the lag histogram go.
    pub out_dir: std::path::PathBuf,
    /// Workload seed.
    pub seed: u64,
}

/// Runs the benchmark and prints the report; the last lines are `key: value` pairs that
/// `scripts/bench-kafka.sh` reads.
pub fn run(options: &KafkaBenchOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.out_dir)?;
    let commands = mix_commands(options.commands_count, options.seed);
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let mut config = KafkaConfig::new(&options.bootstrap);
    config.events_topic = format!("ringmatch-bench.{unique}.events");
    config.market_data_topic = format!("ringmatch-bench.{unique}.market-data");
    config.transactional_id = format!("ringmatch-bench-{unique}");
    config.partitions = options.partitions;
    config.delivery = options.delivery;
    config.commit_interval = options.commit_interval;
    let delivery = match options.delivery {
        Delivery::ExactlyOnce => "exactly_once",
        Delivery::AtLeastOnce => "at_least_once",
    };
    println!(
        "kafka bench: {} commands (exchange-core mix, seed {}), {}, journal {}, delivery \
         {delivery}, {} partitions per topic, commit every {} ms, broker {}",
        commands.len(),
        options.seed,
        options.rate_per_second.map_or_else(
            || "flat out".to_string(),
            |rate| format!("{rate} commands/s offered")
        ),
        options.durability.name(),
        options.partitions,
        options.commit_interval.as_millis(),
        options.bootstrap
    );
    let scratch = options.out_dir.join("scratch");
    let journal = fresh_journal(&scratch, options.durability)?;

    let (output, _) = KafkaOutput::open(&config, EventEncoder::Binary, 1)?;
    let kafka_metrics = output.metrics();
    let pipeline_config = bench_pipeline_config(options.wait, 0);
    let pipeline = Pipeline::start(
        &pipeline_config,
        Engine::new(mix_config())?,
        journal,
        output,
        None,
    )?;
    let mut submitter = pipeline.submitter();
    let started = Instant::now();
    drive(&mut submitter, &commands, options.rate_per_second);
    drop(submitter);
    // Shutting down drains the rings and waits until the last transaction is committed.
    pipeline.shutdown();
    let elapsed = started.elapsed();
    std::fs::remove_dir_all(&scratch)?;
    let records = kafka_metrics.events_committed.load(Ordering::Relaxed);
    let bytes = kafka_metrics.bytes_committed.load(Ordering::Relaxed);
    let commits = kafka_metrics.commits.load(Ordering::Relaxed);
    let rate = records as f64 / elapsed.as_secs_f64();
    let lag = kafka_metrics
        .output_lag
        .lock()
        .map_err(|_| anyhow::anyhow!("lag histogram poisoned"))?
        .clone();
    let commit_latency = kafka_metrics
        .commit_latency
        .lock()
        .map_err(|_| anyhow::anyhow!("commit histogram poisoned"))?
        .clone();
    let ms = |nanos: u64| nanos as f64 / 1e6;
    println!(
        "  {records} records of {EVENT_SIZE_BYTES} B ({bytes} B) committed in {:.3} s over \
         {commits} commits: {rate:.0} records/s, {:.1} MB/s",
        elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!(
        "  producer queue full {} times; retried {} errors",
        kafka_metrics.errors_queue_full.load(Ordering::Relaxed),
        kafka_metrics.errors_retriable.load(Ordering::Relaxed)
    );
    println!(
        "  output lag (ingress to committed): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max \
         {:.2} ms; commit latency p50 {:.2} ms, p99 {:.2} ms",
        ms(lag.value_at_quantile(0.5)),
        ms(lag.value_at_quantile(0.99)),
        ms(lag.value_at_quantile(0.999)),
        ms(lag.max()),
        ms(commit_latency.value_at_quantile(0.5)),
        ms(commit_latency.value_at_quantile(0.99)),
    );
    crate::report::write_histogram_files(
        &options.out_dir,
        &format!("kafka-{delivery}-output-lag"),
        &lag,
        &[(std::time::Duration::ZERO, elapsed, lag.clone())],
    )?;
    println!("records: {records}");
    println!("record_size_bytes: {EVENT_SIZE_BYTES}");
    println!("records_per_second: {rate:.0}");
    println!("lag_p50_ms: {:.2}", ms(lag.value_at_quantile(0.5)));
    println!("lag_p99_ms: {:.2}", ms(lag.value_at_quantile(0.99)));
    println!(
        "topics: {} {}",
        config.events_topic, config.market_data_topic
    );
    Ok(())
}
