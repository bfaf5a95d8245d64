//! A three-node cluster of `ringmatch serve` processes on loopback, for the tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ringmatch_gateway::hash_token;

use super::{binary, http};

/// The order-entry account of the tests' load, and its token.
pub const ACCOUNT: u32 = 7;
pub const TOKEN: &[u8] = b"cluster-token";

/// One member: its configuration, log and ports, and its process while it runs.
pub struct Member {
    pub id: u64,
    pub config: PathBuf,
    log: PathBuf,
    pub admin_port: u16,
    pub order_entry_port: u16,
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
    pub fn start(&mut self) {
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

    pub fn status(&self) -> Option<serde_json::Value> {
        let (code, body) = http(self.admin_port, "GET", "/status", "")?;
        (code == 200).then(|| serde_json::from_str(&body).unwrap())
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        child.wait().unwrap().code()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn tool(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }
}

/// Three members' configuration files, on free loopback ports, each ending with `extra`.
pub fn cluster(dir: &std::path::Path, extra: &str) -> Vec<Member> {
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
                 {members_toml}{extra}",
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
pub fn leader(members: &[Member]) -> usize {
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
