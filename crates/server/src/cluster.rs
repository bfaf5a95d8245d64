//! `serve` as a member of a cluster (`[cluster]`). The node's thread ([`Replica`]) owns the
//! journal, which is the Raft log. While another member leads, this one journals what the
//! leader sends; its order-entry port answers every connection with a `not_leader` error
//! naming the leader's order-entry address, and its admin port answers `/status`, `/metrics`
//! and the dashboard only.
//!
//! A follower also runs the matcher in shadow on what is committed and writes the snapshots
//! (`crate::shadow`), so the leader of a cluster of more than one takes none.
//!
//! Once it leads and its own term record is committed (so everything before it is too), it
//! becomes the leader: the output is opened (Kafka fences the previous leader's producer
//! through the cluster's one transactional id), the matcher and the output are rebuilt from
//! the newest usable snapshot and the journal (the existing start-up), and the pipeline
//! starts with the [`ReplicatedJournal`] as its Journaler's port (it proposes each batch) and
//! a [`CommitLink`] as its Matcher's gate (the Matcher waits for each command's commit), so a
//! command is matched and acknowledged only once a majority has it on disk. Then the gateway
//! opens.
//!
//! A leader that learns of a higher term, or cannot reach a majority for an election timeout,
//! stops at once with exit status 3: it acknowledges nothing more, its sessions and output
//! end with the process, and its supervisor (`scripts/cluster.sh`, systemd) starts it again
//! as a follower, whose uncommitted tail the new leader then cuts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use ringmatch_gateway::protocol::{encode_frame, ErrorCode, Frame};
use ringmatch_journal::{Journal, SnapshotStore};
use ringmatch_pipeline::{recover_from, EventsFile, PipelineConfig, RecoveryOptions};
use ringmatch_replication::{
    CommitLink, HardStateFile, HardStatePort, Node, NodeStatus, Owner, Replica, ReplicatedJournal,
    Role, WaitError,
};

use crate::admin::metrics::{Exporter, Sources};
use crate::admin::{routes, AdminServer};
use crate::config::{ClusterPlan, Config};
use crate::log;
use crate::serve::{log_replay_progress, log_tail_cut, open_kafka_from, run, Start, Surface};
use crate::shadow::{Compaction, Hot, Shadow};

/// Exit status of a leader that stopped leading.
pub const EXIT_DEPOSED: i32 = 3;

/// The longest a follower's waits last before it looks for the stop signal (a stop asked
/// for while following takes at most this long to be seen).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Ends the process of a leader that no longer leads.
fn deposed(why: &str) -> ! {
    log!(
        "cluster: stepped down ({why}); stopping with status {EXIT_DEPOSED}: nothing more is \
         acknowledged, and a restart rejoins as a follower"
    );
    std::process::exit(EXIT_DEPOSED)
}

/// The `cluster` object of `/status`.
pub(crate) fn cluster_json(replica: &Replica) -> serde_json::Value {
    let status = replica.status();
    let members: Vec<serde_json::Value> = status
        .members
        .iter()
        .map(|member| {
            serde_json::json!({
                "node_id": member.node_id,
                "matched_seq": member.matched,
                "lag": status.last_index.saturating_sub(member.matched),
            })
        })
        .collect();
    let stats = replica.transport_stats();
    serde_json::json!({
        "node_id": status.node_id,
        "role": status.role.name(),
        "term": status.term,
        "leader_id": status.leader_id,
        "commit_seq": status.commit,
        "last_seq": status.last_index,
        "members": members,
        "frames_sent": stats.frames_sent.load(Ordering::Relaxed),
        "frames_received": stats.frames_received.load(Ordering::Relaxed),
        "frames_dropped": stats.frames_dropped.load(Ordering::Relaxed),
        "frames_refused": stats.frames_refused.load(Ordering::Relaxed),
        "frames_sent_directly": stats.frames_sent_directly.load(Ordering::Relaxed),
        "connections_evicted": stats.connections_evicted.load(Ordering::Relaxed),
        "peers_gone": stats.peers_gone.load(Ordering::Relaxed),
        "early_elections": status.early_elections,
    })
}

/// Runs this node as a cluster member until a termination signal (or until it is deposed).
pub(crate) fn serve_cluster(
    config: &Config,
    plan: ClusterPlan,
    pipeline_config: PipelineConfig,
    surface: Surface,
    recovery: &RecoveryOptions,
    kafka_config: Option<ringmatch_kafka::KafkaConfig>,
) -> anyhow::Result<()> {
    let node_id = plan.node.node_id;
    let cluster_id = plan.node.cluster_id;
    anyhow::ensure!(
        kafka_config.is_some()
            || matches!(config.retention()?, ringmatch_pipeline::Retention::Keep),
        "journal.retention = {:?} in a cluster needs the Kafka output: a promoted member \
         completes its output from the journal, and its own events file may lag behind what \
         retention has removed (use retention = \"keep\" with the events file)",
        config.journal.retention
    );
    let (journal, report) = Journal::open(recovery.journal.clone(), recovery.damage_policy)?;
    log_tail_cut(&report);
    let stats = journal.stats();
    let hard_state = HardStateFile::new(
        &config.data.dir,
        Owner {
            cluster_id,
            node_id,
        },
    );
    let stored = hard_state.load()?.unwrap_or_default();
    let snapshots = SnapshotStore::open(&recovery.snapshot_dir, recovery.snapshots_kept_count)?;
    // Opening the node finishes a snapshot install that a crash interrupted, so the shadow
    // matcher starts on the journal as the node leaves it.
    let node = Node::open(
        &plan.node,
        journal,
        hard_state,
        Some(Box::new(snapshots.clone())),
        stored.commit,
    )?;
    let compactor = Arc::new(std::sync::Mutex::new(None));
    let (shadow, on_commit) = Shadow::start(
        &recovery.matcher,
        snapshots,
        &recovery.journal.dir,
        ringmatch_pipeline::ports::JournalPort::first_seq(node.log()),
        stored.commit,
        config.snapshots.every_commands,
        Compaction {
            compactor: Arc::clone(&compactor),
            retention: match config.retention()? {
                ringmatch_pipeline::Retention::Keep => None,
                ringmatch_pipeline::Retention::Delete => Some(None),
                ringmatch_pipeline::Retention::Archive(folder) => Some(Some(folder)),
            },
        },
    )?;
    let listener = TcpListener::bind(plan.listen).with_context(|| {
        format!(
            "cannot listen on {} (this node's replication address)",
            plan.listen
        )
    })?;
    let replica = Arc::new(Replica::start(
        node,
        cluster_id,
        listener,
        &plan.peers,
        plan.tick,
        on_commit,
    )?);
    if let Ok(mut slot) = compactor.lock() {
        *slot = Some(replica.compactor());
    }
    log!(
        "cluster: node {node_id} of cluster {cluster_id} (voters {:?}, learners {:?}), \
         replication on {}, journal to sequence {}, term {}, commit {}",
        plan.node.voters,
        plan.node.learners,
        plan.listen,
        report.next_seq - 1,
        stored.term,
        stored.commit
    );

    // The Kafka connections and the topic check are made while following (they fence
    // nobody), so a promotion pays only the fencing and two reads on warm connections.
    let kafka_prepared = kafka_config.clone().map(|kafka_config| {
        std::thread::Builder::new()
            .name("kafka-prepare".into())
            .spawn(move || ringmatch_kafka::KafkaOutput::prepare(&kafka_config))
    });
    let kafka_prepared = kafka_prepared.transpose()?;
    let signal = crate::signals::StopSignal::get()?;
    let following = Following::start(config, &plan, &replica, &surface)?;
    let mut last_role = None;
    let status = loop {
        if signal.requested() {
            log!("stopping: a follower; the journal is synced as it is written");
            following.stop();
            drop(replica);
            let _ = shadow.stop();
            return Ok(());
        }
        if let Some(failure) = replica.failure() {
            anyhow::bail!("cluster: the node failed: {failure}");
        }
        let status = replica.status();
        if last_role != Some((status.role, status.leader_id, status.term)) {
            log!(
                "cluster: {} in term {}, leader {}",
                status.role.name(),
                status.term,
                if status.leader_id == 0 {
                    "unknown".to_string()
                } else {
                    format!("node {}", status.leader_id)
                }
            );
            last_role = Some((status.role, status.leader_id, status.term));
        }
        if status.role == Role::Leader && status.commit == status.last_index {
            break status;
        }
        // Woken by a change of part, term or leader (a follower's commits do not wake it);
        // a new leader waits for its first entry's commit on every publish. Either way the
        // wait ends within 50 ms, for the stop signal.
        let ready = |status: &NodeStatus| {
            last_role != Some((status.role, status.leader_id, status.term))
                || (status.role == Role::Leader && status.commit == status.last_index)
        };
        let waited = if status.role == Role::Leader {
            replica.wait_for(SIGNAL_CHECK, ready)
        } else {
            replica.wait_for_role(SIGNAL_CHECK, ready)
        };
        match waited {
            Ok(_) | Err(WaitError::Timeout(_)) => {}
            Err(error) => anyhow::bail!("cluster: {error}"),
        }
    };
    following.stop();
    // From here, "recovered in" measures the promotion. The shadow matcher has written its
    // last snapshot; the pipeline's matcher runs the commands from here.
    let started = Instant::now();
    let hot = shadow.stop();
    let term = status.term;
    let next_seq = status.last_index + 1;
    log!(
        "cluster: leading term {term}; everything to sequence {} is committed; opening the \
         output",
        status.last_index
    );
    {
        let replica = Arc::clone(&replica);
        std::thread::Builder::new()
            .name("cluster-watch".into())
            .spawn(move || loop {
                // Woken by a change of part, term or leader, or a failure; not by commits.
                match replica.wait_for_role(Duration::from_secs(1), |status| {
                    status.role != Role::Leader || status.term != term
                }) {
                    Ok(status) => deposed(&format!(
                        "now {} in term {}, leader {}",
                        status.role.name(),
                        status.term,
                        status.leader_id
                    )),
                    Err(WaitError::Timeout(_)) => {}
                    Err(error) => deposed(&error.to_string()),
                }
            })?;
    }
    // A compacted log's journal starts later (whole segments go): replay may start there.
    let journal_first_seq = ringmatch_journal::list_segments(&recovery.journal.dir)?
        .first()
        .map_or(1, |(first_seq, _)| *first_seq);
    let journal = ReplicatedJournal::new(
        Arc::clone(&replica),
        &recovery.journal.dir,
        journal_first_seq,
        next_seq,
        stats,
        Box::new(|error: &WaitError| deposed(&error.to_string())),
    );
    let snapshots = SnapshotStore::open(&recovery.snapshot_dir, recovery.snapshots_kept_count)?;
    let surface = Surface {
        cluster: Some(Arc::clone(&replica)),
        ..surface
    };
    // With other members, the followers' shadow matchers take the snapshots and the leader
    // never pauses for one (POST /snapshot still takes one on demand); a cluster of one takes
    // them as a single node does.
    let mut pipeline_config = pipeline_config;
    let mut leader_config = config.clone();
    if plan.peers.len() > 1 {
        pipeline_config.snapshot_every_commands = 0;
        leader_config.snapshots.every_commands = 0;
        leader_config.snapshots.every_seconds = 0;
    }
    let leading = Leading {
        config: &leader_config,
        pipeline_config,
        surface,
        started,
        journal,
        snapshots,
        hot,
        link: Box::new(CommitLink::new(
            Arc::clone(&replica),
            term,
            Box::new(|error: &WaitError| deposed(&error.to_string())),
        )),
    };
    match kafka_config {
        None => {
            let (output, _) = EventsFile::open(&recovery.events_path, next_seq)?;
            leading.run(&recovery.matcher, output, None)
        }
        Some(kafka_config) => {
            let prepared = match kafka_prepared.map(std::thread::JoinHandle::join) {
                Some(Ok(Ok(prepared))) => Some(prepared),
                Some(Ok(Err(error))) => {
                    log!("kafka: not prepared while following ({error}); connecting now");
                    None
                }
                Some(Err(_)) | None => None,
            };
            let output = open_kafka_from(&kafka_config, prepared, next_seq)?;
            let metrics = output.metrics();
            leading.run(&recovery.matcher, output, Some(metrics))
        }
    }
}

/// What a new leader starts its pipeline with, whatever its output.
struct Leading<'a> {
    config: &'a Config,
    pipeline_config: PipelineConfig,
    surface: Surface,
    started: Instant,
    journal: ReplicatedJournal,
    snapshots: SnapshotStore,
    /// The shadow matcher as it stopped.
    hot: Option<Hot>,
    link: Box<CommitLink>,
}

impl Leading<'_> {
    /// Takes over the shadow matcher when it ran everything committed and its kept events
    /// hold all the output lacks (those are published first): a hot promotion, no replay.
    /// Otherwise rebuilds the matcher and `output` from the newest usable snapshot and the
    /// committed journal. Then runs the pipeline until a signal (or the end of this
    /// leadership).
    fn run<O: ringmatch_pipeline::ResumableOutput>(
        self,
        matcher: &ringmatch_matcher::MatcherConfig,
        mut output: O,
        kafka: Option<Arc<ringmatch_kafka::KafkaMetrics>>,
    ) -> anyhow::Result<()> {
        let last_seq = ringmatch_pipeline::ports::JournalPort::next_seq(&self.journal) - 1;
        let hot = self.hot.and_then(|hot| {
            let held = output.resume_position();
            let missing = (hot.applied == last_seq)
                .then(|| hot.missing_after(held))
                .flatten();
            match missing {
                Some(missing) => Some((hot.engine, missing)),
                None => {
                    log!(
                        "cluster: the shadow matcher (at sequence {}, last event {}) cannot \
                         complete the output (which holds events to {}); replaying",
                        hot.applied,
                        position_text(hot.last_event),
                        position_text(held)
                    );
                    None
                }
            }
        });
        let engine = match hot {
            Some((engine, missing)) => {
                for event in &missing {
                    ringmatch_pipeline::OutputSink::push(&mut output, event);
                }
                ringmatch_pipeline::OutputSink::end_of_batch(&mut output);
                log!(
                    "cluster: hot promotion: the shadow matcher at sequence {last_seq} carries \
                     on, no replay; {} events the output lacked published first",
                    missing.len()
                );
                engine
            }
            None => {
                let rebuilt = recover_from(
                    matcher,
                    &self.journal,
                    &self.snapshots,
                    &mut output,
                    &mut log_replay_progress,
                )?;
                log_rebuilt(&rebuilt);
                rebuilt.engine
            }
        };
        run(
            self.config,
            self.pipeline_config,
            Surface {
                kafka,
                ..self.surface
            },
            self.started,
            Start {
                engine,
                journal: self.journal,
                output,
                snapshots: self.snapshots,
                link: Some(self.link),
            },
        )
    }
}

/// An event position for the log: "sequence S index I", or "none".
fn position_text(position: Option<(u64, u32)>) -> String {
    match position {
        Some((seq, index)) => format!("sequence {seq} index {index}"),
        None => "none".into(),
    }
}

fn log_rebuilt(rebuilt: &ringmatch_pipeline::Rebuilt) {
    for problem in &rebuilt.snapshot_problems {
        log!("snapshot skipped: {problem}");
    }
    match &rebuilt.snapshot {
        Some(info) => log!(
            "snapshot: using {} (after sequence {}); replayed {} commands in {:.3} s",
            info.path.display(),
            info.seq,
            rebuilt.replayed_count,
            rebuilt.replay_duration.as_secs_f64()
        ),
        None => log!(
            "snapshot: none used; replayed the whole journal, {} commands in {:.3} s",
            rebuilt.replayed_count,
            rebuilt.replay_duration.as_secs_f64()
        ),
    }
}

/// What a follower serves: its order-entry port sends clients to the leader, and its admin
/// port answers `/status`, `/metrics` and the dashboard.
struct Following {
    stop: Arc<AtomicBool>,
    /// Where the order-entry listener can be reached: a connection to it wakes its thread
    /// at once when following stops (a promotion waits for that thread to let go of the
    /// port, which the leader's gateway then takes).
    order_entry_wake: SocketAddr,
    threads: Vec<JoinHandle<()>>,
    admin: AdminServer,
}

impl Following {
    fn start(
        config: &Config,
        plan: &ClusterPlan,
        replica: &Arc<Replica>,
        surface: &Surface,
    ) -> anyhow::Result<Following> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let order_entry: SocketAddr = config.gateway.listen.parse()?;
        let gateway = TcpListener::bind(order_entry)
            .with_context(|| format!("cannot listen on {order_entry} (gateway.listen)"))?;
        gateway.set_nonblocking(true)?;
        let order_entry_wake = reachable(gateway.local_addr()?);
        {
            let stop = Arc::clone(&stop);
            let replica = Arc::clone(replica);
            let addresses = plan.order_entry.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("not-leader".into())
                    .spawn(move || send_to_leader(&gateway, &replica, &addresses, &stop))?,
            );
        }
        let admin = AdminServer::start(
            surface.admin_address,
            surface.admin_token.clone(),
            routes::following(routes::Following {
                replica: Arc::clone(replica),
                prometheus: Exporter::new(Sources {
                    cluster: Some(Arc::clone(replica)),
                    ..Sources::default()
                }),
            }),
        )?;
        log!(
            "cluster: following; order entry on {order_entry} sends clients to the leader, \
             admin on http://{} answers /status, /metrics and the dashboard",
            surface.admin_address
        );
        Ok(Following {
            stop,
            order_entry_wake,
            threads,
            admin,
        })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // A connection on loopback is made at once; failing that, the thread sees `stop`
        // within SIGNAL_CHECK.
        let _ =
            std::net::TcpStream::connect_timeout(&self.order_entry_wake, Duration::from_millis(5));
        self.admin.shutdown();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Answers every order-entry connection with a `not_leader` error naming the leader's
/// order-entry address (or saying none is known), then closes it.
fn send_to_leader(
    listener: &TcpListener,
    replica: &Replica,
    addresses: &[(u64, SocketAddr)],
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                if stop.load(Ordering::Relaxed) {
                    // Most likely `Following::stop`'s own wake-up.
                    break;
                }
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                // Whatever the client sent first (its login) is answered the same way.
                let mut first = [0u8; 512];
                let _ = stream.read(&mut first);
                let leader_id = replica.status().leader_id;
                let text = match addresses.iter().find(|(id, _)| *id == leader_id) {
                    Some((_, address)) => {
                        format!("not the leader: node {leader_id} leads, order entry at {address}")
                    }
                    None => "not the leader: no leader is known yet; try again shortly".into(),
                };
                let mut bytes = Vec::new();
                encode_frame(
                    &Frame::Error {
                        code: ErrorCode::NotLeader as u16,
                        text,
                    },
                    &mut bytes,
                );
                let _ = stream.write_all(&bytes);
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                // Asleep until a client connects, looking at `stop` every 50 ms.
                wait_readable(listener, SIGNAL_CHECK);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// An address a connection to `listening` can be made to: a loopback one of the same family
/// when it listens on every interface.
fn reachable(listening: SocketAddr) -> SocketAddr {
    match listening.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), listening.port())
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), listening.port())
        }
        _ => listening,
    }
}

/// Waits until `listener` has a connection to accept, or `timeout` passes.
fn wait_readable(listener: &TcpListener, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut poll_fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout_ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, for a descriptor `listener` keeps open during the call. An
    // interrupted or failed poll only ends the wait early: the caller tries accept again.
    #[allow(unsafe_code)]
    unsafe {
        libc::poll(&mut poll_fd, 1, timeout_ms);
    }
}
