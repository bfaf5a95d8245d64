//! The producers' handle on the input ring.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use disruptor::Producer;
use ringmatch_proto::Command;

use crate::wait::Signal;
use crate::{Busy, InputProducer, Metrics};

/// A handle that puts commands on the input ring. Cloneable; every clone must be dropped
/// (or the pipeline shut down) for the pipeline to stop.
pub struct Submitter {
    producer: InputProducer,
    base_seq: u64,
    metrics: Arc<Metrics>,
    /// Wakes the Journaler and Replicator when they are parked.
    published: Arc<Signal>,
}

impl Clone for Submitter {
    fn clone(&self) -> Self {
        Submitter {
            producer: self.producer.clone(),
            base_seq: self.base_seq,
            metrics: Arc::clone(&self.metrics),
            published: Arc::clone(&self.published),
        }
    }
}

impl Submitter {
    /// A handle on the input ring, whose ring sequence 0 is sequence `base_seq`; `published`
    /// wakes the stages that read the ring.
    pub(crate) fn new(
        producer: InputProducer,
        base_seq: u64,
        metrics: Arc<Metrics>,
        published: Arc<Signal>,
    ) -> Submitter {
        Submitter {
            producer,
            base_seq,
            metrics,
            published,
        }
    }

    /// Puts one command on the ring; returns its sequence, or [`Busy`] if the ring is full.
    pub fn try_submit(&mut self, command: &Command) -> Result<u64, Busy> {
        self.try_submit_from(0, command)
    }

    /// Puts `commands` (at least one) from `session` on the ring with one claim, so they are
    /// published together and the stages are notified once: all of them or, when the ring
    /// lacks room for all, none ([`Busy`]). Returns the sequence of the last one; the others
    /// have the sequences just before it, in order.
    pub fn try_submit_batch_from(
        &mut self,
        session: u32,
        commands: &[Command],
    ) -> Result<u64, Busy> {
        assert!(!commands.is_empty(), "a batch holds at least one command");
        let published = self.producer.try_batch_publish(commands.len(), |slots| {
            for (slot, command) in slots.zip(commands) {
                slot.command = *command;
                slot.session = session;
            }
        });
        self.settle(published.ok())
    }

    /// Puts one command from an order-entry session on the ring.
    pub fn try_submit_from(&mut self, session: u32, command: &Command) -> Result<u64, Busy> {
        let published = self.producer.try_publish(|slot| {
            slot.command = *command;
            slot.session = session;
        });
        self.settle(published.ok())
    }

    /// After a publish ending at ring sequence `last_ring_seq` (None: the ring was full):
    /// wakes the stages and counts it, or counts the refusal.
    fn settle(&mut self, last_ring_seq: Option<i64>) -> Result<u64, Busy> {
        let Some(last_ring_seq) = last_ring_seq else {
            self.metrics.busy_count.fetch_add(1, Ordering::Relaxed);
            return Err(Busy);
        };
        self.published.notify_from_submitter();
        let seq = self.base_seq + last_ring_seq as u64;
        self.metrics
            .input_published_seq
            .fetch_max(seq, Ordering::Relaxed);
        Ok(seq)
    }
}
