//! The input record: one command to the engine, 128 bytes (version 2; the 64-byte version 1
//! still reads).

use crate::le::{first_non_zero, i64_at, put_i64, put_u32, put_u64, u32_at, u64_at};
use crate::{wire_enum, DecodeError, COMMAND_SIZE_BYTES, COMMAND_V1_SIZE_BYTES, COMMAND_VERSION};

wire_enum! {
    /// What a command asks the engine to do.
    CommandType, "command_type" {
        /// Place a new order.
        Place = 1, "place";
        /// Cancel a resting order.
        Cancel = 2, "cancel";
        /// Change the price and/or quantity of a resting order.
        Replace = 3, "replace";
        /// Cancel every resting order of an account (optionally of one instrument).
        MassCancel = 4, "mass_cancel";
        /// Stop trading an instrument: new orders and replaces are rejected, cancels allowed.
        Halt = 5, "halt";
        /// Resume trading a halted instrument.
        Resume = 6, "resume";
        /// Take a snapshot of the state after every earlier command. Changes no state and
        /// produces no events; it flows through the ring so a snapshot has an exact sequence.
        Snapshot = 7, "snapshot";
        /// List the account's resting orders (optionally of one instrument). Changes no state.
        OpenOrders = 8, "open_orders";
        /// A new Raft term begins at this sequence (`order_id` holds the term): the first
        /// record a cluster's new leader journals. Changes no state and produces no events;
        /// only the replication layer writes it, never a client.
        Term = 9, "term";
        /// The time is `timestamp_ns`: the pipeline journals one on a tick while input is
        /// idle, so that orders expire on time with nothing else arriving. Its only events
        /// are the expiries it causes.
        Time = 10, "time";
    }
}

wire_enum! {
    /// Side of an order.
    Side, "side" {
        /// A bid.
        Buy = 1, "buy";
        /// An ask.
        Sell = 2, "sell";
    }
}

impl Side {
    /// The other side.
    pub const fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

wire_enum! {
    /// Limit, market, or a stop that becomes one of them when the last trade price reaches
    /// its stop price.
    OrderKind, "kind" {
        /// Trades at its limit price or better; may rest.
        Limit = 1, "limit";
        /// Trades at any price; never rests.
        Market = 2, "market";
        /// Waits off the book until a trade prints at or through its stop price, then enters
        /// as a market order.
        StopMarket = 3, "stop_market";
        /// Waits off the book until a trade prints at or through its stop price, then enters
        /// as a limit order.
        StopLimit = 4, "stop_limit";
    }
}

impl OrderKind {
    /// Whether this is a stop kind (it waits for a trigger).
    pub const fn is_stop(self) -> bool {
        matches!(self, OrderKind::StopMarket | OrderKind::StopLimit)
    }

    /// Whether an order of this kind carries a limit price.
    pub const fn has_limit(self) -> bool {
        matches!(self, OrderKind::Limit | OrderKind::StopLimit)
    }

    /// The kind a stop becomes when it triggers; other kinds stay as they are.
    pub const fn triggered(self) -> OrderKind {
        match self {
            OrderKind::StopMarket => OrderKind::Market,
            OrderKind::StopLimit => OrderKind::Limit,
            other => other,
        }
    }
}

wire_enum! {
    /// How long an order may live.
    TimeInForce, "tif" {
        /// Good till cancelled: the remainder rests in the book.
        Gtc = 1, "gtc";
        /// Immediate or cancel: the remainder is cancelled.
        Ioc = 2, "ioc";
        /// Fill or kill: fully filled at once, or rejected with nothing traded.
        Fok = 3, "fok";
        /// Good till date: rests until `expire_time_ns`.
        Gtd = 4, "gtd";
        /// Good for the day: rests until its instrument's next session end.
        Day = 5, "day";
    }
}

wire_enum! {
    /// What happens when an order would trade with a resting order of its own account.
    SelfTradePrevention, "stp" {
        /// Trade anyway.
        None = 0, "none";
        /// Cancel the rest of the incoming (taker) order.
        CancelTaker = 1, "cancel_taker";
        /// Cancel the resting (maker) order and keep matching.
        CancelMaker = 2, "cancel_maker";
        /// Cancel both.
        CancelBoth = 3, "cancel_both";
    }
}

/// Flag bit: the order may only add liquidity.
const FLAG_POST_ONLY: u8 = 1 << 0;
/// Flag bit: a replace carries a new price.
const FLAG_HAS_PRICE: u8 = 1 << 1;
/// Flag bit: a replace carries a new quantity.
const FLAG_HAS_QTY: u8 = 1 << 2;
/// Flag bit: a client sends this place again after losing its connection before the ack.
const FLAG_POSSIBLE_RESEND: u8 = 1 << 3;
/// Flag bit: a replace carries a new stop price.
const FLAG_HAS_STOP_PRICE: u8 = 1 << 4;
/// Flag bit: a place is a one-cancels-the-other pair (version 2 only).
const FLAG_OCO: u8 = 1 << 5;
/// Flag bit: an OCO's stop leg is a stop-limit (version 2 only).
const FLAG_OCO_STOP_LIMIT: u8 = 1 << 6;
const FLAGS_DEFINED: u8 = FLAG_POST_ONLY
    | FLAG_HAS_PRICE
    | FLAG_HAS_QTY
    | FLAG_POSSIBLE_RESEND
    | FLAG_HAS_STOP_PRICE
    | FLAG_OCO
    | FLAG_OCO_STOP_LIMIT;

/// One input command. Fields a command type does not use are zero (or the first enum value).
///
/// Orders are named by `order_id` (engine-assigned, never 0) or, when `order_id` is 0, by
/// (`account`, `client_order_id`). A `client_order_id` of 0 means "none given".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Command {
    /// What to do.
    pub command_type: CommandType,
    /// Who asks.
    pub account: u32,
    /// Which instrument; for `MassCancel`, 0 means every instrument.
    pub instrument: u32,
    /// Target order of a cancel or replace; 0 to name it by `client_order_id`.
    pub order_id: u64,
    /// The client's own id for the order; 0 means none.
    pub client_order_id: u64,
    /// Side of a new order.
    pub side: Side,
    /// Limit, market, stop-market or stop-limit.
    pub kind: OrderKind,
    /// Time in force.
    pub tif: TimeInForce,
    /// Self-trade prevention mode.
    pub stp: SelfTradePrevention,
    /// Post-only: rejected if it would trade on arrival.
    pub post_only: bool,
    /// For a replace: whether `price` is a new price.
    pub has_price: bool,
    /// For a replace: whether `qty` is a new total quantity.
    pub has_qty: bool,
    /// For a place: the client may have sent this order before (it lost the connection
    /// before the ack). `order_id` then holds the resend floor: the highest sequence the
    /// client had been acknowledged when it first sent the order, below which the original
    /// cannot be. The engine answers with the original's outcome if it has one
    /// (`docs/order-entry-protocol.md`, "Resending after a lost connection").
    pub possible_resend: bool,
    /// For a replace: whether `stop_price` is a new stop price (of a stop not yet triggered).
    pub has_stop_price: bool,
    /// For a place of a limit order: it is the limit leg of a one-cancels-the-other pair
    /// whose stop leg (same side and quantity) waits at `stop_price`
    /// (`docs/matching-rules.md`, "One cancels the other"). Version 2 only.
    pub oco: bool,
    /// For an OCO place: its stop leg is a stop-limit at `oco_stop_limit_price` (else a
    /// stop-market). Version 2 only.
    pub oco_stop_limit: bool,
    /// Limit price in ticks (ignored for market and stop-market orders).
    pub price: i64,
    /// Stop price in ticks of a stop order, of an OCO's stop leg, or (with `has_stop_price`)
    /// a replace's new one.
    pub stop_price: i64,
    /// For an OCO place whose stop leg is a stop-limit: that leg's limit price; else 0.
    /// Version 2 only.
    pub oco_stop_limit_price: i64,
    /// For a place: an iceberg's displayed quantity (lots), the slice of it the book shows at
    /// a time; 0 for an order that shows all of itself. Version 2 only.
    pub display_qty: u64,
    /// For a GTD place: when the order expires (nanoseconds since the Unix epoch); else 0.
    /// Version 2 only.
    pub expire_time_ns: u64,
    /// Quantity in lots: the order quantity, or for a replace the new total quantity.
    pub qty: u64,
    /// Ingress timestamp stamped by the engine's front end (nanoseconds since the Unix epoch).
    pub timestamp_ns: u64,
}

impl Command {
    /// A command of the given type with every other field zero or default.
    pub const fn empty(command_type: CommandType) -> Command {
        Command {
            command_type,
            account: 0,
            instrument: 0,
            order_id: 0,
            client_order_id: 0,
            side: Side::Buy,
            kind: OrderKind::Limit,
            tif: TimeInForce::Gtc,
            stp: SelfTradePrevention::None,
            post_only: false,
            has_price: false,
            has_qty: false,
            possible_resend: false,
            has_stop_price: false,
            oco: false,
            oco_stop_limit: false,
            price: 0,
            stop_price: 0,
            oco_stop_limit_price: 0,
            display_qty: 0,
            expire_time_ns: 0,
            qty: 0,
            timestamp_ns: 0,
        }
    }

    /// A GTC limit order with no client order id.
    pub const fn limit(account: u32, instrument: u32, side: Side, price: i64, qty: u64) -> Command {
        let mut command = Command::empty(CommandType::Place);
        command.account = account;
        command.instrument = instrument;
        command.side = side;
        command.price = price;
        command.qty = qty;
        command
    }

    /// This place, marked as a possible resend with the given resend floor (see
    /// [`Command::possible_resend`]).
    pub const fn as_resend(&self, resend_floor: u64) -> Command {
        let mut command = *self;
        command.possible_resend = true;
        command.order_id = resend_floor;
        command
    }

    /// The resend floor of a possible resend; `None` for any other command.
    pub const fn resend_floor(&self) -> Option<u64> {
        match (self.command_type, self.possible_resend) {
            (CommandType::Place, true) => Some(self.order_id),
            _ => None,
        }
    }

    /// The record that opens Raft term `term` in the journal.
    pub const fn term(term: u64) -> Command {
        let mut command = Command::empty(CommandType::Term);
        command.order_id = term;
        command
    }

    /// The term a [`CommandType::Term`] record opens; `None` for any other command.
    pub const fn term_opened(&self) -> Option<u64> {
        match self.command_type {
            CommandType::Term => Some(self.order_id),
            _ => None,
        }
    }

    /// The size of the record that starts with version byte `version`, if this build reads
    /// that version.
    pub const fn encoded_size(version: u8) -> Option<usize> {
        match version {
            1 => Some(COMMAND_V1_SIZE_BYTES),
            2 => Some(COMMAND_SIZE_BYTES),
            _ => None,
        }
    }

    /// Writes the 128-byte record (version 2).
    pub fn encode(&self, out: &mut [u8; COMMAND_SIZE_BYTES]) {
        let (first, rest) = out.split_at_mut(COMMAND_V1_SIZE_BYTES);
        self.encode_common(first.try_into().expect("64 bytes"), COMMAND_VERSION);
        rest.fill(0);
        put_u64(out, 64, self.display_qty);
        put_u64(out, 72, self.expire_time_ns);
        put_i64(out, 80, self.oco_stop_limit_price);
    }

    /// Whether the command uses what only version 2 has (`display_qty`, `expire_time_ns`, the
    /// time in force `gtd` or `day`, the command type `time`, an OCO).
    pub fn needs_version_2(&self) -> bool {
        self.display_qty != 0
            || self.expire_time_ns != 0
            || self.oco
            || self.oco_stop_limit
            || self.oco_stop_limit_price != 0
            || matches!(self.tif, TimeInForce::Gtd | TimeInForce::Day)
            || self.command_type == CommandType::Time
    }

    /// Writes the 64-byte version 1 record, for readers of version 1 (such as the stream
    /// file's); `None` when the command uses a field version 1 has no room for
    /// ([`Command::needs_version_2`]).
    pub fn encode_v1(&self, out: &mut [u8; COMMAND_V1_SIZE_BYTES]) -> Option<()> {
        if self.needs_version_2() {
            return None;
        }
        self.encode_common(out, 1);
        Some(())
    }

    /// The first 64 bytes, the same in both versions but for the version byte.
    fn encode_common(&self, out: &mut [u8; COMMAND_V1_SIZE_BYTES], version: u8) {
        let mut flags = 0u8;
        if self.post_only {
            flags |= FLAG_POST_ONLY;
        }
        if self.has_price {
            flags |= FLAG_HAS_PRICE;
        }
        if self.has_qty {
            flags |= FLAG_HAS_QTY;
        }
        if self.possible_resend {
            flags |= FLAG_POSSIBLE_RESEND;
        }
        if self.has_stop_price {
            flags |= FLAG_HAS_STOP_PRICE;
        }
        if self.oco {
            flags |= FLAG_OCO;
        }
        if self.oco_stop_limit {
            flags |= FLAG_OCO_STOP_LIMIT;
        }
        out[0] = version;
        out[1] = self.command_type.code();
        out[2] = self.side.code();
        out[3] = self.kind.code();
        out[4] = self.tif.code();
        out[5] = self.stp.code();
        out[6] = flags;
        out[7] = 0;
        put_u32(out, 8, self.account);
        put_u32(out, 12, self.instrument);
        put_u64(out, 16, self.order_id);
        put_u64(out, 24, self.client_order_id);
        put_i64(out, 32, self.price);
        put_u64(out, 40, self.qty);
        put_u64(out, 48, self.timestamp_ns);
        put_i64(out, 56, self.stop_price);
    }

    /// The 128-byte record (version 2).
    pub fn to_bytes(&self) -> [u8; COMMAND_SIZE_BYTES] {
        let mut out = [0u8; COMMAND_SIZE_BYTES];
        self.encode(&mut out);
        out
    }

    /// Reads one record of either version from the start of `bytes` (its version byte says
    /// how long it is: [`Command::encoded_size`]), checking every field.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let Some(&version) = bytes.first() else {
            return Err(DecodeError::Short {
                needed_bytes: COMMAND_V1_SIZE_BYTES,
                got_bytes: 0,
            });
        };
        let size = Command::encoded_size(version).ok_or(DecodeError::Version(version))?;
        if bytes.len() < size {
            return Err(DecodeError::Short {
                needed_bytes: size,
                got_bytes: bytes.len(),
            });
        }
        let bytes = &bytes[..size];
        // Version 2's reserved bytes, after its display quantity, expiry and OCO stop-limit
        // price.
        if let Some(offset) = first_non_zero(bytes, size.min(COMMAND_V1_SIZE_BYTES + 24), size) {
            return Err(DecodeError::Reserved { offset });
        }
        let (display_qty, expire_time_ns, oco_stop_limit_price) = if size > COMMAND_V1_SIZE_BYTES {
            (u64_at(bytes, 64), u64_at(bytes, 72), i64_at(bytes, 80))
        } else {
            (0, 0, 0)
        };
        let command_type =
            CommandType::from_code(bytes[1]).map_err(|_| DecodeError::UnknownType {
                record: "command",
                code: bytes[1],
            })?;
        // Version 1 predates the `time` command and the `gtd` and `day` times in force.
        if version == 1 && command_type == CommandType::Time {
            return Err(DecodeError::UnknownType {
                record: "command",
                code: bytes[1],
            });
        }
        if version == 1 && bytes[4] > TimeInForce::Fok.code() {
            return Err(DecodeError::BadEnum {
                field: "tif",
                value: bytes[4],
            });
        }
        let flags = bytes[6];
        // Version 1 predates OCOs.
        let defined = if version == 1 {
            FLAGS_DEFINED & !(FLAG_OCO | FLAG_OCO_STOP_LIMIT)
        } else {
            FLAGS_DEFINED
        };
        if flags & !defined != 0 {
            return Err(DecodeError::BadFlags(flags));
        }
        if let Some(offset) = first_non_zero(bytes, 7, 8) {
            return Err(DecodeError::Reserved { offset });
        }
        Ok(Command {
            command_type,
            side: Side::from_code(bytes[2])?,
            kind: OrderKind::from_code(bytes[3])?,
            tif: TimeInForce::from_code(bytes[4])?,
            stp: SelfTradePrevention::from_code(bytes[5])?,
            post_only: flags & FLAG_POST_ONLY != 0,
            has_price: flags & FLAG_HAS_PRICE != 0,
            has_qty: flags & FLAG_HAS_QTY != 0,
            possible_resend: flags & FLAG_POSSIBLE_RESEND != 0,
            has_stop_price: flags & FLAG_HAS_STOP_PRICE != 0,
            oco: flags & FLAG_OCO != 0,
            oco_stop_limit: flags & FLAG_OCO_STOP_LIMIT != 0,
            account: u32_at(bytes, 8),
            instrument: u32_at(bytes, 12),
            order_id: u64_at(bytes, 16),
            client_order_id: u64_at(bytes, 24),
            price: i64_at(bytes, 32),
            qty: u64_at(bytes, 40),
            timestamp_ns: u64_at(bytes, 48),
            stop_price: i64_at(bytes, 56),
            oco_stop_limit_price,
            display_qty,
            expire_time_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Command {
        Command {
            command_type: CommandType::Replace,
            account: 0x0102_0304,
            instrument: 7,
            order_id: 0x1122_3344_5566_7788,
            client_order_id: 42,
            side: Side::Sell,
            kind: OrderKind::Limit,
            tif: TimeInForce::Ioc,
            stp: SelfTradePrevention::CancelBoth,
            post_only: true,
            has_price: true,
            has_qty: false,
            possible_resend: false,
            has_stop_price: false,
            oco: false,
            oco_stop_limit: false,
            price: -5,
            stop_price: 0,
            oco_stop_limit_price: 0,
            display_qty: 0,
            expire_time_ns: 0,
            qty: 300,
            timestamp_ns: 1_700_000_000_000_000_000,
        }
    }

    /// The layout of `docs/wire-format.md`, byte by byte: version 2, and the same command
    /// in version 1, which still reads.
    #[test]
    fn layout_matches_the_documented_bytes() {
        let bytes = sample().to_bytes();
        let v1: [u8; 64] = [
            1, 3, 2, 1, 2, 3, 0b011,
            0, // version, type, side, kind, tif, stp, flags, reserved
            0x04, 0x03, 0x02, 0x01, 7, 0, 0, 0, // account, instrument
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // order_id
            42, 0, 0, 0, 0, 0, 0, 0, // client_order_id
            0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // price -5
            0x2c, 0x01, 0, 0, 0, 0, 0, 0, // qty 300
            0x00, 0x00, 0x2a, 0x36, 0xfe, 0x9c, 0x97, 0x17, // timestamp_ns
            0, 0, 0, 0, 0, 0, 0, 0, // stop_price
        ];
        let mut v2 = [0u8; 128];
        v2[..64].copy_from_slice(&v1);
        v2[0] = 2;
        assert_eq!(bytes, v2);
        assert_eq!(Command::decode(&v2), Ok(sample()));
        assert_eq!(Command::decode(&v1), Ok(sample()));
        let mut written_v1 = [0u8; 64];
        sample().encode_v1(&mut written_v1).unwrap();
        assert_eq!(written_v1, v1);
    }

    /// An iceberg's displayed quantity is at offset 64, which only version 2 has.
    #[test]
    fn a_display_quantity_is_at_offset_64_and_needs_version_2() {
        let mut iceberg = Command::limit(9, 1, Side::Buy, 100, 50);
        iceberg.display_qty = 0x0102;
        let bytes = iceberg.to_bytes();
        assert_eq!(&bytes[64..72], &[0x02, 0x01, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Command::decode(&bytes), Ok(iceberg));
        assert!(iceberg.needs_version_2());
        assert_eq!(iceberg.encode_v1(&mut [0u8; 64]), None);
    }

    /// A GTD order's expiry is at offset 72; `gtd`, `day` and `time` need version 2.
    #[test]
    fn an_expiry_is_at_offset_72_and_needs_version_2() {
        let mut gtd = Command::limit(9, 1, Side::Buy, 100, 5);
        gtd.tif = TimeInForce::Gtd;
        gtd.expire_time_ns = 0x0102;
        let bytes = gtd.to_bytes();
        assert_eq!(bytes[4], 4);
        assert_eq!(&bytes[72..80], &[0x02, 0x01, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Command::decode(&bytes), Ok(gtd));
        let mut day = Command::limit(9, 1, Side::Buy, 100, 5);
        day.tif = TimeInForce::Day;
        let time = Command::empty(CommandType::Time);
        for command in [gtd, day, time] {
            assert!(command.needs_version_2());
            assert_eq!(command.encode_v1(&mut [0u8; 64]), None);
        }
    }

    /// An OCO is flag bit 5 (its stop leg's stop price in `stop_price`), a stop-limit stop leg
    /// flag bit 6 with its limit price at offset 80; version 1 has neither.
    #[test]
    fn an_oco_is_flag_bits_5_and_6_with_its_stop_limit_price_at_offset_80() {
        let mut oco = Command::limit(9, 1, Side::Sell, 110, 5);
        oco.oco = true;
        oco.stop_price = 90;
        oco.oco_stop_limit = true;
        oco.oco_stop_limit_price = -2;
        let bytes = oco.to_bytes();
        assert_eq!(bytes[6], 0b110_0000);
        assert_eq!(&bytes[56..64], &[90, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            &bytes[80..88],
            &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(Command::decode(&bytes), Ok(oco));
        assert!(oco.needs_version_2());
        assert_eq!(oco.encode_v1(&mut [0u8; 64]), None);
        let mut v1 = [0u8; 64];
        Command::limit(9, 1, Side::Sell, 110, 5)
            .encode_v1(&mut v1)
            .unwrap();
        for bit in [0x20u8, 0x40] {
            let mut bytes = v1;
            bytes[6] = bit;
            assert_eq!(Command::decode(&bytes), Err(DecodeError::BadFlags(bit)));
        }
    }

    /// A possible resend sets flag bit 3 and carries its resend floor in `order_id`.
    #[test]
    fn a_possible_resend_is_flag_bit_3_with_the_floor_in_order_id() {
        let place = Command::limit(9, 1, Side::Buy, 100, 5).as_resend(0x0102);
        let bytes = place.to_bytes();
        assert_eq!(bytes[6], 0b1000);
        assert_eq!(&bytes[16..24], &[0x02, 0x01, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Command::decode(&bytes), Ok(place));
        assert_eq!(place.resend_floor(), Some(0x0102));
        assert_eq!(Command::limit(9, 1, Side::Buy, 100, 5).resend_floor(), None);
        let mut cancel = Command::empty(CommandType::Cancel);
        cancel.possible_resend = true;
        assert_eq!(cancel.resend_floor(), None);
    }

    /// A stop-limit place carries its stop price at offset 56; a replace's new stop price
    /// sets flag bit 4.
    #[test]
    fn a_stop_price_is_at_offset_56_and_a_new_one_is_flag_bit_4() {
        let mut stop = Command::limit(9, 1, Side::Sell, 95, 5);
        stop.kind = OrderKind::StopLimit;
        stop.stop_price = -2;
        let bytes = stop.to_bytes();
        assert_eq!(bytes[3], 4);
        assert_eq!(
            &bytes[56..64],
            &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(Command::decode(&bytes), Ok(stop));
        let mut replace = Command::empty(CommandType::Replace);
        replace.has_stop_price = true;
        replace.stop_price = 101;
        let bytes = replace.to_bytes();
        assert_eq!(bytes[6], 0b1_0000);
        assert_eq!(&bytes[56..64], &[101, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Command::decode(&bytes), Ok(replace));
        assert!(OrderKind::StopMarket.is_stop() && !OrderKind::Limit.is_stop());
        assert_eq!(OrderKind::StopMarket.triggered(), OrderKind::Market);
        assert_eq!(OrderKind::StopLimit.triggered(), OrderKind::Limit);
    }

    #[test]
    fn every_enum_value_round_trips() {
        for &command_type in CommandType::ALL {
            for &side in Side::ALL {
                for &kind in OrderKind::ALL {
                    for &tif in TimeInForce::ALL {
                        for &stp in SelfTradePrevention::ALL {
                            let mut command = sample();
                            command.command_type = command_type;
                            command.side = side;
                            command.kind = kind;
                            command.tif = tif;
                            command.stp = stp;
                            assert_eq!(Command::decode(&command.to_bytes()), Ok(command));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bad_records_are_typed_errors() {
        let good = sample().to_bytes();
        let cases: &[(usize, u8, DecodeError)] = &[
            (0, 3, DecodeError::Version(3)),
            (0, 0, DecodeError::Version(0)),
            (
                1,
                0,
                DecodeError::UnknownType {
                    record: "command",
                    code: 0,
                },
            ),
            (
                1,
                11,
                DecodeError::UnknownType {
                    record: "command",
                    code: 11,
                },
            ),
            (
                2,
                3,
                DecodeError::BadEnum {
                    field: "side",
                    value: 3,
                },
            ),
            (
                3,
                0,
                DecodeError::BadEnum {
                    field: "kind",
                    value: 0,
                },
            ),
            (
                3,
                5,
                DecodeError::BadEnum {
                    field: "kind",
                    value: 5,
                },
            ),
            (
                4,
                6,
                DecodeError::BadEnum {
                    field: "tif",
                    value: 6,
                },
            ),
            (
                5,
                4,
                DecodeError::BadEnum {
                    field: "stp",
                    value: 4,
                },
            ),
            (6, 0x80, DecodeError::BadFlags(0x80)),
            (7, 1, DecodeError::Reserved { offset: 7 }),
            (88, 1, DecodeError::Reserved { offset: 88 }),
            (127, 1, DecodeError::Reserved { offset: 127 }),
        ];
        for (offset, value, error) in cases {
            let mut bytes = good;
            bytes[*offset] = *value;
            assert_eq!(
                Command::decode(&bytes).as_ref(),
                Err(error),
                "byte {offset}"
            );
        }
        assert_eq!(
            Command::decode(&[]),
            Err(DecodeError::Short {
                needed_bytes: 64,
                got_bytes: 0
            })
        );
        for length in 1..COMMAND_SIZE_BYTES {
            assert_eq!(
                Command::decode(&good[..length]),
                Err(DecodeError::Short {
                    needed_bytes: 128,
                    got_bytes: length
                })
            );
        }
        // A version 1 record is 64 bytes.
        let mut v1 = [0u8; 64];
        sample().encode_v1(&mut v1).unwrap();
        assert_eq!(
            Command::decode(&v1[..63]),
            Err(DecodeError::Short {
                needed_bytes: 64,
                got_bytes: 63
            })
        );
    }

    #[test]
    fn no_byte_string_panics() {
        // A cheap exhaustive sweep: every value of every byte position on a valid record.
        let good = sample().to_bytes();
        for offset in 0..COMMAND_SIZE_BYTES {
            for value in 0..=255u8 {
                let mut bytes = good;
                bytes[offset] = value;
                if let Ok(command) = Command::decode(&bytes) {
                    if bytes[0] == 1 {
                        // Read as version 1: its 64 bytes round-trip through that version.
                        let mut v1 = [0u8; 64];
                        command.encode_v1(&mut v1).unwrap();
                        assert_eq!(&v1[..], &bytes[..64]);
                    } else {
                        assert_eq!(command.to_bytes(), bytes);
                    }
                }
            }
        }
    }
}
