//! `agent top --once`: one frame as a plain-text table or as JSON, for
//! scripts, tickets and tests.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::{
    app::cells,
    model::{self, Col, Frame},
};

/// Keeps the end of `name` (the informative part of a path) in `width`.
fn clip(name: &str, width: usize) -> String {
    let n = name.chars().count();
    if n <= width {
        return name.to_owned();
    }
    let tail: String = name.chars().skip(n + 1 - width).collect();
    format!("…{tail}")
}

/// The table, `width` columns wide (`None`: as wide as the rows need).
pub fn text(frame: &Frame, source: &str, width: Option<u16>) -> String {
    let h = &frame.header;
    let mut out = String::new();
    let fmt = |col: Col, v: Option<f64>| {
        let mut s = String::new();
        col.format(v, &mut s);
        s
    };
    let [cpu, memory, io] = h.pressure_some_percent;
    let _ = writeln!(
        out,
        "stallwatch top: {source}, over {}; node CPU {} of {} cores, memory {} of {}, pressure (some) cpu {}% memory {}% io {}%",
        h.interval_seconds
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s")),
        fmt(Col::Cpu, h.cpu_used),
        h.cpus.map_or_else(|| "-".to_owned(), |n| n.to_string()),
        fmt(Col::Mem, h.memory_used_bytes.map(|b| b as f64)),
        fmt(Col::Mem, h.memory_total_bytes.map(|b| b as f64)),
        fmt(Col::Throttled, cpu),
        fmt(Col::Throttled, memory),
        fmt(Col::Throttled, io),
    );
    let probes: Vec<String> = h
        .probes
        .iter()
        .map(|(signal, up, why)| match (up, why) {
            (true, _) => format!("{signal} up"),
            (false, Some(why)) => format!("{signal} DOWN ({why})"),
            (false, None) => format!("{signal} DOWN"),
        })
        .collect();
    let _ = writeln!(out, "probes: {}", probes.join(", "));

    let columns = model::fit(&frame.columns, width.unwrap_or(u16::MAX));
    let others: usize = columns
        .iter()
        .filter(|c| **c != Col::Name)
        .map(|c| usize::from(c.width()) + 1)
        .sum();
    let longest = frame
        .rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0);
    let name_width = match width {
        Some(w) => usize::from(w)
            .saturating_sub(others)
            .max(usize::from(model::NAME_MIN_WIDTH)),
        None => longest.max(usize::from(model::NAME_MIN_WIDTH)),
    };
    let line = |out: &mut String, texts: &[String]| {
        for (col, text) in columns.iter().zip(texts) {
            if *col == Col::Name {
                let _ = write!(out, "{:<name_width$}", clip(text, name_width));
            } else {
                let _ = write!(out, " {:>w$}", text, w = usize::from(col.width()));
            }
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    let titles: Vec<String> = columns.iter().map(|c| c.title().to_owned()).collect();
    line(&mut out, &titles);
    for row in &frame.rows {
        line(&mut out, &cells(row, &columns));
    }
    out
}

/// The frame as JSON: the node, the probes, and per container its labels
/// and a value (or null) per column whose signal exists.
pub fn json(frame: &Frame, source: &str) -> Value {
    let h = &frame.header;
    let [cpu, memory, io] = h.pressure_some_percent;
    let containers: Vec<Value> = frame
        .rows
        .iter()
        .map(|row| {
            let mut object = Map::new();
            object.insert("name".into(), json!(row.name));
            object.insert("cgroup".into(), json!(row.cgroup));
            object.insert("container_id".into(), json!(row.container_id));
            object.insert("pod_uid".into(), json!(row.pod_uid));
            object.insert("systemd_unit".into(), json!(row.systemd_unit));
            object.insert("namespace".into(), json!(row.namespace));
            object.insert("pod".into(), json!(row.pod));
            object.insert("container".into(), json!(row.container));
            for col in frame.columns.iter().filter(|c| **c != Col::Name) {
                object.insert(col.json_key().into(), json!(row.value(*col)));
            }
            Value::Object(object)
        })
        .collect();
    json!({
        "source": source,
        "interval_seconds": h.interval_seconds,
        "agent": {
            "version": h.agent_version,
            "collect_seconds": h.collect_seconds,
            "probes": h.probes.iter().map(|(signal, up, why)| json!({
                "signal": signal, "up": up, "reason": why,
            })).collect::<Vec<_>>(),
        },
        "node": {
            "cpus": h.cpus,
            "cpu_used_cores": h.cpu_used,
            "memory_used_bytes": h.memory_used_bytes,
            "memory_total_bytes": h.memory_total_bytes,
            "pressure_some_percent": {"cpu": cpu, "memory": memory, "io": io},
        },
        "columns": frame.columns.iter().filter(|c| **c != Col::Name).map(|c| c.json_key()).collect::<Vec<_>>(),
        "containers": containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::{Header, Row};

    fn frame() -> Frame {
        let row = |name: &str| Row::with(name, &[(Col::Cpu, 0.25), (Col::Throttled, 80.0)]);
        Frame {
            header: Header {
                agent_version: "t".into(),
                cpus: Some(2),
                probes: vec![("disk".into(), false, Some("no block tracepoints".into()))],
                interval_seconds: Some(2.0),
                ..Header::default()
            },
            columns: vec![Col::Name, Col::Cpu, Col::Throttled],
            rows: vec![
                row("short"),
                row("a-very-long-name-of-a-systemd-unit.service"),
            ],
        }
    }

    #[test]
    fn the_table_has_a_heading_and_a_line_per_container() {
        let text = text(&frame(), "http://x:1", None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("over 2.0s") && lines[0].contains("of 2 cores"),
            "{text}"
        );
        assert!(
            lines[1].contains("disk DOWN (no block tracepoints)"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("NAME") && lines[2].ends_with("THR%"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("short ") && lines[3].ends_with("0.25   80.0"),
            "{text}"
        );
        assert!(
            lines[4].starts_with("a-very-long-name-of-a-systemd-unit.service"),
            "{text}"
        );
    }

    #[test]
    fn a_narrow_table_clips_names_from_the_left() {
        let text = text(&frame(), "x", Some(30));
        let last = text.lines().last().unwrap_or_default();
        assert!(last.starts_with("…"), "{text}");
        assert!(last.contains("service"), "{text}");
        assert!(last.chars().count() <= 30, "{text}");
    }

    #[test]
    fn json_has_a_value_or_null_per_column() {
        let doc = json(&frame(), "x");
        assert_eq!(doc["containers"][0]["cpu_cores"], json!(0.25));
        assert_eq!(doc["containers"][0]["throttled_percent"], json!(80.0));
        assert_eq!(doc["columns"], json!(["cpu_cores", "throttled_percent"]));
        assert_eq!(doc["agent"]["probes"][0]["up"], json!(false));
    }
}
