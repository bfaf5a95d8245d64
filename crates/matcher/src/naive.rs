//! The naive reference order book: one flat list of resting orders, searched linearly.
//!
//! It follows the same documented rules as [`crate::Engine`] with the plainest data structures
//! there are, so that the two can be compared on random command streams. It is slow (every
//! step scans every order) and is not meant for production use.

use ringmatch_proto::{
    CancelReason, Command, CommandType, OrderKind, RejectReason, SelfTradePrevention, Side,
    TimeInForce,
};

use crate::config::{ConfigError, InstrumentSpec, MatcherConfig};
use crate::resend::{decide, ResendLookup};
use crate::rules::{
    self, check_place_fields, crosses, self_trade_action, slots_needed, BookKeeping, Emitter,
    OrderView, SelfTradeAction,
};
use crate::state::{StateHasher, StateWriter, StoredOrder, StoredResend, StoredStop};
use crate::EventSink;

#[derive(Debug, Clone, Copy)]
struct NaiveOrder {
    view: OrderView,
    stp: SelfTradePrevention,
    post_only: bool,
    /// Time priority: smaller arrived (or last lost priority) earlier.
    priority: u64,
    /// What is left of an iceberg's current slice (0 for other orders).
    shown: u64,
    /// When a GTD or day order expires; 0: never.
    expire_ns: u64,
}

/// The reference book.
pub struct NaiveBook {
    config: MatcherConfig,
    halted: Vec<bool>,
    /// Last trade price per instrument (by configuration index).
    last_prices: Vec<Option<i64>>,
    /// Resting orders and waiting stops (which are in no level).
    orders: Vec<NaiveOrder>,
    accounts: Vec<u32>,
    next_order_id: u64,
    next_priority: u64,
    /// The order a replace took out to trade at its new price.
    lifted: Option<NaiveOrder>,
    /// The resend window, oldest first, searched linearly.
    resends: Vec<StoredResend>,
    resends_forgotten_through: u64,
    /// The engine's time (`rules::moves_time`).
    now_ns: u64,
}

/// Whether a maker at `a` has better priority than one at `b` on the same side.
fn better(side: Side, a: &NaiveOrder, b: &NaiveOrder) -> bool {
    if a.view.price != b.view.price {
        return match side {
            Side::Buy => a.view.price > b.view.price,
            Side::Sell => a.view.price < b.view.price,
        };
    }
    a.priority < b.priority
}

impl NaiveOrder {
    fn stored(&self) -> StoredOrder {
        StoredOrder {
            order_id: self.view.order_id,
            client_order_id: self.view.client_order_id,
            account: self.view.account,
            qty: self.view.qty,
            filled: self.view.filled,
            stp: self.stp,
            post_only: self.post_only,
            display_qty: self.view.display_qty,
            shown: self.shown,
            expire_ns: self.expire_ns,
            oco_leg: self.view.oco_leg,
        }
    }

    fn iceberg(&self) -> bool {
        self.view.display_qty != 0
    }

    /// What the book shows of it: all it has open, or an iceberg's slice.
    fn visible(&self) -> u64 {
        if self.iceberg() {
            self.shown
        } else {
            self.view.remaining()
        }
    }
}

impl NaiveBook {
    /// An empty reference book.
    pub fn new(config: MatcherConfig) -> Result<NaiveBook, ConfigError> {
        config.validate()?;
        Ok(NaiveBook {
            halted: vec![false; config.instruments.len()],
            last_prices: vec![None; config.instruments.len()],
            config,
            orders: Vec::new(),
            accounts: Vec::new(),
            next_order_id: 1,
            next_priority: 0,
            lifted: None,
            resends: Vec::new(),
            resends_forgotten_through: 0,
            now_ns: 0,
        })
    }

    /// Runs one command, pushing its events to `sink`.
    pub fn apply<S: EventSink + ?Sized>(&mut self, seq: u64, command: &Command, sink: &mut S) {
        let mut out = Emitter::new(sink, seq, command);
        if command.timestamp_ns > self.now_ns && rules::moves_time(command.command_type) {
            self.now_ns = command.timestamp_ns;
            self.expire_due(&mut out);
        }
        match command.command_type {
            CommandType::Place => self.place(command, &mut out),
            CommandType::Cancel => self.cancel(command, &mut out),
            CommandType::Replace => self.replace(command, &mut out),
            CommandType::MassCancel => self.mass_cancel(command, &mut out),
            CommandType::Snapshot | CommandType::Term | CommandType::Time => {}
            CommandType::OpenOrders => self.open_orders(command, &mut out),
            CommandType::Halt | CommandType::Resume => {
                match self.instrument_index(command.instrument) {
                    None => out.rejected(command, RejectReason::UnknownInstrument),
                    Some(index) => {
                        let halted = command.command_type == CommandType::Halt;
                        self.halted[index] = halted;
                        out.instrument_status(command.instrument, halted);
                    }
                }
            }
        }
    }

    /// Cancels every order whose expiry has come, soonest first, then by order id.
    fn expire_due<S: EventSink + ?Sized>(&mut self, out: &mut Emitter<'_, S>) {
        let mut due: Vec<(u64, u64)> = self
            .orders
            .iter()
            .filter(|o| o.expire_ns != 0 && o.expire_ns <= self.now_ns)
            .map(|o| (o.expire_ns, o.view.order_id))
            .collect();
        due.sort_unstable();
        for (_, order_id) in due {
            // An OCO leg may have gone with its other leg.
            let Some(index) = self.position_of(order_id) else {
                continue;
            };
            rules::cancel_order(self, index, CancelReason::Expired, out);
        }
    }

    fn instrument_index(&self, instrument: u32) -> Option<usize> {
        self.config
            .instruments
            .iter()
            .position(|spec| spec.id == instrument)
    }

    /// Resting orders, not waiting stops.
    fn in_book(&self) -> impl Iterator<Item = (usize, &NaiveOrder)> + '_ {
        self.orders
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.view.waiting())
    }

    fn level_total(&self, instrument: u32, side: Side, price: i64) -> u64 {
        self.in_book()
            .map(|(_, o)| o)
            .filter(|o| {
                o.view.instrument == instrument && o.view.side == side && o.view.price == price
            })
            .map(NaiveOrder::visible)
            .sum()
    }

    /// Resting orders of one side of one instrument, best priority first.
    fn side_in_priority(&self, instrument: u32, side: Side) -> Vec<NaiveOrder> {
        let mut orders: Vec<NaiveOrder> = self
            .in_book()
            .map(|(_, o)| *o)
            .filter(|o| o.view.instrument == instrument && o.view.side == side)
            .collect();
        orders.sort_by(|a, b| {
            if better(side, a, b) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        orders
    }

    fn best_index(&self, instrument: u32, side: Side) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (index, order) in self.in_book() {
            if order.view.instrument != instrument || order.view.side != side {
                continue;
            }
            if best.is_none_or(|current| better(side, order, &self.orders[current])) {
                best = Some(index);
            }
        }
        best
    }

    fn best_crosses(&self, instrument: u32, side: Side, limit: Option<i64>) -> bool {
        self.best_index(instrument, side.opposite())
            .is_some_and(|index| crosses(side, limit, self.orders[index].view.price))
    }

    fn position_of(&self, order_id: u64) -> Option<usize> {
        self.orders.iter().position(|o| o.view.order_id == order_id)
    }

    fn find(&self, command: &Command) -> Result<usize, RejectReason> {
        if command.order_id != 0 {
            let index = self
                .position_of(command.order_id)
                .ok_or(RejectReason::UnknownOrder)?;
            if self.orders[index].view.account != command.account {
                return Err(RejectReason::NotYourOrder);
            }
            return Ok(index);
        }
        if command.client_order_id == 0 {
            return Err(RejectReason::UnknownOrder);
        }
        self.orders
            .iter()
            .position(|o| {
                o.view.account == command.account
                    && o.view.client_order_id == command.client_order_id
            })
            .ok_or(RejectReason::UnknownOrder)
    }

    fn check_place(&self, index: usize, command: &Command) -> Result<(), RejectReason> {
        if self.halted[index] {
            return Err(RejectReason::Halted);
        }
        let spec = &self.config.instruments[index];
        check_place_fields(spec, command, self.last_prices[index], self.now_ns)?;
        if command.client_order_id != 0
            && self.orders.iter().any(|o| {
                o.view.account == command.account
                    && o.view.client_order_id == command.client_order_id
            })
        {
            return Err(RejectReason::DuplicateClientOrderId);
        }
        if !self.accounts.contains(&command.account)
            && self.accounts.len() >= self.config.limits.accounts_max as usize
        {
            return Err(RejectReason::TooManyAccounts);
        }
        let limit = (command.kind == OrderKind::Limit).then_some(command.price);
        let slots = slots_needed(command) as usize;
        if slots > 0 {
            let in_book = self
                .orders
                .iter()
                .filter(|o| o.view.instrument == command.instrument)
                .count();
            if in_book + slots > self.config.limits.orders_per_book_max as usize {
                return Err(RejectReason::BookFull);
            }
            if self.orders.len() + slots > self.config.limits.orders_max as usize {
                return Err(RejectReason::EngineFull);
            }
        }
        if command.post_only && self.best_crosses(command.instrument, command.side, limit) {
            return Err(RejectReason::PostOnlyWouldTake);
        }
        if command.tif == TimeInForce::Fok {
            let mut available_qty = 0u64;
            let mut fillable = false;
            let makers = self.side_in_priority(command.instrument, command.side.opposite());
            'levels: for level in makers.chunk_by(|a, b| a.view.price == b.view.price) {
                if !crosses(command.side, limit, level[0].view.price) {
                    break;
                }
                // Icebergs' hidden quantity comes after everything the level shows now.
                let mut hidden_qty = 0u64;
                for maker in level {
                    match self_trade_action(command.stp, command.account, maker.view.account) {
                        SelfTradeAction::Trade => {
                            available_qty += maker.visible();
                            hidden_qty += maker.view.remaining() - maker.visible();
                        }
                        SelfTradeAction::CancelMaker => {}
                        SelfTradeAction::CancelTaker | SelfTradeAction::CancelBoth => break 'levels,
                    }
                    if available_qty >= command.qty {
                        fillable = true;
                        break 'levels;
                    }
                }
                available_qty += hidden_qty;
                if available_qty >= command.qty {
                    fillable = true;
                    break;
                }
            }
            if !fillable {
                return Err(RejectReason::FokNotFillable);
            }
        }
        Ok(())
    }

    fn place<S: EventSink + ?Sized>(&mut self, command: &Command, out: &mut Emitter<'_, S>) {
        rules::place(self, command, out);
    }

    /// Waiting stops of one side of an instrument, nearest the last trade price first (buy
    /// stops lowest first, sell stops highest first), then in time order.
    fn stops_nearest_first(&self, instrument: u32, side: Side) -> Vec<NaiveOrder> {
        let mut stops: Vec<NaiveOrder> = self
            .orders
            .iter()
            .filter(|o| o.view.waiting() && o.view.instrument == instrument && o.view.side == side)
            .copied()
            .collect();
        stops.sort_by_key(|o| {
            let nearness = match side {
                Side::Buy => o.view.stop_price,
                Side::Sell => -o.view.stop_price,
            };
            (nearness, o.priority)
        });
        stops
    }

    /// Rests an order (an iceberg with a fresh slice) at the back of its level.
    fn rest(&mut self, view: OrderView, stp: SelfTradePrevention, post_only: bool, expire_ns: u64) {
        self.orders.push(NaiveOrder {
            view,
            stp,
            post_only,
            priority: self.next_priority,
            shown: view.display_qty.min(view.remaining()),
            expire_ns,
        });
        self.next_priority += 1;
    }

    /// When a new order of `command` expires (0: never).
    fn expiry_of(&self, command: &Command) -> u64 {
        let index = self
            .instrument_index(command.instrument)
            .expect("a placed order's instrument is configured");
        rules::expiry_of(&self.config.instruments[index], command, self.now_ns).unwrap_or(0)
    }

    /// Returns true when self-trade prevention cancelled the taker.
    fn match_against_book<S: EventSink + ?Sized>(
        &mut self,
        taker: &mut OrderView,
        limit: Option<i64>,
        stp: SelfTradePrevention,
        out: &mut Emitter<'_, S>,
    ) -> bool {
        let maker_side = taker.side.opposite();
        let mut level_price: Option<i64> = None;
        let mut changed = false;
        let mut stopped = false;
        while taker.remaining() > 0 {
            let Some(index) = self.best_index(taker.instrument, maker_side) else {
                break;
            };
            let maker = self.orders[index];
            let price = maker.view.price;
            if !crosses(taker.side, limit, price) {
                break;
            }
            if level_price != Some(price) {
                if let (true, Some(previous)) = (changed, level_price) {
                    let total = self.level_total(taker.instrument, maker_side, previous);
                    out.level(taker.instrument, maker_side, previous, total);
                }
                level_price = Some(price);
                changed = false;
            }
            match self_trade_action(stp, taker.account, maker.view.account) {
                SelfTradeAction::Trade => {
                    let qty = taker.remaining().min(maker.visible());
                    taker.filled += qty;
                    let maker = &mut self.orders[index];
                    maker.view.filled += qty;
                    if maker.iceberg() {
                        maker.shown -= qty;
                    }
                    let maker_view = maker.view;
                    out.fill(taker, &maker_view, price, qty);
                    if maker_view.remaining() == 0 {
                        self.orders.remove(index);
                    } else if maker.iceberg() && maker.shown == 0 {
                        // The next slice, behind everything the level shows now.
                        maker.shown = maker.view.display_qty.min(maker_view.remaining());
                        maker.priority = self.next_priority;
                        self.next_priority += 1;
                    }
                    if let Some(leg) = maker_view.oco_leg {
                        rules::break_oco(self, maker_view.order_id, leg, out);
                    }
                    changed = true;
                }
                SelfTradeAction::CancelMaker => {
                    out.cancelled(&maker.view, CancelReason::SelfTrade);
                    self.orders.remove(index);
                    if let Some(leg) = maker.view.oco_leg {
                        rules::break_oco(self, maker.view.order_id, leg, out);
                    }
                    changed = true;
                }
                SelfTradeAction::CancelTaker => {
                    out.cancelled(taker, CancelReason::SelfTrade);
                    stopped = true;
                    break;
                }
                SelfTradeAction::CancelBoth => {
                    out.cancelled(&maker.view, CancelReason::SelfTrade);
                    self.orders.remove(index);
                    if let Some(leg) = maker.view.oco_leg {
                        rules::break_oco(self, maker.view.order_id, leg, out);
                    }
                    changed = true;
                    out.cancelled(taker, CancelReason::SelfTrade);
                    stopped = true;
                    break;
                }
            }
        }
        if let (true, Some(price)) = (changed, level_price) {
            let total = self.level_total(taker.instrument, maker_side, price);
            out.level(taker.instrument, maker_side, price, total);
        }
        stopped
    }

    fn cancel<S: EventSink + ?Sized>(&mut self, command: &Command, out: &mut Emitter<'_, S>) {
        match self.find(command) {
            Err(reason) => out.rejected(command, reason),
            Ok(index) => rules::cancel_order(self, index, CancelReason::User, out),
        }
    }

    fn replace<S: EventSink + ?Sized>(&mut self, command: &Command, out: &mut Emitter<'_, S>) {
        rules::replace(self, command, out);
    }

    fn open_orders<S: EventSink + ?Sized>(&mut self, command: &Command, out: &mut Emitter<'_, S>) {
        if command.instrument != 0 && self.instrument_index(command.instrument).is_none() {
            return out.rejected(command, RejectReason::UnknownInstrument);
        }
        let mut listed: Vec<OrderView> = self
            .orders
            .iter()
            .filter(|o| {
                o.view.account == command.account
                    && (command.instrument == 0 || o.view.instrument == command.instrument)
            })
            .map(|o| o.view)
            .collect();
        listed.sort_by_key(|view| view.order_id);
        for view in &listed {
            out.order_status(view);
        }
        out.open_orders_end(command.account, command.instrument, listed.len() as u64);
    }

    fn mass_cancel<S: EventSink + ?Sized>(&mut self, command: &Command, out: &mut Emitter<'_, S>) {
        if command.instrument != 0 && self.instrument_index(command.instrument).is_none() {
            return out.rejected(command, RejectReason::UnknownInstrument);
        }
        let mut order_ids: Vec<u64> = self
            .orders
            .iter()
            .filter(|o| {
                o.view.account == command.account
                    && (command.instrument == 0 || o.view.instrument == command.instrument)
            })
            .map(|o| o.view.order_id)
            .collect();
        order_ids.sort_unstable();
        for order_id in &order_ids {
            let index = self.position_of(*order_id).expect("listed order is live");
            let view = self.orders.remove(index).view;
            out.cancelled(&view, CancelReason::MassCancel);
            if !view.waiting() {
                let total = self.level_total(view.instrument, view.side, view.price);
                out.level(view.instrument, view.side, view.price, total);
            }
        }
        out.mass_cancelled(command.account, command.instrument, order_ids.len() as u64);
    }

    /// Writes the canonical state, exactly as [`crate::Engine::write_state`] would.
    pub fn write_state<W: StateWriter>(&self, writer: &mut W) {
        writer.header();
        writer.u64(self.next_order_id);
        writer.u64(self.now_ns);
        writer.u32(self.config.instruments.len() as u32);
        for (spec, halted) in self.config.instruments.iter().zip(&self.halted) {
            writer.instrument(spec, *halted);
        }
        writer.u32(self.accounts.len() as u32);
        for account in &self.accounts {
            writer.u32(*account);
        }
        for (book, spec) in self.config.instruments.iter().enumerate() {
            for side in [Side::Buy, Side::Sell] {
                let orders = self.side_in_priority(spec.id, side);
                let levels: Vec<&[NaiveOrder]> = orders
                    .chunk_by(|a, b| a.view.price == b.view.price)
                    .collect();
                writer.u32(levels.len() as u32);
                for level in levels {
                    writer.i64(level[0].view.price);
                    writer.u32(level.len() as u32);
                    for order in level {
                        writer.order(&order.stored());
                    }
                }
            }
            writer.last_price(self.last_prices[book]);
            for side in [Side::Buy, Side::Sell] {
                let stops = self.stops_nearest_first(spec.id, side);
                let levels: Vec<&[NaiveOrder]> = stops
                    .chunk_by(|a, b| a.view.stop_price == b.view.stop_price)
                    .collect();
                writer.u32(levels.len() as u32);
                for level in levels {
                    writer.i64(level[0].view.stop_price);
                    writer.u32(level.len() as u32);
                    for order in level {
                        writer.stop(&StoredStop {
                            order: order.stored(),
                            kind: order.view.kind,
                            tif: order.view.tif,
                            price: order.view.price,
                        });
                    }
                }
            }
        }
        writer.u64(self.resends_forgotten_through);
        writer.u32(self.resends.len() as u32);
        for resend in &self.resends {
            writer.resend(resend);
        }
    }

    /// The state hash, equal to [`crate::Engine::state_hash`] for the same state.
    pub fn state_hash(&self) -> u64 {
        let mut hasher = StateHasher::new();
        self.write_state(&mut hasher);
        hasher.finish()
    }

    /// The canonical state bytes.
    pub fn encode_state(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.write_state(&mut bytes);
        bytes
    }
}

impl BookKeeping for NaiveBook {
    /// The instrument's index in the configuration.
    type Book = usize;
    /// The order's index in the vector of resting orders.
    type Order = usize;

    fn book_of(&self, instrument: u32) -> Option<usize> {
        self.instrument_index(instrument)
    }

    fn check_place(&self, book: usize, command: &Command) -> Result<(), RejectReason> {
        NaiveBook::check_place(self, book, command)
    }

    fn resend_lookup(&self, account: u32, client_order_id: u64, floor: u64) -> ResendLookup {
        let newest =
            self.resends.iter().rev().find(|resend| {
                resend.account == account && resend.client_order_id == client_order_id
            });
        decide(newest, floor, self.resends_forgotten_through)
    }

    fn resend_record(&mut self, resend: StoredResend) {
        if self.resends.len() == self.config.limits.resends_max as usize {
            self.resends_forgotten_through = self.resends.remove(0).seq;
        }
        self.resends.push(resend);
    }

    fn resting(&self, order_id: u64) -> Option<OrderView> {
        self.position_of(order_id)
            .map(|index| self.orders[index].view)
    }

    fn by_id(&self, order_id: u64) -> Option<usize> {
        self.position_of(order_id)
    }

    fn unlink_oco(&mut self, index: usize) {
        self.orders[index].view.oco_leg = None;
    }

    fn admit(&mut self, account: u32) -> u64 {
        if !self.accounts.contains(&account) {
            self.accounts.push(account);
        }
        let order_id = self.next_order_id;
        self.next_order_id += 1;
        order_id
    }

    fn match_taker<S: EventSink + ?Sized>(
        &mut self,
        _book: usize,
        taker: &mut OrderView,
        limit: Option<i64>,
        stp: SelfTradePrevention,
        out: &mut Emitter<'_, S>,
    ) -> bool {
        self.match_against_book(taker, limit, stp, out)
    }

    fn rest_new(&mut self, _book: usize, taker: &OrderView, command: &Command) -> u64 {
        let expire_ns = self.expiry_of(command);
        self.rest(*taker, command.stp, command.post_only, expire_ns);
        self.level_total(taker.instrument, taker.side, taker.price)
    }

    fn find_order(&self, command: &Command) -> Result<usize, RejectReason> {
        self.find(command)
    }

    fn order(&self, index: usize) -> (usize, OrderView, SelfTradePrevention, bool) {
        let order = &self.orders[index];
        let book = self
            .instrument_index(order.view.instrument)
            .expect("a resting order's instrument is configured");
        (book, order.view, order.stp, order.post_only)
    }

    fn halted(&self, book: usize) -> bool {
        self.halted[book]
    }

    fn last_price(&self, book: usize) -> Option<i64> {
        self.last_prices[book]
    }

    fn set_last_price(&mut self, book: usize, price: i64) {
        self.last_prices[book] = Some(price);
    }

    fn has_stops(&self, book: usize) -> bool {
        let instrument = self.config.instruments[book].id;
        self.orders
            .iter()
            .any(|o| o.view.waiting() && o.view.instrument == instrument)
    }

    fn rest_stop(&mut self, _book: usize, stop: &OrderView, command: &Command) {
        let expire_ns = self.expiry_of(command);
        self.rest(*stop, command.stp, command.post_only, expire_ns);
    }

    fn restop(&mut self, index: usize, changed: &OrderView, to_back: bool) {
        if to_back {
            self.orders[index].priority = self.next_priority;
            self.next_priority += 1;
        }
        self.orders[index].view = *changed;
    }

    fn nearest_stop(&self, book: usize, side: Side) -> Option<(usize, i64)> {
        let instrument = self.config.instruments[book].id;
        let nearest = *self.stops_nearest_first(instrument, side).first()?;
        let index = self
            .position_of(nearest.view.order_id)
            .expect("a listed stop is live");
        Some((index, nearest.view.stop_price))
    }

    fn trigger(&mut self, index: usize, entering: &OrderView) {
        let mut order = self.orders.remove(index);
        order.view = *entering;
        self.lifted = Some(order);
    }

    fn spec(&self, book: usize) -> &InstrumentSpec {
        &self.config.instruments[book]
    }

    fn best_crosses(&self, book: usize, side: Side, limit: Option<i64>) -> bool {
        NaiveBook::best_crosses(self, self.config.instruments[book].id, side, limit)
    }

    fn remove(&mut self, index: usize) -> u64 {
        let order = self.orders.remove(index);
        self.level_total(order.view.instrument, order.view.side, order.view.price)
    }

    fn resize(&mut self, index: usize, resized: &OrderView, to_back: bool) -> u64 {
        let order = &mut self.orders[index];
        if to_back {
            order.priority = self.next_priority;
            self.next_priority += 1;
            order.shown = resized.display_qty.min(resized.remaining());
        } else {
            order.shown = order.shown.min(resized.remaining());
        }
        order.view = *resized;
        self.level_total(resized.instrument, resized.side, resized.price)
    }

    fn lift(&mut self, index: usize, _taker: &OrderView) -> u64 {
        let order = self.orders.remove(index);
        self.lifted = Some(order);
        self.level_total(order.view.instrument, order.view.side, order.view.price)
    }

    fn settle_lifted(&mut self, _index: usize, taker: &OrderView, done: bool) -> Option<u64> {
        let order = self.lifted.take().expect("an order was lifted");
        if done {
            return None;
        }
        self.rest(*taker, order.stp, order.post_only, order.expire_ns);
        Some(self.level_total(taker.instrument, taker.side, taker.price))
    }
}
