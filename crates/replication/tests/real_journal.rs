//! Three nodes on real journals and real `raft-state` files in temporary directories, their
//! messages passed through the real framing in one thread: a leader is elected and
//! replicates; a leader cut off from the others keeps journaling proposals that are never
//! committed, and when it rejoins as a follower that tail is cut from its journal on disk;
//! a node reopened from its files catches up.

use std::path::Path;

use ringmatch_journal::{
    DamagePolicy, Durability, Journal, JournalConfig, JournalReader, JournalRecord,
};
use ringmatch_proto::{Command, Side};
use ringmatch_replication::{
    decode_frame, encode_frame, Decoded, HardStateFile, Message, Node, NodeConfig, Owner, Role,
};

const CLUSTER_ID: u64 = 42;

struct Harness {
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<Node<Journal, HardStateFile>>>,
    wire: Vec<Vec<u8>>,
    /// Nodes whose messages are lost, both ways.
    isolated: Option<u64>,
}

fn config(id: u64) -> NodeConfig {
    NodeConfig {
        cluster_id: CLUSTER_ID,
        node_id: id,
        voters: vec![1, 2, 3],
        learners: Vec::new(),
        election_ticks: 10 + 5 * id as usize,
        heartbeat_ticks: 2,
        randomized_election: false,
        commit_stored_every: 5,
    }
}

fn open(dir: &Path, id: u64) -> Node<Journal, HardStateFile> {
    let (journal, _) = Journal::open(
        JournalConfig {
            dir: dir.join("journal"),
            segment_size_bytes: 64 * 1024,
            durability: Durability::Batch,
        },
        DamagePolicy::Refuse,
    )
    .unwrap();
    let owner = Owner {
        cluster_id: CLUSTER_ID,
        node_id: id,
    };
    let hard_state = HardStateFile::new(dir, owner);
    // This test runs no matcher: it starts from the stored commit index.
    let commit = ringmatch_replication::HardStatePort::load(&hard_state)
        .unwrap()
        .map_or(0, |state| state.commit);
    Node::open(&config(id), journal, hard_state, commit).unwrap()
}

fn records(dir: &Path) -> Vec<JournalRecord> {
    JournalReader::open(&dir.join("journal"), 1)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

impl Harness {
    fn new() -> Harness {
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let nodes = (0..3)
            .map(|index| Some(open(dirs[index].path(), index as u64 + 1)))
            .collect();
        Harness {
            dirs,
            nodes,
            wire: Vec::new(),
            isolated: None,
        }
    }

    fn round(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            node.tick();
        }
        for bytes in std::mem::take(&mut self.wire) {
            let to = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
            let Some(node) = self.nodes[(to - 1) as usize].as_mut() else {
                continue;
            };
            let Decoded::Frame { message, .. } = decode_frame(CLUSTER_ID, to, &bytes).unwrap()
            else {
                panic!("a whole frame");
            };
            node.step(*message).unwrap();
        }
        let isolated = self.isolated;
        for node in self.nodes.iter_mut().flatten() {
            let mut sent: Vec<Message> = Vec::new();
            node.process(&mut |message| sent.push(message)).unwrap();
            for message in sent {
                if isolated == Some(message.from) || isolated == Some(message.to) {
                    continue;
                }
                let mut bytes = Vec::new();
                encode_frame(CLUSTER_ID, &message, &mut bytes);
                self.wire.push(bytes);
            }
        }
    }

    fn run_until(&mut self, what: &str, done: impl Fn(&Harness) -> bool) {
        for _ in 0..2_000 {
            self.round();
            if done(self) {
                return;
            }
        }
        panic!("never: {what}");
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .flatten()
            .find(|node| {
                node.role() == Role::Leader && Some(node.status().node_id) != self.isolated
            })
            .map(|node| node.status().node_id)
    }

    fn node(&mut self, id: u64) -> &mut Node<Journal, HardStateFile> {
        self.nodes[(id - 1) as usize].as_mut().unwrap()
    }

    fn propose(&mut self, id: u64, count: u64, qty: u64) {
        for index in 0..count {
            let mut command = Command::limit(1, 1, Side::Buy, 100, qty);
            command.client_order_id = index + 1;
            self.node(id).propose(index, &command).unwrap();
        }
    }

    fn converged(&self) -> bool {
        let statuses: Vec<_> = self
            .nodes
            .iter()
            .flatten()
            .map(|node| node.status())
            .collect();
        statuses.len() == 3
            && statuses.iter().all(|status| {
                status.commit == statuses[0].last_index
                    && status.last_index == statuses[0].last_index
            })
    }
}

#[test]
fn a_partitioned_leaders_tail_is_cut_on_disk_and_a_reopened_node_catches_up() {
    let mut harness = Harness::new();
    harness.run_until("a leader", |h| h.leader().is_some());
    let first_leader = harness.leader().unwrap();
    harness.propose(first_leader, 20, 1);
    harness.run_until("20 commands everywhere", |h| h.converged());
    let committed = records(harness.dirs[0].path());
    assert_eq!(committed.len(), 21, "the term record and 20 commands");
    assert!(harness
        .dirs
        .iter()
        .all(|dir| records(dir.path()) == committed));

    // Cut the leader off; it journals 5 proposals nobody else sees.
    harness.isolated = Some(first_leader);
    harness.propose(first_leader, 5, 2);
    harness.round();
    let stale_dir = harness.dirs[(first_leader - 1) as usize]
        .path()
        .to_path_buf();
    assert_eq!(records(&stale_dir).len(), 26);
    // The others elect a leader and commit their own entries at those indexes.
    harness.run_until("a new leader", |h| {
        h.leader().is_some_and(|id| id != first_leader)
    });
    let second_leader = harness.leader().unwrap();
    harness.propose(second_leader, 10, 3);
    harness.run_until("the majority commits", |h| {
        h.nodes[(second_leader - 1) as usize]
            .as_ref()
            .unwrap()
            .status()
            .commit
            >= 32
    });

    // Heal: the old leader steps down, its uncommitted tail is cut on disk and replaced.
    harness.isolated = None;
    harness.run_until("the old leader rejoins", |h| h.converged());
    assert_ne!(harness.node(first_leader).role(), Role::Leader);
    let history = records(harness.dirs[(second_leader - 1) as usize].path());
    assert_eq!(records(&stale_dir), history);
    assert!(
        history.iter().all(|record| record.command.qty != 2),
        "the cut tail is gone"
    );
    assert_eq!(
        history
            .iter()
            .filter(|record| record.command.qty == 3)
            .count(),
        10
    );

    // Close a follower, commit more, reopen it from its files: it catches up.
    let follower = (1..=3).find(|&id| id != second_leader).unwrap();
    harness.nodes[(follower - 1) as usize] = None;
    harness.propose(second_leader, 7, 4);
    harness.run_until("two nodes commit", |h| {
        h.nodes[(second_leader - 1) as usize]
            .as_ref()
            .unwrap()
            .status()
            .commit
            == history.len() as u64 + 7
    });
    harness.nodes[(follower - 1) as usize] =
        Some(open(harness.dirs[(follower - 1) as usize].path(), follower));
    harness.run_until("the reopened follower catches up", |h| h.converged());
    let end = records(harness.dirs[(second_leader - 1) as usize].path());
    assert_eq!(end.len(), history.len() + 7);
    assert!(harness.dirs.iter().all(|dir| records(dir.path()) == end));
}
