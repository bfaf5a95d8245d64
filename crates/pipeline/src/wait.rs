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
    /// Spin briefly, then yield for up to 100 us, then sleep, first briefly and then longer
    /// while idle, at most 200 us at a time (the default): low latency under load, little CPU
    /// when idle, and safe on machines with fewer cores than stages.
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
/// The first sleep of an idle stage. Sleeps then double while the stage stays idle, up to
/// [`PHASED_SLEEP`]: a stage that just ran wakes quickly, a long-idle one costs little CPU.
pub const PHASED_SLEEP_FIRST: Duration = Duration::from_micros(5);
/// The bound on one sleep: the most latency a long-idle stage adds when work arrives.
pub const PHASED_SLEEP: Duration = Duration::from_micros(200);

thread_local! {
    /// (sequence waited for, empty polls so far, when the yielding began) of this thread.
    static PHASE: Cell<(Sequence, u32, Option<Instant>)> = const { Cell::new((-1, 0, None)) };
    /// Whether this thread's timer slack is already set.
    static TIMER_SLACK_SET: Cell<bool> = const { Cell::new(false) };
}

/// Asks the kernel to wake this thread's sleeps within about a microsecond (the default slack
/// of 50 us would make every short sleep at least that long). Best effort: a failure leaves
/// the default, which only makes sleeps longer. Once per thread; later calls cost a
/// thread-local read.
pub fn tighten_timer_slack() {
    if TIMER_SLACK_SET.get() {
        return;
    }
    TIMER_SLACK_SET.set(true);
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and changes only this thread's
    // timer slack; no memory is passed to the kernel.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong);
    }
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
    let idle = since.elapsed();
    if idle < PHASED_YIELD_FOR {
        std::thread::yield_now();
    } else {
        tighten_timer_slack();
        // Sleep about as long as the stage has already been idle past the yield window,
        // between the first and the longest sleep.
        let sleep = (idle - PHASED_YIELD_FOR).clamp(PHASED_SLEEP_FIRST, PHASED_SLEEP);
        std::thread::sleep(sleep);
    }
}
