//! The fast matcher: preallocated order slots, price levels indexed directly by price, and
//! hierarchical bitmaps to find the best level. Nothing here allocates after construction.
//!
//! Layout, per book: `levels[i]` is the price `min_price + i * tick_size`, holding a FIFO
//! (doubly linked through order slots) of its resting orders. A price level is only ever on one
//! side at a time because the book is never crossed; `bids` and `asks` mark which levels are
//! live for each side. Every order is also linked into its account's list in order-id order, so
//! a mass cancel walks just that account's orders.

use ringmatch_proto::{
    CancelReason, Command, CommandType, OcoLeg, OrderKind, RejectReason, SelfTradePrevention, Side,
    TimeInForce,
};

use crate::bitmap::LevelBitmap;
use crate::config::{ConfigError, InstrumentSpec, MatcherConfig};
use crate::frozen::{FrozenBook, FrozenState, StateSource};
use crate::paged::Paged;
use crate::resend::{ResendLookup, ResendView, ResendWindow};
use crate::rules::{
    self, check_place_fields, crosses, self_trade_action, slots_needed, BookKeeping, Emitter,
    OrderView, SelfTradeAction,
};
use crate::state::{StateError, StateReader, StateWriter, StoredOrder, StoredResend};
use crate::table::{FixedMap, Home};
use crate::EventSink;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The null slot or level link.
pub(crate) const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Order {
    pub order_id: u64,
    pub client_order_id: u64,
    pub price: i64,
    pub qty: u64,
    pub filled: u64,
    pub account: u32,
    account_index: u32,
    book: u32,
    /// Previous order in the price level (or NIL).
    prev: u32,
    /// Next order in the price level, or next free slot when the slot is free.
    pub next: u32,
    account_prev: u32,
    account_next: u32,
    side: Side,
    pub stp: SelfTradePrevention,
    /// Bit 0: post-only; bit 1: it expires (its expiry is in `Engine::extra`).
    pub flags: u8,
    /// What the slot holds; a waiting stop's stop price and time in force and an iceberg's
    /// slices are in `Engine::extra`, by the same slot.
    pub kind: SlotKind,
}

/// What an order slot holds: the engine's own, finer, order kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotKind {
    /// A resting limit order that shows all of itself.
    Limit,
    /// A resting limit order that shows a slice at a time.
    Iceberg,
    /// A triggered stop-market while it trades (it never rests).
    Market,
    /// A waiting stop-market.
    StopMarket,
    /// A waiting stop-limit.
    StopLimit,
}

impl SlotKind {
    #[inline]
    pub fn order_kind(self) -> OrderKind {
        match self {
            SlotKind::Limit | SlotKind::Iceberg => OrderKind::Limit,
            SlotKind::Market => OrderKind::Market,
            SlotKind::StopMarket => OrderKind::StopMarket,
            SlotKind::StopLimit => OrderKind::StopLimit,
        }
    }

    /// The slot kind of an order of `kind` with displayed quantity `display_qty`.
    #[inline]
    fn of(kind: OrderKind, display_qty: u64) -> SlotKind {
        match kind {
            OrderKind::Limit if display_qty != 0 => SlotKind::Iceberg,
            OrderKind::Limit => SlotKind::Limit,
            OrderKind::Market => SlotKind::Market,
            OrderKind::StopMarket => SlotKind::StopMarket,
            OrderKind::StopLimit => SlotKind::StopLimit,
        }
    }
}

/// `Order::flags`: post-only.
const FLAG_POST_ONLY: u8 = 1 << 0;
/// `Order::flags`: the order expires.
const FLAG_EXPIRES: u8 = 1 << 1;
/// `Order::flags`: the limit leg of an OCO whose stop leg is live.
const FLAG_OCO_LIMIT: u8 = 1 << 2;
/// `Order::flags`: the stop leg of an OCO whose limit leg is live.
const FLAG_OCO_STOP: u8 = 1 << 3;

/// The `Order::flags` bit of an OCO leg.
#[inline]
fn oco_flag(leg: Option<OcoLeg>) -> u8 {
    match leg {
        None => 0,
        Some(OcoLeg::Limit) => FLAG_OCO_LIMIT,
        Some(OcoLeg::Stop) => FLAG_OCO_STOP,
    }
}

// An order slot stays at 72 bytes: the matching loop walks them.
const _: () = assert!(std::mem::size_of::<Order>() == 72);

/// What only a waiting stop or an iceberg needs, kept beside the order slots (by the same
/// index) so that the slots of plain resting orders stay as small as they were.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extra {
    /// A waiting stop's stop price.
    pub stop_price: i64,
    /// What applies to a waiting stop once it triggers.
    pub tif: TimeInForce,
    /// An iceberg's displayed quantity: the size of each slice.
    pub display_qty: u64,
    /// What is left of an iceberg's current slice: what the book shows of it.
    pub shown: u64,
    /// When a GTD or day order expires (nanoseconds since the Unix epoch); 0: never.
    pub expire_ns: u64,
}

impl Extra {
    const NONE: Extra = Extra {
        stop_price: 0,
        tif: TimeInForce::Gtc,
        display_qty: 0,
        shown: 0,
        expire_ns: 0,
    };
}

impl Order {
    const FREE: Order = Order {
        order_id: 0,
        client_order_id: 0,
        price: 0,
        qty: 0,
        filled: 0,
        account: 0,
        account_index: NIL,
        book: NIL,
        prev: NIL,
        next: NIL,
        account_prev: NIL,
        account_next: NIL,
        side: Side::Buy,
        stp: SelfTradePrevention::None,
        flags: 0,
        kind: SlotKind::Limit,
    };

    #[inline]
    fn remaining(&self) -> u64 {
        self.qty - self.filled
    }

    #[inline]
    fn waiting(&self) -> bool {
        matches!(self.kind, SlotKind::StopMarket | SlotKind::StopLimit)
    }

    #[inline]
    pub fn post_only(&self) -> bool {
        self.flags & FLAG_POST_ONLY != 0
    }

    /// Whether it expires (GTD or day): its expiry is in `Engine::extra`.
    #[inline]
    pub fn expires(&self) -> bool {
        self.flags & FLAG_EXPIRES != 0
    }

    /// Which leg of an OCO it is, while the other leg is live.
    #[inline(always)]
    pub fn oco_leg(&self) -> Option<OcoLeg> {
        match self.flags & (FLAG_OCO_LIMIT | FLAG_OCO_STOP) {
            0 => None,
            FLAG_OCO_LIMIT => Some(OcoLeg::Limit),
            _ => Some(OcoLeg::Stop),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Level {
    pub head: u32,
    tail: u32,
    total_qty: u64,
    pub orders_count: u32,
}

impl Level {
    const EMPTY: Level = Level {
        head: NIL,
        tail: NIL,
        total_qty: 0,
        orders_count: 0,
    };
}

/// Which way a queue of levels runs from its best level: down (bids, and sell stops, whose
/// best is the highest price) or up (asks, and buy stops, whose best is the lowest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    Down,
    Up,
}

/// Price levels indexed directly by price, holding two queues that never share a level: one
/// running down from its best level and one running up. A book has two: its resting orders
/// (bids down, asks up; the book is never crossed) and its waiting stops (sell stops down and
/// buy stops up, all below and above the last trade price).
pub(crate) struct Ladder {
    pub levels: Paged<Level>,
    down: LevelBitmap,
    up: LevelBitmap,
    /// The highest live level of the down queue, or NIL.
    pub best_down: u32,
    /// The lowest live level of the up queue, or NIL.
    pub best_up: u32,
}

impl Ladder {
    fn new(levels_count: usize) -> Ladder {
        Ladder {
            levels: Paged::new(vec![Level::EMPTY; levels_count].into_boxed_slice()),
            down: LevelBitmap::new(levels_count),
            up: LevelBitmap::new(levels_count),
            best_down: NIL,
            best_up: NIL,
        }
    }

    #[inline(always)]
    fn best(&self, run: Run) -> Option<usize> {
        let best = match run {
            Run::Down => self.best_down,
            Run::Up => self.best_up,
        };
        (best != NIL).then_some(best as usize)
    }

    /// The next live level after `level_index` going away from the best.
    #[inline(always)]
    fn next_level(&self, run: Run, level_index: usize) -> Option<usize> {
        match run {
            Run::Down => level_index
                .checked_sub(1)
                .and_then(|index| self.down.prev_at_or_before(index)),
            Run::Up => self.up.next_at_or_after(level_index + 1),
        }
    }

    #[inline(always)]
    fn mark_live(&mut self, run: Run, level_index: usize) {
        match run {
            Run::Down => {
                self.down.set(level_index);
                if self.best_down == NIL || level_index as u32 > self.best_down {
                    self.best_down = level_index as u32;
                }
            }
            Run::Up => {
                self.up.set(level_index);
                if self.best_up == NIL || (level_index as u32) < self.best_up {
                    self.best_up = level_index as u32;
                }
            }
        }
    }

    #[inline(always)]
    fn mark_empty(&mut self, run: Run, level_index: usize) {
        match run {
            Run::Down => {
                self.down.clear(level_index);
                if self.best_down == level_index as u32 {
                    self.best_down = self
                        .down
                        .prev_at_or_before(level_index)
                        .map_or(NIL, |i| i as u32);
                }
            }
            Run::Up => {
                self.up.clear(level_index);
                if self.best_up == level_index as u32 {
                    self.best_up = self
                        .up
                        .next_at_or_after(level_index)
                        .map_or(NIL, |i| i as u32);
                }
            }
        }
    }
}

/// The queue resting orders of `side` are in.
#[inline]
pub(crate) fn resting_run(side: Side) -> Run {
    match side {
        Side::Buy => Run::Down,
        Side::Sell => Run::Up,
    }
}

/// The queue waiting stops of `side` are in.
#[inline]
pub(crate) fn stop_run(side: Side) -> Run {
    match side {
        Side::Buy => Run::Up,
        Side::Sell => Run::Down,
    }
}

struct Book {
    spec: InstrumentSpec,
    halted: bool,
    /// Resting orders and waiting stops.
    orders_count: u32,
    resting: Ladder,
    stops: Ladder,
    last_price: Option<i64>,
}

impl Book {
    fn new(spec: InstrumentSpec) -> Book {
        let levels_count = spec.price_levels_count() as usize;
        Book {
            spec,
            halted: false,
            orders_count: 0,
            resting: Ladder::new(levels_count),
            stops: Ladder::new(levels_count),
            last_price: None,
        }
    }

    #[inline]
    fn level_index(&self, price: i64) -> usize {
        ((price - self.spec.min_price) / self.spec.tick_size) as usize
    }

    #[inline]
    fn price_of(&self, level_index: usize) -> i64 {
        self.spec.min_price + level_index as i64 * self.spec.tick_size
    }

    #[inline]
    fn best(&self, side: Side) -> Option<usize> {
        self.resting.best(resting_run(side))
    }

    /// The next level after `level_index` going away from the best price.
    #[inline]
    fn next_level(&self, side: Side, level_index: usize) -> Option<usize> {
        self.resting.next_level(resting_run(side), level_index)
    }
}

/// An account's list of live orders (its id is in `Engine::account_ids`, by the same index).
#[derive(Debug, Clone, Copy)]
struct Account {
    head: u32,
    tail: u32,
}

/// Where the copy buffers for snapshots are.
enum SnapshotShell {
    /// Not allocated yet.
    NotReserved,
    /// Here: no snapshot is lent out.
    Here(FrozenState),
    /// Lent out with a finished snapshot.
    Lent,
}

/// The fast, allocation-free matching engine.
pub struct Engine {
    config: MatcherConfig,
    books: Vec<Book>,
    book_by_instrument: FixedMap<u64>,
    orders: Paged<Order>,
    /// Stop price and time in force of the waiting stops, by slot.
    extra: Paged<Extra>,
    free_head: u32,
    orders_live: u32,
    by_order_id: FixedMap<u64>,
    by_client_id: FixedMap<u128>,
    accounts: Vec<Account>,
    /// Account ids by account index, append only.
    account_ids: Paged<u32>,
    account_by_id: FixedMap<u64>,
    next_order_id: u64,
    /// The account index of the order `admit` took last, for `rest_new`.
    admitted_account_index: u32,
    resends: ResendWindow,
    snapshot_shell: SnapshotShell,
    /// A snapshot copy is under way.
    snapshot_copying: bool,
    /// The engine's time: the latest timestamp of a command that moves it (every command but
    /// `snapshot` and `term`). Orders expire by it.
    now_ns: u64,
    /// The orders that expire, soonest first: (expiry, order id). An entry whose order is no
    /// longer live is dropped when it comes up; the heap never grows past `orders_max`
    /// (a full heap is compacted in place first).
    expiries: BinaryHeap<Reverse<(u64, u64)>>,
}

#[inline]
fn client_key(account: u32, client_order_id: u64) -> u128 {
    (u128::from(account) << 64) | u128::from(client_order_id)
}

impl Engine {
    /// An empty engine; all memory for the configured limits is allocated here.
    pub fn new(config: MatcherConfig) -> Result<Engine, ConfigError> {
        config.validate()?;
        let limits = config.limits;
        let mut book_by_instrument = FixedMap::with_len_max(config.instruments.len());
        let mut books = Vec::with_capacity(config.instruments.len());
        for (index, spec) in config.instruments.iter().enumerate() {
            book_by_instrument.insert(u64::from(spec.id), index as u32);
            books.push(Book::new(spec.clone()));
        }
        let orders_max = limits.orders_max as usize;
        let mut orders = vec![Order::FREE; orders_max].into_boxed_slice();
        for (index, order) in orders.iter_mut().enumerate() {
            order.next = if index + 1 < orders_max {
                index as u32 + 1
            } else {
                NIL
            };
        }
        Ok(Engine {
            books,
            book_by_instrument,
            orders: Paged::new(orders),
            extra: Paged::new(vec![Extra::NONE; orders_max].into_boxed_slice()),
            free_head: 0,
            orders_live: 0,
            // Order ids are handed out in sequence: their probes start at their low bits.
            by_order_id: FixedMap::with_len_max_homed(orders_max, Home::Sequential),
            by_client_id: FixedMap::with_len_max(orders_max),
            accounts: Vec::with_capacity(limits.accounts_max as usize),
            account_ids: Paged::new(vec![0; limits.accounts_max as usize].into_boxed_slice()),
            account_by_id: FixedMap::with_len_max(limits.accounts_max as usize),
            next_order_id: 1,
            admitted_account_index: 0,
            resends: ResendWindow::new(limits.resends_max as usize),
            snapshot_shell: SnapshotShell::NotReserved,
            snapshot_copying: false,
            now_ns: 0,
            expiries: BinaryHeap::with_capacity(orders_max),
            config,
        })
    }

    /// The configuration the engine was built with.
    pub fn config(&self) -> &MatcherConfig {
        &self.config
    }

    /// Resting orders over all books.
    pub fn resting_orders_count(&self) -> u32 {
        self.orders_live
    }

    /// Runs one command, pushing its events (numbered from 0) to `sink`.
    pub fn apply<S: EventSink + ?Sized>(&mut self, seq: u64, command: &Command, sink: &mut S) {
        let mut out = Emitter::new(sink, seq, command);
        if command.timestamp_ns > self.now_ns && rules::moves_time(command.command_type) {
            self.now_ns = command.timestamp_ns;
            if self
                .expiries
                .peek()
                .is_some_and(|Reverse((expire_ns, _))| *expire_ns <= self.now_ns)
            {
                self.expire_due(&mut out);
            }
        }
        match command.command_type {
            CommandType::Place => self.place(command, &mut out),
            CommandType::Cancel => self.cancel(command, &mut out),
            CommandType::Replace => self.replace(command, &mut out),
            CommandType::MassCancel => self.mass_cancel(command, &mut out),
            CommandType::Halt => self.set_halted(command, true, &mut out),
            CommandType::Resume => self.set_halted(command, false, &mut out),
            // The pipeline acts on a snapshot command and the replication layer on a term
            // record; to the matcher both are no-ops.
            CommandType::Snapshot | CommandType::Term | CommandType::Time => {}
            CommandType::OpenOrders => self.open_orders(command, &mut out),
        }
    }

    /// Cancels, soonest first (then by order id), every order whose expiry has come.
    #[cold]
    fn expire_due<S: EventSink + ?Sized>(&mut self, out: &mut Emitter<'_, S>) {
        while let Some(&Reverse((expire_ns, order_id))) = self.expiries.peek() {
            if expire_ns > self.now_ns {
                break;
            }
            self.expiries.pop();
            let Some(slot) = self.by_order_id.get(order_id) else {
                continue;
            };
            rules::cancel_order(self, slot, CancelReason::Expired, out);
        }
    }

    /// The soonest expiry of a live order, or a little earlier (an order that left early may
    /// still hold its place): the time at which a `time` command has something to do.
    pub fn next_expiry_ns(&self) -> Option<u64> {
        self.expiries
            .peek()
            .map(|Reverse((expire_ns, _))| *expire_ns)
    }

    /// Remembers that the order in `slot` expires at `expire_ns`.
    fn schedule_expiry(&mut self, slot: u32, expire_ns: u64) {
        self.extra[slot as usize].expire_ns = expire_ns;
        if self.expiries.len() == self.expiries.capacity() {
            // Drop the entries of orders that left early; a live order has one entry, so
            // this leaves room (live orders are fewer than the slots).
            let by_order_id = &self.by_order_id;
            self.expiries
                .retain(|Reverse((_, order_id))| by_order_id.contains(*order_id));
        }
        let order_id = self.orders[slot as usize].order_id;
        self.expiries.push(Reverse((expire_ns, order_id)));
    }

    #[inline]
    fn book_of(&self, instrument: u32) -> Option<usize> {
        self.book_by_instrument
            .get(u64::from(instrument))
            .map(|index| index as usize)
    }

    #[inline(always)]
    fn view(&self, slot: u32) -> OrderView {
        let order = &self.orders[slot as usize];
        let stop = self.extra_of(slot);
        OrderView {
            order_id: order.order_id,
            client_order_id: order.client_order_id,
            account: order.account,
            instrument: self.books[order.book as usize].spec.id,
            side: order.side,
            price: order.price,
            qty: order.qty,
            filled: order.filled,
            kind: order.kind.order_kind(),
            tif: stop.tif,
            stop_price: stop.stop_price,
            display_qty: stop.display_qty,
            oco_leg: order.oco_leg(),
        }
    }

    /// What the book shows of a resting order: all it has open, or an iceberg's slice.
    #[inline]
    fn visible(&self, slot: u32) -> u64 {
        let order = &self.orders[slot as usize];
        if order.kind == SlotKind::Iceberg {
            self.extra[slot as usize].shown
        } else {
            order.remaining()
        }
    }

    /// A waiting stop's stop price and time in force, an iceberg's slices; for a plain
    /// resting order, GTC and zeros.
    #[inline]
    fn extra_of(&self, slot: u32) -> Extra {
        match self.orders[slot as usize].kind {
            SlotKind::Limit | SlotKind::Market => Extra::NONE,
            _ => self.extra[slot as usize],
        }
    }

    fn find_order(&self, command: &Command) -> Result<u32, RejectReason> {
        if command.order_id != 0 {
            let slot = self
                .by_order_id
                .get(command.order_id)
                .ok_or(RejectReason::UnknownOrder)?;
            if self.orders[slot as usize].account != command.account {
                return Err(RejectReason::NotYourOrder);
            }
            Ok(slot)
        } else if command.client_order_id != 0 {
            self.by_client_id
                .get(client_key(command.account, command.client_order_id))
                .ok_or(RejectReason::UnknownOrder)
        } else {
            Err(RejectReason::UnknownOrder)
        }
    }

    fn best_crosses(&self, book_index: usize, side: Side, limit: Option<i64>) -> bool {
        let book = &self.books[book_index];
        book.best(side.opposite())
            .is_some_and(|level_index| crosses(side, limit, book.price_of(level_index)))
    }

    fn check_place(&self, book_index: usize, command: &Command) -> Result<(), RejectReason> {
        let book = &self.books[book_index];
        if book.halted {
            return Err(RejectReason::Halted);
        }
        check_place_fields(&book.spec, command, book.last_price, self.now_ns)?;
        if command.client_order_id != 0
            && self
                .by_client_id
                .contains(client_key(command.account, command.client_order_id))
        {
            return Err(RejectReason::DuplicateClientOrderId);
        }
        if self.account_by_id.get(u64::from(command.account)).is_none()
            && self.accounts.len() >= self.config.limits.accounts_max as usize
        {
            return Err(RejectReason::TooManyAccounts);
        }
        let limit = (command.kind == OrderKind::Limit).then_some(command.price);
        let slots = slots_needed(command);
        if slots > 0 {
            if book.orders_count + slots > self.config.limits.orders_per_book_max {
                return Err(RejectReason::BookFull);
            }
            if self.orders_live + slots > self.config.limits.orders_max {
                return Err(RejectReason::EngineFull);
            }
        }
        if command.post_only && self.best_crosses(book_index, command.side, limit) {
            return Err(RejectReason::PostOnlyWouldTake);
        }
        if command.tif == TimeInForce::Fok && !self.fok_fillable(book_index, command, limit) {
            return Err(RejectReason::FokNotFillable);
        }
        Ok(())
    }

    /// Whether the book holds enough tradeable quantity for a fill-or-kill order, counting
    /// makers in priority order the way matching would meet them (self-trade rules included).
    fn fok_fillable(&self, book_index: usize, command: &Command, limit: Option<i64>) -> bool {
        let book = &self.books[book_index];
        let maker_side = command.side.opposite();
        let mut available_qty = 0u64;
        let mut level = book.best(maker_side);
        while let Some(level_index) = level {
            if !crosses(command.side, limit, book.price_of(level_index)) {
                return false;
            }
            // Icebergs' hidden quantity is met after every order the level shows now.
            let mut hidden_qty = 0u64;
            let mut cursor = book.resting.levels[level_index].head;
            while cursor != NIL {
                let maker = &self.orders[cursor as usize];
                match self_trade_action(command.stp, command.account, maker.account) {
                    SelfTradeAction::Trade => {
                        let visible = self.visible(cursor);
                        available_qty += visible;
                        hidden_qty += maker.remaining() - visible;
                        if available_qty >= command.qty {
                            return true;
                        }
                    }
                    SelfTradeAction::CancelMaker => {}
                    SelfTradeAction::CancelTaker | SelfTradeAction::CancelBoth => return false,
                }
                cursor = maker.next;
            }
            available_qty += hidden_qty;
            if available_qty >= command.qty {
                return true;
            }
            level = book.next_level(maker_side, level_index);
        }
        false
    }

    fn account_index_or_register(&mut self, account: u32) -> u32 {
        if let Some(index) = self.account_by_id.get(u64::from(account)) {
            return index;
        }
        let index = self.accounts.len() as u32;
        assert!(self.accounts.len() < self.accounts.capacity());
        self.accounts.push(Account {
            head: NIL,
            tail: NIL,
        });
        self.account_ids[index as usize] = account;
        self.account_by_id.insert(u64::from(account), index);
        index
    }

    fn place<S: EventSink + ?Sized>(&mut self, command: &Command, out: &mut Emitter<'_, S>) {
        rules::place(self, command, out);
    }

    /// Matches `taker` against the opposite side while prices cross. Returns true when
    /// self-trade prevention cancelled the taker.
    fn match_against_book<S: EventSink + ?Sized>(
        &mut self,
        book_index: usize,
        taker: &mut OrderView,
        limit: Option<i64>,
        stp: SelfTradePrevention,
        out: &mut Emitter<'_, S>,
    ) -> bool {
        let maker_side = taker.side.opposite();
        while taker.remaining() > 0 {
            let book = &self.books[book_index];
            let Some(level_index) = book.best(maker_side) else {
                return false;
            };
            let price = book.price_of(level_index);
            if !crosses(taker.side, limit, price) {
                return false;
            }
            let mut cursor = book.resting.levels[level_index].head;
            let mut changed = false;
            let mut stopped = false;
            while cursor != NIL && taker.remaining() > 0 {
                let maker = self.orders[cursor as usize];
                match self_trade_action(stp, taker.account, maker.account) {
                    SelfTradeAction::Trade => {
                        let iceberg = maker.kind == SlotKind::Iceberg;
                        let available = if iceberg {
                            self.extra[cursor as usize].shown
                        } else {
                            maker.remaining()
                        };
                        let qty = taker.remaining().min(available);
                        self.orders[cursor as usize].filled += qty;
                        taker.filled += qty;
                        self.books[book_index].resting.levels[level_index].total_qty -= qty;
                        if iceberg {
                            self.extra[cursor as usize].shown -= qty;
                        }
                        changed = true;
                        let maker_view = self.view(cursor);
                        out.fill(taker, &maker_view, price, qty);
                        if let Some(leg) = maker_view.oco_leg {
                            rules::break_oco(self, maker_view.order_id, leg, out);
                        }
                        if maker_view.remaining() == 0 {
                            self.remove_order(cursor);
                        } else if iceberg && self.extra[cursor as usize].shown == 0 {
                            // Its slice is gone: the next one joins the back of the level,
                            // behind every order shown now, and matching goes on from the
                            // level's head (everything before this one has traded away).
                            self.refresh_slice(cursor);
                            cursor = self.books[book_index].resting.levels[level_index].head;
                            continue;
                        }
                    }
                    SelfTradeAction::CancelMaker => {
                        self.cancel_maker(cursor, out);
                        changed = true;
                    }
                    SelfTradeAction::CancelTaker => {
                        out.cancelled(taker, CancelReason::SelfTrade);
                        stopped = true;
                    }
                    SelfTradeAction::CancelBoth => {
                        self.cancel_maker(cursor, out);
                        changed = true;
                        out.cancelled(taker, CancelReason::SelfTrade);
                        stopped = true;
                    }
                }
                if stopped {
                    break;
                }
                cursor = maker.next;
            }
            if changed {
                let book = &self.books[book_index];
                let total_qty = book.resting.levels[level_index].total_qty;
                out.level(book.spec.id, maker_side, price, total_qty);
            }
            if stopped {
                return true;
            }
        }
        false
    }

    /// Self-trade prevention cancels a maker (and so an OCO's other leg).
    fn cancel_maker<S: EventSink + ?Sized>(&mut self, slot: u32, out: &mut Emitter<'_, S>) {
        let view = self.view(slot);
        out.cancelled(&view, CancelReason::SelfTrade);
        self.remove_order(slot);
        if let Some(leg) = view.oco_leg {
            rules::break_oco(self, view.order_id, leg, out);
        }
    }

    /// Shows an iceberg's next slice, at the back of its level.
    #[cold]
    fn refresh_slice(&mut self, slot: u32) {
        self.unlink_level(slot);
        let remaining = self.orders[slot as usize].remaining();
        let extra = &mut self.extra[slot as usize];
        extra.shown = extra.display_qty.min(remaining);
        self.link_level_tail(slot);
    }

    fn cancel<S: EventSink + ?Sized>(&mut self, command: &Command, out: &mut Emitter<'_, S>) {
        match self.find_order(command) {
            Err(reason) => out.rejected(command, reason),
            Ok(slot) => rules::cancel_order(self, slot, CancelReason::User, out),
        }
    }

    fn replace<S: EventSink + ?Sized>(&mut self, command: &Command, out: &mut Emitter<'_, S>) {
        rules::replace(self, command, out);
    }

    fn mass_cancel<S: EventSink + ?Sized>(&mut self, command: &Command, out: &mut Emitter<'_, S>) {
        if command.instrument != 0 && self.book_of(command.instrument).is_none() {
            return out.rejected(command, RejectReason::UnknownInstrument);
        }
        let mut cancelled_count = 0u64;
        if let Some(account_index) = self.account_by_id.get(u64::from(command.account)) {
            let mut cursor = self.accounts[account_index as usize].head;
            while cursor != NIL {
                let next = self.orders[cursor as usize].account_next;
                let view = self.view(cursor);
                if command.instrument == 0 || view.instrument == command.instrument {
                    out.cancelled(&view, CancelReason::MassCancel);
                    let total_qty = self.remove_order(cursor);
                    if !view.waiting() {
                        out.level(view.instrument, view.side, view.price, total_qty);
                    }
                    cancelled_count += 1;
                }
                cursor = next;
            }
        }
        out.mass_cancelled(command.account, command.instrument, cancelled_count);
    }

    fn open_orders<S: EventSink + ?Sized>(&mut self, command: &Command, out: &mut Emitter<'_, S>) {
        if command.instrument != 0 && self.book_of(command.instrument).is_none() {
            return out.rejected(command, RejectReason::UnknownInstrument);
        }
        let mut listed_count = 0u64;
        if let Some(account_index) = self.account_by_id.get(u64::from(command.account)) {
            let mut cursor = self.accounts[account_index as usize].head;
            while cursor != NIL {
                let view = self.view(cursor);
                if command.instrument == 0 || view.instrument == command.instrument {
                    out.order_status(&view);
                    listed_count += 1;
                }
                cursor = self.orders[cursor as usize].account_next;
            }
        }
        out.open_orders_end(command.account, command.instrument, listed_count);
    }

    fn set_halted<S: EventSink + ?Sized>(
        &mut self,
        command: &Command,
        halted: bool,
        out: &mut Emitter<'_, S>,
    ) {
        let Some(book_index) = self.book_of(command.instrument) else {
            return out.rejected(command, RejectReason::UnknownInstrument);
        };
        self.books[book_index].halted = halted;
        out.instrument_status(command.instrument, halted);
    }

    /// Puts a filled-in slot into the id maps, its account list and the counts.
    fn remember(&mut self, slot: u32) {
        let order = self.orders[slot as usize];
        self.by_order_id.insert(order.order_id, slot);
        if order.client_order_id != 0 {
            self.by_client_id
                .insert(client_key(order.account, order.client_order_id), slot);
        }
        self.books[order.book as usize].orders_count += 1;
        self.orders_live += 1;
        self.link_account_tail(slot);
    }

    /// Appends a slot to its account's list of live orders.
    fn link_account_tail(&mut self, slot: u32) {
        let account_index = self.orders[slot as usize].account_index;
        let account = &mut self.accounts[account_index as usize];
        let old_tail = account.tail;
        account.tail = slot;
        if old_tail == NIL {
            account.head = slot;
        } else {
            self.orders[old_tail as usize].account_next = slot;
        }
        self.orders[slot as usize].account_prev = old_tail;
        self.orders[slot as usize].account_next = NIL;
    }

    /// Takes a slot (already out of its level) out of the maps and lists and frees it.
    fn forget(&mut self, slot: u32) {
        let order = self.orders[slot as usize];
        self.by_order_id.remove(order.order_id);
        if order.client_order_id != 0 {
            self.by_client_id
                .remove(client_key(order.account, order.client_order_id));
        }
        let account = &mut self.accounts[order.account_index as usize];
        if order.account_prev == NIL {
            account.head = order.account_next;
        }
        if order.account_next == NIL {
            account.tail = order.account_prev;
        }
        if order.account_prev != NIL {
            self.orders[order.account_prev as usize].account_next = order.account_next;
        }
        if order.account_next != NIL {
            self.orders[order.account_next as usize].account_prev = order.account_prev;
        }
        self.books[order.book as usize].orders_count -= 1;
        self.orders_live -= 1;
        self.orders[slot as usize] = Order::FREE;
        self.orders[slot as usize].next = self.free_head;
        self.free_head = slot;
    }

    /// Removes a resting order entirely; returns its level's total afterwards.
    fn remove_order(&mut self, slot: u32) -> u64 {
        let total_qty = self.unlink_level(slot);
        self.forget(slot);
        total_qty
    }

    /// Appends a slot to the tail of its price level (of a waiting stop: of its stop price's
    /// queue); returns the level's new total.
    #[inline]
    fn link_level_tail(&mut self, slot: u32) -> u64 {
        if self.orders[slot as usize].waiting() {
            self.link_stop_tail(slot)
        } else {
            self.link_tail::<false>(slot)
        }
    }

    #[cold]
    fn link_stop_tail(&mut self, slot: u32) -> u64 {
        self.link_tail::<true>(slot)
    }

    /// Takes a slot out of its price level (or stop price's queue); returns the level's total
    /// afterwards.
    #[inline]
    fn unlink_level(&mut self, slot: u32) -> u64 {
        if self.orders[slot as usize].waiting() {
            self.unlink_stop(slot)
        } else {
            self.unlink::<false>(slot)
        }
    }

    #[cold]
    fn unlink_stop(&mut self, slot: u32) -> u64 {
        self.unlink::<true>(slot)
    }

    /// Where a slot's level is: in the stop ladder (`STOP`) or the book's, which queue, and
    /// which level.
    #[inline(always)]
    fn ladder_of<const STOP: bool>(&mut self, slot: u32) -> (&mut Ladder, Run, usize) {
        let order = &self.orders[slot as usize];
        let book = &mut self.books[order.book as usize];
        if STOP {
            let level_index = book.level_index(self.extra[slot as usize].stop_price);
            (&mut book.stops, stop_run(order.side), level_index)
        } else {
            let level_index = book.level_index(order.price);
            (&mut book.resting, resting_run(order.side), level_index)
        }
    }

    #[inline(always)]
    fn link_tail<const STOP: bool>(&mut self, slot: u32) -> u64 {
        let remaining = self.visible(slot);
        let (ladder, run, level_index) = self.ladder_of::<STOP>(slot);
        let level = &mut ladder.levels[level_index];
        let old_tail = level.tail;
        level.tail = slot;
        if old_tail == NIL {
            level.head = slot;
        }
        level.total_qty += remaining;
        level.orders_count += 1;
        let total_qty = level.total_qty;
        if level.orders_count == 1 {
            ladder.mark_live(run, level_index);
        }
        if old_tail != NIL {
            self.orders[old_tail as usize].next = slot;
        }
        self.orders[slot as usize].prev = old_tail;
        self.orders[slot as usize].next = NIL;
        total_qty
    }

    #[inline(always)]
    fn unlink<const STOP: bool>(&mut self, slot: u32) -> u64 {
        let order = self.orders[slot as usize];
        let visible = self.visible(slot);
        let (ladder, run, level_index) = self.ladder_of::<STOP>(slot);
        let level = &mut ladder.levels[level_index];
        if order.prev == NIL {
            level.head = order.next;
        }
        if order.next == NIL {
            level.tail = order.prev;
        }
        level.total_qty -= visible;
        level.orders_count -= 1;
        let total_qty = level.total_qty;
        if level.orders_count == 0 {
            assert_eq!(total_qty, 0, "an empty level holds quantity");
            ladder.mark_empty(run, level_index);
        }
        if order.prev != NIL {
            self.orders[order.prev as usize].next = order.next;
        }
        if order.next != NIL {
            self.orders[order.next as usize].prev = order.prev;
        }
        self.orders[slot as usize].prev = NIL;
        self.orders[slot as usize].next = NIL;
        total_qty
    }

    /// Level indexes of one side, best price first.
    fn levels_best_first(&self, book_index: usize, side: Side) -> impl Iterator<Item = usize> + '_ {
        let book = &self.books[book_index];
        std::iter::successors(book.best(side), move |&index| book.next_level(side, index))
    }

    /// Stop price level indexes of one side's waiting stops, nearest the last trade first.
    fn stops_nearest_first(
        &self,
        book_index: usize,
        side: Side,
    ) -> impl Iterator<Item = usize> + '_ {
        let stops = &self.books[book_index].stops;
        let run = stop_run(side);
        std::iter::successors(stops.best(run), move |&index| stops.next_level(run, index))
    }

    /// L2 depth of one side of an instrument, best price first: (price, total quantity, orders).
    pub fn depth(
        &self,
        instrument: u32,
        side: Side,
        levels_max: usize,
    ) -> Option<Vec<(i64, u64, u32)>> {
        let book_index = self.book_of(instrument)?;
        let book = &self.books[book_index];
        Some(
            self.levels_best_first(book_index, side)
                .take(levels_max)
                .map(|index| {
                    let level = &book.resting.levels[index];
                    (book.price_of(index), level.total_qty, level.orders_count)
                })
                .collect(),
        )
    }

    /// Writes the canonical state (see `docs/snapshot-format.md`) to `writer`.
    pub fn write_state<W: StateWriter>(&self, writer: &mut W) {
        crate::frozen::write_state(self, writer);
    }

    /// A hash of the whole matcher state; equal states hash equal in every implementation.
    pub fn state_hash(&self) -> u64 {
        let mut hasher = crate::state::StateHasher::new();
        self.write_state(&mut hasher);
        hasher.finish()
    }

    /// The canonical state as bytes, for snapshots.
    pub fn encode_state(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.write_state(&mut bytes);
        bytes
    }

    /// [`Engine::restore`] of the state after the command with sequence `last_seq` (a
    /// snapshot's). A version 1 state was written before the resend window existed; its
    /// engine may have taken any place up to `last_seq`, so the restored window counts all of
    /// them as forgotten, and a possible resend with a lower floor is refused rather than
    /// placed a second time.
    pub fn restore_at(
        config: MatcherConfig,
        bytes: &[u8],
        last_seq: u64,
    ) -> Result<Engine, StateError> {
        let mut engine = Engine::restore(config, bytes)?;
        if bytes.get(4..8) == Some(&1u32.to_le_bytes()[..]) {
            engine.resends.set_forgotten_through(last_seq);
        }
        Ok(engine)
    }

    /// Rebuilds an engine from [`Engine::encode_state`] bytes. The configuration must name the
    /// same instruments with the same parameters; limits may differ if the state fits them.
    pub fn restore(config: MatcherConfig, bytes: &[u8]) -> Result<Engine, StateError> {
        let mut engine = Engine::new(config).map_err(StateError::Config)?;
        let mut reader = StateReader::new(bytes);
        reader.header()?;
        engine.next_order_id = reader.u64()?;
        if reader.version() >= 5 {
            engine.now_ns = reader.u64()?;
        }
        let instruments_count = reader.u32()? as usize;
        if instruments_count != engine.books.len() {
            return Err(StateError::ConfigMismatch(format!(
                "state has {instruments_count} instruments, config has {}",
                engine.books.len()
            )));
        }
        for book in engine.books.iter_mut() {
            book.halted = reader.instrument(&book.spec)?;
        }
        let accounts_count = reader.u32()? as usize;
        if accounts_count > engine.config.limits.accounts_max as usize {
            return Err(StateError::OverLimit("accounts_max"));
        }
        for _ in 0..accounts_count {
            let id = reader.u32()?;
            if engine.account_by_id.contains(u64::from(id)) {
                return Err(StateError::Invalid(format!("account {id} listed twice")));
            }
            engine.account_index_or_register(id);
        }
        let mut slots_by_order_id = Vec::new();
        for book_index in 0..engine.books.len() {
            for side in [Side::Buy, Side::Sell] {
                let mut previous_price = None;
                for _ in 0..reader.u32()? {
                    let price = reader.i64()?;
                    engine.check_stored_level(book_index, side, price, previous_price)?;
                    previous_price = Some(price);
                    let orders_count = reader.u32()?;
                    if orders_count == 0 {
                        return Err(StateError::Invalid(format!("empty level at price {price}")));
                    }
                    for _ in 0..orders_count {
                        let stored = reader.order()?;
                        let slot = engine.restore_order(book_index, side, price, &stored, None)?;
                        slots_by_order_id.push((stored.order_id, slot));
                    }
                }
            }
            if reader.version() >= 3 {
                engine.restore_stops(book_index, &mut reader, &mut slots_by_order_id)?;
            }
        }
        if reader.version() >= 2 {
            engine.restore_resends(&mut reader)?;
        }
        reader.finish()?;
        for &(order_id, slot) in &slots_by_order_id {
            engine.check_oco_pair(order_id, slot)?;
        }
        // Account lists are in order-id order, as they were when the orders arrived.
        slots_by_order_id.sort_unstable();
        for (_, slot) in slots_by_order_id {
            engine.link_account_tail(slot);
        }
        Ok(engine)
    }

    /// A restored OCO leg's other leg must be live and be its other leg: the stop leg (a
    /// waiting stop, with nothing filled) of the same account, instrument, side and quantity.
    fn check_oco_pair(&self, order_id: u64, slot: u32) -> Result<(), StateError> {
        let order = &self.orders[slot as usize];
        let Some(leg) = order.oco_leg() else {
            return Ok(());
        };
        let paired = self
            .by_order_id
            .get(leg.partner_of(order_id))
            .is_some_and(|partner_slot| {
                let partner = &self.orders[partner_slot as usize];
                let (limit, stop) = match leg {
                    OcoLeg::Limit => (order, partner),
                    OcoLeg::Stop => (partner, order),
                };
                partner
                    .oco_leg()
                    .is_some_and(|partner_leg| partner_leg != leg)
                    && !limit.waiting()
                    && stop.waiting()
                    && limit.filled == 0
                    && (limit.account, limit.book, limit.side, limit.qty)
                        == (stop.account, stop.book, stop.side, stop.qty)
            });
        if !paired {
            return Err(StateError::Invalid(format!(
                "OCO leg {order_id} has no matching other leg"
            )));
        }
        Ok(())
    }

    fn check_stored_level(
        &self,
        book_index: usize,
        side: Side,
        price: i64,
        previous_price: Option<i64>,
    ) -> Result<(), StateError> {
        let book = &self.books[book_index];
        crate::rules::check_price(&book.spec, price)
            .map_err(|_| StateError::Invalid(format!("level price {price} is not valid")))?;
        let better_first = match (side, previous_price) {
            (_, None) => true,
            (Side::Buy, Some(previous)) => price < previous,
            (Side::Sell, Some(previous)) => price > previous,
        };
        let level_index = book.level_index(price);
        if !better_first || book.resting.levels[level_index].orders_count != 0 {
            return Err(StateError::Invalid(format!(
                "levels out of order at {price}"
            )));
        }
        if self.best_crosses(book_index, side, Some(price)) {
            return Err(StateError::Invalid(format!("crossed book at {price}")));
        }
        Ok(())
    }

    /// Reads a book's last trade price and waiting stops (state version 3).
    fn restore_stops(
        &mut self,
        book_index: usize,
        reader: &mut StateReader<'_>,
        slots_by_order_id: &mut Vec<(u64, u32)>,
    ) -> Result<(), StateError> {
        let last_price = reader.last_price()?;
        if let Some(price) = last_price {
            crate::rules::check_price(&self.books[book_index].spec, price).map_err(|_| {
                StateError::Invalid(format!("last trade price {price} is not valid"))
            })?;
        }
        self.books[book_index].last_price = last_price;
        for side in [Side::Buy, Side::Sell] {
            let mut previous_stop_price: Option<i64> = None;
            for _ in 0..reader.u32()? {
                let stop_price = reader.i64()?;
                let book = &self.books[book_index];
                let nearer_first = match (side, previous_stop_price) {
                    (_, None) => true,
                    (Side::Buy, Some(previous)) => stop_price > previous,
                    (Side::Sell, Some(previous)) => stop_price < previous,
                };
                if crate::rules::check_price(&book.spec, stop_price).is_err()
                    || crate::rules::check_stop(side, stop_price, last_price).is_err()
                    || !nearer_first
                {
                    return Err(StateError::Invalid(format!(
                        "stop level at {stop_price} is not valid here"
                    )));
                }
                previous_stop_price = Some(stop_price);
                let orders_count = reader.u32()?;
                if orders_count == 0 {
                    return Err(StateError::Invalid(format!(
                        "empty stop level at price {stop_price}"
                    )));
                }
                for _ in 0..orders_count {
                    let stop = reader.stop()?;
                    let spec = &self.books[book_index].spec;
                    let valid = match stop.kind {
                        OrderKind::StopMarket => stop.price == 0 && stop.tif == TimeInForce::Ioc,
                        OrderKind::StopLimit => {
                            stop.tif != TimeInForce::Fok
                                && crate::rules::check_price(spec, stop.price).is_ok()
                        }
                        _ => false,
                    };
                    if !valid || stop.order.filled != 0 || stop.order.post_only {
                        return Err(StateError::Invalid(format!(
                            "stop order {} is not valid",
                            stop.order.order_id
                        )));
                    }
                    let slot = self.restore_order(
                        book_index,
                        side,
                        stop.price,
                        &stop.order,
                        Some((stop.kind, stop.tif, stop_price)),
                    )?;
                    slots_by_order_id.push((stop.order.order_id, slot));
                }
            }
        }
        Ok(())
    }

    /// Reads the resend window. A window larger than `resends_max` keeps its newest entries,
    /// exactly as if the engine had run with the smaller limit all along.
    fn restore_resends(&mut self, reader: &mut StateReader<'_>) -> Result<(), StateError> {
        let forgotten_through = reader.u64()?;
        self.resends.set_forgotten_through(forgotten_through);
        let mut previous_seq = forgotten_through;
        for _ in 0..reader.u32()? {
            let resend = reader.resend()?;
            if resend.seq <= previous_seq
                || resend.client_order_id == 0
                || resend.order_id >= self.next_order_id
                || (resend.order_id == 0) != resend.rejected.is_some()
            {
                return Err(StateError::Invalid(format!(
                    "resend window entry of sequence {} is not valid",
                    resend.seq
                )));
            }
            previous_seq = resend.seq;
            self.resends.record(resend);
        }
        Ok(())
    }

    fn restore_order(
        &mut self,
        book_index: usize,
        side: Side,
        price: i64,
        stored: &StoredOrder,
        stop: Option<(OrderKind, TimeInForce, i64)>,
    ) -> Result<u32, StateError> {
        let limits = self.config.limits;
        if self.books[book_index].orders_count >= limits.orders_per_book_max {
            return Err(StateError::OverLimit("orders_per_book_max"));
        }
        if self.free_head == NIL {
            return Err(StateError::OverLimit("orders_max"));
        }
        if stored.order_id == 0 || stored.order_id >= self.next_order_id {
            return Err(StateError::Invalid(format!(
                "bad order id {}",
                stored.order_id
            )));
        }
        if stored.filled >= stored.qty {
            return Err(StateError::Invalid(format!(
                "order {} has nothing open",
                stored.order_id
            )));
        }
        if stored.expire_ns != 0 && stored.expire_ns <= self.now_ns {
            return Err(StateError::Invalid(format!(
                "order {} expired at {} but is still live at {}",
                stored.order_id, stored.expire_ns, self.now_ns
            )));
        }
        let slices_valid = if stored.display_qty == 0 {
            stored.shown == 0
        } else {
            stop.is_none()
                && stored.display_qty % self.books[book_index].spec.lot_size == 0
                && stored.shown >= 1
                && stored.shown <= stored.display_qty.min(stored.qty - stored.filled)
        };
        if !slices_valid {
            return Err(StateError::Invalid(format!(
                "order {} has a displayed quantity {} with {} shown",
                stored.order_id, stored.display_qty, stored.shown
            )));
        }
        if self.by_order_id.contains(stored.order_id)
            || (stored.client_order_id != 0
                && self
                    .by_client_id
                    .contains(client_key(stored.account, stored.client_order_id)))
        {
            return Err(StateError::Invalid(format!(
                "order {} listed twice",
                stored.order_id
            )));
        }
        let account_index = self
            .account_by_id
            .get(u64::from(stored.account))
            .ok_or_else(|| StateError::Invalid(format!("unknown account {}", stored.account)))?;
        let slot = self.free_head;
        self.free_head = self.orders[slot as usize].next;
        self.orders[slot as usize] = Order {
            order_id: stored.order_id,
            client_order_id: stored.client_order_id,
            price,
            qty: stored.qty,
            filled: stored.filled,
            account: stored.account,
            account_index,
            book: book_index as u32,
            prev: NIL,
            next: NIL,
            account_prev: NIL,
            account_next: NIL,
            side,
            stp: stored.stp,
            flags: u8::from(stored.post_only)
                | if stored.expire_ns != 0 {
                    FLAG_EXPIRES
                } else {
                    0
                }
                | oco_flag(stored.oco_leg),
            kind: stop.map_or(
                SlotKind::of(OrderKind::Limit, stored.display_qty),
                |(kind, _, _)| SlotKind::of(kind, 0),
            ),
        };
        let (tif, stop_price) = stop.map_or((TimeInForce::Gtc, 0), |(_, tif, stop_price)| {
            (tif, stop_price)
        });
        self.extra[slot as usize] = Extra {
            stop_price,
            tif,
            display_qty: stored.display_qty,
            shown: stored.shown,
            expire_ns: 0,
        };
        if stored.expire_ns != 0 {
            self.schedule_expiry(slot, stored.expire_ns);
        }
        self.link_level_tail(slot);
        // The id maps and counts are filled now, for the duplicate checks above; the account
        // lists are linked by the caller once every order is known, in order-id order.
        self.by_order_id.insert(stored.order_id, slot);
        if stored.client_order_id != 0 {
            self.by_client_id
                .insert(client_key(stored.account, stored.client_order_id), slot);
        }
        self.books[book_index].orders_count += 1;
        self.orders_live += 1;
        Ok(slot)
    }
}

/// Snapshots without a stop: a snapshot begins at a command boundary in O(instruments), its
/// state is copied a page at a time (by [`Engine::snapshot_step`] between commands, or by the
/// first write to a page not yet copied), and the finished copy is a [`FrozenState`] that
/// another thread encodes while the engine runs on.
impl Engine {
    /// Allocates the buffers snapshot copies go into (as much memory again as the engine's
    /// order slots, price levels, account ids and resend window), so that the first snapshot
    /// does not. [`Engine::begin_snapshot`] calls it if nobody did before.
    pub fn reserve_snapshot_copy(&mut self) {
        if !matches!(self.snapshot_shell, SnapshotShell::NotReserved) {
            return;
        }
        self.orders.reserve_copy();
        self.extra.reserve_copy();
        self.account_ids.reserve_copy();
        self.resends.ring.reserve_copy();
        for book in &mut self.books {
            book.resting.levels.reserve_copy();
            book.stops.levels.reserve_copy();
        }
        let books = self
            .books
            .iter()
            .map(|book| FrozenBook::shell(book.spec.clone()))
            .collect();
        self.snapshot_shell = SnapshotShell::Here(FrozenState::shell(books));
    }

    /// Whether a snapshot can begin: none is being copied, and the last one was given back.
    pub fn snapshot_can_begin(&self) -> bool {
        !self.snapshot_copying && !matches!(self.snapshot_shell, SnapshotShell::Lent)
    }

    /// Begins a snapshot of the state as it is now (after the last command applied). Only
    /// scalars are copied here; the arrays follow page by page. Panics unless
    /// [`Engine::snapshot_can_begin`].
    pub fn begin_snapshot(&mut self) {
        assert!(
            self.snapshot_can_begin(),
            "a snapshot began while another is under way or lent out"
        );
        self.reserve_snapshot_copy();
        let SnapshotShell::Here(shell) = &mut self.snapshot_shell else {
            unreachable!("reserved above and not lent out");
        };
        shell.next_order_id = self.next_order_id;
        shell.now_ns = self.now_ns;
        shell.accounts_count = self.accounts.len();
        shell.resend_marks = self.resends.marks();
        for (frozen, book) in shell.books.iter_mut().zip(&self.books) {
            frozen.halted = book.halted;
            frozen.best_bid = book.resting.best_down;
            frozen.best_ask = book.resting.best_up;
            frozen.nearest_sell_stop = book.stops.best_down;
            frozen.nearest_buy_stop = book.stops.best_up;
            frozen.last_price = book.last_price;
        }
        self.orders.begin_copy();
        self.extra.begin_copy();
        self.account_ids.begin_copy();
        self.resends.ring.begin_copy();
        for book in &mut self.books {
            book.resting.levels.begin_copy();
            book.stops.levels.begin_copy();
        }
        self.snapshot_copying = true;
    }

    /// Whether a snapshot is being copied (begun, and not yet handed out by
    /// [`Engine::snapshot_step`]).
    pub fn snapshot_copying(&self) -> bool {
        self.snapshot_copying
    }

    /// Copies pages of the snapshot under way, about `budget_bytes` of them (at least one
    /// page while any is left). When the copy is finished, hands it out: give it back with
    /// [`Engine::give_back_snapshot`] before the next snapshot can begin. `None` while pages
    /// are left, or when no snapshot is being copied.
    pub fn snapshot_step(&mut self, budget_bytes: usize) -> Option<FrozenState> {
        if !self.snapshot_copying {
            return None;
        }
        let mut budget = budget_bytes.max(1);
        self.orders.step(&mut budget);
        if budget > 0 {
            self.extra.step(&mut budget);
        }
        if budget > 0 {
            self.account_ids.step(&mut budget);
        }
        if budget > 0 {
            self.resends.ring.step(&mut budget);
        }
        for book in &mut self.books {
            if budget == 0 {
                break;
            }
            book.resting.levels.step(&mut budget);
            if budget > 0 {
                book.stops.levels.step(&mut budget);
            }
        }
        let copying = self.orders.copying()
            || self.extra.copying()
            || self.account_ids.copying()
            || self.resends.ring.copying()
            || self
                .books
                .iter()
                .any(|book| book.resting.levels.copying() || book.stops.levels.copying());
        if copying {
            return None;
        }
        self.snapshot_copying = false;
        let SnapshotShell::Here(mut frozen) =
            std::mem::replace(&mut self.snapshot_shell, SnapshotShell::Lent)
        else {
            unreachable!("a copy under way has its shell");
        };
        frozen.orders = self.orders.take_copy();
        frozen.extra = self.extra.take_copy();
        frozen.account_ids = self.account_ids.take_copy();
        frozen.resend_ring = self.resends.ring.take_copy();
        for (frozen, book) in frozen.books.iter_mut().zip(&mut self.books) {
            frozen.levels = book.resting.levels.take_copy();
            frozen.stop_levels = book.stops.levels.take_copy();
        }
        Some(frozen)
    }

    /// Takes back the buffers of a snapshot [`Engine::snapshot_step`] handed out.
    pub fn give_back_snapshot(&mut self, mut frozen: FrozenState) {
        assert!(
            matches!(self.snapshot_shell, SnapshotShell::Lent)
                && frozen.books.len() == self.books.len(),
            "a snapshot given back that this engine did not lend out"
        );
        self.orders.give_back(std::mem::take(&mut frozen.orders));
        self.extra.give_back(std::mem::take(&mut frozen.extra));
        self.account_ids
            .give_back(std::mem::take(&mut frozen.account_ids));
        self.resends
            .ring
            .give_back(std::mem::take(&mut frozen.resend_ring));
        for (frozen, book) in frozen.books.iter_mut().zip(&mut self.books) {
            book.resting
                .levels
                .give_back(std::mem::take(&mut frozen.levels));
            book.stops
                .levels
                .give_back(std::mem::take(&mut frozen.stop_levels));
        }
        self.snapshot_shell = SnapshotShell::Here(frozen);
    }
}

impl StateSource for Engine {
    fn next_order_id(&self) -> u64 {
        self.next_order_id
    }

    fn now_ns(&self) -> u64 {
        self.now_ns
    }

    fn books_count(&self) -> usize {
        self.books.len()
    }

    fn spec(&self, book: usize) -> &InstrumentSpec {
        &self.books[book].spec
    }

    fn halted(&self, book: usize) -> bool {
        self.books[book].halted
    }

    fn account_ids(&self) -> &[u32] {
        &self.account_ids.as_slice()[..self.accounts.len()]
    }

    fn orders(&self) -> &[Order] {
        self.orders.as_slice()
    }

    fn extra(&self) -> &[Extra] {
        self.extra.as_slice()
    }

    fn levels(&self, book: usize) -> &[Level] {
        self.books[book].resting.levels.as_slice()
    }

    fn last_price(&self, book: usize) -> Option<i64> {
        self.books[book].last_price
    }

    fn stop_levels(&self, book: usize) -> &[Level] {
        self.books[book].stops.levels.as_slice()
    }

    fn stops_nearest_first(&self, book: usize, side: Side) -> impl Iterator<Item = usize> + '_ {
        Engine::stops_nearest_first(self, book, side)
    }

    fn levels_best_first(&self, book: usize, side: Side) -> impl Iterator<Item = usize> + '_ {
        Engine::levels_best_first(self, book, side)
    }

    fn resends(&self) -> ResendView<'_> {
        self.resends.view()
    }
}

impl BookKeeping for Engine {
    type Book = usize;
    type Order = u32;

    #[inline]
    fn book_of(&self, instrument: u32) -> Option<usize> {
        Engine::book_of(self, instrument)
    }

    fn check_place(&self, book: usize, command: &Command) -> Result<(), RejectReason> {
        Engine::check_place(self, book, command)
    }

    #[inline]
    fn resend_lookup(&self, account: u32, client_order_id: u64, floor: u64) -> ResendLookup {
        self.resends.lookup(account, client_order_id, floor)
    }

    #[inline]
    fn resend_record(&mut self, resend: StoredResend) {
        self.resends.record(resend);
    }

    fn resting(&self, order_id: u64) -> Option<OrderView> {
        self.by_order_id.get(order_id).map(|slot| self.view(slot))
    }

    fn by_id(&self, order_id: u64) -> Option<u32> {
        self.by_order_id.get(order_id)
    }

    fn unlink_oco(&mut self, slot: u32) {
        self.orders[slot as usize].flags &= !(FLAG_OCO_LIMIT | FLAG_OCO_STOP);
    }

    fn admit(&mut self, account: u32) -> u64 {
        self.admitted_account_index = self.account_index_or_register(account);
        let order_id = self.next_order_id;
        self.next_order_id += 1;
        order_id
    }

    #[inline]
    fn match_taker<S: EventSink + ?Sized>(
        &mut self,
        book: usize,
        taker: &mut OrderView,
        limit: Option<i64>,
        stp: SelfTradePrevention,
        out: &mut Emitter<'_, S>,
    ) -> bool {
        self.match_against_book(book, taker, limit, stp, out)
    }

    fn rest_new(&mut self, book: usize, taker: &OrderView, command: &Command) -> u64 {
        let slot = self.free_head;
        assert!(
            slot != NIL,
            "order slots exhausted past the engine_full check"
        );
        self.free_head = self.orders[slot as usize].next;
        self.orders[slot as usize] = Order {
            order_id: taker.order_id,
            client_order_id: command.client_order_id,
            price: taker.price,
            qty: command.qty,
            filled: taker.filled,
            account: command.account,
            account_index: self.admitted_account_index,
            book: book as u32,
            prev: NIL,
            next: NIL,
            account_prev: NIL,
            account_next: NIL,
            side: command.side,
            stp: command.stp,
            flags: u8::from(command.post_only)
                | if rules::expires(taker.tif) {
                    FLAG_EXPIRES
                } else {
                    0
                }
                | oco_flag(taker.oco_leg),
            kind: SlotKind::of(taker.kind, taker.display_qty),
        };
        if taker.waiting() || taker.display_qty != 0 || rules::expires(taker.tif) {
            self.extra[slot as usize] = Extra {
                stop_price: taker.stop_price,
                tif: taker.tif,
                display_qty: taker.display_qty,
                shown: taker.display_qty.min(taker.remaining()),
                expire_ns: 0,
            };
        }
        self.remember(slot);
        if let Some(expire_ns) = rules::expiry_of(&self.books[book].spec, command, self.now_ns) {
            self.schedule_expiry(slot, expire_ns);
        }
        self.link_level_tail(slot)
    }

    fn rest_stop(&mut self, book: usize, stop: &OrderView, command: &Command) {
        self.rest_new(book, stop, command);
    }

    fn find_order(&self, command: &Command) -> Result<u32, RejectReason> {
        Engine::find_order(self, command)
    }

    #[inline(always)]
    fn order(&self, slot: u32) -> (usize, OrderView, SelfTradePrevention, bool) {
        let order = &self.orders[slot as usize];
        (
            order.book as usize,
            self.view(slot),
            order.stp,
            order.post_only(),
        )
    }

    fn halted(&self, book: usize) -> bool {
        self.books[book].halted
    }

    fn spec(&self, book: usize) -> &InstrumentSpec {
        &self.books[book].spec
    }

    #[inline]
    fn last_price(&self, book: usize) -> Option<i64> {
        self.books[book].last_price
    }

    #[inline]
    fn set_last_price(&mut self, book: usize, price: i64) {
        self.books[book].last_price = Some(price);
    }

    #[inline]
    fn has_stops(&self, book: usize) -> bool {
        let stops = &self.books[book].stops;
        stops.best_down != NIL || stops.best_up != NIL
    }

    fn best_crosses(&self, book: usize, side: Side, limit: Option<i64>) -> bool {
        Engine::best_crosses(self, book, side, limit)
    }

    #[inline]
    fn nearest_stop(&self, book: usize, side: Side) -> Option<(u32, i64)> {
        let book = &self.books[book];
        let level_index = book.stops.best(stop_run(side))?;
        Some((
            book.stops.levels[level_index].head,
            book.price_of(level_index),
        ))
    }

    fn trigger(&mut self, slot: u32, entering: &OrderView) {
        self.unlink_level(slot);
        self.orders[slot as usize].kind = SlotKind::of(entering.kind, 0);
    }

    fn remove(&mut self, slot: u32) -> u64 {
        self.remove_order(slot)
    }

    fn resize(&mut self, slot: u32, resized: &OrderView, to_back: bool) -> u64 {
        let iceberg = self.orders[slot as usize].kind == SlotKind::Iceberg;
        if to_back {
            self.unlink_level(slot);
            self.orders[slot as usize].qty = resized.qty;
            if iceberg {
                // At the back with a fresh slice.
                let extra = &mut self.extra[slot as usize];
                extra.shown = extra.display_qty.min(resized.remaining());
            }
            return self.link_level_tail(slot);
        }
        let old_visible = self.visible(slot);
        self.orders[slot as usize].qty = resized.qty;
        if iceberg {
            // In its place, its slice never larger than what it has open.
            let extra = &mut self.extra[slot as usize];
            extra.shown = extra.shown.min(resized.remaining());
        }
        let new_visible = self.visible(slot);
        let book_index = self.orders[slot as usize].book as usize;
        let book = &mut self.books[book_index];
        let level_index = book.level_index(resized.price);
        let level = &mut book.resting.levels[level_index];
        level.total_qty -= old_visible - new_visible;
        level.total_qty
    }

    fn restop(&mut self, slot: u32, changed: &OrderView, to_back: bool) {
        if to_back {
            self.unlink_level(slot);
            let order = &mut self.orders[slot as usize];
            order.price = changed.price;
            order.qty = changed.qty;
            self.extra[slot as usize].stop_price = changed.stop_price;
            self.link_level_tail(slot);
            return;
        }
        // Same stop price, quantity not grown: it keeps its place.
        let order = &mut self.orders[slot as usize];
        let shrunk_by = order.remaining() - changed.remaining();
        order.price = changed.price;
        order.qty = changed.qty;
        let book = &mut self.books[order.book as usize];
        let level_index = book.level_index(changed.stop_price);
        book.stops.levels[level_index].total_qty -= shrunk_by;
    }

    #[inline]
    fn lift(&mut self, slot: u32, taker: &OrderView) -> u64 {
        let old_total_qty = self.unlink_level(slot);
        self.orders[slot as usize].price = taker.price;
        self.orders[slot as usize].qty = taker.qty;
        old_total_qty
    }

    #[inline]
    fn settle_lifted(&mut self, slot: u32, taker: &OrderView, done: bool) -> Option<u64> {
        self.orders[slot as usize].filled = taker.filled;
        if done {
            self.forget(slot);
            None
        } else {
            if self.orders[slot as usize].kind == SlotKind::Iceberg {
                // It rests at its new price with a fresh slice.
                let extra = &mut self.extra[slot as usize];
                extra.shown = extra.display_qty.min(taker.remaining());
            }
            Some(self.link_level_tail(slot))
        }
    }
}
