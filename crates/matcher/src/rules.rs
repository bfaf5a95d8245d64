//! The rules both order books share: field validation and how each event is filled in.
//!
//! Keeping these in one place means the fast engine and the naive reference book can only
//! differ in how they keep the book, which is exactly what the property tests compare.

use ringmatch_proto::{
    CancelReason, Command, CommandType, Event, EventType, OcoLeg, OrderKind, Reason, RejectReason,
    SelfTradePrevention, Side, TimeInForce,
};

use crate::config::InstrumentSpec;
use crate::resend::ResendLookup;
use crate::state::StoredResend;

/// The parts of an order that events report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OrderView {
    pub order_id: u64,
    pub client_order_id: u64,
    pub account: u32,
    pub instrument: u32,
    pub side: Side,
    /// Limit price, or 0 for a market or stop-market order.
    pub price: i64,
    /// Total order quantity (after any replace).
    pub qty: u64,
    pub filled: u64,
    /// The order's kind now: a stop kind while it waits, the kind it became once triggered.
    pub kind: OrderKind,
    /// Time in force (of a stop: what applies once it triggers).
    pub tif: TimeInForce,
    /// Stop price while the order waits as a stop, else 0.
    pub stop_price: i64,
    /// An iceberg's displayed quantity (the size of each slice the book shows), else 0.
    pub display_qty: u64,
    /// Which leg of a one-cancels-the-other pair it is, while the other leg is live.
    pub oco_leg: Option<OcoLeg>,
}

impl OrderView {
    pub fn remaining(&self) -> u64 {
        self.qty - self.filled
    }

    /// Whether this is a stop that has not triggered yet.
    pub fn waiting(&self) -> bool {
        self.kind.is_stop()
    }
}

/// Checks a limit price against the instrument: on tick first, then inside the band.
pub(crate) fn check_price(spec: &InstrumentSpec, price: i64) -> Result<(), RejectReason> {
    if price % spec.tick_size != 0 {
        return Err(RejectReason::PriceNotOnTick);
    }
    if price < spec.min_price || price > spec.max_price {
        return Err(RejectReason::PriceOutOfRange);
    }
    Ok(())
}

/// Checks an order quantity: not zero, a lot multiple, at most the maximum.
pub(crate) fn check_qty(spec: &InstrumentSpec, qty: u64) -> Result<(), RejectReason> {
    if qty == 0 {
        return Err(RejectReason::QuantityZero);
    }
    if qty % spec.lot_size != 0 {
        return Err(RejectReason::QuantityNotLotMultiple);
    }
    if qty > spec.max_qty {
        return Err(RejectReason::QuantityOverMax);
    }
    Ok(())
}

/// Checks a stop price against the instrument's last trade price: a buy stop must lie above
/// it and a sell stop below it, or its condition would already hold.
pub(crate) fn check_stop(
    side: Side,
    stop_price: i64,
    last_price: Option<i64>,
) -> Result<(), RejectReason> {
    let Some(last_price) = last_price else {
        return Err(RejectReason::NoLastTrade);
    };
    let holds = match side {
        Side::Buy => last_price >= stop_price,
        Side::Sell => last_price <= stop_price,
    };
    if holds {
        return Err(RejectReason::StopWouldTrigger);
    }
    Ok(())
}

/// Field checks of a place command, in their documented order; `last_price` is the
/// instrument's last trade price, which a stop is checked against.
pub(crate) fn check_place_fields(
    spec: &InstrumentSpec,
    command: &Command,
    last_price: Option<i64>,
    now_ns: u64,
) -> Result<(), RejectReason> {
    if command.kind == OrderKind::Limit
        && !(command.oco | command.oco_stop_limit)
        && command.display_qty == 0
        && command.expire_time_ns == 0
        && !expires(command.tif)
    {
        check_price(spec, command.price)?;
        return check_qty(spec, command.qty);
    }
    if command.oco_stop_limit && !command.oco
        || command.oco_stop_limit_price != 0 && !command.oco_stop_limit
        || command.oco && (command.kind != OrderKind::Limit || !rests(command.tif))
    {
        return Err(RejectReason::InvalidOrder);
    }
    if expires(command.tif) && !matches!(command.kind, OrderKind::Limit | OrderKind::StopLimit)
        || command.expire_time_ns != 0 && command.tif != TimeInForce::Gtd
    {
        return Err(RejectReason::InvalidOrder);
    }
    if command.display_qty != 0
        && (command.kind != OrderKind::Limit || command.tif != TimeInForce::Gtc)
    {
        return Err(RejectReason::InvalidOrder);
    }
    let invalid = match command.kind {
        OrderKind::Limit => false,
        OrderKind::Market => command.post_only || command.tif == TimeInForce::Gtc,
        OrderKind::StopMarket => command.post_only || command.tif != TimeInForce::Ioc,
        OrderKind::StopLimit => command.post_only || command.tif == TimeInForce::Fok,
    };
    if invalid {
        return Err(RejectReason::InvalidOrder);
    }
    if command.kind.has_limit() {
        check_price(spec, command.price)?;
    }
    if command.kind.is_stop() || command.oco {
        check_price(spec, command.stop_price)?;
    }
    if command.oco_stop_limit {
        check_price(spec, command.oco_stop_limit_price)?;
    }
    check_qty(spec, command.qty)?;
    if command.display_qty != 0 {
        check_display_qty(spec, command.display_qty, command.qty)?;
    }
    if command.kind.is_stop() {
        check_stop(command.side, command.stop_price, last_price)?;
    }
    if command.oco {
        check_oco_prices(command, last_price)?;
    }
    if expires(command.tif) && expiry_of(spec, command, now_ns).is_none() {
        return Err(RejectReason::ExpiryInvalid);
    }
    Ok(())
}

/// Checks an OCO's prices against the instrument's last trade price, as Binance states them:
/// a buy's limit price below it and its stop price above it, a sell's the other way round.
fn check_oco_prices(command: &Command, last_price: Option<i64>) -> Result<(), RejectReason> {
    let Some(last_price) = last_price else {
        return Err(RejectReason::NoLastTrade);
    };
    let ordered = match command.side {
        Side::Buy => command.price < last_price && last_price < command.stop_price,
        Side::Sell => command.price > last_price && last_price > command.stop_price,
    };
    if !ordered {
        return Err(RejectReason::OcoPricesInvalid);
    }
    Ok(())
}

/// The stop leg of an OCO place, as the place of a stop of its own would be: same account,
/// instrument, side, quantity and self-trade prevention, no client order id; a stop-limit
/// with the OCO's time in force (and expiry), or a stop-market (which triggers as IOC).
pub(crate) fn oco_stop_leg(command: &Command) -> Command {
    let mut stop = *command;
    stop.oco = false;
    stop.oco_stop_limit = false;
    stop.oco_stop_limit_price = 0;
    stop.client_order_id = 0;
    stop.post_only = false;
    stop.display_qty = 0;
    if command.oco_stop_limit {
        stop.kind = OrderKind::StopLimit;
        stop.price = command.oco_stop_limit_price;
    } else {
        stop.kind = OrderKind::StopMarket;
        stop.price = 0;
        stop.tif = TimeInForce::Ioc;
        stop.expire_time_ns = 0;
    }
    stop
}

/// A place's limit price: its price for a limit or stop-limit order, else 0.
#[inline]
fn limit_price(command: &Command) -> i64 {
    if command.kind.has_limit() {
        command.price
    } else {
        0
    }
}

/// Whether a command's timestamp moves the engine's time: every command but `snapshot` and
/// `term`, which the matcher passes over.
#[inline]
pub(crate) fn moves_time(command_type: CommandType) -> bool {
    !matches!(command_type, CommandType::Snapshot | CommandType::Term)
}

/// Whether orders of this time in force expire (GTD and day).
#[inline]
pub(crate) fn expires(tif: TimeInForce) -> bool {
    matches!(tif, TimeInForce::Gtd | TimeInForce::Day)
}

/// Nanoseconds in a day.
const DAY_NS: u64 = 86_400_000_000_000;

/// When a place of a GTD or day order made at `now_ns` expires: a GTD order at its
/// `expire_time_ns`, which must be later than now; a day order at its instrument's next
/// session end after now. `None` when it cannot rest (a past expiry, no session end) or does
/// not expire.
pub(crate) fn expiry_of(spec: &InstrumentSpec, command: &Command, now_ns: u64) -> Option<u64> {
    match command.tif {
        TimeInForce::Gtd => (command.expire_time_ns > now_ns).then_some(command.expire_time_ns),
        TimeInForce::Day => {
            let session_end_ns = spec.session_end_ns?;
            let today_end = now_ns - now_ns % DAY_NS + session_end_ns;
            Some(if today_end > now_ns {
                today_end
            } else {
                today_end + DAY_NS
            })
        }
        _ => None,
    }
}

/// Checks an iceberg's displayed quantity: a lot multiple, less than the order quantity (an
/// order that shows all of itself is no iceberg).
pub(crate) fn check_display_qty(
    spec: &InstrumentSpec,
    display_qty: u64,
    qty: u64,
) -> Result<(), RejectReason> {
    if display_qty % spec.lot_size != 0 {
        return Err(RejectReason::QuantityNotLotMultiple);
    }
    if display_qty >= qty {
        return Err(RejectReason::InvalidOrder);
    }
    Ok(())
}

/// How many slots a place may take when it is accepted: a limit order that may rest, and a
/// stop, take one; an OCO two. Only these count against the order limits.
#[inline]
pub(crate) fn slots_needed(command: &Command) -> u32 {
    if command.oco {
        2
    } else {
        u32::from(
            (command.kind == OrderKind::Limit && rests(command.tif)) || command.kind.is_stop(),
        )
    }
}

/// Whether what is left of a limit order of this time in force rests (GTC, GTD, day).
#[inline]
pub(crate) fn rests(tif: TimeInForce) -> bool {
    matches!(tif, TimeInForce::Gtc | TimeInForce::Gtd | TimeInForce::Day)
}

/// Field checks of a replace command that need no book state (for an order that is not a
/// waiting stop, which may not be given a stop price).
#[inline]
pub(crate) fn check_replace_fields(
    spec: &InstrumentSpec,
    command: &Command,
) -> Result<(), RejectReason> {
    if !command.has_price && !command.has_qty || command.has_stop_price {
        return Err(RejectReason::InvalidOrder);
    }
    if command.has_price {
        check_price(spec, command.price)?;
    }
    if command.has_qty {
        check_qty(spec, command.qty)?;
    }
    Ok(())
}

/// Whether a taker on `side` with limit `limit` (None: market) trades with a maker at `price`.
#[inline]
pub(crate) fn crosses(side: Side, limit: Option<i64>, price: i64) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(limit)) => price <= limit,
        (Side::Sell, Some(limit)) => price >= limit,
    }
}

/// Numbers events in order and stamps the fields every event of one command shares.
pub(crate) struct Emitter<'a, S: crate::EventSink + ?Sized> {
    sink: &'a mut S,
    seq: u64,
    timestamp_ns: u64,
    command_type: CommandType,
    index: u32,
    /// Lowest and highest fill price printed by this command, and the latest (valid once
    /// `printed`).
    print_low: i64,
    print_high: i64,
    print_last: i64,
    printed: bool,
}

impl<'a, S: crate::EventSink + ?Sized> Emitter<'a, S> {
    pub fn new(sink: &'a mut S, seq: u64, command: &Command) -> Self {
        Emitter {
            sink,
            seq,
            timestamp_ns: command.timestamp_ns,
            command_type: command.command_type,
            index: 0,
            print_low: i64::MAX,
            print_high: i64::MIN,
            print_last: 0,
            printed: false,
        }
    }

    /// The lowest and highest fill price of this command so far, if it traded.
    pub fn print_range(&self) -> Option<(i64, i64)> {
        self.printed.then_some((self.print_low, self.print_high))
    }

    /// The price of this command's latest fill, if it traded.
    pub fn last_print(&self) -> Option<i64> {
        self.printed.then_some(self.print_last)
    }

    /// The sequence of the command whose events this numbers.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    #[inline]
    fn base(&self, event_type: EventType) -> Event {
        let mut event = Event::empty(event_type, self.command_type);
        event.seq = self.seq;
        event.index = self.index;
        event.timestamp_ns = self.timestamp_ns;
        event
    }

    #[inline]
    fn push(&mut self, event: Event) {
        self.sink.push(&event);
        self.index += 1;
    }

    #[inline]
    fn order_event(&self, event_type: EventType, order: &OrderView) -> Event {
        let mut event = self.base(event_type);
        event.instrument = order.instrument;
        event.account = order.account;
        event.order_id = order.order_id;
        event.client_order_id = order.client_order_id;
        event.side = Some(order.side);
        event.price = order.price;
        event.qty = order.qty;
        event.remaining = order.remaining();
        event.display_qty = order.display_qty;
        event.oco_leg = order.oco_leg;
        if order.waiting() {
            event.stop_kind = Some(order.kind);
            event.stop_price = order.stop_price;
        }
        event
    }

    pub fn rejected(&mut self, command: &Command, reason: RejectReason) {
        let mut event = self.base(EventType::Rejected);
        event.instrument = command.instrument;
        event.account = command.account;
        event.order_id = command.order_id;
        event.client_order_id = command.client_order_id;
        event.reason = Reason::Reject(reason);
        match command.command_type {
            CommandType::Place => {
                // A possible resend carries its resend floor there, which is no order id.
                event.order_id = 0;
                event.side = Some(command.side);
                event.price = command.price;
                event.qty = command.qty;
            }
            CommandType::Replace => {
                event.price = if command.has_price { command.price } else { 0 };
                event.qty = if command.has_qty { command.qty } else { 0 };
            }
            _ => {}
        }
        self.push(event);
    }

    /// The answer to a possible resend of `original`: its sequence and outcome, and, while
    /// the order rests, its current price, quantity and open quantity (`now`).
    pub fn resent(&mut self, original: &StoredResend, now: Option<&OrderView>) {
        let mut event = self.base(EventType::Resent);
        event.instrument = original.instrument;
        event.account = original.account;
        event.order_id = original.order_id;
        event.client_order_id = original.client_order_id;
        event.side = Some(original.side);
        event.original_seq = original.seq;
        event.reason = original.rejected.map_or(Reason::None, Reason::Reject);
        match now {
            Some(order) => {
                event.price = order.price;
                event.qty = order.qty;
                event.remaining = order.remaining();
                event.display_qty = order.display_qty;
                event.oco_leg = order.oco_leg;
                if order.waiting() {
                    event.stop_kind = Some(order.kind);
                    event.stop_price = order.stop_price;
                }
            }
            None => {
                event.price = original.price;
                event.qty = original.qty;
            }
        }
        self.push(event);
    }

    #[inline]
    pub fn accepted(&mut self, order: &OrderView) {
        let event = self.order_event(EventType::Accepted, order);
        self.push(event);
    }

    /// `order` is the order after the replace.
    #[inline]
    pub fn replaced(&mut self, order: &OrderView) {
        let event = self.order_event(EventType::Replaced, order);
        self.push(event);
    }

    /// `qty` is the open quantity cancelled.
    #[inline]
    pub fn cancelled(&mut self, order: &OrderView, reason: CancelReason) {
        let mut event = self.order_event(EventType::Cancelled, order);
        event.qty = order.remaining();
        event.remaining = 0;
        event.reason = Reason::Cancel(reason);
        self.push(event);
    }

    /// `order` is the stop as it waited, before it enters the book.
    #[inline]
    pub fn triggered(&mut self, order: &OrderView) {
        let event = self.order_event(EventType::Triggered, order);
        self.push(event);
    }

    /// `taker` and `maker` are both as they are after the fill.
    #[inline]
    pub fn fill(&mut self, taker: &OrderView, maker: &OrderView, price: i64, qty: u64) {
        self.printed = true;
        self.print_low = self.print_low.min(price);
        self.print_high = self.print_high.max(price);
        self.print_last = price;
        let mut event = self.order_event(EventType::Fill, taker);
        event.price = price;
        event.qty = qty;
        event.maker_account = maker.account;
        event.maker_order_id = maker.order_id;
        event.maker_client_order_id = maker.client_order_id;
        event.maker_remaining = maker.remaining();
        self.push(event);
    }

    #[inline]
    pub fn level(&mut self, instrument: u32, side: Side, price: i64, total_qty: u64) {
        let mut event = self.base(EventType::Level);
        event.instrument = instrument;
        event.side = Some(side);
        event.price = price;
        event.qty = total_qty;
        self.push(event);
    }

    pub fn instrument_status(&mut self, instrument: u32, halted: bool) {
        let event_type = if halted {
            EventType::Halted
        } else {
            EventType::Resumed
        };
        let mut event = self.base(event_type);
        event.instrument = instrument;
        self.push(event);
    }

    pub fn order_status(&mut self, order: &OrderView) {
        let event = self.order_event(EventType::OrderStatus, order);
        self.push(event);
    }

    pub fn open_orders_end(&mut self, account: u32, instrument: u32, orders_count: u64) {
        let mut event = self.base(EventType::OpenOrdersEnd);
        event.account = account;
        event.instrument = instrument;
        event.qty = orders_count;
        self.push(event);
    }

    pub fn mass_cancelled(&mut self, account: u32, instrument: u32, orders_count: u64) {
        let mut event = self.base(EventType::MassCancelled);
        event.account = account;
        event.instrument = instrument;
        event.qty = orders_count;
        self.push(event);
    }
}

/// How a self-trade check ends for one maker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SelfTradeAction {
    /// Not a self trade, or STP off: trade.
    Trade,
    /// Cancel the taker's rest and stop.
    CancelTaker,
    /// Cancel the maker, keep going.
    CancelMaker,
    /// Cancel both and stop.
    CancelBoth,
}

pub(crate) fn self_trade_action(
    stp: ringmatch_proto::SelfTradePrevention,
    taker_account: u32,
    maker_account: u32,
) -> SelfTradeAction {
    use ringmatch_proto::SelfTradePrevention as Stp;
    if taker_account != maker_account {
        return SelfTradeAction::Trade;
    }
    match stp {
        Stp::None => SelfTradeAction::Trade,
        Stp::CancelTaker => SelfTradeAction::CancelTaker,
        Stp::CancelMaker => SelfTradeAction::CancelMaker,
        Stp::CancelBoth => SelfTradeAction::CancelBoth,
    }
}

/// What the place and replace rules need from an order book: the book keeping, which is all
/// the fast engine and the naive reference book do differently. The sequence of the rules
/// (checks, events, matching, what rests, which stops trigger) is written once, in [`place`],
/// [`replace`] and [`trigger_stops`].
pub(crate) trait BookKeeping {
    /// An instrument's book.
    type Book: Copy;
    /// A resting order or waiting stop.
    type Order: Copy;
    /// The book of an instrument, if it is configured.
    fn book_of(&self, instrument: u32) -> Option<Self::Book>;
    /// Every check a new order must pass before anything changes.
    fn check_place(&self, book: Self::Book, command: &Command) -> Result<(), RejectReason>;
    /// Registers the order's account (the check allowed it) and takes the next order id.
    fn admit(&mut self, account: u32) -> u64;
    /// Matches `taker` against the opposite side while prices cross (`limit` None: any
    /// price). Returns true when self-trade prevention cancelled the taker.
    fn match_taker<S: crate::EventSink + ?Sized>(
        &mut self,
        book: Self::Book,
        taker: &mut OrderView,
        limit: Option<i64>,
        stp: SelfTradePrevention,
        out: &mut Emitter<'_, S>,
    ) -> bool;
    /// What the resend window knows of a possible resend (`crate::resend`).
    fn resend_lookup(&self, account: u32, client_order_id: u64, floor: u64) -> ResendLookup;
    /// Remembers a place in the resend window.
    fn resend_record(&mut self, resend: StoredResend);
    /// A resting order or waiting stop by engine order id, as events report it.
    fn resting(&self, order_id: u64) -> Option<OrderView>;
    /// A resting order or waiting stop by engine order id.
    fn by_id(&self, order_id: u64) -> Option<Self::Order>;
    /// An OCO leg is no longer linked to the other leg.
    fn unlink_oco(&mut self, order: Self::Order);
    /// Rests what is left of a new order at the back of its level; the level's new total.
    fn rest_new(&mut self, book: Self::Book, taker: &OrderView, command: &Command) -> u64;
    /// Puts a new stop at the back of the queue of its stop price.
    fn rest_stop(&mut self, book: Self::Book, stop: &OrderView, command: &Command);
    /// The resting order or waiting stop a cancel or replace names.
    fn find_order(&self, command: &Command) -> Result<Self::Order, RejectReason>;
    /// A resting order or waiting stop: its book, what events report of it, its self-trade
    /// prevention and post-only flag.
    fn order(&self, order: Self::Order) -> (Self::Book, OrderView, SelfTradePrevention, bool);
    /// Whether the book's instrument is halted.
    fn halted(&self, book: Self::Book) -> bool;
    /// The book's instrument.
    fn spec(&self, book: Self::Book) -> &InstrumentSpec;
    /// The instrument's last trade price, if it ever traded.
    fn last_price(&self, book: Self::Book) -> Option<i64>;
    /// Records the instrument's last trade price.
    fn set_last_price(&mut self, book: Self::Book, price: i64);
    /// Whether any stop waits on the book.
    fn has_stops(&self, book: Self::Book) -> bool;
    /// Whether an order of `side` at `limit` would trade with the best opposite level.
    fn best_crosses(&self, book: Self::Book, side: Side, limit: Option<i64>) -> bool;
    /// Removes a resting order; its level's new total.
    fn remove(&mut self, order: Self::Order) -> u64;
    /// Gives a resting order the quantity of `resized` at the same price, at the back of its
    /// level when `to_back`; the level's new total.
    fn resize(&mut self, order: Self::Order, resized: &OrderView, to_back: bool) -> u64;
    /// Gives a waiting stop the prices and quantity of `changed`, at the back of its stop
    /// price's queue when `to_back`.
    fn restop(&mut self, order: Self::Order, changed: &OrderView, to_back: bool);
    /// Takes a resting order out of its level to trade at a new price as `taker`; the old
    /// level's new total.
    fn lift(&mut self, order: Self::Order, taker: &OrderView) -> u64;
    /// The waiting stop of `side` nearest the last trade price (the lowest buy stop, the
    /// highest sell stop) and its stop price.
    fn nearest_stop(&self, book: Self::Book, side: Side) -> Option<(Self::Order, i64)>;
    /// Takes a waiting stop out of its queue to enter the book as `entering` (the kind it
    /// becomes); it is then settled like a lifted order.
    fn trigger(&mut self, order: Self::Order, entering: &OrderView);
    /// After a lifted or triggered order traded: rests what is left of `taker` at the back of
    /// its level and returns that level's total, or, when `done`, drops the order.
    fn settle_lifted(&mut self, order: Self::Order, taker: &OrderView, done: bool) -> Option<u64>;
}

/// Places an order. A possible resend the engine already took gets the original's outcome
/// (`resent`), one it cannot tell about is rejected (`resend_unknown`); any other place is
/// checked, accepted, matched, then what is left is cancelled or rests. Every place with a
/// client order id is remembered in the resend window with its outcome, except one rejected
/// as a duplicate client order id, which is not that id's order.
pub(crate) fn place<B: BookKeeping, S: crate::EventSink + ?Sized>(
    book: &mut B,
    command: &Command,
    out: &mut Emitter<'_, S>,
) {
    if let Some(floor) = command.resend_floor() {
        if command.client_order_id == 0 {
            return out.rejected(command, RejectReason::InvalidOrder);
        }
        match book.resend_lookup(command.account, command.client_order_id, floor) {
            ResendLookup::Original(original) => {
                let now = match original.order_id {
                    0 => None,
                    order_id => book.resting(order_id),
                };
                return out.resent(&original, now.as_ref());
            }
            ResendLookup::Unknown => return out.rejected(command, RejectReason::ResendUnknown),
            ResendLookup::New => {}
        }
    }
    let outcome = place_new(book, command, out);
    if command.client_order_id != 0 && outcome != Err(RejectReason::DuplicateClientOrderId) {
        book.resend_record(StoredResend {
            seq: out.seq(),
            account: command.account,
            client_order_id: command.client_order_id,
            instrument: command.instrument,
            side: command.side,
            price: limit_price(command),
            qty: command.qty,
            order_id: outcome.unwrap_or(0),
            rejected: outcome.err(),
        });
    }
}

/// A new order: check, accept, then a stop waits; any other order matches, what is left is
/// cancelled or rests, and the stops its trades reached trigger. Its engine order id, or why
/// it was rejected.
fn place_new<B: BookKeeping, S: crate::EventSink + ?Sized>(
    book: &mut B,
    command: &Command,
    out: &mut Emitter<'_, S>,
) -> Result<u64, RejectReason> {
    let Some(book_id) = book.book_of(command.instrument) else {
        out.rejected(command, RejectReason::UnknownInstrument);
        return Err(RejectReason::UnknownInstrument);
    };
    if let Err(reason) = book.check_place(book_id, command) {
        out.rejected(command, reason);
        return Err(reason);
    }
    let order_id = book.admit(command.account);
    if command.oco {
        return place_oco(book, book_id, order_id, command, out);
    }
    let mut taker = new_order(order_id, command);
    out.accepted(&taker);
    if command.kind.is_stop() {
        book.rest_stop(book_id, &taker, command);
        return Ok(order_id);
    }
    let limit = (command.kind == OrderKind::Limit).then_some(command.price);
    let stopped = book.match_taker(book_id, &mut taker, limit, command.stp, out);
    if !stopped && taker.remaining() > 0 {
        match (command.kind, command.tif) {
            (_, TimeInForce::Fok) => {
                panic!("a fill-or-kill order passed its check but did not fill")
            }
            (OrderKind::Market, _) => out.cancelled(&taker, CancelReason::MarketNoLiquidity),
            (OrderKind::Limit, tif) if rests(tif) => {
                let total_qty = book.rest_new(book_id, &taker, command);
                out.level(command.instrument, command.side, command.price, total_qty);
            }
            _ => out.cancelled(&taker, CancelReason::IocRemainder),
        }
    }
    trigger_stops(book, book_id, out);
    Ok(order_id)
}

/// What events report of a new order of `command` with engine order id `order_id`.
#[inline]
fn new_order(order_id: u64, command: &Command) -> OrderView {
    OrderView {
        order_id,
        client_order_id: command.client_order_id,
        account: command.account,
        instrument: command.instrument,
        side: command.side,
        price: limit_price(command),
        qty: command.qty,
        filled: 0,
        kind: command.kind,
        tif: command.tif,
        stop_price: if command.kind.is_stop() {
            command.stop_price
        } else {
            0
        },
        display_qty: command.display_qty,
        oco_leg: None,
    }
}

/// A new OCO, its limit leg `order_id` (admitted) and its stop leg the next id: both are
/// accepted and the limit leg matches. If it traded or self-trade prevention cancelled it,
/// the stop leg is cancelled (`oco`) and what is left of the limit leg rests as a plain limit
/// order; else the limit leg rests and then the stop leg waits, the two linked.
#[cold]
fn place_oco<B: BookKeeping, S: crate::EventSink + ?Sized>(
    book: &mut B,
    book_id: B::Book,
    order_id: u64,
    command: &Command,
    out: &mut Emitter<'_, S>,
) -> Result<u64, RejectReason> {
    let stop_command = oco_stop_leg(command);
    let stop_order_id = book.admit(command.account);
    debug_assert_eq!(stop_order_id, OcoLeg::Limit.partner_of(order_id));
    let mut taker = OrderView {
        oco_leg: Some(OcoLeg::Limit),
        ..new_order(order_id, command)
    };
    let stop = OrderView {
        order_id: stop_order_id,
        client_order_id: 0,
        price: stop_command.price,
        kind: stop_command.kind,
        tif: stop_command.tif,
        stop_price: command.stop_price,
        display_qty: 0,
        oco_leg: Some(OcoLeg::Stop),
        ..taker
    };
    out.accepted(&taker);
    out.accepted(&stop);
    let stopped = book.match_taker(book_id, &mut taker, Some(command.price), command.stp, out);
    if stopped || taker.filled > 0 {
        // The stop leg never waited.
        out.cancelled(&stop, CancelReason::Oco);
        taker.oco_leg = None;
    }
    if !stopped && taker.remaining() > 0 {
        let total_qty = book.rest_new(book_id, &taker, command);
        out.level(command.instrument, command.side, command.price, total_qty);
    }
    if taker.oco_leg.is_some() {
        book.rest_stop(book_id, &stop, &stop_command);
    }
    trigger_stops(book, book_id, out);
    Ok(order_id)
}

/// Cancels a resting order or waiting stop for `reason` (a user's cancel, an expiry): its
/// `cancelled`, its level's new total (none for a waiting stop, which is in no level), then an
/// OCO's other leg.
pub(crate) fn cancel_order<B: BookKeeping, S: crate::EventSink + ?Sized>(
    book: &mut B,
    order: B::Order,
    reason: CancelReason,
    out: &mut Emitter<'_, S>,
) {
    let (_, view, _, _) = book.order(order);
    out.cancelled(&view, reason);
    let total_qty = book.remove(order);
    if !view.waiting() {
        out.level(view.instrument, view.side, view.price, total_qty);
    }
    if let Some(leg) = view.oco_leg {
        break_oco(book, view.order_id, leg, out);
    }
}

/// An OCO leg (`order_id`, still live or not) traded, triggered or left: the other leg, if it
/// is still there, is cancelled (`oco`), and this leg, if it is still there, is no longer
/// linked.
#[cold]
pub(crate) fn break_oco<B: BookKeeping, S: crate::EventSink + ?Sized>(
    book: &mut B,
    order_id: u64,
    leg: OcoLeg,
    out: &mut Emitter<'_, S>,
) {
    if let Some(order) = book.by_id(order_id) {
        book.unlink_oco(order);
    }
    let Some(partner) = book.by_id(leg.partner_of(order_id)) else {
        debug_assert!(false, "the other leg of OCO leg {order_id} is gone");
        return;
    };
    let (_, view, _, _) = book.order(partner);
    out.cancelled(&view, CancelReason::Oco);
    let total_qty = book.remove(partner);
    if !view.waiting() {
        out.level(view.instrument, view.side, view.price, total_qty);
    }
}

/// Replaces a resting order's price and/or quantity: at the same price it keeps its place
/// unless its open quantity grows; at a new price it trades as a taker first. A waiting stop
/// may also get a new stop price ([`replace_stop`]).
pub(crate) fn replace<B: BookKeeping, S: crate::EventSink + ?Sized>(
    book: &mut B,
    command: &Command,
    out: &mut Emitter<'_, S>,
) {
    let order = match book.find_order(command) {
        Ok(order) => order,
        Err(reason) => return out.rejected(command, reason),
    };
    let (book_id, old, stp, post_only) = book.order(order);
    if book.halted(book_id) {
        return out.rejected(command, RejectReason::Halted);
    }
    if old.oco_leg.is_some() {
        return out.rejected(command, RejectReason::InvalidOrder);
    }
    if old.waiting() {
        return replace_stop(book, book_id, order, &old, command, out);
    }
    if let Err(reason) = check_replace_fields(book.spec(book_id), command) {
        return out.rejected(command, reason);
    }
    let new_price = if command.has_price {
        command.price
    } else {
        old.price
    };
    let new_qty = if command.has_qty {
        command.qty
    } else {
        old.qty
    };
    if new_qty <= old.filled {
        out.cancelled(&old, CancelReason::ReplacedBelowFilled);
        let total_qty = book.remove(order);
        return out.level(old.instrument, old.side, old.price, total_qty);
    }
    if post_only && book.best_crosses(book_id, old.side, Some(new_price)) {
        return out.rejected(command, RejectReason::PostOnlyWouldTake);
    }
    let mut taker = OrderView {
        price: new_price,
        qty: new_qty,
        ..old
    };
    out.replaced(&taker);
    if new_price == old.price {
        // A larger open quantity goes to the back of the queue.
        let total_qty = book.resize(order, &taker, taker.remaining() > old.remaining());
        return out.level(old.instrument, old.side, old.price, total_qty);
    }
    let old_total_qty = book.lift(order, &taker);
    out.level(old.instrument, old.side, old.price, old_total_qty);
    let stopped = book.match_taker(book_id, &mut taker, Some(new_price), stp, out);
    let done = stopped || taker.remaining() == 0;
    if let Some(total_qty) = book.settle_lifted(order, &taker, done) {
        out.level(old.instrument, old.side, new_price, total_qty);
    }
    trigger_stops(book, book_id, out);
}

/// Replaces a waiting stop's limit price (a stop-limit's), quantity and/or stop price. It
/// keeps its place in its stop price's queue unless its stop price changes or its quantity
/// grows. It never trades here: a new stop price the last trade has reached is rejected.
fn replace_stop<B: BookKeeping, S: crate::EventSink + ?Sized>(
    book: &mut B,
    book_id: B::Book,
    order: B::Order,
    old: &OrderView,
    command: &Command,
    out: &mut Emitter<'_, S>,
) {
    let checked = (|| {
        if !command.has_price && !command.has_qty && !command.has_stop_price
            || command.has_price && !old.kind.has_limit()
        {
            return Err(RejectReason::InvalidOrder);
        }
        let spec = book.spec(book_id);
        if command.has_price {
            check_price(spec, command.price)?;
        }
        if command.has_stop_price {
            check_price(spec, command.stop_price)?;
        }
        if command.has_qty {
            check_qty(spec, command.qty)?;
        }
        if command.has_stop_price {
            check_stop(old.side, command.stop_price, book.last_price(book_id))?;
        }
        Ok(())
    })();
    if let Err(reason) = checked {
        return out.rejected(command, reason);
    }
    let changed = OrderView {
        price: if command.has_price {
            command.price
        } else {
            old.price
        },
        qty: if command.has_qty {
            command.qty
        } else {
            old.qty
        },
        stop_price: if command.has_stop_price {
            command.stop_price
        } else {
            old.stop_price
        },
        ..*old
    };
    out.replaced(&changed);
    let to_back = changed.stop_price != old.stop_price || changed.qty > old.qty;
    book.restop(order, &changed, to_back);
}

/// After a command traded: the waiting stops its fills reached trigger, one at a time, and
/// each enters the book as a taker; the fills of those may reach more (a cascade). The next
/// to trigger is always the reached stop nearest the last trade price from before the command
/// (at equal distance, the buy stop), in time order within one stop price. Then the
/// instrument's last trade price becomes the command's last fill price.
#[inline]
pub(crate) fn trigger_stops<B: BookKeeping, S: crate::EventSink + ?Sized>(
    book: &mut B,
    book_id: B::Book,
    out: &mut Emitter<'_, S>,
) {
    if out.printed {
        if book.has_stops(book_id) {
            run_triggers(book, book_id, out);
        }
        book.set_last_price(book_id, out.print_last);
    }
}

/// [`trigger_stops`] after a command that traded.
#[inline(never)]
fn run_triggers<B: BookKeeping, S: crate::EventSink + ?Sized>(
    book: &mut B,
    book_id: B::Book,
    out: &mut Emitter<'_, S>,
) {
    let Some(first_print) = out.last_print() else {
        return;
    };
    // Stops wait only on an instrument that has traded; the fallback is never needed.
    let reference = book.last_price(book_id).unwrap_or(first_print);
    while let Some((low, high)) = out.print_range() {
        let buy = book
            .nearest_stop(book_id, Side::Buy)
            .filter(|&(_, stop_price)| stop_price <= high);
        let sell = book
            .nearest_stop(book_id, Side::Sell)
            .filter(|&(_, stop_price)| stop_price >= low);
        let next = match (buy, sell) {
            (Some((buy, buy_stop)), Some((sell, sell_stop))) => {
                if buy_stop.abs_diff(reference) <= sell_stop.abs_diff(reference) {
                    buy
                } else {
                    sell
                }
            }
            (Some((buy, _)), None) => buy,
            (None, Some((sell, _))) => sell,
            (None, None) => break,
        };
        enter_triggered(book, book_id, next, out);
    }
}

/// One triggered stop: `triggered`, then it trades as a market or limit taker; what is left
/// rests (a GTC stop-limit) or is cancelled.
fn enter_triggered<B: BookKeeping, S: crate::EventSink + ?Sized>(
    book: &mut B,
    book_id: B::Book,
    order: B::Order,
    out: &mut Emitter<'_, S>,
) {
    let (_, stop, stp, _) = book.order(order);
    out.triggered(&stop);
    let order = match stop.oco_leg {
        None => order,
        Some(leg) => {
            break_oco(book, stop.order_id, leg, out);
            book.by_id(stop.order_id).expect("a triggered stop is live")
        }
    };
    let kind = stop.kind.triggered();
    let mut taker = OrderView {
        kind,
        stop_price: 0,
        oco_leg: None,
        ..stop
    };
    book.trigger(order, &taker);
    let limit = (kind == OrderKind::Limit).then_some(taker.price);
    let stopped = book.match_taker(book_id, &mut taker, limit, stp, out);
    let will_rest =
        !stopped && taker.remaining() > 0 && kind == OrderKind::Limit && rests(taker.tif);
    if !stopped && taker.remaining() > 0 && !will_rest {
        let reason = match kind {
            OrderKind::Market => CancelReason::MarketNoLiquidity,
            _ => CancelReason::IocRemainder,
        };
        out.cancelled(&taker, reason);
    }
    if let Some(total_qty) = book.settle_lifted(order, &taker, !will_rest) {
        out.level(taker.instrument, taker.side, taker.price, total_qty);
    }
}
