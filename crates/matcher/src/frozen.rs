//! The canonical state encoding, written once for two sources: the live [`crate::Engine`] and
//! a [`FrozenState`], the copy of an engine's state at a command boundary that a snapshot
//! takes without stopping the engine (see `Engine::begin_snapshot`).
//!
//! A frozen copy has no level bitmaps: it finds a side's levels by scanning the level array
//! outward from that side's best price. The book is never crossed, so every non-empty level at
//! or below the best bid is a bid and every one at or above the best ask is an ask.

use ringmatch_proto::Side;

use crate::config::InstrumentSpec;
use crate::engine::{Level, Order, NIL};
use crate::resend::{ResendMarks, ResendView};
use crate::state::{StateHasher, StateWriter, StoredOrder, StoredResend};

/// What the canonical encoding reads.
pub(crate) trait StateSource {
    fn next_order_id(&self) -> u64;
    fn books_count(&self) -> usize;
    fn spec(&self, book: usize) -> &InstrumentSpec;
    fn halted(&self, book: usize) -> bool;
    /// The registered accounts' ids, in registration order.
    fn account_ids(&self) -> &[u32];
    /// The order slots.
    fn orders(&self) -> &[Order];
    /// A book's price levels by index.
    fn levels(&self, book: usize) -> &[Level];
    /// Indexes of one side's non-empty levels, best price first.
    fn levels_best_first(&self, book: usize, side: Side) -> impl Iterator<Item = usize> + '_;
    fn resends(&self) -> ResendView<'_>;
}

/// Writes the canonical state of `source` (see `docs/snapshot-format.md`).
pub(crate) fn write_state<S: StateSource, W: StateWriter>(source: &S, writer: &mut W) {
    writer.header();
    writer.u64(source.next_order_id());
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
    for book in 0..source.books_count() {
        let spec = source.spec(book);
        let levels = source.levels(book);
        for side in [Side::Buy, Side::Sell] {
            writer.u32(source.levels_best_first(book, side).count() as u32);
            for level_index in source.levels_best_first(book, side) {
                let level = &levels[level_index];
                writer.i64(spec.min_price + level_index as i64 * spec.tick_size);
                writer.u32(level.orders_count);
                let mut cursor = level.head;
                while cursor != NIL {
                    let order = &orders[cursor as usize];
                    writer.order(&StoredOrder {
                        order_id: order.order_id,
                        client_order_id: order.client_order_id,
                        account: order.account,
                        qty: order.qty,
                        filled: order.filled,
                        stp: order.stp,
                        post_only: order.post_only,
                    });
                    cursor = order.next;
                }
            }
        }
    }
    let resends = source.resends();
    writer.u64(resends.forgotten_through());
    writer.u32(resends.len() as u32);
    for resend in resends.entries() {
        writer.resend(resend);
    }
}

/// One book of a frozen state.
pub(crate) struct FrozenBook {
    pub spec: InstrumentSpec,
    pub halted: bool,
    pub best_bid: u32,
    pub best_ask: u32,
    pub levels: Box<[Level]>,
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
        }
    }
}

/// An engine's whole state as it was after one command, copied while the engine went on.
/// Encode it ([`FrozenState::encode`]) on any thread, then give it back to the engine it
/// came from (`Engine::give_back_snapshot`), whose next snapshot reuses its memory.
pub struct FrozenState {
    pub(crate) next_order_id: u64,
    pub(crate) books: Vec<FrozenBook>,
    pub(crate) accounts_count: usize,
    pub(crate) account_ids: Box<[u32]>,
    pub(crate) orders: Box<[Order]>,
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
            books,
            accounts_count: 0,
            account_ids: Box::default(),
            orders: Box::default(),
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

    fn levels(&self, book: usize) -> &[Level] {
        &self.books[book].levels
    }

    fn levels_best_first(&self, book: usize, side: Side) -> impl Iterator<Item = usize> + '_ {
        let book = &self.books[book];
        let levels = &book.levels;
        let live = move |index: &usize| levels[*index].orders_count > 0;
        // Bids from the best down, asks from the best up.
        let (range, down) = match side {
            Side::Buy if book.best_bid != NIL => (0..book.best_bid as usize + 1, true),
            Side::Sell if book.best_ask != NIL => (book.best_ask as usize..levels.len(), false),
            _ => (0..0, false),
        };
        let (up, down) = if down {
            (None, Some(range.rev().filter(live)))
        } else {
            (Some(range.filter(live)), None)
        };
        up.into_iter().flatten().chain(down.into_iter().flatten())
    }

    fn resends(&self) -> ResendView<'_> {
        ResendView {
            ring: &self.resend_ring,
            marks: self.resend_marks,
        }
    }
}
