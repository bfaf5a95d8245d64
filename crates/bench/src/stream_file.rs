//! The stream file: a generated command stream on disk, so that another engine (the
//! exchange-core harness, `bench/exchange-core`) runs exactly what `ringmatch bench
//! --matcher-only` runs. Layout: `docs/stream-format.md`.

use std::path::Path;

use anyhow::Context;
use ringmatch_matcher::workload::{mix_config, Workload};
use ringmatch_matcher::Engine;
use ringmatch_proto::{Command, CommandType, EventType, COMMAND_V1_SIZE_BYTES};

/// The first 8 bytes of a stream file.
pub const STREAM_MAGIC: &[u8; 8] = b"RMSTREAM";
/// The version this code writes and reads.
pub const STREAM_VERSION: u32 = 1;
/// Bytes before the first record.
pub const STREAM_HEADER_BYTES: usize = 32;

/// Writes `workload` (warm-up, then commands). Each place's record carries, in `order_id`, the
/// id the engine gives it (0 if the engine rejects it), found by running the stream through a
/// fresh engine of the mix's configuration: another engine can then name orders as ringmatch
/// does.
pub fn write_stream(path: &Path, workload: &Workload) -> anyhow::Result<()> {
    let mut engine = Engine::new(mix_config()).expect("the mix configuration is valid");
    let mut events = Vec::new();
    let all = workload.warmup.iter().chain(&workload.commands);
    let mut bytes = Vec::with_capacity(
        STREAM_HEADER_BYTES
            + (workload.warmup.len() + workload.commands.len()) * COMMAND_V1_SIZE_BYTES,
    );
    bytes.extend_from_slice(STREAM_MAGIC);
    bytes.extend_from_slice(&STREAM_VERSION.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&(workload.warmup.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&(workload.commands.len() as u64).to_le_bytes());
    for (index, command) in all.enumerate() {
        events.clear();
        engine.apply(index as u64 + 1, command, &mut events);
        let mut record = *command;
        if command.command_type == CommandType::Place {
            record.order_id = events
                .iter()
                .find(|event| event.event_type == EventType::Accepted)
                .map_or(0, |event| event.order_id);
        }
        let mut v1 = [0u8; COMMAND_V1_SIZE_BYTES];
        record.encode_v1(&mut v1);
        bytes.extend_from_slice(&v1);
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a stream file back. The order ids of places are dropped (ringmatch assigns its own;
/// they are in the file for other engines). The commands that trade are counted by running
/// the stream through an engine of the mix's configuration.
pub fn read_stream(path: &Path) -> anyhow::Result<Workload> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() >= STREAM_HEADER_BYTES && &bytes[..8] == STREAM_MAGIC,
        "{}: not a stream file",
        path.display()
    );
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    anyhow::ensure!(
        version == STREAM_VERSION,
        "{}: stream file version {version}; this reads {STREAM_VERSION}",
        path.display()
    );
    let (warmup_count, commands_count) = (word(16) as usize, word(24) as usize);
    let expected = warmup_count
        .checked_add(commands_count)
        .and_then(|records| records.checked_mul(COMMAND_V1_SIZE_BYTES))
        .and_then(|records_bytes| records_bytes.checked_add(STREAM_HEADER_BYTES))
        .unwrap_or(usize::MAX);
    anyhow::ensure!(
        bytes.len() == expected,
        "{}: {} bytes, but the header promises {} records ({expected} bytes)",
        path.display(),
        bytes.len(),
        warmup_count + commands_count
    );
    let mut commands = Vec::with_capacity(warmup_count + commands_count);
    for (index, record) in bytes[STREAM_HEADER_BYTES..]
        .chunks_exact(COMMAND_V1_SIZE_BYTES)
        .enumerate()
    {
        let mut command = Command::decode(record)
            .map_err(|error| anyhow::anyhow!("{}: record {index}: {error}", path.display()))?;
        if command.command_type == CommandType::Place {
            command.order_id = 0;
        }
        commands.push(command);
    }
    let measured = commands.split_off(warmup_count);
    let mut engine = Engine::new(mix_config()).expect("the mix configuration is valid");
    let mut events = Vec::new();
    let mut trading_commands_count = 0;
    for (index, command) in commands.iter().chain(&measured).enumerate() {
        events.clear();
        engine.apply(index as u64 + 1, command, &mut events);
        if index >= warmup_count
            && events
                .iter()
                .any(|event| event.event_type == EventType::Fill)
        {
            trading_commands_count += 1;
        }
    }
    Ok(Workload {
        order_types: Default::default(),
        warmup: commands,
        commands: measured,
        trading_commands_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmatch_matcher::workload::{exchange_core_mix, MixShape};

    #[test]
    fn a_stream_file_round_trips_and_names_each_place_as_the_engine_does() {
        let workload = exchange_core_mix(5_000, 7, MixShape::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mix.stream");
        write_stream(&path, &workload).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"RMSTREAM");
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
        assert_eq!(
            bytes.len(),
            32 + (workload.warmup.len() + workload.commands.len()) * 64
        );
        let read = read_stream(&path).unwrap();
        assert_eq!(read.warmup, workload.warmup);
        assert_eq!(read.commands, workload.commands);
        assert_eq!(read.trading_commands_count, workload.trading_commands_count);
        // The order id written for each place is the one the engine's accepted event names,
        // and the cancels and replaces of the stream name those ids.
        let mut engine = Engine::new(mix_config()).unwrap();
        let mut events = Vec::new();
        for (index, record) in bytes[32..].chunks_exact(64).enumerate() {
            let command = Command::decode(record).unwrap();
            events.clear();
            let mut plain = command;
            if plain.command_type == CommandType::Place {
                plain.order_id = 0;
            }
            engine.apply(index as u64 + 1, &plain, &mut events);
            if command.command_type == CommandType::Place {
                let accepted = events
                    .iter()
                    .find(|event| event.event_type == EventType::Accepted)
                    .map(|event| event.order_id);
                assert_eq!(accepted, Some(command.order_id), "record {index}");
            }
        }
        // A truncated file is refused with the reason.
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let error = read_stream(&path).unwrap_err().to_string();
        assert!(error.contains("the header promises"), "{error}");
    }
}
