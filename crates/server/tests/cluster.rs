//! A three-node cluster of real `ringmatch serve` processes on loopback, under order-entry
//! load; kill -9 of the leader at random moments, many times, each killed node started again
//! (as its supervisor would). The load is one client (`FailoverClient`) that follows the
//! leader (a follower's order-entry port answers `not_leader` with the leader's address) and
//! resends what was not acknowledged as possible resends. At the end, stopped cleanly, every
//! node's journal is the same, every acknowledged command is in it under its acknowledged
//! sequence, every order was accepted exactly once (a resend the cluster had taken got the
//! original's outcome), and the final leader's events file equals a clean replay.
//!
//! A second test puts a TCP proxy on every replication link and cuts, slows and flaps them:
//! a leader cut off from both followers stops (exit status 3) and acknowledges nothing more,
//! the others elect a leader, and when the link heals the old leader rejoins as a follower
//! with its uncommitted tail cut; a slow link, one-way loss and a flapping link leave the
//! cluster taking orders. Both end with the same checks.
//!
//! `RINGMATCH_CLUSTER_ROUNDS` sets the number of kills (default 20); the seed is printed.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::cluster::{
    cluster, cluster_with_learner, cluster_with_proxies, leader, Member, ACCOUNT, TOKEN,
};
use support::{field, stdout};

#[test]
fn kill_9_of_the_leader_under_load_loses_and_doubles_nothing() {
    let _serial = support::cluster::one_at_a_time();
    let rounds = support::count_from_env("RINGMATCH_CLUSTER_ROUNDS", 20);
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
    for member in members.iter_mut() {
        member.start();
    }
    leader(&members);
    // One client through every failover: it reconnects to the new leader and resends what
    // was not acknowledged.
    let load = support::cluster::ResendingLoad::start(&members);
    let mut failovers = Vec::new();
    for round in 0..rounds {
        let at = leader(&members);
        // Every new leader takes orders before it is killed in turn.
        let acks_before = load.acks_count();
        let deadline = Instant::now() + Duration::from_secs(30);
        while load.acks_count() == acks_before {
            assert!(
                Instant::now() < deadline,
                "round {round}: the leader acknowledged nothing:\n{}",
                members[at].log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100 + next_random() % 500));
        members[at].kill9();
        let killed_at = Instant::now();
        let next = leader(&members);
        failovers.push(killed_at.elapsed());
        assert_ne!(next, at, "round {round}");
        members[at].start();
    }
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    let (at, text) = stop_and_check(&mut members, &report.acks);
    let events = stdout(&members[at].tool(&["events", "dump"]));
    let resent_count = support::check_each_order_once(&events, ACCOUNT, &report.acked);
    assert!(
        report.reconnects_count >= rounds,
        "{} reconnects over {rounds} failovers",
        report.reconnects_count
    );
    assert!(report.resends_count > 0, "nothing was resent");
    failovers.sort();
    eprintln!(
        "cluster test: {} acks checked over {rounds} failovers ({} reconnects, {} resends, \
         {resent_count} answered with the original's outcome); kill -9 to a new leader: \
         median {:?}, max {:?}; journal {}",
        report.acks.len(),
        report.reconnects_count,
        report.resends_count,
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1],
        field(&text, "journal")
    );
}

/// The end of a test: a leader, every member caught up, a clean stop of each; then every
/// journal is the same, every acknowledged command is in it once under its sequence, and the
/// leader's events file equals a clean replay. Returns the leader and its `journal verify`.
fn stop_and_check(members: &mut [Member], acks: &[(u64, u64)]) -> (usize, String) {
    // The end: a leader, every member caught up, then a clean stop of each.
    let at = leader(members);
    let deadline = Instant::now() + Duration::from_secs(30);
    let caught_up = loop {
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
        if statuses.len() == members.len()
            && positions.len() == 1
            && positions.iter().all(|(commit, last)| commit == last)
        {
            break positions.iter().next().unwrap().1;
        }
        assert!(
            Instant::now() < deadline,
            "the members never caught up: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // The followers took the snapshots, in shadow; the leader never paused for one.
    let leader_status = members[at].status().expect("the leader answers");
    assert!(
        leader_status["last_snapshot"].is_null(),
        "the leader took a snapshot: {leader_status}"
    );
    assert!(
        members.iter().any(|member| member
            .log_text()
            .contains("cluster: shadow snapshot after sequence")),
        "no follower wrote a snapshot"
    );
    // What an operator sees: `ringmatch cluster status` names one leader, and every member's
    // /metrics gives its role.
    let admin: Vec<String> = members
        .iter()
        .map(|member| format!("127.0.0.1:{}", member.admin_port))
        .collect();
    let report = stdout(&members[0].tool(&["cluster", "status", "--admin", &admin.join(",")]));
    assert_eq!(report.lines().count(), members.len(), "{report}");
    assert_eq!(report.matches(" leader term ").count(), 1, "{report}");
    assert_eq!(
        report.matches(" follower term ").count() + report.matches(" learner term ").count(),
        members.len() - 1,
        "{report}"
    );
    for (index, member) in members.iter().enumerate() {
        let (_, metrics) = support::http(member.admin_port, "GET", "/metrics", "").unwrap();
        let role = match (index == at, member.id > 3) {
            (true, _) => "leader",
            (false, false) => "follower",
            (false, true) => "learner",
        };
        assert!(
            metrics.contains(&format!("ringmatch_cluster_role{{role=\"{role}\"}} 1")),
            "node {}: {metrics}",
            member.id
        );
        // Every member's dashboard shows its role; the leader's also its pipeline.
        let (code, page) = support::http(member.admin_port, "GET", "/", "").unwrap();
        assert!(
            code == 200 && page.contains("<title>ringmatch</title>"),
            "{code}"
        );
        let (_, state) = support::http(member.admin_port, "GET", "/dashboard/state", "").unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state["role"], role, "node {}: {state}", member.id);
        assert_eq!(state["status"]["cluster"]["node_id"], member.id, "{state}");
        assert_eq!(
            state["status"]["stages"].is_object(),
            role == "leader",
            "node {}: {state}",
            member.id
        );
    }
    support::cluster::stop_all(members, at);

    let dumps: Vec<String> = members
        .iter()
        .map(|member| stdout(&member.tool(&["journal", "dump"])))
        .collect();
    let journals: Vec<Vec<&str>> = dumps
        .iter()
        .map(|dump| support::cluster::journal_up_to(dump, caught_up))
        .collect();
    assert!(
        journals.iter().all(|journal| *journal == journals[0]),
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
            // A client may send a place again, marked as a possible resend; a place is
            // journaled once as sent first.
            if command["possible_resend"] != true {
                assert!(orders.insert(key), "{key:?} is journaled twice");
            }
            journal.insert(record["seq"].as_u64().unwrap(), key);
        }
    }
    for (seq, client_order_id) in acks {
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
    (at, text)
}

/// Order-entry load on the leader `at` for `duration`; the acks.
fn load_for(
    members: &[Member],
    at: usize,
    next: &Arc<AtomicU64>,
    duration: Duration,
) -> Vec<(u64, u64)> {
    support::gateway_load_until(
        members[at].order_entry_port,
        ACCOUNT,
        TOKEN,
        next,
        Some(Instant::now() + duration),
    )
}

#[test]
fn a_cut_slow_lossy_or_flapping_network_loses_and_doubles_nothing() {
    let _serial = support::cluster::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (mut members, links) = cluster_with_proxies(dir.path(), "");
    let link = |from: usize, to: usize| {
        links[from][to]
            .as_ref()
            .expect("a link between two members")
    };
    for member in &mut members {
        member.start();
    }
    let next = Arc::new(AtomicU64::new(1));
    let mut acks = Vec::new();

    // The leader cut off from both followers, under load: it stops with status 3 (it can
    // reach no majority), and the other two elect a leader that takes orders.
    let old = leader(&members);
    let load = {
        let (port, next) = (members[old].order_entry_port, Arc::clone(&next));
        std::thread::spawn(move || support::gateway_load(port, ACCOUNT, TOKEN, &next))
    };
    std::thread::sleep(Duration::from_millis(300));
    // First its frames to the followers are lost, so that what it journals from here on
    // reaches no one (its uncommitted tail); then it hears nothing from them either.
    for other in (0..3).filter(|&other| other != old) {
        link(old, other).cut();
    }
    std::thread::sleep(Duration::from_millis(100));
    for other in (0..3).filter(|&other| other != old) {
        link(other, old).cut();
    }
    let status = members[old].wait_exit(Duration::from_secs(10));
    assert_eq!(
        status,
        Some(3),
        "the cut-off leader:\n{}",
        members[old].log_text()
    );
    acks.extend(load.join().unwrap());
    let new = leader(&members);
    assert_ne!(new, old);
    acks.extend(load_for(&members, new, &next, Duration::from_millis(500)));
    // What the cut-off leader journaled and could never commit.
    let stale = stdout(&members[old].tool(&["journal", "dump"]));
    for other in (0..3).filter(|&other| other != old) {
        link(old, other).heal();
        link(other, old).heal();
    }
    members[old].start();

    // A slow link: every frame from the leader held 30 ms.
    let at = leader(&members);
    for other in (0..3).filter(|&other| other != at) {
        link(at, other).delay(Duration::from_millis(30));
    }
    let slow = load_for(&members, at, &next, Duration::from_secs(1));
    assert!(!slow.is_empty(), "nothing acknowledged over a slow link");
    acks.extend(slow);
    for other in (0..3).filter(|&other| other != at) {
        link(at, other).delay(Duration::ZERO);
    }

    // One-way loss: the leader's frames to one follower are lost; the other follower and
    // the leader are a majority.
    let at = leader(&members);
    let deaf = (0..3).find(|&other| other != at).unwrap();
    link(at, deaf).cut();
    let one_way = load_for(&members, at, &next, Duration::from_secs(1));
    assert!(
        !one_way.is_empty(),
        "nothing acknowledged with one link lost one way"
    );
    acks.extend(one_way);
    link(at, deaf).heal();

    // A flapping follower: its links cut and healed every 100 ms while orders flow.
    let at = leader(&members);
    let flapping = (0..3).find(|&other| other != at).unwrap();
    let load = {
        let (port, next) = (members[at].order_entry_port, Arc::clone(&next));
        std::thread::spawn(move || {
            support::gateway_load_until(
                port,
                ACCOUNT,
                TOKEN,
                &next,
                Some(Instant::now() + Duration::from_secs(2)),
            )
        })
    };
    for flap in 0..20 {
        for other in (0..3).filter(|&other| other != flapping) {
            if flap % 2 == 0 {
                link(flapping, other).cut();
                link(other, flapping).cut();
            } else {
                link(flapping, other).heal();
                link(other, flapping).heal();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for other in (0..3).filter(|&other| other != flapping) {
        link(flapping, other).heal();
        link(other, flapping).heal();
    }
    let flapped = load.join().unwrap();
    assert!(
        !flapped.is_empty(),
        "nothing acknowledged while a follower flapped"
    );
    acks.extend(flapped);

    let (at, _) = stop_and_check(&mut members, &acks);
    // The old leader's uncommitted tail was cut: what it journaled past the commit point
    // differs from the history every member holds now.
    let history = stdout(&members[at].tool(&["journal", "dump"]));
    let stale_lines: Vec<&str> = stale.lines().collect();
    let history_lines: Vec<&str> = history.lines().collect();
    assert!(
        stale_lines
            .iter()
            .zip(&history_lines)
            .any(|(stale, kept)| stale != kept)
            || stale_lines.len() > history_lines.len(),
        "the cut-off leader had no uncommitted tail to cut: it journaled {} records, the \
         history has {}; its last: {:?}; its log:\n{}",
        stale_lines.len(),
        history_lines.len(),
        stale_lines.last(),
        members[old].log_text()
    );
    assert_eq!(
        stdout(&members[old].tool(&["journal", "dump"])),
        history,
        "the old leader's journal"
    );
}

/// A fourth member that is a learner: it never votes or leads, the voters commit while it is
/// down (it never gates the leader), and it catches up once it is back.
#[test]
fn a_learner_never_gates_the_leader_and_catches_up() {
    let _serial = support::cluster::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut members = cluster_with_learner(dir.path(), "");
    for member in &mut members {
        member.start();
    }
    let next = Arc::new(AtomicU64::new(1));
    let mut acks = Vec::new();
    let at = leader(&members);
    assert_ne!(members[at].id, 4, "the learner leads");
    acks.extend(load_for(&members, at, &next, Duration::from_millis(500)));
    members[3].kill9();
    let without = load_for(&members, at, &next, Duration::from_secs(1));
    assert!(
        !without.is_empty(),
        "nothing acknowledged with the learner down"
    );
    acks.extend(without);
    members[3].start();
    // The learner is back, and behind; a failover among the voters leaves it a learner.
    members[at].kill9();
    let next_leader = leader(&members);
    assert_ne!(members[next_leader].id, 4, "the learner leads");
    members[at].start();
    acks.extend(load_for(
        &members,
        next_leader,
        &next,
        Duration::from_millis(500),
    ));
    let learner = members[3].status().unwrap();
    assert_eq!(learner["cluster"]["role"], "learner", "{learner}");
    stop_and_check(&mut members, &acks);
}
