//! The comparison baseline: the same topology as [`crate::Pipeline`] on bounded crossbeam
//! channels instead of rings. It exists only to be benchmarked against the ring pipeline in
//! the same run (`ringmatch bench --baseline crossbeam`); the service never uses it.
//!
//! ```text
//!  producer ─┬─▶ channel ─▶ Journaler (append; group commit when its channel is empty) ─┐
//!            └─▶ channel ─▶ Replicator (pass on) ───────────────────────────────────────┤
//!                                                            Matcher (waits for both) ◀─┘
//!                                                               └─▶ channel ─▶ Publisher
//! ```
//!
//! Each thread drives the same stage struct as its ring counterpart (`crate::stages`): the
//! Journaler appends and commits per batch, the Matcher runs the same engine, and the
//! Publisher hands events to the same kind of sink and keeps the same L2 book from level
//! events, once per batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use ringmatch_journal::Journal;
use ringmatch_matcher::{Engine, EventSink};
use ringmatch_proto::{Command, Event};

use crate::market_data::MarketData;
use crate::stages::{Journaler, Matcher, Publisher, Replicator};
use crate::{now_ns, Busy, Metrics, OutputSink, Stage, StageRecorder};

/// The producer handle of the baseline.
pub struct CrossbeamSubmitter {
    to_journaler: Sender<(u64, Command)>,
    to_replicator: Sender<(u64, Command)>,
    next_seq: u64,
    metrics: Arc<Metrics>,
}

impl CrossbeamSubmitter {
    /// Sends one command; [`Busy`] if the journaler's channel is full.
    pub fn try_submit(&mut self, command: &Command) -> Result<u64, Busy> {
        let seq = self.next_seq;
        match self.to_journaler.try_send((seq, *command)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.busy_count.fetch_add(1, Ordering::Relaxed);
                return Err(Busy);
            }
            Err(TrySendError::Disconnected(_)) => panic!("baseline journaler stopped"),
        }
        // The replicator's channel is as large as the journaler's and drains faster, so this
        // rarely waits; a command already sent to the journaler must reach it too.
        self.to_replicator
            .send((seq, *command))
            .expect("baseline replicator stopped");
        self.next_seq += 1;
        self.metrics
            .input_published_seq
            .fetch_max(seq, Ordering::Relaxed);
        Ok(seq)
    }
}

/// The running baseline.
pub struct CrossbeamPipeline {
    submitter: Option<CrossbeamSubmitter>,
    threads: Vec<JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

struct ChannelSink<'a>(&'a Sender<Event>);

impl EventSink for ChannelSink<'_> {
    fn push(&mut self, event: &Event) {
        self.0.send(*event).expect("baseline publisher stopped");
    }
}

impl CrossbeamPipeline {
    /// Starts the four stage threads with channels of `capacity` messages.
    pub fn start<S: OutputSink>(
        capacity: usize,
        engine: Engine,
        journal: Journal,
        sink: S,
    ) -> CrossbeamPipeline {
        let base_seq = journal.next_seq();
        let metrics = Arc::new(Metrics::new(capacity as u64, base_seq, journal.stats()));
        let (to_journaler, journaler_in) = bounded::<(u64, Command)>(capacity);
        let (to_replicator, replicator_in) = bounded::<(u64, Command)>(capacity);
        let (journaled_out, matcher_journaled) = bounded::<(u64, Command)>(capacity);
        let (replicated_out, matcher_replicated) = bounded::<u64>(capacity);
        let (events_out, publisher_in) = bounded::<Event>(capacity * 4);
        let market_data = Arc::new(MarketData::from_engine(&engine));
        let mut journaler = Journaler::new(journal);
        let mut matcher = Matcher::new(engine, base_seq, 0, sink.last_event_position());
        let mut publisher = Publisher::new(sink, market_data, Arc::clone(&metrics), capacity);
        let mut threads = Vec::new();

        let stage_metrics = Arc::clone(&metrics);
        threads.push(spawn("baseline-journaler", move || {
            let mut recorder = StageRecorder::new(Stage::Journaled, stage_metrics);
            let mut batch: Vec<(u64, Command)> = Vec::with_capacity(capacity);
            while let Ok(first) = journaler_in.recv() {
                batch.push(first);
                while batch.len() < capacity {
                    match journaler_in.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                for (seq, command) in &batch {
                    journaler
                        .on_command(*seq, command)
                        .expect("baseline journal append");
                }
                journaler.end_of_batch().expect("baseline journal sync");
                let now = now_ns();
                for (seq, command) in batch.drain(..) {
                    recorder.record(command.timestamp_ns, now);
                    recorder.done(seq, false);
                    journaled_out
                        .send((seq, command))
                        .expect("baseline matcher stopped");
                }
            }
            journaler
                .journal_mut()
                .sync()
                .expect("baseline journal sync");
        }));

        let stage_metrics = Arc::clone(&metrics);
        threads.push(spawn("baseline-replicator", move || {
            let mut recorder = StageRecorder::new(Stage::Replicated, stage_metrics);
            let mut replicator = Replicator::default();
            for (seq, command) in replicator_in {
                replicator.on_command(seq, &command);
                replicator
                    .end_of_batch()
                    .expect("a Replicator without a link never fails");
                recorder.record(command.timestamp_ns, now_ns());
                recorder.done(seq, replicated_out.is_empty());
                replicated_out.send(seq).expect("baseline matcher stopped");
            }
        }));

        let stage_metrics = Arc::clone(&metrics);
        threads.push(spawn("baseline-matcher", move || {
            let mut recorder = StageRecorder::new(Stage::Matched, stage_metrics);
            let mut sink = ChannelSink(&events_out);
            for (seq, command) in matcher_journaled {
                let replicated = receive(&matcher_replicated);
                assert_eq!(replicated, seq, "both stages pass commands in order");
                matcher.on_command(seq, &command, &mut sink);
                recorder.record(command.timestamp_ns, now_ns());
                recorder.done(seq, matcher_replicated.is_empty());
            }
        }));

        let stage_metrics = Arc::clone(&metrics);
        threads.push(spawn("baseline-publisher", move || {
            let mut recorder = StageRecorder::new(Stage::Published, Arc::clone(&stage_metrics));
            let mut batch_timestamps_ns = Vec::new();
            while let Ok(first) = publisher_in.recv() {
                let mut event = first;
                loop {
                    publisher.on_event(&event);
                    if event.index == 0 {
                        batch_timestamps_ns.push(event.timestamp_ns);
                    }
                    match publisher_in.try_recv() {
                        Ok(next) => event = next,
                        Err(_) => break,
                    }
                }
                publisher.end_of_batch();
                let now = now_ns();
                for timestamp_ns in batch_timestamps_ns.drain(..) {
                    recorder.record(timestamp_ns, now);
                }
                recorder.done(event.seq, true);
            }
        }));

        CrossbeamPipeline {
            submitter: Some(CrossbeamSubmitter {
                to_journaler,
                to_replicator,
                next_seq: base_seq,
                metrics: Arc::clone(&metrics),
            }),
            threads,
            metrics,
        }
    }

    /// The producer handle (only one exists).
    pub fn submitter(&mut self) -> &mut CrossbeamSubmitter {
        self.submitter.as_mut().expect("running")
    }

    /// The shared metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Closes the input, drains every stage and joins the threads.
    pub fn shutdown(mut self) {
        drop(self.submitter.take());
        for thread in self.threads.drain(..) {
            thread.join().expect("baseline stage panicked");
        }
    }
}

fn receive<T>(receiver: &Receiver<T>) -> T {
    receiver.recv().expect("baseline stage stopped")
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .expect("spawn a baseline stage")
}
