//! The L2 book kept from `level` events by the Publisher stage, and the newest trades from its
//! `fill` events, for the admin surface.
//!
//! It starts from the matcher's own depth when the pipeline starts and then applies every
//! `level` event the Publisher handles, once per ring batch under one lock, so readers see the
//! book as of the last published batch. (The event stream alone rebuilds the L2 book exactly; a
//! matcher test checks that.)
//!
//! Levels are kept in hash maps, not ordered maps: the Publisher applies every level event
//! (one or more per command), while the book is read only when someone asks `/book`, so the
//! reader sorts. A flat-out profile had the ordered maps' inserts and removes as the
//! Publisher's largest cost.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use ringmatch_matcher::Engine;
use ringmatch_proto::{Event, EventType, Side};

/// Price levels, best first: (price in ticks, total quantity in lots).
pub type Levels = Vec<(i64, u64)>;

/// A multiplicative hash for prices and instrument ids. The keys are integers the matcher has
/// already validated (prices inside the instrument's band), so there is no untrusted input to
/// defend against.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

/// 2^64 divided by the golden ratio: odd, so distinct keys keep distinct low bits.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(GOLDEN);
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_i64(&mut self, value: i64) {
        self.write_u64(value as u64);
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0 ^ value).wrapping_mul(GOLDEN);
    }
}

type IdHash = BuildHasherDefault<IdHasher>;

/// One instrument's L2 book: price → total quantity per side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L2Book {
    bids: HashMap<i64, u64, IdHash>,
    asks: HashMap<i64, u64, IdHash>,
}

impl L2Book {
    /// Applies one level event.
    pub fn apply(&mut self, side: Side, price: i64, total_qty: u64) {
        let levels = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        if total_qty == 0 {
            levels.remove(&price);
        } else {
            levels.insert(price, total_qty);
        }
    }

    /// The best `levels_max` bids (highest first) and asks (lowest first).
    pub fn top(&self, levels_max: usize) -> (Levels, Levels) {
        let sorted = |levels: &HashMap<i64, u64, IdHash>, highest_first: bool| {
            let mut levels: Levels = levels.iter().map(|(p, q)| (*p, *q)).collect();
            if highest_first {
                levels.sort_unstable_by_key(|(price, _)| std::cmp::Reverse(*price));
            } else {
                levels.sort_unstable_by_key(|(price, _)| *price);
            }
            levels.truncate(levels_max);
            levels
        };
        (sorted(&self.bids, true), sorted(&self.asks, false))
    }
}

/// One trade (a `fill` event), as the admin surface shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trade {
    /// The sequence of the command that traded.
    pub seq: u64,
    /// The command's ingress timestamp (nanoseconds since the Unix epoch).
    pub timestamp_ns: u64,
    /// Instrument.
    pub instrument: u32,
    /// The taker's side.
    pub taker_side: Side,
    /// Price in ticks.
    pub price: i64,
    /// Quantity in lots.
    pub qty: u64,
}

/// How many of the newest trades [`MarketData`] keeps.
pub const TRADES_KEPT: usize = 200;

/// The L2 books of every instrument and the newest trades.
#[derive(Debug, Default)]
pub struct MarketData {
    books: Mutex<HashMap<u32, L2Book, IdHash>>,
    trades: Mutex<Trades>,
}

#[derive(Debug, Default)]
struct Trades {
    newest: VecDeque<Trade>,
    count: u64,
}

impl MarketData {
    /// The books as the engine holds them now.
    pub fn from_engine(engine: &Engine) -> MarketData {
        let mut books = HashMap::default();
        for spec in &engine.config().instruments {
            let mut book = L2Book::default();
            for side in [Side::Buy, Side::Sell] {
                for (price, qty, _) in engine.depth(spec.id, side, usize::MAX).unwrap_or_default() {
                    book.apply(side, price, qty);
                }
            }
            books.insert(spec.id, book);
        }
        MarketData {
            books: Mutex::new(books),
            trades: Mutex::new(Trades {
                newest: VecDeque::with_capacity(TRADES_KEPT),
                count: 0,
            }),
        }
    }

    /// Applies a batch of level and fill events (others are ignored).
    pub fn apply_all(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        {
            let mut books = self
                .books
                .lock()
                .expect("market data lock is never poisoned");
            for event in events {
                if let (EventType::Level, Some(side)) = (event.event_type, event.side) {
                    books
                        .entry(event.instrument)
                        .or_default()
                        .apply(side, event.price, event.qty);
                }
            }
        }
        let mut trades = self
            .trades
            .lock()
            .expect("market data lock is never poisoned");
        for event in events {
            if let (EventType::Fill, Some(taker_side)) = (event.event_type, event.side) {
                if trades.newest.len() == TRADES_KEPT {
                    trades.newest.pop_front();
                }
                trades.newest.push_back(Trade {
                    seq: event.seq,
                    timestamp_ns: event.timestamp_ns,
                    instrument: event.instrument,
                    taker_side,
                    price: event.price,
                    qty: event.qty,
                });
                trades.count += 1;
            }
        }
    }

    /// The newest trades (at most `count`, newest first), and how many trades there were
    /// since the pipeline started.
    pub fn recent_trades(&self, count: usize) -> (Vec<Trade>, u64) {
        let trades = self
            .trades
            .lock()
            .expect("market data lock is never poisoned");
        (
            trades.newest.iter().rev().take(count).copied().collect(),
            trades.count,
        )
    }

    /// The instruments with a book, in id order.
    pub fn instruments(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .books
            .lock()
            .expect("market data lock is never poisoned")
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// A copy of one instrument's book, if the instrument exists.
    pub fn book(&self, instrument: u32) -> Option<L2Book> {
        self.books
            .lock()
            .expect("market data lock is never poisoned")
            .get(&instrument)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::L2Book;
    use ringmatch_proto::Side;

    #[test]
    fn top_gives_the_best_levels_first_and_drops_emptied_ones() {
        let mut book = L2Book::default();
        for (side, price, qty) in [
            (Side::Buy, 100, 5),
            (Side::Buy, 102, 7),
            (Side::Buy, 99, 1),
            (Side::Buy, 101, 3),
            (Side::Sell, 105, 2),
            (Side::Sell, 103, 4),
            (Side::Sell, 104, 6),
            (Side::Buy, 102, 8),
            (Side::Buy, 101, 0),
            (Side::Sell, 103, 0),
        ] {
            book.apply(side, price, qty);
        }
        assert_eq!(
            book.top(10),
            (vec![(102, 8), (100, 5), (99, 1)], vec![(104, 6), (105, 2)])
        );
        assert_eq!(
            book.top(2),
            (vec![(102, 8), (100, 5)], vec![(104, 6), (105, 2)])
        );
        assert_eq!(book.top(0), (vec![], vec![]));
    }
}
