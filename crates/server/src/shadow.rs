//! A follower's matcher in shadow. It runs every committed command, as the leader's matcher
//! does, on a thread of its own (never the replica's, whose acks the leader waits for), and
//! writes the snapshots: every `snapshots.every_commands` commands, each with its events mark
//! (the position of the last event before it, the same on every member since the matcher is
//! deterministic). So a cluster's leader takes no snapshot and never pauses for one, and a
//! promotion replays only from the newest follower snapshot whose mark the output holds.
//! After each snapshot the node's log is compacted to the oldest snapshot kept (when the
//! journal's retention is `delete` or `archive`), and a snapshot the node installs from its
//! leader replaces the shadow state.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Sender};
use ringmatch_journal::{EventsMark, JournalReader, JournalRecord, SnapshotStore};
use ringmatch_matcher::{Engine, EventSink, MatcherConfig};
use ringmatch_pipeline::choose_snapshot;
use ringmatch_proto::Event;
use ringmatch_replication::{CommitHook, Committed, Compactor};

use crate::log;

/// Events the shadow matcher keeps for a promotion: the output may lack the last events the
/// old leader made, and these fill that gap without a replay (about 16 MiB).
const RECENT_EVENTS_KEPT_MAX: usize = 1 << 17;

/// The position of the last event the shadow matcher emitted, and its newest events.
struct LastEvent {
    last: Option<(u64, u32)>,
    recent: VecDeque<Event>,
}

impl LastEvent {
    fn at(last: Option<(u64, u32)>) -> LastEvent {
        LastEvent {
            last,
            recent: VecDeque::new(),
        }
    }
}

impl EventSink for LastEvent {
    fn push(&mut self, event: &Event) {
        self.last = Some((event.seq, event.index));
        if self.recent.len() == RECENT_EVENTS_KEPT_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(*event);
    }
}

/// The shadow matcher as it stopped: what a promotion can start from without a replay.
pub(crate) struct Hot {
    /// The matcher, after the command at `applied`.
    pub(crate) engine: Engine,
    /// The last command it ran.
    pub(crate) applied: u64,
    /// The last event it emitted.
    pub(crate) last_event: Option<(u64, u32)>,
    /// Its newest events, in order (at most [`RECENT_EVENTS_KEPT_MAX`]).
    pub(crate) recent: VecDeque<Event>,
}

impl Hot {
    /// The events an output that holds everything up to `held` (and nothing after) lacks,
    /// if this matcher's kept events cover them; `None` when they do not (a replay must).
    pub(crate) fn missing_after(&self, held: Option<(u64, u32)>) -> Option<Vec<Event>> {
        if held == self.last_event {
            return Some(Vec::new());
        }
        let held = held?;
        let first = self.recent.front()?;
        if (first.seq, first.index) > held || Some(held) > self.last_event {
            return None;
        }
        Some(
            self.recent
                .iter()
                .filter(|event| (event.seq, event.index) > held)
                .copied()
                .collect(),
        )
    }
}

/// What the shadow thread is handed.
enum Work {
    /// Committed records, in order.
    Records(Vec<JournalRecord>),
    /// The node installed its leader's snapshot of the state after this sequence: restore it.
    Restore(u64),
}

/// After each shadow snapshot, the node's log is compacted to the oldest snapshot kept (the
/// journal's `retention`), through the replica's compactor once it runs.
pub(crate) struct Compaction {
    /// Set once the replica has started.
    pub(crate) compactor: Arc<Mutex<Option<Compactor>>>,
    /// `Some(None)`: delete old segments; `Some(Some(folder))`: move them there; `None`:
    /// keep everything.
    pub(crate) retention: Option<Option<PathBuf>>,
}

/// The running shadow matcher.
pub(crate) struct Shadow {
    /// Shared with the commit hook; emptied at the stop, which ends the thread.
    sender: Arc<Mutex<Option<Sender<Work>>>>,
    thread: Option<JoinHandle<Option<Hot>>>,
}

/// A matcher restored from a snapshot: the engine, the snapshot's sequence, its last event.
type Restored = (Engine, u64, Option<(u64, u32)>);

/// The engine restored from the oldest stored snapshot at or after `seq` (the one the node
/// installed, or a later install that already replaced it), that snapshot's sequence, and
/// its last event.
fn restore_snapshot(
    matcher: &MatcherConfig,
    store: &SnapshotStore,
    seq: u64,
) -> anyhow::Result<Restored> {
    let info = store
        .list()?
        .into_iter()
        .rev()
        .find(|info| info.seq >= seq)
        .ok_or_else(|| anyhow::anyhow!("no snapshot at or after sequence {seq} in the store"))?;
    let snapshot = store.read(&info)?;
    let engine = Engine::restore_at(matcher.clone(), &snapshot.state, info.seq)?;
    let last_event = match snapshot.events_mark {
        EventsMark::Last(seq, index) => Some((seq, index)),
        EventsMark::NoEvents | EventsMark::Unrecorded => None,
    };
    Ok((engine, info.seq, last_event))
}

impl Shadow {
    /// Rebuilds the matcher to `commit` (the newest snapshot at or before it, then the
    /// journal in `journal_dir`, which starts at `journal_first_seq`) and starts its thread;
    /// the hook hands it what the node commits after `commit`, and the leader's snapshots
    /// the node installs.
    pub(crate) fn start(
        matcher: &MatcherConfig,
        store: SnapshotStore,
        journal_dir: &std::path::Path,
        journal_first_seq: u64,
        commit: u64,
        every_commands: u64,
        compaction: Compaction,
    ) -> anyhow::Result<(Shadow, CommitHook)> {
        let mut problems = Vec::new();
        // Any events mark will do here: the shadow has no output to complete.
        let chosen = choose_snapshot(
            matcher,
            &store,
            journal_first_seq,
            commit + 1,
            Some((u64::MAX, u32::MAX)),
            &mut problems,
        )?;
        let mut last_event = LastEvent::at(None);
        let (mut engine, from) = match chosen {
            Some((info, engine)) => match store.read(&info)?.events_mark {
                EventsMark::NoEvents => (engine, info.seq + 1),
                EventsMark::Last(seq, index) => {
                    last_event.last = Some((seq, index));
                    (engine, info.seq + 1)
                }
                // Not written by a cluster member (it records no mark): start over.
                EventsMark::Unrecorded => (Engine::new(matcher.clone())?, 1),
            },
            None => (Engine::new(matcher.clone())?, 1),
        };
        if from < journal_first_seq && from <= commit {
            anyhow::bail!(
                "the shadow matcher needs the journal from sequence {from}, but it starts at \
                 {journal_first_seq} and no snapshot fits: {}",
                problems.join("; ")
            );
        }
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
        let (sender, receiver) = unbounded::<Work>();
        let matcher = matcher.clone();
        let thread = std::thread::Builder::new()
            .name("shadow".into())
            .spawn(move || {
                // The buffers the leader's non-stalling snapshots copy into, allocated here
                // and not at a promotion (as much memory again as the engine: a copy that
                // cost about 0.2 s before the new leader's gateway opened).
                engine.reserve_snapshot_copy();
                let mut since_snapshot = 0u64;
                let mut applied = commit;
                for work in receiver {
                    let records = match work {
                        Work::Records(records) => records,
                        Work::Restore(seq) => match restore_snapshot(&matcher, &store, seq) {
                            Ok((restored, at, mark)) => {
                                log!(
                                    "cluster: the shadow matcher restored the leader's \
                                     snapshot after sequence {at}, state hash {:#018x}",
                                    restored.state_hash()
                                );
                                engine = restored;
                                engine.reserve_snapshot_copy();
                                last_event = LastEvent::at(mark);
                                applied = at;
                                since_snapshot = 0;
                                continue;
                            }
                            Err(error) => {
                                // The node has cut its journal to the snapshot: a shadow
                                // without it cannot go on, and a restart rebuilds it.
                                log!("cluster: the shadow matcher cannot restore: {error:#}");
                                std::process::exit(70);
                            }
                        },
                    };
                    for record in records {
                        // Already in a snapshot restored past it.
                        if record.seq <= applied {
                            continue;
                        }
                        engine.apply(record.seq, &record.command, &mut last_event);
                        applied = record.seq;
                        since_snapshot += 1;
                        if every_commands > 0 && since_snapshot >= every_commands {
                            since_snapshot = 0;
                            match store.write(record.seq, last_event.last, &engine.encode_state()) {
                                Ok(info) => {
                                    log!(
                                        "cluster: shadow snapshot after sequence {} ({})",
                                        info.seq,
                                        info.path.display()
                                    );
                                    compact(&compaction, &store);
                                }
                                // A failed snapshot costs a longer promotion, not correctness.
                                Err(error) => log!("cluster: shadow snapshot failed: {error}"),
                            }
                        }
                    }
                }
                Some(Hot {
                    engine,
                    applied,
                    last_event: last_event.last,
                    recent: last_event.recent,
                })
            })?;
        let sender = Arc::new(Mutex::new(Some(sender)));
        let hook_sender = Arc::clone(&sender);
        let hook: CommitHook =
            Box::new(move |_, installed: Option<u64>, committed: &[Committed]| {
                // After the stop (a promotion) there is no sender: the leader's own matcher
                // runs the commands from here.
                let guard = hook_sender.lock().ok();
                let Some(sender) = guard.as_ref().and_then(|guard| guard.as_ref()) else {
                    return;
                };
                let records: Vec<JournalRecord> =
                    committed.iter().map(|entry| entry.record).collect();
                match installed {
                    None => {
                        let _ = sender.send(Work::Records(records));
                    }
                    Some(seq) => {
                        let (before, after): (Vec<JournalRecord>, Vec<JournalRecord>) =
                            records.into_iter().partition(|record| record.seq <= seq);
                        let _ = sender.send(Work::Records(before));
                        let _ = sender.send(Work::Restore(seq));
                        let _ = sender.send(Work::Records(after));
                    }
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

    /// Stops the thread once it has run what it was given; the matcher as it stopped.
    pub(crate) fn stop(mut self) -> Option<Hot> {
        if let Ok(mut sender) = self.sender.lock() {
            *sender = None;
        }
        self.thread
            .take()
            .and_then(|thread| thread.join().ok().flatten())
    }
}

/// Compacts the node's log to the oldest snapshot kept, when the retention allows.
fn compact(compaction: &Compaction, store: &SnapshotStore) {
    let Some(archive) = &compaction.retention else {
        return;
    };
    let Ok(kept) = store.list() else {
        return;
    };
    let Some(oldest) = kept.last() else {
        return;
    };
    if let Some(compactor) = compaction
        .compactor
        .lock()
        .ok()
        .as_ref()
        .and_then(|guard| guard.as_ref())
    {
        compactor.compact(oldest.seq, archive.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmatch_proto::{CommandType, EventType};

    fn event(seq: u64, index: u32) -> Event {
        let mut event = Event::empty(EventType::Accepted, CommandType::Place);
        event.seq = seq;
        event.index = index;
        event
    }

    fn hot(events: &[(u64, u32)]) -> Hot {
        let recent: VecDeque<Event> = events.iter().map(|&(s, i)| event(s, i)).collect();
        Hot {
            engine: Engine::new(ringmatch_matcher::workload::mix_config()).unwrap(),
            applied: 9,
            last_event: events.last().copied(),
            recent,
        }
    }

    /// The output lacks the kept events after what it holds; a gap before the kept events,
    /// an empty output or an output ahead of the matcher means a replay.
    #[test]
    fn the_missing_events_come_from_the_kept_ones_or_not_at_all() {
        let hot = hot(&[(4, 0), (4, 1), (6, 0), (9, 0), (9, 1)]);
        let positions = |events: Vec<Event>| -> Vec<(u64, u32)> {
            events.iter().map(|e| (e.seq, e.index)).collect()
        };
        assert_eq!(hot.missing_after(Some((9, 1))).map(positions), Some(vec![]));
        assert_eq!(
            hot.missing_after(Some((4, 1))).map(positions),
            Some(vec![(6, 0), (9, 0), (9, 1)])
        );
        assert_eq!(
            hot.missing_after(Some((4, 0))).map(positions),
            Some(vec![(4, 1), (6, 0), (9, 0), (9, 1)])
        );
        // Before the first kept event: something may be missing that is not kept.
        assert!(hot.missing_after(Some((3, 2))).is_none());
        assert!(hot.missing_after(None).is_none());
        // The output ahead of the matcher.
        assert!(hot.missing_after(Some((10, 0))).is_none());
        // Nothing emitted and nothing held.
        let empty = Hot {
            last_event: None,
            recent: VecDeque::new(),
            ..hot
        };
        assert_eq!(empty.missing_after(None).map(positions), Some(vec![]));
    }
}
