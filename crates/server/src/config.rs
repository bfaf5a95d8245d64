//! The TOML configuration file: instruments and limits, checked strictly (an unknown key is
//! an error naming it, so a typo never silently falls back to a default).

use std::path::Path;

use anyhow::Context;
use ringmatch_matcher::{InstrumentSpec, Limits, MatcherConfig};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Capacity limits of the matcher.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Tradable instruments.
    pub instruments: Vec<InstrumentSection>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Most resting orders in one book.
    pub orders_per_book_max: u32,
    /// Most resting orders over all books.
    pub orders_max: u32,
    /// Most distinct accounts.
    pub accounts_max: u32,
    /// Most instruments.
    pub instruments_max: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let limits = Limits::default();
        LimitsSection {
            orders_per_book_max: limits.orders_per_book_max,
            orders_max: limits.orders_max,
            accounts_max: limits.accounts_max,
            instruments_max: limits.instruments_max,
        }
    }
}

/// One `[[instruments]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentSection {
    /// Instrument id (not 0).
    pub id: u32,
    /// Symbol.
    pub symbol: String,
    /// Tick size in price units.
    pub tick_size: i64,
    /// Lot size in quantity units.
    pub lot_size: u64,
    /// Lowest limit price.
    pub min_price: i64,
    /// Highest limit price.
    pub max_price: i64,
    /// Largest order quantity.
    pub max_qty: u64,
}

impl Config {
    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.matcher().validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The matcher's part of the configuration.
    pub fn matcher(&self) -> MatcherConfig {
        MatcherConfig {
            instruments: self
                .instruments
                .iter()
                .map(|section| InstrumentSpec {
                    id: section.id,
                    symbol: section.symbol.clone(),
                    tick_size: section.tick_size,
                    lot_size: section.lot_size,
                    min_price: section.min_price,
                    max_price: section.max_price,
                    max_qty: section.max_qty,
                })
                .collect(),
            limits: Limits {
                orders_per_book_max: self.limits.orders_per_book_max,
                orders_max: self.limits.orders_max,
                accounts_max: self.limits.accounts_max,
                instruments_max: self.limits.instruments_max,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/default.toml");
        let config = Config::load(&path).unwrap();
        let demo = &config.instruments[0];
        assert_eq!((demo.id, demo.symbol.as_str()), (1, "DEMO"));
        assert_eq!((demo.tick_size, demo.lot_size), (1, 1));
        assert_eq!(
            (demo.min_price, demo.max_price, demo.max_qty),
            (1, 1_000_000, 1_000_000)
        );
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let text = "[[instruments]]\nid = 1\nsymbol = \"X\"\ntick_size = 1\nlot_size = 1\n\
                    min_price = 1\nmax_price = 10\nmax_qty = 10\ncolour = \"red\"\n";
        let error = format!("{:#}", Config::parse(text).unwrap_err());
        assert!(error.contains("colour"), "{error}");
    }

    #[test]
    fn invalid_instruments_are_rejected_with_the_reason() {
        let text = "[[instruments]]\nid = 0\nsymbol = \"X\"\ntick_size = 1\nlot_size = 1\n\
                    min_price = 1\nmax_price = 10\nmax_qty = 10\n";
        let error = format!("{:#}", Config::parse(text).unwrap_err());
        assert!(error.contains("id 0 is reserved"), "{error}");
    }
}
