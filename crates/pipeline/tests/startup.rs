//! `Pipeline::start` returns only once every stage has built its state. Alone in its test
//! binary so that no other test's stage threads are in the process.

use ringmatch_journal::{DamagePolicy, Durability, JournalConfig};
use ringmatch_matcher::workload::mix_config;
use ringmatch_pipeline::{
    recover, Pipeline, PipelineConfig, RecoveryOptions, Retention, StageCores, WaitKind,
};

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn start_returns_after_every_stage_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let options = RecoveryOptions {
        matcher: mix_config(),
        journal: JournalConfig {
            dir: dir.path().join("journal"),
            segment_size_bytes: 1 << 20,
            durability: Durability::None,
        },
        damage_policy: DamagePolicy::Refuse,
        snapshot_dir: dir.path().join("snapshots"),
        snapshots_kept_count: 2,
        events_path: dir.path().join("events.bin"),
    };
    let recovered = recover(&options, &mut |_| {}).unwrap();
    // A large output ring: the Matcher builds it on its own thread when that starts, and only
    // then starts the Publisher's thread.
    let config = PipelineConfig {
        input_ring_slots_count: 1024,
        output_ring_slots_count: 1 << 22,
        wait: WaitKind::Phased,
        cores: StageCores::default(),
        snapshot_every_commands: 0,
        retention: Retention::Keep,
    };
    assert!(!thread_names().iter().any(|name| name == "publisher"));
    let pipeline = Pipeline::start(
        &config,
        recovered.engine,
        recovered.journal,
        recovered.output,
        None,
    )
    .unwrap();
    let names = thread_names();
    for stage in ["journaler", "replicator", "matcher", "publisher"] {
        assert!(
            names.iter().any(|name| name == stage),
            "{stage} is not running when start returns: {names:?}"
        );
    }
    pipeline.shutdown();
}
