//! `capsa volume create|ls|inspect|rm|prune|exists`, with Podman's flags, output and
//! exit codes (`rm`: 1 no such volume, 2 volume in use).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use anyhow::{Result, bail};
use capsa_engine::Engine;
use capsa_engine::volume::{
    CreateOptions, InUse, VolumeError, VolumeFilter, VolumeRecord, Volumes, in_use_by_containers,
};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::CodedError;
use crate::output::{self, Column, Format};

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a new volume
    Create(VolumeCreateArgs),
    /// List volumes
    #[command(visible_alias = "list")]
    Ls(VolumeLsArgs),
    /// Display detailed information on one or more volumes
    Inspect(VolumeInspectArgs),
    /// Remove one or more volumes
    #[command(visible_alias = "remove")]
    Rm(VolumeRmArgs),
    /// Remove all unused volumes
    Prune(VolumePruneArgs),
    /// Check if a volume exists
    Exists(VolumeExistsArgs),
}

#[derive(Args, Debug)]
pub struct VolumeCreateArgs {
    /// Name of the volume (default: a generated 64-hex-digit name)
    pub name: Option<String>,
    /// Volume driver (only "local")
    #[arg(short, long, default_value = "local")]
    pub driver: String,
    /// Set metadata for a volume (KEY=VALUE or KEY)
    #[arg(short, long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Set driver specific options: o=uid=N,gid=N,nosuid,nodev,noexec; uid=N; gid=N; nocopy
    #[arg(short, long = "opt", value_name = "OPT")]
    pub opts: Vec<String>,
    /// Do not fail if the volume already exists
    #[arg(long)]
    pub ignore: bool,
}

#[derive(Args, Debug)]
pub struct VolumeLsArgs {
    /// Filter volume output (name, label, label!, dangling, driver, opt, scope, anonymous, until, since)
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Format volume output using JSON or a Go template
    #[arg(long)]
    pub format: Option<String>,
    /// Do not print headers
    #[arg(short = 'n', long)]
    pub noheading: bool,
    /// Print volume output in quiet mode (names only)
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct VolumeInspectArgs {
    pub volumes: Vec<String>,
    /// Inspect all volumes
    #[arg(short, long)]
    pub all: bool,
    /// Format volume output using JSON or a Go template
    #[arg(short, long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct VolumeRmArgs {
    pub volumes: Vec<String>,
    /// Remove all volumes
    #[arg(short, long)]
    pub all: bool,
    /// Do not fail on volumes that do not exist
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct VolumePruneArgs {
    /// Only prune the volumes these filters select (label, label!, until, name, …)
    #[arg(long)]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct VolumeExistsArgs {
    pub volume: String,
}

pub fn run(engine: &Engine, cmd: VolumeCommand) -> Result<()> {
    let root = engine.store().root();
    let vols = Volumes::new(root)?;
    match cmd {
        VolumeCommand::Create(a) => create(&vols, a),
        VolumeCommand::Ls(a) => list(&vols, &in_use_by_containers(root)?, a),
        VolumeCommand::Inspect(a) => inspect(&vols, a),
        VolumeCommand::Rm(a) => remove(&vols, &in_use_by_containers(root)?, a),
        VolumeCommand::Prune(a) => prune(&vols, &in_use_by_containers(root)?, a),
        VolumeCommand::Exists(a) => match vols.lookup(&a.volume) {
            Ok(_) => Ok(()),
            Err(VolumeError::NotFound(_)) => Err(crate::Exit(1).into()),
            Err(e) => Err(e.into()),
        },
    }
}

/// `KEY=VALUE` or `KEY` (an empty value), as `--label` and `--opt` take them.
fn key_values(what: &str, items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for i in items {
        let (k, v) = i.split_once('=').unwrap_or((i, ""));
        if k.is_empty() {
            bail!("invalid {what} {i:?}: give KEY=VALUE or KEY");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

fn create(vols: &Volumes, a: VolumeCreateArgs) -> Result<()> {
    let v = vols.create(CreateOptions {
        name: a.name,
        driver: a.driver,
        labels: key_values("label", &a.labels)?,
        options: key_values("option", &a.opts)?,
        ignore_existing: a.ignore,
        chown_on_first_use: true,
        ..Default::default()
    })?;
    println!("{}", v.name);
    Ok(())
}

/// Go's time.Time String(), which Podman's templates print for CreatedAt.
fn go_time(v: &VolumeRecord) -> String {
    let Some(t) = v.created_time() else {
        return v.created.clone();
    };
    let frac = match t.timestamp_subsec_nanos() {
        0 => String::new(),
        ns => format!(".{}", format!("{ns:09}").trim_end_matches('0')),
    };
    format!("{}{frac} +0000 UTC", t.format("%Y-%m-%d %H:%M:%S"))
}

/// The fields a `--format` template sees: the inspect document with every field
/// present (Go has zero values where JSON omits them) and CreatedAt as Go prints times.
fn template_row(v: &VolumeRecord) -> Value {
    let mut r = serde_json::to_value(v.inspect()).expect("serialisable");
    r["CreatedAt"] = json!(go_time(v));
    r["UID"] = json!(v.uid.unwrap_or(0));
    r["GID"] = json!(v.gid.unwrap_or(0));
    r["Anonymous"] = json!(v.anonymous);
    r["NeedsCopyUp"] = json!(v.needs_copy_up);
    r["NeedsChown"] = json!(v.needs_chown);
    r
}

/// JSON documents in Podman's field order.
fn print_json(vols: &[VolumeRecord]) -> Result<()> {
    let docs: Vec<_> = vols.iter().map(VolumeRecord::inspect).collect();
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &docs)?;
    writeln!(out)?;
    Ok(())
}

fn list(vols: &Volumes, in_use: &InUse, a: VolumeLsArgs) -> Result<()> {
    let filter = VolumeFilter::parse(&a.filter)?;
    let found = vols.list_filtered(&filter, in_use)?;
    if a.quiet {
        for v in &found {
            println!("{}", v.name);
        }
        return Ok(());
    }
    let format = Format::parse(
        a.format.as_deref(),
        vec![
            Column {
                header: "DRIVER",
                field: "Driver",
            },
            Column {
                header: "VOLUME NAME",
                field: "Name",
            },
        ],
    );
    if matches!(format, Format::Json) {
        return print_json(&found);
    }
    let mut rows: Vec<Value> = found.iter().map(template_row).collect();
    let format = match format {
        // As Podman does, the header is the template run on the column names, so
        // `{{.Name}}` gets Podman's "VOLUME NAME".
        Format::Template {
            template,
            table: true,
        } => {
            if !a.noheading {
                rows.insert(0, header_row());
            }
            Format::Template {
                template,
                table: false,
            }
        }
        other => other,
    };
    output::print(&format, &rows, &Value::Null, a.noheading)
}

/// Every template field mapped to its column header.
fn header_row() -> Value {
    let fields = template_row(&VolumeRecord::default());
    let mut h = serde_json::Map::new();
    for k in fields.as_object().expect("an object").keys() {
        let header = match k.as_str() {
            "Name" => "VOLUME NAME".to_string(),
            other => output::header_for(other),
        };
        h.insert(k.clone(), Value::String(header));
    }
    Value::Object(h)
}

fn inspect(vols: &Volumes, a: VolumeInspectArgs) -> Result<()> {
    if a.all && !a.volumes.is_empty() {
        bail!("--all and volume names cannot be given together");
    }
    if !a.all && a.volumes.is_empty() {
        bail!("provide one or more volume names or use --all");
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    if a.all {
        found = vols.list()?;
    }
    for name in &a.volumes {
        match vols.lookup(name) {
            Ok(v) => found.push(v),
            Err(VolumeError::NotFound(_)) => missing.push(name.clone()),
            Err(e) => return Err(e.into()),
        }
    }
    match a.format.as_deref() {
        None | Some("json") | Some("{{json .}}") => print_json(&found)?,
        Some(f) => {
            let rows: Vec<Value> = found.iter().map(template_row).collect();
            output::print(
                &Format::Template {
                    template: f.to_string(),
                    table: false,
                },
                &rows,
                &Value::Null,
                true,
            )?;
        }
    }
    match missing.as_slice() {
        [] => Ok(()),
        [one] => bail!("no such volume {one}"),
        many => bail!("no such volumes: {}", many.join(", ")),
    }
}

fn remove(vols: &Volumes, in_use: &InUse, a: VolumeRmArgs) -> Result<()> {
    // Names, or --all: exactly one of them.
    if a.all != a.volumes.is_empty() {
        bail!("choose either one or more volumes or all");
    }
    let targets: Vec<String> = if a.all {
        vols.list()?.into_iter().map(|v| v.name).collect()
    } else {
        a.volumes.clone()
    };
    let mut errors: Vec<CodedError> = Vec::new();
    for t in &targets {
        let result = vols
            .lookup(t)
            .and_then(|v| vols.remove(&v.name, in_use, false));
        match result {
            Ok(v) => println!("{}", v.name),
            Err(VolumeError::NotFound(_)) if a.force => {}
            Err(e @ VolumeError::NotFound(_)) => errors.push(CodedError {
                code: 1,
                message: e.to_string(),
            }),
            Err(e @ VolumeError::InUse { .. }) => {
                let mut message = e.to_string();
                if a.force {
                    // Podman removes those containers too; here they are removed with
                    // `capsa rm` first.
                    message.push_str(": remove those containers first");
                }
                errors.push(CodedError { code: 2, message })
            }
            Err(e) => return Err(e.into()),
        }
    }
    let code = errors.iter().map(|e| e.code).max();
    let Some(last) = errors.pop() else {
        return Ok(());
    };
    for e in &errors {
        eprintln!("Error: {e}");
    }
    Err(CodedError {
        code: code.unwrap_or(last.code),
        message: last.message,
    }
    .into())
}

fn prune(vols: &Volumes, in_use: &InUse, a: VolumePruneArgs) -> Result<()> {
    let filter = VolumeFilter::parse(&a.filter)?;
    if !a.force {
        let doomed = vols.prune_candidates(&filter, in_use)?;
        let mut err = std::io::stderr().lock();
        writeln!(
            err,
            "WARNING! This will remove all volumes not used by at least one container. The following volumes will be removed:"
        )?;
        if doomed.is_empty() {
            writeln!(err, "No dangling volumes found")?;
            return Ok(());
        }
        for v in &doomed {
            writeln!(err, "{}", v.name)?;
        }
        write!(err, "Are you sure you want to continue? [y/N] ")?;
        err.flush()?;
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line)? == 0 {
            writeln!(err)?;
            bail!("no answer on stdin: pass --force to prune without asking");
        }
        if !matches!(line.trim(), "y" | "Y" | "yes" | "Yes") {
            return Ok(());
        }
    }
    for p in vols.prune(&filter, in_use)? {
        println!("{}", p.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_options_parse() {
        let m = key_values("label", &["a=b".into(), "c".into(), "d=e=f".into()]).unwrap();
        assert_eq!(m.get("a").map(String::as_str), Some("b"));
        assert_eq!(m.get("c").map(String::as_str), Some(""));
        assert_eq!(m.get("d").map(String::as_str), Some("e=f"));
        // Tried: a label without a key.
        let e = key_values("label", &["=y".into()]).unwrap_err();
        assert_eq!(e.to_string(), "invalid label \"=y\": give KEY=VALUE or KEY");
    }

    #[test]
    fn created_at_prints_like_go() {
        let v = VolumeRecord {
            created: "2026-11-28T22:13:18.46973619Z".into(),
            ..Default::default()
        };
        assert_eq!(go_time(&v), "2026-11-28 22:13:18.46973619 +0000 UTC");
        let row = template_row(&v);
        assert_eq!(header_row()["Name"], "VOLUME NAME");
        assert_eq!(header_row()["CreatedAt"], "CREATED AT");
        assert_eq!(row["UID"], 0);
        assert_eq!(row["Anonymous"], false);
        assert_eq!(row["Scope"], "local");
    }
}
