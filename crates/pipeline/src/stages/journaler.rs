//! The Journaler: appends every command to the journal and commits at the end of each batch
//! (one sync per batch under `batch`), so the Matcher, which runs a batch only after the
//! Journaler finished it, sees only durable commands.

use ringmatch_journal::{JournalError, JournalRecord};
use ringmatch_proto::Command;

use crate::ports::JournalPort;

/// The Journaler's state: the journal and the sequence it expects next.
pub struct Journaler<J: JournalPort> {
    journal: J,
    next_seq: u64,
}

impl<J: JournalPort> Journaler<J> {
    /// A Journaler appending after the journal's last record.
    pub fn new(journal: J) -> Journaler<J> {
        let next_seq = journal.next_seq();
        Journaler { journal, next_seq }
    }

    /// Appends command `seq`, stamped at ingress with `command.timestamp_ns`.
    pub fn on_command(&mut self, seq: u64, command: &Command) -> Result<(), JournalError> {
        // The ring hands out sequences in order: a gap or a repeat is a broken invariant.
        assert_eq!(
            seq, self.next_seq,
            "the Journaler got sequences out of order"
        );
        self.journal.append(&JournalRecord {
            seq,
            timestamp_ns: command.timestamp_ns,
            command: *command,
        })?;
        self.next_seq += 1;
        Ok(())
    }

    /// The end of a batch: every command appended so far becomes durable per the policy.
    pub fn end_of_batch(&mut self) -> Result<(), JournalError> {
        self.journal.commit()
    }

    /// The journal.
    pub fn journal(&self) -> &J {
        &self.journal
    }

    /// The journal, for the runtime's final sync.
    pub fn journal_mut(&mut self) -> &mut J {
        &mut self.journal
    }

    /// The journal, taken back (the simulator's crash).
    pub fn into_journal(self) -> J {
        self.journal
    }
}
