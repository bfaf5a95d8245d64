//! The rules both order books share: field validation and how each event is filled in.
//!
//! Keeping these in one place means the fast engine and the naive reference book can only
//! differ in how they keep the book, which is exactly what the property tests compare.

use ringmatch_proto::{
    CancelReason, Command, CommandType, Event, EventType, OrderKind, Reason, RejectReason,
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
    /// Limit price, or 0 for a market order.
    pub price: i64,
    /// Total order quantity (after any replace).
    pub qty: u64,
    pub filled: u64,
}

impl OrderView {
    pub fn remaining(&self) -> u64 {
        self.qty - self.filled
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

/// Field checks of a place command that need no book state, in their documented order.
pub(crate) fn check_place_fields(
    spec: &InstrumentSpec,
    command: &Command,
) -> Result<(), RejectReason> {
    use ringmatch_proto::{OrderKind, TimeInForce};
    if command.kind == OrderKind::Market && (command.post_only || command.tif == TimeInForce::Gtc) {
        return Err(RejectReason::InvalidOrder);
    }
    if command.kind == OrderKind::Limit {
        check_price(spec, command.price)?;
    }
    check_qty(spec, command.qty)
}

/// Field checks of a replace command that need no book state.
pub(crate) fn check_replace_fields(
    spec: &InstrumentSpec,
    command: &Command,
) -> Result<(), RejectReason> {
    if !command.has_price && !command.has_qty {
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
}

impl<'a, S: crate::EventSink + ?Sized> Emitter<'a, S> {
    pub fn new(sink: &'a mut S, seq: u64, command: &Command) -> Self {
        Emitter {
            sink,
            seq,
            timestamp_ns: command.timestamp_ns,
            command_type: command.command_type,
            index: 0,
        }
    }

    /// The sequence of the command whose events this numbers.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn base(&self, event_type: EventType) -> Event {
        let mut event = Event::empty(event_type, self.command_type);
        event.seq = self.seq;
        event.index = self.index;
        event.timestamp_ns = self.timestamp_ns;
        event
    }

    fn push(&mut self, event: Event) {
        self.sink.push(&event);
        self.index += 1;
    }

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
            }
            None => {
                event.price = original.price;
                event.qty = original.qty;
            }
        }
        self.push(event);
    }

    pub fn accepted(&mut self, order: &OrderView) {
        let event = self.order_event(EventType::Accepted, order);
        self.push(event);
    }

    /// `order` is the order after the replace.
    pub fn replaced(&mut self, order: &OrderView) {
        let event = self.order_event(EventType::Replaced, order);
        self.push(event);
    }

    /// `qty` is the open quantity cancelled.
    pub fn cancelled(&mut self, order: &OrderView, reason: CancelReason) {
        let mut event = self.order_event(EventType::Cancelled, order);
        event.qty = order.remaining();
        event.remaining = 0;
        event.reason = Reason::Cancel(reason);
        self.push(event);
    }

    /// `taker` and `maker` are both as they are after the fill.
    pub fn fill(&mut self, taker: &OrderView, maker: &OrderView, price: i64, qty: u64) {
        let mut event = self.order_event(EventType::Fill, taker);
        event.price = price;
        event.qty = qty;
        event.maker_account = maker.account;
        event.maker_order_id = maker.order_id;
        event.maker_client_order_id = maker.client_order_id;
        event.maker_remaining = maker.remaining();
        self.push(event);
    }

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
/// (checks, events, matching, what rests) is written once, in [`place`] and [`replace`].
pub(crate) trait BookKeeping {
    /// An instrument's book.
    type Book: Copy;
    /// A resting order.
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
    /// A resting order by engine order id, as events report it.
    fn resting(&self, order_id: u64) -> Option<OrderView>;
    /// Rests what is left of a new order at the back of its level; the level's new total.
    fn rest_new(&mut self, book: Self::Book, taker: &OrderView, command: &Command) -> u64;
    /// The resting order a cancel or replace names.
    fn find_order(&self, command: &Command) -> Result<Self::Order, RejectReason>;
    /// A resting order: its book, what events report of it, its self-trade prevention and
    /// post-only flag.
    fn order(&self, order: Self::Order) -> (Self::Book, OrderView, SelfTradePrevention, bool);
    /// Whether the book's instrument is halted.
    fn halted(&self, book: Self::Book) -> bool;
    /// The book's instrument.
    fn spec(&self, book: Self::Book) -> &InstrumentSpec;
    /// Whether an order of `side` at `limit` would trade with the best opposite level.
    fn best_crosses(&self, book: Self::Book, side: Side, limit: Option<i64>) -> bool;
    /// Removes a resting order; its level's new total.
    fn remove(&mut self, order: Self::Order) -> u64;
    /// Gives a resting order the quantity of `resized` at the same price, at the back of its
    /// level when `to_back`; the level's new total.
    fn resize(&mut self, order: Self::Order, resized: &OrderView, to_back: bool) -> u64;
    /// Takes a resting order out of its level to trade at a new price as `taker`; the old
    /// level's new total.
    fn lift(&mut self, order: Self::Order, taker: &OrderView) -> u64;
    /// After a lifted order traded: rests what is left of `taker` at the back of its new
    /// level and returns that level's total, or, when `done`, drops the order.
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
            price: if command.kind == OrderKind::Limit {
                command.price
            } else {
                0
            },
            qty: command.qty,
            order_id: outcome.unwrap_or(0),
            rejected: outcome.err(),
        });
    }
}

/// A new order: check, accept, match, then cancel or rest what is left. Its engine order id,
/// or why it was rejected.
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
    let limit = (command.kind == OrderKind::Limit).then_some(command.price);
    let mut taker = OrderView {
        order_id,
        client_order_id: command.client_order_id,
        account: command.account,
        instrument: command.instrument,
        side: command.side,
        price: limit.unwrap_or(0),
        qty: command.qty,
        filled: 0,
    };
    out.accepted(&taker);
    let stopped = book.match_taker(book_id, &mut taker, limit, command.stp, out);
    if stopped || taker.remaining() == 0 {
        return Ok(order_id);
    }
    match (command.kind, command.tif) {
        (OrderKind::Market, _) => out.cancelled(&taker, CancelReason::MarketNoLiquidity),
        (_, TimeInForce::Ioc) => out.cancelled(&taker, CancelReason::IocRemainder),
        (_, TimeInForce::Fok) => panic!("a fill-or-kill order passed its check but did not fill"),
        (OrderKind::Limit, TimeInForce::Gtc) => {
            let total_qty = book.rest_new(book_id, &taker, command);
            out.level(command.instrument, command.side, command.price, total_qty);
        }
    }
    Ok(order_id)
}

/// Replaces a resting order's price and/or quantity: at the same price it keeps its place
/// unless its open quantity grows; at a new price it trades as a taker first.
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
}
