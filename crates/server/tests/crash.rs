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

use ringmatch_gateway::{hash_token, Frame};
use ringmatch_proto::{Command, EventType};
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

/// A client process that ends with places unanswered and starts again: the application kept
/// each place with the resend floor it was sent under (`FailoverClient::highest_acked_seq`
/// before the send), and the new process resends everything it holds no ack for with
/// `FailoverClient::resend`. Of 300 places kept, the first run sent 200 and ended (its
/// socket dropped) with some of them unanswered; the second run resends all 300. Every order
/// is accepted exactly once: the 200 the engine took are answered `resent` with their
/// original sequence, the 100 never sent are placed.
#[test]
fn a_restarted_client_resends_under_the_floors_it_kept_and_nothing_is_placed_twice() {
    let setup = Setup::new(&format!(
        "[gateway]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
         [[gateway.logins]]\naccount = {ACCOUNT}\ntoken_hash = \"{}\"\n",
        hash_token(b"crash-salt", b"crash-token")
    ));
    let server = setup.start(&[]);
    let address = format!("127.0.0.1:{}", server.gateway_port.unwrap());
    let options =
        ringmatch_gateway::FailoverOptions::new(vec![address.clone()], ACCOUNT, b"crash-token");

    // The first run: what the application keeps is `kept`, each place with its floor.
    let mut kept = Vec::new();
    let mut first = ringmatch_gateway::FailoverClient::connect(options.clone()).unwrap();
    for client_order_id in 1..=300 {
        let place = support::load_order(ACCOUNT, client_order_id);
        kept.push((place, first.highest_acked_seq()));
        if client_order_id > 200 {
            continue;
        }
        first.send(&place).unwrap();
        // Read some answers now and then, so that the floors grow.
        while client_order_id % 20 == 0 && first.in_flight_count() > 5 {
            first.recv(Duration::from_secs(5)).unwrap();
        }
    }
    assert!(first.in_flight_count() > 0, "every place was answered");
    assert!(
        kept.iter().any(|(_, floor)| *floor > 0),
        "no floor grew past 0"
    );
    drop(first);
    // The old session must be over (its last frames read) before anything is resent.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = server.request("GET", "/metrics", "").unwrap();
        if metrics
            .lines()
            .any(|line| line == "ringmatch_gateway_sessions 0")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old session never ended"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // The second run: nothing in memory, only what was kept.
    let mut second = ringmatch_gateway::FailoverClient::connect(options).unwrap();
    for (place, floor) in &kept {
        second.resend(place, *floor).unwrap();
    }
    assert_eq!(second.in_flight().count(), 300);
    assert!(
        second
            .in_flight()
            .zip(&kept)
            .all(
                |((place, floor), (kept_place, kept_floor))| place == kept_place
                    && floor == *kept_floor
            ),
        "the resends are tracked under the floors they were given"
    );
    let mut acked = Vec::new();
    let mut resent_outcomes = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while second.in_flight_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "resends never answered"
        );
        match second.recv(Duration::from_secs(1)).unwrap() {
            Some(Frame::Ack {
                client_order_id, ..
            }) => acked.push(client_order_id),
            Some(Frame::Event(event)) if event.event_type == EventType::Resent => {
                resent_outcomes += 1
            }
            _ => {}
        }
    }
    assert_eq!(second.resends_count(), 300);
    second.logout().unwrap();
    assert_eq!(server.terminate(), Some(0));

    let events = stdout(&setup.tool(&["events", "dump"]));
    let resent_count = support::check_each_order_once(&events, ACCOUNT, &acked);
    assert_eq!(acked.len(), 300);
    assert_eq!(resent_count, 200, "the places the first run sent");
    assert_eq!(resent_outcomes, 200);
    let accepted = events
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["type"] == "accepted")
        .count();
    assert_eq!(accepted, 300, "each kept place accepted once");
}
