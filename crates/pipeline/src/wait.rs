//! Wait strategies for the stages, chosen at run time from configuration.
//!
//! The `disruptor` crate calls `wait_for` in a loop while a stage has nothing to do, with no
//! state of its own between calls, so the phased strategy keeps its per-thread progress in a
//! thread-local: how long this thread has been waiting for the same sequence.

use std::cell::Cell;
use std::time::{Duration, Instant};

use disruptor::wait_strategies::WaitStrategy;
use disruptor::Sequence;

/// Which wait strategy the stages use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitKind {
    /// Spin without pause: lowest latency, burns a whole core per stage. Only for machines
    /// with a dedicated core per stage.
    BusySpin,
    /// Yield the core to other threads on every empty poll.
    Yielding,
    /// Spin briefly, then yield for up to 100 us, then sleep at most 50 us at a time
    /// (the default): low latency under load, little CPU when idle, and safe on machines with
    /// fewer cores than stages.
    Phased,
}

impl WaitKind {
    /// Parses `busy_spin`, `yielding` or `phased`.
    pub fn from_name(name: &str) -> Option<WaitKind> {
        match name {
            "busy_spin" => Some(WaitKind::BusySpin),
            "yielding" => Some(WaitKind::Yielding),
            "phased" => Some(WaitKind::Phased),
            _ => None,
        }
    }

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            WaitKind::BusySpin => "busy_spin",
            WaitKind::Yielding => "yielding",
            WaitKind::Phased => "phased",
        }
    }
}

/// Empty polls spent spinning before the phased strategy starts yielding. Short: on a machine
/// with fewer cores than busy threads, a spinning stage takes the core its producer needs.
const PHASED_SPIN_COUNT: u32 = 64;
/// How long a stage yields (staying ready to run) before it starts sleeping. Long enough that
/// a busy pipeline rarely sleeps between batches; short, because on a machine with fewer cores
/// than stages every yielding stage delays the stage that has work.
pub const PHASED_YIELD_FOR: Duration = Duration::from_micros(100);
/// The bound on one sleep: the most latency an idle stage adds when work arrives.
pub const PHASED_SLEEP: Duration = Duration::from_micros(50);

thread_local! {
    /// (sequence waited for, empty polls so far, when the yielding began) of this thread.
    static PHASE: Cell<(Sequence, u32, Option<Instant>)> = const { Cell::new((-1, 0, None)) };
}

/// The configured strategy, as a `disruptor` wait strategy.
#[derive(Debug, Clone, Copy)]
pub struct ConfiguredWait(pub WaitKind);

impl WaitStrategy for ConfiguredWait {
    #[inline]
    fn wait_for(&self, sequence: Sequence) {
        match self.0 {
            WaitKind::BusySpin => std::hint::spin_loop(),
            WaitKind::Yielding => std::thread::yield_now(),
            WaitKind::Phased => phased_wait(sequence),
        }
    }
}

fn phased_wait(sequence: Sequence) {
    let (waiting_for, polls, yielding_since) = PHASE.get();
    let (polls, yielding_since) = if waiting_for == sequence {
        (polls.saturating_add(1), yielding_since)
    } else {
        (0, None)
    };
    if polls < PHASED_SPIN_COUNT {
        PHASE.set((sequence, polls, None));
        std::hint::spin_loop();
        return;
    }
    let since = yielding_since.unwrap_or_else(Instant::now);
    PHASE.set((sequence, polls, Some(since)));
    if since.elapsed() < PHASED_YIELD_FOR {
        std::thread::yield_now();
    } else {
        std::thread::sleep(PHASED_SLEEP);
    }
}
