//! The pipeline end to end on real files: commands in, journal and events file out, equal to
//! a clean replay; restart resumes without doubling; snapshots flow through the ring.

use std::path::Path;

use ringmatch_journal::{DamagePolicy, Durability, JournalConfig, JournalReader};
use ringmatch_matcher::workload::{exchange_core_mix, mix_config, MixShape};
use ringmatch_matcher::Engine;
use ringmatch_pipeline::{
    allowed_cores, available_cores, read_events, recover, restrict_thread_to_cores, Pipeline,
    PipelineConfig, Recovered, RecoveryOptions, Retention, Stage, StageCores, WaitKind,
};
use ringmatch_proto::{Command, CommandType, Event};

fn options(dir: &Path, durability: Durability) -> RecoveryOptions {
    RecoveryOptions {
        matcher: mix_config(),
        journal: JournalConfig {
            dir: dir.join("journal"),
            segment_size_bytes: 1 << 20,
            durability,
        },
        damage_policy: DamagePolicy::Refuse,
        snapshot_dir: dir.join("snapshots"),
        snapshots_kept_count: 2,
        events_path: dir.join("events.bin"),
    }
}

fn pipeline_config(snapshot_every_commands: u64) -> PipelineConfig {
    PipelineConfig {
        input_ring_slots_count: 1024,
        output_ring_slots_count: 4096,
        wait: WaitKind::Phased,
        cores: StageCores::default(),
        snapshot_every_commands,
        retention: Retention::Keep,
    }
}

/// Starts a pipeline on what was recovered, writing snapshots if `snapshots` is set.
fn start(recovered: Recovered, config: &PipelineConfig, snapshots: bool) -> Pipeline {
    Pipeline::start(
        config,
        recovered.engine,
        recovered.journal,
        recovered.output,
        snapshots.then_some(recovered.snapshots),
    )
    .unwrap()
}

/// The warm-up and `count` commands of the exchange-core mix with `seed`, in order.
fn mix(count: usize, seed: u64) -> Vec<Command> {
    let workload = exchange_core_mix(count, seed, MixShape::default());
    workload
        .warmup
        .iter()
        .chain(&workload.commands)
        .copied()
        .collect()
}

/// Runs `commands` through a freshly recovered pipeline and shuts it down cleanly.
fn run(dir: &Path, commands: &[Command], snapshot_every_commands: u64) -> (u64, u64) {
    let recovered = recover(&options(dir, Durability::Batch), &mut |_| {}).unwrap();
    let replayed = recovered.replayed_count;
    let snapshot_seq = recovered.snapshot.as_ref().map_or(0, |info| info.seq);
    let pipeline = start(recovered, &pipeline_config(snapshot_every_commands), true);
    let mut submitter = pipeline.submitter();
    for command in commands {
        while submitter.try_submit(command).is_err() {
            std::thread::yield_now();
        }
    }
    drop(submitter);
    pipeline.shutdown();
    (replayed, snapshot_seq)
}

fn clean_replay(dir: &Path) -> (Vec<Event>, u64) {
    let mut engine = Engine::new(mix_config()).unwrap();
    let mut events = Vec::new();
    for record in JournalReader::open(&dir.join("journal"), 1).unwrap() {
        let record = record.unwrap();
        engine.apply(record.seq, &record.command, &mut events);
    }
    (events, engine.state_hash())
}

#[test]
fn output_equals_a_clean_replay_across_restarts_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut commands = mix(20_000, 11);
    commands.insert(5_000, Command::empty(CommandType::Snapshot));

    let (replayed, snapshot_seq) = run(dir.path(), &commands[..8_000], 0);
    assert_eq!((replayed, snapshot_seq), (0, 0));
    let snapshots: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .collect();
    assert_eq!(
        snapshots.len(),
        1,
        "the snapshot command wrote one snapshot"
    );

    // The second run starts from the snapshot after sequence 5,001 and replays the rest.
    let (replayed, snapshot_seq) = run(dir.path(), &commands[8_000..], 4_000);
    assert_eq!((replayed, snapshot_seq), (8_000 - 5_001, 5_001));
    let (expected, _) = clean_replay(dir.path());
    let written = read_events(&dir.path().join("events.bin")).unwrap();
    assert_eq!(written.len(), expected.len());
    assert!(
        written == expected,
        "events file differs from a clean replay"
    );

    // The third start replays from the newest snapshot (by count, every 4,000) and adds nothing.
    let (replayed, snapshot_seq) = run(dir.path(), &[], 0);
    assert_eq!(snapshot_seq, 20_000);
    assert_eq!(replayed, commands.len() as u64 - 20_000);
    assert!(read_events(&dir.path().join("events.bin")).unwrap() == expected);
}

#[test]
fn a_full_ring_answers_busy_and_loses_nothing_it_took() {
    let dir = tempfile::tempdir().unwrap();
    let recovered = recover(&options(dir.path(), Durability::Every), &mut |_| {}).unwrap();
    let mut config = pipeline_config(0);
    config.input_ring_slots_count = 64;
    let pipeline = start(recovered, &config, false);
    let mut submitter = pipeline.submitter();
    let workload = exchange_core_mix(1_000, 5, MixShape::default());
    let (mut taken, mut busy) = (0u64, 0u64);
    for command in workload.warmup.iter().chain(&workload.commands) {
        match submitter.try_submit(command) {
            Ok(seq) => {
                taken += 1;
                assert_eq!(seq, taken, "sequences are given in order without gaps");
            }
            Err(_) => busy += 1,
        }
    }
    assert!(
        busy > 0,
        "a 64-slot ring behind a sync per command must fill"
    );
    assert_eq!(
        pipeline
            .metrics()
            .busy_count
            .load(std::sync::atomic::Ordering::Relaxed),
        busy
    );
    drop(submitter);
    pipeline.shutdown();
    let records: Vec<_> = JournalReader::open(&dir.path().join("journal"), 1)
        .unwrap()
        .collect();
    assert_eq!(records.len() as u64, taken);
    let (expected, _) = clean_replay(dir.path());
    assert!(read_events(&dir.path().join("events.bin")).unwrap() == expected);
}

#[test]
fn retention_deletes_segments_before_the_oldest_kept_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut recovery = options(dir.path(), Durability::None);
    recovery.journal.segment_size_bytes = 64 * 1024;
    recovery.snapshots_kept_count = 1;
    let recovered = recover(&recovery, &mut |_| {}).unwrap();
    let mut config = pipeline_config(2_000);
    config.retention = Retention::Delete;
    let pipeline = start(recovered, &config, true);
    let mut submitter = pipeline.submitter();
    let workload = exchange_core_mix(9_000, 6, MixShape::default());
    for command in workload.warmup.iter().chain(&workload.commands) {
        while submitter.try_submit(command).is_err() {
            std::thread::yield_now();
        }
    }
    // Retention runs in the Journaler when a batch ends after a snapshot was written: wait for
    // the last snapshot, then send one more command.
    let metrics = pipeline.metrics();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while metrics
        .last_snapshot
        .lock()
        .unwrap()
        .as_ref()
        .map_or(0, |last| last.0)
        < 10_000
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot after sequence 10,000"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    submitter
        .try_submit(&Command::empty(CommandType::Snapshot))
        .unwrap();
    drop(submitter);
    pipeline.shutdown();
    let segments = ringmatch_journal::list_segments(&dir.path().join("journal")).unwrap();
    assert!(
        segments[0].0 > 1,
        "early segments were deleted: first segment starts at {}",
        segments[0].0
    );
    // Start-up still works: the snapshot covers everything before the first segment.
    let recovered = recover(&recovery, &mut |_| {}).unwrap();
    assert!(recovered.snapshot.is_some());
    assert_eq!(recovered.journal.next_seq(), 10_002);
}

#[test]
fn bad_core_ids_and_ring_sizes_are_errors_not_aborts() {
    let mut config = pipeline_config(0);
    config.cores.matcher = Some(4096);
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("core 4096"), "{error}");
    let mut config = pipeline_config(0);
    config.input_ring_slots_count = 1000;
    assert!(config
        .validate()
        .unwrap_err()
        .to_string()
        .contains("power of two"));
}

#[test]
fn a_thread_restricted_to_cores_passes_the_restriction_to_threads_it_starts() {
    std::thread::spawn(|| {
        let all = available_cores();
        assert!(!all.is_empty());
        let error = restrict_thread_to_cores("test cores", &[]).unwrap_err();
        assert_eq!(error.to_string(), "test cores lists no cores");
        let missing = all.iter().max().unwrap() + 1;
        let error = restrict_thread_to_cores("test cores", &[all[0], missing]).unwrap_err();
        assert!(
            error.to_string().contains(&format!("to core {missing}")),
            "{error}"
        );
        let allowed = || -> Vec<usize> {
            core_affinity::get_core_ids()
                .unwrap()
                .iter()
                .map(|core| core.id)
                .collect()
        };
        assert_eq!(allowed(), all, "a refused list changes nothing");
        restrict_thread_to_cores("test cores", &[all[0]]).unwrap();
        assert_eq!(allowed(), vec![all[0]]);
        assert_eq!(
            available_cores(),
            all,
            "the machine's cores stay the machine's"
        );
        let child = std::thread::spawn(allowed).join().unwrap();
        assert_eq!(
            child,
            vec![all[0]],
            "started threads inherit the restriction"
        );
        // A restricted thread can still move to any core the machine has.
        let last = *all.last().unwrap();
        restrict_thread_to_cores("test cores", &[last]).unwrap();
        assert_eq!(allowed(), vec![last]);
    })
    .join()
    .unwrap();
}

#[test]
fn a_batch_is_taken_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let recovered = recover(&options(dir.path(), Durability::Every), &mut |_| {}).unwrap();
    let mut config = pipeline_config(0);
    config.input_ring_slots_count = 64;
    let pipeline = start(recovered, &config, false);
    let mut submitter = pipeline.submitter();
    let commands = mix(2_000, 9);
    let (mut taken, mut busy) = (0u64, 0u64);
    let mut next = 0;
    let mut sent = Vec::new();
    // Batches of 1 to 40 commands against a 64-slot ring behind a sync per command.
    for size in (1..=40).cycle() {
        if next >= commands.len() {
            break;
        }
        let batch = &commands[next..commands.len().min(next + size)];
        match submitter.try_submit_batch_from(0, batch) {
            Ok(last) => {
                taken += batch.len() as u64;
                assert_eq!(last, taken, "the last of a batch has the highest sequence");
                sent.extend_from_slice(batch);
                next += batch.len();
            }
            Err(_) => busy += 1,
        }
    }
    assert!(
        busy > 0,
        "a 64-slot ring behind a sync per command must fill"
    );
    drop(submitter);
    pipeline.shutdown();
    let records: Vec<Command> = JournalReader::open(&dir.path().join("journal"), 1)
        .unwrap()
        .map(|record| record.unwrap().command)
        .collect();
    assert_eq!(
        records.len() as u64,
        taken,
        "a refused batch left nothing behind"
    );
    assert!(
        records == sent,
        "the journal holds exactly the batches taken, in order"
    );
    let (expected, _) = clean_replay(dir.path());
    assert!(read_events(&dir.path().join("events.bin")).unwrap() == expected);
}

#[test]
fn stages_on_one_core_fed_from_another_lose_no_command() {
    // Every stage on one core and the submitter on another: idle stages yield for a while
    // before they park. Commands come in bursts with pauses both shorter and longer than that
    // while, so both ways of waiting are taken; the output must equal a clean replay.
    let cores = allowed_cores();
    if cores.len() < 2 {
        eprintln!("one core only; nothing to check");
        return;
    }
    let (stage_core, submitter_core) = (cores[0], cores[1]);
    let dir = tempfile::tempdir().unwrap();
    let commands = mix(6_000, 5);
    let recovered = recover(&options(dir.path(), Durability::None), &mut |_| {}).unwrap();
    let mut config = pipeline_config(0);
    config.cores = StageCores {
        journaler: Some(stage_core),
        replicator: Some(stage_core),
        matcher: Some(stage_core),
        publisher: Some(stage_core),
        responder: Some(stage_core),
    };
    let pipeline = start(recovered, &config, true);
    let counters = pipeline.metrics().wait_counters.clone();
    let mut submitter = pipeline.submitter();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            restrict_thread_to_cores("submitter", &[submitter_core]).unwrap();
            for (index, command) in commands.iter().enumerate() {
                while submitter.try_submit(command).is_err() {
                    std::thread::yield_now();
                }
                match index % 100 {
                    0 => std::thread::sleep(std::time::Duration::from_micros(300)),
                    50 => std::thread::sleep(std::time::Duration::from_micros(20)),
                    _ => {}
                }
            }
        });
    });
    drop(submitter);
    pipeline.shutdown();
    // Both ways of waiting were taken by this pipeline's stages.
    let (yields, parks) = counters.single_core_waits_count();
    assert!(yields > 0, "no stage yielded");
    assert!(parks > 0, "no stage parked");
    let (expected, _) = clean_replay(dir.path());
    assert_eq!(
        JournalReader::open(&dir.path().join("journal"), 1)
            .unwrap()
            .count(),
        commands.len()
    );
    let written = read_events(&dir.path().join("events.bin")).unwrap();
    assert_eq!(written.len(), expected.len());
    assert!(
        written == expected,
        "events file differs from a clean replay"
    );
}

/// A snapshot asked for when no command follows is copied by the Matcher's idle work alone:
/// its file appears while the pipeline runs on with nothing to do, and holds the state after
/// its command.
#[test]
fn an_idle_matcher_finishes_copying_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let commands = mix(20_000, 5);
    let recovered = recover(&options(dir.path(), Durability::Batch), &mut |_| {}).unwrap();
    let pipeline = start(recovered, &pipeline_config(0), true);
    let metrics = pipeline.metrics();
    let mut submitter = pipeline.submitter();
    for command in commands
        .iter()
        .chain([&Command::empty(CommandType::Snapshot)])
    {
        while submitter.try_submit(command).is_err() {
            std::thread::yield_now();
        }
    }
    let snapshot_seq = commands.len() as u64 + 1;
    let started = std::time::Instant::now();
    let written = loop {
        if let Some((seq, path, _)) = metrics.last_snapshot.lock().unwrap().clone() {
            break (seq, path);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no snapshot written while the pipeline was idle"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert_eq!(written.0, snapshot_seq);
    let bytes = std::fs::read(&written.1).unwrap();
    let snapshot = ringmatch_journal::decode_snapshot(snapshot_seq, &bytes).unwrap();
    drop(submitter);
    pipeline.shutdown();
    let mut replayed = Engine::new(mix_config()).unwrap();
    let mut events = Vec::new();
    for (index, command) in commands.iter().enumerate() {
        replayed.apply(index as u64 + 1, command, &mut events);
    }
    assert!(snapshot.state == replayed.encode_state());
}

/// A replica link that lets commands through only up to a sequence the test raises.
struct TestLink(std::sync::Arc<(std::sync::Mutex<u64>, std::sync::Condvar)>);

impl ringmatch_pipeline::ports::ReplicaLink for TestLink {
    fn replicated(&mut self, seq: u64) -> Result<u64, String> {
        let (allowed, raised) = &*self.0;
        let mut allowed = allowed.lock().unwrap();
        while *allowed < seq {
            allowed = raised.wait(allowed).unwrap();
        }
        Ok(*allowed)
    }
}

#[test]
fn a_leaders_matcher_runs_only_what_its_link_says_is_replicated() {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let recovered = recover(&options(dir.path(), Durability::None), &mut |_| {}).unwrap();
    let gate = std::sync::Arc::new((std::sync::Mutex::new(0u64), std::sync::Condvar::new()));
    let pipeline = Pipeline::start_replicated(
        &pipeline_config(0),
        recovered.engine,
        recovered.journal,
        recovered.output,
        None,
        None,
        Some(Box::new(TestLink(std::sync::Arc::clone(&gate)))),
    )
    .unwrap();
    // Dropped before the pipeline, also when an assertion fails: its shutdown then does not
    // wait forever on the link.
    struct OpenAtTheEnd<'a>(&'a (std::sync::Mutex<u64>, std::sync::Condvar));
    impl Drop for OpenAtTheEnd<'_> {
        fn drop(&mut self) {
            if let Ok(mut allowed) = self.0 .0.lock() {
                *allowed = u64::MAX;
            }
            self.0 .1.notify_all();
        }
    }
    let _open_at_the_end = OpenAtTheEnd(&gate);
    let metrics = pipeline.metrics();
    let stage = |stage: Stage| metrics.stage_seq[stage as usize].load(Ordering::Acquire);
    let allow = |to: u64| {
        *gate.0.lock().unwrap() = to;
        gate.1.notify_all();
    };
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // Fewer than the ring holds: the submitter must not wait for the Matcher.
    let commands: Vec<Command> = mix(200, 5).into_iter().take(300).collect();
    let mut submitter = pipeline.submitter();
    for command in &commands {
        while submitter.try_submit(command).is_err() {
            std::thread::yield_now();
        }
    }
    let total = commands.len() as u64;
    wait_until("every command journaled", &|| {
        stage(Stage::Journaled) == total
    });

    allow(40);
    wait_until("the Matcher at 40", &|| {
        let matched = stage(Stage::Matched);
        assert!(matched <= 40, "the Matcher ran past the link, to {matched}");
        matched == 40
    });
    // What ran goes out while the Matcher waits for the next command's replication.
    wait_until("the events to 40 published", &|| {
        stage(Stage::Published) == 40
    });
    // Everything is journaled and waiting; for a while, nothing past 40 may run.
    for _ in 0..50 {
        assert_eq!(stage(Stage::Matched), 40, "the Matcher ran past the link");
        assert_eq!(stage(Stage::Replicated), 40);
        std::thread::sleep(Duration::from_millis(2));
    }
    allow(total);
    wait_until("the Matcher at the end", &|| stage(Stage::Matched) == total);
    assert_eq!(stage(Stage::Replicated), total);
    drop(submitter);
    pipeline.shutdown();
    let (expected, _) = clean_replay(dir.path());
    assert!(read_events(&dir.path().join("events.bin")).unwrap() == expected);
}
