//! `ringmatch serve`: recover, start the pipeline and the admin HTTP listener, run until
//! SIGINT or SIGTERM, then stop cleanly (stop input, drain the rings, sync the journal).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ringmatch_journal::DamagePolicy;
use ringmatch_kafka::{EventEncoder, KafkaMetrics, KafkaOutput, OutputFormat};
use ringmatch_pipeline::ports::JournalPort;
use ringmatch_pipeline::{
    install_fatal_panic_hook, now_ns, recover, recover_with, Metrics, Pipeline, PipelineConfig,
    Recovered, RecoveryError, RecoveryOptions, ResumableOutput, Stage, Submitter,
};
use ringmatch_proto::{Command, CommandType};
use ringmatch_replication::Replica;

use crate::config::Config;
use crate::script::parse_command;

/// Prints one log line to standard error.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("ringmatch: {}", format_args!($($arg)*))
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

/// Largest request body the admin listener accepts.
const BODY_SIZE_MAX_BYTES: usize = 16 << 20;
/// How long `POST /commands` waits for its commands to become durable.
const DURABLE_WAIT: Duration = Duration::from_secs(10);

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
                "events file: {} records, resume point {:?}, cut {} bytes, dropped {} records \
                 ahead of the journal",
                events.records_count,
                events.resume_point,
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
    let encoder = match kafka_config.format {
        OutputFormat::Binary => EventEncoder::Binary,
        OutputFormat::Json => EventEncoder::Json(crate::script::event_to_json),
    };
    let (output, report) = KafkaOutput::open(kafka_config, encoder, journal_next_seq)
        .map_err(|error| RecoveryError::Output(error.to_string()))?;
    for topic in &report.created_topics {
        log!("kafka: created topic {topic:?}");
    }
    log!(
        "kafka: ready in {:.3} s (topics {:.3} s, fencing older producers {:.3} s); last \
         committed event (sequence, index): {:?}",
        report.open_duration.as_secs_f64(),
        report.topics_duration.as_secs_f64(),
        report.fence_duration.as_secs_f64(),
        report.resume.max(),
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
    /// The Replicator's link (a cluster leader's).
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
    let (router, registrations) = match gateway_config {
        Some(_) => {
            let (router, registrations) = ringmatch_gateway::responder();
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
    let gateway = match (gateway_config, registrations) {
        (Some(gateway_config), Some(registrations)) => {
            let listen = gateway_config.listen;
            let gateway = ringmatch_gateway::Gateway::start(
                gateway_config,
                pipeline.submitter(),
                registrations,
            )
            .with_context(|| format!("cannot listen on {listen} (gateway.listen)"))?;
            log!("gateway listening on {}", gateway.local_addr());
            Some(gateway)
        }
        _ => None,
    };

    let stop = Arc::new(AtomicBool::new(false));
    // A second signal while stopping (for example while the output waits for its broker)
    // ends the process at once, with status 1; the journal is consistent at any moment.
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }

    let listener = TcpListener::bind(admin_address)
        .with_context(|| format!("cannot listen on {admin_address} (admin.listen)"))?;
    listener.set_nonblocking(true)?;
    log!("admin listening on http://{}", listener.local_addr()?);
    let admin = {
        let mut admin = Admin {
            submitter: pipeline.submitter(),
            metrics: Arc::clone(&metrics),
            market_data: pipeline.market_data(),
            token: admin_token,
            kafka,
            cluster,
        };
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || run_admin(&listener, &mut admin, &stop))?
    };
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
                        log!("timed snapshot skipped: the input ring is full");
                    }
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
    admin
        .join()
        .expect("admin thread panics are fatal before this point");
    if let Some(timer) = timer {
        timer
            .join()
            .expect("timer thread panics are fatal before this point");
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
        log!(
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
        log!(
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
        log!("snapshot skipped: {problem}");
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

/// What the admin listener works with.
struct Admin {
    submitter: Submitter,
    metrics: Arc<Metrics>,
    market_data: Arc<ringmatch_pipeline::MarketData>,
    token: Option<ringmatch_gateway::Credential>,
    kafka: Option<Arc<KafkaMetrics>>,
    cluster: Option<Arc<Replica>>,
}

fn run_admin(listener: &TcpListener, admin: &mut Admin, stop: &AtomicBool) {
    let token = admin.token.clone();
    serve_admin(listener, token.as_ref(), stop, &mut |method, path, body| {
        route(method, path, body, admin)
    });
}

/// The admin listener's loop: one request per connection, each answered by `route`.
pub(crate) fn serve_admin(
    listener: &TcpListener,
    token: Option<&ringmatch_gateway::Credential>,
    stop: &AtomicBool,
    route: &mut dyn FnMut(&str, &str, &[u8]) -> Response,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(error) = handle_connection(stream, token, route) {
                    log!("admin: request failed: {error}");
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => log!("admin: accept failed: {error}"),
        }
    }
}

pub(crate) struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    pub(crate) fn prometheus(body: String) -> Response {
        Response {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body,
        }
    }

    pub(crate) fn json(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "application/json",
            body,
        }
    }
}

fn handle_connection(
    stream: TcpStream,
    token: Option<&ringmatch_gateway::Credential>,
    route: &mut dyn FnMut(&str, &str, &[u8]) -> Response,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut content_length = 0usize;
    let mut bearer: Option<String> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(usize::MAX);
            }
            if name.trim().eq_ignore_ascii_case("authorization") {
                bearer = value.trim().strip_prefix("Bearer ").map(str::to_string);
            }
        }
    }
    let authorized = token.is_none_or(|token| {
        bearer
            .as_deref()
            .is_some_and(|given| token.verify(given.as_bytes()))
    });
    let response = if !authorized {
        Response::json(401, "{\"error\":\"admin token required\"}".into())
    } else if content_length > BODY_SIZE_MAX_BYTES {
        Response::json(
            413,
            format!("{{\"error\":\"body over {BODY_SIZE_MAX_BYTES} bytes\"}}"),
        )
    } else {
        let mut body = vec![0u8; content_length];
        reader.read_exact(&mut body)?;
        route(method, path, &body)
    };
    let reason = match response.status {
        200 => "OK",
        202 => "Accepted",
        401 => "Unauthorized",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        response.status,
        response.content_type,
        response.body.len(),
        response.body
    )?;
    stream.flush()
}

fn route(method: &str, path: &str, body: &[u8], admin: &mut Admin) -> Response {
    let submitter = &mut admin.submitter;
    let metrics = &*admin.metrics;
    if let Some(rest) = path.strip_prefix("/book/") {
        if method != "GET" {
            return Response::json(405, "{\"error\":\"method not allowed\"}".into());
        }
        return book_json(&admin.market_data, rest);
    }
    match (method, path) {
        ("GET", "/status") => Response::json(
            200,
            status_json(metrics, admin.kafka.as_deref(), admin.cluster.as_deref()),
        ),
        ("GET", "/metrics") => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: metrics_text(metrics)
                + &admin
                    .kafka
                    .as_ref()
                    .map(|kafka| kafka.prometheus_text())
                    .unwrap_or_default()
                + &admin
                    .cluster
                    .as_deref()
                    .map(crate::cluster::cluster_metrics_text)
                    .unwrap_or_default(),
        },
        ("POST", "/snapshot") => {
            let mut command = Command::empty(CommandType::Snapshot);
            command.timestamp_ns = now_ns();
            match submitter.try_submit(&command) {
                Ok(seq) => Response::json(202, format!("{{\"snapshot_after_seq\":{seq}}}")),
                Err(busy) => Response::json(503, format!("{{\"error\":\"{busy}\"}}")),
            }
        }
        ("POST", "/commands") => submit_commands(body, submitter, metrics),
        (_, "/status" | "/metrics" | "/snapshot" | "/commands") => {
            Response::json(405, "{\"error\":\"method not allowed\"}".into())
        }
        _ => Response::json(404, "{\"error\":\"no such path\"}".into()),
    }
}

/// Parses every line first (a bad line rejects the whole request, nothing submitted), stamps
/// each command with its ingress time, submits them in order, and answers once they are
/// durable under the journal's policy.
fn submit_commands(body: &[u8], submitter: &mut Submitter, metrics: &Metrics) -> Response {
    let Ok(text) = std::str::from_utf8(body) else {
        return Response::json(400, "{\"error\":\"body is not UTF-8\"}".into());
    };
    let mut commands = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_command(line) {
            Ok(command) => commands.push(command),
            Err(message) => {
                let message = serde_json::to_string(&message).unwrap_or_default();
                return Response::json(
                    400,
                    format!(
                        "{{\"error\":{message},\"line\":{},\"submitted\":0}}",
                        index + 1
                    ),
                );
            }
        }
    }
    let mut first_seq = None;
    let mut last_seq = None;
    let mut submitted = 0usize;
    let mut busy = None;
    for command in &mut commands {
        command.timestamp_ns = now_ns();
        match submitter.try_submit(command) {
            Ok(seq) => {
                first_seq.get_or_insert(seq);
                last_seq = Some(seq);
                submitted += 1;
            }
            Err(refusal) => {
                busy = Some(refusal);
                break;
            }
        }
    }
    // A reply that names sequences is a promise: it goes out only once those commands are
    // durable under the journal's policy. What was taken before a `busy` is waited for too.
    let durable = last_seq.is_none_or(|last| {
        let deadline = Instant::now() + DURABLE_WAIT;
        while metrics.journal.durable_seq.load(Ordering::Acquire) < last {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    });
    let sequences = if durable {
        format!(
            ",\"first_seq\":{},\"last_seq\":{}",
            json_option(first_seq),
            json_option(last_seq)
        )
    } else {
        String::new()
    };
    match busy {
        Some(busy) => Response::json(
            503,
            format!(
                "{{\"error\":\"{busy}\",\"submitted\":{submitted}{sequences},\"durable\":{durable}}}"
            ),
        ),
        None if durable => Response::json(
            200,
            format!("{{\"submitted\":{submitted}{sequences},\"durable\":true}}"),
        ),
        None => Response::json(
            504,
            format!(
                "{{\"error\":\"the commands were taken but not durable within {} s: they may \
                 or may not be in the journal\",\"submitted\":{submitted},\"durable\":false}}",
                DURABLE_WAIT.as_secs()
            ),
        ),
    }
}

/// `GET /book/<instrument>[?levels=N]`: L2 depth, best first (20 levels unless asked).
fn book_json(market_data: &ringmatch_pipeline::MarketData, rest: &str) -> Response {
    let (instrument, query) = rest.split_once('?').unwrap_or((rest, ""));
    let levels = query
        .strip_prefix("levels=")
        .map_or(Some(20), |value| value.parse::<usize>().ok());
    let (Ok(instrument), Some(levels)) = (instrument.parse::<u32>(), levels) else {
        return Response::json(
            400,
            "{\"error\":\"use /book/<instrument id>[?levels=N]\"}".into(),
        );
    };
    let Some(book) = market_data.book(instrument) else {
        return Response::json(
            404,
            format!("{{\"error\":\"unknown instrument {instrument}\"}}"),
        );
    };
    let (bids, asks) = book.top(levels);
    let render = |levels: Vec<(i64, u64)>| {
        levels
            .iter()
            .map(|(price, qty)| format!("[{price},{qty}]"))
            .collect::<Vec<_>>()
            .join(",")
    };
    Response::json(
        200,
        format!(
            "{{\"instrument\":{instrument},\"bids\":[{}],\"asks\":[{}]}}",
            render(bids),
            render(asks)
        ),
    )
}

fn json_option(value: Option<u64>) -> String {
    value.map_or_else(|| "null".into(), |value| value.to_string())
}

fn status_json(
    metrics: &Metrics,
    kafka: Option<&KafkaMetrics>,
    cluster: Option<&Replica>,
) -> String {
    let stage = |stage: Stage| metrics.stage_seq[stage as usize].load(Ordering::Relaxed);
    let journal = &metrics.journal;
    let last_snapshot = metrics
        .last_snapshot
        .lock()
        .ok()
        .and_then(|last| last.clone())
        .map_or_else(
            || "null".into(),
            |(seq, path, size)| {
                format!(
                    "{{\"seq\":{seq},\"path\":{},\"size_bytes\":{size}}}",
                    serde_json::to_string(&path).unwrap_or_default()
                )
            },
        );
    format!(
        "{{\"stages\":{{\"published_input\":{},\"journaled\":{},\"replicated\":{},\"matched\":{},\"published\":{}}},\
         \"input_ring\":{{\"slots\":{},\"occupancy\":{},\"busy_rejections\":{}}},\
         \"journal\":{{\"next_seq\":{},\"durable_seq\":{},\"bytes_written\":{},\"records_written\":{},\"syncs\":{}}},\
         \"events\":{{\"written\":{}}},\"last_snapshot\":{last_snapshot},\"kafka\":{},\"cluster\":{}}}",
        metrics.input_published_seq.load(Ordering::Relaxed),
        stage(Stage::Journaled),
        stage(Stage::Replicated),
        stage(Stage::Matched),
        stage(Stage::Published),
        metrics.input_ring_slots_count,
        metrics.input_ring_occupancy(),
        metrics.busy_count.load(Ordering::Relaxed),
        journal.next_seq.load(Ordering::Relaxed),
        journal.durable_seq.load(Ordering::Relaxed),
        journal.bytes_written.load(Ordering::Relaxed),
        journal.records_written.load(Ordering::Relaxed),
        journal.syncs_count.load(Ordering::Relaxed),
        metrics.events_written.load(Ordering::Relaxed),
        kafka.map_or_else(
            || "null".into(),
            |kafka| format!(
                "{{\"committed_seq\":{},\"events_committed\":{},\"events_pending\":{},\"commits\":{}}}",
                kafka.committed_seq.load(Ordering::Relaxed),
                kafka.events_committed.load(Ordering::Relaxed),
                kafka.events_pending.load(Ordering::Relaxed),
                kafka.commits.load(Ordering::Relaxed),
            )
        ),
        cluster.map_or_else(|| "null".into(), crate::cluster::cluster_json),
    )
}

fn metrics_text(metrics: &Metrics) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line("# HELP ringmatch_stage_sequence Last sequence each stage finished.".into());
    line("# TYPE ringmatch_stage_sequence gauge".into());
    for stage in Stage::ALL {
        line(format!(
            "ringmatch_stage_sequence{{stage=\"{}\"}} {}",
            stage.name(),
            metrics.stage_seq[stage as usize].load(Ordering::Relaxed)
        ));
    }
    line("# HELP ringmatch_stage_latency_seconds Latency from ingress to each stage.".into());
    line("# TYPE ringmatch_stage_latency_seconds summary".into());
    for stage in Stage::ALL {
        let histogram = metrics.latency(stage);
        for quantile in [0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
            line(format!(
                "ringmatch_stage_latency_seconds{{stage=\"{}\",quantile=\"{quantile}\"}} {:.9}",
                stage.name(),
                histogram.value_at_quantile(quantile) as f64 / 1e9
            ));
        }
        line(format!(
            "ringmatch_stage_latency_seconds_count{{stage=\"{}\"}} {}",
            stage.name(),
            histogram.len()
        ));
    }
    let journal = &metrics.journal;
    let counters: [(&str, &str, u64); 7] = [
        (
            "ringmatch_journal_bytes_total",
            "Journal bytes appended.",
            journal.bytes_written.load(Ordering::Relaxed),
        ),
        (
            "ringmatch_journal_syncs_total",
            "Journal syncs.",
            journal.syncs_count.load(Ordering::Relaxed),
        ),
        (
            "ringmatch_events_written_total",
            "Events written to the output sink.",
            metrics.events_written.load(Ordering::Relaxed),
        ),
        (
            "ringmatch_snapshots_skipped_total",
            "Snapshots skipped because the writer was busy (waiting for the output).",
            metrics.snapshots_skipped.load(Ordering::Relaxed),
        ),
        (
            "ringmatch_busy_total",
            "Submissions refused because the input ring was full.",
            metrics.busy_count.load(Ordering::Relaxed),
        ),
        (
            "ringmatch_journal_durable_sequence",
            "Highest durable sequence.",
            journal.durable_seq.load(Ordering::Relaxed),
        ),
        (
            "ringmatch_input_ring_occupancy",
            "Commands in the input ring not yet matched.",
            metrics.input_ring_occupancy(),
        ),
    ];
    for (name, help, value) in counters {
        line(format!("# HELP {name} {help}"));
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        line(format!("# TYPE {name} {kind}"));
        line(format!("{name} {value}"));
    }
    line("# HELP ringmatch_journal_sync_seconds_total Time spent in journal syncs.".into());
    line("# TYPE ringmatch_journal_sync_seconds_total counter".into());
    line(format!(
        "ringmatch_journal_sync_seconds_total {:.9}",
        journal.sync_time_ns.load(Ordering::Relaxed) as f64 / 1e9
    ));
    if let Ok(syncs) = metrics.journal_sync.lock() {
        line("# HELP ringmatch_journal_sync_latency_seconds Time of each end-of-batch journal sync (policy batch).".into());
        line("# TYPE ringmatch_journal_sync_latency_seconds summary".into());
        for quantile in [0.5, 0.99, 1.0] {
            line(format!(
                "ringmatch_journal_sync_latency_seconds{{quantile=\"{quantile}\"}} {:.9}",
                syncs.value_at_quantile(quantile) as f64 / 1e9
            ));
        }
        line(format!(
            "ringmatch_journal_sync_latency_seconds_count {}",
            syncs.len()
        ));
    }
    if let Ok(pauses) = metrics.snapshot_pause.lock() {
        line(
            "# HELP ringmatch_snapshot_pause_seconds How long the matcher paused per snapshot."
                .into(),
        );
        line("# TYPE ringmatch_snapshot_pause_seconds summary".into());
        for quantile in [0.5, 1.0] {
            line(format!(
                "ringmatch_snapshot_pause_seconds{{quantile=\"{quantile}\"}} {:.9}",
                pauses.value_at_quantile(quantile) as f64 / 1e9
            ));
        }
        line(format!(
            "ringmatch_snapshot_pause_seconds_count {}",
            pauses.len()
        ));
    }
    out
}
