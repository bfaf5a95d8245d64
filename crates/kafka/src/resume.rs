//! The resume point: the last committed record of every partition, read back from Kafka with
//! `read_committed` (aborted records and transaction markers are never delivered, so stepping
//! back from the end finds the last committed event).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::record::parse_header;
use crate::topics::reader;
use crate::{
    KafkaConfig, KafkaOutputError, HEADER_INDEX, HEADER_SEQ, HEADER_VERSION, KAFKA_RECORD_VERSION,
};

/// The last committed event of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionResume {
    /// Its (sequence, index); `None` when the partition holds no committed event.
    pub last: Option<(u64, u32)>,
    /// Its record value, to check the replay against byte for byte.
    pub last_value: Vec<u8>,
    /// Its offset (-1 when none).
    pub offset: i64,
}

/// The last committed event of every partition of both topics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResumePoints {
    /// Per partition of the events topic.
    pub events: Vec<PartitionResume>,
    /// Per partition of the market-data topic.
    pub market_data: Vec<PartitionResume>,
}

impl ResumePoints {
    /// Every partition of both topics.
    pub fn all(&self) -> impl Iterator<Item = &PartitionResume> {
        self.events.iter().chain(&self.market_data)
    }

    /// The highest (sequence, index) any partition holds.
    pub fn max(&self) -> Option<(u64, u32)> {
        self.all().filter_map(|partition| partition.last).max()
    }
}

/// A partition's low and high watermarks. A broker that has just started may not yet lead its
/// partitions: that answer is retried (logged once) until `timeout`.
fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> KafkaResult<(i64, i64)> {
    let deadline = Instant::now() + timeout;
    let mut logged = false;
    loop {
        match consumer.fetch_watermarks(topic, partition, timeout) {
            Err(error)
                if matches!(
                    error.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::NotLeaderForPartition
                            | RDKafkaErrorCode::LeaderNotAvailable
                            | RDKafkaErrorCode::BrokerNotAvailable
                    )
                ) && Instant::now() < deadline =>
            {
                if !logged {
                    tracing::info!(
                        target: "ringmatch",
                        topic,
                        partition,
                        "kafka: the partition has no leader yet ({error}); retrying"
                    );
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            answer => return answer,
        }
    }
}

/// Reads the last committed record of every partition of both topics (read_committed). After
/// the producer initialised its transactions no transaction of an older producer is open, so
/// that read is final; before it (the check that runs before anything is fenced) a live
/// producer may still commit more.
pub fn read_resume_points(config: &KafkaConfig) -> Result<ResumePoints, KafkaOutputError> {
    read_resume_points_with(&reader(config)?, config)
}

/// [`read_resume_points`] with a reader that already exists (one kept connected, so the read
/// pays no connection and metadata set-up).
pub(crate) fn read_resume_points_with(
    consumer: &BaseConsumer,
    config: &KafkaConfig,
) -> Result<ResumePoints, KafkaOutputError> {
    read(consumer, config, None)
}

/// [`read_resume_points`] knowing what an `earlier` read of the same topics found; see
/// [`read_resume_points_after`].
pub fn read_resume_points_since(
    config: &KafkaConfig,
    earlier: &ResumePoints,
) -> Result<ResumePoints, KafkaOutputError> {
    read_resume_points_after(&reader(config)?, config, earlier)
}

/// [`read_resume_points_with`] again, knowing what an `earlier` read of the same topics
/// found: only what lies after each partition's earlier resume point is read, in one pass,
/// and a partition with no committed record after it keeps it. After a fence the tail of a
/// partition is often the aborted transaction of the producer fenced, which stepping back
/// from the end in windows would read through a window at a time.
pub(crate) fn read_resume_points_after(
    consumer: &BaseConsumer,
    config: &KafkaConfig,
    earlier: &ResumePoints,
) -> Result<ResumePoints, KafkaOutputError> {
    read(consumer, config, Some(earlier))
}

fn read(
    consumer: &BaseConsumer,
    config: &KafkaConfig,
    earlier: Option<&ResumePoints>,
) -> Result<ResumePoints, KafkaOutputError> {
    let earlier_point = |topic_index: usize, partition: i32| {
        earlier.and_then(|earlier| {
            [&earlier.events, &earlier.market_data][topic_index].get(partition as usize)
        })
    };
    let topics = [
        config.events_topic.as_str(),
        config.market_data_topic.as_str(),
    ];
    let mut found: Vec<Vec<Option<PartitionResume>>> =
        vec![vec![None; config.partitions as usize]; topics.len()];
    // (topic index, partition, low watermark, high watermark) of the partitions still to read.
    let mut pending = Vec::new();
    for (topic_index, topic) in topics.iter().enumerate() {
        for partition in 0..config.partitions {
            let (low, high) = watermarks(consumer, topic, partition, config.connect_timeout)
                .map_err(kafka_error(format!(
                    "reading the offsets of {topic:?} partition {partition}"
                )))?;
            pending.push((topic_index, partition, low, high));
        }
    }
    let mut window = 16i64;
    let mut first_round = true;
    while !pending.is_empty() {
        let mut assignment = TopicPartitionList::new();
        let mut reading = Vec::new();
        for &(topic_index, partition, low, high) in &pending {
            // In the first round, a partition the earlier read found is read from after it.
            let earlier_here = earlier_point(topic_index, partition).filter(|_| first_round);
            let start = earlier_here
                .map(|point| (point.offset + 1).clamp(low, high))
                .unwrap_or((high - window).max(low));
            if start >= high {
                found[topic_index][partition as usize] =
                    Some(earlier_here.cloned().unwrap_or(PartitionResume {
                        offset: -1,
                        ..PartitionResume::default()
                    }));
                continue;
            }
            assignment
                .add_partition_offset(topics[topic_index], partition, Offset::Offset(start))
                .map_err(kafka_error("assigning partitions".into()))?;
            reading.push((topic_index, partition, low, high, start));
        }
        if reading.is_empty() {
            break;
        }
        consumer
            .assign(&assignment)
            .map_err(kafka_error("assigning partitions".into()))?;
        let mut at_end = 0;
        let mut ended = vec![false; reading.len()];
        let mut last: Vec<Option<PartitionResume>> = vec![None; reading.len()];
        let slot = |topic: &str, partition: i32| {
            reading
                .iter()
                .position(|&(topic_index, p, ..)| topics[topic_index] == topic && p == partition)
        };
        let deadline = Instant::now() + config.connect_timeout;
        while at_end < reading.len() {
            if Instant::now() >= deadline {
                return Err(KafkaOutputError::Unreachable {
                    bootstrap: config.bootstrap.clone(),
                    timeout: config.connect_timeout,
                    detail: "reading the last records of the topics did not reach their end".into(),
                });
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    // The EOF error names the partition, not the topic: mark every reading
                    // partition with that number whose position reached its high watermark.
                    let positions = consumer
                        .position()
                        .map_err(kafka_error("reading positions".into()))?;
                    for (index, &(topic_index, p, _, high, _)) in reading.iter().enumerate() {
                        if p != partition || ended[index] {
                            continue;
                        }
                        let reached =
                            positions
                                .find_partition(topics[topic_index], p)
                                .and_then(|element| match element.offset() {
                                    Offset::Offset(offset) => Some(offset),
                                    _ => None,
                                });
                        if reached.is_some_and(|offset| offset >= high) {
                            ended[index] = true;
                            at_end += 1;
                        }
                    }
                }
                Some(Err(error)) => {
                    return Err(kafka_error("reading the last records".into())(error))
                }
                Some(Ok(message)) => {
                    let topic = message.topic().to_string();
                    let partition = message.partition();
                    if let Some(index) = slot(&topic, partition) {
                        last[index] = Some(parse_record(&topic, partition, &message)?);
                        if message.offset() + 1 >= reading[index].3 && !ended[index] {
                            ended[index] = true;
                            at_end += 1;
                        }
                    }
                }
            }
        }
        consumer
            .unassign()
            .map_err(kafka_error("unassigning".into()))?;
        pending.clear();
        for (index, (topic_index, partition, low, high, start)) in reading.into_iter().enumerate() {
            let earlier_here = earlier_point(topic_index, partition).filter(|_| first_round);
            match (last[index].take(), earlier_here) {
                (Some(resume), _) => found[topic_index][partition as usize] = Some(resume),
                // Nothing committed after the earlier read's point: it stands.
                (None, Some(point)) => {
                    found[topic_index][partition as usize] = Some(point.clone());
                }
                // Only aborted records or markers in the window: look further back.
                (None, None) if start > low => pending.push((topic_index, partition, low, high)),
                (None, None) => {
                    found[topic_index][partition as usize] = Some(PartitionResume {
                        offset: -1,
                        ..PartitionResume::default()
                    })
                }
            }
        }
        window = window.saturating_mul(8);
        first_round = false;
    }
    let mut found = found.into_iter().map(|partitions| {
        partitions
            .into_iter()
            .map(|resume| resume.expect("every partition was read"))
            .collect()
    });
    Ok(ResumePoints {
        events: found.next().expect("two topics"),
        market_data: found.next().expect("two topics"),
    })
}

fn kafka_error(context: String) -> impl FnOnce(KafkaError) -> KafkaOutputError {
    move |source| KafkaOutputError::Kafka { context, source }
}

fn parse_record(
    topic: &str,
    partition: i32,
    message: &impl Message,
) -> Result<PartitionResume, KafkaOutputError> {
    let bad = |problem: String| KafkaOutputError::BadRecord {
        topic: topic.to_string(),
        partition,
        offset: message.offset(),
        problem,
    };
    let mut seq = None;
    let mut index = None;
    let mut version = None;
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            match header.key {
                HEADER_SEQ => seq = parse_header::<u64>(header.value),
                HEADER_INDEX => index = parse_header::<u32>(header.value),
                HEADER_VERSION => version = parse_header::<u32>(header.value),
                _ => {}
            }
        }
    }
    match version {
        Some(KAFKA_RECORD_VERSION) => {}
        Some(other) => {
            return Err(bad(format!(
                "record layout version {other}; this build reads version {KAFKA_RECORD_VERSION}"
            )))
        }
        None => {
            return Err(bad(format!(
                "no {HEADER_VERSION} header: not a ringmatch record; the topic must hold only \
                 ringmatch events"
            )))
        }
    }
    let (Some(seq), Some(index)) = (seq, index) else {
        return Err(bad(format!(
            "missing or malformed {HEADER_SEQ} / {HEADER_INDEX} headers"
        )));
    };
    Ok(PartitionResume {
        last: Some((seq, index)),
        last_value: message.payload().unwrap_or_default().to_vec(),
        offset: message.offset(),
    })
}
