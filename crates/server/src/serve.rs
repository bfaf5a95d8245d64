//! `ringmatch serve`: recover, start the pipeline and the admin HTTP listener, run until
//! SIGINT or SIGTERM, then stop cleanly (stop input, drain the rings, sync the journal).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ringmatch_journal::DamagePolicy;
use ringmatch_kafka::{EventEncoder, KafkaMetrics, KafkaOutput, OutputFormat};
use ringmatch_pipeline::ports::JournalPort;
use ringmatch_pipeline::{
    install_fatal_panic_hook, now_ns, recover, recover_with, Pipeline, PipelineConfig, Recovered,
    RecoveryError, RecoveryOptions, ResumableOutput, Stage,
};
use ringmatch_proto::{Command, CommandType};
use ringmatch_replication::Replica;

use crate::admin::dashboard::Recent;
use crate::admin::metrics::{Exporter, Sources};
use crate::admin::{routes, AdminServer};
use crate::config::Config;

/// Logs one line at level info, target `ringmatch` (see `crate::logging`).
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        tracing::info!(target: "ringmatch", $($arg)*)
    };
}

/// Logs one line at level warn, target `ringmatch`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        tracing::warn!(target: "ringmatch", $($arg)*)
    };
}

/// Options of `serve` beyond the configuration file.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Cut the journal at damage found before its tail instead of refusing to start.
    pub cut_damaged_journal: bool,
    /// Publish to Kafka at these bootstrap servers (overrides `kafka.bootstrap`).
    pub kafka_bootstrap: Option<String>,
}

/// Runs the service until a termination signal.
pub fn serve(config: &Config, options: ServeOptions) -> anyhow::Result<()> {
    install_fatal_panic_hook();
    let mut config = config.clone();
    if let Some(bootstrap) = &options.kafka_bootstrap {
        config.kafka.bootstrap = bootstrap.clone();
    }
    let config = &config;
    let kafka_config = config.kafka_config()?;
    let admin_address: SocketAddr =
        config.admin.listen.parse().with_context(|| {
            format!("admin.listen = {:?} is not an address", config.admin.listen)
        })?;
    let admin_token = config
        .admin
        .token_hash
        .as_deref()
        .map(|stored| ringmatch_gateway::Credential::parse(0, stored, Vec::new()))
        .transpose()
        .map_err(|problem| anyhow::anyhow!("admin.token_hash: {problem}"))?;
    anyhow::ensure!(
        admin_address.ip().is_loopback() || admin_token.is_some(),
        "admin.listen = {admin_address} is not a loopback address: set admin.token_hash \
         (ringmatch hash-token) so that requests must carry the admin token"
    );
    let pipeline_config = config.pipeline_config()?;
    pipeline_config.validate()?;
    // Before any thread starts, so that every thread inherits it.
    if let Some(cores) = &config.pipeline.cores.service {
        ringmatch_pipeline::restrict_thread_to_cores("service (pipeline.cores.service)", cores)?;
        log!("service threads restricted to cores {cores:?}");
    }
    log!(
        "starting: data directory {}, journal durability {}, wait strategy {}, {} instruments, \
         snapshots every {} commands / {} s (keep {})",
        config.data.dir.display(),
        config.journal.durability,
        config.pipeline.wait_strategy,
        config.instruments.len(),
        config.snapshots.every_commands,
        config.snapshots.every_seconds,
        config.snapshots.keep
    );
    std::fs::create_dir_all(&config.data.dir)
        .with_context(|| format!("cannot create data directory {}", config.data.dir.display()))?;
    let recovery = RecoveryOptions {
        matcher: config.matcher(),
        journal: config.journal_config()?,
        damage_policy: if options.cut_damaged_journal {
            DamagePolicy::CutAtDamage
        } else {
            DamagePolicy::Refuse
        },
        snapshot_dir: config.snapshot_dir(),
        snapshots_kept_count: config.snapshots.keep,
        events_path: config.events_path(),
    };
    let started = Instant::now();
    if let Some(plan) = config.cluster_plan()? {
        return crate::cluster::serve_cluster(
            config,
            plan,
            pipeline_config,
            Surface {
                admin_address,
                admin_token,
                kafka: None,
                cluster: None,
            },
            &recovery,
            kafka_config,
        );
    }
    let mut progress = log_replay_progress;
    match kafka_config {
        None => {
            log!(
                "output: the embedded events file {}",
                config.events_path().display()
            );
            let recovered = recover(&recovery, &mut progress)?;
            let events = recovered.output.report();
            log!(
                "events file: {} records, {}, cut {} bytes, dropped {} records ahead of the \
                 journal",
                events.records_count,
                match events.resume_point {
                    Some((seq, index)) => format!("the last is event {index} of sequence {seq}"),
                    None => "none yet".into(),
                },
                events.cut_bytes_count,
                events.dropped_ahead_count,
            );
            run(
                config,
                pipeline_config,
                Surface {
                    admin_address,
                    admin_token,
                    kafka: None,
                    cluster: None,
                },
                started,
                recovered.into(),
            )
        }
        Some(kafka_config) => {
            log!(
                "output: Kafka at {} (topics {:?} and {:?}, {} partitions, delivery {}, \
                 transactional.id {:?}, format {:?})",
                kafka_config.bootstrap,
                kafka_config.events_topic,
                kafka_config.market_data_topic,
                kafka_config.partitions,
                config.kafka.delivery,
                kafka_config.transactional_id,
                kafka_config.format
            );
            let recovered = recover_with(
                &recovery,
                |journal_next_seq| open_kafka(&kafka_config, journal_next_seq),
                &mut progress,
            )?;
            let kafka_metrics = recovered.output.metrics();
            run(
                config,
                pipeline_config,
                Surface {
                    admin_address,
                    admin_token,
                    kafka: Some(kafka_metrics),
                    cluster: None,
                },
                started,
                recovered.into(),
            )
        }
    }
}

/// Logs the progress of a replay (about once a second).
pub(crate) fn log_replay_progress(progress: ringmatch_pipeline::ReplayProgress) {
    log!(
        "replay: {} of {} commands, {:.0} commands/s, about {:.1} s left",
        progress.replayed_count,
        progress.total_count,
        progress.rate_per_second,
        progress.eta.as_secs_f64()
    )
}

/// Opens the Kafka output (it reads what the topics hold, refuses an output ahead of the
/// journal, then fences older producers), logging what it found.
pub(crate) fn open_kafka(
    kafka_config: &ringmatch_kafka::KafkaConfig,
    journal_next_seq: u64,
) -> Result<KafkaOutput, RecoveryError> {
    open_kafka_from(kafka_config, None, journal_next_seq)
}

/// [`open_kafka`], on what [`KafkaOutput::prepare`] made ahead when there is that.
pub(crate) fn open_kafka_from(
    kafka_config: &ringmatch_kafka::KafkaConfig,
    prepared: Option<ringmatch_kafka::PreparedKafka>,
    journal_next_seq: u64,
) -> Result<KafkaOutput, RecoveryError> {
    let encoder = match kafka_config.format {
        OutputFormat::Binary => EventEncoder::Binary,
        OutputFormat::Json => EventEncoder::Json(crate::script::event_to_json),
    };
    let (output, report) = match prepared {
        Some(prepared) => prepared.open(encoder, journal_next_seq),
        None => KafkaOutput::open(kafka_config, encoder, journal_next_seq),
    }
    .map_err(|error| RecoveryError::Output(error.to_string()))?;
    for topic in &report.created_topics {
        log!("kafka: created topic {topic:?}");
    }
    log!(
        "kafka: ready in {:.3} s (topics {:.3} s, fencing older producers {:.3} s{}); {}",
        report.open_duration.as_secs_f64(),
        report.topics_duration.as_secs_f64(),
        report.fence_duration.as_secs_f64(),
        if report.prepared_ahead {
            "; connected while following"
        } else {
            ""
        },
        match report.resume.max() {
            Some((seq, index)) => format!("the last committed is event {index} of sequence {seq}"),
            None => "nothing committed yet".into(),
        },
    );
    Ok(output)
}

/// What the service shows its operators and clients.
pub(crate) struct Surface {
    pub(crate) admin_address: SocketAddr,
    pub(crate) admin_token: Option<ringmatch_gateway::Credential>,
    pub(crate) kafka: Option<Arc<KafkaMetrics>>,
    pub(crate) cluster: Option<Arc<Replica>>,
}

/// The recovered state the pipeline starts from.
pub(crate) struct Start<O, J> {
    pub(crate) engine: ringmatch_matcher::Engine,
    pub(crate) journal: J,
    pub(crate) output: O,
    pub(crate) snapshots: ringmatch_journal::SnapshotStore,
    /// The link the Matcher waits on before it runs a command (a cluster leader's).
    pub(crate) link: Option<Box<dyn ringmatch_pipeline::ports::ReplicaLink>>,
}

impl<O: ResumableOutput> From<Recovered<O>> for Start<O, ringmatch_journal::Journal> {
    fn from(recovered: Recovered<O>) -> Self {
        report_recovery(&recovered);
        Start {
            engine: recovered.engine,
            journal: recovered.journal,
            output: recovered.output,
            snapshots: recovered.snapshots,
            link: None,
        }
    }
}

/// Starts the pipeline on the recovered state and output, the gateway and the admin
/// listener, and runs until a termination signal.
pub(crate) fn run<O: ResumableOutput, J: JournalPort>(
    config: &Config,
    pipeline_config: PipelineConfig,
    surface: Surface,
    started: Instant,
    recovered: Start<O, J>,
) -> anyhow::Result<()> {
    let Surface {
        admin_address,
        admin_token,
        kafka,
        cluster,
    } = surface;
    let state_hash = recovered.engine.state_hash();
    let next_seq = recovered.journal.next_seq();
    log!(
        "recovered in {:.3} s: next sequence {next_seq}, state hash {state_hash:#018x}",
        started.elapsed().as_secs_f64()
    );
    let gateway_config = config
        .gateway
        .enabled
        .then(|| config.gateway_config())
        .transpose()?;
    let gateway_metrics = Arc::new(ringmatch_gateway::GatewayMetrics::default());
    let (router, registrations) = match gateway_config {
        Some(_) => {
            let (router, registrations) =
                ringmatch_gateway::responder(Arc::clone(&gateway_metrics));
            (
                Some(Box::new(router) as Box<dyn ringmatch_pipeline::EventRouter>),
                Some(registrations),
            )
        }
        None => (None, None),
    };
    // Fault injection for the tests that prove a panicking stage stops the service: the
    // sink is wrapped only when asked, so the pipeline itself carries no test hook.
    let pipeline = match fault_panic_at_seq()? {
        None => Pipeline::start_replicated(
            &pipeline_config,
            recovered.engine,
            recovered.journal,
            recovered.output,
            Some(recovered.snapshots),
            router,
            recovered.link,
        )?,
        Some(seq) => {
            log!("FAULT INJECTION: the publisher will panic at sequence {seq}");
            Pipeline::start_replicated(
                &pipeline_config,
                recovered.engine,
                recovered.journal,
                PanicAtSeq {
                    inner: recovered.output,
                    seq,
                },
                Some(recovered.snapshots),
                router,
                recovered.link,
            )?
        }
    };
    let metrics = pipeline.metrics();
    // The dashboard's latency window starts before any listener takes a command.
    let recent = Arc::new(Mutex::new(Recent::new(
        &metrics,
        registrations.is_some().then_some(&gateway_metrics),
        kafka.as_ref(),
    )));
    let gateway = match (gateway_config, registrations) {
        (Some(gateway_config), Some(registrations)) => {
            let listen = gateway_config.listen;
            let gateway = ringmatch_gateway::Gateway::start(
                gateway_config,
                pipeline.submitter(),
                registrations,
                Arc::clone(&gateway_metrics),
            )
            .with_context(|| format!("cannot listen on {listen} (gateway.listen)"))?;
            log!("gateway listening on {}", gateway.local_addr());
            Some(gateway)
        }
        _ => None,
    };
    let gateway_metrics = gateway.is_some().then_some(gateway_metrics);

    let signal = crate::signals::StopSignal::get()?;
    let stop = signal.flag();

    let admin = AdminServer::start(
        admin_address,
        admin_token,
        routes::leading(routes::Leading {
            submitter: Mutex::new(pipeline.submitter()),
            metrics: Arc::clone(&metrics),
            market_data: pipeline.market_data(),
            kafka: kafka.clone(),
            cluster: cluster.clone(),
            prometheus: Exporter::new(Sources {
                pipeline: Some(Arc::clone(&metrics)),
                gateway: gateway_metrics,
                kafka,
                cluster,
            }),
            recent: Arc::clone(&recent),
            instruments: config
                .instruments
                .iter()
                .map(|instrument| (instrument.id, instrument.symbol.clone()))
                .collect(),
        }),
    )?;
    admin.every(Duration::from_secs(1), move || {
        if let Ok(mut recent) = recent.lock() {
            recent.sample();
        }
    });
    log!("admin listening on http://{}", admin.local_addr());
    let timer = (config.snapshots.every_seconds > 0).then(|| {
        let mut submitter = pipeline.submitter();
        let stop = Arc::clone(&stop);
        let every = Duration::from_secs(config.snapshots.every_seconds);
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= every {
                    last = Instant::now();
                    let mut command = Command::empty(CommandType::Snapshot);
                    command.timestamp_ns = now_ns();
                    if submitter.try_submit(&command).is_err() {
                        warn!("timed snapshot skipped: the input ring is full");
                    }
                }
            }
        })
    });
    let clock = (config.pipeline.time_tick_ms > 0).then(|| {
        let mut submitter = pipeline.submitter();
        let stop = Arc::clone(&stop);
        let metrics = Arc::clone(&metrics);
        let tick = Duration::from_millis(config.pipeline.time_tick_ms);
        std::thread::spawn(move || {
            // The journaled sequence a tick expects when nothing else arrived.
            let mut idle_at = metrics.stage_seq[Stage::Journaled as usize].load(Ordering::Relaxed);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                let journaled =
                    metrics.stage_seq[Stage::Journaled as usize].load(Ordering::Relaxed);
                if journaled > idle_at {
                    // Commands arrived: their timestamps move the engine's time.
                    idle_at = journaled;
                    continue;
                }
                // Idle: a time command, but only when an order's expiry has come.
                let next_expiry_ns = metrics.next_expiry_ns.load(Ordering::Relaxed);
                let now = now_ns();
                if next_expiry_ns == 0 || now < next_expiry_ns {
                    continue;
                }
                let mut command = Command::empty(CommandType::Time);
                command.timestamp_ns = now;
                if submitter.try_submit(&command).is_ok() {
                    idle_at = journaled + 1;
                }
            }
        })
    });
    log!("ready");
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    log!("stopping: no more input; draining the rings");
    if let Some(gateway) = gateway {
        gateway.shutdown(Duration::from_secs(2));
    }
    admin.shutdown();
    if let Some(timer) = timer {
        timer
            .join()
            .expect("timer thread panics are fatal before this point");
    }
    if let Some(clock) = clock {
        clock
            .join()
            .expect("clock thread panics are fatal before this point");
    }
    pipeline.shutdown();
    log!(
        "stopped cleanly: last sequence {}, journal synced",
        metrics.stage_seq[Stage::Published as usize]
            .load(Ordering::Relaxed)
            .max(metrics.stage_seq[Stage::Matched as usize].load(Ordering::Relaxed))
    );
    Ok(())
}

/// `RINGMATCH_FAULT_PANIC_AT_SEQ`: the sequence at which the Publisher is made to panic.
fn fault_panic_at_seq() -> anyhow::Result<Option<u64>> {
    match std::env::var("RINGMATCH_FAULT_PANIC_AT_SEQ") {
        Ok(value) => {
            Ok(Some(value.parse().with_context(|| {
                format!("RINGMATCH_FAULT_PANIC_AT_SEQ={value:?}")
            })?))
        }
        Err(_) => Ok(None),
    }
}

/// An output that panics on the first live event of sequence `seq` (fault injection).
struct PanicAtSeq<O> {
    inner: O,
    seq: u64,
}

impl<O: ringmatch_pipeline::OutputSink> ringmatch_pipeline::OutputSink for PanicAtSeq<O> {
    fn push(&mut self, event: &ringmatch_proto::Event) {
        if event.seq == self.seq {
            panic!(
                "injected fault: the publisher panics at sequence {}",
                self.seq
            );
        }
        self.inner.push(event);
    }

    fn end_of_batch(&mut self) {
        self.inner.end_of_batch();
    }

    fn durability(&self) -> ringmatch_pipeline::OutputDurability {
        self.inner.durability()
    }

    fn last_event_position(&self) -> Option<ringmatch_pipeline::EventPosition> {
        self.inner.last_event_position()
    }
}

/// Logs a torn tail that opening the journal cut.
pub(crate) fn log_tail_cut(report: &ringmatch_journal::OpenReport) {
    if let Some(cut) = &report.tail_cut {
        warn!(
            "journal: cut a torn tail of {} bytes at {} offset {}, from sequence {}",
            cut.bytes_count,
            cut.path.display(),
            cut.offset,
            cut.from_seq
        );
    }
}

fn report_recovery<O: ResumableOutput>(recovered: &Recovered<O>) {
    let report = &recovered.journal_report;
    log_tail_cut(report);
    if let Some(cut) = &report.damage_cut {
        warn!(
            "journal: CUT AT DAMAGE (--cut-damaged-journal): {} offset {}, from sequence {} ({}); \
             moved aside: {:?}",
            cut.path.display(),
            cut.offset,
            cut.from_seq,
            cut.problem,
            cut.quarantined
        );
    }
    for problem in &recovered.snapshot_problems {
        warn!("snapshot skipped: {problem}");
    }
    match &recovered.snapshot {
        Some(info) => log!(
            "snapshot: using {} (after sequence {})",
            info.path.display(),
            info.seq
        ),
        None => log!("snapshot: none used; replaying the whole journal"),
    }
    log!(
        "journal: sequences {}..{} in {} segments; replayed {} commands in {:.3} s; {} replayed \
         events were already out",
        report.first_seq,
        report.next_seq,
        report.segments_count,
        recovered.replayed_count,
        recovered.replay_duration.as_secs_f64(),
        recovered.output.skipped_count()
    );
}
