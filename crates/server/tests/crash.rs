//! kill -9 of `ringmatch serve` under load at random moments, many times. After every kill,
//! `journal verify` must pass (no damage; the events file a prefix of a clean replay) and
//! every command acknowledged as durable must be in the journal; after every restart the
//! recovered state hash must equal the hash of a clean replay of the journal. At the end a
//! clean stop leaves an events file equal to a clean replay: every event exactly once.
//!
//! `RINGMATCH_CRASH_ROUNDS` sets the number of kills (default 20); the seed is printed.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{command_lines, field, stdout, Setup};

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
    let rounds: u64 = std::env::var("RINGMATCH_CRASH_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20);
    let seed = support::seed_from_env();
    eprintln!("crash test: {rounds} rounds, RINGMATCH_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let setup = Setup::new("");
    let lines = Arc::new(command_lines(200_000, seed));
    let next_line = Arc::new(AtomicU64::new(0));
    let mut acked_durable_seq = 0u64;

    for round in 0..rounds {
        let server = setup.start(&[]);
        let port = server.port;
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
                        Some((200, response)) => {
                            let json: serde_json::Value = serde_json::from_str(&response).unwrap();
                            if json["durable"] == true {
                                acked.fetch_max(
                                    json["last_seq"].as_u64().unwrap(),
                                    Ordering::Relaxed,
                                );
                            }
                        }
                        Some((503, _)) => std::thread::sleep(Duration::from_millis(1)),
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
    eprintln!("crash test: {text}");
}
