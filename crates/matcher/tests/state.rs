//! The matcher state: restore checks its input, the L2 book can be rebuilt from level events
//! alone, and the state hash is a function of the state, not of the object's history.

use std::collections::BTreeMap;

use ringmatch_matcher::workload::{exchange_core_mix, mix_config, MixShape};
use ringmatch_matcher::{Engine, Event, InstrumentSpec, Limits, MatcherConfig, StateError};
use ringmatch_proto::Command;
use ringmatch_proto::{EventType, Side};

fn engine_after(commands_count: usize) -> (Engine, Vec<Event>) {
    let workload = exchange_core_mix(commands_count, 3, MixShape::default());
    let mut engine = Engine::new(mix_config()).unwrap();
    let mut events = Vec::new();
    for (index, command) in workload.warmup.iter().chain(&workload.commands).enumerate() {
        engine.apply(index as u64 + 1, command, &mut events);
    }
    (engine, events)
}

#[test]
fn level_events_alone_rebuild_the_l2_book() {
    let (engine, events) = engine_after(50_000);
    let mut bids = BTreeMap::new();
    let mut asks = BTreeMap::new();
    for event in events
        .iter()
        .filter(|event| event.event_type == EventType::Level)
    {
        let book = if event.side == Some(Side::Buy) {
            &mut bids
        } else {
            &mut asks
        };
        if event.qty == 0 {
            book.remove(&event.price);
        } else {
            book.insert(event.price, event.qty);
        }
    }
    let rebuilt_bids: Vec<(i64, u64)> = bids.iter().rev().map(|(p, q)| (*p, *q)).collect();
    let rebuilt_asks: Vec<(i64, u64)> = asks.iter().map(|(p, q)| (*p, *q)).collect();
    let depth = |side| -> Vec<(i64, u64)> {
        engine
            .depth(1, side, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(price, qty, _)| (price, qty))
            .collect()
    };
    assert!(
        rebuilt_bids.len() > 100 && rebuilt_asks.len() > 100,
        "the book is not trivial"
    );
    assert_eq!(rebuilt_bids, depth(Side::Buy));
    assert_eq!(rebuilt_asks, depth(Side::Sell));
}

#[test]
fn restored_state_re_encodes_to_the_same_bytes_and_hash() {
    let (engine, _) = engine_after(20_000);
    let bytes = engine.encode_state();
    let restored = Engine::restore(mix_config(), &bytes).unwrap();
    assert_eq!(restored.encode_state(), bytes);
    assert_eq!(restored.state_hash(), engine.state_hash());
    assert_eq!(
        restored.resting_orders_count(),
        engine.resting_orders_count()
    );
}

#[test]
fn restore_rejects_damaged_or_foreign_state_without_panicking() {
    let (engine, _) = engine_after(300);
    let bytes = engine.encode_state();

    assert!(matches!(
        Engine::restore(mix_config(), &bytes[..bytes.len() - 1]),
        Err(StateError::Truncated(_))
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        Engine::restore(mix_config(), &longer).err(),
        Some(StateError::TrailingBytes(1))
    );
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert_eq!(
        Engine::restore(mix_config(), &magic).err(),
        Some(StateError::BadMagic)
    );
    let mut version = bytes.clone();
    version[4] = 9;
    assert_eq!(
        Engine::restore(mix_config(), &version).err(),
        Some(StateError::Version(9))
    );

    let mut other_config = mix_config();
    other_config.instruments[0].max_qty = 500;
    assert!(matches!(
        Engine::restore(other_config, &bytes),
        Err(StateError::ConfigMismatch(_))
    ));
    let mut bad_config = mix_config();
    bad_config.instruments[0].tick_size = 0;
    assert!(matches!(
        Engine::restore(bad_config, &bytes),
        Err(StateError::Config(_))
    ));
    let mut small = mix_config();
    small.limits.orders_max = 10;
    small.limits.orders_per_book_max = 10;
    assert!(matches!(
        Engine::restore(small, &bytes),
        Err(StateError::OverLimit(_))
    ));

    // Every single-byte corruption of a small state either restores or is a typed error.
    let engine = small_engine();
    let bytes = engine.encode_state();
    let mut errors_count = 0;
    for offset in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[offset] ^= flip;
            if Engine::restore(small_config(), &damaged).is_err() {
                errors_count += 1;
            }
        }
    }
    assert!(
        errors_count > bytes.len(),
        "most corruptions are detected: {errors_count}"
    );
}

fn small_config() -> MatcherConfig {
    MatcherConfig {
        instruments: vec![InstrumentSpec {
            id: 1,
            symbol: "S".into(),
            tick_size: 1,
            lot_size: 1,
            min_price: 1,
            max_price: 200,
            max_qty: 100,
        }],
        limits: Limits {
            orders_per_book_max: 16,
            orders_max: 16,
            accounts_max: 4,
            instruments_max: 1,
        },
    }
}

/// A small state with bids, asks, a partial fill and client order ids.
fn small_engine() -> Engine {
    let mut engine = Engine::new(small_config()).unwrap();
    let mut events = Vec::new();
    let orders = [
        (Side::Buy, 90),
        (Side::Buy, 91),
        (Side::Sell, 95),
        (Side::Sell, 95),
        (Side::Buy, 95),
    ];
    for (index, (side, price)) in orders.into_iter().enumerate() {
        let mut command = Command::limit(1 + index as u32 % 3, 1, side, price, 3 + index as u64);
        command.client_order_id = index as u64 * 7;
        engine.apply(index as u64 + 1, &command, &mut events);
    }
    engine
}

/// A matcher state written by format version 1 is checked in; this build must write the same
/// bytes for the same state and read the file back. `UPDATE_FIXTURES=1` rewrites it, which
/// is only right together with a format version bump.
#[test]
fn the_checked_in_version_1_state_still_reads_and_matches() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/matcher-state-v1.bin");
    let engine = small_engine();
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, engine.encode_state()).unwrap();
    }
    let stored = std::fs::read(&path).unwrap();
    assert_eq!(&stored[..4], b"RMMS");
    assert_eq!(
        stored,
        engine.encode_state(),
        "the state layout changed: bump STATE_VERSION"
    );
    let restored = Engine::restore(small_config(), &stored).unwrap();
    assert_eq!(restored.state_hash(), engine.state_hash());
    assert_eq!(restored.resting_orders_count(), 3);
}
