//! Property tests: the fast engine and the naive reference book produce identical event
//! streams and identical states on random command streams over several instruments, every
//! order type (stops and their cascades included), cancels, replaces, mass cancels, halts,
//! self-trades, limit hits and possible resends (with a resend window small enough to forget); and an
//! engine restored from its encoded state mid-stream continues exactly as one never stopped.
//!
//! `PROPTEST_CASES` sets the number of streams (10,000 by default).

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestCaseError;
use ringmatch_matcher::{Engine, Event, InstrumentSpec, Limits, MatcherConfig, NaiveBook};
use ringmatch_proto::{Command, CommandType, OrderKind, SelfTradePrevention, Side, TimeInForce};

fn spec(
    id: u32,
    tick_size: i64,
    lot_size: u64,
    min_price: i64,
    max_price: i64,
    max_qty: u64,
) -> InstrumentSpec {
    InstrumentSpec {
        id,
        symbol: format!("I{id}"),
        tick_size,
        lot_size,
        min_price,
        max_price,
        max_qty,
        session_end_ns: None,
    }
}

/// Three instruments (one with coarse ticks and lots, one with negative prices) and limits
/// small enough that random streams hit every one of them; `roomy` streams (the stop-heavy
/// ones) get room for enough waiting stops to cascade.
fn config(roomy: bool) -> MatcherConfig {
    let mut config = MatcherConfig {
        instruments: vec![
            spec(1, 1, 1, 90, 110, 10),
            spec(2, 5, 10, 100, 200, 100),
            spec(7, 1, 1, -10, 10, 10),
        ],
        limits: Limits {
            orders_per_book_max: 6,
            orders_max: 9,
            accounts_max: 4,
            instruments_max: 3,
            resends_max: 6,
        },
    };
    // Instrument 1's session ends 120 ns into the day (the streams' clock starts at 1,000 ns):
    // its day orders placed before then expire then; the others take no day orders.
    config.instruments[0].session_end_ns = Some(1_120);
    if roomy {
        config.limits.orders_per_book_max = 16;
        config.limits.orders_max = 40;
    }
    config
}

/// Raw random fields of one command; `to_command` shapes them per instrument.
#[derive(Debug, Clone)]
struct Raw {
    command_type: CommandType,
    account: u32,
    instrument: u32,
    side: Side,
    kind: OrderKind,
    tif: TimeInForce,
    stp: SelfTradePrevention,
    post_only: bool,
    price_step: i64,
    off_tick: bool,
    qty_step: u64,
    order_id: u64,
    client_order_id: u64,
    has_price: bool,
    has_qty: bool,
    possible_resend: bool,
    stop_step: i64,
    has_stop_price: bool,
    display_step: u64,
    /// A GTD order's time to live, and how far a `time` command moves time on.
    time_step: u64,
    /// A place is an OCO (its stop leg at the stop price), with a stop-limit leg at the
    /// `oco_limit_step` price when `oco_stop_limit`.
    oco: bool,
    oco_stop_limit: bool,
    oco_limit_step: i64,
}

fn to_command(raw: &Raw, timestamp_ns: u64) -> Command {
    let mut command = Command::empty(raw.command_type);
    command.account = raw.account;
    command.instrument = raw.instrument;
    command.side = raw.side;
    command.kind = raw.kind;
    command.tif = raw.tif;
    command.stp = raw.stp;
    command.post_only = raw.post_only;
    command.order_id = raw.order_id;
    command.client_order_id = raw.client_order_id;
    command.has_price = raw.has_price;
    command.has_qty = raw.has_qty;
    // A possible resend's floor is `order_id`: 1..=40 lands around the streams' sequences.
    command.possible_resend = raw.possible_resend && raw.command_type == CommandType::Place;
    command.timestamp_ns = timestamp_ns;
    if raw.command_type == CommandType::Time {
        command.timestamp_ns = timestamp_ns + raw.time_step;
    }
    if raw.tif == TimeInForce::Gtd {
        // A time to live of 0 is an expiry that has already come.
        command.expire_time_ns = timestamp_ns + raw.time_step;
    }
    let off = i64::from(raw.off_tick);
    // Price steps 0..=24 straddle each band by a couple of ticks on both ends.
    let (price, qty) = match raw.instrument {
        2 => (
            90 + raw.price_step * 5 + off,
            raw.qty_step * 10 + u64::from(raw.off_tick) * 3,
        ),
        7 => (-12 + raw.price_step + off, raw.qty_step),
        _ => (88 + raw.price_step + off, raw.qty_step),
    };
    command.price = price;
    command.stop_price = match raw.instrument {
        2 => 90 + raw.stop_step * 5 + off,
        7 => -12 + raw.stop_step + off,
        _ => 88 + raw.stop_step + off,
    };
    command.has_stop_price = raw.has_stop_price && raw.command_type == CommandType::Replace;
    if raw.oco && raw.command_type == CommandType::Place {
        // Mostly limit orders, as an OCO must be; a market one is refused.
        if raw.kind != OrderKind::Market {
            command.kind = OrderKind::Limit;
        }
        command.oco = true;
        // Around the middle of the band, where most trades print: limit price on one side,
        // stop price on the other, as an OCO needs them.
        let (mid, tick) = match raw.instrument {
            2 => (150, 5),
            7 => (0, 1),
            _ => (100, 1),
        };
        let (below, above) = (1 + raw.price_step % 5, 1 + raw.stop_step % 5);
        let direction = if raw.side == Side::Buy { 1 } else { -1 };
        command.price = mid - direction * below * tick + off;
        command.stop_price = mid + direction * above * tick + off;
        command.oco_stop_limit = raw.oco_stop_limit;
        if raw.oco_stop_limit {
            command.oco_stop_limit_price = match raw.instrument {
                2 => 90 + raw.oco_limit_step * 5,
                7 => -12 + raw.oco_limit_step,
                _ => 88 + raw.oco_limit_step,
            };
        }
    }
    if raw.command_type == CommandType::Place {
        // Lots of 10 on instrument 2: an off-tick draw there is also off the lot.
        command.display_qty = match raw.instrument {
            2 => raw.display_step * 10 + u64::from(raw.off_tick) * 3,
            _ => raw.display_step,
        };
    }
    // Replaces ask for small totals, so some fall to or below the filled quantity.
    command.qty = if raw.command_type == CommandType::Replace {
        qty / 3
    } else {
        qty
    };
    if matches!(
        raw.command_type,
        CommandType::MassCancel | CommandType::OpenOrders
    ) && raw.off_tick
    {
        command.instrument = 0;
    }
    command
}

/// One random command; `stop_heavy` streams are mostly places on one instrument, many of
/// them stops near the middle of its band, so that stops pile up, trigger and cascade.
fn raw_command(stop_heavy: bool) -> impl Strategy<Value = Raw> {
    let heavy = u32::from(stop_heavy);
    let command_type = prop_oneof![
        8 + 16 * heavy => Just(CommandType::Place),
        2 => Just(CommandType::Cancel),
        4 => Just(CommandType::Replace),
        1 => Just(CommandType::MassCancel),
        1 => Just(CommandType::OpenOrders),
        1 => Just(CommandType::Halt),
        2 => Just(CommandType::Resume),
        1 => Just(CommandType::Time),
    ];
    let instrument = prop_oneof![
        4 + 36 * heavy => Just(1u32),
        3 => Just(2u32),
        2 => Just(7u32),
        1 => Just(3u32)
    ];
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    let kind = prop_oneof![
        8 - 2 * heavy => Just(OrderKind::Limit),
        1 + heavy => Just(OrderKind::Market),
        1 + heavy => Just(OrderKind::StopMarket),
        1 + 3 * heavy => Just(OrderKind::StopLimit),
    ];
    let tif = prop_oneof![
        6 => Just(TimeInForce::Gtc),
        2 => Just(TimeInForce::Ioc),
        2 => Just(TimeInForce::Fok),
        1 => Just(TimeInForce::Gtd),
        1 => Just(TimeInForce::Day),
    ];
    let stp = prop_oneof![
        Just(SelfTradePrevention::None),
        Just(SelfTradePrevention::CancelTaker),
        Just(SelfTradePrevention::CancelMaker),
        Just(SelfTradePrevention::CancelBoth),
    ];
    (
        (command_type, 1u32..=5, instrument, side, kind, tif, stp),
        (
            prop::bool::weighted(0.15),
            0i64..=24,
            prop::bool::weighted(0.1),
            0u64..=12,
            prop_oneof![1 => Just(0u64), 6 => 1u64..=40],
            prop_oneof![3 => Just(0u64), 2 => 1u64..=4],
            prop::bool::weighted(0.7),
            prop::bool::weighted(0.5),
            prop::bool::weighted(0.1),
        ),
        (
            if stop_heavy { 8i64..=16 } else { 0i64..=24 },
            prop::bool::weighted(0.3),
            prop_oneof![5 => Just(0u64), 2 => 1u64..=4],
            prop_oneof![1 => Just(0u64), 4 => 1u64..=150],
        ),
        (
            prop::bool::weighted(if stop_heavy { 0.1 } else { 0.12 }),
            prop::bool::weighted(0.5),
            0i64..=24,
        ),
    )
        .prop_map(
            |(
                (command_type, account, instrument, side, kind, tif, stp),
                (
                    post_only,
                    price_step,
                    off_tick,
                    qty_step,
                    order_id,
                    client_order_id,
                    has_price,
                    has_qty,
                    possible_resend,
                ),
                (stop_step, has_stop_price, display_step, time_step),
                (oco, oco_stop_limit, oco_limit_step),
            )| Raw {
                command_type,
                account,
                instrument,
                side,
                kind,
                tif,
                stp,
                post_only,
                price_step,
                off_tick,
                qty_step,
                order_id,
                client_order_id,
                has_price,
                has_qty,
                possible_resend,
                stop_step,
                has_stop_price,
                display_step,
                time_step,
                oco,
                oco_stop_limit,
                oco_limit_step,
            },
        )
}

/// A random stream: whether it is stop-heavy, its commands, and where to split it.
fn stream() -> impl Strategy<Value = (bool, Vec<Raw>, prop::sample::Index)> {
    let of = |stop_heavy: bool| {
        (
            Just(stop_heavy),
            prop::collection::vec(raw_command(stop_heavy), 1..240),
            any::<prop::sample::Index>(),
        )
    };
    prop_oneof![5 => of(false), 1 => of(true)]
}

fn events_of<F: FnMut(u64, &Command, &mut Vec<Event>)>(
    commands: &[Command],
    first_seq: u64,
    mut apply: F,
) -> Vec<Event> {
    let mut events = Vec::new();
    for (index, command) in commands.iter().enumerate() {
        apply(first_seq + index as u64, command, &mut events);
    }
    events
}

fn check_stream(
    stop_heavy: bool,
    raws: &[Raw],
    split: prop::sample::Index,
) -> Result<(), TestCaseError> {
    let config = || config(stop_heavy);
    let commands: Vec<Command> = raws
        .iter()
        .enumerate()
        .map(|(index, raw)| to_command(raw, 1_000 + index as u64))
        .collect();

    let mut fast = Engine::new(config()).unwrap();
    let mut naive = NaiveBook::new(config()).unwrap();
    let fast_events = events_of(&commands, 1, |seq, command, out| {
        fast.apply(seq, command, out)
    });
    let naive_events = events_of(&commands, 1, |seq, command, out| {
        naive.apply(seq, command, out)
    });
    for (index, (a, b)) in fast_events.iter().zip(&naive_events).enumerate() {
        prop_assert_eq!(a, b, "event {} differs", index);
    }
    prop_assert_eq!(fast_events.len(), naive_events.len());
    prop_assert_eq!(fast.encode_state(), naive.encode_state());
    prop_assert_eq!(fast.state_hash(), naive.state_hash());

    // Stop after `split` commands, encode, restore, and run the rest.
    let split = split.index(commands.len() + 1);
    let mut first = Engine::new(config()).unwrap();
    let mut resumed_events = events_of(&commands[..split], 1, |seq, command, out| {
        first.apply(seq, command, out)
    });
    let at_split = first.encode_state();
    let mut restored = Engine::restore(config(), &at_split).unwrap();
    prop_assert_eq!(restored.state_hash(), first.state_hash());
    resumed_events.extend(events_of(
        &commands[split..],
        split as u64 + 1,
        |seq, command, out| restored.apply(seq, command, out),
    ));
    prop_assert_eq!(&resumed_events, &fast_events);
    prop_assert_eq!(restored.state_hash(), fast.state_hash());

    // A snapshot begun at the split and copied while the rest runs (a page at a time, or by
    // the writes themselves) is the state at the split, and the engine runs on unchanged.
    first.begin_snapshot();
    let mut frozen = None;
    let continued_events = events_of(&commands[split..], split as u64 + 1, |seq, command, out| {
        first.apply(seq, command, out);
        if seq % 3 == 0 && frozen.is_none() {
            frozen = first.snapshot_step(0);
        }
    });
    // Each step copies one page at least: a few more finish the copy.
    let frozen = frozen.unwrap_or_else(|| loop {
        if let Some(frozen) = first.snapshot_step(0) {
            break frozen;
        }
    });
    prop_assert_eq!(frozen.encode(), at_split);
    prop_assert_eq!(
        &continued_events[..],
        &fast_events[split_events_count(&fast_events, split)..]
    );
    prop_assert_eq!(first.state_hash(), fast.state_hash());
    first.give_back_snapshot(frozen);
    prop_assert!(first.snapshot_can_begin());
    Ok(())
}

/// How many of `events` belong to the first `split` commands (sequences 1..=split).
fn split_events_count(events: &[Event], split: usize) -> usize {
    events
        .iter()
        .take_while(|event| event.seq <= split as u64)
        .count()
}

#[test]
fn fast_and_naive_agree_and_restore_continues_exactly() {
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(10_000);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let checked = std::cell::Cell::new(0u32);
    let result = runner.run(&stream(), |(stop_heavy, raws, split)| {
        checked.set(checked.get() + 1);
        check_stream(stop_heavy, &raws, split)
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    eprintln!("{} random command streams checked", checked.get());
    assert!(checked.get() >= cases);
}

#[test]
fn random_streams_hit_every_kind_of_outcome() {
    // Guards the generator above: if it stopped producing some outcome, the property test
    // would silently stop covering it.
    use ringmatch_proto::{EventType, Reason, RejectReason};
    use std::collections::HashSet;

    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = stream();
    let mut event_types = HashSet::new();
    let mut reasons = HashSet::new();
    // Stop and iceberg outcomes that no single event type or reason names.
    let mut stop_outcomes = HashSet::new();
    let mut display_of = std::collections::HashMap::new();
    for _ in 0..4_000 {
        let (stop_heavy, raws, _) = strategy.new_tree(&mut runner).unwrap().current();
        let mut engine = Engine::new(config(stop_heavy)).unwrap();
        for (index, raw) in raws.iter().enumerate() {
            let mut events = Vec::new();
            let command = to_command(raw, 1_000 + index as u64);
            engine.apply(index as u64 + 1, &command, &mut events);
            let triggered: Vec<&Event> = events
                .iter()
                .filter(|event| event.event_type == EventType::Triggered)
                .collect();
            if triggered.len() >= 2 {
                stop_outcomes.insert("several stops triggered by one command");
            }
            if triggered.iter().any(|event| event.side == Some(Side::Buy))
                && triggered.iter().any(|event| event.side == Some(Side::Sell))
            {
                stop_outcomes.insert("buy and sell stops triggered by one command");
            }
            // A fill whose taker is a triggered stop that itself triggers another: a cascade.
            for (position, event) in events.iter().enumerate() {
                let later_trigger = events[position..]
                    .iter()
                    .skip(1)
                    .any(|later| later.event_type == EventType::Triggered);
                if event.event_type == EventType::Fill
                    && triggered.iter().any(|t| t.order_id == event.order_id)
                    && later_trigger
                {
                    stop_outcomes.insert("a triggered stop's fills trigger another");
                }
            }
            // Icebergs: one that traded more than its displayed quantity in one command (its
            // next slice was shown), and one whose hidden rest traded only after another
            // order at the same price.
            let mut traded_by_maker = std::collections::HashMap::new();
            for (position, event) in events.iter().enumerate() {
                if event.event_type == EventType::Accepted && event.display_qty != 0 {
                    display_of.insert(event.order_id, event.display_qty);
                }
                if event.event_type != EventType::Fill {
                    continue;
                }
                let Some(&display_qty) = display_of.get(&event.maker_order_id) else {
                    continue;
                };
                let traded = traded_by_maker.entry(event.maker_order_id).or_insert(0);
                *traded += event.qty;
                if *traded > display_qty {
                    stop_outcomes.insert("an iceberg showed its next slice");
                    let between = events[..position].iter().rev().take_while(|earlier| {
                        !(earlier.event_type == EventType::Fill
                            && earlier.maker_order_id == event.maker_order_id)
                    });
                    if between.into_iter().any(|earlier| {
                        earlier.event_type == EventType::Fill && earlier.price == event.price
                    }) {
                        stop_outcomes.insert("an order shown traded before an iceberg's rest");
                    }
                }
            }
            // OCOs: what made one leg take the other (the latest earlier event of the leg).
            let oco_cancel = Reason::Cancel(ringmatch_proto::CancelReason::Oco);
            for (position, event) in events.iter().enumerate() {
                if event.reason != oco_cancel {
                    continue;
                }
                let leg = event.oco_leg.expect("an OCO cancel names its leg");
                let partner = leg.partner_of(event.order_id);
                let cause = events[..position].iter().rev().find(|earlier| {
                    earlier.order_id == partner
                        || earlier.event_type == EventType::Fill
                            && earlier.maker_order_id == partner
                });
                let expired = Reason::Cancel(ringmatch_proto::CancelReason::Expired);
                stop_outcomes.insert(match cause {
                    Some(c) if c.event_type == EventType::Triggered => {
                        "an OCO's stop leg triggered and took the limit leg"
                    }
                    Some(c) if c.event_type == EventType::Fill && c.order_id == partner => {
                        "an OCO's limit leg traded on arrival and took the stop leg"
                    }
                    Some(c) if c.event_type == EventType::Fill => {
                        "an OCO's resting limit leg traded and took the stop leg"
                    }
                    Some(c) if c.command_type == CommandType::Cancel => {
                        "an OCO leg cancelled by its owner took the other"
                    }
                    Some(c) if c.reason == expired => "an OCO leg expired and took the other",
                    Some(c)
                        if c.reason == Reason::Cancel(ringmatch_proto::CancelReason::SelfTrade) =>
                    {
                        "an OCO leg cancelled by self-trade prevention took the other"
                    }
                    _ => "another OCO cancel",
                });
            }
            for event in &events {
                if event.reason == Reason::Cancel(ringmatch_proto::CancelReason::Expired) {
                    stop_outcomes.insert(match (event.command_type, event.stop_kind) {
                        (_, Some(_)) => "a waiting stop expired",
                        (CommandType::Time, None) => "an order expired at a time command",
                        _ => "an order expired at another command",
                    });
                }
                event_types.insert(event.event_type);
                reasons.insert(event.reason);
                if event.stop_kind.is_some() {
                    stop_outcomes.insert(match event.event_type {
                        EventType::Accepted => "a stop accepted",
                        EventType::Replaced => "a waiting stop replaced",
                        EventType::Cancelled => "a waiting stop cancelled",
                        EventType::OrderStatus => "a waiting stop listed",
                        EventType::Resent => "a waiting stop resent",
                        _ => "other",
                    });
                }
                if event.event_type == EventType::Level
                    && triggered.iter().any(|t| {
                        t.side == event.side && t.price == event.price && t.index < event.index
                    })
                {
                    stop_outcomes.insert("a triggered stop-limit rests");
                }
            }
        }
    }
    let mut missing = Vec::new();
    for outcome in [
        "several stops triggered by one command",
        "buy and sell stops triggered by one command",
        "a triggered stop's fills trigger another",
        "a stop accepted",
        "a waiting stop replaced",
        "a waiting stop cancelled",
        "a waiting stop listed",
        "a waiting stop resent",
        "a triggered stop-limit rests",
        "an iceberg showed its next slice",
        "a waiting stop expired",
        "an order expired at a time command",
        "an order expired at another command",
        "an order shown traded before an iceberg's rest",
        "an OCO leg cancelled by its owner took the other",
        "an OCO's stop leg triggered and took the limit leg",
        "an OCO's limit leg traded on arrival and took the stop leg",
        "an OCO's resting limit leg traded and took the stop leg",
        "an OCO leg expired and took the other",
        "an OCO leg cancelled by self-trade prevention took the other",
    ] {
        if !stop_outcomes.contains(outcome) {
            missing.push(outcome.to_string());
        }
    }
    for event_type in EventType::ALL {
        if !event_types.contains(event_type) {
            missing.push(format!("{event_type} event"));
        }
    }
    for reason in RejectReason::ALL {
        if !reasons.contains(&Reason::Reject(*reason)) {
            missing.push(format!("rejection {reason}"));
        }
    }
    for reason in ringmatch_proto::CancelReason::ALL {
        if !reasons.contains(&Reason::Cancel(*reason)) {
            missing.push(format!("cancel {reason}"));
        }
    }
    assert!(missing.is_empty(), "never produced: {missing:?}");
}
