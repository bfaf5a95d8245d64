//! The journal as a cluster leader's pipeline sees it. [`ReplicatedJournal`] is the
//! Journaler's port: an append gathers the command; the end of a batch hands the batch to the
//! [`Replica`], which proposes each command at the sequence the ring gave it, and returns at
//! once. [`CommitLink`] is what the Matcher's thread waits on before it runs a command: it
//! returns once Raft has committed the command, on a majority of the members' disks, the
//! leader's own copy counting once its journal sync is done. So an acknowledgement means "on
//! a majority of disks", and batches are pipelined: the next is proposed while the last is
//! still being replicated.
//!
//! The node's thread writes the journal itself (it is the Raft log); this port never writes
//! a file. It reads the journal's directory for start-up's replay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ringmatch_journal::{JournalError, JournalRecord, JournalStats};
use ringmatch_pipeline::ports::{records_before, JournalPort, ReplicaLink};

use crate::replica::{Replica, WaitError};

/// How long one wait for a commit lasts before it is renewed (a leader that cannot reach a
/// majority steps down within an election timeout, and the wait then fails).
const COMMIT_WAIT_SLICE: Duration = Duration::from_secs(1);

/// Called when this node turns out not to lead any more; it ends the process in `serve`.
pub type OnDeposed = Box<dyn Fn(&WaitError) + Send>;

/// The Journaler's port on a cluster leader.
pub struct ReplicatedJournal {
    replica: Arc<Replica>,
    dir: PathBuf,
    first_seq: u64,
    next_seq: u64,
    batch: Vec<JournalRecord>,
    stats: Arc<JournalStats>,
    on_deposed: OnDeposed,
}

impl ReplicatedJournal {
    /// The port of a leader whose next command gets `next_seq`, over the journal in `dir`
    /// (which the replica's node writes) with its counters `stats`.
    pub fn new(
        replica: Arc<Replica>,
        dir: &Path,
        first_seq: u64,
        next_seq: u64,
        stats: Arc<JournalStats>,
        on_deposed: OnDeposed,
    ) -> ReplicatedJournal {
        ReplicatedJournal {
            replica,
            dir: dir.to_path_buf(),
            first_seq,
            next_seq,
            batch: Vec::new(),
            stats,
            on_deposed,
        }
    }

    fn failed(&self, error: &WaitError) -> JournalError {
        JournalError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other(format!("not replicated: {error}")),
        }
    }
}

impl JournalPort for ReplicatedJournal {
    fn append(&mut self, record: &JournalRecord) -> Result<(), JournalError> {
        assert_eq!(record.seq, self.next_seq, "appends come in sequence order");
        self.batch.push(*record);
        self.next_seq += 1;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), JournalError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        // Proposed, not waited for: the Matcher's thread waits for the commit (`CommitLink`),
        // so the next batch can be proposed while this one is on its way to the followers.
        if self
            .replica
            .propose(std::mem::take(&mut self.batch))
            .is_err()
        {
            let error = WaitError::Stopped("the replica has stopped".into());
            (self.on_deposed)(&error);
            return Err(self.failed(&error));
        }
        Ok(())
    }

    fn commits_sync(&self) -> bool {
        false
    }

    fn first_seq(&self) -> u64 {
        self.first_seq
    }

    fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn records_from(
        &self,
        seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<JournalRecord, JournalError>> + '_>, JournalError>
    {
        records_before(&self.dir, seq, self.next_seq)
    }

    fn stats(&self) -> Arc<JournalStats> {
        Arc::clone(&self.stats)
    }

    fn sync_all(&mut self) -> Result<(), JournalError> {
        // Every batch was proposed at its end; the node's journal syncs what it writes.
        self.commit()
    }

    fn segments_dir(&self) -> Option<&Path> {
        None
    }
}

/// A cluster leader's replica link: the Matcher's thread waits on it until Raft has committed
/// a command (on a majority of the members' disks) while this node leads its term.
pub struct CommitLink {
    replica: Arc<Replica>,
    term: u64,
    on_deposed: OnDeposed,
}

impl CommitLink {
    /// The link of a leader of `term`.
    pub fn new(replica: Arc<Replica>, term: u64, on_deposed: OnDeposed) -> CommitLink {
        CommitLink {
            replica,
            term,
            on_deposed,
        }
    }
}

impl ReplicaLink for CommitLink {
    fn replicated(&mut self, seq: u64) -> Result<u64, String> {
        loop {
            match self
                .replica
                .wait_committed(seq, self.term, COMMIT_WAIT_SLICE)
            {
                Ok(commit) => return Ok(commit),
                Err(WaitError::Timeout(_)) => continue,
                Err(error) => {
                    (self.on_deposed)(&error);
                    return Err(error.to_string());
                }
            }
        }
    }
}
