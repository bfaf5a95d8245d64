//! Start-up: newest valid snapshot, journal replay, output sink resume.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringmatch_journal::{
    DamagePolicy, EventsMark, Journal, JournalConfig, JournalError, OpenReport, SnapshotInfo,
    SnapshotStore,
};
use ringmatch_matcher::{Engine, EventSink, MatcherConfig};
use ringmatch_proto::Event;

use crate::events_file::{EventPosition, EventsFile, EventsFileError};
use crate::ports::{JournalPort, SnapshotPort};
use crate::OutputSink;

/// An output sink that knows what it already holds, so that start-up can replay into it and
/// it skips every event it has. Replayed events go through [`OutputSink::push`] and one
/// [`OutputSink::end_of_batch`] at the end of the replay.
pub trait ResumableOutput: OutputSink {
    /// The newest event the output holds, as (sequence, index): it holds every event of the
    /// stream up to it and none after it. Start-up replays only from a snapshot whose events
    /// mark is at or before it ([`snapshot_fits_output`]), so an output that lost its tail
    /// (an events file cut by a power loss or by hand) is completed, never left with a gap.
    fn resume_position(&self) -> Option<EventPosition>;
    /// Whether the output holds any event.
    fn holds_events(&self) -> bool {
        self.resume_position().is_some()
    }
    /// Replayed events skipped because the output already held them.
    fn skipped_count(&self) -> u64;
}

impl ResumableOutput for EventsFile {
    fn resume_position(&self) -> Option<EventPosition> {
        self.report().resume_point
    }

    fn skipped_count(&self) -> u64 {
        EventsFile::skipped_count(self)
    }
}

/// Where the durable state lives.
#[derive(Debug, Clone)]
pub struct RecoveryOptions {
    /// The matcher configuration.
    pub matcher: MatcherConfig,
    /// The journal.
    pub journal: JournalConfig,
    /// What to do with damage before the journal's tail.
    pub damage_policy: DamagePolicy,
    /// The snapshot folder.
    pub snapshot_dir: PathBuf,
    /// Snapshots kept.
    pub snapshots_kept_count: usize,
    /// The events file (used by [`recover`]; [`recover_with`] takes any output).
    pub events_path: PathBuf,
}

/// Progress of a replay, reported about once a second.
#[derive(Debug, Clone, Copy)]
pub struct ReplayProgress {
    /// Commands replayed so far.
    pub replayed_count: u64,
    /// Commands to replay in all.
    pub total_count: u64,
    /// Commands per second so far.
    pub rate_per_second: f64,
    /// Estimated time left.
    pub eta: Duration,
}

/// Why start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The journal could not be opened or read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The events file could not be opened or written.
    #[error(transparent)]
    Events(#[from] EventsFileError),
    /// The output sink could not be opened, or holds what the journal does not.
    #[error("output: {0}")]
    Output(String),
    /// The snapshot folder could not be used.
    #[error(transparent)]
    Snapshot(#[from] ringmatch_journal::SnapshotError),
    /// The configuration is invalid.
    #[error("invalid matcher configuration: {0}")]
    Config(#[from] ringmatch_matcher::ConfigError),
    /// Neither a usable snapshot nor the journal reach back far enough to rebuild the state
    /// and complete the output without a gap.
    #[error(
        "cannot rebuild the state and the output: the journal starts at sequence \
         {journal_first_seq} and no usable snapshot covers the commands before it; the output \
         holds {}, so a replay must start at or before the command after that{}",
        describe_position(*output_position),
        if output_position.is_none() {
            " (only a replay of the whole journal could fill it)"
        } else {
            ""
        }
    )]
    NoStartingPoint {
        /// First sequence in the journal.
        journal_first_seq: u64,
        /// The newest event the output holds.
        output_position: Option<EventPosition>,
    },
}

fn describe_position(position: Option<EventPosition>) -> String {
    match position {
        Some((seq, index)) => format!("events through sequence {seq} index {index}"),
        None => "no event".into(),
    }
}

/// Whether start-up may replay from the snapshot taken after command `snapshot_seq`, with
/// `mark`, into an output whose newest event is `output_position`: only if the output holds
/// every event of the commands up to the snapshot, since the replay does not produce them
/// again. Err says why not.
pub fn snapshot_fits_output(
    snapshot_seq: u64,
    mark: EventsMark,
    output_position: Option<EventPosition>,
) -> Result<(), String> {
    let fits = match mark {
        EventsMark::NoEvents => true,
        EventsMark::Last(seq, index) => output_position >= Some((seq, index)),
        // A version 1 snapshot does not say where its commands' events end; an output that
        // holds an event of a later command holds them all.
        EventsMark::Unrecorded => output_position.is_some_and(|(seq, _)| seq > snapshot_seq),
    };
    if fits {
        return Ok(());
    }
    let needed = match mark {
        EventsMark::Last(seq, index) => format!("events through sequence {seq} index {index}"),
        _ => format!("an event after sequence {snapshot_seq} (a version 1 snapshot)"),
    };
    Err(format!(
        "the output holds {}, behind the {needed} this snapshot needs",
        describe_position(output_position)
    ))
}

/// The snapshot start-up replays from, restored: the newest one that lies within the journal
/// (`journal_first_seq..next_seq`), reads, whose events the output holds
/// ([`snapshot_fits_output`]) and that restores; None when no snapshot qualifies (then only the
/// journal's start will do). Every snapshot passed over is reported in `problems`.
pub fn choose_snapshot<P: SnapshotPort>(
    matcher: &MatcherConfig,
    snapshots: &P,
    journal_first_seq: u64,
    next_seq: u64,
    output_position: Option<EventPosition>,
    problems: &mut Vec<String>,
) -> Result<Option<(SnapshotInfo, Engine)>, RecoveryError> {
    for info in snapshots.list()? {
        if info.seq >= next_seq {
            problems.push(format!(
                "{}: taken after sequence {}, but the journal ends at {}; not used",
                info.path.display(),
                info.seq,
                next_seq - 1
            ));
            continue;
        }
        if info.seq + 1 < journal_first_seq {
            problems.push(format!(
                "{}: the journal no longer reaches back to sequence {}; not used",
                info.path.display(),
                info.seq + 1
            ));
            continue;
        }
        let restored = snapshots
            .read(&info)
            .map_err(|error| error.to_string())
            .and_then(|snapshot| {
                snapshot_fits_output(info.seq, snapshot.events_mark, output_position)
                    .map_err(|problem| format!("{}: {problem}; not used", info.path.display()))?;
                Engine::restore_at(matcher.clone(), &snapshot.state, info.seq)
                    .map_err(|error| format!("{}: {error}", info.path.display()))
            });
        match restored {
            Ok(engine) => return Ok(Some((info, engine))),
            Err(problem) => problems.push(problem),
        }
    }
    Ok(None)
}

/// The recovered state, ready to start the pipeline.
pub struct Recovered<O = EventsFile> {
    /// The matcher, at the journal's last command.
    pub engine: Engine,
    /// The journal, positioned for the next command.
    pub journal: Journal,
    /// What opening the journal found.
    pub journal_report: OpenReport,
    /// The snapshot used, if any.
    pub snapshot: Option<SnapshotInfo>,
    /// Snapshots that were skipped, and why.
    pub snapshot_problems: Vec<String>,
    /// Commands replayed from the journal.
    pub replayed_count: u64,
    /// How long the replay took.
    pub replay_duration: Duration,
    /// The output sink, past everything replayed.
    pub output: O,
    /// The snapshot store.
    pub snapshots: SnapshotStore,
}

struct ReplaySink<'a, O>(&'a mut O);

impl<O: OutputSink> EventSink for ReplaySink<'_, O> {
    fn push(&mut self, event: &Event) {
        OutputSink::push(self.0, event);
    }
}

/// [`recover_with`] into the events file at `options.events_path`.
pub fn recover(
    options: &RecoveryOptions,
    progress: &mut dyn FnMut(ReplayProgress),
) -> Result<Recovered, RecoveryError> {
    recover_with(
        options,
        |journal_next_seq| Ok(EventsFile::open(&options.events_path, journal_next_seq)?.0),
        progress,
    )
}

/// Opens everything and rebuilds the matcher and the output: the journal, then the output
/// (`open_output` gets the journal's next sequence), then the newest snapshot that reads,
/// restores, lies within the journal and whose events the output holds
/// ([`snapshot_fits_output`]); then the journal after it, replayed into the output, which
/// skips what it holds. `progress` is called about
/// once a second during a replay.
pub fn recover_with<O: ResumableOutput>(
    options: &RecoveryOptions,
    open_output: impl FnOnce(u64) -> Result<O, RecoveryError>,
    progress: &mut dyn FnMut(ReplayProgress),
) -> Result<Recovered<O>, RecoveryError> {
    let (journal, journal_report) = Journal::open(options.journal.clone(), options.damage_policy)?;
    let mut output = open_output(journal.next_seq())?;
    let snapshots = SnapshotStore::open(&options.snapshot_dir, options.snapshots_kept_count)?;
    let rebuilt = recover_from(
        &options.matcher,
        &journal,
        &snapshots,
        &mut output,
        progress,
    )?;
    Ok(Recovered {
        engine: rebuilt.engine,
        journal,
        journal_report,
        snapshot: rebuilt.snapshot,
        snapshot_problems: rebuilt.snapshot_problems,
        replayed_count: rebuilt.replayed_count,
        replay_duration: rebuilt.replay_duration,
        output,
        snapshots,
    })
}

/// What [`recover_from`] rebuilt.
pub struct Rebuilt {
    /// The matcher, at the journal's last command.
    pub engine: Engine,
    /// The snapshot used, if any.
    pub snapshot: Option<SnapshotInfo>,
    /// Snapshots that were skipped, and why.
    pub snapshot_problems: Vec<String>,
    /// Commands replayed from the journal.
    pub replayed_count: u64,
    /// How long the replay took.
    pub replay_duration: Duration,
}

/// The core of start-up, over the ports (the simulator runs it over simulated storage): the
/// newest snapshot that reads, restores, lies within the journal and whose events the output
/// holds ([`snapshot_fits_output`]), or none; then the journal after it, replayed into
/// `output`, which skips what it holds. `progress` is called about once a second.
pub fn recover_from<J: JournalPort, P: SnapshotPort, O: ResumableOutput>(
    matcher: &MatcherConfig,
    journal: &J,
    snapshots: &P,
    output: &mut O,
    progress: &mut dyn FnMut(ReplayProgress),
) -> Result<Rebuilt, RecoveryError> {
    let next_seq = journal.next_seq();
    let journal_first_seq = journal.first_seq();
    let output_position = output.resume_position();
    let mut snapshot_problems = Vec::new();
    let chosen = choose_snapshot(
        matcher,
        snapshots,
        journal_first_seq,
        next_seq,
        output_position,
        &mut snapshot_problems,
    )?;
    let (snapshot, mut engine) = match chosen {
        Some((info, engine)) => (Some(info), engine),
        None => {
            if journal_first_seq > 1 {
                return Err(RecoveryError::NoStartingPoint {
                    journal_first_seq,
                    output_position,
                });
            }
            (None, Engine::new(matcher.clone())?)
        }
    };
    let from_seq = snapshot.as_ref().map_or(1, |info| info.seq + 1);
    let total_count = next_seq - from_seq;
    let started = Instant::now();
    let mut last_report = started;
    let mut replayed_count = 0u64;
    let mut sink = ReplaySink(output);
    for record in journal.records_from(from_seq)? {
        let record = record?;
        engine.apply(record.seq, &record.command, &mut sink);
        replayed_count += 1;
        if replayed_count % 65_536 == 0 && last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let rate_per_second = replayed_count as f64 / started.elapsed().as_secs_f64();
            let left = total_count.saturating_sub(replayed_count) as f64;
            progress(ReplayProgress {
                replayed_count,
                total_count,
                rate_per_second,
                eta: Duration::from_secs_f64(left / rate_per_second.max(1.0)),
            });
        }
    }
    assert_eq!(
        replayed_count, total_count,
        "the journal reader stopped before the journal's end"
    );
    output.end_of_batch();
    Ok(Rebuilt {
        engine,
        snapshot,
        snapshot_problems,
        replayed_count,
        replay_duration: started.elapsed(),
    })
}
