//! The `ringmatch` command line.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringmatch_bench::matcher_bench::{self as bench, MatcherBenchOptions};
use ringmatch_matcher::Engine;
use ringmatch_server::config::Config;
use ringmatch_server::script::{self, FeedError};
use ringmatch_server::tools;

/// mimalloc for Rust and, through its `override` feature, for the C code linked in: the
/// bundled librdkafka allocates and frees several blocks per Kafka record, often on different
/// threads, which glibc's allocator serves slowly. See [`disable_transparent_huge_pages`].
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Opts this process out of transparent huge pages. Where the kernel gives them to every
/// anonymous mapping (`always`), each first touch of a fresh 2 MiB allocator page is zeroed in
/// one go on the thread that touches it; that doubled the Kafka output lag's p99. The matcher's
/// throughput does not change either way. Best effort: a kernel without the call keeps its
/// default.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and sets a flag of this process;
    // no memory is passed to the kernel.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// ringmatch: an exchange matching engine built the LMAX way.
#[derive(Debug, Parser)]
#[command(
    name = "ringmatch",
    version,
    about = "ringmatch: an exchange matching engine built the LMAX way (sequenced commands, \
             journal first, deterministic matching, exactly-once output)",
    long_about = None
)]
struct Cli {
    /// Configuration file (TOML): data directory, journal, snapshots, pipeline, gateway,
    /// admin, limits and instruments; every key is documented in config/default.toml.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,

    /// Data directory (journal, snapshots, events file, raft-state), instead of the
    /// configuration's `data.dir`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// How log lines on standard error are written: `text` (timestamp, level, target,
    /// message and fields) or `json` (one object per line). `RUST_LOG` filters them
    /// (default `info`).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: ringmatch_server::logging::LogFormat,

    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run the service: recover from the data directory, then take commands.
    ///
    /// Start-up loads the newest valid snapshot, replays the journal after it, and lets the
    /// events file skip what it already holds. Then the pipeline runs (input ring, Journaler
    /// and Replicator, Matcher, output ring, Publisher to `<data>/events.bin` and, with the
    /// gateway enabled, the Responder) with the TCP order-entry gateway ([gateway],
    /// docs/order-entry-protocol.md) and an admin HTTP listener: GET /status, GET /metrics,
    /// GET /book/<instrument>, POST /snapshot, POST /commands (JSON lines as in
    /// docs/scripting.md; answers once they are durable). SIGINT or SIGTERM stop it cleanly:
    /// input stops, the rings drain, the journal is synced, exit status 0.
    Serve {
        /// If the journal is damaged before its tail, cut it there (later records are moved to
        /// <data>/journal/quarantine/) instead of refusing to start. Commands after the damage
        /// are lost: use only when the damaged file cannot be restored.
        #[arg(long)]
        cut_damaged_journal: bool,
        /// Publish events to Kafka at these bootstrap servers (host:port[,...]) instead of the
        /// embedded events file; overrides kafka.bootstrap in the config ([kafka],
        /// docs/kafka.md).
        #[arg(long, value_name = "HOST:PORT")]
        kafka_bootstrap: Option<String>,
    },
    /// Inspect, verify or print the journal (read-only; safe while the service runs).
    Journal {
        #[command(subcommand)]
        command: JournalCommands,
    },
    /// List or verify snapshots (read-only).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommands,
    },
    /// Drive a running `serve` through its TCP gateway and measure wire-to-wire latency.
    ///
    /// Each --login opens one session trading its own account (an exchange-core-like mix by
    /// client order id: 9% GTC, 3% IOC, 6% cancel, 82% replace), open-loop at --rate commands
    /// per second in total (or flat out). Latency runs from each command's intended send time
    /// to the first event of its response, so coordinated omission is corrected. Prints
    /// throughput and percentiles, a progress line every second, and writes .hgrm, an HDR log
    /// and an SVG percentile plot to --out. --echo measures a raw TCP round trip of the same
    /// frame size instead (no gateway needed).
    Loadgen {
        /// Gateway address.
        #[arg(long, default_value = "127.0.0.1:8711")]
        gateway: std::net::SocketAddr,
        /// A session: ACCOUNT:TOKEN (repeat for more sessions).
        #[arg(long = "login")]
        logins: Vec<String>,
        /// Total offered rate in commands per second; absent: flat out.
        #[arg(long)]
        rate: Option<u64>,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// Instrument to trade.
        #[arg(long, default_value_t = 1)]
        instrument: u32,
        /// Mid price of the mix.
        #[arg(long, default_value_t = 100_000)]
        mid: i64,
        /// Folder for .hgrm, HDR log and plot.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Measure a raw TCP echo round trip instead.
        #[arg(long)]
        echo: bool,
        /// With --echo: how many connections share the rate (to match a run's sessions).
        #[arg(long, default_value_t = 1)]
        echo_sessions: usize,
        /// Cores for the load generator's session threads, comma-separated. Absent: all cores.
        #[arg(long, value_delimiter = ',', value_name = "IDS")]
        cores: Option<Vec<usize>>,
        /// With --echo: cores for the echo server's threads (place them like `serve`'s
        /// `[pipeline.cores] service` for a like-for-like baseline). Absent: all cores.
        #[arg(long, value_delimiter = ',', value_name = "IDS")]
        echo_server_cores: Option<Vec<usize>>,
    },
    /// Print the `token_hash` to put in `[[gateway.logins]]` for a login token (a fresh random
    /// salt each time; the token itself is never stored). Without TOKEN, or with `-`, the
    /// token is the first line of standard input, so that it stays out of shell history.
    HashToken {
        /// The secret token the client will send at login (at most 64 bytes); `-` or absent:
        /// read it from standard input.
        token: Option<String>,
    },
    /// Time failovers of a local three-node cluster: kill -9 of the leader under load to the
    /// first acknowledged order on the new leader (scripts/bench-failover.sh).
    BenchFailover {
        /// Failovers to time.
        #[arg(long, default_value_t = 20)]
        rounds: u64,
        /// Folder with the members' node1.toml..node3.toml.
        #[arg(long, default_value = "config/examples/cluster")]
        members: std::path::PathBuf,
        /// Freeze the leader (SIGSTOP) instead of killing it: its host goes silent with its
        /// connections open, as in a power loss or a cut network, so the others find it only
        /// by the election timeout. It is killed and started again after each round.
        #[arg(long)]
        freeze: bool,
    },
    /// What the members of a cluster report about themselves (their admin `/status`).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommands,
    },
    /// Print the embedded events file.
    Events {
        #[command(subcommand)]
        command: EventsCommands,
    },
    /// Configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommands,
    },
    /// Run JSON-lines commands through the matcher and print the events as JSON lines.
    ///
    /// Reads one command per line (see docs/scripting.md); blank lines and lines starting
    /// with '#' are skipped. Each event carries the `seq` of its command (from 1). On a
    /// malformed line it prints an error naming the line and exits with status 2; nothing
    /// from that line on is applied.
    Feed {
        /// File of commands, or '-' for standard input.
        file: PathBuf,
    },
    /// Measure throughput and latency.
    ///
    /// By default: open-loop load through the whole pipeline (input ring, Journaler and
    /// Replicator, Matcher, output ring, Publisher) with the journal on, in-process, on the
    /// exchange-core mix. Latency is measured from each command's intended send time (so
    /// coordinated omission is corrected) to each stage; the report gives p50, p90, p99,
    /// p99.9, p99.99 and max per stage, and writes .hgrm files, an HDR log and an SVG
    /// percentile plot to --out. `--baseline crossbeam` runs the same topology on crossbeam
    /// channels in the same command, side by side.
    ///
    /// `--matcher-only` instead runs the mix through the matcher alone, single-threaded (one
    /// instrument, ~1,000 resting orders over ~700 levels, 1,000 accounts; drawn as 9% GTC, 3%
    /// IOC, 6% cancel, 82% replace, with refills that keep the book near 1,000 orders, so the
    /// stream is 14.1% GTC, 3.0% IOC, 5.7% cancel, 77.2% replace), then a prefix of it
    /// through the naive reference book.
    Bench {
        /// Benchmark the matcher alone, single-threaded, without rings or journal.
        #[arg(long)]
        matcher_only: bool,
        /// Benchmark start-up instead: write --commands through the pipeline with a snapshot
        /// every --snapshot-every commands, then time a restart with snapshots and a full
        /// replay without them.
        #[arg(long)]
        restart: bool,
        /// With --restart: snapshot every this many commands.
        #[arg(long, default_value_t = 1_000_000)]
        snapshot_every: u64,
        /// Measure how long the matcher pauses for a snapshot at 100,000 and 1,000,000
        /// resting orders.
        #[arg(long)]
        snapshot_pause: bool,
        /// Commands in the measured stream.
        #[arg(long, default_value_t = 2_000_000)]
        commands: usize,
        /// Offered rate in commands per second (pipeline bench); absent: flat out.
        #[arg(long)]
        rate: Option<u64>,
        /// Journal policy for the pipeline bench: none, batch or every.
        #[arg(long, default_value = "none")]
        durability: String,
        /// Wait strategy for the pipeline bench: phased, yielding or busy_spin.
        #[arg(long, default_value = "phased")]
        wait: String,
        /// Also run a baseline pipeline with the same topology: `crossbeam`.
        #[arg(long)]
        baseline: Option<String>,
        /// Write events to an events file (otherwise the Publisher only counts them).
        #[arg(long)]
        events_file: bool,
        /// Folder for histograms and the plot.
        #[arg(long, default_value = "bench-out")]
        out: PathBuf,
        /// Timed runs: of the fast engine (matcher-only), or of each pipeline (alternating);
        /// the median throughput is reported and latency histograms are merged.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Commands run through the naive reference book (matcher-only; a prefix).
        #[arg(long, default_value_t = 200_000)]
        naive_commands: usize,
        /// With --matcher-only: also time the stream with a client order id on every place
        /// (each remembered by the resend window), in alternating runs, and report the ratio.
        #[arg(long)]
        client_order_ids: bool,
        /// Workload seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// With --matcher-only: write the generated stream (--commands, --seed) to FILE
        /// (docs/stream-format.md) and exit, for scripts/bench-exchange-core.sh.
        #[arg(long, value_name = "FILE")]
        write_stream: Option<PathBuf>,
        /// With --matcher-only: run the stream in FILE instead of generating one.
        #[arg(long, value_name = "FILE")]
        stream: Option<PathBuf>,
        /// With --matcher-only: `plain` (the exchange-core mix) or `order-types` (the same
        /// mix with stops, OCOs, icebergs and GTD orders, also timed against the plain mix
        /// in alternating runs).
        #[arg(long, default_value = "plain")]
        mix: String,
        /// Publish to Kafka at HOST:PORT on fresh topics and report records committed per
        /// second and output lag (scripts/bench-kafka.sh compares with ProducerPerformance).
        #[arg(long, value_name = "HOST:PORT")]
        kafka: Option<String>,
        /// With --kafka: exactly_once or at_least_once.
        #[arg(long, default_value = "exactly_once")]
        delivery: String,
        /// With --kafka: partitions per topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// With --kafka: commit interval in milliseconds.
        #[arg(long, default_value_t = 20)]
        commit_interval_ms: u64,
        /// Pipeline bench: cores for the stage threads of both pipelines, comma-separated
        /// (every thread the bench starts for a pipeline inherits them). Absent: all cores.
        #[arg(long, value_delimiter = ',', value_name = "IDS")]
        stage_cores: Option<Vec<usize>>,
        /// Pipeline bench: cores for the driver that sends the commands. Absent: all cores.
        #[arg(long, value_delimiter = ',', value_name = "IDS")]
        driver_cores: Option<Vec<usize>>,
    },
}

#[derive(Debug, Subcommand)]
enum JournalCommands {
    /// Check every record (length, CRC32C, sequence), replay the journal through a fresh
    /// matcher, compare with the events file, and print the state hash. Exit status 1 on
    /// damage before the tail or any event mismatch; a torn tail (cut on the next start) is
    /// reported but is not a failure.
    Verify,
    /// List segments, sequences, and any torn tail or damage.
    Inspect,
    /// Print records as JSON lines: {"seq", "timestamp_ns", "command"}.
    Dump {
        /// First sequence to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most records to print.
        #[arg(long, default_value_t = u64::MAX)]
        count: u64,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotCommands {
    /// List snapshots, newest first.
    List,
    /// Read, check and restore every snapshot; print each one's state hash. Exit status 1 if
    /// any is invalid.
    Verify,
}

#[derive(Debug, Subcommand)]
enum ClusterCommands {
    /// One line per member: role, term, leader, commit and last sequence; on the leader,
    /// every other member's matched sequence and lag. Exit status 1 if no member answers.
    Status {
        /// Admin addresses to ask, comma-separated (default: this configuration's
        /// admin.listen).
        #[arg(long, value_delimiter = ',')]
        admin: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommands {
    /// Check a configuration file as `serve` would read it (every key, every limit, the
    /// instruments, the gateway logins, Kafka and `[cluster]`), and say what it sets up.
    /// Exit status 1, with the reason, when it is not valid.
    Check {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommands {
    /// Print every event of <data>/events.bin as the JSON lines of `ringmatch feed`.
    Dump,
}

/// The `--config` default, relative to the working directory.
const DEFAULT_CONFIG: &str = "config/default.toml";

/// The configuration `--config` names, with `--data-dir` applied; a missing default file is
/// an error that says where it was looked for.
fn load_config(
    path: &std::path::Path,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<Config> {
    if path == std::path::Path::new(DEFAULT_CONFIG) && !path.exists() {
        let here = std::env::current_dir()
            .map(|dir| dir.display().to_string())
            .unwrap_or_else(|_| "the working directory".into());
        anyhow::bail!(
            "no --config given, and the default {DEFAULT_CONFIG} is not in {here} (the \
             default is relative to the working directory): pass --config FILE"
        );
    }
    let mut config = Config::load(path)?;
    if let Some(dir) = data_dir {
        config.data.dir = dir.to_path_buf();
    }
    Ok(config)
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    if let Err(error) = ringmatch_server::logging::init(cli.log_format) {
        eprintln!("ringmatch: error: {error:#}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ringmatch: error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn status(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (config_path, data_dir) = (cli.config.clone(), cli.data_dir.clone());
    let load = || load_config(&config_path, data_dir.as_deref());
    match cli.command {
        Commands::Serve {
            cut_damaged_journal,
            kafka_bootstrap,
        } => {
            let config = load()?;
            ringmatch_server::serve::serve(
                &config,
                ringmatch_server::serve::ServeOptions {
                    cut_damaged_journal,
                    kafka_bootstrap,
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Journal { command } => {
            let config = load()?;
            match command {
                JournalCommands::Verify => Ok(status(tools::journal_verify(&config, &mut out)?)),
                JournalCommands::Inspect => Ok(status(tools::journal_inspect(&config, &mut out)?)),
                JournalCommands::Dump { from, count } => {
                    tools::journal_dump(&config, from, count, &mut out)?;
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Commands::Snapshot { command } => {
            let config = load()?;
            match command {
                SnapshotCommands::List => {
                    tools::snapshot_list(&config, &mut out)?;
                    Ok(ExitCode::SUCCESS)
                }
                SnapshotCommands::Verify => Ok(status(tools::snapshot_verify(&config, &mut out)?)),
            }
        }
        Commands::Loadgen {
            gateway,
            logins,
            rate,
            duration_secs,
            instrument,
            mid,
            out,
            echo,
            echo_sessions,
            cores,
            echo_server_cores,
        } => {
            let logins = logins
                .iter()
                .map(|login| {
                    let (account, token) = login.split_once(':').ok_or_else(|| {
                        anyhow::anyhow!("--login {login}: expected ACCOUNT:TOKEN")
                    })?;
                    Ok((account.parse()?, token.to_string()))
                })
                .collect::<anyhow::Result<Vec<(u32, String)>>>()?;
            ringmatch_bench::loadgen::run(&ringmatch_bench::loadgen::LoadgenOptions {
                gateway,
                logins,
                rate_per_second: rate,
                duration: std::time::Duration::from_secs(duration_secs),
                instrument,
                mid_price: mid,
                out_dir: out,
                echo,
                echo_sessions,
                cores,
                echo_server_cores,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::BenchFailover {
            rounds,
            members,
            freeze,
        } => {
            ringmatch_server::failover_bench::run(rounds, &members, freeze, &mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Cluster {
            command: ClusterCommands::Status { admin },
        } => {
            let addresses = if admin.is_empty() {
                vec![load()?.admin.listen]
            } else {
                admin
            };
            Ok(status(tools::cluster_status(&addresses, &mut out)?))
        }
        Commands::HashToken { token } => {
            let token = match token.as_deref() {
                None | Some("-") => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\n', '\r']).to_string()
                }
                Some(token) => token.to_string(),
            };
            anyhow::ensure!(
                !token.is_empty()
                    && token.len() <= ringmatch_gateway::protocol::TOKEN_SIZE_MAX_BYTES,
                "the token must be 1 to 64 bytes"
            );
            let mut salt = [0u8; 16];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut salt)?;
            writeln!(
                out,
                "token_hash = \"{}\"",
                ringmatch_gateway::hash_token(&salt, token.as_bytes())
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Events {
            command: EventsCommands::Dump,
        } => {
            let config = load()?;
            tools::events_dump(&config.events_path(), &mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Config {
            command: ConfigCommands::Check { file },
        } => {
            let config = Config::load(&file)?;
            let cluster = match config.cluster_plan()? {
                None => "a single node".to_string(),
                Some(plan) => format!(
                    "node {} of cluster {} ({} voters, {} learners)",
                    plan.node.node_id,
                    plan.node.cluster_id,
                    plan.node.voters.len(),
                    plan.node.learners.len()
                ),
            };
            writeln!(
                out,
                "{}: valid: {cluster}; {} instruments; data directory {}; journal {}; \
                 order entry {}; output {}",
                file.display(),
                config.instruments.len(),
                config.data.dir.display(),
                config.journal.durability,
                if config.gateway.enabled {
                    format!("on {}", config.gateway.listen)
                } else {
                    "off".into()
                },
                match config.kafka_config()? {
                    Some(kafka) => format!("Kafka at {}", kafka.bootstrap),
                    None => format!("the events file {}", config.events_path().display()),
                }
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Feed { file } => {
            let config = load()?;
            let mut engine = Engine::new(config.matcher())?;
            let mut output = std::io::BufWriter::new(&mut out);
            let result = if file.as_os_str() == "-" {
                script::feed(&mut engine, std::io::stdin().lock(), &mut output)
            } else {
                let handle = std::fs::File::open(&file)
                    .map_err(|error| anyhow::anyhow!("cannot open {}: {error}", file.display()))?;
                script::feed(&mut engine, BufReader::new(handle), &mut output)
            };
            output.flush()?;
            match result {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(error @ FeedError::Malformed { .. }) => {
                    eprintln!("ringmatch feed: {}: {error}", file.display());
                    Ok(ExitCode::from(2))
                }
                Err(error) => Err(error.into()),
            }
        }
        Commands::Bench {
            matcher_only,
            restart,
            snapshot_every,
            snapshot_pause,
            commands,
            rate,
            durability,
            wait,
            baseline,
            events_file,
            out,
            runs,
            naive_commands,
            client_order_ids,
            seed,
            write_stream,
            stream,
            mix,
            kafka,
            delivery,
            partitions,
            commit_interval_ms,
            stage_cores,
            driver_cores,
        } => {
            anyhow::ensure!(
                runs >= 1 && commands >= 1,
                "--runs and --commands must be at least 1"
            );
            if restart {
                ringmatch_bench::pipeline_bench::run_restart(commands, snapshot_every, &out, seed)?;
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(bootstrap) = kafka {
                ringmatch_bench::kafka_bench::run(
                    &ringmatch_bench::kafka_bench::KafkaBenchOptions {
                        bootstrap,
                        delivery: ringmatch_kafka::Delivery::parse(&delivery)
                            .map_err(|problem| anyhow::anyhow!("--delivery: {problem}"))?,
                        commands_count: commands,
                        rate_per_second: rate,
                        durability: ringmatch_journal::Durability::from_name(&durability)
                            .ok_or_else(|| {
                                anyhow::anyhow!(
                                    "--durability {durability}: expected none, batch or every"
                                )
                            })?,
                        wait: ringmatch_pipeline::WaitKind::from_name(&wait).ok_or_else(|| {
                            anyhow::anyhow!("--wait {wait}: expected phased, yielding or busy_spin")
                        })?,
                        partitions,
                        commit_interval: std::time::Duration::from_millis(commit_interval_ms),
                        out_dir: out,
                        seed,
                    },
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            if snapshot_pause {
                ringmatch_bench::pipeline_bench::run_snapshot_pause(&out)?;
                return Ok(ExitCode::SUCCESS);
            }
            if matcher_only {
                let order_types = match mix.as_str() {
                    "plain" => false,
                    "order-types" => true,
                    other => anyhow::bail!("--mix {other}: expected plain or order-types"),
                };
                anyhow::ensure!(
                    !order_types || (write_stream.is_none() && stream.is_none()),
                    "--mix order-types is generated, never a stream file: stream files hold \
                     version 1 commands, which have no room for OCOs, icebergs or GTD orders"
                );
                if let Some(path) = write_stream {
                    let workload = ringmatch_matcher::workload::exchange_core_mix(
                        commands,
                        seed,
                        Default::default(),
                    );
                    ringmatch_bench::stream_file::write_stream(&path, &workload)?;
                    println!(
                        "wrote {}: {} warm-up + {} commands ({}), seed {seed}",
                        path.display(),
                        workload.warmup.len(),
                        workload.commands.len(),
                        workload.mix()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                bench::run(MatcherBenchOptions {
                    commands_count: commands,
                    runs_count: runs,
                    naive_commands_count: naive_commands,
                    seed,
                    client_order_ids,
                    stream,
                    order_types,
                })?;
                return Ok(ExitCode::SUCCESS);
            }
            let baseline = match baseline.as_deref() {
                None => false,
                Some("crossbeam") => true,
                Some(other) => anyhow::bail!("--baseline {other}: the only baseline is crossbeam"),
            };
            ringmatch_bench::pipeline_bench::run(
                &ringmatch_bench::pipeline_bench::PipelineBenchOptions {
                    commands_count: commands,
                    rate_per_second: rate,
                    durability: ringmatch_journal::Durability::from_name(&durability).ok_or_else(
                        || {
                            anyhow::anyhow!(
                                "--durability {durability}: expected none, batch or every"
                            )
                        },
                    )?,
                    wait: ringmatch_pipeline::WaitKind::from_name(&wait).ok_or_else(|| {
                        anyhow::anyhow!("--wait {wait}: expected phased, yielding or busy_spin")
                    })?,
                    baseline,
                    events_file,
                    out_dir: out,
                    seed,
                    repeat_count: runs,
                    stage_cores,
                    driver_cores,
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
