//! The output printer: tables aligned like Podman's (Go tabwriter), `--format json`, and
//! Go templates with the `table` directive. stdout carries data only.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::gotemplate::{Template, normalize_escapes};
use crate::tabwriter::TabWriter;

/// One column of a default table: its header and the template field it shows.
pub struct Column {
    pub header: &'static str,
    pub field: &'static str,
}

/// How a list command prints rows (each row a JSON object of template fields).
pub enum Format {
    /// Default table with these columns.
    Table(Vec<Column>),
    /// `--format json`: the JSON documents as given.
    Json,
    /// A Go template; `table` adds a header row.
    Template { template: String, table: bool },
}

impl Format {
    pub fn parse(format: Option<&str>, default: Vec<Column>) -> Format {
        match format.map(str::trim) {
            None | Some("") | Some("table") => Format::Table(default),
            Some("json") | Some("{{json .}}") => Format::Json,
            Some(f) => match f.strip_prefix("table") {
                Some(rest) if rest.starts_with(char::is_whitespace) => Format::Template {
                    template: rest.trim_start().to_string(),
                    table: true,
                },
                _ => Format::Template {
                    template: f.to_string(),
                    table: false,
                },
            },
        }
    }
}

/// Header text for a template field, as Podman derives it.
pub fn header_for(field: &str) -> String {
    match field {
        "ID" | "Id" => "IMAGE ID".into(),
        "CreatedSince" | "Created" => "CREATED".into(),
        "CreatedAt" => "CREATED AT".into(),
        "CreatedTime" => "CREATED TIME".into(),
        other => {
            let mut out = String::new();
            let chars: Vec<char> = other.chars().collect();
            for (i, c) in chars.iter().enumerate() {
                if i > 0
                    && c.is_uppercase()
                    && (chars[i - 1].is_lowercase()
                        || chars.get(i + 1).is_some_and(|n| n.is_lowercase()))
                {
                    out.push(' ');
                }
                out.extend(c.to_uppercase());
            }
            out
        }
    }
}

/// Prints `rows` (template fields) or `docs` (for json) per `format`.
pub fn print(format: &Format, rows: &[Value], docs: &Value, noheading: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, docs)?;
            writeln!(out)?;
        }
        Format::Table(cols) => {
            let mut tw = TabWriter::podman();
            if !noheading {
                let h: Vec<&str> = cols.iter().map(|c| c.header).collect();
                tw.write_str(&format!("{}\n", h.join("\t")));
            }
            for r in rows {
                let cells: Vec<String> = cols
                    .iter()
                    .map(|c| plain(r.get(c.field).unwrap_or(&Value::Null)))
                    .collect();
                tw.write_str(&format!("{}\n", cells.join("\t")));
            }
            out.write_all(tw.finish().as_bytes())?;
        }
        Format::Template { template, table } => {
            let src = normalize_escapes(template);
            let t =
                Template::parse(&src).with_context(|| format!("parsing --format {template:?}"))?;
            let mut tw = TabWriter::podman();
            if *table && !noheading {
                tw.write_str(&format!("{}\n", headers_of(&src)));
            }
            for r in rows {
                let mut line = t
                    .execute(r)
                    .with_context(|| format!("executing --format {template:?}"))?;
                if !line.ends_with('\n') {
                    line.push('\n');
                }
                tw.write_str(&line);
            }
            out.write_all(tw.finish().as_bytes())?;
        }
    }
    Ok(())
}

/// The header row of a `table` template: each `{{.Field}}` becomes its header, the text
/// between actions is kept.
fn headers_of(src: &str) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let action = rest[start + 2..start + end].trim().trim_matches('-').trim();
        let field = action
            .split_whitespace()
            .find_map(|w| w.strip_prefix('.'))
            .unwrap_or(action);
        let field = field.split('.').next().unwrap_or(field);
        out.push_str(&header_for(field));
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out.trim_end_matches('\n').to_string()
}

/// A value as a table cell.
pub fn plain(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Sizes as Podman prints them (go-units HumanSizeWithPrecision, 3 significant digits,
/// decimal units).
/// `inspect`'s output: the documents as a pretty JSON array, or each through a Go
/// template given with `--format`.
pub fn print_inspect(docs: Vec<Value>, format: Option<&str>) -> Result<()> {
    match format {
        None | Some("json") => {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &Value::Array(docs))?;
            writeln!(out)?;
            Ok(())
        }
        Some(f) => print(
            &Format::Template {
                template: f.to_string(),
                table: false,
            },
            &docs,
            &Value::Null,
            true,
        ),
    }
}

pub fn human_size(bytes: u64) -> String {
    go_size(bytes, 1000.0, &SI_UNITS, 3, " ")
}

/// go-units' decimal units.
pub const SI_UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
/// go-units' binary units.
pub const IEC_UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

/// A size as go-units formats it: divided by `base` while it is at least `base`, printed
/// with Go's `%.<precision>g`, then `sep` and the unit.
pub fn go_size(bytes: u64, base: f64, units: &[&str], precision: i32, sep: &str) -> String {
    let mut size = bytes as f64;
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    format!("{}{sep}{}", go_g(size, precision), units[i])
}

/// Go's `%.<precision>g` for the magnitudes a size takes (0 ≤ x < 10^precision).
fn go_g(x: f64, precision: i32) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let digits_before = if x >= 1.0 {
        (x.log10().floor() as i32) + 1
    } else {
        0
    };
    let decimals = (precision - digits_before).max(0) as usize;
    let s = format!("{x:.decimals$}");
    // A value that rounds up to 10^precision keeps its significant digits as Go does
    // ("1e+03" for %.3g).
    if s.split('.')
        .next()
        .is_some_and(|int| int.len() > precision as usize)
    {
        return format!("1e+{precision:02}");
    }
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// "2 hours ago" as Podman prints it (go-units HumanDuration).
pub fn human_since(t: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (chrono::Utc::now() - t).num_seconds().max(0);
    format!("{} ago", human_duration(secs))
}

pub fn human_duration(secs: i64) -> String {
    let minutes = secs / 60;
    let hours = secs / 3600;
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

/// Parses an RFC 3339 time as found in image configs.
pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Podman's `CreatedAt` rendering: Go's time.Time String().
pub fn go_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S %z UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_go_units() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(868), "868 B");
        assert_eq!(human_size(1_000), "1 kB");
        assert_eq!(human_size(1_460_000), "1.46 MB");
        assert_eq!(human_size(7_600_000), "7.6 MB");
        assert_eq!(human_size(123_456_789), "123 MB");
        assert_eq!(human_size(999_999), "1e+03 kB");
    }

    #[test]
    fn durations_like_go_units() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(3600 * 3), "3 hours");
        assert_eq!(human_duration(3600 * 24 * 3), "3 days");
        assert_eq!(human_duration(3600 * 24 * 365 * 3), "3 years");
    }

    #[test]
    fn table_headers_from_templates() {
        assert_eq!(
            headers_of("{{.ID}}\t{{.Repository}}"),
            "IMAGE ID\tREPOSITORY"
        );
        assert_eq!(headers_of("{{.CreatedAt}} {{.Size}}"), "CREATED AT SIZE");
        assert_eq!(header_for("VirtualSize"), "VIRTUAL SIZE");
    }

    #[test]
    fn format_parsing() {
        assert!(matches!(Format::parse(Some("json"), vec![]), Format::Json));
        match Format::parse(Some("table {{.ID}}"), vec![]) {
            Format::Template { template, table } => {
                assert!(table);
                assert_eq!(template, "{{.ID}}");
            }
            _ => panic!("expected a template"),
        }
    }
}
