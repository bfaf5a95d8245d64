//! Bad input and faults, each with a clear outcome: a truncated or damaged journal tail, a
//! flipped byte mid-journal, a corrupt newest snapshot, a missing data directory, an unknown
//! configuration key, a bad core id, bad admin requests, and a clean stop on SIGTERM.

mod support;

use support::{command_lines, field, last_segment, stdout, Setup};

/// Runs `count` commands through a fresh service and stops it cleanly.
fn populate(setup: &Setup, count: usize, seed: u64) {
    let server = setup.start(&[]);
    for chunk in command_lines(count, seed).chunks(500) {
        let (status, body) = server
            .request("POST", "/commands", &chunk.join("\n"))
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(server.terminate(), Some(0));
}

fn verify_hash(setup: &Setup) -> String {
    let output = setup.tool(&["journal", "verify"]);
    assert!(output.status.success(), "{}", stdout(&output));
    field(&stdout(&output), "state_hash")
}

const SEGMENT_HEADER: usize = ringmatch_journal::SEGMENT_HEADER_SIZE_BYTES;
const RECORD: usize = ringmatch_journal::RECORD_SIZE_BYTES;

/// Offset of the last record in a segment file.
fn last_record_offset(bytes: &[u8]) -> usize {
    let mut offset = SEGMENT_HEADER;
    while offset + RECORD <= bytes.len() && bytes[offset..offset + 4] != [0, 0, 0, 0] {
        offset += RECORD;
    }
    offset - RECORD
}

#[test]
fn a_damaged_tail_is_cut_with_a_log_line_and_the_rest_recovers() {
    for damage in ["flip", "truncate"] {
        let setup = Setup::new("");
        populate(&setup, 2_000, 1);
        let segment = last_segment(&setup.data());
        let mut bytes = std::fs::read(&segment).unwrap();
        let offset = last_record_offset(&bytes);
        if damage == "flip" {
            bytes[offset + 33] ^= 0x20;
            std::fs::write(&segment, &bytes).unwrap();
        } else {
            std::fs::File::options()
                .write(true)
                .open(&segment)
                .unwrap()
                .set_len((offset + 50) as u64)
                .unwrap();
        }
        let inspect = stdout(&setup.tool(&["journal", "inspect"]));
        assert!(inspect.contains("torn_tail:"), "{damage}: {inspect}");
        let expected_hash = verify_hash(&setup);
        let server = setup.start(&[]);
        let log = server.log();
        assert!(
            log.contains("journal: cut a torn tail of"),
            "{damage}: {log}"
        );
        assert!(log.contains(&format!("offset {offset}")), "{damage}: {log}");
        assert_eq!(server.recovered_hash(), expected_hash, "{damage}");
        assert_eq!(server.terminate(), Some(0));
        let text = stdout(&setup.tool(&["journal", "verify"]));
        assert!(text.contains("equal to a clean replay"), "{damage}: {text}");
    }
}

#[test]
fn damage_mid_journal_refuses_to_start_and_names_the_place() {
    let setup = Setup::new("");
    populate(&setup, 5_000, 2);
    let mut segments: Vec<_> = std::fs::read_dir(setup.data().join("journal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 2, "{segments:?}");
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    let offset = SEGMENT_HEADER + 10 * RECORD;
    bytes[offset + 40] ^= 0x01;
    std::fs::write(first, &bytes).unwrap();

    let (code, log) = setup.start_fails(&[]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("journal damaged before its tail"), "{log}");
    assert!(log.contains(&first.display().to_string()), "{log}");
    assert!(
        log.contains(&format!("offset {offset}")) && log.contains("sequence 11"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(first).unwrap(),
        bytes,
        "the refusal changed the journal"
    );
    let verify = setup.tool(&["journal", "verify"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(stdout(&verify).contains("DAMAGE"));

    let server = setup.start(&["--cut-damaged-journal"]);
    let log = server.log();
    assert!(
        log.contains("CUT AT DAMAGE") && log.contains("from sequence 11"),
        "{log}"
    );
    assert_eq!(server.terminate(), Some(0));
    let text = stdout(&setup.tool(&["journal", "verify"]));
    assert!(text.contains("journal: sequences 1..11"), "{text}");
    assert!(setup.data().join("journal/quarantine").exists());
}

#[test]
fn a_corrupt_newest_snapshot_is_reported_and_an_older_one_used() {
    let setup = Setup::new("");
    populate(&setup, 7_000, 3);
    let listing = stdout(&setup.tool(&["snapshot", "list"]));
    let newest = listing
        .lines()
        .next()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let older_seq = listing
        .lines()
        .nth(1)
        .unwrap()
        .split(" seq ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&newest, &bytes).unwrap();
    let verify = setup.tool(&["snapshot", "verify"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(stdout(&verify).contains("INVALID"));

    let expected_hash = verify_hash(&setup);
    let server = setup.start(&[]);
    let log = server.log();
    assert!(
        log.contains("snapshot skipped") && log.contains("checksum mismatch"),
        "{log}"
    );
    assert!(
        log.contains(&format!("(after sequence {older_seq})")),
        "{log}"
    );
    assert_eq!(server.recovered_hash(), expected_hash);
    assert_eq!(server.terminate(), Some(0));
}

/// Cuts the events file to its first `kept` records: what a power loss does to a file whose
/// tail was never synced.
fn cut_events_file(setup: &Setup, kept: u64) {
    let path = setup.data().join("events.bin");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(64 + kept * 128).unwrap();
}

/// An events file that lost its tail, behind every snapshot, is completed from the journal's
/// start on the next start instead of being left with a gap: `journal verify` says where the
/// next start replays from, and after it the file equals a clean replay. (Before snapshots
/// recorded their events mark, start-up used the newest snapshot and the events between the
/// cut and that snapshot were never published.)
#[test]
fn an_events_file_behind_the_snapshots_is_completed_not_left_with_a_gap() {
    let setup = Setup::new("");
    populate(&setup, 10_000, 5);
    let listing = stdout(&setup.tool(&["snapshot", "list"]));
    assert!(listing.lines().count() >= 2, "{listing}");
    cut_events_file(&setup, 100);

    let verify = setup.tool(&["journal", "verify"]);
    let text = stdout(&verify);
    assert!(verify.status.success(), "{text}");
    assert!(
        text.contains("a prefix of a clean replay")
            && text.contains("the next start publishes the rest, replaying from sequence 1"),
        "{text}"
    );
    let server = setup.start(&[]);
    let log = server.log();
    assert!(
        log.contains("snapshot skipped") && log.contains("behind the events through sequence"),
        "{log}"
    );
    assert_eq!(server.terminate(), Some(0));
    let verify = setup.tool(&["journal", "verify"]);
    let text = stdout(&verify);
    assert!(verify.status.success(), "{text}");
    assert!(text.contains("equal to a clean replay"), "{text}");
}

/// With the journal's start removed by retention, an events file behind every snapshot
/// cannot be completed: `journal verify` fails naming the file's last event, and `serve`
/// refuses to start, naming both positions, instead of leaving the gap.
#[test]
fn an_events_file_that_cannot_be_completed_is_reported_never_silently_resumed() {
    let setup = Setup::new("");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let text = text.replacen("[journal]\n", "[journal]\nretention = \"delete\"\n", 1);
    std::fs::write(&setup.config, text).unwrap();
    populate(&setup, 20_000, 6);
    let first_seq: u64 = field(&stdout(&setup.tool(&["journal", "verify"])), "journal")
        .trim_start_matches("sequences ")
        .split("..")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first_seq > 1, "retention removed the journal's start");
    cut_events_file(&setup, 100);

    let verify = setup.tool(&["journal", "verify"]);
    let text = stdout(&verify);
    assert_eq!(verify.status.code(), Some(1), "{text}");
    assert!(
        text.contains("EVENTS GAP: the events file holds events through sequence"),
        "{text}"
    );
    let (code, log) = setup.start_fails(&[]);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains(&format!("the journal starts at sequence {first_seq}"))
            && log.contains("the output holds events through sequence"),
        "{log}"
    );
}

#[test]
fn a_missing_data_directory_is_created() {
    let setup = Setup::new("");
    assert!(!setup.data().exists());
    let server = setup.start(&[]);
    assert!(setup.data().join("journal").is_dir());
    let (status, body) = server.request("GET", "/status", "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn bad_configuration_fails_fast_with_a_clear_message() {
    let unknown = Setup::new("[pipeline.extra]\nspeed = 1\n");
    let (code, log) = unknown.start_fails(&[]);
    assert_eq!(code, Some(1));
    assert!(log.contains("extra"), "{log}");

    let core = Setup::new("");
    let text = std::fs::read_to_string(&core.config)
        .unwrap()
        .replace("[admin]", "[pipeline.cores]\nmatcher = 4096\n[admin]");
    std::fs::write(&core.config, text).unwrap();
    let (code, log) = core.start_fails(&[]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("cannot pin the matcher to core 4096"), "{log}");
    assert!(
        !core.data().join("journal").exists(),
        "nothing was created for a bad config"
    );

    for (cores, message) in [
        (
            "[4096]",
            "cannot pin the service (pipeline.cores.service) to core 4096",
        ),
        ("[]", "service (pipeline.cores.service) lists no cores"),
    ] {
        let setup = Setup::new("");
        let text = std::fs::read_to_string(&setup.config).unwrap().replace(
            "[admin]",
            &format!("[pipeline.cores]\nservice = {cores}\n[admin]"),
        );
        std::fs::write(&setup.config, text).unwrap();
        let (code, log) = setup.start_fails(&[]);
        assert_eq!(code, Some(1), "{log}");
        assert!(log.contains(message), "{log}");
        assert!(!setup.data().join("journal").exists());
    }

    let public = Setup::new("");
    let text = std::fs::read_to_string(&public.config)
        .unwrap()
        .replace("127.0.0.1:0", "0.0.0.0:0");
    std::fs::write(&public.config, text).unwrap();
    let (code, log) = public.start_fails(&[]);
    assert_eq!(code, Some(1));
    assert!(
        log.contains("not a loopback address: set admin.token_hash"),
        "{log}"
    );
}

#[test]
fn bad_admin_requests_are_refused_and_nothing_is_half_applied() {
    let setup = Setup::new("");
    let server = setup.start(&[]);
    let good = r#"{"type":"place","account":1,"instrument":1,"side":"buy","price":5,"qty":1}"#;
    let bad = format!("{good}\n{{\"type\":\"place\",\"account\":1}}\n");
    let (status, body) = server.request("POST", "/commands", &bad).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("\"line\":2") && body.contains("\"submitted\":0"),
        "{body}"
    );
    let (_, status_body) = server.request("GET", "/status", "").unwrap();
    assert!(
        status_body.contains("\"records_written\":0"),
        "{status_body}"
    );
    assert_eq!(server.request("GET", "/nowhere", "").unwrap().0, 404);
    assert_eq!(server.request("DELETE", "/status", "").unwrap().0, 405);
    let (status, body) = server.request("POST", "/commands", good).unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("\"first_seq\":1") && body.contains("\"durable\":true"),
        "{body}"
    );
    let (_, metrics) = server.request("GET", "/metrics", "").unwrap();
    assert!(
        metrics.contains("ringmatch_stage_latency_seconds_bucket{stage=\"journaled\",le=\"+Inf\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ringmatch_journal_syncs_total"),
        "{metrics}"
    );
    let (status, book) = server.request("GET", "/book/1", "").unwrap();
    assert_eq!(status, 200, "{book}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&book).unwrap(),
        serde_json::json!({ "instrument": 1, "bids": [[5, 1]], "asks": [] })
    );
    assert_eq!(server.request("GET", "/book/9", "").unwrap().0, 404);
    assert_eq!(server.request("GET", "/book/x", "").unwrap().0, 400);
    let (status, body) = server.request("POST", "/snapshot", "").unwrap();
    assert_eq!((status, body.as_str()), (202, "{\"snapshot_after_seq\":2}"));
    assert_eq!(server.terminate(), Some(0));
    let listing = stdout(&setup.tool(&["snapshot", "list"]));
    assert!(listing.contains("seq 2 "), "{listing}");
    let dump = stdout(&setup.tool(&["events", "dump"]));
    assert_eq!(dump.lines().count(), 2, "{dump}");
    let journal = stdout(&setup.tool(&["journal", "dump"]));
    assert!(
        journal
            .lines()
            .nth(1)
            .unwrap()
            .contains("\"type\":\"snapshot\""),
        "{journal}"
    );
}

#[test]
fn a_panicking_stage_stops_the_service_promptly_with_the_journal_intact() {
    let setup = Setup::new("");
    let server = setup.start_with_env(&[], &[("RINGMATCH_FAULT_PANIC_AT_SEQ", "150")]);
    let lines = command_lines(400, 4);
    // The commands before the fault are acknowledged; the request holding sequence 150 may
    // or may not be answered before the process ends.
    let _ = server.request("POST", "/commands", &lines[..100].join("\n"));
    let _ = server.request("POST", "/commands", &lines[100..200].join("\n"));
    let (code, log) = server.wait_exit(std::time::Duration::from_secs(10));
    assert_eq!(code, Some(70), "{log}");
    assert!(
        log.contains("injected fault: the publisher panics at sequence 150"),
        "{log}"
    );
    assert!(
        log.lines().any(|line| line.contains(" ERROR ")
            && line.contains("fatal: a thread panicked")
            && line.contains("thread=\"publisher\"")),
        "{log}"
    );
    let verify = setup.tool(&["journal", "verify"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
    let text = stdout(&verify);
    let next_seq: u64 = field(&text, "journal")
        .split("..")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        next_seq > 150,
        "the journal holds the command that hit the fault: {text}"
    );
    // Without the fault the service recovers everything the journal holds.
    let expected_hash = field(&text, "state_hash");
    let server = setup.start(&[]);
    assert_eq!(server.recovered_hash(), expected_hash);
    assert_eq!(server.terminate(), Some(0));
    assert!(stdout(&setup.tool(&["journal", "verify"])).contains("equal to a clean replay"));
}

#[test]
fn an_admin_token_is_required_when_one_is_configured() {
    let hash = ringmatch_gateway::hash_token(b"admin-salt-1234", b"admin-secret");
    let setup = Setup::new("");
    let text = std::fs::read_to_string(&setup.config).unwrap().replace(
        "listen = \"127.0.0.1:0\"\n",
        &format!("listen = \"127.0.0.1:0\"\ntoken_hash = \"{hash}\"\n"),
    );
    std::fs::write(&setup.config, text).unwrap();
    let server = setup.start(&[]);
    assert_eq!(server.request("GET", "/status", "").unwrap().0, 401);
    let authorized = |token: &str| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        use std::io::{Read, Write};
        write!(
            stream,
            "GET /status HTTP/1.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    assert!(authorized("admin-secret").starts_with("HTTP/1.1 200"));
    assert!(authorized("wrong").starts_with("HTTP/1.1 401"));
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn every_thread_of_the_service_runs_on_the_service_cores() {
    let setup = Setup::new("");
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("[admin]", "[pipeline.cores]\nservice = [0]\n[admin]");
    std::fs::write(&setup.config, text).unwrap();
    let server = setup.start(&[]);
    let tasks = format!("/proc/{}/task", server.child.id());
    let mut names = Vec::new();
    for task in std::fs::read_dir(&tasks).unwrap() {
        let task = task.unwrap().path();
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let name = std::fs::read_to_string(task.join("comm")).unwrap();
        let allowed = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(allowed, "0", "thread {} may run on {allowed}", name.trim());
        names.push(name.trim().to_string());
    }
    for stage in ["journaler", "replicator", "matcher", "publisher"] {
        assert!(names.iter().any(|name| name == stage), "{names:?}");
    }
    assert!(server
        .log()
        .contains("service threads restricted to cores [0]"));
    assert_eq!(server.terminate(), Some(0));
}
