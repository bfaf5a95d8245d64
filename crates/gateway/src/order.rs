//! Named builders for what a client sends: [`Order`] for a place and [`Replace`] for a
//! replace, so that a price, a quantity and a client order id are never told apart by their
//! position in an argument list.
//!
//! ```
//! use ringmatch_gateway::{Order, Replace};
//! use ringmatch_proto::TimeInForce;
//!
//! let resting = Order::buy(1).limit(100).qty(5).client_order_id(7);
//! let sweep = Order::sell(1).market().qty(20).tif(TimeInForce::Ioc);
//! let amend = Replace::order(42).price(101).qty(4);
//! # let _ = (resting, sweep, amend);
//! ```

use ringmatch_proto::{Command, CommandType, OrderKind, SelfTradePrevention, Side, TimeInForce};

use crate::client::ClientError;

/// An order to place: side and instrument first, then named fields. A limit order needs
/// [`Order::limit`], every order needs [`Order::qty`]; the rest have defaults (GTC, no client
/// order id, self-trade prevention off, not post-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    instrument: u32,
    side: Side,
    kind: OrderKind,
    price: Option<i64>,
    qty: Option<u64>,
    client_order_id: u64,
    tif: TimeInForce,
    stp: SelfTradePrevention,
    post_only: bool,
    stop_price: Option<i64>,
    display_qty: u64,
    expire_time_ns: u64,
    /// An OCO's stop price, and its stop-limit leg's limit price if it has one.
    oco: Option<(i64, Option<i64>)>,
}

impl Order {
    /// A buy order on `instrument`.
    pub fn buy(instrument: u32) -> Order {
        Order::new(instrument, Side::Buy)
    }

    /// A sell order on `instrument`.
    pub fn sell(instrument: u32) -> Order {
        Order::new(instrument, Side::Sell)
    }

    /// An order of `side` on `instrument`.
    pub fn new(instrument: u32, side: Side) -> Order {
        Order {
            instrument,
            side,
            kind: OrderKind::Limit,
            price: None,
            qty: None,
            client_order_id: 0,
            tif: TimeInForce::Gtc,
            stp: SelfTradePrevention::None,
            post_only: false,
            stop_price: None,
            display_qty: 0,
            expire_time_ns: 0,
            oco: None,
        }
    }

    /// A limit order at `price` (in ticks).
    pub fn limit(mut self, price: i64) -> Order {
        self.kind = OrderKind::Limit;
        self.price = Some(price);
        self
    }

    /// A market order (trades at any price, never rests; give it IOC or FOK).
    pub fn market(mut self) -> Order {
        self.kind = OrderKind::Market;
        self.price = None;
        self
    }

    /// Makes it a stop: it waits off the book until a trade prints at `stop_price` or through
    /// it, then enters as the limit order (a stop-limit) or market order (a stop-market, which
    /// must be IOC) it was built as (`docs/matching-rules.md`, "Stop orders").
    pub fn stop(mut self, stop_price: i64) -> Order {
        self.stop_price = Some(stop_price);
        self
    }

    /// Makes a GTC limit order an iceberg: the book shows `display_qty` lots of it at a time,
    /// and each next slice joins the back of its price level (`docs/matching-rules.md`,
    /// "Icebergs").
    pub fn display_qty(mut self, display_qty: u64) -> Order {
        self.display_qty = display_qty;
        self
    }

    /// Makes a limit order an OCO (one cancels the other): a stop-market leg on the same side
    /// and quantity waits at `stop_price`, and whichever leg trades or triggers first
    /// cancels the other (`docs/matching-rules.md`, "One cancels the other").
    pub fn oco(mut self, stop_price: i64) -> Order {
        self.oco = Some((stop_price, None));
        self
    }

    /// Makes a limit order an OCO whose stop leg is a stop-limit at `limit_price`, stopped at
    /// `stop_price`.
    pub fn oco_stop_limit(mut self, stop_price: i64, limit_price: i64) -> Order {
        self.oco = Some((stop_price, Some(limit_price)));
        self
    }

    /// Good till date: the order expires at `expire_time_ns` (nanoseconds since the Unix
    /// epoch, by the engine's time: `docs/matching-rules.md`, "Expiring orders").
    pub fn good_till(mut self, expire_time_ns: u64) -> Order {
        self.tif = TimeInForce::Gtd;
        self.expire_time_ns = expire_time_ns;
        self
    }

    /// The quantity, in lots.
    pub fn qty(mut self, qty: u64) -> Order {
        self.qty = Some(qty);
        self
    }

    /// The client's own id for the order (0: none). It comes back on every event of the
    /// order, and lets a resend after a lost connection be recognised.
    pub fn client_order_id(mut self, client_order_id: u64) -> Order {
        self.client_order_id = client_order_id;
        self
    }

    /// Time in force (default GTC).
    pub fn tif(mut self, tif: TimeInForce) -> Order {
        self.tif = tif;
        self
    }

    /// Self-trade prevention (default none).
    pub fn self_trade_prevention(mut self, stp: SelfTradePrevention) -> Order {
        self.stp = stp;
        self
    }

    /// Post-only: rejected rather than trading on arrival.
    pub fn post_only(mut self) -> Order {
        self.post_only = true;
        self
    }

    /// The client order id set (0: none).
    pub fn get_client_order_id(&self) -> u64 {
        self.client_order_id
    }

    /// The command for `account`; a limit order without a price, or any order without a
    /// quantity, is a usage error, sent to nobody.
    pub fn to_command(&self, account: u32) -> Result<Command, ClientError> {
        let qty = self
            .qty
            .ok_or_else(|| ClientError::Usage("an order needs a quantity: Order::qty".into()))?;
        let price = match (self.kind, self.price) {
            (OrderKind::Limit, None) => {
                return Err(ClientError::Usage(
                    "a limit order needs a price: Order::limit".into(),
                ))
            }
            (_, price) => price.unwrap_or(0),
        };
        let mut command = Command::limit(account, self.instrument, self.side, price, qty);
        command.kind = match (self.kind, self.stop_price) {
            (OrderKind::Limit, Some(_)) => OrderKind::StopLimit,
            (OrderKind::Market, Some(_)) => OrderKind::StopMarket,
            (kind, _) => kind,
        };
        command.stop_price = self.stop_price.unwrap_or(0);
        if let Some((stop_price, stop_limit_price)) = self.oco {
            if command.kind != OrderKind::Limit {
                return Err(ClientError::Usage(
                    "an OCO is a limit order with no stop of its own: Order::limit, Order::oco"
                        .into(),
                ));
            }
            command.oco = true;
            command.stop_price = stop_price;
            command.oco_stop_limit = stop_limit_price.is_some();
            command.oco_stop_limit_price = stop_limit_price.unwrap_or(0);
        }
        command.display_qty = self.display_qty;
        command.expire_time_ns = if self.tif == TimeInForce::Gtd {
            self.expire_time_ns
        } else {
            0
        };
        command.tif = self.tif;
        command.stp = self.stp;
        command.post_only = self.post_only;
        command.client_order_id = self.client_order_id;
        Ok(command)
    }
}

/// A replace of a resting order: a new price, a new total quantity, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replace {
    order_id: u64,
    price: Option<i64>,
    qty: Option<u64>,
    stop_price: Option<i64>,
}

impl Replace {
    /// A replace of the order the engine numbered `order_id`.
    pub fn order(order_id: u64) -> Replace {
        Replace {
            order_id,
            price: None,
            qty: None,
            stop_price: None,
        }
    }

    /// The new stop price of a stop that has not triggered yet, in ticks.
    pub fn stop_price(mut self, stop_price: i64) -> Replace {
        self.stop_price = Some(stop_price);
        self
    }

    /// The new price, in ticks.
    pub fn price(mut self, price: i64) -> Replace {
        self.price = Some(price);
        self
    }

    /// The new total quantity, in lots.
    pub fn qty(mut self, qty: u64) -> Replace {
        self.qty = Some(qty);
        self
    }

    /// The command for `account`; a replace that changes nothing is a usage error.
    pub fn to_command(&self, account: u32) -> Result<Command, ClientError> {
        if self.price.is_none() && self.qty.is_none() && self.stop_price.is_none() {
            return Err(ClientError::Usage(
                "a replace needs a new price, quantity or stop price: Replace::price, \
                 Replace::qty, Replace::stop_price"
                    .into(),
            ));
        }
        let mut command = Command::empty(CommandType::Replace);
        command.account = account;
        command.order_id = self.order_id;
        command.has_price = self.price.is_some();
        command.price = self.price.unwrap_or(0);
        command.has_qty = self.qty.is_some();
        command.qty = self.qty.unwrap_or(0);
        command.has_stop_price = self.stop_price.is_some();
        command.stop_price = self.stop_price.unwrap_or(0);
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_the_command_and_refuse_what_is_missing() {
        let command = Order::sell(3)
            .limit(105)
            .qty(7)
            .client_order_id(9)
            .tif(TimeInForce::Ioc)
            .post_only()
            .to_command(11)
            .unwrap();
        assert_eq!(
            (
                command.account,
                command.instrument,
                command.side,
                command.price,
                command.qty,
                command.client_order_id,
                command.tif,
                command.post_only
            ),
            (11, 3, Side::Sell, 105, 7, 9, TimeInForce::Ioc, true)
        );
        assert!(matches!(
            Order::buy(1).qty(1).to_command(1),
            Err(ClientError::Usage(_))
        ));
        assert!(matches!(
            Order::buy(1).limit(1).to_command(1),
            Err(ClientError::Usage(_))
        ));
        let market = Order::buy(1).market().qty(2).to_command(1).unwrap();
        assert_eq!((market.kind, market.price), (OrderKind::Market, 0));
        let stop_limit = Order::sell(1)
            .limit(95)
            .stop(96)
            .qty(2)
            .to_command(1)
            .unwrap();
        assert_eq!(
            (stop_limit.kind, stop_limit.price, stop_limit.stop_price),
            (OrderKind::StopLimit, 95, 96)
        );
        let stop_market = Order::buy(1).market().stop(104).qty(2);
        let stop_market = stop_market.tif(TimeInForce::Ioc).to_command(1).unwrap();
        assert_eq!(
            (stop_market.kind, stop_market.price, stop_market.stop_price),
            (OrderKind::StopMarket, 0, 104)
        );
        let iceberg = Order::buy(1).limit(95).qty(20).display_qty(5);
        assert_eq!(iceberg.to_command(1).unwrap().display_qty, 5);
        let oco = Order::buy(1).limit(95).qty(2).oco_stop_limit(105, 106);
        let oco = oco.good_till(9_000).to_command(1).unwrap();
        assert_eq!(
            (
                oco.kind,
                oco.oco,
                oco.stop_price,
                oco.oco_stop_limit,
                oco.oco_stop_limit_price,
                oco.tif,
                oco.expire_time_ns
            ),
            (
                OrderKind::Limit,
                true,
                105,
                true,
                106,
                TimeInForce::Gtd,
                9_000
            )
        );
        assert!(matches!(
            Order::buy(1)
                .limit(95)
                .stop(96)
                .oco(105)
                .qty(1)
                .to_command(1),
            Err(ClientError::Usage(_))
        ));
        let restop = Replace::order(5).stop_price(99).to_command(2).unwrap();
        assert_eq!(
            (restop.has_stop_price, restop.stop_price, restop.has_qty),
            (true, 99, false)
        );
        let replace = Replace::order(5).qty(3).to_command(2).unwrap();
        assert_eq!(
            (
                replace.order_id,
                replace.has_price,
                replace.has_qty,
                replace.qty
            ),
            (5, false, true, 3)
        );
        assert!(matches!(
            Replace::order(5).to_command(2),
            Err(ClientError::Usage(_))
        ));
    }
}
