//! Three replicas on loopback TCP, each on a real journal and `raft-state` file: a leader is
//! elected and commits; bad frames sent to a follower's replication port (garbage, another
//! cluster's, a non-member's, a term-less append, a proposal, an old term's append) are
//! refused or ignored without harm; the leader is stopped and the others elect a new one
//! that commits; the old leader, reopened from its files, catches up.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringmatch_journal::{
    DamagePolicy, Durability, Journal, JournalConfig, JournalReader, JournalRecord,
};
use ringmatch_proto::{Command, Side};
use ringmatch_replication::{
    encode_frame, HardStateFile, HardStatePort, Message, MessageType, Node, NodeConfig, Owner,
    PeerAddress, Replica, Role,
};

const CLUSTER_ID: u64 = 5;
const TICK: Duration = Duration::from_millis(10);
const WAIT: Duration = Duration::from_secs(20);

fn start(dir: &Path, id: u64, listener: TcpListener, peers: &[PeerAddress]) -> Replica {
    let (journal, _) = Journal::open(
        JournalConfig {
            dir: dir.join("journal"),
            segment_size_bytes: 1 << 20,
            durability: Durability::Batch,
        },
        DamagePolicy::Refuse,
    )
    .unwrap();
    let hard_state = HardStateFile::new(
        dir,
        Owner {
            cluster_id: CLUSTER_ID,
            node_id: id,
        },
    );
    let commit = hard_state.load().unwrap().map_or(0, |state| state.commit);
    let config = NodeConfig {
        cluster_id: CLUSTER_ID,
        node_id: id,
        voters: vec![1, 2, 3],
        learners: Vec::new(),
        election_ticks: 15,
        heartbeat_ticks: 3,
        randomized_election: true,
        commit_stored_every: ringmatch_replication::log::COMMIT_STORED_EVERY,
    };
    let node = Node::open(&config, journal, hard_state, None, commit).unwrap();
    Replica::start(
        node,
        CLUSTER_ID,
        listener,
        peers,
        TICK,
        Box::new(|_, _, _| {}),
    )
    .unwrap()
}

fn records(dir: &Path) -> Vec<JournalRecord> {
    JournalReader::open(&dir.join("journal"), 1)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn leader_of(replicas: &[Option<Replica>]) -> Option<(usize, u64)> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        for (index, replica) in replicas.iter().enumerate() {
            if let Some(replica) = replica {
                let status = replica.status();
                // A leader whose own term record is committed: ready to take commands.
                if status.role == Role::Leader && status.commit == status.last_index {
                    return Some((index, status.term));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn propose_and_commit(replica: &Replica, term: u64, count: u64) -> u64 {
    let first = replica.status().last_index + 1;
    let batch: Vec<JournalRecord> = (first..first + count)
        .map(|seq| {
            let mut command = Command::limit(1, 1, Side::Buy, 100, 1);
            command.client_order_id = seq;
            command.timestamp_ns = seq;
            JournalRecord {
                seq,
                timestamp_ns: seq,
                command,
            }
        })
        .collect();
    replica.propose(batch).unwrap();
    let last = first + count - 1;
    replica.wait_committed(last, term, WAIT).unwrap();
    last
}

fn frame(message: &Message, cluster_id: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_frame(cluster_id, message, &mut bytes);
    bytes
}

fn send_raw(address: SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(bytes).unwrap();
    // Give the replica time to read it.
    std::thread::sleep(Duration::from_millis(50));
}

#[test]
fn a_cluster_on_loopback_fails_over_refuses_bad_frames_and_catches_up() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let peers: Vec<PeerAddress> = listeners
        .iter()
        .enumerate()
        .map(|(index, listener)| PeerAddress {
            node_id: index as u64 + 1,
            address: listener.local_addr().unwrap(),
        })
        .collect();
    let mut replicas: Vec<Option<Replica>> = listeners
        .into_iter()
        .enumerate()
        .map(|(index, listener)| {
            Some(start(
                dirs[index].path(),
                index as u64 + 1,
                listener,
                &peers,
            ))
        })
        .collect();

    let (leader, term) = leader_of(&replicas).expect("a leader within 20 s");
    let leader_replica = replicas[leader].as_ref().unwrap();
    let last = propose_and_commit(leader_replica, term, 200);
    assert_eq!(last, 201, "the term record, then 200 commands");
    // Once connected, the leader's Raft thread writes its appends to the sockets itself.
    let stats = leader_replica.transport_stats();
    let direct = stats.frames_sent_directly.load(Ordering::Relaxed);
    assert!(
        direct > 0 && direct <= stats.frames_sent.load(Ordering::Relaxed),
        "{direct} frames written by the Raft thread"
    );

    // A wait on the part is not ended by commits (they would wake it on every step), only
    // by a change of part, term or leader, or by its time running out (it then looks at the
    // status once more). The proposals start once the waiter has looked at the status
    // (under the replica's lock, which a publish needs), so it is waiting when the commits
    // come; a wake-up by them would end it long before its time.
    let target = last + 50;
    let looked = AtomicBool::new(false);
    let role_wait = Duration::from_millis(500);
    let (waited, elapsed) = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let started = Instant::now();
            let waited = leader_replica.wait_for_role(role_wait, |status| {
                looked.store(true, Ordering::SeqCst);
                status.commit >= target
            });
            (waited, started.elapsed())
        });
        while !looked.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        propose_and_commit(leader_replica, term, 50);
        waiter.join().unwrap()
    });
    let now = leader_replica.status();
    assert!(now.commit >= target);
    match waited {
        // Ended early only by a change of part or term.
        Ok(status) => assert!(
            elapsed >= role_wait || status.role != Role::Leader || status.term != term,
            "commits alone ended a wait on the part, after {elapsed:?}"
        ),
        // The commits took longer than the wait (a loaded machine).
        Err(ringmatch_replication::WaitError::Timeout(_)) => {}
        Err(error) => panic!("the wait on the part failed: {error}"),
    }
    let last = now.last_index;

    // Bad frames at a follower.
    let follower = (0..3).find(|&index| index != leader).unwrap();
    let follower_id = follower as u64 + 1;
    let follower_address = peers[follower].address;
    let leader_id = leader as u64 + 1;
    let refused_before = replicas[follower]
        .as_ref()
        .unwrap()
        .transport_stats()
        .frames_refused
        .load(Ordering::Relaxed);
    let mut append = Message::default();
    append.set_msg_type(MessageType::MsgAppend);
    append.from = leader_id;
    append.to = follower_id;
    append.term = term;
    send_raw(follower_address, b"GET /status HTTP/1.1\r\n\r\n");
    send_raw(follower_address, &frame(&append, CLUSTER_ID + 1));
    let mut stranger = append.clone();
    stranger.from = 9;
    send_raw(follower_address, &frame(&stranger, CLUSTER_ID));
    let refused = replicas[follower]
        .as_ref()
        .unwrap()
        .transport_stats()
        .frames_refused
        .load(Ordering::Relaxed);
    assert_eq!(
        refused - refused_before,
        3,
        "garbage, another cluster, a non-member"
    );
    // Well-formed frames from a member that the node itself refuses or Raft ignores: a
    // term-less append carrying an entry, a proposal, and an append of an old term.
    let mut forged = append.clone();
    forged.term = 0;
    forged.index = last;
    forged.log_term = term;
    forged.commit = last + 1;
    forged.entries = vec![raft::eraftpb::Entry {
        index: last + 1,
        term,
        data: ringmatch_replication::log::entry_data(1, &Command::limit(7, 1, Side::Sell, 1, 1))
            .into(),
        ..Default::default()
    }]
    .into();
    send_raw(follower_address, &frame(&forged, CLUSTER_ID));
    let mut proposal = forged.clone();
    proposal.set_msg_type(MessageType::MsgPropose);
    proposal.term = term;
    send_raw(follower_address, &frame(&proposal, CLUSTER_ID));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        records(dirs[follower].path()).len() as u64,
        last,
        "nothing was appended"
    );
    assert!(records(dirs[follower].path())
        .iter()
        .all(|record| record.command.account != 7));

    // Stop the leader: the others elect a new one within the timeouts and go on.
    let stopped_at = Instant::now();
    replicas[leader] = None;
    let (new_leader, new_term) = leader_of(&replicas).expect("a new leader");
    let failover = stopped_at.elapsed();
    assert_ne!(new_leader, leader);
    assert!(new_term > term);
    let new_last = propose_and_commit(replicas[new_leader].as_ref().unwrap(), new_term, 100);
    assert_eq!(
        new_last,
        last + 1 + 100,
        "the new term record, then 100 commands"
    );
    eprintln!(
        "failover: a committed leader {:?} after the old one stopped",
        failover
    );
    // The survivors found the old leader's port refusing once its connections ended, and the
    // new leader stood at once instead of waiting out the election timeout.
    for (index, replica) in replicas.iter().enumerate() {
        if let Some(replica) = replica {
            assert!(
                replica.transport_stats().peers_gone.load(Ordering::Relaxed) >= 1,
                "node {} was not told the old leader's process ended",
                index + 1
            );
        }
    }
    assert!(
        replicas[new_leader]
            .as_ref()
            .unwrap()
            .status()
            .early_elections
            >= 1,
        "the new leader waited out the election timeout"
    );

    // An append of the old term, as the deposed leader would send it, is ignored.
    let follower = (0..3)
        .find(|&index| index != leader && index != new_leader)
        .unwrap();
    let mut old = forged.clone();
    old.from = leader_id;
    old.to = follower as u64 + 1;
    old.term = term;
    old.index = new_last;
    old.commit = new_last + 1;
    old.entries[0].index = new_last + 1;
    send_raw(peers[follower].address, &frame(&old, CLUSTER_ID));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(records(dirs[follower].path()).len() as u64, new_last);
    assert!(records(dirs[follower].path())
        .iter()
        .all(|record| record.command.account != 7));

    // The old leader comes back from its files, as a follower, and catches up.
    let listener = TcpListener::bind(peers[leader].address).unwrap();
    replicas[leader] = Some(start(dirs[leader].path(), leader_id, listener, &peers));
    replicas[leader]
        .as_ref()
        .unwrap()
        .wait_for(WAIT, |status| {
            status.role == Role::Follower
                && status.commit == new_last
                && status.last_index == new_last
        })
        .expect("the old leader catches up as a follower");
    // Dropped one after another, the last replicas find the first ones' ports refusing and
    // may elect among themselves before they stop: a term record may then end a journal.
    drop(replicas);
    let up_to_new_last = |dir: &tempfile::TempDir| {
        let all = records(dir.path());
        assert!(
            all.iter()
                .skip(new_last as usize)
                .all(|record| record.command.command_type == ringmatch_proto::CommandType::Term),
            "a record past {new_last} that is not a term record"
        );
        all.into_iter().take(new_last as usize).collect::<Vec<_>>()
    };
    let history = up_to_new_last(&dirs[new_leader]);
    assert_eq!(history.len() as u64, new_last);
    for dir in &dirs {
        assert_eq!(up_to_new_last(dir), history);
    }
}
