//! A three-node cluster of `ringmatch serve` processes on loopback, for the tests.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ringmatch_gateway::hash_token;

use super::proxy::Proxy;
use super::{binary, http};

/// The order-entry account of the tests' load, and its token.
pub const ACCOUNT: u32 = 7;
pub const TOKEN: &[u8] = b"cluster-token";

/// Cluster tests run one at a time: three members each on a 2-core machine are enough load.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One member: its configuration, log and ports, and its process while it runs.
pub struct Member {
    pub id: u64,
    pub config: PathBuf,
    log: PathBuf,
    pub admin_port: u16,
    pub order_entry_port: u16,
    child: Option<Child>,
}

/// A loopback port nobody listens on now, from below Linux's ephemeral range (32768 up):
/// a port the kernel hands out (`bind` to port 0) can be taken, before the member binds it,
/// as the local end of any outgoing connection (the members' own, or their probes of a peer's
/// port), and the member then fails with "address in use". Ports are drawn from 20000..32000,
/// starting at a place this process chooses, and tried until one binds; this process never
/// hands out a port twice.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let start = std::process::id().wrapping_mul(7_919) ^ nanos;
    let port = (0..COUNT)
        .map(|offset| (FIRST + start.wrapping_add(offset) % COUNT) as u16)
        .find(|port| !given.contains(port) && TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free loopback port in 20000..32000");
    given.push(port);
    port
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

    /// Waits for the process to end by itself; its exit status (`None` if it did not end
    /// within `timeout`, when it is left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Whether its process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
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

/// A member still running when its test ends (a failed assertion, say) is killed, so that it
/// does not go on holding its ports and a share of the cores while the other tests run.
impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three members' configuration files, on free loopback ports, each ending with `extra`.
pub fn cluster(dir: &std::path::Path, extra: &str) -> Vec<Member> {
    cluster_routed(dir, extra, "", 3, |_, _, address| address)
}

/// Like [`cluster`], with `journal` added to each member's `[journal]` table.
pub fn cluster_with_journal(dir: &std::path::Path, extra: &str, journal: &str) -> Vec<Member> {
    cluster_routed(dir, extra, journal, 3, |_, _, address| address)
}

/// Like [`cluster`], with a fourth member, node 4, that is a learner.
pub fn cluster_with_learner(dir: &std::path::Path, extra: &str) -> Vec<Member> {
    cluster_routed(dir, extra, "", 4, |_, _, address| address)
}

/// Like [`cluster`], with every directed replication link from member `a` to member `b`
/// through a [`Proxy`]: `links[a - 1][b - 1]` (none from a member to itself).
pub fn cluster_with_proxies(
    dir: &std::path::Path,
    extra: &str,
) -> (Vec<Member>, Vec<Vec<Option<Proxy>>>) {
    let mut links: Vec<Vec<Option<Proxy>>> =
        (0..3).map(|_| (0..3).map(|_| None).collect()).collect();
    let members = cluster_routed(dir, extra, "", 3, |from, to, address| {
        let proxy = Proxy::start(address);
        let through = proxy.address;
        links[(from - 1) as usize][(to - 1) as usize] = Some(proxy);
        through
    });
    (members, links)
}

/// The configurations of `count` members (three voters, the rest learners), member `from`
/// reaching member `to`'s replication `address` at `route(from, to, address)`.
fn cluster_routed(
    dir: &std::path::Path,
    extra: &str,
    journal: &str,
    count: u64,
    mut route: impl FnMut(u64, u64, SocketAddr) -> SocketAddr,
) -> Vec<Member> {
    let ports: Vec<(u16, u16, u16)> = (0..count)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let mut members_toml = Vec::new();
    for from in 1..=count {
        let text: String = ports
            .iter()
            .enumerate()
            .map(|(index, (replication, order_entry, _))| {
                let to = index as u64 + 1;
                let address: SocketAddr = format!("127.0.0.1:{replication}").parse().unwrap();
                let address = if to == from {
                    address
                } else {
                    route(from, to, address)
                };
                format!(
                    "[[cluster.members]]\nid = {to}\nreplication = \"{address}\"\n\
                     order_entry = \"127.0.0.1:{order_entry}\"\nlearner = {}\n",
                    to > 3
                )
            })
            .collect();
        members_toml.push(text);
    }
    ports
        .iter()
        .enumerate()
        .map(|(index, (_, order_entry, admin))| {
            let id = index as u64 + 1;
            let members_toml = &members_toml[index];
            let data = dir.join(format!("node{id}"));
            let config = dir.join(format!("node{id}.toml"));
            let text = format!(
                "[data]\ndir = \"{data}\"\n\
                 [journal]\ndurability = \"batch\"\nsegment_size_bytes = 1048576\n{journal}\
                 [snapshots]\nevery_commands = 3000\nkeep = 2\n\
                 [pipeline]\ninput_ring_slots = 4096\noutput_ring_slots = 16384\n\
                 [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
                 [gateway]\nenabled = true\nlisten = \"127.0.0.1:{order_entry}\"\n\
                 [[gateway.logins]]\naccount = {ACCOUNT}\ntoken_hash = \"{hash}\"\n\
                 [limits]\norders_per_book_max = 100000\norders_max = 100000\naccounts_max = 100\ninstruments_max = 2\n\
                 [[instruments]]\nid = 1\nsymbol = \"DEMO\"\ntick_size = 1\nlot_size = 1\nmin_price = 1\nmax_price = 200000\nmax_qty = 1000000\n\
                 [cluster]\ncluster_id = 9\nnode_id = {id}\ntick_ms = 10\nelection_ticks = 30\nheartbeat_ticks = 5\n\
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

/// Stops every member cleanly, the leader `at` first (stopped while its followers are gone,
/// a leader loses its majority and steps down with status 3 instead); each must exit with 0.
/// Stops the leader `at` cleanly, then all the others at once. Once the leader's process
/// has ended, the followers find its port refusing and may elect one of them before their
/// own stop: that leader's term record can then end some journals (callers compare the
/// journals up to the sequence they had all reached, and allow only term records after).
pub fn stop_all(members: &mut [Member], at: usize) {
    let check = |member: &Member, code: Option<i32>| {
        assert_eq!(code, Some(0), "node {}:\n{}", member.id, member.log_text());
    };
    let code = members[at].terminate();
    check(&members[at], code);
    let mut stopping = Vec::new();
    for (index, member) in members.iter_mut().enumerate() {
        if index != at {
            let child = member.child.take().expect("running");
            std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            stopping.push((index, child));
        }
    }
    for (index, mut child) in stopping {
        let code = child.wait().unwrap().code();
        check(&members[index], code);
    }
}

/// The lines of a `journal dump` up to sequence `last`; panics if a line after it is not a
/// term record (see [`stop_all`]).
pub fn journal_up_to(dump: &str, last: u64) -> Vec<&str> {
    let mut kept = Vec::new();
    for line in dump.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        if record["seq"].as_u64().unwrap() <= last {
            kept.push(line);
        } else {
            assert_eq!(
                record["command"]["type"], "term",
                "a record after sequence {last} that is not a term record: {line}"
            );
        }
    }
    kept
}

/// Order-entry load (`gateway_load`) on a thread, against the order-entry port `port`, until
/// its connection ends; the thread returns the acks.
pub fn spawn_load(
    port: u16,
    next_client_order_id: &std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> std::thread::JoinHandle<Vec<(u64, u64)>> {
    let next_client_order_id = std::sync::Arc::clone(next_client_order_id);
    std::thread::spawn(move || super::gateway_load(port, ACCOUNT, TOKEN, &next_client_order_id))
}

/// A [`super::resending_load`] on its own thread against every member's order-entry port:
/// one client through every failover.
pub struct ResendingLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acks_count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<super::ResendingReport>,
}

impl ResendingLoad {
    /// Starts it.
    pub fn start(members: &[Member]) -> ResendingLoad {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        use std::sync::Arc;
        let addresses: Vec<String> = members
            .iter()
            .map(|member| format!("127.0.0.1:{}", member.order_entry_port))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let acks_count = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, acks_count) = (Arc::clone(&stop), Arc::clone(&acks_count));
            std::thread::spawn(move || {
                super::resending_load(addresses, ACCOUNT, TOKEN, &acks_count, &stop)
            })
        };
        ResendingLoad {
            stop,
            acks_count,
            thread,
        }
    }

    /// Acks received so far.
    pub fn acks_count(&self) -> u64 {
        self.acks_count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops sending, waits until every place is answered; what it sent and was told.
    pub fn stop(self) -> super::ResendingReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}
