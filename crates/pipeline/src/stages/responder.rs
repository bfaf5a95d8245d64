//! The Responder: acknowledges each session's command and hands every event to the router
//! (the gateway's sessions). Every event in the output ring is durable under the journal's
//! policy (the Matcher runs a command only after the Journaler has it), so this is where a
//! command is acknowledged: just before its first event, to the session that sent it. Every
//! command a session may send has at least one event, so each gets exactly one ack.

use ringmatch_proto::Event;

use crate::OutputSlot;

/// Where the Responder sends acks and events: the order-entry sessions. Runs on its own stage
/// thread, beside the Publisher, on the output ring.
pub trait EventRouter: Send + 'static {
    /// The command with client order id `client_order_id` from `session`, stamped at ingress
    /// `timestamp_ns`, is durable with sequence `seq`; its events follow.
    fn ack(&mut self, session: u32, client_order_id: u64, seq: u64, timestamp_ns: u64);
    /// One event, caused by a command of `session` (0: none, or a replayed command).
    fn route(&mut self, session: u32, event: &Event);
    /// The end of a ring batch.
    fn end_of_batch(&mut self);
}

/// The Responder's state.
pub struct Responder<R: EventRouter + ?Sized> {
    acks_count: u64,
    router: Box<R>,
}

impl<R: EventRouter + ?Sized> Responder<R> {
    /// A Responder routing to `router`.
    pub fn new(router: Box<R>) -> Responder<R> {
        Responder {
            acks_count: 0,
            router,
        }
    }

    /// One slot of the output ring.
    #[inline]
    pub fn on_slot(&mut self, slot: &OutputSlot) {
        if slot.session != 0 && slot.event.index == 0 {
            self.acks_count += 1;
            self.router.ack(
                slot.session,
                slot.client_order_id,
                slot.event.seq,
                slot.event.timestamp_ns,
            );
        }
        self.router.route(slot.session, &slot.event);
    }

    /// The end of a batch.
    pub fn end_of_batch(&mut self) {
        self.router.end_of_batch();
    }

    /// Acks sent so far.
    pub fn acks_count(&self) -> u64 {
        self.acks_count
    }

    /// The router.
    pub fn router(&self) -> &R {
        &self.router
    }

    /// The router, for the simulator to read what its sessions saw.
    pub fn router_mut(&mut self) -> &mut R {
        &mut self.router
    }
}
