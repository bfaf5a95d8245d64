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
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::cluster::{cluster, leader, Member, ACCOUNT, TOKEN};
use support::{field, stdout};

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
    let mut members = cluster(dir.path(), "");
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
