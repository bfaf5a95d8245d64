//! Three nodes on real journals and real `raft-state` files in temporary directories, their
//! messages passed through the real framing in one thread: a leader is elected and
//! replicates; a leader cut off from the others keeps journaling proposals that are never
//! committed, and when it rejoins as a follower that tail is cut from its journal on disk;
//! a node reopened from its files catches up. A follower reopened after the leader has
//! compacted its log past the follower's position catches up from the leader's snapshot
//! file, sent in a Raft snapshot message, and its journal restarts after it; an install that
//! a crash interrupted is finished when the node opens.

use std::path::Path;

use ringmatch_journal::{
    DamagePolicy, Durability, Journal, JournalConfig, JournalReader, JournalRecord, SnapshotStore,
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
    let snapshots = SnapshotStore::open(&dir.join("snapshots"), 2).unwrap();
    Node::open(
        &config(id),
        journal,
        hard_state,
        Some(Box::new(snapshots)),
        commit,
    )
    .unwrap()
}

fn records_from(dir: &Path, from: u64) -> Vec<JournalRecord> {
    JournalReader::open(&dir.join("journal"), from)
        .unwrap()
        .map(Result::unwrap)
        .collect()
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

#[test]
fn a_follower_behind_the_leaders_log_start_catches_up_from_its_snapshot() {
    let mut harness = Harness::new();
    harness.run_until("a leader", |h| h.leader().is_some());
    let leader = harness.leader().unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    harness.propose(leader, 50, 1);
    harness.run_until("50 commands everywhere", |h| h.converged());

    // The follower goes away; the others commit 3,000 more (several 64 KiB segments).
    harness.nodes[(follower - 1) as usize] = None;
    for _ in 0..30 {
        harness.propose(leader, 100, 2);
        harness.round();
    }
    harness.run_until("the majority commits", |h| {
        h.nodes[(leader - 1) as usize]
            .as_ref()
            .unwrap()
            .status()
            .commit
            == 3_051
    });
    // The leader stores a snapshot of the state after its commit index (what the state is
    // does not matter to replication; the file's checks do) and compacts to it.
    let leader_dir = harness.dirs[(leader - 1) as usize].path().to_path_buf();
    let store = SnapshotStore::open(&leader_dir.join("snapshots"), 2).unwrap();
    store.write(3_051, None, b"the state after 3051").unwrap();
    harness.node(leader).compact(3_051, None).unwrap();
    assert_eq!(harness.node(leader).first_index(), 3_052);
    let leader_first =
        ringmatch_pipeline::ports::JournalPort::first_seq(harness.node(leader).log());
    assert!(leader_first > 51, "segments were dropped: {leader_first}");
    harness.propose(leader, 10, 3);

    // The follower comes back behind the leader's log start: it is sent the snapshot.
    let follower_dir = harness.dirs[(follower - 1) as usize].path().to_path_buf();
    harness.nodes[(follower - 1) as usize] = Some(open(&follower_dir, follower));
    let mut installed = None;
    for _ in 0..2_000 {
        harness.round();
        installed = installed.or(harness.node(follower).take_installed_snapshot());
        if harness.converged() {
            break;
        }
    }
    assert!(harness.converged(), "the follower never caught up");
    assert_eq!(installed, Some(3_051));
    assert_eq!(harness.node(follower).first_index(), 3_052);
    assert_eq!(
        ringmatch_pipeline::ports::JournalPort::first_seq(harness.node(follower).log()),
        3_052,
        "the follower's journal restarted after the snapshot"
    );
    let sent = std::fs::read(leader_dir.join("snapshots/snapshot-00000000000000003051.snap"));
    let kept = std::fs::read(follower_dir.join("snapshots/snapshot-00000000000000003051.snap"));
    assert_eq!(
        sent.unwrap(),
        kept.unwrap(),
        "the snapshot file arrived whole"
    );
    assert_eq!(
        records_from(&follower_dir, 3_052),
        records_from(&leader_dir, 3_052)
    );
    assert_eq!(records_from(&follower_dir, 3_052).len(), 10);
    // Reopened, the follower keeps its new log start.
    harness.nodes[(follower - 1) as usize] = None;
    harness.nodes[(follower - 1) as usize] = Some(open(&follower_dir, follower));
    assert_eq!(harness.node(follower).first_index(), 3_052);
    harness.run_until("still converged", |h| h.converged());
}

/// A crash after the hard state recorded a snapshot install and before the journal was
/// reset: opening the node finishes the reset, and never keeps records that may disagree
/// with the leader's log.
#[test]
fn an_interrupted_snapshot_install_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut journal, _) = Journal::open(
            JournalConfig {
                dir: dir.path().join("journal"),
                segment_size_bytes: 64 * 1024,
                durability: Durability::Batch,
            },
            DamagePolicy::Refuse,
        )
        .unwrap();
        journal
            .append(&JournalRecord {
                seq: 1,
                timestamp_ns: 0,
                command: Command::term(1),
            })
            .unwrap();
        for seq in 2..=40 {
            journal
                .append(&JournalRecord {
                    seq,
                    timestamp_ns: seq,
                    command: Command::limit(1, 1, Side::Sell, 100, 1),
                })
                .unwrap();
        }
        journal.commit().unwrap();
    }
    let owner = Owner {
        cluster_id: CLUSTER_ID,
        node_id: 2,
    };
    let mut hard_state = HardStateFile::new(dir.path(), owner);
    ringmatch_replication::HardStatePort::store(
        &mut hard_state,
        &ringmatch_replication::HardState {
            term: 4,
            vote: 1,
            commit: 100,
            log_start: 100,
            log_start_term: 3,
            log_reset_pending: true,
        },
    )
    .unwrap();
    let node = open(dir.path(), 2);
    assert_eq!(node.first_index(), 101);
    assert_eq!(
        ringmatch_pipeline::ports::JournalPort::next_seq(node.log()),
        101
    );
    let stored = ringmatch_replication::HardStatePort::load(&HardStateFile::new(dir.path(), owner))
        .unwrap()
        .unwrap();
    assert!(!stored.log_reset_pending);
    assert_eq!((stored.log_start, stored.log_start_term), (100, 3));
}
