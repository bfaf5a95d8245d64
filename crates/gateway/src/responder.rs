//! The Responder: the output-ring stage that sends each event to the order-entry sessions that
//! should see it. Sessions register and leave through a channel the stage drains as it goes,
//! so the stage never waits on a lock and a session never slows the engine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use ringmatch_pipeline::EventRouter;
use ringmatch_proto::{Event, EventType};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::Notify;

use crate::protocol::Frame;

/// What a session shares with the Responder.
#[derive(Debug, Default)]
pub struct SessionShared {
    /// Set when the session's queue filled: it is disconnected as a slow consumer.
    pub slow: AtomicBool,
    /// Wakes the session's writer to close the connection.
    pub close: Notify,
}

/// What a session's writer receives.
#[derive(Debug)]
pub enum Outbound {
    /// A frame to send as it is.
    Frame(Frame),
    /// An event caused by one of the session's own commands. The Responder can route it before
    /// the session has queued that command's `ack`; the writer holds it until the ack is out,
    /// so a client always sees the ack first.
    OwnEvent(Event),
}

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
        /// Its outbound queue.
        sender: tokio::sync::mpsc::Sender<Outbound>,
        /// Flags shared with the session.
        shared: Arc<SessionShared>,
    },
    /// A session ended.
    Remove {
        /// Session id.
        session_id: u32,
    },
}

struct Entry {
    sender: tokio::sync::mpsc::Sender<Outbound>,
    shared: Arc<SessionShared>,
    account: Option<u32>,
    drop_copy_accounts: Vec<u32>,
}

/// The Responder stage's state.
pub struct Responder {
    registrations: Receiver<Registration>,
    sessions: HashMap<u32, Entry>,
    trading_by_account: HashMap<u32, Vec<u32>>,
    drop_copy_by_account: HashMap<u32, Vec<u32>>,
    targets: Vec<u32>,
}

/// A Responder and the sender sessions register through.
pub fn responder() -> (Responder, Sender<Registration>) {
    let (sender, receiver) = crossbeam_channel::unbounded();
    (
        Responder {
            registrations: receiver,
            sessions: HashMap::new(),
            trading_by_account: HashMap::new(),
            drop_copy_by_account: HashMap::new(),
            targets: Vec::with_capacity(16),
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
                    sender,
                    shared,
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
                            sender,
                            shared,
                            account,
                            drop_copy_accounts,
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

impl EventRouter for Responder {
    fn route(&mut self, session: u32, event: &Event) {
        self.apply_registrations();
        self.targets.clear();
        if session != 0 {
            self.targets.push(session);
        }
        match event.event_type {
            // A maker hears about its fills, and an order about its cancellation, wherever the
            // command came from (another session, the admin, a mass cancel on disconnect).
            EventType::Fill => self.add_account_targets(event.maker_account, true),
            EventType::Cancelled => self.add_account_targets(event.account, true),
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
        for index in 0..self.targets.len() {
            let session_id = self.targets[index];
            let Some(entry) = self.sessions.get(&session_id) else {
                continue;
            };
            let outbound = if session_id == session {
                Outbound::OwnEvent(*event)
            } else {
                Outbound::Frame(Frame::Event(*event))
            };
            match entry.sender.try_send(outbound) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    // The session does not read its responses: drop it, never wait for it.
                    entry.shared.slow.store(true, Ordering::Release);
                    entry.shared.close.notify_one();
                    self.remove(session_id);
                }
                Err(TrySendError::Closed(_)) => self.remove(session_id),
            }
        }
    }

    fn end_of_batch(&mut self) {
        self.apply_registrations();
    }
}
