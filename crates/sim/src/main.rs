//! `ringmatch-sim`: runs seeds of the simulator. `--seeds N` runs seeds 0..N (or from
//! `--first S`), `--seed S` replays one and prints what it did, `--revert NAME` turns a fix
//! off (`ack-at-submit`, `unsynced-snapshots`, `resend-as-new`), `--cluster` runs the three-node cluster
//! simulator instead. A failure prints the command that replays it; the exit status is 1 if
//! any seed failed.

use std::process::ExitCode;
use std::time::Instant;

use ringmatch_sim::cluster::{run_cluster_seed_with, ClusterRevert, ClusterSummary};
use ringmatch_sim::{run_seed_with, Failure, Options, Revert};

fn usage() -> ExitCode {
    eprintln!(
        "usage: ringmatch-sim (--seeds N [--first S] | --seed S) [--revert ack-at-submit|unsynced-snapshots|resend-as-new] [--page-reorder]\n       ringmatch-sim --cluster (--seeds N [--first S] | --seed S) [--revert ack-at-propose|ack-by-index|forget-vote|unsynced-journal]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seeds: Option<u64> = None;
    let mut first = 0u64;
    let mut single: Option<u64> = None;
    let mut revert = None;
    let mut revert_name: Option<String> = None;
    let mut page_reorder = false;
    let mut cluster = false;
    let mut index = 0;
    while index < args.len() {
        if args[index] == "--page-reorder" || args[index] == "--cluster" {
            page_reorder |= args[index] == "--page-reorder";
            cluster |= args[index] == "--cluster";
            index += 1;
            continue;
        }
        let value = args.get(index + 1);
        let number = value.and_then(|text| text.parse::<u64>().ok());
        match (args[index].as_str(), number) {
            ("--seeds", Some(count)) => seeds = Some(count),
            ("--first", Some(seed)) => first = seed,
            ("--seed", Some(seed)) => single = Some(seed),
            ("--revert", Some(_)) | ("--revert", None) if value.is_some() => {
                revert_name = value.cloned();
                revert = value.and_then(|name| Revert::from_name(name));
            }
            _ => return usage(),
        }
        index += 2;
    }
    if cluster {
        let cluster_revert = match revert_name.as_deref().map(ClusterRevert::from_name) {
            None => None,
            Some(Some(found)) => Some(found),
            Some(None) => return usage(),
        };
        if page_reorder {
            return usage();
        }
        return run_cluster(single, seeds, first, cluster_revert);
    }
    if revert_name.is_some() && revert.is_none() {
        return usage();
    }
    let options = Options {
        revert,
        page_reorder,
    };
    let replay = |seed: u64| {
        let mut command = format!("scripts/sim.sh --seed {seed}");
        if let Some(revert) = revert {
            command += &format!(" --revert {}", revert.name());
        }
        if page_reorder {
            command += " --page-reorder";
        }
        command
    };
    if let Some(seed) = single {
        return match run_seed_with(seed, options) {
            Ok(summary) => {
                println!("seed {seed}: ok: {summary:?}");
                ExitCode::SUCCESS
            }
            Err(failure) => {
                println!("{failure}");
                println!("replay: {}", replay(seed));
                ExitCode::FAILURE
            }
        };
    }
    let Some(count) = seeds else {
        return usage();
    };
    let started = Instant::now();
    let mut failed = 0u64;
    let mut crashes = 0u64;
    let mut power_losses = 0u64;
    let mut acks = 0u64;
    let mut from_snapshot = 0u64;
    let mut faults = 0u64;
    for seed in first..first + count {
        match run_seed_with(seed, options) {
            Ok(summary) => {
                crashes += summary.crashes_count;
                power_losses += summary.power_losses_count;
                acks += summary.acks_count;
                from_snapshot += summary.restarts_from_snapshot_count;
                faults += summary.faults_count;
            }
            Err(failure) => {
                failed += 1;
                println!("{failure}");
                println!("replay: {}", replay(seed));
            }
        }
        let done = seed - first + 1;
        if done % 100_000 == 0 {
            eprintln!(
                "{done} seeds, {failed} failed, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "{} passed, {failed} failed ({count} seeds from {first}, {crashes} crashes of which \
         {power_losses} power losses, {from_snapshot} starts from a snapshot, {faults} faults, \
         {acks} acks checked, {:.1} s)",
        count - failed,
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run_cluster(
    single: Option<u64>,
    seeds: Option<u64>,
    first: u64,
    revert: Option<ClusterRevert>,
) -> ExitCode {
    let report = |failure: &Failure| {
        println!("{failure}");
        let revert = revert.map_or(String::new(), |revert| {
            format!(" --revert {}", revert.name())
        });
        println!(
            "replay: scripts/sim.sh --cluster --seed {}{revert}",
            failure.seed
        );
    };
    if let Some(seed) = single {
        return match run_cluster_seed_with(seed, revert) {
            Ok(summary) => {
                println!("cluster seed {seed}: ok: {summary:?}");
                ExitCode::SUCCESS
            }
            Err(failure) => {
                report(&failure);
                ExitCode::FAILURE
            }
        };
    }
    let Some(count) = seeds else {
        return usage();
    };
    // A failing seed is reported with its panic's message; the backtraces of many would
    // bury the summary (`--seed S` replays one with its backtrace).
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut failed = 0u64;
    let mut total = ClusterSummary::default();
    for seed in first..first + count {
        match run_cluster_seed_with(seed, revert) {
            Ok(summary) => {
                total.crashes_count += summary.crashes_count;
                total.power_losses_count += summary.power_losses_count;
                total.leader_terms_count += summary.leader_terms_count;
                total.acks_count += summary.acks_count;
                total.lost_count += summary.lost_count;
                total.damaged_frames_count += summary.damaged_frames_count;
                total.compactions_count += summary.compactions_count;
                total.installs_count += summary.installs_count;
            }
            Err(failure) => {
                failed += 1;
                report(&failure);
            }
        }
    }
    println!(
        "{} passed, {failed} failed ({count} cluster seeds from {first}, {} crashes of which {} \
         power losses, {} terms with a leader, {} acks checked, {} proposals lost to a leader \
         change, {} damaged frames refused, {} compactions, {} snapshots installed from a \
         leader, {:.1} s)",
        count - failed,
        total.crashes_count,
        total.power_losses_count,
        total.leader_terms_count,
        total.acks_count,
        total.lost_count,
        total.damaged_frames_count,
        total.compactions_count,
        total.installs_count,
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
