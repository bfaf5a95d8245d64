//! Deterministic synthetic command streams: the exchange-core benchmark mix.
//!
//! One instrument, about 1,000 resting orders over about 700 price levels around a fixed mid,
//! 1,000 accounts. Each command is drawn as 9% GTC limit (half of them priced to trade), 3%
//! IOC, 6% cancel and 82% replace (a price move on the order's own side); while the book is
//! below 95% of its target a cancel or replace draw becomes a passive GTC instead, and while
//! it is above 115% a GTC draw becomes a cancel. Aggressive orders and cancels drain the
//! book, so those refills make the stream itself about 14% GTC, 3% IOC, 6% cancel and 77%
//! replace ([`Workload::mix`] counts it; a test holds the figures to the ones documented in
//! `docs/benchmarks.md`). The generator runs its own [`Engine`] to learn which orders are
//! still live, so every cancel and replace names a live order. The same seed always gives the
//! same stream.
//!
//! [`order_types_mix`] is the same mix with wave-2 order types in it: of the GTC draws, a
//! fifth stay plain, a fifth are icebergs, a fifth GTD limit orders, a fifth stops and a fifth
//! OCOs (all GTD too), so the stream stops, triggers, cascades, refreshes slices, expires and
//! cancels OCO legs; cancels and replaces still name plain, iceberg or GTD limit orders.

use std::collections::HashMap;

use ringmatch_proto::{
    CancelReason, Command, CommandType, EventType, OrderKind, Reason, Side, TimeInForce,
};

use crate::{Engine, InstrumentSpec, Limits, MatcherConfig};

/// A generated stream: `warmup` builds the resting book, `commands` is the measured mix.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Commands that build the initial book (all passive GTC limits).
    pub warmup: Vec<Command>,
    /// The mix.
    pub commands: Vec<Command>,
    /// How many of `commands` traded at least once (for reporting the mix).
    pub trading_commands_count: usize,
    /// What the order types of the stream did (all zero for the plain mix).
    pub order_types: OrderTypeCounts,
}

/// What the order types of [`order_types_mix`] did over its measured commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderTypeCounts {
    /// Stops placed (stop-market and stop-limit).
    pub stops: usize,
    /// OCOs placed.
    pub ocos: usize,
    /// Icebergs placed.
    pub icebergs: usize,
    /// GTD limit orders placed (not counting GTD stops and OCOs).
    pub gtd: usize,
    /// Places refused (a stop or OCO whose prices the last trade made invalid, for example).
    pub rejected: usize,
    /// `triggered` events.
    pub triggered: usize,
    /// Orders expired.
    pub expired: usize,
    /// OCO legs the other leg cancelled.
    pub oco_cancelled: usize,
}

impl std::fmt::Display for OrderTypeCounts {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} stops, {} OCOs, {} icebergs, {} GTD limits placed ({} places refused); {} \
             triggered, {} expired, {} OCO legs cancelled by the other",
            self.stops,
            self.ocos,
            self.icebergs,
            self.gtd,
            self.rejected,
            self.triggered,
            self.expired,
            self.oco_cancelled
        )
    }
}

/// How a stream's commands divide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MixCounts {
    /// GTC places.
    pub gtc: usize,
    /// IOC places.
    pub ioc: usize,
    /// Cancels.
    pub cancel: usize,
    /// Replaces.
    pub replace: usize,
    /// Anything else.
    pub other: usize,
}

impl MixCounts {
    /// Counts `commands`.
    pub fn of(commands: &[Command]) -> MixCounts {
        let mut counts = MixCounts::default();
        for command in commands {
            match (command.command_type, command.tif) {
                (CommandType::Place, TimeInForce::Gtc) => counts.gtc += 1,
                (CommandType::Place, TimeInForce::Ioc) => counts.ioc += 1,
                (CommandType::Cancel, _) => counts.cancel += 1,
                (CommandType::Replace, _) => counts.replace += 1,
                _ => counts.other += 1,
            }
        }
        counts
    }

    /// Every command counted.
    pub fn total(&self) -> usize {
        self.gtc + self.ioc + self.cancel + self.replace + self.other
    }

    /// A share of the total, in percent.
    pub fn percent(&self, count: usize) -> f64 {
        100.0 * count as f64 / self.total().max(1) as f64
    }
}

impl std::fmt::Display for MixCounts {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{:.1}% GTC, {:.1}% IOC, {:.1}% cancel, {:.1}% replace",
            self.percent(self.gtc),
            self.percent(self.ioc),
            self.percent(self.cancel),
            self.percent(self.replace)
        )?;
        if self.other > 0 {
            write!(formatter, ", {:.1}% other", self.percent(self.other))?;
        }
        Ok(())
    }
}

impl Workload {
    /// How the measured commands divide (the warm-up not counted).
    pub fn mix(&self) -> MixCounts {
        MixCounts::of(&self.commands)
    }
}

/// Shape of the exchange-core mix.
#[derive(Debug, Clone, Copy)]
pub struct MixShape {
    /// Resting orders the generator keeps the book near.
    pub resting_target: usize,
    /// Price levels on each side of the mid that passive orders use.
    pub levels_per_side: i64,
    /// Accounts, numbered from 1.
    pub accounts_count: u32,
    /// Mid price in ticks.
    pub mid_price: i64,
    /// How far past the mid (in ticks) aggressive orders reach.
    pub aggressive_levels: i64,
}

impl Default for MixShape {
    fn default() -> Self {
        MixShape {
            resting_target: 1_000,
            levels_per_side: 720,
            accounts_count: 1_000,
            mid_price: 100_000,
            aggressive_levels: 60,
        }
    }
}

/// The instrument the mix trades: id 1, tick 1, lot 1, prices 1 to 200,000.
pub fn mix_instrument() -> InstrumentSpec {
    InstrumentSpec {
        id: 1,
        symbol: "DEMO".into(),
        tick_size: 1,
        lot_size: 1,
        min_price: 1,
        max_price: 200_000,
        max_qty: 1_000_000,
        session_end_ns: None,
    }
}

/// A matcher configuration that fits the mix.
pub fn mix_config() -> MatcherConfig {
    MatcherConfig {
        instruments: vec![mix_instrument()],
        limits: Limits {
            orders_per_book_max: 100_000,
            orders_max: 100_000,
            accounts_max: 10_000,
            instruments_max: 1,
            resends_max: 100_000,
        },
    }
}

/// splitmix64: small, fast, good enough for a workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

struct Generator {
    shape: MixShape,
    /// Draw wave-2 order types too ([`order_types_mix`]).
    order_types: bool,
    counts: OrderTypeCounts,
    /// The last trade price the generator's engine printed.
    last_price: Option<i64>,
    rng: Rng,
    engine: Engine,
    live: Vec<(u64, u32, Side)>,
    position: HashMap<u64, usize>,
    events: Vec<ringmatch_proto::Event>,
    seq: u64,
}

impl Generator {
    fn passive_price(&mut self, side: Side) -> i64 {
        let offset = 1 + self.rng.below(self.shape.levels_per_side as u64) as i64;
        match side {
            Side::Buy => self.shape.mid_price - offset,
            Side::Sell => self.shape.mid_price + offset,
        }
    }

    fn aggressive_price(&mut self, side: Side) -> i64 {
        let offset = 1 + self.rng.below(self.shape.aggressive_levels as u64) as i64;
        match side {
            Side::Buy => self.shape.mid_price + offset,
            Side::Sell => self.shape.mid_price - offset,
        }
    }

    fn side(&mut self) -> Side {
        if self.rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    fn place(&mut self, tif: TimeInForce, aggressive: bool) -> Command {
        let side = self.side();
        let price = if aggressive {
            self.aggressive_price(side)
        } else {
            self.passive_price(side)
        };
        let account = 1 + self.rng.below(u64::from(self.shape.accounts_count)) as u32;
        let mut command = Command::limit(account, 1, side, price, 1 + self.rng.below(20));
        command.tif = tif;
        command
    }

    fn pick_live(&mut self) -> (u64, u32, Side) {
        self.live[self.rng.below(self.live.len() as u64) as usize]
    }

    fn next_command(&mut self) -> Command {
        let roll = self.rng.below(100);
        let crowded = self.live.len() > self.shape.resting_target * 115 / 100;
        let sparse = self.live.len() < self.shape.resting_target * 95 / 100 || self.live.is_empty();
        let mut command = if roll < 9 && !crowded {
            let aggressive = self.rng.below(2) == 0;
            let command = self.place(TimeInForce::Gtc, aggressive);
            if self.order_types {
                self.with_order_type(command)
            } else {
                command
            }
        } else if roll < 12 {
            self.place(TimeInForce::Ioc, true)
        } else if (roll < 18 || crowded) && !sparse {
            let (order_id, account, _) = self.pick_live();
            let mut command = Command::empty(CommandType::Cancel);
            command.account = account;
            command.instrument = 1;
            command.order_id = order_id;
            command
        } else if sparse {
            self.place(TimeInForce::Gtc, false)
        } else {
            let (order_id, account, side) = self.pick_live();
            let mut command = Command::empty(CommandType::Replace);
            command.account = account;
            command.instrument = 1;
            command.order_id = order_id;
            command.has_price = true;
            command.price = self.passive_price(side);
            command
        };
        self.seq += 1;
        command.timestamp_ns = self.seq * 1_000;
        command
    }

    /// A GTC draw of [`order_types_mix`]: one fifth each stays plain or becomes an iceberg, a
    /// GTD limit order, a stop (stop-limit or stop-market, 1 to 30 ticks from the last trade)
    /// or an OCO (its limit leg passive, its stop leg 1 to 30 ticks the other side of the last
    /// trade). GTD orders, stops and OCOs live for 2 to 20 thousand commands' time.
    fn with_order_type(&mut self, mut command: Command) -> Command {
        let expire_time_ns = (self.seq + 2_000 + self.rng.below(18_000)) * 1_000;
        let last_price = self.last_price.unwrap_or(self.shape.mid_price);
        let away = 1 + self.rng.below(30) as i64;
        match self.rng.below(5) {
            0 => {}
            1 => {
                command.qty = 20 + self.rng.below(80);
                command.display_qty = 5;
                self.counts.icebergs += 1;
            }
            2 => {
                command.tif = TimeInForce::Gtd;
                command.expire_time_ns = expire_time_ns;
                self.counts.gtd += 1;
            }
            3 => {
                command.stop_price = match command.side {
                    Side::Buy => last_price + away,
                    Side::Sell => last_price - away,
                };
                if self.rng.below(2) == 0 {
                    command.kind = OrderKind::StopLimit;
                    command.price = command.stop_price;
                    command.tif = TimeInForce::Gtd;
                    command.expire_time_ns = expire_time_ns;
                } else {
                    command.kind = OrderKind::StopMarket;
                    command.price = 0;
                    command.tif = TimeInForce::Ioc;
                }
                self.counts.stops += 1;
            }
            _ => {
                command.price = self.passive_price(command.side);
                command.oco = true;
                command.stop_price = match command.side {
                    Side::Buy => last_price + away,
                    Side::Sell => last_price - away,
                };
                command.tif = TimeInForce::Gtd;
                command.expire_time_ns = expire_time_ns;
                self.counts.ocos += 1;
            }
        }
        command
    }

    /// Applies a command to the private engine and tracks which orders remain live.
    /// Returns whether it traded.
    fn observe(&mut self, command: &Command) -> bool {
        self.events.clear();
        self.engine.apply(self.seq, command, &mut self.events);
        let mut traded = false;
        for index in 0..self.events.len() {
            let event = self.events[index];
            match event.event_type {
                // Plain, iceberg and GTD limit orders; not stops or OCO legs (which a replace
                // may not move).
                EventType::Accepted
                    if matches!(command.tif, TimeInForce::Gtc | TimeInForce::Gtd)
                        && event.stop_kind.is_none()
                        && event.oco_leg.is_none() =>
                {
                    self.add_live(event.order_id, event.account, command.side);
                }
                EventType::Rejected if command.command_type == CommandType::Place => {
                    self.counts.rejected += 1;
                }
                EventType::Triggered => self.counts.triggered += 1,
                EventType::Fill => {
                    traded = true;
                    self.last_price = Some(event.price);
                    if event.maker_remaining == 0 {
                        self.remove_live(event.maker_order_id);
                    }
                    if event.remaining == 0 {
                        self.remove_live(event.order_id);
                    }
                }
                EventType::Cancelled => {
                    match event.reason {
                        Reason::Cancel(CancelReason::Expired) => self.counts.expired += 1,
                        Reason::Cancel(CancelReason::Oco) => self.counts.oco_cancelled += 1,
                        _ => {}
                    }
                    self.remove_live(event.order_id)
                }
                _ => {}
            }
        }
        traded
    }

    fn add_live(&mut self, order_id: u64, account: u32, side: Side) {
        self.position.insert(order_id, self.live.len());
        self.live.push((order_id, account, side));
    }

    fn remove_live(&mut self, order_id: u64) {
        if let Some(index) = self.position.remove(&order_id) {
            self.live.swap_remove(index);
            if let Some(moved) = self.live.get(index) {
                self.position.insert(moved.0, index);
            }
        }
    }
}

/// Generates the exchange-core mix: a warm-up that builds the book, then `commands_count`
/// mixed commands.
pub fn exchange_core_mix(commands_count: usize, seed: u64, shape: MixShape) -> Workload {
    generate(commands_count, seed, shape, false)
}

/// Generates the exchange-core mix with stops, OCOs, icebergs and GTD orders in it (the
/// module's documentation says how many). The warm-up is the plain mix's.
pub fn order_types_mix(commands_count: usize, seed: u64, shape: MixShape) -> Workload {
    generate(commands_count, seed, shape, true)
}

fn generate(commands_count: usize, seed: u64, shape: MixShape, order_types: bool) -> Workload {
    let mut generator = Generator {
        shape,
        order_types,
        counts: OrderTypeCounts::default(),
        last_price: None,
        rng: Rng(seed),
        engine: Engine::new(mix_config()).expect("the mix configuration is valid"),
        live: Vec::new(),
        position: HashMap::new(),
        events: Vec::new(),
        seq: 0,
    };
    let mut warmup = Vec::with_capacity(shape.resting_target);
    while generator.live.len() < shape.resting_target {
        generator.seq += 1;
        let mut command = generator.place(TimeInForce::Gtc, false);
        command.timestamp_ns = generator.seq * 1_000;
        generator.observe(&command);
        warmup.push(command);
    }
    generator.counts = OrderTypeCounts::default();
    let mut commands = Vec::with_capacity(commands_count);
    let mut trading_commands_count = 0;
    for _ in 0..commands_count {
        let command = generator.next_command();
        if generator.observe(&command) {
            trading_commands_count += 1;
        }
        commands.push(command);
    }
    Workload {
        warmup,
        commands,
        trading_commands_count,
        order_types: generator.counts,
    }
}
