//! The L2 book kept from `level` events by the Publisher stage, for the admin surface.
//!
//! It starts from the matcher's own depth when the pipeline starts and then applies every
//! `level` event the Publisher handles, once per ring batch under one lock, so readers see the
//! book as of the last published batch. (The event stream alone rebuilds the L2 book exactly; a
//! matcher test checks that.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use ringmatch_matcher::Engine;
use ringmatch_proto::{Event, EventType, Side};

/// Price levels, best first: (price in ticks, total quantity in lots).
pub type Levels = Vec<(i64, u64)>;

/// One instrument's L2 book: price → total quantity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L2Book {
    /// Bid levels.
    pub bids: BTreeMap<i64, u64>,
    /// Ask levels.
    pub asks: BTreeMap<i64, u64>,
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
        (
            self.bids
                .iter()
                .rev()
                .take(levels_max)
                .map(|(p, q)| (*p, *q))
                .collect(),
            self.asks
                .iter()
                .take(levels_max)
                .map(|(p, q)| (*p, *q))
                .collect(),
        )
    }
}

/// The L2 books of every instrument.
#[derive(Debug, Default)]
pub struct MarketData {
    books: Mutex<HashMap<u32, L2Book>>,
}

impl MarketData {
    /// The books as the engine holds them now.
    pub fn from_engine(engine: &Engine) -> MarketData {
        let mut books = HashMap::new();
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
        }
    }

    /// Applies a batch of level events.
    pub fn apply_all(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
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

    /// A copy of one instrument's book, if the instrument exists.
    pub fn book(&self, instrument: u32) -> Option<L2Book> {
        self.books
            .lock()
            .expect("market data lock is never poisoned")
            .get(&instrument)
            .cloned()
    }
}
