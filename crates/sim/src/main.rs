//! `ringmatch-sim`: runs seeds of the simulator. `--seeds N` runs seeds 0..N (or from
//! `--first S`), `--seed S` replays one and prints what it did, `--revert NAME` turns a fix
//! off (`ack-at-submit`, `unsynced-snapshots`). A failure prints the command that replays it;
//! the exit status is 1 if any seed failed.

use std::process::ExitCode;
use std::time::Instant;

use ringmatch_sim::{run_seed_with, Options, Revert};

fn usage() -> ExitCode {
    eprintln!(
        "usage: ringmatch-sim (--seeds N [--first S] | --seed S) [--revert ack-at-submit|unsynced-snapshots] [--page-reorder]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seeds: Option<u64> = None;
    let mut first = 0u64;
    let mut single: Option<u64> = None;
    let mut revert = None;
    let mut page_reorder = false;
    let mut index = 0;
    while index < args.len() {
        if args[index] == "--page-reorder" {
            page_reorder = true;
            index += 1;
            continue;
        }
        let value = args.get(index + 1);
        let number = value.and_then(|text| text.parse::<u64>().ok());
        match (args[index].as_str(), number) {
            ("--seeds", Some(count)) => seeds = Some(count),
            ("--first", Some(seed)) => first = seed,
            ("--seed", Some(seed)) => single = Some(seed),
            ("--revert", _) => match value.and_then(|name| Revert::from_name(name)) {
                Some(found) => revert = Some(found),
                None => return usage(),
            },
            _ => return usage(),
        }
        index += 2;
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
