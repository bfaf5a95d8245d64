//! The `ringmatch` command line.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringmatch_matcher::Engine;
use ringmatch_server::bench::{self, MatcherBenchOptions};
use ringmatch_server::config::Config;
use ringmatch_server::script::{self, FeedError};

/// ringmatch: an exchange matching engine built the LMAX way.
#[derive(Debug, Parser)]
#[command(name = "ringmatch", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML): instruments and limits.
    #[arg(long, global = true, default_value = "config/default.toml")]
    config: PathBuf,

    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run JSON-lines commands through the matcher and print the events as JSON lines.
    ///
    /// Reads one command per line (see docs/scripting.md); blank lines and lines starting
    /// with '#' are skipped. Each event carries the `seq` of its command (from 1). On a
    /// malformed line it prints an error naming the line and exits with status 2; nothing
    /// from that line on is applied.
    Feed {
        /// File of commands, or '-' for standard input.
        file: PathBuf,
    },
    /// Measure throughput.
    ///
    /// `--matcher-only` runs the exchange-core mix (one instrument, ~1,000 resting orders
    /// over ~750 levels, 1,000 accounts; 9% GTC, 3% IOC, 6% cancel, 82% replace) through the
    /// fast matcher single-threaded, then a prefix of it through the naive reference book,
    /// and prints median commands per second for both.
    Bench {
        /// Benchmark the matcher alone, single-threaded, without rings or journal.
        #[arg(long, required = true)]
        matcher_only: bool,
        /// Commands in the measured stream.
        #[arg(long, default_value_t = 2_000_000)]
        commands: usize,
        /// Timed runs of the fast engine; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Commands run through the naive reference book (a prefix of the stream).
        #[arg(long, default_value_t = 200_000)]
        naive_commands: usize,
        /// Workload seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ringmatch: error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Commands::Feed { file } => {
            let config = Config::load(&cli.config)?;
            let mut engine = Engine::new(config.matcher())?;
            let stdout = std::io::stdout();
            let mut output = std::io::BufWriter::new(stdout.lock());
            let result = if file.as_os_str() == "-" {
                script::feed(&mut engine, std::io::stdin().lock(), &mut output)
            } else {
                let handle = std::fs::File::open(&file)
                    .map_err(|error| anyhow::anyhow!("cannot open {}: {error}", file.display()))?;
                script::feed(&mut engine, BufReader::new(handle), &mut output)
            };
            output.flush()?;
            match result {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(error @ FeedError::Malformed { .. }) => {
                    eprintln!("ringmatch feed: {}: {error}", file.display());
                    Ok(ExitCode::from(2))
                }
                Err(error) => Err(error.into()),
            }
        }
        Commands::Bench {
            matcher_only,
            commands,
            runs,
            naive_commands,
            seed,
        } => {
            anyhow::ensure!(matcher_only, "only --matcher-only is available");
            anyhow::ensure!(
                runs >= 1 && commands >= 1,
                "--runs and --commands must be at least 1"
            );
            bench::run(MatcherBenchOptions {
                commands_count: commands,
                runs_count: runs,
                naive_commands_count: naive_commands,
                seed,
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
