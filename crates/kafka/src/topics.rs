//! Start-up checks: the broker answers, and both topics exist with the configured partitions
//! (created when absent and `create_topics` is on).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::{KafkaConfig, KafkaOutputError};

/// The client settings every handle shares: brokers and client id. (`kafka.properties` are
/// producer properties and apply to the producer only.)
pub(crate) fn base_config(config: &KafkaConfig, role: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap)
        .set(
            "client.id",
            format!("ringmatch-{role}-{}", config.transactional_id),
        )
        .set("log_level", "3");
    client
}

/// A consumer for metadata and for reading the last records; never commits offsets.
pub(crate) fn reader(config: &KafkaConfig) -> Result<BaseConsumer, KafkaOutputError> {
    let mut client = base_config(config, "reader");
    client
        .set(
            "group.id",
            format!("ringmatch-reader-{}", config.transactional_id),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("allow.auto.create.topics", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10");
    client.create().map_err(|source| KafkaOutputError::Kafka {
        context: "creating the resume reader".into(),
        source,
    })
}

/// Partition counts of `topics` as the broker reports them (`None`: no such topic).
fn partition_counts(
    consumer: &BaseConsumer,
    config: &KafkaConfig,
    topics: &[&str],
    timeout: Duration,
) -> Result<Vec<Option<i32>>, KafkaOutputError> {
    let metadata =
        consumer
            .fetch_metadata(None, timeout)
            .map_err(|error| KafkaOutputError::Unreachable {
                bootstrap: config.bootstrap.clone(),
                timeout,
                detail: error.to_string(),
            })?;
    Ok(topics
        .iter()
        .map(|name| {
            metadata
                .topics()
                .iter()
                .find(|topic| topic.name() == *name && topic.error().is_none())
                .map(|topic| topic.partitions().len() as i32)
        })
        .collect())
}

/// Checks that the broker answers and both topics exist with `config.partitions`; creates
/// missing ones when allowed. Returns the names of the topics it created.
pub(crate) fn ensure_topics(
    consumer: &BaseConsumer,
    config: &KafkaConfig,
) -> Result<Vec<String>, KafkaOutputError> {
    let topics = [
        config.events_topic.as_str(),
        config.market_data_topic.as_str(),
    ];
    let counts = partition_counts(consumer, config, &topics, config.connect_timeout)?;
    let mut missing = Vec::new();
    for (topic, count) in topics.iter().zip(&counts) {
        match count {
            Some(found) if *found != config.partitions => {
                return Err(KafkaOutputError::PartitionMismatch {
                    topic: topic.to_string(),
                    found: *found,
                    configured: config.partitions,
                })
            }
            Some(_) => {}
            None if config.create_topics => missing.push(*topic),
            None => {
                return Err(KafkaOutputError::MissingTopic {
                    topic: topic.to_string(),
                    partitions: config.partitions,
                })
            }
        }
    }
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let admin: AdminClient<DefaultClientContext> =
        base_config(config, "admin")
            .create()
            .map_err(|source| KafkaOutputError::Kafka {
                context: "creating the admin client".into(),
                source,
            })?;
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|topic| {
            NewTopic::new(
                topic,
                config.partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(config.connect_timeout));
    let results = futures_executor::block_on(admin.create_topics(&new_topics, &options)).map_err(
        |source| KafkaOutputError::Kafka {
            context: format!("creating topics {missing:?}"),
            source,
        },
    )?;
    for result in results {
        match result {
            Ok(_) => {}
            // Another engine or an operator created it in the meantime: checked below.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaOutputError::Config(format!(
                    "creating Kafka topic {topic:?} with {} partitions and replication factor \
                     {} failed: {code}",
                    config.partitions, config.replication_factor
                )))
            }
        }
    }
    // Wait until the broker's metadata shows the new topics with the configured partitions.
    let deadline = Instant::now() + config.connect_timeout;
    loop {
        let counts = partition_counts(consumer, config, &topics, config.connect_timeout)?;
        if counts.iter().all(|count| *count == Some(config.partitions)) {
            return Ok(missing.iter().map(|topic| topic.to_string()).collect());
        }
        if Instant::now() >= deadline {
            return Err(KafkaOutputError::Config(format!(
                "created topics {missing:?}, but the broker did not show them with {} \
                 partitions within {:?}",
                config.partitions, config.connect_timeout
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
