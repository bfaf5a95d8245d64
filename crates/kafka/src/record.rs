//! How an event becomes a Kafka record: topic, partition, key, value and headers
//! (`docs/kafka.md`).

use ringmatch_proto::{Event, EventType, EVENT_SIZE_BYTES};

/// Version of the Kafka record layout (headers and key), sent in [`HEADER_VERSION`]. The value
/// in binary format is the event record of `docs/wire-format.md`, which has its own version.
pub const KAFKA_RECORD_VERSION: u32 = 1;
/// Header: the sequence of the command that caused the event, ASCII decimal.
pub const HEADER_SEQ: &str = "ringmatch.seq";
/// Header: the event's index among its command's events, ASCII decimal.
pub const HEADER_INDEX: &str = "ringmatch.index";
/// Header: [`KAFKA_RECORD_VERSION`], ASCII decimal.
pub const HEADER_VERSION: &str = "ringmatch.version";

/// Which of the two topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Every event but price levels.
    Events = 0,
    /// Price-level updates.
    MarketData = 1,
}

/// The topic an event goes to.
pub fn topic_of(event: &Event) -> TopicKind {
    if event.event_type == EventType::Level {
        TopicKind::MarketData
    } else {
        TopicKind::Events
    }
}

/// The partition an event goes to: its instrument modulo the partition count, so each
/// instrument's events stay in order.
pub fn partition_of(event: &Event, partitions: i32) -> i32 {
    (event.instrument % partitions as u32) as i32
}

/// The record value format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// The 128-byte binary event record.
    Binary,
    /// One JSON object, as printed by `ringmatch feed`.
    Json,
}

/// Turns an event into a record value. The JSON form is given by the caller, so this crate
/// does not carry a second copy of it.
#[derive(Clone, Copy)]
pub enum EventEncoder {
    /// The binary event record.
    Binary,
    /// A JSON encoder.
    Json(fn(&Event) -> String),
}

impl EventEncoder {
    /// Writes the value of `event` into `out` (cleared first).
    pub fn encode(&self, event: &Event, out: &mut Vec<u8>) {
        out.clear();
        match self {
            EventEncoder::Binary => {
                let mut bytes = [0u8; EVENT_SIZE_BYTES];
                event.encode(&mut bytes);
                out.extend_from_slice(&bytes);
            }
            EventEncoder::Json(to_json) => out.extend_from_slice(to_json(event).as_bytes()),
        }
    }
}

impl std::fmt::Debug for EventEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventEncoder::Binary => f.write_str("Binary"),
            EventEncoder::Json(_) => f.write_str("Json"),
        }
    }
}

/// Parses an ASCII decimal header value.
pub(crate) fn parse_header<T: std::str::FromStr>(value: Option<&[u8]>) -> Option<T> {
    std::str::from_utf8(value?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmatch_proto::CommandType;

    #[test]
    fn levels_go_to_market_data_and_the_rest_to_events() {
        let level = Event::empty(EventType::Level, CommandType::Place);
        assert_eq!(topic_of(&level), TopicKind::MarketData);
        for event_type in [
            EventType::Accepted,
            EventType::Rejected,
            EventType::Fill,
            EventType::Cancelled,
            EventType::Replaced,
            EventType::Halted,
        ] {
            assert_eq!(
                topic_of(&Event::empty(event_type, CommandType::Place)),
                TopicKind::Events
            );
        }
    }

    #[test]
    fn partition_is_the_instrument_modulo_the_partition_count() {
        let mut event = Event::empty(EventType::Accepted, CommandType::Place);
        event.instrument = 7;
        assert_eq!(partition_of(&event, 4), 3);
        assert_eq!(partition_of(&event, 1), 0);
        event.instrument = u32::MAX;
        assert_eq!(partition_of(&event, 3), (u32::MAX % 3) as i32);
    }

    #[test]
    fn binary_values_are_the_event_record_and_decode_back() {
        let mut event = Event::empty(EventType::Fill, CommandType::Place);
        event.seq = 42;
        event.index = 3;
        event.price = -5;
        let mut value = Vec::new();
        EventEncoder::Binary.encode(&event, &mut value);
        assert_eq!(value.len(), EVENT_SIZE_BYTES);
        assert_eq!(Event::decode(&value).unwrap(), event);
    }

    #[test]
    fn header_values_are_ascii_decimal() {
        assert_eq!(parse_header::<u64>(Some(b"17")), Some(17));
        assert_eq!(parse_header::<u64>(Some(b"-1")), None);
        assert_eq!(parse_header::<u32>(Some(b"4294967296")), None);
        assert_eq!(parse_header::<u64>(None), None);
    }
}
