//! Helpers for tests that run `ringmatch serve` as a real process.

#![allow(dead_code)] // Each test file uses a different part.

pub mod cluster;
pub mod proxy;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringmatch_gateway::{Client, ClientError, Frame, LoginOptions};
use ringmatch_proto::Side;

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ringmatch")
}

/// A data directory and a config file for it, with small limits so start-up is quick.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    pub fn new(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ringmatch.toml");
        let text = format!(
            "[data]\ndir = \"{data}\"\n\
             [journal]\ndurability = \"batch\"\nsegment_size_bytes = 262144\n\
             [snapshots]\nevery_commands = 3000\nkeep = 2\n\
             [pipeline]\ninput_ring_slots = 4096\noutput_ring_slots = 16384\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [limits]\norders_per_book_max = 100000\norders_max = 100000\naccounts_max = 10000\ninstruments_max = 2\n\
             [[instruments]]\nid = 1\nsymbol = \"DEMO\"\ntick_size = 1\nlot_size = 1\nmin_price = 1\nmax_price = 200000\nmax_qty = 1000000\n\
             {extra}",
            data = dir.path().join("data").display()
        );
        std::fs::write(&config, text).unwrap();
        Setup { dir, config }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn tool(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts `serve`; returns once it logs `ready` (or panics with its log if it exits).
    pub fn start(&self, args: &[&str]) -> Server {
        self.start_with_env(args, &[])
    }

    /// Starts `serve` with extra environment variables.
    pub fn start_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log_path = self.dir.path().join(format!("serve-{}.log", unique()));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            log_path,
            port: 0,
            gateway_port: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = server.log();
            if let Some(port) = log.lines().find_map(|line| {
                Some(
                    line.split_once("ringmatch: admin listening on http://127.0.0.1:")?
                        .1,
                )
            }) {
                server.port = port.trim().parse().unwrap();
            }
            if let Some(port) = log.lines().find_map(|line| {
                Some(
                    line.split_once("ringmatch: gateway listening on 127.0.0.1:")?
                        .1,
                )
            }) {
                server.gateway_port = Some(port.trim().parse().unwrap());
            }
            if log.lines().any(|line| line.ends_with(" ringmatch: ready")) {
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("serve exited with {status} before ready:\n{log}");
            }
            assert!(Instant::now() < deadline, "serve not ready:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs `serve` expecting it to fail at start-up; returns (exit code, log).
    pub fn start_fails(&self, args: &[&str]) -> (Option<i32>, String) {
        let output = Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub struct Server {
    pub child: Child,
    pub log_path: PathBuf,
    pub port: u16,
    pub gateway_port: Option<u16>,
}

/// A test that fails while `serve` runs must not leave it running (and burning CPU under the
/// rest of the suite).
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The state hash `serve` logged after recovery.
    pub fn recovered_hash(&self) -> String {
        let log = self.log();
        log.lines()
            .find_map(|line| line.split("state hash ").nth(1))
            .unwrap_or_else(|| panic!("no state hash in log:\n{log}"))
            .to_string()
    }

    /// One HTTP request; returns (status, body), or None if the connection failed.
    pub fn request(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        http(self.port, method, path, body)
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub fn wait_exit(mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.log());
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// kill -9.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// `RINGMATCH_CRASH_SEED`, or a seed from the clock (tests print it so a run can be repeated).
/// A count from the environment variable `name`, or `default`.
pub fn count_from_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

pub fn seed_from_env() -> u64 {
    std::env::var("RINGMATCH_CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// JSON lines of `count` commands from the exchange-core mix with `seed`.
pub fn command_lines(count: usize, seed: u64) -> Vec<String> {
    let workload = ringmatch_matcher::workload::exchange_core_mix(count, seed, Default::default());
    workload
        .warmup
        .iter()
        .chain(&workload.commands)
        .map(ringmatch_server::script::command_to_json)
        .collect()
}

/// The value of `key: value` in tool output.
pub fn field(output: &str, key: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{output}"))
        .to_string()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn last_segment(data: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data.join("journal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    segments.pop().unwrap()
}

/// One order of the loads: buys and sells of one lot at one price, so they trade and the
/// book stays small.
pub fn load_order(account: u32, client_order_id: u64) -> ringmatch_proto::Command {
    let side = if client_order_id % 2 == 0 {
        Side::Buy
    } else {
        Side::Sell
    };
    let mut command = ringmatch_proto::Command::limit(account, 1, side, 100, 1);
    command.client_order_id = client_order_id;
    command
}

/// Sends limit orders on one session, 50 at a time, until the connection ends (the kill);
/// returns every (sequence, client order id) acknowledged to `account`. Client order ids are unique over
/// the whole test.
pub fn gateway_load(
    port: u16,
    account: u32,
    token: &[u8],
    next_client_order_id: &AtomicU64,
) -> Vec<(u64, u64)> {
    gateway_load_until(port, account, token, next_client_order_id, None)
}

/// [`gateway_load`] that also stops, between two batches, once `until` has passed.
pub fn gateway_load_until(
    port: u16,
    account: u32,
    token: &[u8],
    next_client_order_id: &AtomicU64,
    until: Option<Instant>,
) -> Vec<(u64, u64)> {
    let mut acks = Vec::new();
    let Ok(mut client) =
        Client::connect(("127.0.0.1", port), account, token, LoginOptions::default())
    else {
        return acks;
    };
    while until.is_none_or(|until| Instant::now() < until) {
        let first = next_client_order_id.fetch_add(50, Ordering::Relaxed);
        for client_order_id in first..first + 50 {
            if client.send(&load_order(account, client_order_id)).is_err() {
                return acks;
            }
        }
        let mut answered = 0;
        while answered < 50 {
            match client.recv(Duration::from_secs(10)) {
                Ok(Some(Frame::Ack {
                    client_order_id,
                    seq,
                })) => {
                    acks.push((seq, client_order_id));
                    answered += 1;
                }
                Ok(Some(Frame::Busy { .. } | Frame::Throttled { .. })) => answered += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(ClientError::Timeout) => {
                    panic!("no replies from a live session for 10 s")
                }
                Err(_) => return acks,
            }
        }
    }
    acks
}

/// What a [`resending_load`] sent and was told.
#[derive(Debug, Default)]
pub struct ResendingReport {
    /// Client order ids of every place the engine took (acknowledged, first send or resend).
    pub acked: Vec<u64>,
    /// Every (sequence, client order id) acknowledged.
    pub acks: Vec<(u64, u64)>,
    /// New sessions after a lost one.
    pub reconnects_count: u64,
    /// Places sent again as possible resends.
    pub resends_count: u64,
}

/// Limit orders through a [`ringmatch_gateway::FailoverClient`] over `addresses`, 50 in flight
/// at a time, until `stop` is set; then it waits until every place is answered. The client
/// reconnects through kills and failovers and resends what was not acknowledged. Client
/// order ids are unique over the whole test; `acks_count` counts the acks as they come.
pub fn resending_load(
    addresses: Vec<String>,
    account: u32,
    token: &[u8],
    acks_count: &AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
) -> ResendingReport {
    let next_client_order_id = AtomicU64::new(1);
    let mut options = ringmatch_gateway::FailoverOptions::new(addresses, account, token);
    options.reconnect_for = Duration::from_secs(60);
    let mut client = ringmatch_gateway::FailoverClient::connect(options).expect("a first session");
    let mut report = ResendingReport::default();
    let answer = |frame: Frame, report: &mut ResendingReport| {
        if let Frame::Ack {
            client_order_id,
            seq,
        } = frame
        {
            report.acks.push((seq, client_order_id));
            report.acked.push(client_order_id);
            acks_count.fetch_add(1, Ordering::Relaxed);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let first = next_client_order_id.fetch_add(50, Ordering::Relaxed);
        for client_order_id in first..first + 50 {
            client
                .send(&load_order(account, client_order_id))
                .expect("the client reconnects");
        }
        while client.in_flight_count() > 25 {
            if let Some(frame) = client
                .recv(Duration::from_secs(1))
                .expect("the client reconnects")
            {
                answer(frame, &mut report);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while client.in_flight_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} places never answered",
            client.in_flight_count()
        );
        if let Some(frame) = client
            .recv(Duration::from_secs(1))
            .expect("the client reconnects")
        {
            answer(frame, &mut report);
        }
    }
    report.reconnects_count = client.reconnects_count();
    report.resends_count = client.resends_count();
    report
}

/// "Never a second order", read from an events dump (`ringmatch events dump`): every client
/// order id of `account` is accepted at most once, each of `acked` exactly once, no resend was
/// refused as unknown, and every `resent` event names the sequence where its order was
/// accepted. Returns the number of `resent` events.
pub fn check_each_order_once(events_dump: &str, account: u32, acked: &[u64]) -> usize {
    let mut accepted_at: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut resent = Vec::new();
    for line in events_dump.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        if event["account"].as_u64() != Some(u64::from(account)) {
            continue;
        }
        let client_order_id = event["client_order_id"].as_u64().unwrap_or(0);
        let seq = event["seq"].as_u64().unwrap();
        match event["type"].as_str().unwrap() {
            "accepted" => {
                if let Some(first) = accepted_at.insert(client_order_id, seq) {
                    panic!(
                        "client order id {client_order_id} was accepted twice: at sequence \
                         {first} and at {seq}"
                    );
                }
            }
            "rejected" => assert_ne!(event["reason"], "resend_unknown", "{line}"),
            "resent" => resent.push((client_order_id, event["original_seq"].as_u64().unwrap())),
            _ => {}
        }
    }
    for client_order_id in acked {
        assert!(
            accepted_at.contains_key(client_order_id),
            "client order id {client_order_id} was acknowledged but never accepted"
        );
    }
    for (client_order_id, original_seq) in &resent {
        assert_eq!(
            accepted_at.get(client_order_id),
            Some(original_seq),
            "the resend of client order id {client_order_id} names sequence {original_seq}"
        );
    }
    resent.len()
}
