//! `KafkaOutput` and the resume reader against a real broker (`KAFKA_BOOTSTRAP`;
//! scripts/test.sh starts one): the resume point steps back past an aborted transaction and
//! its markers, a reopened output skips exactly what Kafka holds, a replay that differs at the
//! resume point stops, Kafka ahead of the journal is refused, a prepared output fences
//! nobody until it opens, and a read that starts from an earlier read's points finds what a
//! whole read finds.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use ringmatch_kafka::{
    read_resume_points, read_resume_points_since, EventEncoder, KafkaConfig, KafkaOutput,
    KafkaOutputError, HEADER_INDEX, HEADER_SEQ, HEADER_VERSION,
};
use ringmatch_pipeline::{OutputSink, ResumableOutput};
use ringmatch_proto::{CommandType, Event, EventType};

fn config(test: &str) -> KafkaConfig {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KAFKA_BOOTSTRAP is not set: these tests need a real Kafka broker. Run \
             scripts/test.sh (it starts one), or `scripts/kafka.sh start` and set \
             KAFKA_BOOTSTRAP=127.0.0.1:19092"
        )
    });
    let unique = format!(
        "{test}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let mut config = KafkaConfig::new(&bootstrap);
    config.events_topic = format!("rm-kafka-test.{unique}.events");
    config.market_data_topic = format!("rm-kafka-test.{unique}.md");
    config.transactional_id = format!("rm-kafka-test-{unique}");
    config.partitions = 2;
    config.connect_timeout = Duration::from_secs(15);
    config
}

/// Event `index` of command `seq` on `instrument`.
fn event(seq: u64, index: u32, instrument: u32) -> Event {
    let mut event = Event::empty(EventType::Accepted, CommandType::Place);
    event.seq = seq;
    event.index = index;
    event.instrument = instrument;
    event.price = 100 + seq as i64;
    event
}

/// Commands 1..=count, two events each, alternating instruments 0 and 1.
fn events(count: u64) -> Vec<Event> {
    (1..=count)
        .flat_map(|seq| {
            [
                event(seq, 0, (seq % 2) as u32),
                event(seq, 1, (seq % 2) as u32),
            ]
        })
        .collect()
}

fn publish(output: &mut KafkaOutput, events: &[Event]) {
    for event in events {
        output.push(event);
    }
    output.end_of_batch();
}

/// A transactional producer of the test's topics with `transactional_id`, transactions
/// initialised.
fn raw_producer(config: &KafkaConfig, transactional_id: &str) -> BaseProducer {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap)
        .set("transactional.id", transactional_id)
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer
}

/// Sends event 0 of commands `seqs` (instrument 0) to partition 0 of the events topic, with
/// the headers the engine writes, and waits for the broker to have them.
fn send_events(producer: &BaseProducer, config: &KafkaConfig, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        let value = event(seq, 0, 0).to_bytes();
        let seq_text = seq.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_SEQ,
                value: Some(seq_text.as_bytes()),
            })
            .insert(Header {
                key: HEADER_INDEX,
                value: Some(b"0".as_slice()),
            })
            .insert(Header {
                key: HEADER_VERSION,
                value: Some(b"1".as_slice()),
            });
        producer
            .send(
                BaseRecord::<[u8], [u8]>::to(&config.events_topic)
                    .partition(0)
                    .payload(value.as_slice())
                    .headers(headers),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Writes `count` records to partition 0 of the events topic in a transaction that is then
/// aborted, from another transactional producer.
fn aborted_transaction(config: &KafkaConfig, first_seq: u64, count: u64) {
    let producer = raw_producer(config, &format!("{}-aborter", config.transactional_id));
    producer.begin_transaction().unwrap();
    send_events(&producer, config, first_seq..first_seq + count);
    producer.abort_transaction(Duration::from_secs(30)).unwrap();
}

/// What a cluster's follower does: it prepares the output while the leader's producer
/// publishes, and that fences nothing; when it opens the prepared output (its promotion) it
/// fences the old producer, whose open transaction is aborted, and resumes after the last
/// committed event.
#[test]
fn a_prepared_output_fences_nobody_until_it_opens() {
    let config = config("prepared");
    // Preparing on a fresh cluster creates the topics (and fences nothing: nobody is there).
    drop(KafkaOutput::prepare(&config).unwrap());
    let leader = raw_producer(&config, &config.transactional_id);
    leader.begin_transaction().unwrap();
    send_events(&leader, &config, 1..3);
    leader.commit_transaction(Duration::from_secs(30)).unwrap();
    leader.begin_transaction().unwrap();
    send_events(&leader, &config, 3..5);

    let prepared = KafkaOutput::prepare(&config).unwrap();
    // The live producer still owns the transactional id: its open transaction commits.
    leader.commit_transaction(Duration::from_secs(30)).unwrap();
    // Then it dies with a transaction open.
    leader.begin_transaction().unwrap();
    send_events(&leader, &config, 5..8);

    let (output, report) = prepared.open(EventEncoder::Binary, 100).unwrap();
    assert!(report.prepared_ahead);
    // The dead producer's transaction was aborted: commands 5..7 are not in Kafka.
    assert_eq!(report.resume.max(), Some((4, 0)));
    assert!(output.holds_events());
    let fenced = leader
        .commit_transaction(Duration::from_secs(30))
        .expect_err("the old producer must be fenced");
    assert!(ringmatch_kafka::is_fenced(&fenced), "{fenced}");
    drop(output);
    assert_eq!(read_resume_points(&config).unwrap().max(), Some((4, 0)));

    // Prepared on a journal behind Kafka: refused at the open, before any fencing.
    let prepared = KafkaOutput::prepare(&config).unwrap();
    match prepared.open(EventEncoder::Binary, 4) {
        Err(KafkaOutputError::AheadOfJournal { seq, .. }) => assert_eq!(seq, 4),
        Err(other) => panic!("expected AheadOfJournal, got {other}"),
        Ok(_) => panic!("expected AheadOfJournal, got an output"),
    }
}

/// The resume points once partition 0 of the events topic shows `last`: a commit returns
/// before its markers are written (the coordinator writes them after), so a read_committed
/// reader may see the committed records a moment later. A fence, unlike this test's
/// producer, waits for them: the coordinator answers "concurrent transactions" until the
/// transaction before it is complete.
fn settled(config: &KafkaConfig, last: Option<(u64, u32)>) -> ringmatch_kafka::ResumePoints {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let points = read_resume_points(config).unwrap();
        if points.events[0].last == last {
            return points;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "partition 0 never showed {last:?}: {points:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The read after a fence starts where the read before it ended (the promotion's second
/// read): whatever was committed or aborted in between, and on partitions untouched since,
/// it finds what a whole read from the end finds.
#[test]
fn a_read_since_an_earlier_one_finds_what_a_whole_read_finds() {
    let config = config("since");
    let (mut output, _) = KafkaOutput::open(&config, EventEncoder::Binary, 1).unwrap();
    publish(&mut output, &events(6));
    drop(output);
    let producer = raw_producer(&config, &format!("{}-writer", config.transactional_id));
    let mut earlier = settled(&config, Some((6, 1)));
    // Each step changes partition 0 of the events topic (the others stay as they were) and
    // checks the read since the previous points against a whole read; the last event that
    // partition holds committed after each step is the fourth value.
    type Step = (&'static str, bool, std::ops::Range<u64>, (u64, u32));
    let steps: [Step; 4] = [
        ("nothing new", false, 0..0, (6, 1)),
        ("an aborted transaction", false, 100..140, (6, 1)),
        ("a committed one after it", true, 200..203, (202, 0)),
        (
            "aborted again, longer than the reader's first windows",
            false,
            300..500,
            (202, 0),
        ),
    ];
    for (what, commit, seqs, last) in steps {
        if !seqs.is_empty() {
            producer.begin_transaction().unwrap();
            send_events(&producer, &config, seqs.clone());
            if commit {
                producer
                    .commit_transaction(Duration::from_secs(30))
                    .unwrap();
            } else {
                producer.abort_transaction(Duration::from_secs(30)).unwrap();
            }
        }
        let whole = settled(&config, Some(last));
        let since = read_resume_points_since(&config, &earlier).unwrap();
        assert_eq!(since, whole, "after {what}");
        earlier = since;
    }
    assert_eq!(earlier.events[0].last, Some((202, 0)));
    assert_eq!(earlier.events[1].last, Some((5, 1)));
    assert!(earlier.market_data.iter().all(|point| point.last.is_none()));
}

#[test]
fn resume_steps_back_past_aborted_transactions_and_skips_exactly_what_kafka_holds() {
    let config = config("resume");
    let (mut output, report) = KafkaOutput::open(&config, EventEncoder::Binary, 1).unwrap();
    assert!(!output.holds_events());
    assert_eq!(report.resume.max(), None);
    let first = events(10);
    publish(&mut output, &first);
    drop(output); // commits and waits

    // 300 aborted records after the last committed one on partition 0: more than the first
    // windows of the reader, so it must step back several times.
    aborted_transaction(&config, 1_000, 300);
    let points = read_resume_points(&config).unwrap();
    // Command 10 is on instrument 0 (partition 0), command 9 on instrument 1 (partition 1).
    assert_eq!(points.events[0].last, Some((10, 1)));
    assert_eq!(points.events[1].last, Some((9, 1)));
    assert_eq!(points.events[0].last_value, event(10, 1, 0).to_bytes());
    assert!(points.market_data.iter().all(|point| point.last.is_none()));

    // A restart replays everything: what Kafka holds is skipped, the rest is published.
    let (mut output, _) = KafkaOutput::open(&config, EventEncoder::Binary, 13).unwrap();
    assert!(output.holds_events());
    let all = events(12);
    publish(&mut output, &all);
    assert_eq!(output.skipped_count(), first.len() as u64);
    drop(output);
    let points = read_resume_points(&config).unwrap();
    assert_eq!(points.events[0].last, Some((12, 1)));
    assert_eq!(points.events[1].last, Some((11, 1)));

    // Kafka holding events of commands the journal does not have is refused.
    match KafkaOutput::open(&config, EventEncoder::Binary, 12) {
        Err(KafkaOutputError::AheadOfJournal { seq, .. }) => assert_eq!(seq, 12),
        Err(other) => panic!("expected AheadOfJournal, got {other}"),
        Ok(_) => panic!("expected AheadOfJournal, got an output"),
    }
}

#[test]
fn a_replay_that_differs_at_the_resume_point_stops() {
    let config = config("differs");
    let (mut output, _) = KafkaOutput::open(&config, EventEncoder::Binary, 1).unwrap();
    publish(&mut output, &events(4));
    drop(output);
    let (mut output, _) = KafkaOutput::open(&config, EventEncoder::Binary, 5).unwrap();
    let mut changed = events(4);
    // Command 4's last event is the resume point of partition 0.
    changed[7].price += 1;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        publish(&mut output, &changed)
    }));
    let message = outcome.expect_err("a different event at the resume point must stop");
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(text.contains("replay produced a different event"), "{text}");
}
