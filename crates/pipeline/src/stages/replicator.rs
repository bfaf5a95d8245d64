//! The Replicator. Replication mode `none`: the stage is in place (the Matcher waits for it as
//! for the Journaler) and passes every command on; the cluster makes it real.

use ringmatch_proto::Command;

/// The Replicator's state.
#[derive(Debug, Default)]
pub struct Replicator {
    passed_count: u64,
}

impl Replicator {
    /// One command of the batch.
    pub fn on_command(&mut self, _seq: u64, _command: &Command) {
        self.passed_count += 1;
    }

    /// The end of a batch: with no standby, every command of it is replicated.
    pub fn end_of_batch(&mut self) {}

    /// Commands passed on so far.
    pub fn passed_count(&self) -> u64 {
        self.passed_count
    }
}
