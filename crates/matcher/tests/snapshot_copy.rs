//! Snapshots copied while the engine runs: on the exchange-core mix (100,000 resting orders,
//! so every array spans many pages), snapshots begin at many points, their pages are copied
//! with budgets from one page to everything (or only by the engine's own writes), and each
//! finished copy must encode to exactly the bytes the engine encoded when the snapshot began,
//! restore to that state, and leave the engine's own run unchanged.

use ringmatch_matcher::workload::{exchange_core_mix, mix_config, MixShape};
use ringmatch_matcher::{CountingSink, Engine, Event};
use ringmatch_proto::Command;

/// A snapshot under way: the bytes the engine encoded when it began, and its hash.
struct Expected {
    seq: u64,
    round: u64,
    bytes: Vec<u8>,
    hash: u64,
}

#[test]
fn a_copied_snapshot_is_the_state_where_it_began() {
    let workload = exchange_core_mix(240_000, 11, MixShape::default());
    let commands: Vec<Command> = workload
        .warmup
        .iter()
        .chain(&workload.commands)
        .copied()
        .collect();
    let mut engine = Engine::new(mix_config()).unwrap();
    // A second engine that never snapshots: the copying one must run exactly like it.
    let mut plain = Engine::new(mix_config()).unwrap();
    let budgets = [0usize, 1, 4_096, 65_536, 1 << 20, usize::MAX];
    let mut under_way: Option<Expected> = None;
    let (mut rounds_count, mut next_begin) = (0u64, 5_000u64);
    let mut snapshots_checked = 0;
    let mut written_a_while_first = 0;
    let (mut events, mut plain_events) = (Vec::<Event>::new(), Vec::<Event>::new());
    for (index, command) in commands.iter().enumerate() {
        let seq = index as u64 + 1;
        events.clear();
        plain_events.clear();
        engine.apply(seq, command, &mut events);
        plain.apply(seq, command, &mut plain_events);
        assert_eq!(events, plain_events, "command {seq} ran differently");
        if under_way.is_none() && seq >= next_begin {
            rounds_count += 1;
            next_begin = seq + 9_973;
            under_way = Some(Expected {
                seq,
                round: rounds_count,
                bytes: engine.encode_state(),
                hash: engine.state_hash(),
            });
            engine.begin_snapshot();
            assert!(!engine.snapshot_can_begin());
            continue;
        }
        let Some(expected) = &under_way else {
            continue;
        };
        // Every third snapshot is copied only by the engine's writes for a while.
        let round = expected.round;
        if round % 3 == 0 && seq < expected.seq + 20_000 {
            continue;
        }
        let budget = budgets[(seq as usize / 7 + round as usize) % budgets.len()];
        if let Some(frozen) = engine.snapshot_step(budget) {
            assert_eq!(
                frozen.state_hash(),
                expected.hash,
                "snapshot of {}",
                expected.seq
            );
            let bytes = frozen.encode();
            assert!(
                bytes == expected.bytes,
                "snapshot of {} differs",
                expected.seq
            );
            let restored = Engine::restore(mix_config(), &bytes).unwrap();
            assert_eq!(restored.state_hash(), expected.hash);
            assert!(!engine.snapshot_can_begin(), "lent out");
            engine.give_back_snapshot(frozen);
            assert!(engine.snapshot_can_begin());
            if round % 3 == 0 {
                written_a_while_first += 1;
            }
            snapshots_checked += 1;
            under_way = None;
        }
    }
    assert_eq!(engine.state_hash(), plain.state_hash());
    assert!(
        snapshots_checked >= 15 && written_a_while_first >= 5,
        "{snapshots_checked} snapshots checked, {written_a_while_first} begun with 20,000 commands of writes alone"
    );
}

#[test]
fn a_snapshot_of_an_idle_engine_is_copied_by_steps_alone() {
    let workload = exchange_core_mix(1_000, 3, MixShape::default());
    let mut engine = Engine::new(mix_config()).unwrap();
    let mut sink = CountingSink::default();
    for (index, command) in workload.warmup.iter().chain(&workload.commands).enumerate() {
        engine.apply(index as u64 + 1, command, &mut sink);
    }
    let expected = engine.encode_state();
    engine.begin_snapshot();
    let mut steps_count = 0;
    let frozen = loop {
        steps_count += 1;
        if let Some(frozen) = engine.snapshot_step(64 * 1024) {
            break frozen;
        }
    };
    // 100,000 order slots of 72 bytes alone are over 100 steps of 64 KiB.
    assert!(steps_count > 100, "{steps_count} steps");
    assert!(frozen.encode() == expected);
    // Nothing is under way after the copy: another step hands out nothing.
    assert!(engine.snapshot_step(usize::MAX).is_none());
    engine.give_back_snapshot(frozen);
    engine.begin_snapshot();
    let frozen = engine
        .snapshot_step(usize::MAX)
        .expect("one step copies it all");
    assert!(frozen.encode() == expected);
}
