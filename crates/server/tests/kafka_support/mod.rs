//! Helpers for the tests against a real Kafka broker: names, a read_committed reader, and the
//! events of a clean replay of the journal split the way the publisher splits them.

#![allow(dead_code)] // Each test file uses a different part.

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use ringmatch_kafka::{partition_of, topic_of, TopicKind, HEADER_INDEX, HEADER_SEQ};
use ringmatch_matcher::{Engine, EventSink};
use ringmatch_proto::Event;

/// The broker: `KAFKA_BOOTSTRAP` (scripts/test.sh starts one and sets it). Without it these
/// tests fail with a message rather than pass without a broker.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KAFKA_BOOTSTRAP is not set: these tests need a real Kafka broker. Run \
             scripts/test.sh (it starts one), or `scripts/kafka.sh start` and set \
             KAFKA_BOOTSTRAP=127.0.0.1:19092"
        )
    })
}

/// Waits until every matched event is committed to Kafka (the admin `/status` on `port`);
/// on a timeout, fails with the status and `log()`.
pub fn wait_committed(port: u16, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = crate::support::http(port, "GET", "/status", "").expect("status");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        if status["kafka"]["events_pending"] == 0
            && status["stages"]["published"] == status["stages"]["matched"]
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "events not committed: {status}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Topic names and a transactional id no other test uses.
pub struct Names {
    pub events: String,
    pub market_data: String,
    pub transactional_id: String,
}

impl Names {
    pub fn new(test: &str) -> Names {
        let unique = format!(
            "{test}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        );
        Names {
            events: format!("rm-test.{unique}.events"),
            market_data: format!("rm-test.{unique}.md"),
            transactional_id: format!("rm-test-{unique}"),
        }
    }

    /// A `[kafka]` section for these names.
    pub fn section(&self, bootstrap: &str, partitions: i32, extra: &str) -> String {
        format!(
            "[kafka]\nbootstrap = \"{bootstrap}\"\nevents_topic = \"{}\"\n\
             market_data_topic = \"{}\"\npartitions = {partitions}\ntransactional_id = \"{}\"\n\
             commit_interval_ms = 20\nconnect_timeout_ms = 15000\n{extra}\n",
            self.events, self.market_data, self.transactional_id
        )
    }
}

/// One record as a read_committed consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub index: u32,
    pub value: Vec<u8>,
}

/// Every committed record of every partition of `topic`, in offset order.
pub fn read_committed(bootstrap: &str, topic: &str, partitions: i32) -> Vec<Vec<Record>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("rm-test-reader-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    (0..partitions)
        .map(|partition| {
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .unwrap();
            consumer.assign(&assignment).unwrap();
            let mut records = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "reading {topic}/{partition} timed out"
                );
                match consumer.poll(Duration::from_millis(500)) {
                    None => continue,
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    Some(Err(error)) => panic!("reading {topic}/{partition}: {error}"),
                    Some(Ok(message)) => {
                        let headers = message.headers().expect("headers");
                        let header = |key: &str| -> String {
                            let header = headers
                                .iter()
                                .find(|header| header.key == key)
                                .unwrap_or_else(|| panic!("no {key} header"));
                            String::from_utf8(header.value.unwrap().to_vec()).unwrap()
                        };
                        records.push(Record {
                            seq: header(HEADER_SEQ).parse().unwrap(),
                            index: header(HEADER_INDEX).parse().unwrap(),
                            value: message.payload().unwrap_or_default().to_vec(),
                        });
                    }
                }
            }
            consumer.unassign().unwrap();
            records
        })
        .collect()
}

struct Collect(Vec<Event>);

impl EventSink for Collect {
    fn push(&mut self, event: &Event) {
        self.0.push(*event);
    }
}

/// The events of a clean replay of the whole journal of the service configured by `config`.
pub fn clean_replay(config: &Path) -> Vec<Event> {
    let journal_dir = ringmatch_server::config::Config::load(config)
        .unwrap()
        .journal_dir();
    clean_replay_of(config, &journal_dir)
}

/// [`clean_replay`] of the journal segments in `journal_dir` (from sequence 1).
pub fn clean_replay_of(config: &Path, journal_dir: &Path) -> Vec<Event> {
    let config = ringmatch_server::config::Config::load(config).unwrap();
    let mut engine = Engine::new(config.matcher()).unwrap();
    let mut sink = Collect(Vec::new());
    for record in ringmatch_journal::JournalReader::open(journal_dir, 1).unwrap() {
        let record = record.unwrap();
        engine.apply(record.seq, &record.command, &mut sink);
    }
    sink.0
}

/// `events` split per topic and partition as the publisher splits them, encoded by `encode`.
pub fn split(
    events: &[Event],
    partitions: i32,
    encode: impl Fn(&Event) -> Vec<u8>,
) -> [Vec<Vec<Record>>; 2] {
    let mut out = [
        vec![Vec::new(); partitions as usize],
        vec![Vec::new(); partitions as usize],
    ];
    for event in events {
        let topic = match topic_of(event) {
            TopicKind::Events => 0,
            TopicKind::MarketData => 1,
        };
        out[topic][partition_of(event, partitions) as usize].push(Record {
            seq: event.seq,
            index: event.index,
            value: encode(event),
        });
    }
    out
}

/// Asserts that both topics hold exactly the events of a clean replay of the journal, each
/// once, in order, byte for byte. Returns the number of events.
pub fn assert_exactly_once(
    bootstrap: &str,
    names: &Names,
    partitions: i32,
    config: &Path,
) -> usize {
    assert_exactly_once_as(bootstrap, names, partitions, clean_replay(config))
}

/// [`assert_exactly_once`] against the events of a replay made elsewhere.
pub fn assert_exactly_once_as(
    bootstrap: &str,
    names: &Names,
    partitions: i32,
    replay: Vec<Event>,
) -> usize {
    let expected = split(&replay, partitions, |event| event.to_bytes().to_vec());
    for (topic_index, topic) in [&names.events, &names.market_data].into_iter().enumerate() {
        let found = read_committed(bootstrap, topic, partitions);
        for partition in 0..partitions as usize {
            let want = &expected[topic_index][partition];
            let got = &found[partition];
            if got != want {
                let first_difference = got
                    .iter()
                    .zip(want)
                    .position(|(a, b)| a != b)
                    .unwrap_or(got.len().min(want.len()));
                panic!(
                    "{topic} partition {partition}: {} records in Kafka, {} in a clean replay; \
                     first difference at position {first_difference}: Kafka {:?}, replay {:?}",
                    got.len(),
                    want.len(),
                    got.get(first_difference).map(|r| (r.seq, r.index)),
                    want.get(first_difference).map(|r| (r.seq, r.index)),
                );
            }
        }
    }
    replay.len()
}
