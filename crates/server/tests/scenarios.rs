//! Data-driven scenario tests: each `scenarios/NAME.jsonl` holds commands in the scripting
//! format and `scenarios/NAME.expected.jsonl` the exact events they must produce. Every
//! scenario runs three ways: through the fast engine, through the naive reference book (both
//! via the library), and through the `ringmatch feed` binary.
//!
//! `UPDATE_SCENARIOS=1` rewrites the expected files from the fast engine; review the diff.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use ringmatch_matcher::{Engine, Event, NaiveBook, OrderMatcher};
use ringmatch_server::config::Config;
use ringmatch_server::script::{event_to_json, parse_command};

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

fn scenario_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenario_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.ends_with(".jsonl") && !name.ends_with(".expected.jsonl")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 9, "scenario files missing: {files:?}");
    files
}

fn expected_path(path: &Path) -> PathBuf {
    path.with_extension("expected.jsonl")
}

fn run_library<M: OrderMatcher>(mut matcher: M, text: &str) -> String {
    let mut out = String::new();
    let mut seq = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        seq += 1;
        let command = parse_command(line).unwrap_or_else(|error| panic!("{line}: {error}"));
        let mut events: Vec<Event> = Vec::new();
        matcher.apply_command(seq, &command, &mut events);
        for event in &events {
            out.push_str(&event_to_json(event));
            out.push('\n');
        }
    }
    out
}

#[test]
fn scenarios_produce_the_expected_events_in_both_books_and_through_feed() {
    let config_path = scenario_dir().join("scenarios.toml");
    let config = Config::load(&config_path).unwrap().matcher();
    let update = std::env::var_os("UPDATE_SCENARIOS").is_some();
    for path in scenario_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let fast = run_library(Engine::new(config.clone()).unwrap(), &text);
        if update {
            std::fs::write(expected_path(&path), &fast).unwrap();
        }
        let expected = std::fs::read_to_string(expected_path(&path))
            .unwrap_or_else(|error| panic!("{name}: no expected file: {error}"));
        assert_eq!(fast, expected, "{name}: fast engine");
        let naive = run_library(NaiveBook::new(config.clone()).unwrap(), &text);
        assert_eq!(naive, expected, "{name}: naive book");

        let output = Process::new(env!("CARGO_BIN_EXE_ringmatch"))
            .arg("--config")
            .arg(&config_path)
            .arg("feed")
            .arg(&path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{name}: feed failed: {output:?}");
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            expected,
            "{name}: ringmatch feed"
        );
    }
}
