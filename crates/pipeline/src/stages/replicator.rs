//! The Replicator. It is in place in every pipeline (the Matcher waits for it as for the
//! Journaler) and passes every command on. On a cluster's leader the commands are replicated
//! by the replica's own thread, which the Journaler's port hands them to, and the Matcher's
//! thread waits for each command's replication before it runs it (the runtime's commit gate
//! over a [`crate::ports::ReplicaLink`]): a commit then wakes the Matcher itself, not this
//! stage, which would have to wake the Matcher in turn.

use ringmatch_proto::Command;

/// The Replicator's state.
#[derive(Default)]
pub struct Replicator {
    passed_count: u64,
}

impl Replicator {
    /// One command of the batch.
    pub fn on_command(&mut self, _seq: u64, _command: &Command) {
        self.passed_count += 1;
    }

    /// The end of a batch: every command of it is passed on.
    pub fn end_of_batch(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Commands passed on so far.
    pub fn passed_count(&self) -> u64 {
        self.passed_count
    }
}
