//! The state of the live view and what each key does to it: no terminal
//! here, so every key is testable. Drawing is in `tui.rs`.

use std::time::Duration;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{
    model::{self, Col, Frame, Row},
    source::SourceError,
};
use crate::api::Snapshot;

/// The refresh intervals `+` and `-` step through.
const INTERVALS_MS: [u64; 8] = [250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000];

/// What the loop does after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

#[derive(Debug)]
pub struct App {
    /// Where documents come from, for the header.
    pub source: String,
    prev: Option<Snapshot<'static>>,
    /// The last frame, its rows sorted.
    pub frame: Frame,
    /// Rows of `frame` that pass the filter, in order, with their cells
    /// formatted once per document (not once per draw).
    pub shown: Vec<(usize, Vec<String>)>,
    /// The columns that fit the terminal, `Name` first.
    pub columns: Vec<Col>,
    pub width: u16,
    pub sort: Col,
    pub reverse: bool,
    pub filter: String,
    /// The filter being typed, if any (applied as it is typed).
    pub editing: Option<String>,
    pub paused: bool,
    pub interval: Duration,
    pub help: bool,
    /// The last fetch's error, cleared by the next document.
    pub error: Option<String>,
    /// The highlighted row, an index into `shown`.
    pub selected: usize,
    /// Documents received.
    pub documents: u64,
}

impl App {
    pub fn new(source: String, interval: Duration, sort: Col, filter: String, width: u16) -> Self {
        Self {
            source,
            prev: None,
            frame: Frame::default(),
            shown: Vec::new(),
            columns: vec![Col::Name],
            width,
            sort,
            reverse: false,
            filter,
            editing: None,
            paused: false,
            interval,
            help: false,
            error: None,
            selected: 0,
            documents: 0,
        }
    }

    /// A fetch's result: a new frame against the previous document, or an
    /// error shown above the last frame.
    pub fn on_fetch(&mut self, fetched: Result<Snapshot<'static>, SourceError>) {
        match fetched {
            Ok(snapshot) => {
                self.frame = model::frame(self.prev.as_ref(), &snapshot);
                self.prev = Some(snapshot);
                self.error = None;
                self.documents += 1;
                self.refresh();
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    pub fn resize(&mut self, width: u16) {
        self.width = width;
        self.refresh();
    }

    /// The filter in force: the one being typed, else the applied one.
    pub fn active_filter(&self) -> &str {
        self.editing.as_deref().unwrap_or(&self.filter)
    }

    /// Re-sorts, re-filters, re-fits and re-formats after a change.
    fn refresh(&mut self) {
        // A column whose signal is not measured cannot be the sort key.
        if !self.frame.columns.is_empty() && !self.frame.columns.contains(&self.sort) {
            self.sort = Col::Name;
        }
        model::sort(&mut self.frame.rows, self.sort, self.reverse);
        self.columns = model::fit(&self.frame.columns, self.width);
        let filter = self.active_filter().to_owned();
        let columns = &self.columns;
        self.shown = self
            .frame
            .rows
            .iter()
            .enumerate()
            .filter(|(_, row)| model::matches(row, &filter))
            .map(|(i, row)| (i, cells(row, columns)))
            .collect();
        self.selected = self.selected.min(self.shown.len().saturating_sub(1));
    }

    /// The row of a shown line.
    pub fn row(&self, shown: usize) -> Option<&Row> {
        let (i, _) = self.shown.get(shown)?;
        self.frame.rows.get(*i)
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Flow {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Flow::Quit;
        }
        if let Some(text) = &mut self.editing {
            match key.code {
                KeyCode::Enter => {
                    self.filter = text.clone();
                    self.editing = None;
                }
                KeyCode::Esc => self.editing = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => return Flow::Continue,
            }
            self.refresh();
            return Flow::Continue;
        }
        if self.help {
            // Any key closes the help; `q` still quits.
            self.help = false;
            return if key.code == KeyCode::Char('q') {
                Flow::Quit
            } else {
                Flow::Continue
            };
        }
        match key.code {
            KeyCode::Char('q') => return Flow::Quit,
            KeyCode::Char('h' | '?') => self.help = true,
            KeyCode::Left | KeyCode::Char('<') => self.move_sort(-1),
            KeyCode::Right | KeyCode::Char('>') => self.move_sort(1),
            KeyCode::Char('r') => {
                self.reverse = !self.reverse;
                self.refresh();
            }
            KeyCode::Char('/') => {
                self.editing = Some(self.filter.clone());
            }
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.refresh();
            }
            KeyCode::Char('p' | ' ') => self.paused = !self.paused,
            KeyCode::Char('+' | '=') => self.step_interval(1),
            KeyCode::Char('-') => self.step_interval(-1),
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(self.shown.len().saturating_sub(1));
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::PageDown => {
                self.selected = (self.selected + 10).min(self.shown.len().saturating_sub(1));
            }
            KeyCode::PageUp => self.selected = self.selected.saturating_sub(10),
            KeyCode::Home => self.selected = 0,
            KeyCode::End => self.selected = self.shown.len().saturating_sub(1),
            _ => {}
        }
        Flow::Continue
    }

    /// Sorts by the next or previous column that is shown.
    fn move_sort(&mut self, step: isize) {
        let columns = &self.columns;
        if columns.is_empty() {
            return;
        }
        let at = columns.iter().position(|c| *c == self.sort).unwrap_or(0);
        let n = columns.len() as isize;
        let next = (at as isize + step).rem_euclid(n) as usize;
        if let Some(col) = columns.get(next) {
            self.sort = *col;
            self.reverse = false;
        }
        self.refresh();
    }

    fn step_interval(&mut self, step: isize) {
        let now = self.interval.as_millis() as u64;
        let next = if step > 0 {
            INTERVALS_MS.iter().copied().find(|ms| *ms > now)
        } else {
            INTERVALS_MS.iter().rev().copied().find(|ms| *ms < now)
        };
        if let Some(ms) = next {
            self.interval = Duration::from_millis(ms);
        }
    }
}

/// A row's cells for `columns`: the name, then each value as written.
pub fn cells(row: &Row, columns: &[Col]) -> Vec<String> {
    columns
        .iter()
        .map(|col| {
            let mut cell = String::new();
            if *col == Col::Name {
                cell.push_str(&row.name);
            } else {
                col.format(row.value(*col), &mut cell);
            }
            cell
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use ratatui::crossterm::event::KeyEventKind;

    use super::*;
    use crate::api::{self, AgentStatus, Container, Cpu, Node, Probe};

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent {
            code,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: ratatui::crossterm::event::KeyEventState::NONE,
        }
    }

    fn doc(uptime: f64, cpu: &[(&str, f64, u64)]) -> Snapshot<'static> {
        Snapshot {
            api_version: api::API_VERSION,
            agent: AgentStatus {
                version: Cow::Borrowed("test"),
                uptime_seconds: uptime,
                collect_seconds: 0.0,
                probes: vec![Probe {
                    signal: Cow::Borrowed("runqueue"),
                    up: true,
                    reason: None,
                }],
                map_full_total: 0,
            },
            node: Node::default(),
            bucket_bounds_seconds: Cow::Owned(api::bucket_bounds_seconds()),
            containers: cpu
                .iter()
                .map(|(cgroup, usage, throttled)| Container {
                    cgroup: Cow::Owned((*cgroup).to_owned()),
                    cpu: Some(Cpu {
                        usage_seconds: Some(*usage),
                        periods: Some(uptime as u64 * 10),
                        throttled_periods: Some(*throttled),
                        ..Cpu::default()
                    }),
                    ..Container::default()
                })
                .collect(),
        }
    }

    fn app_with_two_documents() -> App {
        let mut app = App::new(
            "test".into(),
            Duration::from_secs(2),
            Col::Cpu,
            String::new(),
            120,
        );
        app.on_fetch(Ok(doc(10.0, &[("/busy", 1.0, 0), ("/throttled", 1.0, 0)])));
        app.on_fetch(Ok(doc(12.0, &[("/busy", 3.0, 1), ("/throttled", 1.5, 15)])));
        app
    }

    fn names(app: &App) -> Vec<String> {
        (0..app.shown.len())
            .filter_map(|i| app.row(i).map(|r| r.name.clone()))
            .collect()
    }

    #[test]
    fn keys_move_the_sort_column_and_reverse_it() {
        let mut app = app_with_two_documents();
        assert_eq!(names(&app), ["/busy", "/throttled"]);
        // CPU → LIMIT → THR%.
        app.on_key(key(KeyCode::Right));
        app.on_key(key(KeyCode::Right));
        assert_eq!(app.sort, Col::Throttled);
        assert_eq!(names(&app), ["/throttled", "/busy"]);
        app.on_key(key(KeyCode::Char('r')));
        assert_eq!(names(&app), ["/busy", "/throttled"]);
        app.on_key(key(KeyCode::Left));
        app.on_key(key(KeyCode::Left));
        app.on_key(key(KeyCode::Left));
        assert_eq!(app.sort, Col::Name);
    }

    #[test]
    fn typing_a_filter_narrows_the_rows_and_escape_clears_it() {
        let mut app = app_with_two_documents();
        app.on_key(key(KeyCode::Char('/')));
        for c in "thr".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert_eq!(names(&app), ["/throttled"], "applied while typing");
        app.on_key(key(KeyCode::Enter));
        assert_eq!(app.filter, "thr");
        // `q` typed into a filter is text, not quit.
        app.on_key(key(KeyCode::Char('/')));
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Flow::Continue);
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.filter, "thr");
        app.on_key(key(KeyCode::Esc));
        assert_eq!(names(&app).len(), 2);
    }

    #[test]
    fn pause_interval_help_and_quit() {
        let mut app = app_with_two_documents();
        app.on_key(key(KeyCode::Char('p')));
        assert!(app.paused);
        app.on_key(key(KeyCode::Char('+')));
        assert_eq!(app.interval, Duration::from_secs(5));
        app.on_key(key(KeyCode::Char('-')));
        app.on_key(key(KeyCode::Char('-')));
        assert_eq!(app.interval, Duration::from_secs(1));
        app.on_key(key(KeyCode::Char('?')));
        assert!(app.help);
        assert_eq!(app.on_key(key(KeyCode::Char('x'))), Flow::Continue);
        assert!(!app.help);
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Flow::Quit);
    }

    #[test]
    fn an_error_keeps_the_last_frame_and_the_next_document_clears_it() {
        let mut app = app_with_two_documents();
        app.on_fetch(Err(SourceError::Version {
            url: "x".into(),
            found: 2,
        }));
        assert!(app.error.is_some());
        assert_eq!(app.shown.len(), 2);
        app.on_fetch(Ok(doc(14.0, &[("/busy", 5.0, 1)])));
        assert!(app.error.is_none());
        assert_eq!(names(&app), ["/busy"], "a container that left is gone");
    }

    #[test]
    fn an_empty_document_and_a_tiny_terminal_do_not_panic() {
        let mut app = App::new(
            "test".into(),
            Duration::from_secs(1),
            Col::Cpu,
            String::new(),
            5,
        );
        app.on_key(key(KeyCode::Down));
        app.on_key(key(KeyCode::End));
        app.on_key(key(KeyCode::Right));
        app.on_fetch(Ok(doc(1.0, &[])));
        assert!(app.shown.is_empty());
        assert_eq!(app.columns, [Col::Name]);
    }
}
