//! The TOML configuration file: instruments and limits, checked strictly (an unknown key is
//! an error naming it, so a typo never silently falls back to a default).

use std::path::{Path, PathBuf};

use anyhow::Context;
use ringmatch_matcher::{InstrumentSpec, Limits, MatcherConfig};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the service keeps its files.
    #[serde(default)]
    pub data: DataSection,
    /// The journal.
    #[serde(default)]
    pub journal: JournalSection,
    /// Snapshots.
    #[serde(default)]
    pub snapshots: SnapshotsSection,
    /// Rings, wait strategy, pinning.
    #[serde(default)]
    pub pipeline: PipelineSection,
    /// The admin HTTP listener.
    #[serde(default)]
    pub admin: AdminSection,
    /// The TCP order-entry gateway.
    #[serde(default)]
    pub gateway: GatewaySection,
    /// Capacity limits of the matcher.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Output record format.
    #[serde(default)]
    pub output: OutputSection,
    /// Kafka output (off unless `bootstrap` is set).
    #[serde(default)]
    pub kafka: KafkaSection,
    /// Tradable instruments.
    pub instruments: Vec<InstrumentSection>,
    /// A cluster of replicas on Raft; absent: one node.
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
}

/// `[cluster]`: this node's part in a cluster (`docs/replication-protocol.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The cluster's id, the same on every member; frames of another cluster are refused.
    pub cluster_id: u64,
    /// This node's id among `members`.
    pub node_id: u64,
    /// Milliseconds per Raft tick.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Ticks without a leader before a follower stands for election (each timeout is drawn
    /// between this and twice this).
    #[serde(default = "default_election_ticks")]
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    #[serde(default = "default_heartbeat_ticks")]
    pub heartbeat_ticks: usize,
    /// Every member, this node among them.
    pub members: Vec<MemberSection>,
}

fn default_tick_ms() -> u64 {
    10
}

fn default_election_ticks() -> usize {
    30
}

fn default_heartbeat_ticks() -> usize {
    5
}

/// `[[cluster.members]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSection {
    /// Node id (not 0).
    pub id: u64,
    /// Address its replication listener takes frames on.
    pub replication: String,
    /// Address of its order-entry gateway (where clients are sent when it leads).
    pub order_entry: String,
    /// A non-voting member (a disaster-recovery copy): never counts toward a majority.
    #[serde(default)]
    pub learner: bool,
}

/// A `[cluster]` section, checked and resolved.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// The node's Raft configuration.
    pub node: ringmatch_replication::NodeConfig,
    /// This node's replication address.
    pub listen: std::net::SocketAddr,
    /// Every member's replication address.
    pub peers: Vec<ringmatch_replication::PeerAddress>,
    /// Every member's order-entry address, by node id.
    pub order_entry: Vec<(u64, std::net::SocketAddr)>,
    /// Time per tick.
    pub tick: std::time::Duration,
}

/// `[data]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Data directory: `journal/`, `snapshots/`, `events.bin` live here. Created if missing.
    pub dir: PathBuf,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            dir: PathBuf::from("./data"),
        }
    }
}

/// `[journal]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSection {
    /// `none`, `batch` (group commit at the end of each ring batch) or `every`.
    pub durability: String,
    /// Size of each preallocated segment file.
    pub segment_size_bytes: u64,
    /// What to do with segments wholly before the oldest kept snapshot: `keep`, `delete`,
    /// `archive`.
    pub retention: String,
    /// Folder for `archive` retention (default: `<data>/archive`).
    pub archive_dir: Option<PathBuf>,
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            durability: "batch".into(),
            segment_size_bytes: 64 << 20,
            retention: "keep".into(),
            archive_dir: None,
        }
    }
}

/// `[snapshots]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotsSection {
    /// Snapshot after every this many commands (0: off).
    pub every_commands: u64,
    /// Snapshot every this many seconds (0: off).
    pub every_seconds: u64,
    /// Snapshots kept.
    pub keep: usize,
}

impl Default for SnapshotsSection {
    fn default() -> Self {
        SnapshotsSection {
            every_commands: 1_000_000,
            every_seconds: 0,
            keep: 3,
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Input ring slots (a power of two).
    pub input_ring_slots: usize,
    /// Output ring slots (a power of two).
    pub output_ring_slots: usize,
    /// `phased` (default), `yielding` or `busy_spin`.
    pub wait_strategy: String,
    /// Cores to pin stages to.
    pub cores: CoresSection,
    /// The engine clock: when no command has arrived for this many milliseconds and an
    /// order's expiry has come, a `time` command is journaled, so that GTD and day orders
    /// expire on time. 0: never.
    pub time_tick_ms: u64,
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            input_ring_slots: 1 << 16,
            output_ring_slots: 1 << 18,
            wait_strategy: "phased".into(),
            cores: CoresSection::default(),
            time_tick_ms: 100,
        }
    }
}

/// `[pipeline.cores]`: a core id per stage, or absent for no pinning.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoresSection {
    /// The Journaler's core.
    pub journaler: Option<usize>,
    /// The Replicator's core.
    pub replicator: Option<usize>,
    /// The Matcher's core.
    pub matcher: Option<usize>,
    /// The Publisher's core.
    pub publisher: Option<usize>,
    /// The Responder's core.
    pub responder: Option<usize>,
    /// Cores for every thread of the service: set on the main thread before any other starts,
    /// so the gateway, admin listener, Kafka client, helpers and every stage without a core
    /// of its own above run only there. Absent: all cores.
    pub service: Option<Vec<usize>>,
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Whether `serve` listens for order-entry sessions.
    pub enabled: bool,
    /// Listen address.
    pub listen: String,
    /// Longest frame accepted (bytes after the length prefix).
    pub frame_size_max_bytes: usize,
    /// Most sessions at once.
    pub sessions_max: usize,
    /// Most commands per second per session.
    pub session_commands_per_second_max: u32,
    /// Most frames queued for one session before it is dropped as a slow consumer.
    pub session_queue_depth_max: usize,
    /// Heartbeat interval, milliseconds.
    pub heartbeat_interval_ms: u64,
    /// A session silent this long is dropped, milliseconds.
    pub session_timeout_ms: u64,
    /// Who may log in.
    pub logins: Vec<LoginSection>,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            enabled: false,
            listen: "127.0.0.1:8711".into(),
            frame_size_max_bytes: 4096,
            sessions_max: 2000,
            session_commands_per_second_max: 100_000,
            session_queue_depth_max: 65_536,
            heartbeat_interval_ms: 1000,
            session_timeout_ms: 5000,
            logins: Vec::new(),
        }
    }
}

/// One `[[gateway.logins]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSection {
    /// The account (or, for a drop copy, the login id).
    pub account: u32,
    /// `"<salt hex>:<sha256(salt ‖ token) hex>"`, as printed by `ringmatch hash-token`.
    pub token_hash: String,
    /// If given, a read-only drop-copy login receiving every event of these accounts.
    #[serde(default)]
    pub drop_copy_accounts: Vec<u32>,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Address of the admin HTTP listener (port 0 picks a free port).
    pub listen: String,
    /// Hash of the admin token (`ringmatch hash-token`); required when `listen` is not a
    /// loopback address. When set, every request needs `Authorization: Bearer <token>`.
    pub token_hash: Option<String>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: "127.0.0.1:8710".into(),
            token_hash: None,
        }
    }
}

/// `[output]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    /// Kafka record values: `binary` (the 128-byte event record) or `json` (the JSON lines of
    /// `ringmatch feed`). The embedded events file is always binary.
    pub format: String,
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            format: "binary".into(),
        }
    }
}

/// `[kafka]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    /// `host:port[,host:port...]`; empty keeps the embedded events-file sink.
    pub bootstrap: String,
    /// Topic of every event but price levels.
    pub events_topic: String,
    /// Topic of price-level updates.
    pub market_data_topic: String,
    /// Partitions per topic (instrument id modulo this picks the partition).
    pub partitions: i32,
    /// Replication factor of topics created at start-up.
    pub replication_factor: i32,
    /// Create missing topics at start-up.
    pub create_topics: bool,
    /// `exactly_once` (transactional) or `at_least_once` (idempotent, no transactions).
    pub delivery: String,
    /// The producer's `transactional.id`: one engine at a time may hold it.
    pub transactional_id: String,
    /// Commit at least this often while events flow.
    pub commit_interval_ms: u64,
    /// Commit once this many events are in the open transaction.
    pub commit_events_max: usize,
    /// How long start-up waits for the broker.
    pub connect_timeout_ms: u64,
    /// Extra librdkafka producer properties, applied last (for example `linger.ms`).
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaSection {
    fn default() -> Self {
        let defaults = ringmatch_kafka::KafkaConfig::new("");
        KafkaSection {
            bootstrap: String::new(),
            events_topic: defaults.events_topic,
            market_data_topic: defaults.market_data_topic,
            partitions: defaults.partitions,
            replication_factor: defaults.replication_factor,
            create_topics: defaults.create_topics,
            delivery: "exactly_once".into(),
            transactional_id: defaults.transactional_id,
            commit_interval_ms: defaults.commit_interval.as_millis() as u64,
            commit_events_max: defaults.commit_events_max,
            connect_timeout_ms: defaults.connect_timeout.as_millis() as u64,
            properties: Default::default(),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Most resting orders in one book.
    pub orders_per_book_max: u32,
    /// Most resting orders over all books.
    pub orders_max: u32,
    /// Most distinct accounts.
    pub accounts_max: u32,
    /// Most instruments.
    pub instruments_max: u32,
    /// Most places the resend window remembers.
    pub resends_max: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let limits = Limits::default();
        LimitsSection {
            orders_per_book_max: limits.orders_per_book_max,
            orders_max: limits.orders_max,
            accounts_max: limits.accounts_max,
            instruments_max: limits.instruments_max,
            resends_max: limits.resends_max,
        }
    }
}

/// One `[[instruments]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentSection {
    /// Instrument id (not 0).
    pub id: u32,
    /// Symbol.
    pub symbol: String,
    /// Tick size in price units.
    pub tick_size: i64,
    /// Lot size in quantity units.
    pub lot_size: u64,
    /// Lowest limit price.
    pub min_price: i64,
    /// Highest limit price.
    pub max_price: i64,
    /// Largest order quantity.
    pub max_qty: u64,
    /// When the trading day ends, `"HH:MM"` or `"HH:MM:SS"` UTC: day orders expire then.
    /// Absent: the instrument takes no day orders.
    pub session_end_utc: Option<String>,
}

/// Nanoseconds after midnight of a `"HH:MM"` or `"HH:MM:SS"` time of day.
pub fn parse_time_of_day(text: &str) -> anyhow::Result<u64> {
    let parts: Vec<&str> = text.split(':').collect();
    let field = |index: usize, max: u64| -> anyhow::Result<u64> {
        let Some(&part) = parts.get(index) else {
            return Ok(0);
        };
        let value: u64 = part
            .parse()
            .ok()
            .filter(|_| part.len() == 2)
            .ok_or_else(|| {
                anyhow::anyhow!("bad time of day {text:?}: expected HH:MM or HH:MM:SS")
            })?;
        anyhow::ensure!(
            value <= max,
            "bad time of day {text:?}: {part} is out of range"
        );
        Ok(value)
    };
    anyhow::ensure!(
        matches!(parts.len(), 2 | 3),
        "bad time of day {text:?}: expected HH:MM or HH:MM:SS"
    );
    let seconds = field(0, 23)? * 3600 + field(1, 59)? * 60 + field(2, 59)?;
    Ok(seconds * 1_000_000_000)
}

impl Config {
    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        for section in &config.instruments {
            if let Some(text) = &section.session_end_utc {
                parse_time_of_day(text)
                    .map_err(|error| anyhow::anyhow!("instrument {}: {error}", section.id))?;
            }
        }
        config.matcher().validate()?;
        config.durability()?;
        config.retention()?;
        config.wait()?;
        anyhow::ensure!(
            config.journal.segment_size_bytes >= 1 << 16,
            "journal.segment_size_bytes must be at least 65536"
        );
        anyhow::ensure!(
            config.snapshots.keep >= 1,
            "snapshots.keep must be at least 1"
        );
        if config.gateway.enabled {
            config.gateway_config()?;
        }
        anyhow::ensure!(
            matches!(config.output.format.as_str(), "binary" | "json"),
            "output.format = {:?}: expected binary or json",
            config.output.format
        );
        config.kafka_config()?;
        config.cluster_plan()?;
        Ok(config)
    }

    /// The `[cluster]` section, checked; `None` for a single node.
    pub fn cluster_plan(&self) -> anyhow::Result<Option<ClusterPlan>> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let address = |text: &str, what: String| -> anyhow::Result<std::net::SocketAddr> {
            text.parse()
                .map_err(|_| anyhow::anyhow!("{what} = {text:?} is not an address"))
        };
        let mut peers = Vec::new();
        let mut order_entry = Vec::new();
        for member in &cluster.members {
            peers.push(ringmatch_replication::PeerAddress {
                node_id: member.id,
                address: address(
                    &member.replication,
                    format!("cluster member {} replication", member.id),
                )?,
            });
            order_entry.push((
                member.id,
                address(
                    &member.order_entry,
                    format!("cluster member {} order_entry", member.id),
                )?,
            ));
        }
        let node = ringmatch_replication::NodeConfig {
            cluster_id: cluster.cluster_id,
            node_id: cluster.node_id,
            voters: cluster
                .members
                .iter()
                .filter(|member| !member.learner)
                .map(|member| member.id)
                .collect(),
            learners: cluster
                .members
                .iter()
                .filter(|member| member.learner)
                .map(|member| member.id)
                .collect(),
            election_ticks: cluster.election_ticks,
            heartbeat_ticks: cluster.heartbeat_ticks,
            randomized_election: true,
            commit_stored_every: ringmatch_replication::log::COMMIT_STORED_EVERY,
        };
        node.validate()?;
        anyhow::ensure!(cluster.tick_ms >= 1, "cluster.tick_ms must be at least 1");
        let listen = peers
            .iter()
            .find(|peer| peer.node_id == cluster.node_id)
            .map(|peer| peer.address)
            .expect("validate checked that the node is a member");
        let own_order_entry = order_entry
            .iter()
            .find(|(id, _)| *id == cluster.node_id)
            .map(|(_, address)| *address)
            .expect("validate checked that the node is a member");
        anyhow::ensure!(
            self.gateway.enabled,
            "a cluster member needs the gateway ([gateway] enabled = true): clients follow the \
             leader through it"
        );
        anyhow::ensure!(
            self.gateway.listen.parse::<std::net::SocketAddr>().ok() == Some(own_order_entry),
            "gateway.listen = {:?} differs from this node's order_entry {own_order_entry} in \
             [[cluster.members]]",
            self.gateway.listen
        );
        anyhow::ensure!(
            self.durability()? != ringmatch_journal::Durability::None,
            "journal.durability = \"none\" cannot be used in a cluster: a member acknowledges \
             an entry to the leader only once it is synced"
        );
        Ok(Some(ClusterPlan {
            node,
            listen,
            peers,
            order_entry,
            tick: std::time::Duration::from_millis(cluster.tick_ms),
        }))
    }

    /// The journal's durability policy.
    pub fn durability(&self) -> anyhow::Result<ringmatch_journal::Durability> {
        ringmatch_journal::Durability::from_name(&self.journal.durability).ok_or_else(|| {
            anyhow::anyhow!(
                "journal.durability = {:?}: expected none, batch or every",
                self.journal.durability
            )
        })
    }

    /// The journal retention.
    pub fn retention(&self) -> anyhow::Result<ringmatch_pipeline::Retention> {
        use ringmatch_pipeline::Retention;
        match self.journal.retention.as_str() {
            "keep" => Ok(Retention::Keep),
            "delete" => Ok(Retention::Delete),
            "archive" => Ok(Retention::Archive(
                self.journal
                    .archive_dir
                    .clone()
                    .unwrap_or_else(|| self.data.dir.join("archive")),
            )),
            other => {
                anyhow::bail!("journal.retention = {other:?}: expected keep, delete or archive")
            }
        }
    }

    /// The wait strategy.
    pub fn wait(&self) -> anyhow::Result<ringmatch_pipeline::WaitKind> {
        ringmatch_pipeline::WaitKind::from_name(&self.pipeline.wait_strategy).ok_or_else(|| {
            anyhow::anyhow!(
                "pipeline.wait_strategy = {:?}: expected phased, yielding or busy_spin",
                self.pipeline.wait_strategy
            )
        })
    }

    /// The gateway configuration (credentials parsed and checked).
    pub fn gateway_config(&self) -> anyhow::Result<ringmatch_gateway::GatewayConfig> {
        let section = &self.gateway;
        let listen: std::net::SocketAddr = section.listen.parse().map_err(|_| {
            anyhow::anyhow!("gateway.listen = {:?} is not an address", section.listen)
        })?;
        anyhow::ensure!(
            section.frame_size_max_bytes >= 128,
            "gateway.frame_size_max_bytes must be at least 128"
        );
        anyhow::ensure!(
            section.sessions_max >= 1,
            "gateway.sessions_max must be at least 1"
        );
        anyhow::ensure!(
            section.session_commands_per_second_max >= 1,
            "gateway.session_commands_per_second_max must be at least 1"
        );
        anyhow::ensure!(
            section.session_queue_depth_max >= 16,
            "gateway.session_queue_depth_max must be at least 16"
        );
        anyhow::ensure!(
            section.heartbeat_interval_ms >= 10 && section.session_timeout_ms > section.heartbeat_interval_ms,
            "gateway.session_timeout_ms must be longer than gateway.heartbeat_interval_ms (at least 10)"
        );
        let mut credentials = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for login in &section.logins {
            anyhow::ensure!(
                seen.insert(login.account),
                "gateway.logins: account {} is listed twice",
                login.account
            );
            credentials.push(
                ringmatch_gateway::Credential::parse(
                    login.account,
                    &login.token_hash,
                    login.drop_copy_accounts.clone(),
                )
                .map_err(|problem| anyhow::anyhow!("gateway.logins: {problem}"))?,
            );
        }
        Ok(ringmatch_gateway::GatewayConfig {
            listen,
            frame_size_max_bytes: section.frame_size_max_bytes,
            sessions_max: section.sessions_max,
            session_commands_per_second_max: section.session_commands_per_second_max,
            session_queue_depth_max: section.session_queue_depth_max,
            heartbeat_interval: std::time::Duration::from_millis(section.heartbeat_interval_ms),
            session_timeout: std::time::Duration::from_millis(section.session_timeout_ms),
            credentials,
        })
    }

    /// The Kafka output configuration, or `None` when `kafka.bootstrap` is empty.
    pub fn kafka_config(&self) -> anyhow::Result<Option<ringmatch_kafka::KafkaConfig>> {
        let section = &self.kafka;
        if section.bootstrap.trim().is_empty() {
            return Ok(None);
        }
        let format = match self.output.format.as_str() {
            "binary" => ringmatch_kafka::OutputFormat::Binary,
            "json" => ringmatch_kafka::OutputFormat::Json,
            other => anyhow::bail!("output.format = {other:?}: expected binary or json"),
        };
        let config = ringmatch_kafka::KafkaConfig {
            bootstrap: section.bootstrap.clone(),
            events_topic: section.events_topic.clone(),
            market_data_topic: section.market_data_topic.clone(),
            partitions: section.partitions,
            replication_factor: section.replication_factor,
            create_topics: section.create_topics,
            delivery: ringmatch_kafka::Delivery::parse(&section.delivery)
                .map_err(|problem| anyhow::anyhow!("kafka.delivery: {problem}"))?,
            transactional_id: section.transactional_id.clone(),
            commit_interval: std::time::Duration::from_millis(section.commit_interval_ms),
            commit_events_max: section.commit_events_max,
            connect_timeout: std::time::Duration::from_millis(section.connect_timeout_ms),
            format,
            properties: section
                .properties
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        };
        config.validate()?;
        Ok(Some(config))
    }

    /// The journal folder.
    pub fn journal_dir(&self) -> PathBuf {
        self.data.dir.join("journal")
    }

    /// The snapshot folder.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.data.dir.join("snapshots")
    }

    /// The events file.
    pub fn events_path(&self) -> PathBuf {
        self.data.dir.join("events.bin")
    }

    /// The journal configuration.
    pub fn journal_config(&self) -> anyhow::Result<ringmatch_journal::JournalConfig> {
        Ok(ringmatch_journal::JournalConfig {
            dir: self.journal_dir(),
            segment_size_bytes: self.journal.segment_size_bytes,
            durability: self.durability()?,
        })
    }

    /// The pipeline configuration.
    pub fn pipeline_config(&self) -> anyhow::Result<ringmatch_pipeline::PipelineConfig> {
        let cores = &self.pipeline.cores;
        Ok(ringmatch_pipeline::PipelineConfig {
            input_ring_slots_count: self.pipeline.input_ring_slots,
            output_ring_slots_count: self.pipeline.output_ring_slots,
            wait: self.wait()?,
            cores: ringmatch_pipeline::StageCores {
                journaler: cores.journaler,
                replicator: cores.replicator,
                matcher: cores.matcher,
                publisher: cores.publisher,
                responder: cores.responder,
            },
            snapshot_every_commands: self.snapshots.every_commands,
            retention: self.retention()?,
        })
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The matcher's part of the configuration.
    pub fn matcher(&self) -> MatcherConfig {
        MatcherConfig {
            instruments: self
                .instruments
                .iter()
                .map(|section| InstrumentSpec {
                    id: section.id,
                    symbol: section.symbol.clone(),
                    tick_size: section.tick_size,
                    lot_size: section.lot_size,
                    min_price: section.min_price,
                    max_price: section.max_price,
                    max_qty: section.max_qty,
                    session_end_ns: section
                        .session_end_utc
                        .as_deref()
                        .map(|text| parse_time_of_day(text).expect("checked by Config::parse")),
                })
                .collect(),
            limits: Limits {
                orders_per_book_max: self.limits.orders_per_book_max,
                orders_max: self.limits.orders_max,
                accounts_max: self.limits.accounts_max,
                instruments_max: self.limits.instruments_max,
                resends_max: self.limits.resends_max,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_time_of_day("21:00").unwrap(), 75_600_000_000_000);
        assert_eq!(parse_time_of_day("00:00:01").unwrap(), 1_000_000_000);
        for bad in ["24:00", "9:00", "21:60", "21", "21:00:00:00", "21:0a", ""] {
            assert!(parse_time_of_day(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_shipped_default_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/default.toml");
        let config = Config::load(&path).unwrap();
        let demo = &config.instruments[0];
        assert_eq!((demo.id, demo.symbol.as_str()), (1, "DEMO"));
        assert_eq!((demo.tick_size, demo.lot_size), (1, 1));
        assert_eq!(
            (demo.min_price, demo.max_price, demo.max_qty),
            (1, 1_000_000, 1_000_000)
        );
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let text = "[[instruments]]\nid = 1\nsymbol = \"X\"\ntick_size = 1\nlot_size = 1\n\
                    min_price = 1\nmax_price = 10\nmax_qty = 10\ncolour = \"red\"\n";
        let error = format!("{:#}", Config::parse(text).unwrap_err());
        assert!(error.contains("colour"), "{error}");
    }

    #[test]
    fn invalid_instruments_are_rejected_with_the_reason() {
        let text = "[[instruments]]\nid = 0\nsymbol = \"X\"\ntick_size = 1\nlot_size = 1\n\
                    min_price = 1\nmax_price = 10\nmax_qty = 10\n";
        let error = format!("{:#}", Config::parse(text).unwrap_err());
        assert!(error.contains("id 0 is reserved"), "{error}");
    }
}
