//! The `firehose-relay` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use firehose_relay::config::{Config, ConfigSource};
use firehose_relay::deadletter::DeadLetter;

/// Ships logs from Fluentd/Fluent Bit clients to Amazon Kinesis Data Firehose.
#[derive(Debug, Parser)]
#[command(name = "firehose-relay", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (TOML). Also `$RELAY_CONFIG`.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline (the default).
    Run,
    /// Validate the config and print the effective settings (secrets redacted).
    Check,
    /// Inspect dead-lettered records.
    DeadLetter {
        #[command(subcommand)]
        action: DeadLetterAction,
        /// Data directory (default: from the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterAction {
    /// List entries with their reason and record count.
    List,
}

/// Exit status for configuration errors.
const EXIT_CONFIG: u8 = 2;

fn load_config(cli_path: Option<PathBuf>) -> Result<Config, ExitCode> {
    Config::load(&ConfigSource::resolve(cli_path)).map_err(|e| {
        eprintln!("firehose-relay: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn data_dir(explicit: Option<PathBuf>, cli_path: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    match explicit {
        Some(d) => Ok(d),
        None => load_config(cli_path).map(|c| c.data_dir),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => match load_config(cli.config) {
            Ok(cfg) => match cfg.to_redacted_toml() {
                Ok(text) => {
                    println!("# configuration is valid; effective settings:\n{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("firehose-relay: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(code) => code,
        },
        Command::Run => {
            let cfg = match load_config(cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            firehose_relay::telemetry::init_logging(cfg.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("firehose-relay: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(firehose_relay::app::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("firehose-relay: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::DeadLetter {
            action,
            data_dir: dir,
        } => {
            let dir = match data_dir(dir, cli.config) {
                Ok(d) => d,
                Err(code) => return code,
            };
            match action {
                DeadLetterAction::List => dead_letter_list(&dir),
            }
        }
    }
}

fn dead_letter_list(dir: &std::path::Path) -> ExitCode {
    let dl = DeadLetter::new(dir);
    let entries = match dl.list() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("firehose-relay: cannot read {}: {e}", dl.root().display());
            return ExitCode::FAILURE;
        }
    };
    if entries.is_empty() {
        println!("no dead-lettered records in {}", dl.root().display());
    }
    let mut status = ExitCode::SUCCESS;
    for e in entries {
        match e {
            Ok(e) => println!(
                "{}\toutput={}\trecords={}\tattempts={}\treason={}",
                e.meta_path.display(),
                e.meta.output,
                e.meta.records,
                e.meta.attempts,
                e.meta.reason
            ),
            Err(msg) => {
                eprintln!("unreadable entry: {msg}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
