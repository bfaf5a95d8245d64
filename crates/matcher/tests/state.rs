//! The matcher state: restore checks its input, the L2 book can be rebuilt from level events
//! alone, and the state hash is a function of the state, not of the object's history.

use std::collections::BTreeMap;

use ringmatch_matcher::workload::{exchange_core_mix, mix_config, MixShape};
use ringmatch_matcher::{Engine, Event, InstrumentSpec, Limits, MatcherConfig, StateError};
use ringmatch_proto::{CancelReason, EventType, OcoLeg, Reason, Side};
use ringmatch_proto::{Command, OrderKind, TimeInForce};

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
    let engine = small_engine_with_stops();
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
            session_end_ns: Some(3_600_000_000_000),
        }],
        limits: Limits {
            orders_per_book_max: 16,
            orders_max: 16,
            accounts_max: 4,
            instruments_max: 1,
            resends_max: 4,
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

/// The small state after a trade at 95, with waiting stops on both sides: a buy stop-limit
/// and a buy stop-market above the last trade, a sell stop-market below it.
fn small_engine_with_stops() -> Engine {
    let mut engine = small_engine();
    let mut events = Vec::new();
    let mut buy_stop = Command::limit(1, 1, Side::Buy, 99, 4);
    buy_stop.kind = OrderKind::StopLimit;
    buy_stop.stop_price = 97;
    buy_stop.client_order_id = 70;
    let mut buy_stop_market = Command::limit(2, 1, Side::Buy, 0, 2);
    buy_stop_market.kind = OrderKind::StopMarket;
    buy_stop_market.tif = TimeInForce::Ioc;
    buy_stop_market.stop_price = 97;
    let mut sell_stop = buy_stop_market;
    sell_stop.side = Side::Sell;
    sell_stop.stop_price = 93;
    for (seq, command) in (6..).zip([buy_stop, buy_stop_market, sell_stop]) {
        engine.apply(seq, &command, &mut events);
    }
    assert_eq!(
        events
            .iter()
            .filter(|event| event.event_type == EventType::Accepted)
            .count(),
        3
    );
    engine
}

/// [`small_engine_with_stops`] and an iceberg: a sell of 9 at 96 showing 3, of which a buy
/// took 4 after the ask at 95 (its first slice and one of the next: 2 shown, 3 hidden).
fn small_engine_with_icebergs() -> Engine {
    let mut engine = small_engine_with_stops();
    let mut iceberg = Command::limit(3, 1, Side::Sell, 96, 9);
    iceberg.display_qty = 3;
    iceberg.client_order_id = 90;
    let mut events = Vec::new();
    engine.apply(9, &iceberg, &mut events);
    engine.apply(10, &Command::limit(2, 1, Side::Buy, 96, 8), &mut events);
    assert_eq!(
        events
            .iter()
            .filter(|event| event.event_type == EventType::Fill)
            .map(|event| (event.price, event.qty))
            .collect::<Vec<_>>(),
        [(95, 4), (96, 3), (96, 1)]
    );
    engine
}

/// The small engine's state as this build writes it, but with no last trade price (as a
/// state from before version 3 restores) and, when `window` is false, no resend window.
fn small_state_before_stops(window: bool) -> Vec<u8> {
    let mut expected = small_engine().encode_state();
    // The window is four entries of 50 bytes after its 8 + 4 byte header; before it, the
    // book's stop section: the last trade (1 + 8 bytes) and two empty stop sides.
    let window_at = expected.len() - (8 + 4 + 4 * 50);
    let last_trade_at = window_at - (1 + 8 + 4 + 4);
    expected[last_trade_at..last_trade_at + 9].fill(0);
    if !window {
        expected.truncate(window_at);
        expected.extend_from_slice(&[0; 12]);
    }
    expected
}

/// A matcher state written by format version 1 is checked in: this build still reads it, with
/// the same books, and an empty resend window that (restored at a snapshot's sequence)
/// counts every earlier place as forgotten.
#[test]
fn the_checked_in_version_1_state_still_reads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/matcher-state-v1.bin");
    let stored = std::fs::read(&path).unwrap();
    assert_eq!(&stored[..8], b"RMMS\x01\x00\x00\x00");
    let restored = Engine::restore(small_config(), &stored).unwrap();
    assert_eq!(restored.resting_orders_count(), 3);
    // The same books as this build's, without a last trade price or a window.
    assert_eq!(restored.encode_state(), small_state_before_stops(false));

    // Restored at sequence 5, a resend whose floor is below 5 cannot be told from a new order.
    let mut at_5 = Engine::restore_at(small_config(), &stored, 5).unwrap();
    let mut resend = Command::limit(1, 1, Side::Buy, 90, 3).as_resend(4);
    resend.client_order_id = 99;
    let mut events = Vec::new();
    at_5.apply(6, &resend, &mut events);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].reason,
        ringmatch_proto::Reason::Reject(ringmatch_proto::RejectReason::ResendUnknown)
    );
    // A floor of 5 rules out everything the old state may have taken: placed.
    let mut events = Vec::new();
    at_5.apply(7, &resend.as_resend(5), &mut events);
    assert_eq!(events[0].event_type, ringmatch_proto::EventType::Accepted);
}

/// A matcher state written by format version 2 (with the resend window, before stops) is
/// checked in: this build reads it as the same books and window, with no last trade price.
#[test]
fn the_checked_in_version_2_state_still_reads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/matcher-state-v2.bin");
    let stored = std::fs::read(&path).unwrap();
    assert_eq!(&stored[..8], b"RMMS\x02\x00\x00\x00");
    let restored = Engine::restore(small_config(), &stored).unwrap();
    assert_eq!(restored.resting_orders_count(), 3);
    assert_eq!(restored.encode_state(), small_state_before_stops(true));
}

/// A matcher state written by format version 3 (with stops, before icebergs) is checked in:
/// this build reads it as the same state.
#[test]
fn the_checked_in_version_3_state_still_reads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/matcher-state-v3.bin");
    let stored = std::fs::read(&path).unwrap();
    assert_eq!(&stored[..8], b"RMMS\x03\x00\x00\x00");
    let restored = Engine::restore(small_config(), &stored).unwrap();
    let engine = small_engine_with_stops();
    assert_eq!(restored.resting_orders_count(), 6);
    assert_eq!(restored.encode_state(), engine.encode_state());
    assert_eq!(restored.state_hash(), engine.state_hash());
}

/// A matcher state written by format version 4 (with icebergs, before expiries) is checked
/// in: this build reads it as the same state.
#[test]
fn the_checked_in_version_4_state_still_reads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/matcher-state-v4.bin");
    let stored = std::fs::read(&path).unwrap();
    assert_eq!(&stored[..8], b"RMMS\x04\x00\x00\x00");
    let restored = Engine::restore(small_config(), &stored).unwrap();
    let engine = small_engine_with_icebergs();
    assert_eq!(restored.resting_orders_count(), 6);
    assert_eq!(restored.encode_state(), engine.encode_state());
}

/// [`small_engine_with_icebergs`] at time 1,000 (a `time` command) with a GTD bid of 2 at 90
/// that expires at 5,000 and a buy stop-limit good for the day (the session ends at 3,600
/// seconds).
fn small_engine_with_expiries() -> Engine {
    let mut engine = small_engine_with_icebergs();
    let mut events = Vec::new();
    let mut time = Command::empty(ringmatch_proto::CommandType::Time);
    time.timestamp_ns = 1_000;
    engine.apply(11, &time, &mut events);
    let mut gtd = Command::limit(1, 1, Side::Buy, 90, 2);
    gtd.tif = TimeInForce::Gtd;
    gtd.expire_time_ns = 5_000;
    gtd.timestamp_ns = 1_000;
    let mut day_stop = Command::limit(2, 1, Side::Buy, 99, 1);
    day_stop.kind = OrderKind::StopLimit;
    day_stop.stop_price = 98;
    day_stop.tif = TimeInForce::Day;
    day_stop.timestamp_ns = 1_000;
    engine.apply(12, &gtd, &mut events);
    engine.apply(13, &day_stop, &mut events);
    assert_eq!(
        events
            .iter()
            .filter(|event| event.event_type == EventType::Accepted)
            .count(),
        2,
        "{events:?}"
    );
    engine
}

/// A matcher state written by format version 5 (with the engine's time and expiries, before
/// OCOs) is checked in: this build reads it as the same state.
#[test]
fn the_checked_in_version_5_state_still_reads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/matcher-state-v5.bin");
    let stored = std::fs::read(&path).unwrap();
    assert_eq!(&stored[..8], b"RMMS\x05\x00\x00\x00");
    let restored = Engine::restore(small_config(), &stored).unwrap();
    let engine = small_engine_with_expiries();
    assert_eq!(restored.resting_orders_count(), 8);
    assert_eq!(restored.encode_state(), engine.encode_state());
}

/// [`small_engine_with_expiries`] with a sell OCO of 2 (last trade 96): a limit leg at 98
/// (order 13) and a stop-limit leg at stop 93, limit 92 (order 14), good for the day.
fn small_engine_with_oco() -> Engine {
    let mut engine = small_engine_with_expiries();
    let mut oco = Command::limit(1, 1, Side::Sell, 98, 2);
    oco.oco = true;
    oco.stop_price = 93;
    oco.oco_stop_limit = true;
    oco.oco_stop_limit_price = 92;
    oco.tif = TimeInForce::Day;
    oco.client_order_id = 130;
    oco.timestamp_ns = 1_000;
    let mut events = Vec::new();
    engine.apply(14, &oco, &mut events);
    assert_eq!(
        events
            .iter()
            .map(|event| (event.event_type, event.order_id, event.oco_leg))
            .collect::<Vec<_>>(),
        [
            (EventType::Accepted, 13, Some(OcoLeg::Limit)),
            (EventType::Accepted, 14, Some(OcoLeg::Stop)),
            (EventType::Level, 0, None),
        ]
    );
    engine
}

/// The current layout (version 6, with OCO legs) is checked in too; this build must write
/// the same bytes for the same state and read the file back. `UPDATE_FIXTURES=1` rewrites
/// it, which is only right together with a format version bump.
#[test]
fn the_checked_in_version_6_state_still_reads_and_matches() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/matcher-state-v6.bin");
    let engine = small_engine_with_oco();
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, engine.encode_state()).unwrap();
    }
    let stored = std::fs::read(&path).unwrap();
    assert_eq!(&stored[..8], b"RMMS\x06\x00\x00\x00");
    assert_eq!(
        stored,
        engine.encode_state(),
        "the state layout changed: bump STATE_VERSION"
    );
    let restored = Engine::restore(small_config(), &stored).unwrap();
    assert_eq!(restored.state_hash(), engine.state_hash());
    assert_eq!(restored.resting_orders_count(), 10);
    assert_eq!(restored.encode_state(), stored);
}

/// A restored OCO acts like the original: a trade at 93 triggers the stop leg, which takes
/// the limit leg with it.
#[test]
fn a_restored_oco_triggers_like_the_original() {
    let mut original = small_engine_with_oco();
    let mut restored = Engine::restore(small_config(), &original.encode_state()).unwrap();
    let mut bid = Command::limit(2, 1, Side::Buy, 93, 2);
    bid.timestamp_ns = 1_001;
    let sell = Command {
        side: Side::Sell,
        account: 3,
        ..bid
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (seq, command) in (15..).zip([bid, sell]) {
        original.apply(seq, &command, &mut a);
        restored.apply(seq, &command, &mut b);
    }
    assert_eq!(a, b);
    let oco_cancels: Vec<u64> = a
        .iter()
        .filter(|event| event.reason == Reason::Cancel(CancelReason::Oco))
        .map(|event| event.order_id)
        .collect();
    assert_eq!(oco_cancels, [13], "{a:#?}");
    assert_eq!(restored.encode_state(), original.encode_state());
}

/// An OCO leg whose other leg is missing or not its other leg is refused.
#[test]
fn a_broken_oco_pair_is_refused() {
    let bytes = small_engine_with_oco().encode_state();
    // The limit leg's record: order id 13, client order id 130; its OCO byte is the last of
    // its 63 bytes.
    let mut marker = 13u64.to_le_bytes().to_vec();
    marker.extend_from_slice(&130u64.to_le_bytes());
    let at = bytes
        .windows(marker.len())
        .position(|window| window == marker.as_slice())
        .expect("the limit leg is in the state");
    assert_eq!(bytes[at + 62], 1, "the limit leg's OCO byte");
    for (code, error) in [
        (0u8, "unpaired stop leg"),
        (2, "two stop legs"),
        (7, "no leg"),
    ] {
        let mut damaged = bytes.clone();
        damaged[at + 62] = code;
        assert!(
            matches!(
                Engine::restore(small_config(), &damaged),
                Err(StateError::Invalid(_))
            ),
            "{error}"
        );
    }
}

/// Restored expiries come when the original's do: at time 5,000 the GTD bid goes, and at the
/// session end the day stop.
#[test]
fn restored_expiries_come_like_the_originals() {
    let mut original = small_engine_with_expiries();
    let mut restored = Engine::restore(small_config(), &original.encode_state()).unwrap();
    let mut expired = Vec::new();
    for (seq, timestamp_ns) in (14..).zip([4_999, 5_000, 3_600_000_000_000]) {
        let mut time = Command::empty(ringmatch_proto::CommandType::Time);
        time.timestamp_ns = timestamp_ns;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        original.apply(seq, &time, &mut a);
        restored.apply(seq, &time, &mut b);
        assert_eq!(a, b);
        expired.push(
            a.iter()
                .filter(|event| event.event_type == EventType::Cancelled)
                .map(|event| event.stop_kind.is_some())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(expired, [vec![], vec![false], vec![true]]);
    assert_eq!(restored.encode_state(), original.encode_state());
}

/// A restored iceberg shows and refreshes its slices as the original's does: a buy of 4 at
/// 96 takes its 2 shown, then 2 of its next (and last) slice of 3.
#[test]
fn a_restored_iceberg_trades_like_the_original() {
    let mut original = small_engine_with_icebergs();
    let mut restored = Engine::restore(small_config(), &original.encode_state()).unwrap();
    let buy = Command::limit(1, 1, Side::Buy, 96, 4);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    original.apply(11, &buy, &mut a);
    restored.apply(11, &buy, &mut b);
    assert_eq!(a, b);
    let fills: Vec<u64> = a
        .iter()
        .filter(|event| event.event_type == EventType::Fill)
        .map(|event| event.qty)
        .collect();
    assert_eq!(fills, [2, 2]);
    assert_eq!(restored.encode_state(), original.encode_state());
    assert_eq!(original.depth(1, Side::Sell, 1).unwrap(), [(96, 1, 1)]);
}

/// Restored stops trigger exactly as the original's: a buy that takes the ask at 95 and one
/// at 97 reaches both buy stops, which buy at 98.
#[test]
fn restored_stops_trigger_like_the_originals() {
    let mut original = small_engine_with_stops();
    let mut restored = Engine::restore(small_config(), &original.encode_state()).unwrap();
    let mut events = (Vec::new(), Vec::new());
    for (seq, command) in (9..).zip([
        Command::limit(3, 1, Side::Sell, 97, 1),
        Command::limit(3, 1, Side::Sell, 98, 9),
        Command::limit(2, 1, Side::Buy, 97, 5),
    ]) {
        original.apply(seq, &command, &mut events.0);
        restored.apply(seq, &command, &mut events.1);
    }
    assert_eq!(events.0, events.1);
    let triggered = events
        .0
        .iter()
        .filter(|event| event.event_type == EventType::Triggered)
        .count();
    assert_eq!(triggered, 2);
    assert_eq!(restored.encode_state(), original.encode_state());
}

/// A stop section that breaks an invariant is refused: a buy stop at or below the last trade
/// price would already have triggered.
#[test]
fn a_stop_on_the_wrong_side_of_the_last_trade_is_refused() {
    let engine = small_engine_with_stops();
    let bytes = engine.encode_state();
    let window_at = bytes.len() - (8 + 4 + 4 * 50);
    // Find the last trade price (95) after the book's levels: flag 1, then 95.
    let mut marker = vec![1u8];
    marker.extend_from_slice(&95i64.to_le_bytes());
    let at = bytes[..window_at]
        .windows(marker.len())
        .rposition(|window| window == marker.as_slice())
        .expect("the last trade price is in the state");
    let mut higher = bytes.clone();
    higher[at + 1..at + 9].copy_from_slice(&97i64.to_le_bytes());
    assert!(matches!(
        Engine::restore(small_config(), &higher),
        Err(StateError::Invalid(_))
    ));
    let mut never_traded = bytes;
    never_traded[at] = 0;
    assert!(matches!(
        Engine::restore(small_config(), &never_traded),
        Err(StateError::Invalid(_))
    ));
}

/// The window in the state: five places with client order ids 0, 7, 14, 21, 28 leave four
/// remembered (resends_max = 4; id 0 is never remembered), and a restore answers resends as
/// the original engine does, including after it forgets more.
#[test]
fn a_restored_resend_window_answers_like_the_original() {
    let mut original = small_engine();
    let mut restored = Engine::restore(small_config(), &original.encode_state()).unwrap();
    for (seq, client_order_id) in (6..).zip([7, 14, 21, 28, 3, 4, 7, 14]) {
        let mut resend = Command::limit(1 + client_order_id as u32 % 3, 1, Side::Buy, 90, 3);
        resend.client_order_id = client_order_id;
        let resend = resend.as_resend(0);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        original.apply(seq, &resend, &mut a);
        restored.apply(seq, &resend, &mut b);
        assert_eq!(a, b, "resend of client order id {client_order_id}");
    }
    assert_eq!(restored.encode_state(), original.encode_state());
}

/// A window entry that breaks an invariant is refused.
#[test]
fn a_broken_resend_window_is_refused() {
    let bytes = small_engine().encode_state();
    // The last entry's rejected-reason byte is its last byte: an unknown code.
    let mut bad_reason = bytes.clone();
    *bad_reason.last_mut().unwrap() = 0xee;
    assert!(matches!(
        Engine::restore(small_config(), &bad_reason),
        Err(StateError::Invalid(_))
    ));
    // A window count beyond the bytes: truncated.
    let mut entries_count_at = bytes.len() - 4 * 50 - 4;
    let mut too_many = bytes.clone();
    too_many[entries_count_at] = 9;
    assert!(matches!(
        Engine::restore(small_config(), &too_many),
        Err(StateError::Truncated(_))
    ));
    // The first entry's sequence at or below what the window forgot.
    entries_count_at += 4;
    let mut out_of_order = bytes;
    out_of_order[entries_count_at..entries_count_at + 8].copy_from_slice(&0u64.to_le_bytes());
    assert!(matches!(
        Engine::restore(small_config(), &out_of_order),
        Err(StateError::Invalid(_))
    ));
}
