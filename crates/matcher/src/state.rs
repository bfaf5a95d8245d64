//! The canonical matcher state: one walk over the whole book state, in one fixed order, that
//! is both hashed (the state hash) and written as bytes (the matcher part of a snapshot).
//!
//! The byte layout is in `docs/snapshot-format.md` ("matcher state"). Both the fast engine and
//! the naive reference book write the same walk, so equal states give equal hashes and bytes.

use ringmatch_proto::{OcoLeg, OrderKind, RejectReason, SelfTradePrevention, Side, TimeInForce};

use crate::config::{ConfigError, InstrumentSpec};

/// First four bytes of a matcher state: `RMMS`.
pub const STATE_MAGIC: [u8; 4] = *b"RMMS";

/// Layout version of the matcher state this build writes. Version 2 added the resend window
/// after the books, version 3 each book's last trade price and waiting stops, version 4 each
/// order's iceberg slices, version 5 the engine's time and each order's expiry, version 6
/// each order's OCO leg; older states still read, with an empty window, no last trade price,
/// no stops, no icebergs, time 0, no expiries and no OCOs.
pub const STATE_VERSION: u32 = 6;

/// The oldest layout version this build reads.
pub const STATE_VERSION_OLDEST: u32 = 1;

/// One resting order as the state stores it (its book, side and price come from its level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredOrder {
    /// Engine order id.
    pub order_id: u64,
    /// Client order id, 0 for none.
    pub client_order_id: u64,
    /// Owner.
    pub account: u32,
    /// Total quantity.
    pub qty: u64,
    /// Quantity filled so far.
    pub filled: u64,
    /// Self-trade prevention mode (used when a replace makes it trade).
    pub stp: SelfTradePrevention,
    /// Post-only flag (checked again on replace).
    pub post_only: bool,
    /// An iceberg's displayed quantity; 0 for an order that shows all of itself.
    pub display_qty: u64,
    /// What is left of an iceberg's current slice (0 when `display_qty` is).
    pub shown: u64,
    /// When a GTD or day order expires (nanoseconds since the Unix epoch); 0: never.
    pub expire_ns: u64,
    /// Which leg of an OCO it is, while the other leg is live.
    pub oco_leg: Option<OcoLeg>,
}

/// One waiting stop as the state stores it (its book, side and stop price come from its
/// queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredStop {
    /// The order's fields (`filled` is always 0: a stop has not traded).
    pub order: StoredOrder,
    /// `stop_market` or `stop_limit`.
    pub kind: OrderKind,
    /// What applies once it triggers.
    pub tif: TimeInForce,
    /// Limit price of a stop-limit; 0 for a stop-market.
    pub price: i64,
}

/// One place the resend window remembers: the outcome a possible resend of it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredResend {
    /// Sequence of the place command.
    pub seq: u64,
    /// Its account.
    pub account: u32,
    /// Its client order id (never 0: places without one are not remembered).
    pub client_order_id: u64,
    /// Its instrument.
    pub instrument: u32,
    /// Its side.
    pub side: Side,
    /// Its limit price (0 for a market order).
    pub price: i64,
    /// Its quantity.
    pub qty: u64,
    /// The engine order id it was accepted with; 0 when it was rejected.
    pub order_id: u64,
    /// Why it was rejected, when it was.
    pub rejected: Option<RejectReason>,
}

/// Receives the canonical walk of a matcher state.
pub trait StateWriter {
    /// One byte.
    fn u8(&mut self, value: u8);
    /// Four bytes, little-endian.
    fn u32(&mut self, value: u32);
    /// Eight bytes, little-endian.
    fn u64(&mut self, value: u64);

    /// Eight bytes, little-endian two's complement.
    fn i64(&mut self, value: i64) {
        self.u64(value as u64);
    }

    /// Magic and version.
    fn header(&mut self) {
        for byte in STATE_MAGIC {
            self.u8(byte);
        }
        self.u32(STATE_VERSION);
    }

    /// An instrument's parameters and its halted flag.
    fn instrument(&mut self, spec: &InstrumentSpec, halted: bool) {
        self.u32(spec.id);
        self.i64(spec.tick_size);
        self.u64(spec.lot_size);
        self.i64(spec.min_price);
        self.i64(spec.max_price);
        self.u64(spec.max_qty);
        self.u8(u8::from(halted));
    }

    /// One resting order.
    fn order(&mut self, order: &StoredOrder) {
        self.u64(order.order_id);
        self.u64(order.client_order_id);
        self.u32(order.account);
        self.u64(order.qty);
        self.u64(order.filled);
        self.u8(order.stp.code());
        self.u8(u8::from(order.post_only));
        self.u64(order.display_qty);
        self.u64(order.shown);
        self.u64(order.expire_ns);
        self.u8(order.oco_leg.map_or(0, OcoLeg::code));
    }

    /// A book's last trade price.
    fn last_price(&mut self, last_price: Option<i64>) {
        self.u8(u8::from(last_price.is_some()));
        self.i64(last_price.unwrap_or(0));
    }

    /// One waiting stop.
    fn stop(&mut self, stop: &StoredStop) {
        self.order(&stop.order);
        self.u8(stop.kind.code());
        self.u8(stop.tif.code());
        self.i64(stop.price);
    }

    /// One entry of the resend window.
    fn resend(&mut self, resend: &StoredResend) {
        self.u64(resend.seq);
        self.u32(resend.account);
        self.u64(resend.client_order_id);
        self.u32(resend.instrument);
        self.u8(resend.side.code());
        self.i64(resend.price);
        self.u64(resend.qty);
        self.u64(resend.order_id);
        self.u8(resend.rejected.map_or(0, RejectReason::code));
    }
}

impl StateWriter for Vec<u8> {
    fn u8(&mut self, value: u8) {
        self.push(value);
    }
    fn u32(&mut self, value: u32) {
        self.extend_from_slice(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.extend_from_slice(&value.to_le_bytes());
    }
}

/// A fast, platform-independent 64-bit hash of a state walk.
pub struct StateHasher {
    state: u64,
    length: u64,
}

impl StateHasher {
    /// A hasher with the fixed seed.
    pub fn new() -> StateHasher {
        StateHasher {
            state: 0x243F_6A88_85A3_08D3,
            length: 0,
        }
    }

    #[inline]
    fn mix(&mut self, value: u64) {
        self.state = (self.state.rotate_left(5) ^ value).wrapping_mul(0x517C_C1B7_2722_0A95);
        self.length += 1;
    }

    /// The hash of everything written.
    pub fn finish(&self) -> u64 {
        // A final avalanche (from splitmix64) so nearby states give distant hashes.
        let mut z = self.state ^ self.length.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Default for StateHasher {
    fn default() -> Self {
        StateHasher::new()
    }
}

impl StateWriter for StateHasher {
    fn u8(&mut self, value: u8) {
        self.mix(u64::from(value));
    }
    fn u32(&mut self, value: u32) {
        self.mix(u64::from(value));
    }
    fn u64(&mut self, value: u64) {
        self.mix(value);
    }
}

/// Why matcher state bytes cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The bytes end before the state does.
    #[error("matcher state truncated at byte {0}")]
    Truncated(usize),
    /// The magic is not `RMMS`.
    #[error("not a matcher state (bad magic)")]
    BadMagic,
    /// The version is not one this build reads.
    #[error(
        "matcher state version {0} is not supported (this build reads {STATE_VERSION_OLDEST} \
         to {STATE_VERSION})"
    )]
    Version(u32),
    /// Bytes follow the end of the state.
    #[error("{0} unexpected bytes after the matcher state")]
    TrailingBytes(usize),
    /// The configuration does not describe the instruments of the state.
    #[error("matcher state does not match the configuration: {0}")]
    ConfigMismatch(String),
    /// The configuration itself is invalid.
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    /// The state needs more capacity than the configured limits give.
    #[error("matcher state does not fit the configured limit {0}")]
    OverLimit(&'static str),
    /// The state breaks a book invariant.
    #[error("matcher state is inconsistent: {0}")]
    Invalid(String),
}

/// Reads a state walk back, checking bounds on every read.
pub struct StateReader<'a> {
    bytes: &'a [u8],
    offset: usize,
    version: u32,
}

impl<'a> StateReader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        StateReader {
            bytes,
            offset: 0,
            version: 0,
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let end = self.offset + N;
        let slice = self
            .bytes
            .get(self.offset..end)
            .ok_or(StateError::Truncated(self.bytes.len()))?;
        self.offset = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take::<1>()?[0])
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    /// A little-endian i64.
    pub fn i64(&mut self) -> Result<i64, StateError> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    fn flag(&mut self) -> Result<bool, StateError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(StateError::Invalid(format!("flag byte {other}"))),
        }
    }

    /// Magic and version.
    pub fn header(&mut self) -> Result<(), StateError> {
        if self.take::<4>()? != STATE_MAGIC {
            return Err(StateError::BadMagic);
        }
        match self.u32()? {
            version @ STATE_VERSION_OLDEST..=STATE_VERSION => {
                self.version = version;
                Ok(())
            }
            other => Err(StateError::Version(other)),
        }
    }

    /// The layout version [`StateReader::header`] read.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// An instrument, checked against `spec`; returns its halted flag.
    pub fn instrument(&mut self, spec: &InstrumentSpec) -> Result<bool, StateError> {
        let stored = (
            self.u32()?,
            self.i64()?,
            self.u64()?,
            self.i64()?,
            self.i64()?,
            self.u64()?,
        );
        let configured = (
            spec.id,
            spec.tick_size,
            spec.lot_size,
            spec.min_price,
            spec.max_price,
            spec.max_qty,
        );
        if stored != configured {
            return Err(StateError::ConfigMismatch(format!(
                "instrument (id, tick, lot, min, max, max_qty) is {stored:?} in the state but \
                 {configured:?} in the config"
            )));
        }
        self.flag()
    }

    /// One resting order.
    pub fn order(&mut self) -> Result<StoredOrder, StateError> {
        Ok(StoredOrder {
            order_id: self.u64()?,
            client_order_id: self.u64()?,
            account: self.u32()?,
            qty: self.u64()?,
            filled: self.u64()?,
            stp: SelfTradePrevention::from_code(self.u8()?)
                .map_err(|error| StateError::Invalid(error.to_string()))?,
            post_only: self.flag()?,
            display_qty: if self.version >= 4 { self.u64()? } else { 0 },
            shown: if self.version >= 4 { self.u64()? } else { 0 },
            expire_ns: if self.version >= 5 { self.u64()? } else { 0 },
            oco_leg: match if self.version >= 6 { self.u8()? } else { 0 } {
                0 => None,
                code => Some(
                    OcoLeg::from_code(code)
                        .map_err(|error| StateError::Invalid(error.to_string()))?,
                ),
            },
        })
    }

    /// A book's last trade price.
    pub fn last_price(&mut self) -> Result<Option<i64>, StateError> {
        let traded = self.flag()?;
        let price = self.i64()?;
        match (traded, price) {
            (true, price) => Ok(Some(price)),
            (false, 0) => Ok(None),
            (false, price) => Err(StateError::Invalid(format!(
                "last trade price {price} on a book that never traded"
            ))),
        }
    }

    /// One waiting stop.
    pub fn stop(&mut self) -> Result<StoredStop, StateError> {
        let invalid = |error: ringmatch_proto::DecodeError| StateError::Invalid(error.to_string());
        let order = self.order()?;
        let kind = OrderKind::from_code(self.u8()?).map_err(invalid)?;
        let tif = TimeInForce::from_code(self.u8()?).map_err(invalid)?;
        let price = self.i64()?;
        Ok(StoredStop {
            order,
            kind,
            tif,
            price,
        })
    }

    /// One entry of the resend window.
    pub fn resend(&mut self) -> Result<StoredResend, StateError> {
        let invalid = |error: ringmatch_proto::DecodeError| StateError::Invalid(error.to_string());
        Ok(StoredResend {
            seq: self.u64()?,
            account: self.u32()?,
            client_order_id: self.u64()?,
            instrument: self.u32()?,
            side: Side::from_code(self.u8()?).map_err(invalid)?,
            price: self.i64()?,
            qty: self.u64()?,
            order_id: self.u64()?,
            rejected: match self.u8()? {
                0 => None,
                code => Some(RejectReason::from_code(code).map_err(invalid)?),
            },
        })
    }

    /// Checks that nothing follows the state.
    pub fn finish(&self) -> Result<(), StateError> {
        match self.bytes.len() - self.offset {
            0 => Ok(()),
            extra => Err(StateError::TrailingBytes(extra)),
        }
    }
}
