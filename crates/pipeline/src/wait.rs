//! Wait strategies for the stages, chosen at run time from configuration.
//!
//! The `disruptor` crate calls `wait_for` in a loop while a stage has nothing to do, with no
//! state of its own between calls, so the phased strategy keeps its per-thread progress in a
//! thread-local: how many empty polls this thread has made for the same sequence, and the
//! [`Signal`]s it parks on and announces its progress on.
//!
//! The phased strategy spins briefly and then parks. A stage whose thread may run on more than
//! one core has no yield phase: on this kernel (EEVDF scheduler) a single `sched_yield` per
//! idle period made a stage that was woken later wait behind other runnable threads, and
//! gateway latency at 50,000 commands/s went from a p50 of about 170 us to 500-900 us
//! (docs/benchmarks.md).
//!
//! A stage restricted to a single core does not spin: where other stages share the core,
//! spinning only delays them, and where it has the core to itself, yielding (below) keeps the
//! core as busy while letting any other thread there run. When the threads that submit
//! commands were last seen on another core, the core is the pipeline's own, and an idle stage
//! keeps it awake by yielding for [`CORE_POLL`] before it parks: on a virtual machine, waking a
//! halted core costs more than the work of a command (15-20 us here), and a stage that catches
//! its next command while yielding needs no wake-up at all. When the submitters share the
//! core (the whole service placed on one core), yielding would take turns from them, and
//! stages park at once.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
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
    /// Spin briefly (64 polls), then park until the stage this one waits on makes progress,
    /// at most 2 ms at a time (the default): no CPU while idle, no scheduler turns taken from
    /// the stages that have work, and safe on machines with fewer cores than stages. A thread
    /// that is not a pipeline stage sleeps instead, 5 us at first and up to 200 us. A stage
    /// restricted to one core does not spin; while commands are submitted from another core,
    /// it yields for up to 50 us before it parks (see the module documentation).
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

/// Empty polls spent spinning before the phased strategy parks. Short: on a machine with
/// fewer cores than busy threads, a spinning stage takes the core its producer needs.
const PHASED_SPIN_COUNT: u32 = 64;
/// The first sleep of an idle thread that is not a bound stage. Sleeps then grow with the
/// idle time, up to [`PHASED_SLEEP`].
pub const PHASED_SLEEP_FIRST: Duration = Duration::from_micros(5);
/// The bound on one sleep of a thread that is not a bound stage.
pub const PHASED_SLEEP: Duration = Duration::from_micros(200);

/// A wake-up channel from one side of a ring to the stages waiting on it: an eventcount over
/// a futex word. Whoever makes progress (publishes commands, finishes a batch) calls
/// [`Signal::notify`], which costs one atomic add and, only when a stage is parked on it, one
/// `futex` wake. A stage that has nothing to do parks on the signal of what it waits for, so
/// idle stages take no CPU and no scheduler turns from the stages that have work.
#[derive(Debug)]
pub struct Signal {
    epoch: AtomicU32,
    sleepers: AtomicU32,
    /// Set by the notify that woke the parked stages, cleared by each stage as it parks: a
    /// producer publishing many commands before the stage is back on a core pays for one
    /// `futex` wake, not one per command.
    woken: AtomicBool,
    /// The core the last [`Signal::notify_from_submitter`] ran on (`NO_CORE`: none yet).
    submitter_core: AtomicU32,
}

/// "No core known" in [`Signal`]'s `submitter_core`.
const NO_CORE: u32 = u32::MAX;

impl Default for Signal {
    fn default() -> Signal {
        Signal {
            epoch: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            woken: AtomicBool::new(false),
            submitter_core: AtomicU32::new(NO_CORE),
        }
    }
}

impl Signal {
    /// [`Signal::notify`] by a thread that submits commands to the input ring: also records
    /// the core it runs on, which single-core stages compare with their own.
    #[inline]
    pub fn notify_from_submitter(&self) {
        let core = current_core();
        if self.submitter_core.load(Ordering::Relaxed) != core {
            self.submitter_core.store(core, Ordering::Relaxed);
        }
        self.notify();
    }

    /// Tells the stages parked on this signal that there may be work.
    #[inline]
    pub fn notify(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 && !self.woken.swap(true, Ordering::SeqCst) {
            futex_wake_all(&self.epoch);
        }
    }

    fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn submitter_core(&self) -> u32 {
        self.submitter_core.load(Ordering::Relaxed)
    }

    /// Parks until a notify after `seen` was read (returns at once if one came already), or
    /// `bound` passes; true if it was the bound that ended the wait.
    fn park(&self, seen: u32, bound: Duration) -> bool {
        // A notify that comes after `woken` is cleared wakes this stage; one that came before
        // moved the epoch, and the futex then does not sleep.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        self.woken.store(false, Ordering::SeqCst);
        let timed_out = futex_wait(&self.epoch, seen, bound);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        timed_out
    }
}

#[cfg(target_os = "linux")]
fn futex_wait(word: &AtomicU32, expected: u32, bound: Duration) -> bool {
    let timeout = libc::timespec {
        tv_sec: bound.as_secs() as libc::time_t,
        tv_nsec: bound.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the futex word is a live, aligned u32 for the whole call; the timeout is a valid
    // timespec. FUTEX_WAIT returns at once if the word no longer holds `expected`.
    #[allow(unsafe_code)]
    let result = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &timeout as *const libc::timespec,
        )
    };
    result != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT)
}

#[cfg(target_os = "linux")]
fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: the futex word is a live, aligned u32; FUTEX_WAKE reads no other memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn futex_wait(word: &AtomicU32, expected: u32, bound: Duration) -> bool {
    if word.load(Ordering::SeqCst) == expected {
        std::thread::sleep(bound.min(PHASED_SLEEP));
    }
    false
}

#[cfg(not(target_os = "linux"))]
fn futex_wake_all(_word: &AtomicU32) {}

/// The longest a parked stage sleeps without a notify. Wake-ups do not depend on it (every
/// progress notifies); it bounds how long a stopping pipeline takes to see its shutdown.
pub const PHASED_PARK_BOUND: Duration = Duration::from_millis(2);

/// How a stage tells the stage after it that it made progress. Stages that run in parallel
/// on the same ring (the Journaler and the Replicator) share one signal, and the stage after
/// them can go on only when both are done: so only the one that finishes a sequence last
/// notifies, and the waiting stage is woken once per batch, not once per parallel stage.
#[derive(Debug, Clone)]
pub struct Announce {
    /// The signal the next stage parks on.
    pub signal: Arc<Signal>,
    /// The last ring sequence this stage announced.
    pub mine: Arc<AtomicI64>,
    /// The last sequences the stages running in parallel with this one announced.
    pub peers: Vec<Arc<AtomicI64>>,
}

/// The signals a stage thread uses, set once when the thread starts.
struct Binding {
    /// What the stage waits for: parked on when idle.
    waits_on: Arc<Signal>,
    /// How the stage's progress is announced (None: nobody waits on this stage).
    announces: Option<Announce>,
    /// The epoch of `waits_on` read before the caller's last look at the ring.
    seen: Cell<u32>,
    /// The one core this stage's thread may run on, if it is restricted to one.
    core: Option<u32>,
    /// The signal the submitters of commands notify (it records their core).
    input: Arc<Signal>,
    /// Where the stage counts its idle yields and parks.
    counters: Arc<WaitCounters>,
}

/// Makes the calling stage thread park on `waits_on` when idle (phased strategy) and announce
/// its finished batches through `announces`; `input` is the signal the submitters of
/// commands notify; the stage counts its idle waits in `counters` (its pipeline's). Call it on
/// the stage thread, before its first event.
pub fn bind_stage(
    waits_on: Arc<Signal>,
    announces: Option<Announce>,
    input: Arc<Signal>,
    counters: Arc<WaitCounters>,
) {
    let seen = Cell::new(waits_on.epoch().wrapping_sub(1));
    BINDING.set(Some(Binding {
        waits_on,
        announces,
        seen,
        core: the_one_core(),
        input,
        counters,
    }));
}

/// How long an idle stage on a core of the pipeline's own yields before it parks. At
/// 100,000 commands/s (one every 10 us) the stages then hardly ever park.
pub const CORE_POLL: Duration = Duration::from_micros(50);

/// How often a pipeline's idle stages that are restricted to a single core yielded and
/// parked (phased strategy); one per pipeline, in its `Metrics`.
#[derive(Debug, Default)]
pub struct WaitCounters {
    /// Yields.
    pub single_core_yields_count: AtomicU64,
    /// Parks.
    pub single_core_parks_count: AtomicU64,
}

impl WaitCounters {
    /// (yields, parks) so far.
    pub fn single_core_waits_count(&self) -> (u64, u64) {
        (
            self.single_core_yields_count.load(Ordering::Relaxed),
            self.single_core_parks_count.load(Ordering::Relaxed),
        )
    }
}

/// Records that the calling stage finished a batch ending at ring sequence `sequence`. The
/// announcement is made at the stage's next event or wait, when the ring already shows the
/// batch done: announced earlier, a woken stage could look before the progress is visible and
/// park again.
#[inline]
pub fn batch_done(sequence: Sequence) {
    PROGRESS_PENDING.set(sequence);
}

/// Announces the calling stage's last finished batch, if not done yet. Called at the start of
/// every event a bound stage handles, and by the wait strategy.
#[inline]
pub fn announce_progress() {
    let sequence = PROGRESS_PENDING.get();
    if sequence < 0 {
        return;
    }
    PROGRESS_PENDING.set(-1);
    BINDING.with_borrow(|binding| {
        let Some(Binding {
            announces: Some(announce),
            ..
        }) = binding
        else {
            return;
        };
        // Each parallel stage stores its own sequence and then reads the others' (sequentially
        // consistent): of two stages finishing the same sequence, at least one sees the
        // other's, so at least one notifies, and only after both have finished it.
        announce.mine.store(sequence, Ordering::SeqCst);
        if announce
            .peers
            .iter()
            .all(|peer| peer.load(Ordering::SeqCst) >= sequence)
        {
            announce.signal.notify();
        }
    });
}

thread_local! {
    /// The signals of this stage thread (None: not a bound stage; it sleeps when idle).
    static BINDING: RefCell<Option<Binding>> = const { RefCell::new(None) };
    /// The last sequence of a finished batch not announced yet (-1: none).
    static PROGRESS_PENDING: Cell<Sequence> = const { Cell::new(-1) };
    /// (sequence waited for, empty polls so far, when the spinning ended) of this thread.
    static PHASE: Cell<(Sequence, u32, Option<Instant>)> = const { Cell::new((-1, 0, None)) };
    /// Whether this thread's timer slack is already set.
    static TIMER_SLACK_SET: Cell<bool> = const { Cell::new(false) };
    /// Work this thread does while it waits (see [`add_idle_work`]).
    static IDLE_WORK: RefCell<Vec<IdleWork>> = const { RefCell::new(Vec::new()) };
}

/// A piece of work a stage thread does while its input is idle: true when it did some (the
/// thread then looks at its ring again at once), false when there is none.
pub type IdleWork = Box<dyn FnMut() -> bool>;

/// Gives the calling thread one more piece of work to do while it waits for its input: each
/// piece runs once per look at the ring, before any spin, yield or park. A piece should take
/// tens of microseconds at most: a command that arrives meanwhile waits for it. A piece that
/// adds another from inside itself is refused (the thread's list is in use): add pieces
/// before the thread starts waiting.
pub fn add_idle_work(work: IdleWork) {
    IDLE_WORK.with(|works| {
        if let Ok(mut works) = works.try_borrow_mut() {
            works.push(work);
        }
    });
}

/// Drops every piece of the calling thread's idle work.
pub fn clear_idle_work() {
    IDLE_WORK.with(|works| {
        if let Ok(mut works) = works.try_borrow_mut() {
            works.clear();
        }
    });
}

/// Runs one round of the calling thread's idle work; true if some piece did work.
#[inline]
fn run_idle_work() -> bool {
    IDLE_WORK.with(|works| {
        let Ok(mut works) = works.try_borrow_mut() else {
            return false;
        };
        let mut did = false;
        for work in works.iter_mut() {
            did |= work();
        }
        did
    })
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
        announce_progress();
        if run_idle_work() {
            return;
        }
        match self.0 {
            WaitKind::BusySpin => std::hint::spin_loop(),
            WaitKind::Yielding => std::thread::yield_now(),
            WaitKind::Phased => phased_wait(sequence),
        }
    }
}

/// What an idle thread does next under the phased strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    Spin,
    Yield,
    Park,
}

/// The phased strategy's choice for a thread that has made `polls` empty polls for the same
/// sequence, idle for `idle_for` since it stopped spinning. `core`: the one core the thread
/// is restricted to (None: it may run on more). `submitter_core`: where commands were last
/// submitted from (`NO_CORE`: not known).
fn idle_action(core: Option<u32>, submitter_core: u32, polls: u32, idle_for: Duration) -> Idle {
    match core {
        None if polls < PHASED_SPIN_COUNT => Idle::Spin,
        None => Idle::Park,
        Some(core) if submitter_core != NO_CORE && submitter_core != core => {
            if idle_for < CORE_POLL {
                Idle::Yield
            } else {
                Idle::Park
            }
        }
        Some(_) => Idle::Park,
    }
}

fn phased_wait(sequence: Sequence) {
    announce_progress();
    let (waiting_for, polls, idle_since) = PHASE.get();
    let (polls, idle_since) = if waiting_for == sequence {
        (polls.saturating_add(1), idle_since)
    } else {
        (0, None)
    };
    let (core, submitter_core) = BINDING.with_borrow(|binding| {
        binding.as_ref().map_or((None, NO_CORE), |binding| {
            (binding.core, binding.input.submitter_core())
        })
    });
    let idle_for = idle_since.map_or(Duration::ZERO, |since: Instant| since.elapsed());
    let action = idle_action(core, submitter_core, polls, idle_for);
    if action == Idle::Spin {
        PHASE.set((sequence, polls, None));
        std::hint::spin_loop();
        return;
    }
    let since = idle_since.unwrap_or_else(Instant::now);
    PHASE.set((sequence, polls, Some(since)));
    if action == Idle::Yield {
        BINDING.with_borrow(|binding| {
            if let Some(binding) = binding {
                binding
                    .counters
                    .single_core_yields_count
                    .fetch_add(1, Ordering::Relaxed);
            }
        });
        std::thread::yield_now();
        return;
    }
    let parked = BINDING.with_borrow(|binding| {
        let Some(binding) = binding else {
            return false;
        };
        // The caller looked at the ring after `seen` was read. If the epoch moved since, look
        // again; if not, nothing was published since that look, and parking on `seen` wakes
        // at the next notify.
        let epoch = binding.waits_on.epoch();
        if epoch != binding.seen.get() {
            binding.seen.set(epoch);
        } else {
            if binding.core.is_some() {
                binding
                    .counters
                    .single_core_parks_count
                    .fetch_add(1, Ordering::Relaxed);
            }
            let _ = binding.waits_on.park(epoch, PHASED_PARK_BOUND);
        }
        true
    });
    if !parked {
        tighten_timer_slack();
        // Sleep about as long as the thread has already been idle, between the first and the
        // longest sleep.
        let sleep = since.elapsed().clamp(PHASED_SLEEP_FIRST, PHASED_SLEEP);
        std::thread::sleep(sleep);
    }
}

/// The core the calling thread runs on (`NO_CORE` if unknown).
fn current_core() -> u32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sched_getcpu takes no arguments and touches no memory of ours.
        #[allow(unsafe_code)]
        let core = unsafe { libc::sched_getcpu() };
        u32::try_from(core).unwrap_or(NO_CORE)
    }
    #[cfg(not(target_os = "linux"))]
    {
        NO_CORE
    }
}

/// The core the calling thread is restricted to, if it is restricted to exactly one.
fn the_one_core() -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        #[allow(unsafe_code)]
        // SAFETY: `set` is a plain bit set owned by this frame; the calls only read or fill it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0
                || libc::CPU_COUNT(&set) != 1
            {
                return None;
            }
            (0..libc::CPU_SETSIZE as usize)
                .find(|&core| libc::CPU_ISSET(core, &set))
                .and_then(|core| u32::try_from(core).ok())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Signal;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Waits the way a stage does: read the epoch, look, park on what was read. Err if a park
    /// ended by its bound instead of a notify, or the other side already failed.
    fn wait_for_at_least(
        counter: &AtomicU64,
        target: u64,
        signal: &Signal,
        failed: &AtomicBool,
    ) -> Result<(), ()> {
        loop {
            let seen = signal.epoch();
            if counter.load(Ordering::SeqCst) >= target {
                return Ok(());
            }
            if failed.load(Ordering::SeqCst) || signal.park(seen, Duration::from_secs(1)) {
                failed.store(true, Ordering::SeqCst);
                return Err(());
            }
        }
    }

    #[test]
    fn every_wake_up_a_parked_thread_needs_comes_from_a_notify() {
        // Two threads hand a counter back and forth 20,000 times, each parking while the other
        // works. A lost wake-up would leave a thread parked until its bound: none may.
        const ROUNDS: u64 = 20_000;
        let (ping, pong) = (Arc::new(Signal::default()), Arc::new(Signal::default()));
        let (served, returned) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let failed = Arc::new(AtomicBool::new(false));
        let partner = {
            let (ping, pong) = (Arc::clone(&ping), Arc::clone(&pong));
            let (served, returned) = (Arc::clone(&served), Arc::clone(&returned));
            let failed = Arc::clone(&failed);
            std::thread::spawn(move || {
                for round in 1..=ROUNDS {
                    if wait_for_at_least(&served, round, &ping, &failed).is_err() {
                        pong.notify();
                        return Err(round);
                    }
                    returned.store(round, Ordering::SeqCst);
                    pong.notify();
                }
                Ok(())
            })
        };
        let mut outcome = Ok(());
        for round in 1..=ROUNDS {
            served.store(round, Ordering::SeqCst);
            ping.notify();
            if wait_for_at_least(&returned, round, &pong, &failed).is_err() {
                ping.notify();
                outcome = Err(round);
                break;
            }
        }
        let partner_outcome = partner.join().unwrap();
        assert_eq!(
            (outcome, partner_outcome),
            (Ok(()), Ok(())),
            "a wake-up was lost"
        );
        assert_eq!(returned.load(Ordering::SeqCst), ROUNDS);
    }

    #[test]
    fn idle_stages_spin_then_park_unless_restricted_to_one_core() {
        use super::{idle_action, Idle, CORE_POLL, NO_CORE, PHASED_SPIN_COUNT};
        let (short, long) = (Duration::ZERO, CORE_POLL + Duration::from_micros(1));
        // A thread that may run on several cores spins, then parks, wherever the submitters.
        for submitter in [NO_CORE, 0, 1] {
            assert_eq!(idle_action(None, submitter, 0, short), Idle::Spin);
            assert_eq!(
                idle_action(None, submitter, PHASED_SPIN_COUNT - 1, short),
                Idle::Spin
            );
            assert_eq!(
                idle_action(None, submitter, PHASED_SPIN_COUNT, short),
                Idle::Park
            );
        }
        // On one core: submitters elsewhere, it yields until CORE_POLL has passed...
        assert_eq!(idle_action(Some(0), 1, 0, short), Idle::Yield);
        assert_eq!(idle_action(Some(0), 1, 1_000, short), Idle::Yield);
        assert_eq!(idle_action(Some(0), 1, 1, long), Idle::Park);
        // ...and with the submitters on its own core, or not known yet, it parks at once.
        assert_eq!(idle_action(Some(0), 0, 0, short), Idle::Park);
        assert_eq!(idle_action(Some(0), NO_CORE, 0, short), Idle::Park);
    }

    #[test]
    fn submitters_and_stages_know_their_cores() {
        use super::{bind_stage, BINDING, NO_CORE};
        let core = *crate::allowed_cores().last().unwrap();
        let input = Arc::new(Signal::default());
        assert_eq!(input.submitter_core(), NO_CORE);
        let thread_input = Arc::clone(&input);
        std::thread::spawn(move || {
            crate::restrict_thread_to_cores("test", &[core]).unwrap();
            bind_stage(
                Arc::new(Signal::default()),
                None,
                Arc::clone(&thread_input),
                Arc::default(),
            );
            let bound_core = BINDING.with_borrow(|binding| binding.as_ref().unwrap().core);
            assert_eq!(bound_core, Some(core as u32));
            thread_input.notify_from_submitter();
        })
        .join()
        .unwrap();
        assert_eq!(input.submitter_core(), core as u32);
    }

    #[test]
    fn a_notify_before_the_park_is_not_lost() {
        let signal = Signal::default();
        let seen = signal.epoch();
        signal.notify();
        // The epoch moved after `seen` was read: the park returns at once, not by its bound.
        assert!(!signal.park(seen, Duration::from_secs(5)));
    }
}
