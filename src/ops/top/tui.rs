//! The interactive screen of `top` (ratatui on crossterm): redrawn every interval, `q`, Esc or
//! Ctrl-C quits. The terminal is restored on every exit path (ratatui's panic hook included).

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Row, Table};
use ratatui::{DefaultTerminal, Frame};

use super::model::{Snapshot, View};
use super::table::{self, OUTPUT_HEADER, SOURCE_HEADER};
use super::Scraper;

/// What the screen shows: the last view, and the last error if the latest scrape failed.
struct Screen {
    url: String,
    every: Duration,
    view: Option<View>,
    error: Option<String>,
}

/// Runs the screen until the user quits.
pub async fn run(scraper: &Scraper, every: Duration) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = event_loop(&mut terminal, scraper, every).await;
    ratatui::restore();
    result
}

fn quits(k: &KeyEvent) -> bool {
    k.kind == KeyEventKind::Press
        && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
            || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL)))
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    scraper: &Scraper,
    every: Duration,
) -> anyhow::Result<()> {
    let mut screen = Screen {
        url: scraper.display_url().to_owned(),
        every,
        view: None,
        error: None,
    };
    let mut previous: Option<Snapshot> = None;
    loop {
        match scraper.scrape().await {
            Ok(snapshot) => {
                screen.view = Some(View::between(previous.as_ref(), &snapshot));
                screen.error = None;
                previous = Some(snapshot);
            }
            Err(e) => screen.error = Some(format!("{e:#}")),
        }
        terminal.draw(|f| draw(f, &screen))?;
        // Keys are read while waiting for the next refresh; nothing else runs meanwhile, so
        // crossterm's blocking poll is fine here.
        let next = Instant::now() + every;
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() || !event::poll(left)? {
                break;
            }
            match event::read()? {
                Event::Key(k) if quits(&k) => return Ok(()),
                Event::Resize(..) => {
                    terminal.draw(|f| draw(f, &screen))?;
                }
                _ => {}
            }
        }
    }
}

fn widths(header: &[&str], rows: &[Vec<String>]) -> Vec<Constraint> {
    header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let w = rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(1);
            Constraint::Length(u16::try_from(w).unwrap_or(u16::MAX))
        })
        .collect()
}

fn table<'a>(title: &'a str, header: &'a [&'a str], rows: Vec<Vec<String>>) -> Table<'a> {
    let w = widths(header, &rows);
    Table::new(rows.into_iter().map(Row::new), w)
        .header(Row::new(header.to_vec()).style(Style::new().add_modifier(Modifier::BOLD)))
        .column_spacing(2)
        .block(Block::bordered().title(title))
}

fn draw(frame: &mut Frame<'_>, screen: &Screen) {
    let (sources, outputs) = match &screen.view {
        Some(v) => (
            table::source_cells(v),
            table::output_cells(v, table::BLOCKS),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let height = |rows: usize| u16::try_from(rows + 3).unwrap_or(u16::MAX);
    let [title, status, src, out, _] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(height(sources.len())),
        Constraint::Length(height(outputs.len())),
        Constraint::Min(0),
    ])
    .areas(frame.area());

    let ready = screen.view.as_ref().map_or("connecting", table::readiness);
    frame.render_widget(
        Line::from(format!(
            "firehose-relay top  {}  {ready}  every {:.0?}  (q quits)",
            screen.url, screen.every
        ))
        .bold(),
        title,
    );
    if let Some(e) = &screen.error {
        frame.render_widget(
            Line::from(format!("cannot scrape: {e}; retrying")).red(),
            status,
        );
    }
    frame.render_widget(table("Sources", &SOURCE_HEADER, sources), src);
    frame.render_widget(table("Outputs", &OUTPUT_HEADER, outputs), out);
}
