//! The Matcher: runs each command through the deterministic engine, in sequence order, and
//! asks for a snapshot after a snapshot command or every `snapshot_every_commands` commands.
//! It keeps the position of the last event of the stream, which each snapshot records.
//!
//! A snapshot does not stop the Matcher while the state is encoded: it begins at a command
//! boundary ([`Matcher::begin_snapshot`], a few scalars), the engine's pages are copied a
//! budget at a time ([`Matcher::snapshot_step`], between commands) or by the engine's first
//! write to each, and the finished copy ([`FrozenSnapshot`]) is encoded on another thread,
//! which gives the copy's memory back ([`Matcher::give_back`]) for the next snapshot.

use ringmatch_matcher::{Engine, EventSink, FrozenState};
use ringmatch_proto::{Command, CommandType, Event};

use crate::EventPosition;

/// A snapshot the Matcher asks the snapshot writer for.
pub struct SnapshotRequest {
    /// The state is the state after this command.
    pub seq: u64,
    /// The encoded state.
    pub state: Vec<u8>,
    /// Live events the Matcher had emitted up to and including command `seq`: the file is
    /// written once the output durably holds that many.
    pub events_before: u64,
    /// The last event of the stream up to and including command `seq`.
    pub last_event: Option<EventPosition>,
    /// The longest the Matcher spent on it at one stretch (nanoseconds; see
    /// [`FrozenSnapshot::pause_ns`]).
    pub pause_ns: u64,
    /// All the time the Matcher spent on it (nanoseconds).
    pub copy_ns: u64,
}

/// A snapshot the Matcher has finished copying: the state as it was after command `seq`,
/// still to be encoded.
#[derive(Debug)]
pub struct FrozenSnapshot {
    /// The state is the state after this command.
    pub seq: u64,
    /// The copied state.
    pub state: FrozenState,
    /// As in [`SnapshotRequest`].
    pub events_before: u64,
    /// As in [`SnapshotRequest`].
    pub last_event: Option<EventPosition>,
    /// The longest the Matcher spent on this snapshot at one stretch (beginning it, or one
    /// step of the copy; nanoseconds, set by the caller that timed them).
    pub pause_ns: u64,
    /// All the time the Matcher spent beginning it and on its steps (nanoseconds).
    pub copy_ns: u64,
}

impl FrozenSnapshot {
    /// Encodes the state: the request for the snapshot writer, and the copy's memory to give
    /// back to the Matcher.
    pub fn encode(self) -> (SnapshotRequest, FrozenState) {
        let request = SnapshotRequest {
            seq: self.seq,
            state: self.state.encode(),
            events_before: self.events_before,
            last_event: self.last_event,
            pause_ns: self.pause_ns,
            copy_ns: self.copy_ns,
        };
        (request, self.state)
    }
}

/// What the Matcher knows of the snapshot it is copying.
#[derive(Debug, Clone, Copy)]
struct Copying {
    seq: u64,
    events_before: u64,
    last_event: Option<EventPosition>,
    pause_ns: u64,
    copy_ns: u64,
}

/// The Matcher's state.
pub struct Matcher {
    engine: Engine,
    next_seq: u64,
    snapshot_every_commands: u64,
    /// Live events emitted so far.
    events_count: u64,
    /// The last event of the stream so far (from the output at start, then the Matcher's).
    last_event: Option<EventPosition>,
    /// The snapshot being copied.
    copying: Option<Copying>,
}

/// Counts and remembers events on their way to the runtime's sink.
struct Counting<'a, S: EventSink + ?Sized> {
    sink: &'a mut S,
    events_count: &'a mut u64,
    last_event: &'a mut Option<EventPosition>,
}

impl<S: EventSink + ?Sized> EventSink for Counting<'_, S> {
    #[inline]
    fn push(&mut self, event: &Event) {
        *self.events_count += 1;
        *self.last_event = Some((event.seq, event.index));
        self.sink.push(event);
    }
}

impl Matcher {
    /// A Matcher whose next command is `next_seq`, with the engine recovered to the command
    /// before it and `last_event` the last event of the stream so far.
    pub fn new(
        engine: Engine,
        next_seq: u64,
        snapshot_every_commands: u64,
        last_event: Option<EventPosition>,
    ) -> Matcher {
        Matcher {
            engine,
            next_seq,
            snapshot_every_commands,
            events_count: 0,
            last_event,
            copying: None,
        }
    }

    /// Allocates the memory snapshot copies use now, so the first snapshot does not.
    pub fn reserve_snapshots(&mut self) {
        self.engine.reserve_snapshot_copy();
    }

    /// Runs command `seq`, pushing its events to `sink`; true when a snapshot is due after
    /// it ([`Matcher::snapshot`]).
    #[inline]
    pub fn on_command<S: EventSink + ?Sized>(
        &mut self,
        seq: u64,
        command: &Command,
        sink: &mut S,
    ) -> bool {
        assert_eq!(seq, self.next_seq, "the Matcher got sequences out of order");
        self.next_seq += 1;
        let mut counting = Counting {
            sink,
            events_count: &mut self.events_count,
            last_event: &mut self.last_event,
        };
        self.engine.apply(seq, command, &mut counting);
        let by_count = self.snapshot_every_commands != 0 && seq % self.snapshot_every_commands == 0;
        command.command_type == CommandType::Snapshot || by_count
    }

    /// Begins a snapshot of the state after the last command run. False when it cannot:
    /// the last snapshot is still being copied, or its copy has not been given back yet (the
    /// caller skips this one; a later one covers it).
    pub fn begin_snapshot(&mut self) -> bool {
        if !self.engine.snapshot_can_begin() {
            return false;
        }
        self.engine.begin_snapshot();
        self.copying = Some(Copying {
            seq: self.next_seq - 1,
            events_before: self.events_count,
            last_event: self.last_event,
            pause_ns: 0,
            copy_ns: 0,
        });
        true
    }

    /// Whether a snapshot is being copied.
    pub fn snapshot_copying(&self) -> bool {
        self.copying.is_some()
    }

    /// Counts `elapsed_ns` the caller timed (beginning the snapshot being copied, or a step
    /// of it) toward its pause figures.
    pub fn note_snapshot_work(&mut self, elapsed_ns: u64) {
        if let Some(copying) = &mut self.copying {
            copying.pause_ns = copying.pause_ns.max(elapsed_ns);
            copying.copy_ns += elapsed_ns;
        }
    }

    /// Copies about `budget_bytes` more of the snapshot being copied (at least one page);
    /// the snapshot, when that finished it.
    pub fn snapshot_step(&mut self, budget_bytes: usize) -> Option<FrozenSnapshot> {
        let copying = self.copying?;
        let state = self.engine.snapshot_step(budget_bytes)?;
        self.copying = None;
        Some(FrozenSnapshot {
            seq: copying.seq,
            state,
            events_before: copying.events_before,
            last_event: copying.last_event,
            pause_ns: copying.pause_ns,
            copy_ns: copying.copy_ns,
        })
    }

    /// Takes back the memory of a snapshot's copy, once it is encoded.
    pub fn give_back(&mut self, state: FrozenState) {
        self.engine.give_back_snapshot(state);
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
