//! The cluster simulator in CI: three nodes on the real replication code (raft-rs over the
//! journal) through crashes, power losses, partitions and a faulty network, with every
//! checker on; the same seed gives the same run; and with each rule broken inside the
//! simulator's driver or ports, a named seed fails with what the rule prevents.
//! `RINGMATCH_SIM_CLUSTER_SEEDS` sets the number of seeds (default 1,000).

use ringmatch_sim::cluster::{
    run_cluster_seed, run_cluster_seed_with, run_cluster_seeds, ClusterRevert,
};

#[test]
fn every_cluster_seed_keeps_every_promise() {
    let count: u64 = std::env::var("RINGMATCH_SIM_CLUSTER_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_000);
    let failures = run_cluster_seeds(0, count, None);
    for failure in &failures {
        eprintln!(
            "{failure}\nreplay: scripts/sim.sh --cluster --seed {}",
            failure.seed
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cluster seeds failed",
        failures.len()
    );
}

#[test]
fn a_cluster_seed_replays_exactly() {
    for seed in [7, 4_321] {
        let first = run_cluster_seed(seed).unwrap();
        assert_eq!(first, run_cluster_seed(seed).unwrap(), "seed {seed}");
    }
}

/// The runs do what they are for: crashes of both kinds, leader changes, proposals lost to
/// them, damaged frames, forged messages, runs with a learner, compactions and snapshot
/// installs, and acks to check.
#[test]
fn the_cluster_runs_cover_crashes_leader_changes_and_a_faulty_network() {
    let mut power_losses = 0;
    let mut leader_terms = 0;
    let mut lost = 0;
    let mut damaged = 0;
    let mut forged = 0;
    let mut with_learner = 0;
    let mut acks = 0;
    let mut with_compaction = 0;
    let mut compactions = 0;
    let mut installs = 0;
    let mut gone_notices = 0;
    let mut early_elections = 0;
    for seed in 0..100 {
        let summary = run_cluster_seed(seed).unwrap();
        with_compaction += u64::from(summary.with_compaction);
        compactions += summary.compactions_count;
        installs += summary.installs_count;
        gone_notices += summary.gone_notices_count;
        early_elections += summary.early_elections_count;
        power_losses += summary.power_losses_count;
        leader_terms += summary.leader_terms_count;
        lost += summary.lost_count;
        damaged += summary.damaged_frames_count;
        forged += summary.forged_messages_count;
        with_learner += u64::from(summary.with_learner);
        acks += summary.acks_count;
    }
    assert!(power_losses > 300, "{power_losses}");
    assert!(leader_terms > 300, "{leader_terms}");
    assert!(lost > 100, "{lost}");
    assert!(damaged > 100, "{damaged}");
    assert!(forged > 100, "{forged}");
    assert!(with_learner > 20, "{with_learner}");
    assert!(acks > 10_000, "{acks}");
    // Followers compact their logs, and nodes that come back behind the leader's log start
    // are sent its snapshot.
    assert!(with_compaction > 20, "{with_compaction}");
    assert!(compactions > 500, "{compactions}");
    assert!(installs > 10, "{installs}");
    // Members are told that a crashed process ended (and now and then, falsely, that a live
    // leader did), and followers stand for election at once on it.
    eprintln!("{gone_notices} words that a process ended, {early_elections} early elections");
    assert!(gone_notices > 100, "{gone_notices}");
    assert!(early_elections > 50, "{early_elections}");
}

/// Each rule the replication code keeps, broken in turn: a named seed fails with what the
/// rule prevents, and passes with the rule kept.
#[test]
fn each_broken_rule_is_found() {
    let cases = [
        // An ack at the proposal is lost when a leader change overrides the entry.
        (ClusterRevert::AckAtPropose, 5, "is not at its sequence"),
        // Taking any entry committed at the index for the proposal acknowledges another
        // leader's command.
        (ClusterRevert::AckByIndex, 15, "acknowledged sequence"),
        // A node that forgets its term after a crash journals an old term again.
        (ClusterRevert::ForgetVote, 8, "opens term 1, not later than"),
        // Followers that ack unsynced entries let a power loss change a committed entry.
        (ClusterRevert::UnsyncedJournal, 14, "committed as"),
    ];
    for (revert, seed, expected) in cases {
        let failure = run_cluster_seed_with(seed, Some(revert)).unwrap_err();
        assert!(
            failure.problem.contains(expected),
            "{}: {failure}",
            revert.name()
        );
        run_cluster_seed(seed).unwrap();
    }
}
