//! The deterministic matching state machine of ringmatch.
//!
//! [`Engine::apply`] takes one [`Command`] and pushes its [`Event`]s to an [`EventSink`]:
//! price-time priority limit order books per instrument, market / limit orders with GTC, IOC
//! and FOK, post-only, self-trade prevention, stop-market and stop-limit orders (triggered by
//! the last trade price, nearest first, in cascades), icebergs (a slice shown at a time),
//! cancel, replace, mass cancel, halt and resume, and a resend window that gives a client's
//! possible resend its original's outcome.
//! The rules are written down in `docs/matching-rules.md`.
//!
//! The matcher is a pure function of (state, command): it does not read the clock (timestamps
//! arrive inside commands), does no I/O, starts no threads and uses no randomness, so replaying
//! the same commands always yields the same events and the same [`Engine::state_hash`]. After
//! construction it does not allocate while processing commands: every limit is fixed up front
//! in [`Limits`] and hitting one is a rejection, not growth.
//!
//! [`NaiveBook`] is a deliberately simple reference implementation of the same rules, used by
//! the tests to check the fast engine on random command streams. [`workload`] builds
//! deterministic synthetic command streams for benchmarks and tests.
//!
//! This crate knows nothing of threads, files, sockets, clocks, journals or Kafka.

mod bitmap;
mod config;
mod engine;
mod frozen;
mod naive;
mod paged;
mod resend;
mod rules;
mod state;
mod table;
pub mod workload;

pub use config::{
    ConfigError, InstrumentSpec, Limits, MatcherConfig, ORDERS_MAX_LIMIT, PRICE_LEVELS_PER_BOOK_MAX,
};
pub use engine::Engine;
pub use frozen::FrozenState;
pub use naive::NaiveBook;
pub use ringmatch_proto::{Command, Event};
pub use state::{
    StateError, StateHasher, StateReader, StateWriter, StoredOrder, StoredResend, StoredStop,
    STATE_MAGIC, STATE_VERSION, STATE_VERSION_OLDEST,
};

/// Where the matcher puts the events of a command.
pub trait EventSink {
    /// Takes one event. Called in event order; must not fail.
    fn push(&mut self, event: &Event);
}

impl EventSink for Vec<Event> {
    #[inline]
    fn push(&mut self, event: &Event) {
        Vec::push(self, *event);
    }
}

/// A sink that only counts events and folds them into a checksum (for benchmarks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CountingSink {
    /// Events seen.
    pub events_count: u64,
    /// A running checksum over event types, order ids and quantities.
    pub checksum: u64,
}

impl EventSink for CountingSink {
    #[inline]
    fn push(&mut self, event: &Event) {
        self.events_count += 1;
        self.checksum = self
            .checksum
            .rotate_left(7)
            .wrapping_add(event.order_id ^ event.qty ^ u64::from(event.event_type.code()));
    }
}

/// The common face of [`Engine`] and [`NaiveBook`], so tests and tools can drive either.
pub trait OrderMatcher {
    /// Runs one command with sequence `seq`.
    fn apply_command<S: EventSink + ?Sized>(&mut self, seq: u64, command: &Command, sink: &mut S);
    /// The state hash.
    fn hash(&self) -> u64;
    /// The canonical state bytes.
    fn state_bytes(&self) -> Vec<u8>;
}

impl OrderMatcher for Engine {
    fn apply_command<S: EventSink + ?Sized>(&mut self, seq: u64, command: &Command, sink: &mut S) {
        self.apply(seq, command, sink);
    }
    fn hash(&self) -> u64 {
        self.state_hash()
    }
    fn state_bytes(&self) -> Vec<u8> {
        self.encode_state()
    }
}

impl OrderMatcher for NaiveBook {
    fn apply_command<S: EventSink + ?Sized>(&mut self, seq: u64, command: &Command, sink: &mut S) {
        self.apply(seq, command, sink);
    }
    fn hash(&self) -> u64 {
        self.state_hash()
    }
    fn state_bytes(&self) -> Vec<u8> {
        self.encode_state()
    }
}
