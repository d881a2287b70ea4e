//! events.jsonl: one JSON object a line, appended, never rewritten: what happened to the
//! machine and when (`created`, `starting`, `step`, `ready`, `stopping`, `stopped`,
//! `crashed`, `failed`, `set`).

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub time: DateTime<Utc>,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    pub fn new(event: &str) -> Event {
        Event {
            time: Utc::now(),
            event: event.into(),
            detail: None,
        }
    }
    pub fn with(event: &str, detail: impl Into<String>) -> Event {
        Event {
            detail: Some(detail.into()),
            ..Event::new(event)
        }
    }
}

/// One `write` of one line with O_APPEND, so concurrent writers never interleave.
pub fn append(path: &Path, e: &Event) -> io::Result<()> {
    let mut line = serde_json::to_vec(e).expect("event serializes");
    line.push(b'\n');
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(&line)
}

/// All events; lines that do not parse (a torn write after a crash) are skipped.
pub fn read(path: &Path) -> Vec<Event> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("events.jsonl");
        append(&p, &Event::new("created")).unwrap();
        append(&p, &Event::with("step", "Starting QEMU")).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"torn")
            .unwrap();
        let ev = read(&p);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].event, "step");
        assert_eq!(ev[1].detail.as_deref(), Some("Starting QEMU"));
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("{\"time\":\""), "{text}");
    }
}
