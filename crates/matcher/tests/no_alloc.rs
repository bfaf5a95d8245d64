//! Proof that the matcher does not allocate while processing commands in steady state.
//!
//! A counting global allocator counts every allocation, reallocation and deallocation made by
//! the test thread while the counter is armed. After a warm-up, 1,200,000 mixed commands (the
//! exchange-core mix, with client order ids on every place, and market, FOK, IOC, post-only,
//! self-trade, stops, icebergs, GTD orders and the time commands that expire them, mass
//! cancel, halt/resume, possible resends and invalid commands spliced in) run
//! through the engine with the counter armed, while snapshots are begun, copied a page at a
//! time and given back: the count must be zero. A control check arms the counter around a
//! deliberate allocation, so the test cannot pass because the counter is broken.

// A global allocator is unsafe by nature; this is the only unsafe code in the matcher's tests.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use ringmatch_matcher::workload::{exchange_core_mix, mix_config, MixShape};
use ringmatch_matcher::{Engine, Event};
use ringmatch_proto::{Command, CommandType, OrderKind, SelfTradePrevention, Side, TimeInForce};

struct CountingAllocator;

static ALLOCATIONS_COUNT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Const-initialised, so reading it never allocates.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn count_if_armed() {
    if ARMED.with(Cell::get) {
        ALLOCATIONS_COUNT.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged; counting touches only an atomic and a const thread-local, never the heap.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_if_armed();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count_if_armed();
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_if_armed();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_if_armed();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `f` with the counter armed and returns how many heap operations it made.
fn heap_operations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS_COUNT.load(Ordering::Relaxed);
    ARMED.with(|armed| armed.set(true));
    f();
    ARMED.with(|armed| armed.set(false));
    ALLOCATIONS_COUNT.load(Ordering::Relaxed) - before
}

/// Every 23rd command is replaced by one of a rotating set of other command kinds, so the
/// stream covers every command type and many rejection paths, not just the exchange-core mix.
/// Every place carries a client order id, so the resend window fills and forgets.
fn spliced(index: usize, mut base: Command) -> Command {
    if base.command_type == CommandType::Place {
        base.client_order_id = index as u64 + 1_000;
    }
    if index % 23 != 0 {
        return base;
    }
    let account = base.account;
    let mut command = Command::limit(account, 1, Side::Sell, 100_010, 5);
    match (index / 23) % 23 {
        // OCOs around the market: a buy with a stop-limit leg, a sell with a stop-market leg.
        21 => {
            command.side = Side::Buy;
            command.price = 99_980;
            command.oco = true;
            command.stop_price = 100_020;
            command.oco_stop_limit = true;
            command.oco_stop_limit_price = 100_030;
        }
        22 => {
            command.price = 100_020;
            command.oco = true;
            command.stop_price = 99_980;
        }
        // A GTD ask that expires 100 commands' time later, and the clock: a time command
        // (the stream's own timestamps never move time past it).
        19 => {
            command.tif = TimeInForce::Gtd;
            command.expire_time_ns = (index as u64 + 100) * 1_000;
        }
        20 => {
            command = Command::empty(CommandType::Time);
            command.timestamp_ns = index as u64 * 1_000;
            return command;
        }
        // An iceberg just above the market, showing 5 of 40.
        18 => {
            command.qty = 40;
            command.display_qty = 5;
        }
        // Stops: a buy stop-limit just above the market, a sell stop-market just below, and
        // a new stop price for the buy stop (named by client order id) two splices later.
        15 => {
            command.side = Side::Buy;
            command.kind = OrderKind::StopLimit;
            command.stop_price = 100_005;
            command.price = 100_010;
            command.client_order_id = index as u64 + 1_000;
        }
        16 => {
            command.kind = OrderKind::StopMarket;
            command.tif = TimeInForce::Ioc;
            command.stop_price = 99_995;
        }
        17 => {
            command = Command::empty(CommandType::Replace);
            command.account = account;
            command.client_order_id = index as u64 + 1_000 - 46;
            command.has_stop_price = true;
            command.stop_price = 100_003;
        }
        // Possible resends: of a recent command (remembered, or never a place), and of one
        // the window has long forgotten.
        13 => {
            command = base.as_resend(0);
            command.command_type = CommandType::Place;
            command.client_order_id = index as u64 + 1_000 - 46;
        }
        14 => {
            command = command.as_resend(index as u64 / 2);
            command.client_order_id = (index as u64).saturating_sub(300_000) + 1_000;
        }
        0 => {
            command.kind = OrderKind::Market;
            command.tif = TimeInForce::Ioc;
        }
        1 => {
            command.side = Side::Buy;
            command.tif = TimeInForce::Fok;
            command.price = 100_050;
            command.qty = 40;
        }
        2 => command.post_only = true,
        3 => {
            command.side = Side::Buy;
            command.price = 100_030;
            command.stp = SelfTradePrevention::CancelBoth;
        }
        4 => {
            command.price = 99_990;
            command.stp = SelfTradePrevention::CancelMaker;
        }
        5 => {
            command = Command::empty(CommandType::MassCancel);
            command.account = account;
        }
        6 => {
            command = Command::empty(CommandType::Halt);
            command.instrument = 1;
        }
        7 => {
            command = Command::empty(CommandType::Resume);
            command.instrument = 1;
        }
        8 => command.instrument = 99,
        9 => command.price = 3_000_000,
        10 => {
            command = Command::empty(CommandType::Cancel);
            command.account = account;
            command.order_id = u64::MAX;
        }
        11 => {
            command = Command::empty(CommandType::OpenOrders);
            command.account = account;
        }
        _ => {
            command.client_order_id = 7;
            command.tif = TimeInForce::Gtc;
        }
    }
    command.timestamp_ns = base.timestamp_ns;
    command
}

#[test]
fn the_counter_sees_allocations() {
    let count = heap_operations_during(|| {
        let boxed = std::hint::black_box(Box::new([0u8; 64]));
        drop(boxed);
    });
    assert_eq!(count, 2, "one allocation and one deallocation");
}

/// GTD orders placed and cancelled long before they expire leave entries in the expiry heap;
/// it is compacted in place when full, never grown: a small engine takes 100,000 of them.
#[test]
fn expiry_entries_of_cancelled_orders_never_grow_the_heap() {
    let mut config = mix_config();
    config.limits.orders_max = 8;
    config.limits.orders_per_book_max = 8;
    let mut engine = Engine::new(config).unwrap();
    let mut events: Vec<Event> = Vec::with_capacity(64);
    let mut seq = 0u64;
    let mut run = |engine: &mut Engine, events: &mut Vec<Event>, round: u64| {
        let mut gtd = Command::limit(1, 1, Side::Buy, 99_000, 1);
        gtd.tif = TimeInForce::Gtd;
        gtd.expire_time_ns = u64::MAX;
        gtd.client_order_id = 1;
        seq += 1;
        events.clear();
        engine.apply(seq, &gtd, events);
        assert_eq!(
            events[0].event_type,
            ringmatch_proto::EventType::Accepted,
            "{round}"
        );
        let mut cancel = Command::empty(CommandType::Cancel);
        cancel.account = 1;
        cancel.client_order_id = 1;
        seq += 1;
        events.clear();
        engine.apply(seq, &cancel, events);
        assert_eq!(events[0].event_type, ringmatch_proto::EventType::Cancelled);
    };
    for round in 0..100 {
        run(&mut engine, &mut events, round);
    }
    let count = heap_operations_during(|| {
        for round in 0..100_000 {
            run(&mut engine, &mut events, round);
        }
    });
    assert_eq!(count, 0, "the expiry heap allocated {count} times");
}

#[test]
fn steady_state_processing_does_not_allocate() {
    const MEASURED_COUNT: usize = 1_200_000;
    const WARMUP_COUNT: usize = 200_000;
    let workload = exchange_core_mix(WARMUP_COUNT + MEASURED_COUNT, 7, MixShape::default());
    let commands: Vec<Command> = workload
        .warmup
        .iter()
        .chain(&workload.commands)
        .enumerate()
        .map(|(index, command)| spliced(index, *command))
        .collect();
    let (warmup, measured) = commands.split_at(commands.len() - MEASURED_COUNT);

    let mut engine = Engine::new(mix_config()).unwrap();
    // The event buffer is the caller's; it is sized during warm-up and only cleared after.
    let mut events: Vec<Event> = Vec::with_capacity(1 << 16);
    let mut seq = 0u64;
    for command in warmup {
        seq += 1;
        events.clear();
        engine.apply(seq, command, &mut events);
    }

    // Snapshots are copied in the measured stream too: their buffers are reserved here.
    engine.reserve_snapshot_copy();
    let mut snapshots_count = 0;
    let mut events_count = 0u64;
    let mut types_seen = [false; 16];
    let mut resend_unknown_seen = false;
    let mut expired_seen = false;
    let mut oco_cancels_count = 0u64;
    // The newest iceberg, and how much of it traded: more than its display means a slice
    // was refreshed.
    let (mut iceberg_id, mut iceberg_traded, mut slice_refreshed) = (0u64, 0u64, false);
    let count = heap_operations_during(|| {
        for command in measured {
            seq += 1;
            events.clear();
            engine.apply(seq, command, &mut events);
            if seq % 50_000 == 0 && engine.snapshot_can_begin() {
                engine.begin_snapshot();
            }
            if let Some(frozen) = engine.snapshot_step(16 * 1024) {
                snapshots_count += 1;
                engine.give_back_snapshot(frozen);
            }
            events_count += events.len() as u64;
            for event in &events {
                types_seen[event.event_type.code() as usize] = true;
                match event.event_type {
                    ringmatch_proto::EventType::Accepted if event.display_qty != 0 => {
                        (iceberg_id, iceberg_traded) = (event.order_id, 0);
                    }
                    ringmatch_proto::EventType::Fill if event.maker_order_id == iceberg_id => {
                        iceberg_traded += event.qty;
                        slice_refreshed |= iceberg_traded > 5;
                    }
                    _ => {}
                }
                oco_cancels_count += u64::from(
                    event.reason
                        == ringmatch_proto::Reason::Cancel(ringmatch_proto::CancelReason::Oco),
                );
                expired_seen |= event.reason
                    == ringmatch_proto::Reason::Cancel(ringmatch_proto::CancelReason::Expired);
                resend_unknown_seen |= event.reason
                    == ringmatch_proto::Reason::Reject(
                        ringmatch_proto::RejectReason::ResendUnknown,
                    );
            }
        }
    });
    assert_eq!(
        count, 0,
        "the matcher allocated {count} times in {MEASURED_COUNT} commands"
    );
    assert!(snapshots_count >= 20, "{snapshots_count} snapshots copied");
    assert!(
        events_count > MEASURED_COUNT as u64,
        "the commands did work: {events_count} events"
    );
    for event_type in ringmatch_proto::EventType::ALL {
        assert!(
            types_seen[event_type.code() as usize],
            "no {event_type} event in the measured stream"
        );
    }
    assert!(
        resend_unknown_seen,
        "no possible resend met a forgotten window in the measured stream"
    );
    assert!(expired_seen, "no order expired in the measured stream");
    assert!(
        oco_cancels_count >= 100,
        "{oco_cancels_count} OCO legs took the other in the measured stream"
    );
    assert!(
        slice_refreshed,
        "no iceberg showed a second slice in the measured stream"
    );
}
