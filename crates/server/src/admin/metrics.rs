//! `/metrics`: everything the service measures in the Prometheus text format (version
//! 0.0.4), encoded by `prometheus-client`.
//!
//! The counters and latency histograms live where they are measured (the pipeline's
//! [`Metrics`], the gateway's [`GatewayMetrics`], the Kafka output's [`KafkaMetrics`], the
//! cluster's [`Replica`]); each collector here reads them at scrape time. A latency histogram
//! is recorded as an HDR histogram (3 significant digits); its Prometheus buckets are the
//! counts at or below each bound, to that precision, and its `_sum` is the exact sum of what
//! was recorded. Names follow the Prometheus conventions: base units (seconds, bytes),
//! counters end in `_total`, a histogram's series are `_bucket`, `_sum` and `_count`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::Response;
use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use ringmatch_gateway::{GatewayMetrics, SessionEnd};
use ringmatch_kafka::KafkaMetrics;
use ringmatch_pipeline::{Metrics, Stage};
use ringmatch_replication::{Replica, Role};

/// Upper bounds of the latency histograms' buckets, in seconds (then `+Inf`).
pub(crate) const LATENCY_BUCKETS_SECONDS: [f64; 22] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
];

/// What `/metrics` encodes: one registry, built once per listener.
#[derive(Clone)]
pub(crate) struct Exporter {
    registry: Arc<Registry>,
}

/// The sources a node's `/metrics` reads.
#[derive(Default)]
pub(crate) struct Sources {
    pub(crate) pipeline: Option<Arc<Metrics>>,
    pub(crate) gateway: Option<Arc<GatewayMetrics>>,
    pub(crate) kafka: Option<Arc<KafkaMetrics>>,
    pub(crate) cluster: Option<Arc<Replica>>,
}

impl Exporter {
    /// An exporter of `sources`, the build and the process.
    pub(crate) fn new(sources: Sources) -> Exporter {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(BuildInfo));
        registry.register_collector(Box::new(ProcessCollector));
        if let Some(pipeline) = sources.pipeline {
            registry.register_collector(Box::new(PipelineCollector(pipeline)));
        }
        if let Some(gateway) = sources.gateway {
            registry.register_collector(Box::new(GatewayCollector(gateway)));
        }
        if let Some(kafka) = sources.kafka {
            registry.register_collector(Box::new(KafkaCollector(kafka)));
        }
        if let Some(cluster) = sources.cluster {
            registry.register_collector(Box::new(ClusterCollector(cluster)));
        }
        Exporter {
            registry: Arc::new(registry),
        }
    }

    /// The text of a scrape.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// A scrape's response.
    pub(crate) fn response(&self) -> Response {
        super::with_type(
            StatusCode::OK,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            self.text(),
        )
    }
}

/// A latency histogram read at scrape time: an HDR histogram in nanoseconds and its exact sum.
struct LatencyHistogram {
    histogram: Histogram<u64>,
    sum_ns: u64,
}

impl LatencyHistogram {
    fn read(shared: &Mutex<Histogram<u64>>, sum_ns: &AtomicU64) -> Option<LatencyHistogram> {
        let histogram = shared.lock().ok()?;
        // Recorders add to the histogram and then to the sum while holding the lock.
        let sum_ns = sum_ns.load(Ordering::Relaxed);
        Some(LatencyHistogram {
            histogram: histogram.clone(),
            sum_ns,
        })
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LatencyHistogram")
            .field("count", &self.histogram.len())
            .field("sum_ns", &self.sum_ns)
            .finish()
    }
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let count = self.histogram.len();
        let mut below = 0u64;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS_SECONDS.len() + 1);
        for bound in LATENCY_BUCKETS_SECONDS {
            let bound_ns = (bound * 1e9) as u64;
            let cumulative = if bound_ns >= self.histogram.max() {
                count
            } else {
                self.histogram.count_between(0, bound_ns).min(count)
            };
            let cumulative = cumulative.max(below);
            buckets.push((bound, cumulative - below));
            below = cumulative;
        }
        buckets.push((f64::INFINITY, count - below));
        encoder.encode_histogram::<NoLabelSet>(self.sum_ns as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Writes one metric family with no labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: Value,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, kind)?;
    value.encode(metric, kind)
}

/// Writes one metric family with one label and a sample per value of it.
fn labelled(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    samples: Vec<(String, Value)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (label_value, value) in samples {
        let labels = [(label, label_value.as_str())];
        let metric = family.encode_family(&labels)?;
        value.encode(metric, kind)?;
    }
    Ok(())
}

/// A sample's value.
enum Value {
    Integer(u64),
    Float(f64),
    Latency(Option<LatencyHistogram>),
}

impl Value {
    fn encode(self, mut metric: MetricEncoder, kind: MetricType) -> Result<(), std::fmt::Error> {
        match (self, kind) {
            (Value::Integer(value), MetricType::Counter) => {
                metric.encode_counter::<NoLabelSet, _, u64>(&value, None)
            }
            (Value::Float(value), MetricType::Counter) => {
                metric.encode_counter::<NoLabelSet, _, f64>(&value, None)
            }
            (Value::Integer(value), _) => metric.encode_gauge(&(value as i64)),
            (Value::Float(value), _) => metric.encode_gauge(&value),
            (Value::Latency(Some(histogram)), _) => histogram.encode(metric),
            (Value::Latency(None), _) => Ok(()),
        }
    }
}

fn load(value: &AtomicU64) -> Value {
    Value::Integer(value.load(Ordering::Relaxed))
}

#[derive(Debug)]
struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "ringmatch_build",
            "The running build (its labels; the value is always 1).",
            None,
            MetricType::Info,
        )?;
        let labels = [
            ("version", env!("CARGO_PKG_VERSION")),
            (
                "profile",
                if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
            ),
            ("target_arch", std::env::consts::ARCH),
            ("target_os", std::env::consts::OS),
        ];
        metric.encode_info(&labels)
    }
}

struct PipelineCollector(Arc<Metrics>);

impl Collector for PipelineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metrics = &*self.0;
        let journal = &metrics.journal;
        labelled(
            &mut encoder,
            "ringmatch_stage_sequence",
            "The last sequence each stage finished.",
            MetricType::Gauge,
            "stage",
            Stage::ALL
                .iter()
                .map(|stage| {
                    (
                        stage.name().to_string(),
                        load(&metrics.stage_seq[*stage as usize]),
                    )
                })
                .collect(),
        )?;
        labelled(
            &mut encoder,
            "ringmatch_stage_latency_seconds",
            "Latency from the command's ingress stamp to the end of each stage.",
            MetricType::Histogram,
            "stage",
            Stage::ALL
                .iter()
                .map(|stage| {
                    (
                        stage.name().to_string(),
                        Value::Latency(LatencyHistogram::read(
                            &metrics.stage_latency[*stage as usize],
                            &metrics.stage_latency_sum_ns[*stage as usize],
                        )),
                    )
                })
                .collect(),
        )?;
        single(
            &mut encoder,
            "ringmatch_journal_commit_seconds",
            "How long each end-of-batch journal sync took (journal.durability = batch).",
            MetricType::Histogram,
            Value::Latency(LatencyHistogram::read(
                &metrics.journal_sync,
                &metrics.journal_sync_sum_ns,
            )),
        )?;
        single(
            &mut encoder,
            "ringmatch_snapshot_pause_seconds",
            "How long the matcher paused for each snapshot.",
            MetricType::Histogram,
            Value::Latency(LatencyHistogram::read(
                &metrics.snapshot_pause,
                &metrics.snapshot_pause_sum_ns,
            )),
        )?;
        let counters: [(&str, &str, &AtomicU64); 6] = [
            (
                "ringmatch_journal_bytes",
                "Journal bytes appended.",
                &journal.bytes_written,
            ),
            (
                "ringmatch_journal_records",
                "Journal records appended.",
                &journal.records_written,
            ),
            (
                "ringmatch_journal_syncs",
                "Journal syncs of any kind: end-of-batch commits, segment rolls, shutdown.",
                &journal.syncs_count,
            ),
            (
                "ringmatch_events_written",
                "Events written to the output.",
                &metrics.events_written,
            ),
            (
                "ringmatch_snapshots_skipped",
                "Snapshots skipped because the writer was still busy with an earlier one.",
                &metrics.snapshots_skipped,
            ),
            (
                "ringmatch_input_ring_busy",
                "Submissions refused because the input ring was full.",
                &metrics.busy_count,
            ),
        ];
        for (name, help, value) in counters {
            single(&mut encoder, name, help, MetricType::Counter, load(value))?;
        }
        single(
            &mut encoder,
            "ringmatch_journal_sync_seconds",
            "Time spent in journal syncs of any kind.",
            MetricType::Counter,
            Value::Float(journal.sync_time_ns.load(Ordering::Relaxed) as f64 / 1e9),
        )?;
        let gauges: [(&str, &str, Value); 4] = [
            (
                "ringmatch_journal_durable_sequence",
                "The highest durable sequence.",
                load(&journal.durable_seq),
            ),
            (
                "ringmatch_input_ring_occupancy_commands",
                "Commands in the input ring not yet matched.",
                Value::Integer(metrics.input_ring_occupancy()),
            ),
            (
                "ringmatch_input_ring_slots",
                "Slots in the input ring.",
                Value::Integer(metrics.input_ring_slots_count),
            ),
            (
                "ringmatch_snapshot_last_sequence",
                "The sequence the newest snapshot was taken after (0: none yet).",
                Value::Integer(
                    metrics
                        .last_snapshot
                        .lock()
                        .ok()
                        .and_then(|last| last.as_ref().map(|(seq, _, _)| *seq))
                        .unwrap_or(0),
                ),
            ),
        ];
        for (name, help, value) in gauges {
            single(&mut encoder, name, help, MetricType::Gauge, value)?;
        }
        Ok(())
    }
}

struct GatewayCollector(Arc<GatewayMetrics>);

impl Collector for GatewayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gateway = &*self.0;
        single(
            &mut encoder,
            "ringmatch_gateway_sessions",
            "Order-entry sessions logged in now.",
            MetricType::Gauge,
            load(&gateway.sessions_active),
        )?;
        let counters: [(&str, &str, &AtomicU64); 5] = [
            (
                "ringmatch_gateway_connections",
                "Order-entry connections accepted.",
                &gateway.connections,
            ),
            (
                "ringmatch_gateway_connections_refused",
                "Order-entry connections refused: the gateway had its maximum number of sessions.",
                &gateway.connections_refused,
            ),
            (
                "ringmatch_gateway_commands",
                "Commands sessions put on the input ring.",
                &gateway.commands,
            ),
            (
                "ringmatch_gateway_throttled",
                "Commands refused by a session's rate limit.",
                &gateway.throttled,
            ),
            (
                "ringmatch_gateway_busy",
                "Commands refused because the input ring was full.",
                &gateway.busy,
            ),
        ];
        for (name, help, value) in counters {
            single(&mut encoder, name, help, MetricType::Counter, load(value))?;
        }
        labelled(
            &mut encoder,
            "ringmatch_gateway_logins",
            "Logins, by result.",
            MetricType::Counter,
            "result",
            vec![
                ("accepted".into(), load(&gateway.logins_accepted)),
                ("refused".into(), load(&gateway.logins_refused)),
            ],
        )?;
        labelled(
            &mut encoder,
            "ringmatch_gateway_sessions_ended",
            "Sessions ended, by reason (slow_consumer: disconnected for not reading).",
            MetricType::Counter,
            "reason",
            SessionEnd::ALL
                .iter()
                .map(|end| {
                    (
                        end.name().to_string(),
                        Value::Integer(gateway.sessions_ended(*end)),
                    )
                })
                .collect(),
        )?;
        single(
            &mut encoder,
            "ringmatch_gateway_wire_to_wire_seconds",
            "From a command's ingress stamp at the gateway to its ack written to the session's socket.",
            MetricType::Histogram,
            Value::Latency(LatencyHistogram::read(
                &gateway.wire_to_wire,
                &gateway.wire_to_wire_sum_ns,
            )),
        )
    }
}

struct KafkaCollector(Arc<KafkaMetrics>);

impl Collector for KafkaCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kafka = &*self.0;
        let counters: [(&str, &str, &AtomicU64); 4] = [
            (
                "ringmatch_kafka_events_committed",
                "Events committed to Kafka (visible to consumers), replayed ones included.",
                &kafka.events_committed,
            ),
            (
                "ringmatch_kafka_bytes_committed",
                "Value bytes committed to Kafka.",
                &kafka.bytes_committed,
            ),
            (
                "ringmatch_kafka_commits",
                "Transactions committed (or flushes confirmed).",
                &kafka.commits,
            ),
            (
                "ringmatch_kafka_events_skipped",
                "Replayed events skipped because Kafka already held them.",
                &kafka.events_skipped,
            ),
        ];
        for (name, help, value) in counters {
            single(&mut encoder, name, help, MetricType::Counter, load(value))?;
        }
        single(
            &mut encoder,
            "ringmatch_kafka_committed_sequence",
            "The sequence of the newest committed event (0: none yet).",
            MetricType::Gauge,
            load(&kafka.committed_seq),
        )?;
        single(
            &mut encoder,
            "ringmatch_kafka_events_pending",
            "Events handed to the producer and not yet committed (the output's lag, in events).",
            MetricType::Gauge,
            load(&kafka.events_pending),
        )?;
        labelled(
            &mut encoder,
            "ringmatch_kafka_errors",
            "Kafka errors, by kind (retriable, aborted, fatal, queue_full).",
            MetricType::Counter,
            "kind",
            vec![
                ("retriable".into(), load(&kafka.errors_retriable)),
                ("aborted".into(), load(&kafka.errors_aborted)),
                ("fatal".into(), load(&kafka.errors_fatal)),
                ("queue_full".into(), load(&kafka.errors_queue_full)),
            ],
        )?;
        single(
            &mut encoder,
            "ringmatch_kafka_commit_seconds",
            "How long each Kafka transaction commit (or flush) took.",
            MetricType::Histogram,
            Value::Latency(LatencyHistogram::read(
                &kafka.commit_latency,
                &kafka.commit_latency_sum_ns,
            )),
        )?;
        single(
            &mut encoder,
            "ringmatch_kafka_output_lag_seconds",
            "From a command's ingress stamp to the commit that made its first event visible.",
            MetricType::Histogram,
            Value::Latency(LatencyHistogram::read(
                &kafka.output_lag,
                &kafka.output_lag_sum_ns,
            )),
        )
    }
}

struct ClusterCollector(Arc<Replica>);

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.0.status();
        let stats = self.0.transport_stats();
        let roles = [
            Role::Leader,
            Role::Follower,
            Role::Candidate,
            Role::PreCandidate,
            Role::Learner,
        ];
        labelled(
            &mut encoder,
            "ringmatch_cluster_role",
            "This node's Raft role (1 for the current one).",
            MetricType::Gauge,
            "role",
            roles
                .iter()
                .map(|role| {
                    (
                        role.name().to_string(),
                        Value::Integer(u64::from(*role == status.role)),
                    )
                })
                .collect(),
        )?;
        let gauges = [
            (
                "ringmatch_cluster_term",
                "The current Raft term.",
                status.term,
            ),
            (
                "ringmatch_cluster_leader_id",
                "The leader this node knows of (0: none).",
                status.leader_id,
            ),
            (
                "ringmatch_cluster_commit_sequence",
                "The highest sequence known committed.",
                status.commit,
            ),
            (
                "ringmatch_cluster_last_sequence",
                "The last sequence in this node's journal.",
                status.last_index,
            ),
        ];
        for (name, help, value) in gauges {
            single(
                &mut encoder,
                name,
                help,
                MetricType::Gauge,
                Value::Integer(value),
            )?;
        }
        labelled(
            &mut encoder,
            "ringmatch_cluster_member_lag_commands",
            "On the leader: commands each other member lacks.",
            MetricType::Gauge,
            "node",
            status
                .members
                .iter()
                .map(|member| {
                    (
                        member.node_id.to_string(),
                        Value::Integer(status.last_index.saturating_sub(member.matched)),
                    )
                })
                .collect(),
        )?;
        let counters: [(&str, &str, &AtomicU64); 7] = [
            (
                "ringmatch_cluster_frames_sent",
                "Replication frames sent.",
                &stats.frames_sent,
            ),
            (
                "ringmatch_cluster_frames_received",
                "Replication frames received.",
                &stats.frames_received,
            ),
            (
                "ringmatch_cluster_frames_dropped",
                "Replication frames dropped (a full queue or an unreachable peer).",
                &stats.frames_dropped,
            ),
            (
                "ringmatch_cluster_frames_refused",
                "Replication connections closed for sending something that is not a frame.",
                &stats.frames_refused,
            ),
            (
                "ringmatch_cluster_frames_sent_directly",
                "Of the replication frames sent, those the Raft thread wrote itself.",
                &stats.frames_sent_directly,
            ),
            (
                "ringmatch_cluster_connections_evicted",
                "Replication connections closed to make room for a new one (64 held).",
                &stats.connections_evicted,
            ),
            (
                "ringmatch_cluster_peers_gone",
                "Times a member's connection ended and its replication port then refused \
                 connections (its process had ended).",
                &stats.peers_gone,
            ),
        ];
        for (name, help, value) in counters {
            single(&mut encoder, name, help, MetricType::Counter, load(value))?;
        }
        Ok(())
    }
}

/// The process, read from `/proc/self` (Linux): CPU time, memory, file descriptors, threads,
/// start time, under the names Prometheus client libraries use.
#[derive(Debug)]
struct ProcessCollector;

struct ProcessStats {
    cpu_seconds: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
    threads: u64,
    start_time_seconds: f64,
    open_fds: u64,
    max_fds: u64,
}

/// `/proc` counts CPU time in USER_HZ ticks, which Linux fixes at 100 per second for
/// user space on the architectures this runs on (x86-64, arm64).
const USER_HZ: f64 = 100.0;

fn process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields follow the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // Field numbers as in proc(5); field 3 (state) is at index 0.
    let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let status_kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let boot_time_seconds: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0);
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
        threads: field(20)?,
        start_time_seconds: boot_time_seconds as f64 + field(22)? as f64 / USER_HZ,
        virtual_bytes: status_kib("VmSize:")? * 1024,
        resident_bytes: status_kib("VmRSS:")? * 1024,
        open_fds,
        max_fds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = process_stats() else {
            return Ok(());
        };
        single(
            &mut encoder,
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds.",
            MetricType::Counter,
            Value::Float(stats.cpu_seconds),
        )?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Value::Integer(stats.resident_bytes),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                Value::Integer(stats.virtual_bytes),
            ),
            (
                "process_open_fds",
                "Open file descriptors.",
                Value::Integer(stats.open_fds),
            ),
            (
                "process_max_fds",
                "The limit on open file descriptors.",
                Value::Integer(stats.max_fds),
            ),
            (
                "process_threads",
                "Threads of the process.",
                Value::Integer(stats.threads),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
                Value::Float(stats.start_time_seconds),
            ),
        ];
        for (name, help, value) in gauges {
            single(&mut encoder, name, help, MetricType::Gauge, value)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for PipelineCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PipelineCollector")
    }
}

impl std::fmt::Debug for GatewayCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("GatewayCollector")
    }
}

impl std::fmt::Debug for KafkaCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("KafkaCollector")
    }
}

impl std::fmt::Debug for ClusterCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ClusterCollector")
    }
}
