//! A three-node cluster of real `ringmatch serve` processes on loopback, under order-entry
//! load; kill -9 of the leader at random moments, many times, each killed node started again
//! (as its supervisor would). The load follows the leader: a follower's order-entry port
//! answers `not_leader` with the leader's address. After each failover the new leader must
//! take orders; at the end, stopped cleanly, every node's journal is the same, every
//! acknowledged command is in it exactly once under its acknowledged sequence, and the final
//! leader's events file equals a clean replay of the journal.
//!
//! `RINGMATCH_CLUSTER_ROUNDS` sets the number of kills (default 20); the seed is printed.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmatch_gateway::hash_token;
use support::{binary, field, http, stdout};

const ACCOUNT: u32 = 7;
const TOKEN: &[u8] = b"cluster-token";

struct Member {
    id: u64,
    config: PathBuf,
    log: PathBuf,
    admin_port: u16,
    order_entry_port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Member {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = std::process::Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.status().is_none() {
            assert!(
                Instant::now() < deadline,
                "node {} never answered /status:\n{}",
                self.id,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn status(&self) -> Option<serde_json::Value> {
        let (code, body) = http(self.admin_port, "GET", "/status", "")?;
        (code == 200).then(|| serde_json::from_str(&body).unwrap())
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        child.wait().unwrap().code()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tool(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }
}

/// Three members' configuration files, on free loopback ports.
fn cluster(dir: &std::path::Path) -> Vec<Member> {
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let members_toml: String = ports
        .iter()
        .enumerate()
        .map(|(index, (replication, order_entry, _))| {
            format!(
                "[[cluster.members]]\nid = {}\nreplication = \"127.0.0.1:{replication}\"\n\
                 order_entry = \"127.0.0.1:{order_entry}\"\n",
                index + 1
            )
        })
        .collect();
    ports
        .iter()
        .enumerate()
        .map(|(index, (_, order_entry, admin))| {
            let id = index as u64 + 1;
            let data = dir.join(format!("node{id}"));
            let config = dir.join(format!("node{id}.toml"));
            let text = format!(
                "[data]\ndir = \"{data}\"\n\
                 [journal]\ndurability = \"batch\"\nsegment_size_bytes = 1048576\n\
                 [snapshots]\nevery_commands = 3000\nkeep = 2\n\
                 [pipeline]\ninput_ring_slots = 4096\noutput_ring_slots = 16384\n\
                 [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
                 [gateway]\nenabled = true\nlisten = \"127.0.0.1:{order_entry}\"\n\
                 [[gateway.logins]]\naccount = {ACCOUNT}\ntoken_hash = \"{hash}\"\n\
                 [limits]\norders_per_book_max = 100000\norders_max = 100000\naccounts_max = 100\ninstruments_max = 2\n\
                 [[instruments]]\nid = 1\nsymbol = \"DEMO\"\ntick_size = 1\nlot_size = 1\nmin_price = 1\nmax_price = 200000\nmax_qty = 1000000\n\
                 [cluster]\ncluster_id = 9\nnode_id = {id}\ntick_ms = 10\nelection_ticks = 15\nheartbeat_ticks = 3\n\
                 {members_toml}",
                data = data.display(),
                hash = hash_token(b"cluster-salt", TOKEN),
            );
            std::fs::write(&config, text).unwrap();
            Member {
                id,
                config,
                log: dir.join(format!("node{id}.log")),
                admin_port: *admin,
                order_entry_port: *order_entry,
                child: None,
            }
        })
        .collect()
}

/// The member that leads with its pipeline running (its `/status` has the stages).
fn leader(members: &[Member]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (index, member) in members.iter().enumerate() {
            if member.child.is_none() {
                continue;
            }
            if let Some(status) = member.status() {
                if status["cluster"]["role"] == "leader" && status.get("stages").is_some() {
                    return index;
                }
            }
        }
        let logs: Vec<String> = members.iter().map(Member::log_text).collect();
        assert!(
            Instant::now() < deadline,
            "no leader took orders within 30 s:\n{}",
            logs.join("\n----\n")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn kill_9_of_the_leader_under_load_loses_and_doubles_nothing() {
    let rounds: u64 = std::env::var("RINGMATCH_CLUSTER_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20);
    let seed = support::seed_from_env();
    eprintln!("cluster test: {rounds} rounds, RINGMATCH_CRASH_SEED={seed}");
    let mut rng = seed | 1;
    let mut next_random = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let dir = tempfile::tempdir().unwrap();
    let mut members = cluster(dir.path());
    for member in &mut members {
        member.start();
    }
    let next_client_order_id = Arc::new(AtomicU64::new(1));
    let mut acks: Vec<(u64, u64)> = Vec::new();
    let mut failovers = Vec::new();
    for round in 0..rounds {
        let at = leader(&members);
        let port = members[at].order_entry_port;
        let load = {
            let next_client_order_id = Arc::clone(&next_client_order_id);
            std::thread::spawn(move || {
                support::gateway_load(port, ACCOUNT, TOKEN, &next_client_order_id)
            })
        };
        std::thread::sleep(Duration::from_millis(100 + next_random() % 500));
        members[at].kill9();
        let killed_at = Instant::now();
        let round_acks = load.join().unwrap();
        assert!(
            !round_acks.is_empty() || round > 0,
            "round {round}: the leader acknowledged nothing:\n{}",
            members[at].log_text()
        );
        acks.extend(round_acks);
        let next = leader(&members);
        failovers.push(killed_at.elapsed());
        assert_ne!(next, at, "round {round}");
        members[at].start();
    }
    // The end: a leader, every member caught up, then a clean stop of each.
    let at = leader(&members);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let statuses: Vec<serde_json::Value> = members.iter().filter_map(Member::status).collect();
        let positions: HashSet<(u64, u64)> = statuses
            .iter()
            .map(|status| {
                (
                    status["cluster"]["commit_seq"].as_u64().unwrap(),
                    status["cluster"]["last_seq"].as_u64().unwrap(),
                )
            })
            .collect();
        if statuses.len() == 3
            && positions.len() == 1
            && positions.iter().all(|(commit, last)| commit == last)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the members never caught up: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for member in &mut members {
        assert_eq!(
            member.terminate(),
            Some(0),
            "node {}:\n{}",
            member.id,
            member.log_text()
        );
    }

    let dumps: Vec<String> = members
        .iter()
        .map(|member| stdout(&member.tool(&["journal", "dump"])))
        .collect();
    assert!(
        dumps.iter().all(|dump| *dump == dumps[0]),
        "the members' journals differ"
    );
    let mut journal: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut orders = HashSet::new();
    for line in dumps[0].lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let command = &record["command"];
        if command["type"] == "place" {
            let key = (
                command["account"].as_u64().unwrap(),
                command["client_order_id"].as_u64().unwrap_or(0),
            );
            assert!(orders.insert(key), "{key:?} is journaled twice");
            journal.insert(record["seq"].as_u64().unwrap(), key);
        }
    }
    for (seq, client_order_id) in &acks {
        assert_eq!(
            journal.get(seq),
            Some(&(u64::from(ACCOUNT), *client_order_id)),
            "sequence {seq} was acknowledged for client order id {client_order_id}"
        );
    }
    assert!(acks.len() > 1_000, "only {} acks", acks.len());
    let verify = members[at].tool(&["journal", "verify"]);
    let text = stdout(&verify);
    assert!(verify.status.success(), "{text}");
    assert!(text.contains("equal to a clean replay"), "{text}");
    failovers.sort();
    eprintln!(
        "cluster test: {} acks checked over {rounds} failovers; kill -9 to a new leader taking \
         orders: median {:?}, max {:?}; journal {}",
        acks.len(),
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1],
        field(&text, "journal")
    );
}
