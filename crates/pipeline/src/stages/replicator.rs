//! The Replicator. Without a replica link (replication mode `none`) the stage is in place
//! (the Matcher waits for it as for the Journaler) and passes every command on. With one (a
//! cluster's leader), the end of each batch waits until the link says every command of the
//! batch is replicated: the Matcher then runs only replicated commands.

use ringmatch_proto::Command;

use crate::ports::ReplicaLink;

/// The Replicator's state.
#[derive(Default)]
pub struct Replicator {
    passed_count: u64,
    last_seq: u64,
    link: Option<Box<dyn ReplicaLink>>,
}

impl Replicator {
    /// A Replicator that waits on `link` at the end of each batch.
    pub fn with_link(link: Box<dyn ReplicaLink>) -> Replicator {
        Replicator {
            link: Some(link),
            ..Replicator::default()
        }
    }

    /// One command of the batch.
    pub fn on_command(&mut self, seq: u64, _command: &Command) {
        self.passed_count += 1;
        self.last_seq = seq;
    }

    /// The end of a batch: returns once every command of it is replicated (at once with no
    /// link); the link's error otherwise.
    pub fn end_of_batch(&mut self) -> Result<(), String> {
        match &mut self.link {
            Some(link) => link.replicated(self.last_seq),
            None => Ok(()),
        }
    }

    /// Commands passed on so far.
    pub fn passed_count(&self) -> u64 {
        self.passed_count
    }
}
