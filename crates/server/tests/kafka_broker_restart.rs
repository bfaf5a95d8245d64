//! The broker goes away mid-load for several seconds and comes back: matching goes on while
//! it is away, and afterwards a read_committed consumer sees every event exactly once, equal
//! to a clean replay of the journal.
//!
//! This test stops and starts the broker of `scripts/kafka.sh`, so it lives in its own test
//! binary (cargo runs test binaries one at a time) and needs `KAFKA_BOOTSTRAP` to be that
//! broker. Against a broker of your own, set `RINGMATCH_KAFKA_NO_RESTART=1` to leave it out
//! (it says so loudly).

mod kafka_support;
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_support::{assert_exactly_once, bootstrap, Names};
use support::{command_lines, Setup};

fn kafka_script(action: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(action)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/kafka.sh {action} failed");
}

/// The tests of this binary stop the one broker: one at a time.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The bootstrap of the broker of `scripts/kafka.sh`, or None when the tests are to be left
/// out (`RINGMATCH_KAFKA_NO_RESTART=1` against another broker).
fn restartable_broker() -> Option<String> {
    let bootstrap = bootstrap();
    let port = std::env::var("RINGMATCH_KAFKA_PORT").unwrap_or_else(|_| "19092".into());
    if bootstrap != format!("127.0.0.1:{port}") {
        if std::env::var("RINGMATCH_KAFKA_NO_RESTART").as_deref() == Ok("1") {
            eprintln!(
                "SKIPPED: broker restart test (KAFKA_BOOTSTRAP={bootstrap} is not the broker of \
                 scripts/kafka.sh, and RINGMATCH_KAFKA_NO_RESTART=1)"
            );
            return None;
        }
        panic!(
            "KAFKA_BOOTSTRAP={bootstrap} is not the broker of scripts/kafka.sh \
             (127.0.0.1:{port}), which this test stops and starts; set \
             RINGMATCH_KAFKA_NO_RESTART=1 to leave this test out"
        );
    }
    Some(bootstrap)
}

/// Starts the broker again when dropped, also when the test fails while it is stopped, so the
/// rest of the suite keeps its broker.
struct BrokerBack;

impl Drop for BrokerBack {
    fn drop(&mut self) {
        kafka_script("restart");
    }
}

fn committed(port: u16) -> u64 {
    let (_, body) = support::http(port, "GET", "/status", "").expect("status");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    status["kafka"]["committed_seq"].as_u64().unwrap()
}

fn matched(port: u16) -> u64 {
    let (_, body) = support::http(port, "GET", "/status", "").expect("status");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    status["stages"]["matched"].as_u64().unwrap()
}

#[test]
fn broker_restart_mid_load_loses_and_doubles_nothing() {
    let _alone = ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(bootstrap) = restartable_broker() else {
        return;
    };
    let names = Names::new("restart");
    let setup = Setup::new(&names.section(&bootstrap, 2, ""));
    let server = setup.start(&[]);
    let admin_port = server.port;
    let lines = Arc::new(command_lines(200_000, 11));
    let stop = Arc::new(AtomicBool::new(false));
    let busy = Arc::new(AtomicU64::new(0));
    let load = {
        let (lines, stop, busy) = (Arc::clone(&lines), Arc::clone(&stop), Arc::clone(&busy));
        std::thread::spawn(move || {
            let mut next = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let body = lines[next % (lines.len() - 50)..][..50].join("\n");
                match support::http(admin_port, "POST", "/commands", &body) {
                    Some((200, _)) => next += 50,
                    Some((503, _)) => {
                        busy.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    other => panic!("unexpected response {other:?}"),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let stopping = Instant::now();
    let matched_before = matched(admin_port);
    let committed_before = committed(admin_port);
    let broker_back = BrokerBack;
    kafka_script("stop");
    let busy_before = busy.load(Ordering::Relaxed);
    let committed_at_stop = committed(admin_port);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        committed(admin_port),
        committed_at_stop,
        "nothing can be committed while the broker is stopped"
    );
    // Matching went on past what Kafka had, until the output buffers filled; then input got
    // the busy answer. The service stayed up and answering.
    let matched_while_away = matched(admin_port);
    let committed_while_away = committed(admin_port);
    assert!(
        matched_while_away > committed_while_away && matched_while_away > matched_before,
        "matching went on while the broker was away: matched {matched_before} -> \
         {matched_while_away}, committed {committed_before} -> {committed_while_away}"
    );
    let busy_while_away = busy.load(Ordering::Relaxed) - busy_before;
    drop(broker_back);
    eprintln!(
        "broker away for {:.1} s; matched {} commands beyond the last commit; {} busy answers \
         meanwhile",
        stopping.elapsed().as_secs_f64(),
        matched_while_away - committed_while_away,
        busy_while_away
    );
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    kafka_support::wait_committed(admin_port, || server.log());
    let (_, metrics) = support::http(admin_port, "GET", "/metrics", "").unwrap();
    let retried: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("ringmatch_kafka_errors_total{kind=\"retriable\"} "))
        .and_then(|value| value.parse().ok())
        .unwrap();
    assert!(
        retried > 0,
        "the publisher retried while the broker was away"
    );
    let log = server.log();
    assert_eq!(server.terminate(), Some(0));
    let events_count = assert_exactly_once(&bootstrap, &names, 2, &setup.config);
    eprintln!(
        "broker restart: {events_count} events exactly once; {} busy answers; publisher log:\n{}",
        busy.load(Ordering::Relaxed),
        log.lines()
            .filter(|line| line.contains("kafka:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// SIGTERM while the broker is away: `serve` stops matching and waits for the output (up to
/// 30 s). A second SIGTERM ends it at once with status 1, and says so in the log; the next start
/// publishes what was not committed, exactly once.
#[test]
fn a_second_signal_while_the_output_waits_ends_at_once_and_loses_nothing() {
    let _alone = ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(bootstrap) = restartable_broker() else {
        return;
    };
    let names = Names::new("second-signal");
    let setup = Setup::new(&names.section(&bootstrap, 1, ""));
    let server = setup.start(&[]);
    let lines = command_lines(200, 12);
    let (status, body) = server
        .request("POST", "/commands", &lines[..100].join("\n"))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    kafka_support::wait_committed(server.port, || server.log());
    let back = BrokerBack;
    kafka_script("stop");
    let (status, body) = server
        .request("POST", "/commands", &lines[100..].join("\n"))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let pid = server.child.id().to_string();
    let signal = || {
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
    };
    signal();
    std::thread::sleep(Duration::from_secs(2));
    let log = server.log();
    assert!(log.contains("stopping: no more input"), "{log}");
    assert!(
        !log.contains("stopped cleanly"),
        "the output cannot commit without its broker:\n{log}"
    );
    let second = Instant::now();
    signal();
    let (code, log) = server.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(1), "{log}");
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "{:?}",
        second.elapsed()
    );
    assert!(
        log.contains("a second signal while stopping: exiting at once with status 1"),
        "{log}"
    );
    drop(back);
    let server = setup.start(&[]);
    kafka_support::wait_committed(server.port, || server.log());
    assert_eq!(server.terminate(), Some(0));
    let events_count = assert_exactly_once(&bootstrap, &names, 1, &setup.config);
    assert!(events_count >= 200, "{events_count}");
}
