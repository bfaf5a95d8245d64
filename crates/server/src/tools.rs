//! Operator tools: `journal verify|inspect|dump`, `snapshot list|verify`, `events dump`.
//! They read the data directory and never change it.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::Context;
use ringmatch_journal::{inspect, JournalReader, SnapshotStore};
use ringmatch_matcher::{Engine, EventSink};
use ringmatch_pipeline::{choose_snapshot, read_events, EVENTS_HEADER_SIZE_BYTES};
use ringmatch_proto::{Event, EVENT_SIZE_BYTES};

use crate::config::Config;
use crate::script::{command_to_json, event_to_json};

/// `journal inspect`: segments and what the next start would find.
pub fn journal_inspect(config: &Config, out: &mut dyn Write) -> anyhow::Result<bool> {
    let inspection = inspect(&config.journal_dir())?;
    writeln!(out, "journal: {}", config.journal_dir().display())?;
    for segment in &inspection.segments {
        writeln!(
            out,
            "segment {}: first_seq {}, records {}, data {} bytes of {}",
            segment.path.display(),
            segment.first_seq,
            segment.records_count,
            segment.data_bytes,
            segment.size_bytes
        )?;
    }
    writeln!(out, "first_seq: {}", inspection.first_seq)?;
    writeln!(out, "next_seq: {}", inspection.next_seq)?;
    write_problems(&inspection, out)?;
    Ok(inspection.damage.is_none())
}

/// Prints a torn tail (cut on the next start) and damage (which stops it), if any.
fn write_problems(
    inspection: &ringmatch_journal::Inspection,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if let Some((path, offset, problem)) = &inspection.torn_tail {
        writeln!(
            out,
            "torn_tail: {} offset {offset}: {problem} (cut on next start)",
            path.display()
        )?;
    }
    if let Some((path, offset, seq, problem)) = &inspection.damage {
        writeln!(
            out,
            "DAMAGE: {} offset {offset}, sequence {seq}: {problem}",
            path.display()
        )?;
    }
    Ok(())
}

/// `journal dump`: records as JSON lines.
pub fn journal_dump(
    config: &Config,
    from_seq: u64,
    count: u64,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let inspection = inspect(&config.journal_dir())?;
    let from_seq = from_seq.max(inspection.first_seq);
    let available = inspection.next_seq.saturating_sub(from_seq);
    for record in
        JournalReader::open(&config.journal_dir(), from_seq)?.take(available.min(count) as usize)
    {
        let record = record?;
        writeln!(
            out,
            "{{\"seq\":{},\"timestamp_ns\":{},\"command\":{}}}",
            record.seq,
            record.timestamp_ns,
            command_to_json(&record.command)
        )?;
    }
    Ok(())
}

/// Compares the events a replay produces with the events file, one by one, as a stream.
struct EventsComparer {
    file: Option<BufReader<File>>,
    compared_count: u64,
    produced_count: u64,
    mismatch: Option<String>,
}

impl EventsComparer {
    fn next_from_file(&mut self) -> Option<Result<Event, String>> {
        let file = self.file.as_mut()?;
        let mut bytes = [0u8; EVENT_SIZE_BYTES];
        match file.read_exact(&mut bytes) {
            Ok(()) => Some(Event::decode(&bytes).map_err(|error| error.to_string())),
            Err(_) => None,
        }
    }
}

impl EventSink for EventsComparer {
    fn push(&mut self, event: &Event) {
        self.produced_count += 1;
        if self.mismatch.is_some() {
            return;
        }
        match self.next_from_file() {
            None => self.file = None,
            Some(Ok(stored)) if stored == *event => self.compared_count += 1,
            Some(Ok(stored)) => {
                self.mismatch = Some(format!(
                    "event {} of the file is {} but a clean replay gives {}",
                    self.compared_count,
                    event_to_json(&stored),
                    event_to_json(event)
                ));
            }
            Some(Err(error)) => {
                self.mismatch = Some(format!(
                    "event {} of the file is invalid: {error}",
                    self.compared_count
                ));
            }
        }
    }
}

/// `journal verify`: the journal reads end to end; a clean replay of it matches the events
/// file (equal, or a prefix of it after a crash); prints the state hash of that replay.
/// Returns false on damage or mismatch.
pub fn journal_verify(config: &Config, out: &mut dyn Write) -> anyhow::Result<bool> {
    let inspection = inspect(&config.journal_dir())?;
    let mut ok = true;
    writeln!(
        out,
        "journal: sequences {}..{}",
        inspection.first_seq, inspection.next_seq
    )?;
    writeln!(out, "segments: {}", inspection.segments.len())?;
    write_problems(&inspection, out)?;
    if inspection.damage.is_some() {
        ok = false;
    }
    let (mut engine, from_seq) = if inspection.first_seq > 1 {
        starting_snapshot(config, inspection.first_seq)?
    } else {
        (Engine::new(config.matcher())?, 1)
    };
    let events_path = config.events_path();
    let mut comparer = EventsComparer {
        file: None,
        compared_count: 0,
        produced_count: 0,
        mismatch: None,
    };
    if events_path.exists() && from_seq == 1 {
        let mut file = BufReader::new(
            File::open(&events_path).with_context(|| events_path.display().to_string())?,
        );
        let mut header = [0u8; EVENTS_HEADER_SIZE_BYTES as usize];
        file.read_exact(&mut header)?;
        comparer.file = Some(file);
    }
    let records_count = inspection.next_seq - from_seq;
    for record in JournalReader::open(&config.journal_dir(), from_seq)?.take(records_count as usize)
    {
        let record = record?;
        engine.apply(record.seq, &record.command, &mut comparer);
    }
    writeln!(
        out,
        "replayed: {records_count} commands from sequence {from_seq}"
    )?;
    writeln!(out, "state_hash: {:#018x}", engine.state_hash())?;
    // Events of commands the journal no longer holds (its tail was cut) are dropped by the
    // next start; anything else left over is a mismatch.
    let mut ahead_count = 0u64;
    while comparer.mismatch.is_none() {
        match comparer.next_from_file() {
            None => break,
            Some(Ok(event)) if event.seq >= inspection.next_seq => ahead_count += 1,
            Some(Ok(event)) => {
                comparer.mismatch = Some(format!(
                    "the events file holds {} past the end of a clean replay",
                    event_to_json(&event)
                ));
            }
            Some(Err(error)) => {
                comparer.mismatch = Some(format!("invalid event in the file: {error}"))
            }
        }
    }
    if ahead_count > 0 {
        writeln!(
            out,
            "events_ahead: {ahead_count} events of commands after the journal's end (dropped \
             on the next start)"
        )?;
    }
    let file_events_count = std::fs::metadata(&events_path)
        .map(|metadata| {
            metadata.len().saturating_sub(EVENTS_HEADER_SIZE_BYTES) / EVENT_SIZE_BYTES as u64
        })
        .unwrap_or(0)
        - ahead_count;
    if let Some(mismatch) = &comparer.mismatch {
        writeln!(out, "EVENTS MISMATCH: {mismatch}")?;
        ok = false;
    } else if from_seq > 1 {
        writeln!(
            out,
            "events: not compared (the journal starts after a snapshot)"
        )?;
    } else if file_events_count > comparer.produced_count {
        writeln!(
            out,
            "EVENTS MISMATCH: the events file holds {file_events_count} events, a clean replay only {}",
            comparer.produced_count
        )?;
        ok = false;
    } else if file_events_count == comparer.produced_count {
        writeln!(
            out,
            "events: {file_events_count} events, equal to a clean replay"
        )?;
    } else {
        writeln!(
            out,
            "events: {file_events_count} of {} events, a prefix of a clean replay",
            comparer.produced_count
        )?;
    }
    // Whatever the file lacks, the next start must be able to publish: from the journal's
    // start, or from a snapshot whose events the file holds.
    let incomplete = from_seq > 1 || file_events_count < comparer.produced_count;
    if comparer.mismatch.is_none() && incomplete {
        let held = last_event_held(&events_path, inspection.next_seq)?;
        match completing_start(config, inspection.first_seq, inspection.next_seq, held)? {
            Some(from) => writeln!(
                out,
                "events: the next start publishes the rest, replaying from sequence {from}"
            )?,
            None => {
                writeln!(
                    out,
                    "EVENTS GAP: the events file holds {}; the journal starts at sequence {} \
                     and no snapshot on disk fits the file, so the next start cannot complete it",
                    held.map_or("no event".to_string(), |(seq, index)| format!(
                        "events through sequence {seq} index {index}"
                    )),
                    inspection.first_seq
                )?;
                ok = false;
            }
        }
    }
    writeln!(out, "{}", if ok { "verify: ok" } else { "verify: FAILED" })?;
    Ok(ok)
}

/// The newest event of the events file at `path` that belongs to a command before
/// `journal_next_seq` (later ones are dropped on the next start); None if it holds none.
fn last_event_held(path: &Path, journal_next_seq: u64) -> anyhow::Result<Option<(u64, u32)>> {
    if !path.exists() {
        return Ok(None);
    }
    let mut file = File::open(path).with_context(|| path.display().to_string())?;
    let length = file.metadata()?.len().max(EVENTS_HEADER_SIZE_BYTES);
    let record_size = EVENT_SIZE_BYTES as u64;
    let mut end =
        EVENTS_HEADER_SIZE_BYTES + (length - EVENTS_HEADER_SIZE_BYTES) / record_size * record_size;
    while end > EVENTS_HEADER_SIZE_BYTES {
        let mut bytes = [0u8; EVENT_SIZE_BYTES];
        file.seek(SeekFrom::Start(end - record_size))?;
        file.read_exact(&mut bytes)?;
        if let Ok(event) = Event::decode(&bytes) {
            if event.seq < journal_next_seq {
                return Ok(Some((event.seq, event.index)));
            }
        }
        end -= record_size;
    }
    Ok(None)
}

/// Where the next start would replay from to complete an output that holds `held`: after the
/// snapshot start-up would choose, or the journal's start. None: nowhere, the output cannot be
/// completed.
fn completing_start(
    config: &Config,
    journal_first_seq: u64,
    journal_next_seq: u64,
    held: Option<(u64, u32)>,
) -> anyhow::Result<Option<u64>> {
    let store = SnapshotStore::open(&config.snapshot_dir(), config.snapshots.keep)?;
    let chosen = choose_snapshot(
        &config.matcher(),
        &store,
        journal_first_seq,
        journal_next_seq,
        held,
        &mut Vec::new(),
    )?;
    Ok(match chosen {
        Some((info, _)) => Some(info.seq + 1),
        None => (journal_first_seq == 1).then_some(1),
    })
}

fn starting_snapshot(config: &Config, journal_first_seq: u64) -> anyhow::Result<(Engine, u64)> {
    let store = SnapshotStore::open(&config.snapshot_dir(), config.snapshots.keep)?;
    for info in store.list()? {
        if info.seq + 1 < journal_first_seq {
            continue;
        }
        if let Ok(engine) = store
            .read(&info)
            .map_err(anyhow::Error::from)
            .and_then(|snapshot| {
                Ok(Engine::restore_at(
                    config.matcher(),
                    &snapshot.state,
                    info.seq,
                )?)
            })
        {
            return Ok((engine, info.seq + 1));
        }
    }
    anyhow::bail!("the journal starts at sequence {journal_first_seq} and no valid snapshot covers what came before")
}

/// `snapshot list`.
pub fn snapshot_list(config: &Config, out: &mut dyn Write) -> anyhow::Result<()> {
    let store = SnapshotStore::open(&config.snapshot_dir(), config.snapshots.keep)?;
    for info in store.list()? {
        writeln!(
            out,
            "{} seq {} size {} bytes",
            info.path.display(),
            info.seq,
            info.size_bytes
        )?;
    }
    Ok(())
}

/// `snapshot verify`: every snapshot reads, checks and restores; prints its state hash.
pub fn snapshot_verify(config: &Config, out: &mut dyn Write) -> anyhow::Result<bool> {
    let store = SnapshotStore::open(&config.snapshot_dir(), config.snapshots.keep)?;
    let mut ok = true;
    for info in store.list()? {
        let result = store
            .read(&info)
            .map_err(anyhow::Error::from)
            .and_then(|snapshot| {
                Ok(Engine::restore_at(
                    config.matcher(),
                    &snapshot.state,
                    info.seq,
                )?)
            });
        match result {
            Ok(engine) => writeln!(
                out,
                "{}: ok, after sequence {}, {} resting orders, state hash {:#018x}",
                info.path.display(),
                info.seq,
                engine.resting_orders_count(),
                engine.state_hash()
            )?,
            Err(error) => {
                ok = false;
                writeln!(out, "{}: INVALID: {error:#}", info.path.display())?;
            }
        }
    }
    Ok(ok)
}

/// `events dump`: the events file as JSON lines.
pub fn events_dump(path: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    for event in read_events(path)? {
        writeln!(out, "{}", event_to_json(&event))?;
    }
    Ok(())
}

/// `ringmatch cluster status`: asks each admin address for `/status` and prints one line per
/// member; true if any answered.
pub fn cluster_status(addresses: &[String], out: &mut dyn Write) -> anyhow::Result<bool> {
    let mut answered = false;
    for address in addresses {
        let status = match http_get_json(address, "/status") {
            Ok(status) => status,
            Err(error) => {
                writeln!(out, "{address}: no answer ({error})")?;
                continue;
            }
        };
        answered = true;
        let cluster = &status["cluster"];
        if cluster.is_null() {
            writeln!(out, "{address}: a single node (no [cluster])")?;
            continue;
        }
        let number = |key: &str| cluster[key].as_u64().unwrap_or(0);
        let leader = match number("leader_id") {
            0 => "none known".to_string(),
            id => format!("node {id}"),
        };
        write!(
            out,
            "{address}: node {} {} term {} leader {leader} commit {} last {}",
            number("node_id"),
            cluster["role"].as_str().unwrap_or("?"),
            number("term"),
            number("commit_seq"),
            number("last_seq"),
        )?;
        if let Some(members) = cluster["members"].as_array() {
            for member in members {
                write!(
                    out,
                    "; node {} matched {} lag {}",
                    member["node_id"].as_u64().unwrap_or(0),
                    member["matched_seq"].as_u64().unwrap_or(0),
                    member["lag"].as_u64().unwrap_or(0)
                )?;
            }
        }
        writeln!(out)?;
    }
    Ok(answered)
}

/// One `GET` to a loopback admin listener; its body as JSON.
fn http_get_json(address: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    use std::io::Read;
    let address: std::net::SocketAddr = address
        .parse()
        .with_context(|| format!("{address:?} is not an address"))?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(2))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("not an HTTP response")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{}",
        head.lines().next().unwrap_or("")
    );
    Ok(serde_json::from_str(body)?)
}
