//! Instruments and limits: everything the matcher is told at start-up, checked once.

use std::collections::HashSet;

/// The largest number of price levels (ticks between min and max price) one book may have.
/// Each level costs 24 bytes of preallocated memory per book.
pub const PRICE_LEVELS_PER_BOOK_MAX: u64 = 1 << 24;

/// The largest value `orders_max` may take (order slots are indexed by `u32`).
pub const ORDERS_MAX_LIMIT: u32 = 1 << 30;

/// One tradable instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentSpec {
    /// Instrument id used in commands; never 0 (0 means "all instruments" in a mass cancel).
    pub id: u32,
    /// Human-readable symbol, for logs and tools only.
    pub symbol: String,
    /// Prices must be multiples of this many ticks.
    pub tick_size: i64,
    /// Quantities must be multiples of this many lots.
    pub lot_size: u64,
    /// Lowest accepted limit price, in ticks (on tick).
    pub min_price: i64,
    /// Highest accepted limit price, in ticks (on tick).
    pub max_price: i64,
    /// Largest accepted order quantity, in lots.
    pub max_qty: u64,
    /// When the instrument's trading day ends, in nanoseconds after midnight UTC: day orders
    /// expire at the next such moment. `None`: the instrument takes no day orders.
    pub session_end_ns: Option<u64>,
}

impl InstrumentSpec {
    /// How many price levels the band `min_price..=max_price` holds.
    pub fn price_levels_count(&self) -> u64 {
        ((self.max_price - self.min_price) / self.tick_size) as u64 + 1
    }
}

/// Capacity limits, fixed at start-up; memory for them is allocated up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most resting orders in one instrument's book.
    pub orders_per_book_max: u32,
    /// Most resting orders over all books.
    pub orders_max: u32,
    /// Most distinct accounts the engine will ever know.
    pub accounts_max: u32,
    /// Most instruments that may be configured.
    pub instruments_max: u32,
    /// Most places the resend window remembers (`docs/order-entry-protocol.md`, "Resending
    /// after a lost connection"): at least the places per second times the longest time a
    /// client may take to resend.
    pub resends_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            orders_per_book_max: 1_000_000,
            orders_max: 1_000_000,
            accounts_max: 100_000,
            instruments_max: 64,
            resends_max: 262_144,
        }
    }
}

/// Everything a matcher needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatcherConfig {
    /// The instruments, in the order they are hashed and snapshotted.
    pub instruments: Vec<InstrumentSpec>,
    /// Capacity limits.
    pub limits: Limits,
}

/// Why a configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No instrument is configured.
    #[error("no instruments configured")]
    NoInstruments,
    /// More instruments than `instruments_max`.
    #[error("{count} instruments configured, limit instruments_max is {max}")]
    TooManyInstruments {
        /// Instruments configured.
        count: usize,
        /// The limit.
        max: u32,
    },
    /// Two instruments share an id.
    #[error("instrument id {0} is configured twice")]
    DuplicateInstrument(u32),
    /// An instrument field is out of its domain.
    #[error("instrument {id} ({symbol}): {problem}")]
    BadInstrument {
        /// Instrument id.
        id: u32,
        /// Instrument symbol.
        symbol: String,
        /// What is wrong.
        problem: String,
    },
    /// A limit is zero or too large.
    #[error("limit {name} = {value} is out of range ({problem})")]
    BadLimit {
        /// Name of the limit.
        name: &'static str,
        /// Value given.
        value: u64,
        /// What is wrong.
        problem: &'static str,
    },
}

impl MatcherConfig {
    /// Checks every instrument and limit; a config that passes cannot make the matcher panic.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        let limit_checks: [(&'static str, u32); 5] = [
            ("orders_per_book_max", limits.orders_per_book_max),
            ("orders_max", limits.orders_max),
            ("accounts_max", limits.accounts_max),
            ("instruments_max", limits.instruments_max),
            ("resends_max", limits.resends_max),
        ];
        for (name, value) in limit_checks {
            if value == 0 {
                return Err(ConfigError::BadLimit {
                    name,
                    value: 0,
                    problem: "must be at least 1",
                });
            }
            if value > ORDERS_MAX_LIMIT {
                return Err(ConfigError::BadLimit {
                    name,
                    value: u64::from(value),
                    problem: "must be at most 2^30",
                });
            }
        }
        if self.instruments.is_empty() {
            return Err(ConfigError::NoInstruments);
        }
        if self.instruments.len() > limits.instruments_max as usize {
            return Err(ConfigError::TooManyInstruments {
                count: self.instruments.len(),
                max: limits.instruments_max,
            });
        }
        let mut seen = HashSet::new();
        for spec in &self.instruments {
            if !seen.insert(spec.id) {
                return Err(ConfigError::DuplicateInstrument(spec.id));
            }
            spec_problem(spec).map_or(Ok(()), |problem| {
                Err(ConfigError::BadInstrument {
                    id: spec.id,
                    symbol: spec.symbol.clone(),
                    problem,
                })
            })?;
        }
        Ok(())
    }
}

fn spec_problem(spec: &InstrumentSpec) -> Option<String> {
    if spec.id == 0 {
        return Some("id 0 is reserved (it means every instrument in a mass cancel)".into());
    }
    if spec.tick_size <= 0 {
        return Some(format!("tick_size {} must be positive", spec.tick_size));
    }
    if spec.lot_size == 0 {
        return Some("lot_size must be positive".into());
    }
    if spec.max_qty == 0 || spec.max_qty % spec.lot_size != 0 {
        return Some(format!(
            "max_qty {} must be a positive multiple of lot_size {}",
            spec.max_qty, spec.lot_size
        ));
    }
    if spec.min_price > spec.max_price {
        return Some(format!(
            "min_price {} is above max_price {}",
            spec.min_price, spec.max_price
        ));
    }
    if spec.min_price % spec.tick_size != 0 || spec.max_price % spec.tick_size != 0 {
        return Some("min_price and max_price must be multiples of tick_size".into());
    }
    let span = i128::from(spec.max_price) - i128::from(spec.min_price);
    let levels = span / i128::from(spec.tick_size) + 1;
    if levels > i128::from(PRICE_LEVELS_PER_BOOK_MAX) {
        return Some(format!(
            "the price band holds {levels} levels; at most {PRICE_LEVELS_PER_BOOK_MAX} are allowed"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> InstrumentSpec {
        InstrumentSpec {
            id: 1,
            symbol: "DEMO".into(),
            tick_size: 1,
            lot_size: 1,
            min_price: 1,
            max_price: 1_000_000,
            max_qty: 1_000_000,
            session_end_ns: None,
        }
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let ok = MatcherConfig {
            instruments: vec![demo()],
            limits: Limits::default(),
        };
        assert_eq!(ok.validate(), Ok(()));

        let mut twice = ok.clone();
        twice.instruments.push(demo());
        assert_eq!(twice.validate(), Err(ConfigError::DuplicateInstrument(1)));

        let mut wide = ok.clone();
        wide.instruments[0].max_price = i64::MAX;
        assert!(matches!(
            wide.validate(),
            Err(ConfigError::BadInstrument { .. })
        ));

        let mut zero_tick = ok.clone();
        zero_tick.instruments[0].tick_size = 0;
        assert!(matches!(
            zero_tick.validate(),
            Err(ConfigError::BadInstrument { .. })
        ));

        let mut no_accounts = ok.clone();
        no_accounts.limits.accounts_max = 0;
        assert!(matches!(
            no_accounts.validate(),
            Err(ConfigError::BadLimit {
                name: "accounts_max",
                ..
            })
        ));

        let empty = MatcherConfig {
            instruments: vec![],
            limits: Limits::default(),
        };
        assert_eq!(empty.validate(), Err(ConfigError::NoInstruments));
    }
}
