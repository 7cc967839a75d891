//! `agent top`: what each container on this node waits for, live.
//!
//! It reads the running agent's JSON API ([`crate::api`]) every interval and
//! derives rates and quantiles between two documents itself, so the agent
//! keeps no state per viewer; `--standalone` loads the probes in this
//! process instead. `model` turns documents into rows, `app` holds the live
//! view's state and keys, `tui` draws it, `once` prints one frame.

pub mod app;
pub mod model;
pub mod once;
pub mod source;
pub mod tui;

use std::{io::IsTerminal as _, thread};

use anyhow::Context as _;

use crate::cli::{TopArgs, TopOutput};
use source::{Local, Remote, Source};

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let mut source: Box<dyn Source> = if args.standalone {
        let started = crate::startup::collector(&args.collect)
            .context("loading the probes (--standalone)")?;
        Box::new(Local::new(started.collector))
    } else {
        Box::new(Remote::new(&args.url)?)
    };
    if args.once {
        return once(source.as_mut(), &args);
    }
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("the live view needs a terminal; use --once for a table on stdout");
    }
    let app = app::App::new(source.describe(), args.interval, args.sort, args.filter, 80);
    tui::run(source, app)
}

/// Two readings one interval apart, printed as one frame.
fn once(source: &mut dyn Source, args: &TopArgs) -> anyhow::Result<()> {
    let first = source.fetch()?;
    thread::sleep(args.interval);
    let second = source.fetch()?;
    let mut frame = model::frame(Some(&first), &second);
    if !frame.columns.contains(&args.sort) {
        anyhow::bail!(
            "cannot sort by `{}`: its signal is not measured (columns: {})",
            args.sort.key(),
            frame
                .columns
                .iter()
                .map(|c| c.key())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    model::sort(&mut frame.rows, args.sort, false);
    frame.rows.retain(|row| model::matches(row, &args.filter));
    let describe = source.describe();
    let output = match args.output {
        TopOutput::Json => {
            let mut text = serde_json::to_string_pretty(&once::json(&frame, &describe))
                .context("encoding the frame as JSON")?;
            text.push('\n');
            text
        }
        TopOutput::Text => {
            let width = std::io::stdout()
                .is_terminal()
                .then(|| ratatui::crossterm::terminal::size().ok().map(|(w, _)| w))
                .flatten();
            once::text(&frame, &describe, width)
        }
    };
    print!("{output}");
    Ok(())
}
