//! The `firehose-relay` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use firehose_relay::config::{Config, ConfigError, ConfigSource, LoadOptions, CREDENTIAL_INPUTS};

mod data_commands;
use data_commands::{buffer_dump, buffer_stats, dead_letter_list, dead_letter_replay, DataDir};

/// Tunes glibc malloc for this workload, before any thread starts. The relay allocates and
/// frees buffers of a few hundred KiB per message and per Firehose call: by default glibc serves
/// those with a fresh `mmap` each time (page faults were ~15 % of CPU in the e2e profile) and
/// gives every thread its own arena (RSS grows with threads). Measured in `benches/e2e.rs`;
/// mimalloc was faster still but doubled RSS, which a pod's memory limit cannot afford. Two
/// arenas rather than four: with 8 flush workers peak RSS was 7–10 MiB lower (e.g. 256 clients
/// 50.5–57.1 MiB against 63.9–68.1, four runs each alternating, no CPU per record difference
/// within the noise; one arena measured the same as two). A
/// parameter whose glibc variable is set (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
/// `MALLOC_ARENA_MAX`) is left as that variable says.
#[allow(unsafe_code)]
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (param, variable, value) in [
        (libc::M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 8 << 20),
        (libc::M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", 32 << 20),
        (libc::M_ARENA_MAX, "MALLOC_ARENA_MAX", 2),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mallopt only changes allocator parameters; it is called once,
            // single-threaded, before any allocation-heavy work, with documented parameter
            // names and sane values.
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}

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
    Check {
        /// Check everything but what only the relay's own machine has: the role ARN, the
        /// web-identity token file and static keys of outputs' credentials (`${VAR}` references
        /// to unset variables there are printed as written).
        #[arg(long)]
        no_credentials: bool,
    },
    /// Live view of a running relay: per source and output, rates, buffer fill, oldest chunk,
    /// retries, failures, pacing and credentials (`q` quits). Plain table with --once or when
    /// stdout is not a terminal.
    Top {
        /// The relay's HTTP endpoint (`http.listen`).
        #[arg(long, default_value = "http://127.0.0.1:24231")]
        url: String,
        /// Print one table (rates over one interval) and exit.
        #[arg(long)]
        once: bool,
        /// Refresh period (`1s`, `500ms`).
        #[arg(long, default_value = "1s", value_parser = parse_timeout)]
        interval: std::time::Duration,
    },
    /// Deliver everything in the buffers with the config's outputs (no sources), then exit:
    /// 0 once every buffer is empty, 1 with a summary of what is left if --timeout passes or a
    /// signal comes first (the rest stays in the buffer). For the volume of a pod removed by a
    /// StatefulSet scale-down.
    Drain {
        /// Give up after this long (`30m`, `1h`, `90s`); default: no limit.
        #[arg(long, value_parser = parse_timeout)]
        timeout: Option<std::time::Duration>,
    },
    /// Convert a fluent.conf (and the files it includes) to the relay's TOML: printed on
    /// stdout or written to -o. Exit 0 when everything converted faithfully; otherwise exit 1
    /// with the list of what did not on stderr (file, line, why, what to do). Exit 2 when the
    /// fluent.conf cannot be parsed.
    Convert {
        /// The fluent.conf.
        fluent_conf: PathBuf,
        /// Write the TOML here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Inspect the on-disk chunk queue of a stopped relay.
    Buffer {
        #[command(subcommand)]
        action: BufferAction,
        /// The relay's data directory (`data_dir`). Default: the config's (--config, or
        /// $RELAY_CONFIG), else /var/lib/firehose-relay.
        #[arg(long, global = true, env = "RELAY_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Inspect dead-lettered records.
    DeadLetter {
        #[command(subcommand)]
        action: DeadLetterAction,
        /// The relay's data directory (`data_dir`). Default: the config's (--config, or
        /// $RELAY_CONFIG), else /var/lib/firehose-relay.
        #[arg(long, global = true, env = "RELAY_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterAction {
    /// List entries with their reason and record count.
    List,
    /// Move entries back into their output's queue (relay stopped), then delete them.
    Replay {
        /// Only entries of this output.
        #[arg(long)]
        output: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BufferAction {
    /// Per output: staged/queued chunks, records, bytes, oldest chunk; physical size on disk.
    Stats {
        /// Only this output.
        #[arg(long)]
        output: Option<String>,
    },
    /// Print the records of one chunk (or of all chunks of an output) as NDJSON.
    Dump {
        /// The output (may be omitted when there is only one).
        #[arg(long)]
        output: Option<String>,
        /// Chunk id as shown in logs (16 hex digits) or a decimal number.
        #[arg(long)]
        chunk: Option<String>,
    },
}

/// Exit status for configuration errors.
const EXIT_CONFIG: u8 = 2;

/// Why a subcommand could not do its job. `main` prints it once, then exits with status 2 for a
/// configuration error and 1 for anything else. (A subcommand that did its job but has
/// something to report, e.g. unreadable entries, prints it itself and returns its status.)
#[derive(Debug)]
enum Failure {
    /// The configuration cannot be used.
    Config(ConfigError),
    /// Anything else, with its chain of causes.
    Other(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

/// What every subcommand returns.
type Outcome = Result<ExitCode, Failure>;

fn load_config(cli_path: Option<PathBuf>) -> Result<Config, ConfigError> {
    Config::load(&ConfigSource::resolve(cli_path))
}

/// Loads the config, sets up logging and the runtime: what `run` and `drain` share.
fn start(cli_path: Option<PathBuf>) -> Result<(Config, tokio::runtime::Runtime), Failure> {
    let cfg = load_config(cli_path)?;
    firehose_relay::ops::logging::init_logging(cfg.log_format);
    firehose_relay::config::env::log_foreign(&cfg.ignored_env);
    for w in &cfg.fluentd_warnings {
        tracing::warn!("fluent.conf: {w}");
    }
    // Few blocking threads: large decodes and encodes run there, and every extra thread is
    // another allocator heap holding freed buffers (RSS).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    Ok((cfg, runtime))
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    firehose_relay::primitives::units::parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match run_command(cli) {
        Ok(status) => status,
        Err(Failure::Config(e)) => {
            eprintln!("firehose-relay: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Other(e)) => {
            // Also in the log, for `run` and `drain` (a no-op before logging is set up).
            tracing::error!("{e:#}");
            eprintln!("firehose-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(cli: Cli) -> Outcome {
    match cli.command.unwrap_or(Command::Run) {
        Command::Check { no_credentials } => check(cli.config, no_credentials),
        Command::Convert {
            fluent_conf,
            output,
        } => convert(&fluent_conf, output.as_deref()),
        Command::Drain { timeout } => drain(cli.config, timeout),
        Command::Top {
            url,
            once,
            interval,
        } => top(firehose_relay::ops::top::Options {
            url,
            once,
            interval,
        }),
        Command::Run => {
            let (cfg, runtime) = start(cli.config)?;
            runtime.block_on(firehose_relay::app::run(cfg))?;
            // Tasks that still hold a buffer go with the runtime; the buffer database is
            // closed (its final sync done) once the last of them is gone.
            drop(runtime);
            if let Some(why) = firehose_relay::buffer::file::store::shutdown_failure() {
                return Err(
                    anyhow::anyhow!("the buffer database was not closed cleanly: {why}").into(),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetter {
            action,
            data_dir: dir,
        } => {
            let dir = DataDir::resolve(dir, cli.config)?;
            match action {
                DeadLetterAction::List => dead_letter_list(&dir),
                DeadLetterAction::Replay { output } => dead_letter_replay(&dir, output.as_deref()),
            }
        }
        Command::Buffer {
            action,
            data_dir: dir,
        } => {
            let dir = DataDir::resolve(dir, cli.config)?;
            match action {
                BufferAction::Stats { output } => buffer_stats(&dir, output.as_deref()),
                BufferAction::Dump { output, chunk } => {
                    buffer_dump(&dir, output.as_deref(), chunk.as_deref())
                }
            }
        }
    }
}

fn check(cli_path: Option<PathBuf>, no_credentials: bool) -> Outcome {
    let options = LoadOptions {
        skip_credentials: no_credentials,
    };
    let cfg = Config::load_with(&ConfigSource::resolve(cli_path), options)?;
    for w in &cfg.fluentd_warnings {
        eprintln!("warning: fluent.conf: {w}");
    }
    let text = cfg.to_redacted_toml().map_err(anyhow::Error::new)?;
    println!("# configuration is valid; effective settings:\n{text}");
    if no_credentials {
        let keys: Vec<&str> = CREDENTIAL_INPUTS
            .iter()
            .map(|k| k.trim_start_matches("credentials."))
            .collect();
        println!(
            "# --no-credentials: the credentials' {} were not checked; unset ${{VAR}} \
             references there are shown as written",
            keys.join(", ")
        );
    }
    if !cfg.ignored_env.is_empty() {
        println!(
            "# RELAY_* environment variables that are not configuration keys \
             (ignored): {}",
            cfg.ignored_env.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn convert(fluent_conf: &std::path::Path, output: Option<&std::path::Path>) -> Outcome {
    let conversion = firehose_relay::fluentd::convert::convert_file(fluent_conf)
        .map_err(|e| ConfigError(format!("cannot read the fluent.conf: {e}")))?;
    for w in &conversion.warnings {
        eprintln!("warning: {}: {}", w.pos, w.message);
    }
    match output {
        Some(path) => std::fs::write(path, &conversion.toml)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{}", conversion.toml),
    }
    if conversion.is_faithful() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprint!("{}", conversion.report());
        Ok(ExitCode::FAILURE)
    }
}

fn drain(cli_path: Option<PathBuf>, timeout: Option<std::time::Duration>) -> Outcome {
    use firehose_relay::drain::Outcome;
    let (cfg, runtime) = start(cli_path)?;
    // A mistyped or unset data_dir must not look like an empty buffer (nor create one).
    if !cfg.data_dir.is_dir() {
        return Err(Failure::Other(anyhow::anyhow!(
            "no data directory {} to drain (it is the config's data_dir, or $RELAY_DATA_DIR; \
             default /var/lib/firehose-relay)",
            cfg.data_dir.display()
        )));
    }
    let report = runtime
        .block_on(firehose_relay::drain::drain(&cfg, timeout))
        .context("drain failed")?;
    let dir = cfg.data_dir.display();
    let secs = report.elapsed.as_secs_f64();
    let (status, headline) = match report.outcome {
        Outcome::NothingToDrain => (ExitCode::SUCCESS, format!("nothing to drain in {dir}")),
        Outcome::Drained => (
            ExitCode::SUCCESS,
            format!("drained {dir} in {secs:.1}s: every buffer is empty"),
        ),
        Outcome::TimedOut | Outcome::Interrupted => {
            let why = if report.outcome == Outcome::TimedOut {
                "--timeout passed"
            } else {
                "stopped by a signal"
            };
            (
                ExitCode::FAILURE,
                format!(
                    "drain of {dir} not finished after {secs:.1}s ({why}); what is left stays \
                     in the buffer for the next drain or run"
                ),
            )
        }
    };
    let text = std::iter::once(headline)
        .chain(report.lines().into_iter().map(|l| format!("  {l}")))
        .collect::<Vec<_>>()
        .join("\n");
    if status == ExitCode::SUCCESS {
        println!("{text}");
    } else {
        eprintln!("firehose-relay: {text}");
    }
    Ok(status)
}

/// `top` needs neither the config nor a multi-threaded runtime: it only reads `/metrics`.
fn top(options: firehose_relay::ops::top::Options) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime
        .block_on(firehose_relay::ops::top::run(options))
        .context("top")?;
    Ok(ExitCode::SUCCESS)
}
