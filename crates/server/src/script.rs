//! The scripting format: commands and events as JSON lines (see `docs/scripting.md`).
//!
//! Parsing is strict: an unknown field, a field that does not apply to the command type, a
//! missing required field or a bad enum name is an error that says which, so a script never
//! means something other than what it says.

use std::fmt::Write as _;
use std::io::{BufRead, Write};

use ringmatch_matcher::{Engine, EventSink};
use ringmatch_proto::{
    Command, CommandType, Event, EventType, OrderKind, Reason, SelfTradePrevention, Side,
    TimeInForce,
};
use serde::Deserialize;

/// One JSON command line, before checking.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCommand {
    #[serde(rename = "type")]
    command_type: String,
    account: Option<u32>,
    instrument: Option<u32>,
    client_order_id: Option<u64>,
    order_id: Option<u64>,
    side: Option<String>,
    kind: Option<String>,
    tif: Option<String>,
    price: Option<i64>,
    qty: Option<u64>,
    post_only: Option<bool>,
    stp: Option<String>,
    possible_resend: Option<bool>,
    resend_floor: Option<u64>,
    stop_price: Option<i64>,
    display_qty: Option<u64>,
    expire_time_ns: Option<u64>,
    oco_stop_price: Option<i64>,
    oco_stop_limit_price: Option<i64>,
    timestamp_ns: Option<u64>,
}

impl JsonCommand {
    /// Names of the fields that are present.
    fn present_fields(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        let checks: [(&'static str, bool); 19] = [
            ("account", self.account.is_some()),
            ("instrument", self.instrument.is_some()),
            ("client_order_id", self.client_order_id.is_some()),
            ("order_id", self.order_id.is_some()),
            ("side", self.side.is_some()),
            ("kind", self.kind.is_some()),
            ("tif", self.tif.is_some()),
            ("price", self.price.is_some()),
            ("qty", self.qty.is_some()),
            ("post_only", self.post_only.is_some()),
            ("stp", self.stp.is_some()),
            ("possible_resend", self.possible_resend.is_some()),
            ("resend_floor", self.resend_floor.is_some()),
            ("stop_price", self.stop_price.is_some()),
            ("display_qty", self.display_qty.is_some()),
            ("expire_time_ns", self.expire_time_ns.is_some()),
            ("oco_stop_price", self.oco_stop_price.is_some()),
            ("oco_stop_limit_price", self.oco_stop_limit_price.is_some()),
            ("timestamp_ns", self.timestamp_ns.is_some()),
        ];
        for (name, present) in checks {
            if present {
                fields.push(name);
            }
        }
        fields
    }
}

fn allowed_fields(command_type: CommandType) -> &'static [&'static str] {
    match command_type {
        CommandType::Place => &[
            "account",
            "instrument",
            "client_order_id",
            "side",
            "kind",
            "tif",
            "price",
            "qty",
            "post_only",
            "stp",
            "possible_resend",
            "resend_floor",
            "stop_price",
            "display_qty",
            "expire_time_ns",
            "oco_stop_price",
            "oco_stop_limit_price",
            "timestamp_ns",
        ],
        CommandType::Cancel => &[
            "account",
            "instrument",
            "client_order_id",
            "order_id",
            "timestamp_ns",
        ],
        CommandType::Replace => &[
            "account",
            "instrument",
            "client_order_id",
            "order_id",
            "price",
            "qty",
            "stop_price",
            "timestamp_ns",
        ],
        CommandType::MassCancel => &["account", "instrument", "timestamp_ns"],
        CommandType::Halt | CommandType::Resume => &["instrument", "account", "timestamp_ns"],
        CommandType::Snapshot => &["timestamp_ns"],
        CommandType::Time => &["timestamp_ns"],
        CommandType::OpenOrders => &["account", "instrument", "timestamp_ns"],
        CommandType::Term => &[],
    }
}

fn required<T>(value: Option<T>, field: &str, command_type: CommandType) -> Result<T, String> {
    value.ok_or_else(|| format!("`{command_type}` needs field `{field}`"))
}

fn enum_value<T>(
    text: Option<&str>,
    field: &str,
    parse: fn(&str) -> Option<T>,
    all: &[T],
    name: fn(&T) -> &'static str,
    default: T,
) -> Result<T, String> {
    match text {
        None => Ok(default),
        Some(text) => parse(text).ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(name).collect();
            format!(
                "bad `{field}` {text:?}: expected one of {}",
                names.join(", ")
            )
        }),
    }
}

/// Parses one JSON command line into a command.
pub fn parse_command(line: &str) -> Result<Command, String> {
    let json: JsonCommand = serde_json::from_str(line).map_err(|error| error.to_string())?;
    let command_type = CommandType::from_name(&json.command_type).ok_or_else(|| {
        let names: Vec<&str> = CommandType::ALL.iter().map(|t| t.name()).collect();
        format!(
            "unknown command type {:?}: expected one of {}",
            json.command_type,
            names.join(", ")
        )
    })?;
    if command_type == CommandType::Term {
        return Err("`term` records are written by the cluster's leader, never by a script".into());
    }
    let allowed = allowed_fields(command_type);
    if let Some(field) = json
        .present_fields()
        .into_iter()
        .find(|field| !allowed.contains(field))
    {
        return Err(format!(
            "field `{field}` does not apply to `{command_type}`"
        ));
    }
    let mut command = Command::empty(command_type);
    command.timestamp_ns = json.timestamp_ns.unwrap_or(0);
    command.client_order_id = json.client_order_id.unwrap_or(0);
    command.order_id = json.order_id.unwrap_or(0);
    command.instrument = json.instrument.unwrap_or(0);
    command.account = json.account.unwrap_or(0);
    match command_type {
        CommandType::Place => {
            command.account = required(json.account, "account", command_type)?;
            command.instrument = required(json.instrument, "instrument", command_type)?;
            command.side = enum_value(
                Some(required(json.side.as_deref(), "side", command_type)?),
                "side",
                Side::from_name,
                Side::ALL,
                |v| v.name(),
                Side::Buy,
            )?;
            command.kind = enum_value(
                json.kind.as_deref(),
                "kind",
                OrderKind::from_name,
                OrderKind::ALL,
                |v| v.name(),
                OrderKind::Limit,
            )?;
            let default_tif = match command.kind {
                OrderKind::Limit | OrderKind::StopLimit => TimeInForce::Gtc,
                OrderKind::Market | OrderKind::StopMarket => TimeInForce::Ioc,
            };
            command.tif = enum_value(
                json.tif.as_deref(),
                "tif",
                TimeInForce::from_name,
                TimeInForce::ALL,
                |v| v.name(),
                default_tif,
            )?;
            command.stp = enum_value(
                json.stp.as_deref(),
                "stp",
                SelfTradePrevention::from_name,
                SelfTradePrevention::ALL,
                |v| v.name(),
                SelfTradePrevention::None,
            )?;
            command.post_only = json.post_only.unwrap_or(false);
            command.qty = required(json.qty, "qty", command_type)?;
            command.price = match command.kind {
                OrderKind::Limit | OrderKind::StopLimit => {
                    required(json.price, "price", command_type)?
                }
                kind if json.price.is_some() => {
                    return Err(format!("a `{kind}` order takes no `price`"))
                }
                _ => 0,
            };
            command.stop_price = match command.kind {
                OrderKind::StopMarket | OrderKind::StopLimit => {
                    required(json.stop_price, "stop_price", command_type)?
                }
                kind if json.stop_price.is_some() => {
                    return Err(format!("a `{kind}` order takes no `stop_price`"))
                }
                _ => 0,
            };
            command.display_qty = json.display_qty.unwrap_or(0);
            command.expire_time_ns = json.expire_time_ns.unwrap_or(0);
            match (json.oco_stop_price, json.oco_stop_limit_price) {
                (Some(_), _) if command.kind != OrderKind::Limit => {
                    return Err(format!(
                        "an OCO (`oco_stop_price`) is a `limit` order, not a `{}` one",
                        command.kind
                    ))
                }
                (Some(stop_price), stop_limit_price) => {
                    command.oco = true;
                    command.stop_price = stop_price;
                    if let Some(price) = stop_limit_price {
                        command.oco_stop_limit = true;
                        command.oco_stop_limit_price = price;
                    }
                }
                (None, Some(_)) => {
                    return Err("`oco_stop_limit_price` goes with `oco_stop_price`".into())
                }
                (None, None) => {}
            }
            match (json.possible_resend, json.resend_floor) {
                (Some(true), floor) => command = command.as_resend(floor.unwrap_or(0)),
                (_, Some(_)) => {
                    return Err("`resend_floor` goes with `\"possible_resend\": true`".into())
                }
                _ => {}
            }
        }
        CommandType::Cancel | CommandType::Replace => {
            command.account = required(json.account, "account", command_type)?;
            if json.order_id.is_none() && json.client_order_id.is_none() {
                return Err(format!(
                    "`{command_type}` needs `order_id` or `client_order_id`"
                ));
            }
            if json.order_id.is_some() && json.client_order_id.is_some() {
                return Err(format!(
                    "`{command_type}` takes `order_id` or `client_order_id`, not both"
                ));
            }
            if command_type == CommandType::Replace {
                command.has_price = json.price.is_some();
                command.has_qty = json.qty.is_some();
                command.has_stop_price = json.stop_price.is_some();
                command.price = json.price.unwrap_or(0);
                command.qty = json.qty.unwrap_or(0);
                command.stop_price = json.stop_price.unwrap_or(0);
            }
        }
        CommandType::MassCancel | CommandType::OpenOrders => {
            command.account = required(json.account, "account", command_type)?;
        }
        CommandType::Halt | CommandType::Resume => {
            command.instrument = required(json.instrument, "instrument", command_type)?;
        }
        CommandType::Time => {
            command.timestamp_ns = required(json.timestamp_ns, "timestamp_ns", command_type)?;
        }
        CommandType::Snapshot | CommandType::Term => {}
    }
    Ok(command)
}

/// Renders a command as a JSON line (the inverse of [`parse_command`]).
pub fn command_to_json(command: &Command) -> String {
    let mut out = JsonObject::new();
    out.str("type", command.command_type.name());
    match command.command_type {
        CommandType::Place => {
            out.num("account", command.account);
            out.num("instrument", command.instrument);
            out.num_nonzero("client_order_id", command.client_order_id);
            out.str("side", command.side.name());
            out.str("kind", command.kind.name());
            out.str("tif", command.tif.name());
            if command.kind.has_limit() {
                out.num("price", command.price);
            }
            if command.kind.is_stop() {
                out.num("stop_price", command.stop_price);
            }
            out.num("qty", command.qty);
            out.num_nonzero("display_qty", command.display_qty);
            out.num_nonzero("expire_time_ns", command.expire_time_ns);
            if command.oco {
                out.num("oco_stop_price", command.stop_price);
            }
            if command.oco_stop_limit {
                out.num("oco_stop_limit_price", command.oco_stop_limit_price);
            }
            if command.post_only {
                out.raw("post_only", "true");
            }
            if command.stp != SelfTradePrevention::None {
                out.str("stp", command.stp.name());
            }
            if let Some(floor) = command.resend_floor() {
                out.raw("possible_resend", "true");
                out.num("resend_floor", floor);
            }
        }
        CommandType::Cancel | CommandType::Replace => {
            out.num("account", command.account);
            out.num_nonzero("instrument", u64::from(command.instrument));
            if command.order_id != 0 {
                out.num("order_id", command.order_id);
            } else {
                out.num("client_order_id", command.client_order_id);
            }
            if command.has_price {
                out.num("price", command.price);
            }
            if command.has_qty {
                out.num("qty", command.qty);
            }
            if command.has_stop_price {
                out.num("stop_price", command.stop_price);
            }
        }
        CommandType::MassCancel | CommandType::OpenOrders => {
            out.num("account", command.account);
            out.num_nonzero("instrument", u64::from(command.instrument));
        }
        CommandType::Halt | CommandType::Resume => {
            out.num("instrument", command.instrument);
        }
        CommandType::Snapshot | CommandType::Time => {}
        CommandType::Term => out.num("term", command.order_id),
    }
    out.num_nonzero("timestamp_ns", command.timestamp_ns);
    out.finish()
}

/// Builds one JSON object with fields in insertion order. Keys and string values here are
/// fixed snake-case names, so they never need escaping.
struct JsonObject {
    text: String,
}

impl JsonObject {
    fn new() -> JsonObject {
        JsonObject {
            text: String::from("{"),
        }
    }

    fn key(&mut self, key: &str) {
        if self.text.len() > 1 {
            self.text.push(',');
        }
        let _ = write!(self.text, "\"{key}\":");
    }

    fn raw(&mut self, key: &str, value: &str) {
        self.key(key);
        self.text.push_str(value);
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        let _ = write!(self.text, "\"{value}\"");
    }

    fn num(&mut self, key: &str, value: impl std::fmt::Display) {
        self.key(key);
        let _ = write!(self.text, "{value}");
    }

    fn num_nonzero(&mut self, key: &str, value: u64) {
        if value != 0 {
            self.num(key, value);
        }
    }

    fn finish(mut self) -> String {
        self.text.push('}');
        self.text
    }
}

/// Renders an event as one JSON line (without the newline).
pub fn event_to_json(event: &Event) -> String {
    let mut out = JsonObject::new();
    out.num("seq", event.seq);
    out.str("type", event.event_type.name());
    match event.reason {
        Reason::None => {}
        Reason::Reject(reason) => out.str("reason", reason.name()),
        Reason::Cancel(reason) => out.str("reason", reason.name()),
    }
    match event.event_type {
        EventType::Accepted
        | EventType::Cancelled
        | EventType::Replaced
        | EventType::OrderStatus
        | EventType::Triggered => {
            out.num("instrument", event.instrument);
            out.num("account", event.account);
            out.num("order_id", event.order_id);
            out.num_nonzero("client_order_id", event.client_order_id);
            if let Some(side) = event.side {
                out.str("side", side.name());
            }
            out.num("price", event.price);
            out.num("qty", event.qty);
            if matches!(
                event.event_type,
                EventType::Replaced | EventType::OrderStatus
            ) {
                out.num("remaining", event.remaining);
            }
        }
        EventType::Rejected => {
            out.str("command", event.command_type.name());
            out.num_nonzero("instrument", u64::from(event.instrument));
            out.num_nonzero("account", u64::from(event.account));
            out.num_nonzero("order_id", event.order_id);
            out.num_nonzero("client_order_id", event.client_order_id);
            if let Some(side) = event.side {
                out.str("side", side.name());
            }
            // A rejected place echoes its price and quantity even when zero (that may be
            // why it was rejected); other commands echo only what they carried.
            if event.command_type == CommandType::Place {
                out.num("price", event.price);
                out.num("qty", event.qty);
            } else {
                if event.price != 0 {
                    out.num("price", event.price);
                }
                out.num_nonzero("qty", event.qty);
            }
        }
        EventType::Fill => {
            out.num("instrument", event.instrument);
            if let Some(side) = event.side {
                out.str("side", side.name());
            }
            out.num("price", event.price);
            out.num("qty", event.qty);
            out.num("taker_account", event.account);
            out.num("taker_order_id", event.order_id);
            out.num_nonzero("taker_client_order_id", event.client_order_id);
            out.num("taker_remaining", event.remaining);
            out.num("maker_account", event.maker_account);
            out.num("maker_order_id", event.maker_order_id);
            out.num_nonzero("maker_client_order_id", event.maker_client_order_id);
            out.num("maker_remaining", event.maker_remaining);
        }
        EventType::Resent => {
            out.num("instrument", event.instrument);
            out.num("account", event.account);
            out.num("original_seq", event.original_seq);
            out.num_nonzero("order_id", event.order_id);
            out.num("client_order_id", event.client_order_id);
            if let Some(side) = event.side {
                out.str("side", side.name());
            }
            out.num("price", event.price);
            out.num("qty", event.qty);
            out.num("remaining", event.remaining);
        }
        EventType::Level => {
            out.num("instrument", event.instrument);
            if let Some(side) = event.side {
                out.str("side", side.name());
            }
            out.num("price", event.price);
            out.num("qty", event.qty);
        }
        EventType::Halted | EventType::Resumed => {
            out.num("instrument", event.instrument);
        }
        EventType::MassCancelled | EventType::OpenOrdersEnd => {
            out.num("account", event.account);
            out.num_nonzero("instrument", u64::from(event.instrument));
            out.num("count", event.qty);
        }
    }
    if let Some(kind) = event.stop_kind {
        out.str("kind", kind.name());
        out.num("stop_price", event.stop_price);
    }
    out.num_nonzero("display_qty", event.display_qty);
    if let Some(leg) = event.oco_leg {
        out.str("oco_leg", leg.name());
    }
    out.num_nonzero("timestamp_ns", event.timestamp_ns);
    out.finish()
}

/// A malformed input line.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// A line is not a valid command; commands after it were not applied.
    #[error("line {line_number}: {message} (nothing from this line on was applied)")]
    Malformed {
        /// 1-based line number in the input.
        line_number: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading input or writing output failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes each event as a JSON line.
struct JsonLinesSink<'a, W: Write> {
    output: &'a mut W,
    error: Option<std::io::Error>,
}

impl<W: Write> EventSink for JsonLinesSink<'_, W> {
    fn push(&mut self, event: &Event) {
        if self.error.is_none() {
            if let Err(error) = writeln!(self.output, "{}", event_to_json(event)) {
                self.error = Some(error);
            }
        }
    }
}

/// Runs JSON-lines commands from `input` through `engine`, writing event JSON lines to
/// `output`. Blank lines and lines starting with `#` are skipped; `seq` counts commands from 1.
/// Stops at the first malformed line, applying nothing from it on. Returns commands applied.
pub fn feed<R: BufRead, W: Write>(
    engine: &mut Engine,
    input: R,
    output: &mut W,
) -> Result<u64, FeedError> {
    let mut seq = 0u64;
    for (index, line) in input.lines().enumerate() {
        let line = line?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let command = parse_command(trimmed).map_err(|message| FeedError::Malformed {
            line_number: index + 1,
            message,
        })?;
        seq += 1;
        let mut sink = JsonLinesSink {
            output,
            error: None,
        };
        engine.apply(seq, &command, &mut sink);
        if let Some(error) = sink.error {
            return Err(error.into());
        }
    }
    output.flush()?;
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_json() {
        let lines = [
            r#"{"type":"place","account":7,"instrument":1,"client_order_id":3,"side":"sell","kind":"limit","tif":"fok","price":101,"qty":5,"post_only":true,"stp":"cancel_both","timestamp_ns":9}"#,
            r#"{"type":"place","account":7,"instrument":1,"side":"buy","kind":"market","tif":"ioc","qty":5}"#,
            r#"{"type":"place","account":7,"instrument":1,"client_order_id":4,"side":"buy","kind":"limit","tif":"gtc","price":100,"qty":5,"possible_resend":true,"resend_floor":12}"#,
            r#"{"type":"place","account":7,"instrument":1,"client_order_id":5,"side":"sell","kind":"limit","tif":"day","price":105,"qty":5,"oco_stop_price":95,"oco_stop_limit_price":94}"#,
            r#"{"type":"place","account":7,"instrument":1,"side":"buy","kind":"limit","tif":"gtc","price":95,"qty":5,"oco_stop_price":105}"#,
            r#"{"type":"cancel","account":7,"order_id":4}"#,
            r#"{"type":"replace","account":7,"client_order_id":3,"price":99}"#,
            r#"{"type":"replace","account":7,"order_id":3,"qty":2}"#,
            r#"{"type":"mass_cancel","account":7,"instrument":2}"#,
            r#"{"type":"halt","instrument":2}"#,
            r#"{"type":"resume","instrument":2}"#,
        ];
        for line in lines {
            let command = parse_command(line).unwrap();
            assert_eq!(command_to_json(&command), line);
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let limit = parse_command(
            r#"{"type":"place","account":1,"instrument":1,"side":"buy","price":5,"qty":1}"#,
        )
        .unwrap();
        assert_eq!(
            (limit.kind, limit.tif, limit.stp),
            (
                OrderKind::Limit,
                TimeInForce::Gtc,
                SelfTradePrevention::None
            )
        );
        let market = parse_command(
            r#"{"type":"place","account":1,"instrument":1,"side":"buy","kind":"market","qty":1}"#,
        )
        .unwrap();
        assert_eq!(market.tif, TimeInForce::Ioc);
    }

    #[test]
    fn malformed_commands_say_what_is_wrong() {
        let cases = [
            ("{", "EOF"),
            (r#"{"type":"fly"}"#, "unknown command type"),
            (
                r#"{"type":"place","account":1,"instrument":1,"side":"up","price":1,"qty":1}"#,
                "bad `side`",
            ),
            (
                r#"{"type":"place","account":1,"instrument":1,"side":"buy","qty":1}"#,
                "needs field `price`",
            ),
            (
                r#"{"type":"place","account":1,"instrument":1,"side":"buy","price":1,"qty":1,"colour":1}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"type":"cancel","account":1,"side":"buy","order_id":1}"#,
                "field `side` does not apply",
            ),
            (
                r#"{"type":"cancel","account":1}"#,
                "needs `order_id` or `client_order_id`",
            ),
            (
                r#"{"type":"place","account":1,"instrument":1,"side":"buy","price":-1,"qty":-1}"#,
                "invalid value",
            ),
            (
                r#"{"type":"place","account":1,"instrument":1,"side":"buy","kind":"market","price":3,"qty":1}"#,
                "takes no `price`",
            ),
            (r#"{"type":"term"}"#, "written by the cluster's leader"),
            (
                r#"{"type":"place","account":1,"instrument":1,"side":"buy","kind":"stop_market","stop_price":3,"qty":1,"oco_stop_price":4}"#,
                "an OCO (`oco_stop_price`) is a `limit` order",
            ),
            (
                r#"{"type":"place","account":1,"instrument":1,"side":"buy","price":3,"qty":1,"oco_stop_limit_price":4}"#,
                "`oco_stop_limit_price` goes with `oco_stop_price`",
            ),
        ];
        for (line, expected) in cases {
            let error = parse_command(line).unwrap_err();
            assert!(error.contains(expected), "{line}: {error}");
        }
    }
}
