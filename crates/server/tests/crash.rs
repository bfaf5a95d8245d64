//! kill -9 of `ringmatch serve` under load at random moments, many times. The load comes from
//! the admin `POST /commands` and from an order-entry session at once. After every kill,
//! `journal verify` must pass (no damage; the events file a prefix of a clean replay), every
//! command acknowledged as durable by the admin must be in the journal, and every `ack` the
//! session received must name a journaled command under that very sequence (the session's
//! account and client order id); after every restart the
//! recovered state hash must equal the hash of a clean replay of the journal. At the end a
//! clean stop leaves an events file equal to a clean replay: every event exactly once.
//!
//! `RINGMATCH_CRASH_ROUNDS` sets the number of kills (default 20); the seed is printed.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringmatch_gateway::hash_token;
use ringmatch_proto::Command;
use support::{command_lines, field, stdout, Setup};

/// The order-entry account of the gateway load.
const ACCOUNT: u32 = 7;

/// Every acknowledged (sequence, client order id) is in the journal, under that sequence, as
/// a command of the session's account with that client order id.
fn check_gateway_acks(setup: &Setup, round: u64, acks: &[(u64, u64)], next_seq: u64) {
    let Some(first_seq) = acks.iter().map(|(seq, _)| *seq).min() else {
        return;
    };
    assert!(
        acks.iter().all(|(seq, _)| *seq < next_seq),
        "round {round}: an acknowledged sequence is past the journal's end {next_seq}"
    );
    let journal: std::collections::HashMap<u64, Command> =
        ringmatch_journal::JournalReader::open(&setup.data().join("journal"), first_seq)
            .unwrap()
            .take((next_seq - first_seq) as usize)
            .map(|record| {
                let record = record.unwrap();
                (record.seq, record.command)
            })
            .collect();
    for (seq, client_order_id) in acks {
        let command = journal.get(seq).unwrap_or_else(|| {
            panic!("round {round}: acknowledged sequence {seq} is not journaled")
        });
        assert_eq!(
            (command.account, command.client_order_id),
            (ACCOUNT, *client_order_id),
            "round {round}: sequence {seq} was acknowledged to client order id {client_order_id} \
             but the journal holds another command under it"
        );
    }
}

/// xorshift64*, seeded from the clock and printed, so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn kill_9_under_load_loses_and_doubles_nothing() {
    let rounds = support::count_from_env("RINGMATCH_CRASH_ROUNDS", 20);
    let seed = support::seed_from_env();
    eprintln!("crash test: {rounds} rounds, RINGMATCH_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let setup = Setup::new(&format!(
        "[gateway]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
         [[gateway.logins]]\naccount = {ACCOUNT}\ntoken_hash = \"{}\"\n",
        hash_token(b"crash-salt", b"crash-token")
    ));
    let next_client_order_id = Arc::new(AtomicU64::new(1));
    let mut gateway_acks_count = 0usize;
    let lines = Arc::new(command_lines(200_000, seed));
    let next_line = Arc::new(AtomicU64::new(0));
    let mut acked_durable_seq = 0u64;

    for round in 0..rounds {
        let server = setup.start(&[]);
        let port = server.port;
        let gateway = {
            let gateway_port = server.gateway_port.expect("the gateway is enabled");
            let next_client_order_id = Arc::clone(&next_client_order_id);
            std::thread::spawn(move || {
                support::gateway_load(gateway_port, ACCOUNT, b"crash-token", &next_client_order_id)
            })
        };
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let load = {
            let (lines, next_line, stop, acked) = (
                Arc::clone(&lines),
                Arc::clone(&next_line),
                Arc::clone(&stop),
                Arc::clone(&acked),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let start =
                        next_line.fetch_add(100, Ordering::Relaxed) as usize % (lines.len() - 100);
                    let body = lines[start..start + 100].join("\n");
                    match support::http(port, "POST", "/commands", &body) {
                        // An answer that names sequences promises them, `busy` part way
                        // included.
                        Some((status @ (200 | 503), response)) => {
                            let json: serde_json::Value = serde_json::from_str(&response).unwrap();
                            if let Some(last_seq) = json["last_seq"].as_u64() {
                                assert_eq!(json["durable"], true, "{response}");
                                acked.fetch_max(last_seq, Ordering::Relaxed);
                            }
                            if status == 503 {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                        Some(other) => panic!("unexpected response {other:?}"),
                        None => return,
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(30 + rng.next() % 400));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap();
        let gateway_acks = gateway.join().unwrap();
        acked_durable_seq = acked_durable_seq.max(acked.load(Ordering::Relaxed));

        let output = setup.tool(&["journal", "verify"]);
        let text = stdout(&output);
        assert!(
            output.status.success(),
            "round {round}: journal verify failed:\n{text}"
        );
        let journal_range = field(&text, "journal");
        let next_seq: u64 = journal_range.split("..").nth(1).unwrap().parse().unwrap();
        assert!(
            next_seq > acked_durable_seq,
            "round {round}: durable sequence {acked_durable_seq} was acknowledged but the journal ends before {next_seq}"
        );
        check_gateway_acks(&setup, round, &gateway_acks, next_seq);
        gateway_acks_count += gateway_acks.len();
        let clean_hash = field(&text, "state_hash");
        // Restart and compare the recovered state with the clean replay.
        let server = setup.start(&[]);
        assert_eq!(
            server.recovered_hash(),
            clean_hash,
            "round {round}: recovered state differs:\n{}",
            server.log()
        );
        server.kill9();
    }

    let server = setup.start(&[]);
    assert_eq!(server.terminate(), Some(0));
    let output = setup.tool(&["journal", "verify"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("equal to a clean replay"), "{text}");
    let next_seq: u64 = field(&text, "journal")
        .split("..")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(next_seq > 1_000, "the load did real work: {text}");
    assert!(
        gateway_acks_count > 1_000,
        "the session got {gateway_acks_count} acks"
    );
    eprintln!("crash test: {text}");
}

/// kill -9 of a single node under a client that reconnects and resends
/// (`ringmatch_gateway::FailoverClient`): the node restarts on the same port, the client
/// resends what it was not acknowledged as possible resends, and at the end every order was
/// accepted exactly once: a resend the engine had taken got `resent` with the original's
/// sequence, never a second order.
#[test]
fn kill_9_under_a_resending_client_places_every_order_exactly_once() {
    let rounds = support::count_from_env("RINGMATCH_CRASH_ROUNDS", 20).min(8);
    let seed = support::seed_from_env();
    eprintln!("resend test: {rounds} rounds, RINGMATCH_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let port = support::cluster::free_port();
    let setup = Setup::new(&format!(
        "[gateway]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\
         [[gateway.logins]]\naccount = {ACCOUNT}\ntoken_hash = \"{}\"\n",
        hash_token(b"crash-salt", b"crash-token")
    ));
    let mut server = setup.start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            support::resending_load(
                vec![format!("127.0.0.1:{port}")],
                ACCOUNT,
                b"crash-token",
                &AtomicU64::new(0),
                &stop,
            )
        })
    };
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_millis(100 + rng.next() % 400));
        server.kill9();
        server = setup.start(&[]);
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let report = load.join().unwrap();
    assert_eq!(server.terminate(), Some(0));
    let output = setup.tool(&["journal", "verify"]);
    let text = stdout(&output);
    assert!(text.contains("equal to a clean replay"), "{text}");
    let next_seq: u64 = field(&text, "journal")
        .split("..")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    check_gateway_acks(&setup, rounds, &report.acks, next_seq);
    let events = stdout(&setup.tool(&["events", "dump"]));
    let resent_count = support::check_each_order_once(&events, ACCOUNT, &report.acked);
    assert!(
        report.reconnects_count >= rounds,
        "{} reconnects over {rounds} kills",
        report.reconnects_count
    );
    assert!(report.resends_count > 0, "nothing was resent");
    eprintln!(
        "resend test: {} orders, {} reconnects, {} resends, {resent_count} answered with the \
         original's outcome",
        report.acked.len(),
        report.reconnects_count,
        report.resends_count
    );
}
