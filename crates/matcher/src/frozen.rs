//! The canonical state encoding, written once for two sources: the live [`crate::Engine`] and
//! a [`FrozenState`], the copy of an engine's state at a command boundary that a snapshot
//! takes without stopping the engine (see `Engine::begin_snapshot`).
//!
//! A frozen copy has no level bitmaps: it finds a side's levels by scanning the level array
//! outward from that side's best price. The book is never crossed, so every non-empty level at
//! or below the best bid is a bid and every one at or above the best ask is an ask. Waiting
//! stops are found the same way: buy stops lie above the last trade price and sell stops
//! below it, so every non-empty stop level from the nearest buy stop up holds buy stops and
//! every one from the nearest sell stop down holds sell stops.

use ringmatch_proto::Side;

use crate::config::InstrumentSpec;
use crate::engine::{Extra, Level, Order, SlotKind, NIL};
use crate::resend::{ResendMarks, ResendView};
use crate::state::{StateHasher, StateWriter, StoredOrder, StoredResend, StoredStop};

/// What the canonical encoding reads.
pub(crate) trait StateSource {
    fn next_order_id(&self) -> u64;
    /// The engine's time.
    fn now_ns(&self) -> u64;
    fn books_count(&self) -> usize;
    fn spec(&self, book: usize) -> &InstrumentSpec;
    fn halted(&self, book: usize) -> bool;
    /// The registered accounts' ids, in registration order.
    fn account_ids(&self) -> &[u32];
    /// The order slots.
    fn orders(&self) -> &[Order];
    /// The waiting stops' stop prices and times in force, by slot.
    fn extra(&self) -> &[Extra];
    /// A book's price levels by index.
    fn levels(&self, book: usize) -> &[Level];
    /// Indexes of one side's non-empty levels, best price first.
    fn levels_best_first(&self, book: usize, side: Side) -> impl Iterator<Item = usize> + '_;
    /// A book's last trade price.
    fn last_price(&self, book: usize) -> Option<i64>;
    /// A book's stop price levels by index.
    fn stop_levels(&self, book: usize) -> &[Level];
    /// Indexes of one side's non-empty stop price levels, nearest the last trade first.
    fn stops_nearest_first(&self, book: usize, side: Side) -> impl Iterator<Item = usize> + '_;
    fn resends(&self) -> ResendView<'_>;
}

/// Writes the canonical state of `source` (see `docs/snapshot-format.md`).
pub(crate) fn write_state<S: StateSource, W: StateWriter>(source: &S, writer: &mut W) {
    writer.header();
    writer.u64(source.next_order_id());
    writer.u64(source.now_ns());
    writer.u32(source.books_count() as u32);
    for book in 0..source.books_count() {
        writer.instrument(source.spec(book), source.halted(book));
    }
    let account_ids = source.account_ids();
    writer.u32(account_ids.len() as u32);
    for &id in account_ids {
        writer.u32(id);
    }
    let orders = source.orders();
    let extra = source.extra();
    for book in 0..source.books_count() {
        let spec = source.spec(book);
        for side in [Side::Buy, Side::Sell] {
            let queue = || source.levels_best_first(book, side);
            write_queue(
                writer,
                spec,
                source.levels(book),
                queue,
                orders,
                |writer, slot| {
                    writer.order(&stored(&orders[slot], &extra[slot]));
                },
            );
        }
        writer.last_price(source.last_price(book));
        for side in [Side::Buy, Side::Sell] {
            let queue = || source.stops_nearest_first(book, side);
            write_queue(
                writer,
                spec,
                source.stop_levels(book),
                queue,
                orders,
                |writer, slot| {
                    let order = &orders[slot];
                    writer.stop(&StoredStop {
                        order: stored(order, &extra[slot]),
                        kind: order.kind.order_kind(),
                        tif: extra[slot].tif,
                        price: order.price,
                    });
                },
            );
        }
    }
    let resends = source.resends();
    writer.u64(resends.forgotten_through());
    writer.u32(resends.len() as u32);
    for resend in resends.entries() {
        writer.resend(resend);
    }
}

/// Writes one queue of a ladder: its level count, then each level (price, order count, and
/// each order by `write_order`, in queue order), in the order `queue()` gives them.
fn write_queue<W: StateWriter, I: Iterator<Item = usize>>(
    writer: &mut W,
    spec: &InstrumentSpec,
    levels: &[Level],
    queue: impl Fn() -> I,
    orders: &[Order],
    mut write_order: impl FnMut(&mut W, usize),
) {
    writer.u32(queue().count() as u32);
    for level_index in queue() {
        let level = &levels[level_index];
        writer.i64(spec.min_price + level_index as i64 * spec.tick_size);
        writer.u32(level.orders_count);
        let mut cursor = level.head;
        while cursor != NIL {
            write_order(writer, cursor as usize);
            cursor = orders[cursor as usize].next;
        }
    }
}

fn stored(order: &Order, extra: &Extra) -> StoredOrder {
    let iceberg = order.kind == SlotKind::Iceberg;
    StoredOrder {
        order_id: order.order_id,
        client_order_id: order.client_order_id,
        account: order.account,
        qty: order.qty,
        filled: order.filled,
        stp: order.stp,
        post_only: order.post_only(),
        display_qty: if iceberg { extra.display_qty } else { 0 },
        shown: if iceberg { extra.shown } else { 0 },
        expire_ns: if order.expires() { extra.expire_ns } else { 0 },
        oco_leg: order.oco_leg(),
    }
}

/// The non-empty levels of one queue of a frozen ladder, from its best level outward: down
/// from `best` or up from it (NIL: none).
fn scan_outward(levels: &[Level], best: u32, down: bool) -> impl Iterator<Item = usize> + '_ {
    let live = move |index: &usize| levels[*index].orders_count > 0;
    let (range, down) = match best {
        NIL => (0..0, false),
        best if down => (0..best as usize + 1, true),
        best => (best as usize..levels.len(), false),
    };
    let (up, down) = if down {
        (None, Some(range.rev().filter(live)))
    } else {
        (Some(range.filter(live)), None)
    };
    up.into_iter().flatten().chain(down.into_iter().flatten())
}

/// One book of a frozen state.
pub(crate) struct FrozenBook {
    pub spec: InstrumentSpec,
    pub halted: bool,
    pub best_bid: u32,
    pub best_ask: u32,
    pub levels: Box<[Level]>,
    pub last_price: Option<i64>,
    /// The lowest buy stop's level (buy stops lie above the last trade price).
    pub nearest_buy_stop: u32,
    /// The highest sell stop's level (sell stops lie below it).
    pub nearest_sell_stop: u32,
    pub stop_levels: Box<[Level]>,
}

impl FrozenBook {
    /// A book with no levels yet (they arrive when a copy is finished).
    pub fn shell(spec: InstrumentSpec) -> FrozenBook {
        FrozenBook {
            spec,
            halted: false,
            best_bid: NIL,
            best_ask: NIL,
            levels: Box::default(),
            last_price: None,
            nearest_buy_stop: NIL,
            nearest_sell_stop: NIL,
            stop_levels: Box::default(),
        }
    }
}

/// An engine's whole state as it was after one command, copied while the engine went on.
/// Encode it ([`FrozenState::encode`]) on any thread, then give it back to the engine it
/// came from (`Engine::give_back_snapshot`), whose next snapshot reuses its memory.
pub struct FrozenState {
    pub(crate) next_order_id: u64,
    pub(crate) now_ns: u64,
    pub(crate) books: Vec<FrozenBook>,
    pub(crate) accounts_count: usize,
    pub(crate) account_ids: Box<[u32]>,
    pub(crate) orders: Box<[Order]>,
    pub(crate) extra: Box<[Extra]>,
    pub(crate) resend_ring: Box<[StoredResend]>,
    pub(crate) resend_marks: ResendMarks,
}

impl std::fmt::Debug for FrozenState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FrozenState")
            .field("next_order_id", &self.next_order_id)
            .field("books_count", &self.books.len())
            .field("accounts_count", &self.accounts_count)
            .finish_non_exhaustive()
    }
}

impl FrozenState {
    /// A state without its arrays, to be filled by a copy.
    pub(crate) fn shell(books: Vec<FrozenBook>) -> FrozenState {
        FrozenState {
            next_order_id: 0,
            now_ns: 0,
            books,
            accounts_count: 0,
            account_ids: Box::default(),
            orders: Box::default(),
            extra: Box::default(),
            resend_ring: Box::default(),
            resend_marks: ResendMarks::default(),
        }
    }

    /// Writes the canonical state, exactly as the engine would have at the copy's moment.
    pub fn write_state<W: StateWriter>(&self, writer: &mut W) {
        write_state(self, writer);
    }

    /// The canonical state's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.write_state(&mut bytes);
        bytes
    }

    /// The state hash, exactly as `Engine::state_hash` would have given at the copy's moment.
    pub fn state_hash(&self) -> u64 {
        let mut hasher = StateHasher::new();
        self.write_state(&mut hasher);
        hasher.finish()
    }
}

impl StateSource for FrozenState {
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
        &self.account_ids[..self.accounts_count]
    }

    fn orders(&self) -> &[Order] {
        &self.orders
    }

    fn extra(&self) -> &[Extra] {
        &self.extra
    }

    fn levels(&self, book: usize) -> &[Level] {
        &self.books[book].levels
    }

    fn levels_best_first(&self, book: usize, side: Side) -> impl Iterator<Item = usize> + '_ {
        // The book is never crossed: bids from the best down, asks from the best up.
        let book = &self.books[book];
        match side {
            Side::Buy => scan_outward(&book.levels, book.best_bid, true),
            Side::Sell => scan_outward(&book.levels, book.best_ask, false),
        }
    }

    fn last_price(&self, book: usize) -> Option<i64> {
        self.books[book].last_price
    }

    fn stop_levels(&self, book: usize) -> &[Level] {
        &self.books[book].stop_levels
    }

    fn stops_nearest_first(&self, book: usize, side: Side) -> impl Iterator<Item = usize> + '_ {
        // Buy stops lie above the last trade price and sell stops below it.
        let book = &self.books[book];
        match side {
            Side::Buy => scan_outward(&book.stop_levels, book.nearest_buy_stop, false),
            Side::Sell => scan_outward(&book.stop_levels, book.nearest_sell_stop, true),
        }
    }

    fn resends(&self) -> ResendView<'_> {
        ResendView {
            ring: &self.resend_ring,
            marks: self.resend_marks,
        }
    }
}
