//! The Matcher: runs each command through the deterministic engine, in sequence order, and
//! asks for a snapshot after a snapshot command or every `snapshot_every_commands` commands.
//! It keeps the position of the last event of the stream, which each snapshot records.

use ringmatch_matcher::{Engine, EventSink};
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
    /// How long the Matcher paused to take it (nanoseconds; set by the caller that timed it).
    pub pause_ns: u64,
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
        }
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

    /// The snapshot of the state after the last command run (this encodes the state: the
    /// Matcher's only pause for a snapshot).
    pub fn snapshot(&self) -> SnapshotRequest {
        SnapshotRequest {
            seq: self.next_seq - 1,
            state: self.engine.encode_state(),
            events_before: self.events_count,
            last_event: self.last_event,
            pause_ns: 0,
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
