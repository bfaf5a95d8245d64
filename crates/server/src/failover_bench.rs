//! `ringmatch bench-failover`: how long a cluster is without a leader that acknowledges.
//! Runs the three members of `config/examples/cluster/` (data in a fresh temporary
//! directory, their configured timeouts) as child processes; a client sends one
//! limit order at a time to the leader, waiting for each ack; at a random moment the leader
//! is killed with SIGKILL; the client then goes to the members' order-entry ports in turn
//! (a follower answers `not_leader` with the leader's address) until one acknowledges an
//! order. The figure per round is the time from the kill to that first ack on the new
//! leader. The killed member is started again before the next round. With `freeze`, the
//! leader is stopped (SIGSTOP) instead: its sockets stay open and nothing refuses a
//! connection, as when a host loses power or its network, so the others find it gone only by
//! the election timeout; it is killed once the new leader has acknowledged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use ringmatch_gateway::{Client, ClientError, Frame, LoginOptions};
use ringmatch_proto::{Command, Side};

use crate::config::Config;

/// The demo login of the example configurations.
const ACCOUNT: u32 = 1;
const TOKEN: &[u8] = b"demo-token-1";

struct Member {
    config: PathBuf,
    order_entry: SocketAddr,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self, binary: &Path, dir: &Path, log: &Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        self.child = Some(
            std::process::Command::new(binary)
                .arg("--config")
                .arg(&self.config)
                .arg("serve")
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        );
        Ok(())
    }

    /// Stops the process where it is (SIGSTOP): alive, silent, its sockets open.
    fn freeze(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &self.child {
            let pid = libc::pid_t::try_from(child.id())?;
            // SAFETY: kill(2) with a child's pid and a valid signal number passes no memory.
            #[allow(unsafe_code)]
            let sent = unsafe { libc::kill(pid, libc::SIGSTOP) };
            if sent != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
        Ok(())
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Sends one order and waits for its ack: the sequence, or why not.
fn one_order(client: &mut Client, client_order_id: u64) -> Result<u64, ClientError> {
    let mut command = Command::limit(ACCOUNT, 1, Side::Buy, 100, 1);
    command.client_order_id = client_order_id;
    client.send(&command)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match client.recv(Duration::from_secs(5))? {
            Some(Frame::Ack {
                seq,
                client_order_id: acked,
            }) if acked == client_order_id => return Ok(seq),
            Some(Frame::Error { text, .. }) => {
                return Err(ClientError::Io(std::io::Error::other(text)))
            }
            _ => {}
        }
    }
    Err(ClientError::Timeout)
}

/// Logs in at the first member that leads, trying each in turn (not `frozen`, whose
/// connections would hang: a stopped process accepts into its backlog and never answers).
fn connect_to_leader(members: &[Member], frozen: usize, freeze: bool) -> Option<(usize, Client)> {
    for (index, member) in members.iter().enumerate() {
        if member.child.is_none() || (freeze && index == frozen) {
            continue;
        }
        // A follower answers the login with `not_leader` and closes.
        if let Ok(client) =
            Client::connect(member.order_entry, ACCOUNT, TOKEN, LoginOptions::default())
        {
            return Some((index, client));
        }
    }
    None
}

/// Runs `rounds` failovers of the members configured by `examples/node1..3.toml`; prints
/// each and the median and maximum.
pub fn run(
    rounds: u64,
    examples: &Path,
    freeze: bool,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let binary = std::env::current_exe()?;
    let examples = examples
        .canonicalize()
        .with_context(|| format!("{}", examples.display()))?;
    let dir = tempfile::tempdir()?;
    let mut members = Vec::new();
    for node in 1..=3 {
        let config = examples.join(format!("node{node}.toml"));
        let parsed = Config::load(&config)
            .with_context(|| format!("the example configuration {}", config.display()))?;
        members.push(Member {
            config,
            order_entry: parsed.gateway.listen.parse()?,
            child: None,
        });
    }
    for (index, member) in members.iter_mut().enumerate() {
        member.start(
            &binary,
            dir.path(),
            &dir.path().join(format!("node{}.log", index + 1)),
        )?;
    }
    writeln!(
        out,
        "bench-failover: the 3 members of {} (their [cluster] timeouts), data in {}; the \
         leader is {}",
        examples.display(),
        dir.path().display(),
        if freeze {
            "frozen (SIGSTOP)"
        } else {
            "killed (SIGKILL)"
        }
    )?;
    let mut random = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    let mut next_client_order_id = 1u64;
    let mut took = Vec::new();
    for round in 0..rounds {
        let started = Instant::now();
        let (leader, mut client) = loop {
            if let Some(found) = connect_to_leader(&members, usize::MAX, false) {
                break found;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "no leader acknowledged an order within 60 s (logs in {})",
                dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let kill_after = Duration::from_millis(200 + random % 800);
        let until = Instant::now() + kill_after;
        while Instant::now() < until {
            next_client_order_id += 1;
            one_order(&mut client, next_client_order_id)
                .context("an order to a live leader was not acknowledged")?;
        }
        if freeze {
            members[leader].freeze()?;
        } else {
            members[leader].kill()?;
        }
        let killed = Instant::now();
        drop(client);
        let new_leader = loop {
            if let Some((index, mut client)) = connect_to_leader(&members, leader, freeze) {
                next_client_order_id += 1;
                if one_order(&mut client, next_client_order_id).is_ok() {
                    break index;
                }
            }
            anyhow::ensure!(
                killed.elapsed() < Duration::from_secs(60),
                "no new leader within 60 s (logs in {})",
                dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        let elapsed = killed.elapsed();
        took.push(elapsed);
        writeln!(
            out,
            "round {round}: {} node {}, node {} acknowledged after {:.1} ms",
            if freeze { "froze" } else { "killed" },
            leader + 1,
            new_leader + 1,
            elapsed.as_secs_f64() * 1e3
        )?;
        members[leader].kill()?;
        let log = dir.path().join(format!("node{}.log", leader + 1));
        members[leader].start(&binary, dir.path(), &log)?;
    }
    took.sort();
    if !took.is_empty() {
        writeln!(
            out,
            "{} of the leader to the first ack on the new leader, {} failovers: median \
             {:.1} ms, min {:.1} ms, max {:.1} ms",
            if freeze { "SIGSTOP" } else { "kill -9" },
            took.len(),
            took[took.len() / 2].as_secs_f64() * 1e3,
            took[0].as_secs_f64() * 1e3,
            took[took.len() - 1].as_secs_f64() * 1e3
        )?;
    }
    Ok(())
}
