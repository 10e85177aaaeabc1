//! `firehose-relay top`: a live view of a running relay at a terminal, like `vector top`.
//!
//! It reads the relay's own `/metrics` every interval (default 1 s) and shows, per source,
//! records/s and open connections, and per output, records/s in (stored in its buffer) and out
//! (delivered), buffer fill, the oldest queued chunk, chunks retrying, failures by class since
//! start, the Firehose pacing factor and when the credentials expire. Rates need two scrapes,
//! so they appear from the second refresh on.
//!
//! With `--once`, or when stdout is not a terminal, it scrapes twice one interval apart, prints
//! one plain table and exits.

mod model;
mod table;
mod tui;

use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

pub use model::{Snapshot, View, METRICS_USED};
pub use table::plain;

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);

/// Command line options of `top`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of the relay's HTTP endpoint (`http.listen`).
    pub url: String,
    /// Print one plain table and exit.
    pub once: bool,
    /// Refresh period (and the span of the rates).
    pub interval: Duration,
}

/// Reads `/metrics` of one relay.
pub struct Scraper {
    client: reqwest::Client,
    base: String,
    metrics: String,
}

impl Scraper {
    /// For the relay at `url` (`http://host:port`; the scheme may be left out).
    pub fn new(url: &str) -> anyhow::Result<Scraper> {
        let base = if url.contains("://") {
            url.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", url.trim_end_matches('/'))
        };
        let client = reqwest::Client::builder()
            .timeout(SCRAPE_TIMEOUT)
            .build()
            .context("cannot create an HTTP client")?;
        Ok(Scraper {
            client,
            metrics: format!("{base}/metrics"),
            base,
        })
    }

    /// The relay's address as shown on screen.
    pub fn display_url(&self) -> &str {
        &self.base
    }

    /// One snapshot of `/metrics`.
    pub async fn scrape(&self) -> anyhow::Result<Snapshot> {
        let response = self
            .client
            .get(&self.metrics)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.metrics))?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "{} answered {status}", self.metrics);
        let text = response
            .text()
            .await
            .with_context(|| format!("cannot read {}", self.metrics))?;
        Snapshot::parse(&text, Instant::now(), SystemTime::now())
            .with_context(|| format!("{} is not a Prometheus exposition", self.metrics))
    }
}

/// Runs `top` until the user quits (interactive) or after one table (`--once`, no terminal).
pub async fn run(options: Options) -> anyhow::Result<()> {
    let scraper = Scraper::new(&options.url)?;
    if options.once || !std::io::stdout().is_terminal() {
        let first = scraper.scrape().await?;
        tokio::time::sleep(options.interval).await;
        let second = scraper.scrape().await?;
        print!(
            "{}",
            plain(&View::between(Some(&first), &second), scraper.display_url())
        );
        return Ok(());
    }
    tui::run(&scraper, options.interval).await
}
