//! The resend window: the most recent places that carried a client order id, so that a
//! client that lost its connection before an ack can send an order again (marked as a
//! possible resend) and get the original's outcome instead of a second order.
//!
//! The window holds the newest `resends_max` such places in sequence order. When it is full
//! the oldest leaves, and the window remembers the sequence of the newest place that left
//! (`forgotten_through`). A possible resend carries a floor: the client's highest
//! acknowledged sequence when it first sent the order, so the original, if the engine took
//! it, has a sequence above the floor. Looking one up gives:
//! - [`ResendLookup::Original`]: the newest remembered place of that account and client
//!   order id lies above the floor; that is the original.
//! - [`ResendLookup::New`]: none does, and nothing above the floor was forgotten, so the
//!   engine never took the original; the resend is placed as a new order.
//! - [`ResendLookup::Unknown`]: none does, but places above the floor were forgotten; the
//!   engine cannot tell and refuses (`resend_unknown`) rather than risk a second order.
//!
//! The window is part of the matcher state: snapshots carry it and the state hash covers it.

use crate::paged::Paged;
use crate::state::StoredResend;
use crate::table::FixedMap;

/// What the window knows of a possible resend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResendLookup {
    /// The engine took the original: this one.
    Original(StoredResend),
    /// The engine never took the original.
    New,
    /// The window has forgotten places the original may be among.
    Unknown,
}

/// The key of a remembered place.
#[inline]
pub(crate) fn resend_key(account: u32, client_order_id: u64) -> u128 {
    (u128::from(account) << 64) | u128::from(client_order_id)
}

/// The outcome of a lookup, given the newest remembered place of the key (if any) and what
/// the window has forgotten. Both window implementations decide with this.
#[inline]
pub(crate) fn decide(
    newest: Option<&StoredResend>,
    floor: u64,
    forgotten_through: u64,
) -> ResendLookup {
    match newest {
        Some(resend) if resend.seq > floor => ResendLookup::Original(*resend),
        _ if forgotten_through > floor => ResendLookup::Unknown,
        _ => ResendLookup::New,
    }
}

/// The fast window: a ring of entries in sequence order, and a map from key to the ring slot
/// of the key's newest entry. Everything is allocated at construction.
pub(crate) struct ResendWindow {
    /// Paged so that a snapshot can copy it a page at a time.
    pub(crate) ring: Paged<StoredResend>,
    /// Ring slot of the oldest entry.
    head: usize,
    len: usize,
    by_key: FixedMap<u128>,
    forgotten_through: u64,
}

const EMPTY_ENTRY: StoredResend = StoredResend {
    seq: 0,
    account: 0,
    client_order_id: 0,
    instrument: 0,
    side: ringmatch_proto::Side::Buy,
    price: 0,
    qty: 0,
    order_id: 0,
    rejected: None,
};

impl ResendWindow {
    /// An empty window for `capacity` (at least 1) entries.
    pub fn new(capacity: usize) -> ResendWindow {
        ResendWindow {
            ring: Paged::new(vec![EMPTY_ENTRY; capacity.max(1)].into_boxed_slice()),
            head: 0,
            len: 0,
            by_key: FixedMap::with_len_max(capacity.max(1)),
            forgotten_through: 0,
        }
    }

    /// What the window knows of a resend of (`account`, `client_order_id`) above `floor`.
    #[inline]
    pub fn lookup(&self, account: u32, client_order_id: u64, floor: u64) -> ResendLookup {
        let newest = self
            .by_key
            .get(resend_key(account, client_order_id))
            .map(|slot| &self.ring[slot as usize]);
        decide(newest, floor, self.forgotten_through)
    }

    /// Remembers a place; its sequence is above every remembered one.
    #[inline]
    pub fn record(&mut self, resend: StoredResend) {
        if self.len == self.ring.len() {
            self.forget_oldest();
        }
        let slot = (self.head + self.len) % self.ring.len();
        self.ring[slot] = resend;
        self.len += 1;
        // The key's older entry stays in the ring (it leaves in turn) but no longer answers.
        self.by_key.upsert(
            resend_key(resend.account, resend.client_order_id),
            slot as u32,
        );
    }

    fn forget_oldest(&mut self) {
        let oldest = self.ring[self.head];
        self.by_key.remove_if(
            resend_key(oldest.account, oldest.client_order_id),
            self.head as u32,
        );
        self.forgotten_through = oldest.seq;
        self.head = (self.head + 1) % self.ring.len();
        self.len -= 1;
    }

    /// The window as the state encoding reads it.
    pub fn view(&self) -> ResendView<'_> {
        ResendView {
            ring: self.ring.as_slice(),
            marks: self.marks(),
        }
    }

    /// Where the window's entries are in its ring, and what it has forgotten.
    pub fn marks(&self) -> ResendMarks {
        ResendMarks {
            head: self.head,
            len: self.len,
            forgotten_through: self.forgotten_through,
        }
    }

    /// Sets what a restored state had forgotten.
    pub fn set_forgotten_through(&mut self, seq: u64) {
        self.forgotten_through = seq;
    }
}

/// Where a window's entries are in its ring, and what it has forgotten: with a copy of the
/// ring, all a snapshot needs of the window.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ResendMarks {
    head: usize,
    len: usize,
    forgotten_through: u64,
}

/// A window's ring (live, or a snapshot's copy) with its marks.
pub(crate) struct ResendView<'a> {
    pub ring: &'a [StoredResend],
    pub marks: ResendMarks,
}

impl<'a> ResendView<'a> {
    /// The sequence of the newest place forgotten.
    pub fn forgotten_through(&self) -> u64 {
        self.marks.forgotten_through
    }

    /// The remembered places, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &'a StoredResend> + use<'a> {
        let (ring, ResendMarks { head, len, .. }) = (self.ring, self.marks);
        (0..len).map(move |index| &ring[(head + index) % ring.len()])
    }

    /// How many places are remembered.
    pub fn len(&self) -> usize {
        self.marks.len
    }
}
