//! A follower's matcher in shadow. It runs every committed command, as the leader's matcher
//! does, on a thread of its own (never the replica's, whose acks the leader waits for), and
//! writes the snapshots: every `snapshots.every_commands` commands, each with its events mark
//! (the position of the last event before it, the same on every member since the matcher is
//! deterministic). So a cluster's leader takes no snapshot and never pauses for one, and a
//! promotion replays only from the newest follower snapshot whose mark the output holds.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Sender};
use ringmatch_journal::{EventsMark, JournalReader, JournalRecord, SnapshotStore};
use ringmatch_matcher::{Engine, EventSink, MatcherConfig};
use ringmatch_pipeline::choose_snapshot;
use ringmatch_proto::Event;
use ringmatch_replication::{CommitHook, Committed};

use crate::log;

/// The position of the last event the shadow matcher emitted.
struct LastEvent(Option<(u64, u32)>);

impl EventSink for LastEvent {
    fn push(&mut self, event: &Event) {
        self.0 = Some((event.seq, event.index));
    }
}

/// The running shadow matcher.
pub(crate) struct Shadow {
    /// Shared with the commit hook; emptied at the stop, which ends the thread.
    sender: Arc<Mutex<Option<Sender<Vec<JournalRecord>>>>>,
    thread: Option<JoinHandle<()>>,
}

impl Shadow {
    /// Rebuilds the matcher to `commit` (the newest snapshot at or before it, then the
    /// journal in `journal_dir`) and starts its thread; the hook hands it what the node
    /// commits after `commit`.
    pub(crate) fn start(
        matcher: &MatcherConfig,
        store: SnapshotStore,
        journal_dir: &std::path::Path,
        commit: u64,
        every_commands: u64,
    ) -> anyhow::Result<(Shadow, CommitHook)> {
        let mut problems = Vec::new();
        // Any events mark will do here: the shadow has no output to complete.
        let chosen = choose_snapshot(
            matcher,
            &store,
            1,
            commit + 1,
            Some((u64::MAX, u32::MAX)),
            &mut problems,
        )?;
        let mut last_event = LastEvent(None);
        let (mut engine, from) = match chosen {
            Some((info, engine)) => match store.read(&info)?.events_mark {
                EventsMark::NoEvents => (engine, info.seq + 1),
                EventsMark::Last(seq, index) => {
                    last_event.0 = Some((seq, index));
                    (engine, info.seq + 1)
                }
                // Not written by a cluster member (it records no mark): start over.
                EventsMark::Unrecorded => (Engine::new(matcher.clone())?, 1),
            },
            None => (Engine::new(matcher.clone())?, 1),
        };
        if from <= commit {
            for record in JournalReader::open(journal_dir, from)?.take((commit + 1 - from) as usize)
            {
                let record = record?;
                engine.apply(record.seq, &record.command, &mut last_event);
            }
        }
        log!(
            "cluster: the shadow matcher is at sequence {commit} (from {}), state hash {:#018x}",
            if from > 1 {
                format!("a snapshot after sequence {}", from - 1)
            } else {
                "the journal's start".into()
            },
            engine.state_hash()
        );
        let (sender, receiver) = unbounded::<Vec<JournalRecord>>();
        let thread = std::thread::Builder::new()
            .name("shadow".into())
            .spawn(move || {
                let mut since_snapshot = 0u64;
                for records in receiver {
                    for record in records {
                        engine.apply(record.seq, &record.command, &mut last_event);
                        since_snapshot += 1;
                        if every_commands > 0 && since_snapshot >= every_commands {
                            since_snapshot = 0;
                            match store.write(record.seq, last_event.0, &engine.encode_state()) {
                                Ok(info) => log!(
                                    "cluster: shadow snapshot after sequence {} ({})",
                                    info.seq,
                                    info.path.display()
                                ),
                                // A failed snapshot costs a longer promotion, not correctness.
                                Err(error) => log!("cluster: shadow snapshot failed: {error}"),
                            }
                        }
                    }
                }
            })?;
        let sender = Arc::new(Mutex::new(Some(sender)));
        let hook_sender = Arc::clone(&sender);
        let hook: CommitHook = Box::new(move |_, committed: &[Committed]| {
            // After the stop (a promotion) there is no sender: the leader's own matcher runs
            // the commands from here.
            if let Some(sender) = hook_sender
                .lock()
                .ok()
                .as_ref()
                .and_then(|guard| guard.as_ref())
            {
                let _ = sender.send(committed.iter().map(|entry| entry.record).collect());
            }
        });
        Ok((
            Shadow {
                sender,
                thread: Some(thread),
            },
            hook,
        ))
    }

    /// Stops the thread once it has run what it was given.
    pub(crate) fn stop(mut self) {
        if let Ok(mut sender) = self.sender.lock() {
            *sender = None;
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
