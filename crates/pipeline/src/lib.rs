//! The ring-buffer pipeline of ringmatch, built on the `disruptor` crate.
//!
//! ```text
//!  producers (admin, bench, gateway) ─▶ INPUT RING ─┬─▶ Journaler  (append, group commit)
//!                                                   └─▶ Replicator (mode `none`: pass on)
//!                                                          │ both done
//!                                                          ▼
//!                                                       Matcher ─▶ OUTPUT RING ─▶ Publisher
//!                                                          │                     (events file)
//!                                                          └─▶ snapshot writer thread
//! ```
//!
//! Every command gets its sequence from its input-ring slot (`base_seq + ring sequence`). The
//! Journaler and the Replicator see each command in parallel; the Matcher sees a command only
//! after both have finished its whole batch, so under the `batch` policy every command is on
//! disk (one sync per batch) before it is matched. The Matcher writes events into the output
//! ring, read by the Publisher. A snapshot command is journaled like any other and makes the
//! Matcher encode its state after exactly the commands before it; a separate thread
//! compresses and writes the file, so the Matcher pauses only for the encoding.
//!
//! Start-up ([`recover`]) loads the newest valid snapshot, replays the journal after it through
//! the matcher, and lets the output sink skip what it already holds, before the rings start.
//!
//! This crate knows the rings, stages, threads and files of the engine, but nothing of the
//! wire formats of Kafka or TCP, nor of configuration files or the command line.

mod baseline;
mod cores;
mod events_file;
mod market_data;
mod metrics;
mod output;
pub mod ports;
mod recovery;
mod runtime;
pub mod stages;
mod submitter;
mod wait;

use std::path::PathBuf;

use disruptor::{MultiProducer, SingleConsumerBarrier};
use ringmatch_proto::{Command, Event};

pub use cores::{allowed_cores, available_cores, check_cores, restrict_thread_to_cores};
pub use output::{NullSink, OutputDurability, OutputSink, OutputSync};
pub use runtime::{Pipeline, SNAPSHOT_STEP_BYTES};
pub use stages::EventRouter;
pub use submitter::Submitter;

pub use baseline::{CrossbeamPipeline, CrossbeamSubmitter};
pub use events_file::{
    read_events, EventPosition, EventsFile, EventsFileError, EventsFileReport, EVENTS_FILE_VERSION,
    EVENTS_HEADER_SIZE_BYTES, EVENTS_MAGIC,
};
pub use market_data::{L2Book, MarketData, Trade, TRADES_KEPT};
pub use metrics::{new_histogram, now_ns, LatencyRecorder, Metrics, Stage, StageRecorder};
pub use recovery::{
    choose_snapshot, recover, recover_from, recover_with, snapshot_fits_output, Rebuilt, Recovered,
    RecoveryError, RecoveryOptions, ReplayProgress, ResumableOutput,
};
pub use ringmatch_journal::EventsMark;
pub use wait::{tighten_timer_slack, ConfiguredWait, Signal, WaitCounters, WaitKind, PHASED_SLEEP};

/// A slot of the input ring.
#[derive(Debug, Clone, Copy)]
pub struct InputSlot {
    /// The command, with its ingress timestamp.
    pub command: Command,
    /// The order-entry session it came from (0: none). Not journaled: it only routes the
    /// command's events back.
    pub session: u32,
}

/// A slot of the output ring.
#[derive(Debug, Clone, Copy)]
pub struct OutputSlot {
    /// One event.
    pub event: Event,
    /// The session whose command caused it (0: none, or a replayed command).
    pub session: u32,
    /// The client order id of the command that caused it, as the session sent it (a cancel's
    /// events carry the cancelled order's ids): the Responder acknowledges the command with it.
    pub client_order_id: u64,
}

/// Cores to pin stage threads to (None: not pinned).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageCores {
    /// The Journaler's core.
    pub journaler: Option<usize>,
    /// The Replicator's core.
    pub replicator: Option<usize>,
    /// The Matcher's core.
    pub matcher: Option<usize>,
    /// The Publisher's core.
    pub publisher: Option<usize>,
    /// The Responder's core.
    pub responder: Option<usize>,
}

/// What the journal does with segments wholly before the oldest kept snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retention {
    /// Keep every segment.
    Keep,
    /// Delete them.
    Delete,
    /// Move them to this folder.
    Archive(PathBuf),
}

/// Shape of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Slots of the input ring (a power of two).
    pub input_ring_slots_count: usize,
    /// Slots of the output ring (a power of two).
    pub output_ring_slots_count: usize,
    /// How idle stages wait.
    pub wait: WaitKind,
    /// Core pinning.
    pub cores: StageCores,
    /// Take a snapshot after every this many commands (0: never by count).
    pub snapshot_every_commands: u64,
    /// Journal segments retention.
    pub retention: Retention,
}

/// Configuration problems found before any thread starts.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A ring size is not a power of two, or too small.
    #[error("{name} = {value} must be a power of two, at least {minimum}")]
    RingSize {
        /// Which ring.
        name: &'static str,
        /// Its size.
        value: usize,
        /// The smallest size allowed.
        minimum: usize,
    },
    /// A core id that this machine does not have.
    #[error("cannot pin the {stage} to core {core}: this machine has cores {available:?}")]
    BadCore {
        /// Which stage.
        stage: &'static str,
        /// The id asked for.
        core: usize,
        /// The ids that exist.
        available: Vec<usize>,
    },
    /// An empty list of cores.
    #[error("{what} lists no cores")]
    NoCores {
        /// Which setting.
        what: &'static str,
    },
    /// The operating system refused to restrict the thread to the cores.
    #[error("cannot restrict the {what} to cores {cores:?}: {source}")]
    Affinity {
        /// Which setting.
        what: &'static str,
        /// The ids asked for.
        cores: Vec<usize>,
        /// The refusal.
        source: std::io::Error,
    },
}

impl PipelineConfig {
    /// Checks ring sizes and core ids (against the machine's online cores).
    pub fn validate(&self) -> Result<(), PipelineError> {
        // The multi-producer ring of `disruptor` needs at least 64 slots.
        for (name, value, minimum) in [
            ("input_ring_slots", self.input_ring_slots_count, 64),
            ("output_ring_slots", self.output_ring_slots_count, 2),
        ] {
            if value < minimum || !value.is_power_of_two() {
                return Err(PipelineError::RingSize {
                    name,
                    value,
                    minimum,
                });
            }
        }
        let available = available_cores();
        let cores = self.cores;
        for (stage, core) in [
            ("journaler", cores.journaler),
            ("replicator", cores.replicator),
            ("matcher", cores.matcher),
            ("publisher", cores.publisher),
            ("responder", cores.responder),
        ] {
            if let Some(core) = core {
                if !available.contains(&core) {
                    return Err(PipelineError::BadCore {
                        stage,
                        core,
                        available,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The input ring was full: the command was not taken. Try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("busy: the input ring is full")]
pub struct Busy;

type InputProducer = MultiProducer<InputSlot, SingleConsumerBarrier>;

/// Installs a panic hook that prints the panic and ends the process at once with status 70,
/// so a stage that panics stops the whole service instead of leaving the others waiting on
/// it. The journal is intact: every record is checksummed and written in place, and records
/// after the last sync are cut as a torn tail on the next start if they were lost.
pub fn install_fatal_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let thread = std::thread::current();
        tracing::error!(
            target: "ringmatch",
            thread = thread.name().unwrap_or("unnamed"),
            "fatal: a thread panicked; stopping the service with status 70"
        );
        std::process::exit(70);
    }));
}
