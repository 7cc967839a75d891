//! The live view: a ratatui table over [`App`], redrawn on every key,
//! resize and document. Documents are fetched on a thread of their own, so
//! a slow or unreachable agent never freezes the keys.

use std::{
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ratatui::{
    Frame as Screen,
    crossterm::event::{self, Event, KeyEventKind},
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Table, TableState},
};

use super::{
    app::{App, Flow},
    model::{Col, Severity},
    source::Source,
};
use crate::api::Snapshot;

/// Keys are read at least this often while waiting for the next document.
const POLL: Duration = Duration::from_millis(100);

type Fetched = Result<Snapshot<'static>, super::source::SourceError>;

/// Runs the live view until `q`; the terminal is restored on the way out,
/// also after an error or a panic.
pub fn run(source: Box<dyn Source>, mut app: App) -> anyhow::Result<()> {
    let (want_tx, want_rx) = mpsc::channel::<()>();
    let (got_tx, got_rx) = mpsc::channel::<Fetched>();
    let fetcher = thread::Builder::new()
        .name("top-fetch".into())
        .spawn(move || {
            let mut source = source;
            for () in want_rx {
                if got_tx.send(source.fetch()).is_err() {
                    break;
                }
            }
        })
        .context("starting the fetch thread")?;

    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        let size = terminal.size().context("reading the terminal size")?;
        app.resize(size.width);
        let mut in_flight = false;
        let mut next = Instant::now();
        loop {
            let now = Instant::now();
            if !in_flight && !app.paused && now >= next {
                if want_tx.send(()).is_err() {
                    anyhow::bail!("the fetch thread stopped");
                }
                in_flight = true;
                next = now + app.interval;
            }
            while let Ok(fetched) = got_rx.try_recv() {
                in_flight = false;
                app.on_fetch(fetched);
            }
            terminal
                .draw(|screen| draw(screen, &app))
                .context("drawing the terminal")?;
            if event::poll(POLL).context("reading the terminal")? {
                match event::read().context("reading the terminal")? {
                    Event::Key(key) if key.kind == KeyEventKind::Press => {
                        let interval = app.interval;
                        if app.on_key(key) == Flow::Quit {
                            return Ok(());
                        }
                        if app.interval != interval {
                            next = Instant::now() + app.interval;
                        }
                    }
                    Event::Resize(width, _) => app.resize(width),
                    _ => {}
                }
            }
        }
    })();
    ratatui::restore();
    drop(want_tx);
    // A fetch in progress ends within its timeouts; do not wait for it.
    drop(fetcher);
    result
}

fn draw(screen: &mut Screen<'_>, app: &App) {
    let [header, table, footer] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(screen.area());
    draw_header(screen, header, app);
    draw_table(screen, table, app);
    draw_footer(screen, footer, app);
    if app.help {
        draw_help(screen, screen.area());
    }
}

/// `250ms`, `2s`, `1.5s`.
fn interval(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}%"))
}

fn bytes(v: Option<u64>) -> String {
    let mut out = String::new();
    Col::Mem.format(v.map(|v| v as f64), &mut out);
    out
}

fn draw_header(screen: &mut Screen<'_>, area: Rect, app: &App) {
    let h = &app.frame.header;
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let title = Line::from(vec![
        Span::styled("stallwatch top", bold),
        Span::raw(format!(
            "  {}  every {}  {} containers, {} shown",
            app.source,
            interval(app.interval),
            app.frame.rows.len(),
            app.shown.len()
        )),
        if app.paused {
            Span::styled("  PAUSED", bold.fg(Color::Yellow))
        } else {
            Span::raw("")
        },
    ]);
    let [cpu_psi, mem_psi, io_psi] = h.pressure_some_percent;
    let node = Line::from(format!(
        "node: CPU {} of {} cores  memory {} of {}  pressure (some) cpu {} memory {} io {}",
        h.cpu_used
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}")),
        h.cpus.map_or_else(|| "-".to_owned(), |v| v.to_string()),
        bytes(h.memory_used_bytes),
        bytes(h.memory_total_bytes),
        percent(cpu_psi),
        percent(mem_psi),
        percent(io_psi),
    ));
    let mut probes = vec![Span::raw(format!("agent {}: probes ", h.agent_version))];
    for (signal, up, _) in &h.probes {
        let (text, style) = if *up {
            (format!("{signal} up "), Style::new())
        } else {
            (format!("{signal} DOWN "), bold.fg(Color::Red))
        };
        probes.push(Span::styled(text, style));
    }
    probes.push(Span::raw(format!(
        " collect {:.1}ms",
        h.collect_seconds * 1e3
    )));
    let status = match (&app.error, &app.editing) {
        (Some(e), _) => Line::from(Span::styled(
            format!("{e}; retrying every {}", interval(app.interval)),
            bold.fg(Color::Red),
        )),
        (None, Some(text)) => Line::from(format!("filter: {text}▏ (Enter to keep, Esc to cancel)")),
        (None, None) if !app.filter.is_empty() => {
            Line::from(format!("filter: {} (Esc clears)", app.filter))
        }
        (None, None) if app.documents == 0 => Line::from("waiting for the agent…"),
        (None, None) if h.interval_seconds.is_none() => {
            Line::from("rates and quantiles appear after the second reading")
        }
        (None, None) => Line::from(""),
    };
    screen.render_widget(
        Paragraph::new(vec![title, node, Line::from(probes), status]),
        area,
    );
}

fn draw_table(screen: &mut Screen<'_>, area: Rect, app: &App) {
    let widths: Vec<Constraint> = app
        .columns
        .iter()
        .map(|c| match c {
            Col::Name => Constraint::Min(c.width()),
            other => Constraint::Length(other.width()),
        })
        .collect();
    let heading = TableRow::new(app.columns.iter().map(|c| {
        let mut text = c.title().to_owned();
        let mut style = Style::new().add_modifier(Modifier::BOLD);
        if *c == app.sort {
            text.push(if app.reverse { '▲' } else { '▼' });
            style = style.add_modifier(Modifier::REVERSED);
        }
        let line = Line::from(text);
        Cell::from(if *c == Col::Name {
            line
        } else {
            line.alignment(Alignment::Right)
        })
        .style(style)
    }));
    let rows = app.shown.iter().filter_map(|(i, cells)| {
        let row = app.frame.rows.get(*i)?;
        Some(TableRow::new(app.columns.iter().zip(cells).map(
            |(col, text)| {
                if *col == Col::Name {
                    return Cell::from(text.as_str());
                }
                let style = match col.severity(row.value(*col)) {
                    Severity::Normal => Style::new(),
                    Severity::Warning => Style::new().fg(Color::Yellow),
                    Severity::Critical => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                };
                Cell::from(Line::from(text.as_str()).alignment(Alignment::Right)).style(style)
            },
        )))
    });
    let table = Table::new(rows, widths)
        .header(heading)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(Some(app.selected));
    screen.render_stateful_widget(table, area, &mut state);
}

fn draw_footer(screen: &mut Screen<'_>, area: Rect, app: &App) {
    let keys = if app.editing.is_some() {
        "type to filter  Enter keep  Esc cancel"
    } else {
        "q quit  ←/→ sort  r reverse  / filter  p pause  +/- interval  ↑/↓ scroll  h help"
    };
    screen.render_widget(
        Paragraph::new(keys).style(Style::new().add_modifier(Modifier::DIM)),
        area,
    );
}

const HELP: [(&str, &str); 11] = [
    ("q, Ctrl-C", "quit"),
    (
        "← →  < >",
        "sort by the previous or next column (largest first)",
    ),
    ("r", "reverse the sort"),
    (
        "/",
        "filter by name or cgroup (Enter keeps it, Esc cancels)",
    ),
    ("Esc", "clear the filter"),
    ("p, space", "pause or resume"),
    ("+ -", "longer or shorter interval"),
    ("↑ ↓ PgUp PgDn", "scroll"),
    ("h, ?", "this help; any key closes it"),
    ("colours", "yellow: worth a look, red and bold: acting up"),
    ("-", "unknown yet: rates need two readings"),
];

fn draw_help(screen: &mut Screen<'_>, area: Rect) {
    let width = area.width.min(76);
    let height = area.height.min(HELP.len() as u16 + 2);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(keys, what)| Line::from(format!("{keys:>14}  {what}")))
        .collect();
    screen.render_widget(Clear, popup);
    screen.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" help ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_written_as_typed() {
        assert_eq!(interval(Duration::from_millis(250)), "250ms");
        assert_eq!(interval(Duration::from_secs(2)), "2s");
        assert_eq!(interval(Duration::from_millis(1500)), "1.5s");
    }
}
