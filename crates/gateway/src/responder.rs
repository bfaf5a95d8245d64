//! The Responder: the output-ring stage that acknowledges each session's commands and sends
//! each event to the order-entry sessions that should see it. A command reaches the output
//! ring only once it is durable under the journal's policy, so the `ack` (with the command's
//! sequence) is queued here, just before the command's first event, and never earlier. It
//! queues each frame on the session's output and, at the end of each ring batch, writes every
//! touched session's queue to its socket without waiting: what a socket does not take stays
//! queued for the session's writer task, and a session whose queue fills is disconnected, so
//! a session never slows the engine. Sessions register and leave through a channel the stage
//! drains as it goes.

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use ringmatch_pipeline::{EventRouter, LatencyRecorder};
use ringmatch_proto::{Event, EventType};

use crate::metrics::GatewayMetrics;
use crate::output::SessionOutput;
use crate::protocol::Frame;

/// A change to the set of sessions.
pub enum Registration {
    /// A session logged in.
    Add {
        /// Session id.
        session_id: u32,
        /// Its trading account (None for a drop-copy login).
        account: Option<u32>,
        /// Accounts it receives a drop copy of.
        drop_copy_accounts: Vec<u32>,
        /// Its outbound queue and socket.
        output: Arc<SessionOutput>,
    },
    /// A session ended.
    Remove {
        /// Session id.
        session_id: u32,
    },
}

struct Entry {
    output: Arc<SessionOutput>,
    account: Option<u32>,
    drop_copy_accounts: Vec<u32>,
    /// Queued to since the last flush.
    dirty: bool,
}

/// The Responder stage's state.
pub struct Responder {
    registrations: Receiver<Registration>,
    sessions: HashMap<u32, Entry>,
    trading_by_account: HashMap<u32, Vec<u32>>,
    drop_copy_by_account: HashMap<u32, Vec<u32>>,
    targets: Vec<u32>,
    /// Sessions queued to in this batch, flushed at its end.
    dirty: Vec<u32>,
    /// Ingress stamps of the commands acknowledged in this batch.
    acked_timestamps_ns: Vec<u64>,
    /// Wire-to-wire latencies, written to the shared histogram at the end of each batch.
    wire_to_wire: LatencyRecorder,
    metrics: Arc<GatewayMetrics>,
}

/// A Responder and the sender sessions register through; it records wire-to-wire latency
/// into `metrics`.
pub fn responder(metrics: Arc<GatewayMetrics>) -> (Responder, Sender<Registration>) {
    let (sender, receiver) = crossbeam_channel::unbounded();
    (
        Responder {
            registrations: receiver,
            sessions: HashMap::new(),
            trading_by_account: HashMap::new(),
            drop_copy_by_account: HashMap::new(),
            targets: Vec::with_capacity(16),
            dirty: Vec::with_capacity(64),
            acked_timestamps_ns: Vec::with_capacity(1024),
            wire_to_wire: LatencyRecorder::default(),
            metrics,
        },
        sender,
    )
}

impl Responder {
    fn apply_registrations(&mut self) {
        while let Ok(registration) = self.registrations.try_recv() {
            match registration {
                Registration::Add {
                    session_id,
                    account,
                    drop_copy_accounts,
                    output,
                } => {
                    if let Some(account) = account {
                        self.trading_by_account
                            .entry(account)
                            .or_default()
                            .push(session_id);
                    }
                    for watched in &drop_copy_accounts {
                        self.drop_copy_by_account
                            .entry(*watched)
                            .or_default()
                            .push(session_id);
                    }
                    self.sessions.insert(
                        session_id,
                        Entry {
                            output,
                            account,
                            drop_copy_accounts,
                            dirty: false,
                        },
                    );
                }
                Registration::Remove { session_id } => self.remove(session_id),
            }
        }
    }

    fn remove(&mut self, session_id: u32) {
        let Some(entry) = self.sessions.remove(&session_id) else {
            return;
        };
        if let Some(account) = entry.account {
            if let Some(list) = self.trading_by_account.get_mut(&account) {
                list.retain(|id| *id != session_id);
            }
        }
        for watched in &entry.drop_copy_accounts {
            if let Some(list) = self.drop_copy_by_account.get_mut(watched) {
                list.retain(|id| *id != session_id);
            }
        }
    }

    /// Queues a frame for a session, to be written at the end of the batch. A session that
    /// does not read its responses is closed by its output (its writer tells it why); one that
    /// is gone is forgotten. Neither is waited for.
    fn queue(&mut self, session_id: u32, frame: &Frame) {
        let Some(entry) = self.sessions.get_mut(&session_id) else {
            return;
        };
        match entry.output.queue(frame) {
            Ok(()) => {
                if !entry.dirty {
                    entry.dirty = true;
                    self.dirty.push(session_id);
                }
            }
            Err(_) => self.remove(session_id),
        }
    }

    /// Whether `session` trades for `account`.
    fn is_account_session(&self, session: u32, account: u32) -> bool {
        self.trading_by_account
            .get(&account)
            .is_some_and(|sessions| sessions.contains(&session))
    }

    fn add_account_targets(&mut self, account: u32, trading: bool) {
        let map = if trading {
            &self.trading_by_account
        } else {
            &self.drop_copy_by_account
        };
        if let Some(list) = map.get(&account) {
            self.targets.extend_from_slice(list);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.wire_to_wire.flush_waiting(
            &self.metrics.wire_to_wire,
            &self.metrics.wire_to_wire_sum_ns,
        );
    }
}

impl EventRouter for Responder {
    fn ack(&mut self, session: u32, client_order_id: u64, seq: u64, timestamp_ns: u64) {
        // Every command a session sends has at least one event (the gateway refuses the one
        // command type that has none, `snapshot`), so each is acknowledged exactly once.
        self.apply_registrations();
        self.queue(
            session,
            &Frame::Ack {
                client_order_id,
                seq,
            },
        );
        if self.sessions.contains_key(&session) {
            self.acked_timestamps_ns.push(timestamp_ns);
        }
    }

    fn route(&mut self, session: u32, event: &Event) {
        self.apply_registrations();
        self.targets.clear();
        if session != 0 {
            self.targets.push(session);
        }
        match event.event_type {
            // A maker hears about its fills, and an order about its cancellation, wherever the
            // command came from (another session, the admin, a mass cancel on disconnect). A
            // stop that triggers trades as the taker in someone else's command: its account
            // hears the trigger and its fills as taker too.
            EventType::Fill => {
                self.add_account_targets(event.maker_account, true);
                if session == 0 || !self.is_account_session(session, event.account) {
                    self.add_account_targets(event.account, true);
                }
            }
            EventType::Cancelled | EventType::Triggered => {
                self.add_account_targets(event.account, true)
            }
            _ => {}
        }
        if event.account != 0 {
            self.add_account_targets(event.account, false);
        }
        if event.event_type == EventType::Fill && event.maker_account != event.account {
            self.add_account_targets(event.maker_account, false);
        }
        self.targets.sort_unstable();
        self.targets.dedup();
        let frame = Frame::Event(*event);
        for index in 0..self.targets.len() {
            self.queue(self.targets[index], &frame);
        }
    }

    fn end_of_batch(&mut self) {
        for session_id in self.dirty.drain(..) {
            if let Some(entry) = self.sessions.get_mut(&session_id) {
                entry.dirty = false;
                entry.output.flush();
            }
        }
        // Wire to wire: from the gateway's ingress stamp to the ack handed to the socket (or,
        // when the socket is full, to the session's writer).
        let now_ns = ringmatch_pipeline::now_ns();
        for timestamp_ns in self.acked_timestamps_ns.drain(..) {
            self.wire_to_wire
                .record(now_ns.saturating_sub(timestamp_ns));
        }
        self.wire_to_wire.flush(
            &self.metrics.wire_to_wire,
            &self.metrics.wire_to_wire_sum_ns,
        );
        self.apply_registrations();
    }
}
