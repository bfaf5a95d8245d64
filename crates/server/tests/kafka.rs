//! `ringmatch serve` publishing to a real Kafka broker (`KAFKA_BOOTSTRAP`; scripts/test.sh
//! starts one): kill -9 under load many times, a second engine fencing the first, at least
//! once delivery, JSON values, and bad configurations. Every run ends by reading both topics
//! with read_committed and comparing them, partition by partition and byte for byte, with the
//! events of a clean replay of the journal.
//!
//! `RINGMATCH_KAFKA_CRASH_ROUNDS` sets the number of kills (default 10); the seed is printed
//! (`RINGMATCH_CRASH_SEED` repeats a run).

mod kafka_support;
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_support::{assert_exactly_once, bootstrap, read_committed, Names};
use support::{command_lines, Setup};

const PARTITIONS: i32 = 3;

/// A second tradable instrument, so events land on more than one partition.
const SECOND_INSTRUMENT: &str = "[[instruments]]\nid = 2\nsymbol = \"TWO\"\ntick_size = 1\n\
     lot_size = 1\nmin_price = 1\nmax_price = 200000\nmax_qty = 1000000\n";

/// The exchange-core mix, with every fifth command on instrument 2 and every fifth on
/// instrument 3 (not configured: rejected), so all three partitions get events.
fn load_lines(count: usize, seed: u64) -> Vec<String> {
    command_lines(count, seed)
        .into_iter()
        .enumerate()
        .map(|(index, line)| match index % 5 {
            0 => line.replace("\"instrument\":1", "\"instrument\":2"),
            1 => line.replace("\"instrument\":1", "\"instrument\":3"),
            _ => line,
        })
        .collect()
}

/// Posts batches of command lines to `serve` until stopped or the server goes away.
struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    fn start(port: u16, lines: &Arc<Vec<String>>, next: &Arc<AtomicU64>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (lines, next, stop) = (Arc::clone(lines), Arc::clone(next), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let start = next.fetch_add(50, Ordering::Relaxed) as usize % (lines.len() - 50);
                    let body = lines[start..start + 50].join("\n");
                    match support::http(port, "POST", "/commands", &body) {
                        Some((200, _)) => {}
                        Some((503, _)) => std::thread::sleep(Duration::from_millis(2)),
                        Some(other) => panic!("unexpected response {other:?}"),
                        None => return,
                    }
                }
            })
        };
        Load { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

/// How many replayed events `serve` found already in Kafka at start-up, from its log line
/// "...; N replayed events were already out".
fn skipped_on_start(log: &str) -> u64 {
    log.lines()
        .find_map(|line| line.strip_suffix(" replayed events were already out"))
        .and_then(|line| line.rsplit("; ").next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no skipped count in:\n{log}"))
}

#[test]
fn kill_9_under_load_then_kafka_holds_every_event_exactly_once() {
    let bootstrap = bootstrap();
    let rounds = support::count_from_env("RINGMATCH_KAFKA_CRASH_ROUNDS", 10);
    let seed = support::seed_from_env();
    eprintln!("kafka crash test: {rounds} rounds, RINGMATCH_CRASH_SEED={seed}");
    let mut random = seed;
    let mut next_random = move || {
        random ^= random >> 12;
        random ^= random << 25;
        random ^= random >> 27;
        random.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let names = Names::new("crash");
    let setup = Setup::new(&format!(
        "{}{SECOND_INSTRUMENT}",
        names.section(&bootstrap, PARTITIONS, "")
    ));
    let lines = Arc::new(load_lines(100_000, seed));
    let next = Arc::new(AtomicU64::new(0));
    let mut restarts_from_a_snapshot = 0;
    let mut restarts_that_skipped = 0;
    let mut note_restart = |log: &str| {
        restarts_from_a_snapshot += usize::from(log.contains("ringmatch: snapshot: using"));
        restarts_that_skipped += usize::from(skipped_on_start(log) > 0);
    };
    for round in 0..rounds {
        let server = setup.start(&[]);
        note_restart(&server.log());
        let load = Load::start(server.port, &lines, &next);
        std::thread::sleep(Duration::from_millis(200 + next_random() % 800));
        server.kill9();
        load.stop();
        eprintln!("kafka crash test: round {round} killed");
    }
    let server = setup.start(&[]);
    let log = server.log();
    note_restart(&log);
    // Restarts replayed the journal and skipped what Kafka held. (Not necessarily the last
    // one: a kill that lands after a snapshot's events are committed and before any later
    // commit leaves nothing to skip, which is correct.)
    assert!(
        restarts_that_skipped > 0,
        "no restart skipped events Kafka held; last start:\n{log}"
    );
    // Snapshots were taken under load and restarts replayed from them, so the rule that a
    // snapshot waits for the output was exercised (and the final comparison below shows no
    // event was lost to it).
    assert!(
        restarts_from_a_snapshot > 0,
        "no restart used a snapshot ({restarts_that_skipped} restarts skipped events)"
    );
    eprintln!(
        "kafka crash test: {restarts_from_a_snapshot} restarts from a snapshot, \
         {restarts_that_skipped} restarts skipped events Kafka held"
    );
    assert_eq!(server.terminate(), Some(0));
    let events_count = assert_exactly_once(&bootstrap, &names, PARTITIONS, &setup.config);
    assert!(
        events_count > 1_000,
        "the load did real work: {events_count}"
    );
    eprintln!("kafka crash test: {events_count} events, each exactly once");
}

#[test]
fn a_second_engine_fences_the_first_and_nothing_is_doubled() {
    let bootstrap = bootstrap();
    let names = Names::new("fence");
    let first = Setup::new(&format!(
        "{}{SECOND_INSTRUMENT}",
        names.section(&bootstrap, PARTITIONS, "")
    ));
    let lines = Arc::new(load_lines(20_000, support::seed_from_env()));
    let next = Arc::new(AtomicU64::new(0));
    let engine_a = first.start(&[]);
    let load = Load::start(engine_a.port, &lines, &next);
    std::thread::sleep(Duration::from_millis(700));
    load.stop();
    kafka_support::wait_committed(engine_a.port, || engine_a.log());

    // The standby: the same journal (copied while the first engine is idle) and the same
    // transactional id, in its own data directory.
    let second = Setup::new(&format!(
        "{}{SECOND_INSTRUMENT}",
        names.section(&bootstrap, PARTITIONS, "")
    ));
    copy_dir(&first.data(), &second.data());
    let engine_b = second.start(&[]);

    // The first engine's next output meets the fence: it stops with the documented error.
    let (code, body) = engine_a
        .request(
            "POST",
            "/commands",
            "{\"type\":\"place\",\"account\":7,\"instrument\":1,\"side\":\"buy\",\"price\":5,\"qty\":1,\"client_order_id\":1}",
        )
        .expect("the first engine takes the command");
    assert_eq!(code, 200, "{body}");
    let (exit, log) = engine_a.wait_exit(Duration::from_secs(60));
    assert_eq!(exit, Some(70), "{log}");
    assert!(
        log.contains("fenced: another engine initialised transactional.id"),
        "{log}"
    );

    // The second engine carries on and its output is the clean replay of its journal.
    let load = Load::start(engine_b.port, &lines, &next);
    std::thread::sleep(Duration::from_millis(500));
    load.stop();
    assert_eq!(engine_b.terminate(), Some(0));
    let events_count = assert_exactly_once(&bootstrap, &names, PARTITIONS, &second.config);
    assert!(events_count > 100, "{events_count}");
}

/// An engine started by mistake on an empty data directory, with the live engine's
/// transactional id, is refused before it initialises transactions: the live engine is not
/// fenced and goes on publishing, exactly once. (Before, the mistaken engine fenced the live
/// one and only then found Kafka ahead of its journal: both were down.)
#[test]
fn a_start_on_an_empty_data_directory_is_refused_without_fencing_the_live_engine() {
    let bootstrap = bootstrap();
    let names = Names::new("mistake");
    let live = Setup::new(&format!(
        "{}{SECOND_INSTRUMENT}",
        names.section(&bootstrap, PARTITIONS, "")
    ));
    let lines = Arc::new(load_lines(20_000, support::seed_from_env()));
    let next = Arc::new(AtomicU64::new(0));
    let engine = live.start(&[]);
    let load = Load::start(engine.port, &lines, &next);
    std::thread::sleep(Duration::from_millis(500));
    load.stop();
    kafka_support::wait_committed(engine.port, || engine.log());

    let mistaken = Setup::new(&format!(
        "{}{SECOND_INSTRUMENT}",
        names.section(&bootstrap, PARTITIONS, "")
    ));
    let (code, log) = mistaken.start_fails(&[]);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("but the journal ends before sequence 1"),
        "{log}"
    );

    // The live engine still owns the transactional id: more load, committed, no fence.
    let load = Load::start(engine.port, &lines, &next);
    std::thread::sleep(Duration::from_millis(500));
    load.stop();
    kafka_support::wait_committed(engine.port, || engine.log());
    let log = engine.log();
    assert!(!log.contains("fenced"), "{log}");
    assert_eq!(engine.terminate(), Some(0));
    let events_count = assert_exactly_once(&bootstrap, &names, PARTITIONS, &live.config);
    assert!(events_count > 100, "{events_count}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn at_least_once_survives_kills_and_consumers_can_dedupe_by_headers() {
    let bootstrap = bootstrap();
    let names = Names::new("alo");
    let setup = Setup::new(&format!(
        "{}{SECOND_INSTRUMENT}",
        names.section(&bootstrap, PARTITIONS, "delivery = \"at_least_once\"")
    ));
    let lines = Arc::new(load_lines(50_000, support::seed_from_env()));
    let next = Arc::new(AtomicU64::new(0));
    for round in 0..3u64 {
        let server = setup.start(&[]);
        let load = Load::start(server.port, &lines, &next);
        std::thread::sleep(Duration::from_millis(300 + 250 * round));
        server.kill9();
        load.stop();
    }
    let server = setup.start(&[]);
    assert_eq!(server.terminate(), Some(0));
    let replay = kafka_support::clean_replay(&setup.config);
    let expected = kafka_support::split(&replay, PARTITIONS, |event| event.to_bytes().to_vec());
    let mut duplicates = 0;
    for (topic_index, topic) in [&names.events, &names.market_data].into_iter().enumerate() {
        let found = read_committed(&bootstrap, topic, PARTITIONS);
        for partition in 0..PARTITIONS as usize {
            // What a consumer does: drop a record at or before the last (seq, index) it saw.
            let mut deduped = Vec::new();
            let mut last = None;
            for record in &found[partition] {
                if last.is_some_and(|last| (record.seq, record.index) <= last) {
                    duplicates += 1;
                    continue;
                }
                last = Some((record.seq, record.index));
                deduped.push(record.clone());
            }
            assert!(
                deduped == expected[topic_index][partition],
                "{topic} partition {partition}: {} records after dedupe, {} in a clean replay",
                deduped.len(),
                expected[topic_index][partition].len()
            );
        }
    }
    eprintln!(
        "at least once: {} events, {duplicates} duplicates dropped by the consumer",
        replay.len()
    );
}

#[test]
fn json_values_are_the_feed_lines() {
    let bootstrap = bootstrap();
    let names = Names::new("json");
    let setup = Setup::new(&format!(
        "[output]\nformat = \"json\"\n{}{SECOND_INSTRUMENT}",
        names.section(&bootstrap, PARTITIONS, "")
    ));
    let server = setup.start(&[]);
    let body = load_lines(300, 7).join("\n");
    let (code, response) = server.request("POST", "/commands", &body).unwrap();
    assert_eq!(code, 200, "{response}");
    assert_eq!(server.terminate(), Some(0));
    let replay = kafka_support::clean_replay(&setup.config);
    let expected = kafka_support::split(&replay, PARTITIONS, |event| {
        ringmatch_server::script::event_to_json(event).into_bytes()
    });
    for (topic_index, topic) in [&names.events, &names.market_data].into_iter().enumerate() {
        let found = read_committed(&bootstrap, topic, PARTITIONS);
        for partition in 0..PARTITIONS as usize {
            assert!(
                found[partition] == expected[topic_index][partition],
                "{topic} partition {partition} differs"
            );
        }
        assert!(found.iter().any(|records| !records.is_empty()));
    }
    let first: serde_json::Value = serde_json::from_slice(
        &read_committed(&bootstrap, &names.events, PARTITIONS)
            .into_iter()
            .flatten()
            .next()
            .unwrap()
            .value,
    )
    .expect("values are JSON");
    assert!(first["type"].is_string(), "{first}");
}

/// A journal with some commands in it, written without Kafka; returns its `journal verify`.
fn journal_with_commands(setup: &Setup) -> String {
    let server = setup.start(&[]);
    let body = load_lines(200, 3).join("\n");
    let (code, response) = server.request("POST", "/commands", &body).unwrap();
    assert_eq!(code, 200, "{response}");
    assert_eq!(server.terminate(), Some(0));
    let output = setup.tool(&["journal", "verify"]);
    assert!(output.status.success());
    support::stdout(&output)
}

#[test]
fn bad_kafka_configurations_fail_clearly_and_leave_the_journal_alone() {
    let bootstrap = bootstrap();
    let names = Names::new("bad");
    let setup = Setup::new(SECOND_INSTRUMENT);
    let before = journal_with_commands(&setup);
    let cases: Vec<(Vec<String>, String, &str)> = vec![
        (
            vec!["--kafka-bootstrap".into(), "127.0.0.1:1".into()],
            String::new(),
            "cannot reach Kafka at 127.0.0.1:1",
        ),
        (
            vec!["--kafka-bootstrap".into(), bootstrap.clone()],
            "create_topics = false".into(),
            "does not exist and kafka.create_topics is false",
        ),
        (
            vec!["--kafka-bootstrap".into(), bootstrap.clone()],
            "[kafka.properties]\n\"no.such.property\" = \"1\"".into(),
            "check kafka.properties",
        ),
        (
            vec!["--kafka-bootstrap".into(), bootstrap.clone()],
            "[kafka.properties]\n\"acks\" = \"1\"".into(),
            "kafka.properties may not set \"acks\"",
        ),
        (
            vec!["--kafka-bootstrap".into(), bootstrap.clone()],
            "[kafka.properties]\n\"security.protocol\" = \"sasl_plaintext\"\n\"sasl.username\" = \"x\"".into(),
            "check kafka.properties",
        ),
    ];
    for (args, kafka_extra, expected) in cases {
        let config = format!(
            "[kafka]\nevents_topic = \"{}\"\nmarket_data_topic = \"{}\"\ntransactional_id = \"{}\"\n\
             connect_timeout_ms = 3000\n{kafka_extra}\n",
            names.events, names.market_data, names.transactional_id
        );
        let text = std::fs::read_to_string(&setup.config).unwrap();
        let base = text.split("[kafka]").next().unwrap().to_string();
        std::fs::write(&setup.config, format!("{base}{config}")).unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let (code, log) = setup.start_fails(&args);
        assert_ne!(code, Some(0), "{log}");
        assert!(log.contains(expected), "expected {expected:?} in:\n{log}");
        assert!(started.elapsed() < Duration::from_secs(30));
        let output = setup.tool(&["journal", "verify"]);
        assert!(output.status.success(), "journal damaged after: {log}");
        assert_eq!(
            support::stdout(&output),
            before,
            "journal changed after: {log}"
        );
    }

    // A topic with another partition count than configured.
    let names = Names::new("partitions");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let base = text.split("[kafka]").next().unwrap().to_string();
    std::fs::write(
        &setup.config,
        format!("{base}{}", names.section(&bootstrap, 2, "")),
    )
    .unwrap();
    let server = setup.start(&[]);
    assert_eq!(server.terminate(), Some(0));
    std::fs::write(
        &setup.config,
        format!("{base}{}", names.section(&bootstrap, 5, "")),
    )
    .unwrap();
    let (code, log) = setup.start_fails(&[]);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("has 2 partitions but kafka.partitions = 5"),
        "{log}"
    );
}

/// A three-node cluster publishing to Kafka, its leader killed with kill -9 under
/// order-entry load from one client that follows the leader and resends what was not
/// acknowledged, each killed member started again. Every member has the cluster's one
/// transactional id: each new leader fences the old one's producer and resumes from what
/// Kafka holds. Both topics end equal to a clean replay of the journal, every event once.
#[test]
fn a_cluster_failing_over_under_load_publishes_every_event_exactly_once() {
    use support::cluster::{cluster, leader};
    let bootstrap = bootstrap();
    let rounds = support::count_from_env("RINGMATCH_KAFKA_CLUSTER_ROUNDS", 6);
    let seed = support::seed_from_env();
    eprintln!("kafka cluster test: {rounds} rounds, RINGMATCH_CRASH_SEED={seed}");
    let mut random = seed | 1;
    let names = Names::new("cluster");
    let dir = tempfile::tempdir().unwrap();
    let mut members = cluster(dir.path(), &names.section(&bootstrap, PARTITIONS, ""));
    for member in &mut members {
        member.start();
    }
    leader(&members);
    // One client through every failover, resending what was not acknowledged.
    let load = support::cluster::ResendingLoad::start(&members);
    for round in 0..rounds {
        let at = leader(&members);
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        std::thread::sleep(Duration::from_millis(300 + random % 700));
        members[at].kill9();
        eprintln!(
            "kafka cluster test: round {round}: killed the leader, node {} ({} acks so far)",
            members[at].id,
            load.acks_count()
        );
        members[at].start();
    }
    leader(&members);
    let report = load.stop();
    let acks = report.acks.len();
    assert!(report.resends_count > 0, "nothing was resent");
    let at = leader(&members);
    kafka_support::wait_committed(members[at].admin_port, || members[at].log_text());
    support::cluster::stop_all(&mut members, at);
    let events_count = assert_exactly_once(&bootstrap, &names, PARTITIONS, &members[at].config);
    assert!(
        acks > 1_000 && events_count > 1_000,
        "{acks} acks, {events_count} events"
    );
    // Promotions took over the shadow matcher (its kept events completing what Kafka
    // lacked), or replayed from a snapshot a follower wrote in shadow whose events mark
    // Kafka held.
    let count_in_logs = |text: &str| -> usize {
        members
            .iter()
            .map(|member| member.log_text().matches(text).count())
            .sum()
    };
    let hot_promotions = count_in_logs("cluster: hot promotion");
    let promotions_from_a_snapshot = count_in_logs("ringmatch: snapshot: using");
    assert!(
        hot_promotions > 0,
        "no promotion took over the shadow matcher"
    );
    eprintln!(
        "kafka cluster test: {acks} acks, {events_count} events exactly once in Kafka; \
         {hot_promotions} hot promotions, {promotions_from_a_snapshot} from a snapshot"
    );
}

/// A follower restarted after the leader's log has moved past its position catches up from
/// the leader's snapshot: with `retention = "archive"` each follower compacts its log to the
/// oldest snapshot it keeps. Node C is killed early; load runs; the leader A is killed, so
/// the other follower B, whose log now starts long after C's position, leads once C is back;
/// B sends C its snapshot file, C installs it (its journal restarts after it) and then
/// follows. Kafka ends equal to a clean replay of the whole history (B's archived and live
/// segments), every event once.
#[test]
fn a_follower_behind_the_leaders_log_start_catches_up_by_snapshot() {
    use support::cluster::{cluster_with_journal, leader};
    let _serial = support::cluster::one_at_a_time();
    let bootstrap = bootstrap();
    let names = Names::new("catchup");
    let dir = tempfile::tempdir().unwrap();
    let mut members = cluster_with_journal(
        dir.path(),
        &names.section(&bootstrap, PARTITIONS, ""),
        "retention = \"archive\"\n",
    );
    for member in &mut members {
        member.start();
    }
    let at = leader(&members);
    let behind = (at + 1) % 3;
    let other = (at + 2) % 3;
    let load = support::cluster::ResendingLoad::start(&members);
    while load.acks_count() < 500 {
        std::thread::sleep(Duration::from_millis(5));
    }
    members[behind].kill9();
    let behind_seq = load.acks_count();
    // Enough commands for several snapshots (every 3,000) past the killed node's position.
    let deadline = Instant::now() + Duration::from_secs(120);
    while load.acks_count() < behind_seq + 30_000 {
        assert!(Instant::now() < deadline, "the load stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The other follower compacted: its log starts past the killed node's position.
    let log_start_of_other = || {
        members[other]
            .log_text()
            .matches("cluster: shadow snapshot after sequence")
            .count()
    };
    assert!(log_start_of_other() >= 3, "{}", members[other].log_text());
    members[at].kill9();
    members[behind].start();
    let next = leader(&members);
    assert_eq!(next, other, "the member with the longer log leads");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !members[behind]
        .log_text()
        .contains("restored the leader's snapshot")
    {
        assert!(
            Instant::now() < deadline,
            "no snapshot reached the follower:\n{}\n--- leader:\n{}",
            members[behind].log_text(),
            members[next].log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    members[at].start();
    std::thread::sleep(Duration::from_millis(500));
    let report = load.stop();
    let at = leader(&members);
    kafka_support::wait_committed(members[at].admin_port, || members[at].log_text());
    // Every member caught up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let positions: Vec<(u64, u64)> = members
            .iter()
            .filter_map(|member| member.status())
            .map(|status| {
                (
                    status["cluster"]["commit_seq"].as_u64().unwrap(),
                    status["cluster"]["last_seq"].as_u64().unwrap(),
                )
            })
            .collect();
        if positions.len() == 3 && positions.iter().all(|position| *position == positions[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {positions:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    support::cluster::stop_all(&mut members, at);

    // The caught-up follower's journal restarts after the snapshot it installed.
    let verify = support::stdout(&members[behind].tool(&["journal", "verify"]));
    let first_seq: u64 = support::field(&verify, "journal")
        .split("..")
        .next()
        .unwrap()
        .trim_start_matches("sequences ")
        .parse()
        .unwrap();
    assert!(first_seq > behind_seq, "{verify}");
    // Every member's state, rebuilt from its own snapshot and journal, is the same.
    let hashes: Vec<String> = members
        .iter()
        .map(|member| {
            let text = support::stdout(&member.tool(&["journal", "verify"]));
            support::field(&text, "state_hash")
        })
        .collect();
    assert!(
        hashes.iter().all(|hash| hash == &hashes[0]) && hashes[0].starts_with("0x"),
        "{hashes:?}"
    );
    // The whole history: the other follower's archived segments, then its journal.
    let history = dir.path().join("history");
    std::fs::create_dir_all(&history).unwrap();
    let data = dir.path().join(format!("node{}", members[other].id));
    for folder in ["archive", "journal"] {
        for entry in std::fs::read_dir(data.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|extension| extension == "seg") {
                std::fs::copy(&path, history.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let replay = kafka_support::clean_replay_of(&members[other].config, &history);
    let events_count =
        kafka_support::assert_exactly_once_as(&bootstrap, &names, PARTITIONS, replay);
    assert!(report.acks.len() > 30_000, "{} acks", report.acks.len());
    eprintln!(
        "catch-up test: node {} rejoined behind a log starting past it, installed a snapshot \
         (its journal starts at {first_seq}); {events_count} events exactly once in Kafka",
        members[behind].id
    );
}
