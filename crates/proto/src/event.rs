//! The output record: one event from the engine, 128 bytes.

use crate::le::{first_non_zero, i64_at, put_i64, put_u32, put_u64, u32_at, u64_at};
use crate::{
    wire_enum, CommandType, DecodeError, OrderKind, Side, EVENT_SIZE_BYTES, EVENT_VERSION,
};

wire_enum! {
    /// What an event reports.
    EventType, "event_type" {
        /// An order passed validation and got its engine order id.
        Accepted = 1, "accepted";
        /// A command was refused; nothing changed.
        Rejected = 2, "rejected";
        /// A taker traded with a maker at the maker's price.
        Fill = 3, "fill";
        /// An order left the book (or never rested) without being filled.
        Cancelled = 4, "cancelled";
        /// A resting order's price and/or quantity changed.
        Replaced = 5, "replaced";
        /// The total quantity at one price level changed.
        Level = 6, "level";
        /// An instrument was halted.
        Halted = 7, "halted";
        /// An instrument resumed trading.
        Resumed = 8, "resumed";
        /// A mass cancel finished; `qty` holds the number of orders it cancelled.
        MassCancelled = 9, "mass_cancelled";
        /// One resting order, in answer to `open_orders`.
        OrderStatus = 10, "order_status";
        /// The end of an `open_orders` answer; `qty` holds the number of orders listed.
        OpenOrdersEnd = 11, "open_orders_end";
        /// A possible resend of a place the engine had already taken: the original's
        /// outcome (its sequence in `original_seq`, its order now), and no second order.
        Resent = 12, "resent";
        /// A stop order's stop price was reached: the order enters the book now as a market or
        /// limit order (its own events follow).
        Triggered = 13, "triggered";
    }
}

wire_enum! {
    /// Why a command was rejected. Codes are stable: they are on disk and on the wire.
    RejectReason, "reject_reason" {
        /// No instrument with that id is configured.
        UnknownInstrument = 1, "unknown_instrument";
        /// The instrument is halted.
        Halted = 2, "halted";
        /// The price is not a multiple of the tick size.
        PriceNotOnTick = 3, "price_not_on_tick";
        /// The price is outside the instrument's band.
        PriceOutOfRange = 4, "price_out_of_range";
        /// The quantity is zero.
        QuantityZero = 5, "quantity_zero";
        /// The quantity is not a multiple of the lot size.
        QuantityNotLotMultiple = 6, "quantity_not_lot_multiple";
        /// The quantity is over the instrument's maximum.
        QuantityOverMax = 7, "quantity_over_max";
        /// No live order has that id.
        UnknownOrder = 8, "unknown_order";
        /// The order belongs to another account.
        NotYourOrder = 9, "not_your_order";
        /// The account already has a live order with that client order id.
        DuplicateClientOrderId = 10, "duplicate_client_order_id";
        /// A post-only order would trade on arrival.
        PostOnlyWouldTake = 11, "post_only_would_take";
        /// A fill-or-kill order cannot be filled completely right now.
        FokNotFillable = 12, "fok_not_fillable";
        /// The instrument's book holds its maximum number of orders.
        BookFull = 13, "book_full";
        /// The engine holds its maximum number of orders over all books.
        EngineFull = 14, "engine_full";
        /// The engine knows its maximum number of accounts.
        TooManyAccounts = 15, "too_many_accounts";
        /// A field combination that no order may have (market post-only, market GTC, empty replace).
        InvalidOrder = 16, "invalid_order";
        /// A possible resend the engine cannot place safely: it may have taken the original,
        /// but no longer remembers it (the resend window has moved past the resend floor).
        ResendUnknown = 17, "resend_unknown";
        /// A stop whose stop price the last trade price has already reached (a buy stop at or
        /// below it, a sell stop at or above it).
        StopWouldTrigger = 18, "stop_would_trigger";
        /// A stop on an instrument that has not traded yet: there is no last trade price to
        /// hold it against.
        NoLastTrade = 19, "no_last_trade";
        /// A GTD order whose expiry is not after the engine's time, or a day order on an
        /// instrument without a session end.
        ExpiryInvalid = 20, "expiry_invalid";
        /// An OCO whose prices are not in the order a buy needs (limit price below the last
        /// trade price, which is below the stop price) or a sell needs (the other way round).
        OcoPricesInvalid = 21, "oco_prices_invalid";
    }
}

wire_enum! {
    /// Why an order was cancelled. Codes are stable: they are on disk and on the wire.
    CancelReason, "cancel_reason" {
        /// The owner asked.
        User = 1, "user";
        /// The unfilled rest of an immediate-or-cancel order.
        IocRemainder = 2, "ioc_remainder";
        /// A market order found no more liquidity.
        MarketNoLiquidity = 3, "market_no_liquidity";
        /// Self-trade prevention.
        SelfTrade = 4, "self_trade";
        /// A mass cancel of the owner's account.
        MassCancel = 5, "mass_cancel";
        /// A replace asked for a total quantity at or below what was already filled.
        ReplacedBelowFilled = 6, "replaced_below_filled";
        /// A GTD or day order's time came.
        Expired = 7, "expired";
        /// The other leg of its one-cancels-the-other pair traded, triggered or left.
        Oco = 8, "oco";
    }
}

wire_enum! {
    /// Which leg of a one-cancels-the-other pair an order is. The two legs have consecutive
    /// engine order ids: the limit leg's, then the stop leg's.
    OcoLeg, "oco_leg" {
        /// The limit order; its partner's order id is one more than its own.
        Limit = 1, "limit";
        /// The stop or stop-limit order; its partner's order id is one less than its own.
        Stop = 2, "stop";
    }
}

impl OcoLeg {
    /// The engine order id of the other leg of the order `order_id`, this leg.
    pub const fn partner_of(self, order_id: u64) -> u64 {
        match self {
            OcoLeg::Limit => order_id + 1,
            OcoLeg::Stop => order_id - 1,
        }
    }
}

/// The reason byte of an event, whose meaning depends on the event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Events other than `rejected`, `cancelled` and a rejected original's `resent` carry no
    /// reason (code 0).
    None,
    /// The reason of a `rejected` event, or of a `resent` one whose original was rejected.
    Reject(RejectReason),
    /// The reason of a `cancelled` event.
    Cancel(CancelReason),
}

impl Reason {
    /// The byte on the wire.
    pub const fn code(self) -> u8 {
        match self {
            Reason::None => 0,
            Reason::Reject(reason) => reason.code(),
            Reason::Cancel(reason) => reason.code(),
        }
    }

    /// The snake-case name, if any.
    pub const fn name(self) -> Option<&'static str> {
        match self {
            Reason::None => None,
            Reason::Reject(reason) => Some(reason.name()),
            Reason::Cancel(reason) => Some(reason.name()),
        }
    }
}

/// One output event. Every event names the command that caused it by `seq` and its position
/// among that command's events by `index` (from 0); fields an event type does not use are zero.
///
/// For a `fill`, the `account`, `order_id`, `client_order_id` and `remaining` fields describe
/// the taker and the `maker_*` fields the maker; `side` is the taker's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// What happened.
    pub event_type: EventType,
    /// Type of the command that caused the event.
    pub command_type: CommandType,
    /// Sequence of the command that caused the event.
    pub seq: u64,
    /// Position of this event among its command's events, from 0.
    pub index: u32,
    /// The causing command's ingress timestamp.
    pub timestamp_ns: u64,
    /// Instrument id (0 for a mass cancel over all instruments).
    pub instrument: u32,
    /// Account of the order (the taker's, for a fill).
    pub account: u32,
    /// Engine order id (the taker's, for a fill).
    pub order_id: u64,
    /// Client order id (the taker's, for a fill).
    pub client_order_id: u64,
    /// Side of the order or level, when there is one.
    pub side: Option<Side>,
    /// Price in ticks: order price, fill price, or level price.
    pub price: i64,
    /// Quantity in lots: order quantity, fill quantity, cancelled quantity or level total.
    pub qty: u64,
    /// Open quantity left on the order (the taker's, for a fill).
    pub remaining: u64,
    /// Why, for `rejected` and `cancelled`.
    pub reason: Reason,
    /// Maker's account, for a fill.
    pub maker_account: u32,
    /// Maker's order id, for a fill.
    pub maker_order_id: u64,
    /// Maker's client order id, for a fill.
    pub maker_client_order_id: u64,
    /// Maker's open quantity after the fill.
    pub maker_remaining: u64,
    /// For `resent`: the sequence of the original command.
    pub original_seq: u64,
    /// The kind of a stop order not yet triggered (`stop_market` or `stop_limit`), on the
    /// events that describe it (`accepted`, `replaced`, `cancelled`, `order_status`, `resent`)
    /// and on `triggered`; `None` on every other event.
    pub stop_kind: Option<OrderKind>,
    /// The stop price, whenever `stop_kind` is set; else 0.
    pub stop_price: i64,
    /// The displayed quantity of an iceberg order, on the events that describe one (the
    /// taker, for a fill); else 0.
    pub display_qty: u64,
    /// Which leg of a one-cancels-the-other pair the order is, on the events that describe
    /// it (the taker, for a fill) while it is linked to the other leg; `None` otherwise.
    pub oco_leg: Option<OcoLeg>,
}

impl Event {
    /// An event of the given types with every other field zero.
    pub const fn empty(event_type: EventType, command_type: CommandType) -> Event {
        Event {
            event_type,
            command_type,
            seq: 0,
            index: 0,
            timestamp_ns: 0,
            instrument: 0,
            account: 0,
            order_id: 0,
            client_order_id: 0,
            side: None,
            price: 0,
            qty: 0,
            remaining: 0,
            reason: Reason::None,
            maker_account: 0,
            maker_order_id: 0,
            maker_client_order_id: 0,
            maker_remaining: 0,
            original_seq: 0,
            stop_kind: None,
            stop_price: 0,
            display_qty: 0,
            oco_leg: None,
        }
    }

    /// Writes the 128-byte record.
    pub fn encode(&self, out: &mut [u8; EVENT_SIZE_BYTES]) {
        out[0] = EVENT_VERSION;
        out[1] = self.event_type.code();
        out[2] = self.side.map_or(0, Side::code);
        out[3] = self.reason.code();
        put_u32(out, 4, self.index);
        put_u64(out, 8, self.seq);
        put_u64(out, 16, self.timestamp_ns);
        put_u32(out, 24, self.instrument);
        put_u32(out, 28, self.account);
        put_u64(out, 32, self.order_id);
        put_u64(out, 40, self.client_order_id);
        put_i64(out, 48, self.price);
        put_u64(out, 56, self.qty);
        put_u64(out, 64, self.remaining);
        put_u32(out, 72, self.maker_account);
        out[76] = self.command_type.code();
        out[77] = self.stop_kind.map_or(0, OrderKind::code);
        out[78] = self.oco_leg.map_or(0, OcoLeg::code);
        out[79] = 0;
        put_u64(out, 80, self.maker_order_id);
        put_u64(out, 88, self.maker_client_order_id);
        put_u64(out, 96, self.maker_remaining);
        put_u64(out, 104, self.original_seq);
        put_i64(out, 112, self.stop_price);
        put_u64(out, 120, self.display_qty);
    }

    /// The 128-byte record.
    pub fn to_bytes(&self) -> [u8; EVENT_SIZE_BYTES] {
        let mut out = [0u8; EVENT_SIZE_BYTES];
        self.encode(&mut out);
        out
    }

    /// Reads one record from the start of `bytes`, checking every field.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        if bytes.len() < EVENT_SIZE_BYTES {
            return Err(DecodeError::Short {
                needed_bytes: EVENT_SIZE_BYTES,
                got_bytes: bytes.len(),
            });
        }
        let bytes = &bytes[..EVENT_SIZE_BYTES];
        if bytes[0] != EVENT_VERSION {
            return Err(DecodeError::Version(bytes[0]));
        }
        let event_type = EventType::from_code(bytes[1]).map_err(|_| DecodeError::UnknownType {
            record: "event",
            code: bytes[1],
        })?;
        let side = match bytes[2] {
            0 => None,
            code => Some(Side::from_code(code)?),
        };
        let reason = match (event_type, bytes[3]) {
            (EventType::Rejected, code) => Reason::Reject(RejectReason::from_code(code)?),
            (EventType::Cancelled, code) => Reason::Cancel(CancelReason::from_code(code)?),
            (_, 0) => Reason::None,
            (EventType::Resent, code) => Reason::Reject(RejectReason::from_code(code)?),
            (_, value) => {
                return Err(DecodeError::BadEnum {
                    field: "reason",
                    value,
                })
            }
        };
        let command_type = CommandType::from_code(bytes[76])?;
        let stop_kind = match bytes[77] {
            0 => None,
            code => match OrderKind::from_code(code)? {
                kind if kind.is_stop() => Some(kind),
                _ => {
                    return Err(DecodeError::BadEnum {
                        field: "stop_kind",
                        value: code,
                    })
                }
            },
        };
        let stop_price = i64_at(bytes, 112);
        if stop_kind.is_none() && stop_price != 0 {
            return Err(DecodeError::Reserved { offset: 112 });
        }
        let oco_leg = match bytes[78] {
            0 => None,
            code => Some(OcoLeg::from_code(code)?),
        };
        if let Some(offset) = first_non_zero(bytes, 79, 80) {
            return Err(DecodeError::Reserved { offset });
        }
        Ok(Event {
            event_type,
            command_type,
            side,
            reason,
            index: u32_at(bytes, 4),
            seq: u64_at(bytes, 8),
            timestamp_ns: u64_at(bytes, 16),
            instrument: u32_at(bytes, 24),
            account: u32_at(bytes, 28),
            order_id: u64_at(bytes, 32),
            client_order_id: u64_at(bytes, 40),
            price: i64_at(bytes, 48),
            qty: u64_at(bytes, 56),
            remaining: u64_at(bytes, 64),
            maker_account: u32_at(bytes, 72),
            maker_order_id: u64_at(bytes, 80),
            maker_client_order_id: u64_at(bytes, 88),
            maker_remaining: u64_at(bytes, 96),
            original_seq: u64_at(bytes, 104),
            stop_kind,
            stop_price,
            display_qty: u64_at(bytes, 120),
            oco_leg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill() -> Event {
        Event {
            event_type: EventType::Fill,
            command_type: CommandType::Place,
            seq: 9,
            index: 2,
            timestamp_ns: 0x0102,
            instrument: 1,
            account: 5,
            order_id: 10,
            client_order_id: 77,
            side: Some(Side::Buy),
            price: 100,
            qty: 3,
            remaining: 4,
            reason: Reason::None,
            maker_account: 6,
            maker_order_id: 8,
            maker_client_order_id: 0,
            maker_remaining: 1,
            original_seq: 0,
            stop_kind: None,
            stop_price: 0,
            display_qty: 0,
            oco_leg: None,
        }
    }

    /// The layout of `docs/wire-format.md`, byte by byte.
    #[test]
    fn layout_matches_the_documented_bytes() {
        let bytes = fill().to_bytes();
        let mut expected = [0u8; 128];
        expected[..4].copy_from_slice(&[1, 3, 1, 0]);
        expected[4] = 2; // index
        expected[8] = 9; // seq
        expected[16..18].copy_from_slice(&[0x02, 0x01]); // timestamp_ns
        expected[24] = 1; // instrument
        expected[28] = 5; // account
        expected[32] = 10; // order_id
        expected[40] = 77; // client_order_id
        expected[48] = 100; // price
        expected[56] = 3; // qty
        expected[64] = 4; // remaining
        expected[72] = 6; // maker_account
        expected[76] = 1; // command type: place
        expected[80] = 8; // maker_order_id
        expected[96] = 1; // maker_remaining
        assert_eq!(bytes, expected);
        assert_eq!(Event::decode(&expected), Ok(fill()));
    }

    /// A `resent` event: the original's sequence at offset 104, its reject reason (if it was
    /// rejected) in the reason byte.
    #[test]
    fn a_resent_event_carries_the_original_sequence_at_offset_104() {
        let mut event = Event::empty(EventType::Resent, CommandType::Place);
        event.seq = 40;
        event.original_seq = 0x0a0b;
        event.client_order_id = 3;
        event.reason = Reason::Reject(RejectReason::Halted);
        let bytes = event.to_bytes();
        assert_eq!(bytes[1], 12);
        assert_eq!(bytes[3], 2);
        assert_eq!(&bytes[104..112], &[0x0b, 0x0a, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Event::decode(&bytes), Ok(event));
    }

    /// An iceberg's displayed quantity is at offset 120.
    #[test]
    fn an_iceberg_carries_its_display_quantity_at_offset_120() {
        let mut event = Event::empty(EventType::Accepted, CommandType::Place);
        event.display_qty = 0x0a0b;
        let bytes = event.to_bytes();
        assert_eq!(&bytes[120..128], &[0x0b, 0x0a, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Event::decode(&bytes), Ok(event));
    }

    /// An OCO leg says which leg it is at offset 78.
    #[test]
    fn an_oco_leg_is_at_offset_78() {
        let mut event = Event::empty(EventType::Cancelled, CommandType::Place);
        event.reason = Reason::Cancel(CancelReason::Oco);
        event.oco_leg = Some(OcoLeg::Stop);
        event.order_id = 8;
        let bytes = event.to_bytes();
        assert_eq!((bytes[3], bytes[78]), (8, 2));
        assert_eq!(Event::decode(&bytes), Ok(event));
        assert_eq!(OcoLeg::Stop.partner_of(8), 7);
        assert_eq!(OcoLeg::Limit.partner_of(7), 8);
    }

    /// A `triggered` event: the stop's kind at offset 77 and its stop price at offset 112.
    #[test]
    fn a_stop_carries_its_kind_at_offset_77_and_its_stop_price_at_offset_112() {
        let mut event = Event::empty(EventType::Triggered, CommandType::Place);
        event.stop_kind = Some(OrderKind::StopLimit);
        event.stop_price = -3;
        let bytes = event.to_bytes();
        assert_eq!(bytes[1], 13);
        assert_eq!(bytes[77], 4);
        assert_eq!(
            &bytes[112..120],
            &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(Event::decode(&bytes), Ok(event));
    }

    #[test]
    fn reasons_round_trip_by_event_type() {
        for &reason in RejectReason::ALL {
            let mut event = Event::empty(EventType::Rejected, CommandType::Cancel);
            event.reason = Reason::Reject(reason);
            assert_eq!(Event::decode(&event.to_bytes()), Ok(event));
        }
        for &reason in CancelReason::ALL {
            let mut event = Event::empty(EventType::Cancelled, CommandType::MassCancel);
            event.reason = Reason::Cancel(reason);
            event.side = Some(Side::Sell);
            assert_eq!(Event::decode(&event.to_bytes()), Ok(event));
        }
        for &reason in RejectReason::ALL {
            let mut event = Event::empty(EventType::Resent, CommandType::Place);
            event.reason = Reason::Reject(reason);
            assert_eq!(Event::decode(&event.to_bytes()), Ok(event));
        }
        for &event_type in EventType::ALL {
            let mut bytes = Event::empty(event_type, CommandType::Place).to_bytes();
            if event_type == EventType::Resent {
                assert!(Event::decode(&bytes).is_ok());
                bytes[3] = 0x7f;
                assert!(Event::decode(&bytes).is_err());
            } else if matches!(event_type, EventType::Rejected | EventType::Cancelled) {
                // Reason 0 is not a valid reject or cancel reason.
                assert!(Event::decode(&bytes).is_err());
            } else {
                assert!(Event::decode(&bytes).is_ok());
                bytes[3] = 1;
                assert_eq!(
                    Event::decode(&bytes),
                    Err(DecodeError::BadEnum {
                        field: "reason",
                        value: 1
                    })
                );
            }
        }
    }

    #[test]
    fn bad_records_are_typed_errors() {
        let good = fill().to_bytes();
        let cases: &[(usize, u8, DecodeError)] = &[
            (0, 0, DecodeError::Version(0)),
            (
                1,
                14,
                DecodeError::UnknownType {
                    record: "event",
                    code: 14,
                },
            ),
            (
                77,
                1,
                DecodeError::BadEnum {
                    field: "stop_kind",
                    value: 1,
                },
            ),
            (
                77,
                5,
                DecodeError::BadEnum {
                    field: "kind",
                    value: 5,
                },
            ),
            (
                2,
                9,
                DecodeError::BadEnum {
                    field: "side",
                    value: 9,
                },
            ),
            (
                76,
                0,
                DecodeError::BadEnum {
                    field: "command_type",
                    value: 0,
                },
            ),
            (
                78,
                3,
                DecodeError::BadEnum {
                    field: "oco_leg",
                    value: 3,
                },
            ),
            (112, 1, DecodeError::Reserved { offset: 112 }),
            (79, 1, DecodeError::Reserved { offset: 79 }),
        ];
        for (offset, value, error) in cases {
            let mut bytes = good;
            bytes[*offset] = *value;
            assert_eq!(Event::decode(&bytes).as_ref(), Err(error), "byte {offset}");
        }
        assert_eq!(
            Event::decode(&good[..127]),
            Err(DecodeError::Short {
                needed_bytes: 128,
                got_bytes: 127
            })
        );
    }

    #[test]
    fn no_byte_string_panics() {
        let good = fill().to_bytes();
        for offset in 0..EVENT_SIZE_BYTES {
            for value in 0..=255u8 {
                let mut bytes = good;
                bytes[offset] = value;
                if let Ok(event) = Event::decode(&bytes) {
                    assert_eq!(event.to_bytes(), bytes);
                }
            }
        }
    }
}
