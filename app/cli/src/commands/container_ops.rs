//! Commands on containers that exist: logs, attach, restart, top, port, rename, pause,
//! unpause, stats, `container prune` and `container exists`, with Podman's flags,
//! output and exit codes.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use capsa_engine::Engine;
use capsa_engine::container::lifecycle::{ContainerError, ExecOptions};
use capsa_engine::container::logs::{self, LogEntry, LogOptions, Stream};
use capsa_engine::container::ops::{self, ContainerStats, OpsError, PruneFilter};
use capsa_engine::container::state::{ContainerRecord, StateError, Status};
use capsa_engine::network::ports::PortMapping;
use clap::Args;
use serde_json::{Value, json};

use crate::Exit;
use crate::commands::container::container_err;
use crate::gotemplate::{Template, normalize_escapes};
use crate::output::{self, Column, Format};
use crate::tabwriter::TabWriter;

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Output the containers with different colors in the log
    #[arg(long)]
    pub color: bool,
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Act on the latest container capsa is aware of
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Output the container name in the log
    #[arg(short = 'n', long)]
    pub names: bool,
    /// Show logs since TIMESTAMP
    #[arg(long, value_name = "TIMESTAMP")]
    pub since: Option<String>,
    /// Output the specified number of LINES at the end of the logs (-1: all)
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_name = "LINES")]
    pub tail: i64,
    /// Output the timestamps in the log
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Show logs until TIMESTAMP
    #[arg(long, value_name = "TIMESTAMP")]
    pub until: Option<String>,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Key sequence for detaching a container (default ctrl-p,ctrl-q)
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Act on the latest container capsa is aware of
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Do not attach STDIN
    #[arg(long)]
    pub no_stdin: bool,
    /// Proxy received signals to the process (default true)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub sig_proxy: Option<bool>,
    pub container: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// Restart all containers (with --running: all running ones)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Act on the latest container capsa is aware of
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Restart only running containers
    #[arg(long)]
    pub running: bool,
    /// Seconds to wait for stop before killing the container
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<u32>,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Act on the latest container capsa is aware of (every argument is a descriptor)
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// The container, then ps descriptors (user, pid, ppid, pcpu, etime, tty, time,
    /// args, comm, group, nice, pgid, huser, hpid, hgroup, rss, vsz, state, stime, …)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CONTAINER [DESCRIPTORS...]"
    )]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PortArgs {
    /// Display port information for all containers
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Act on the latest container capsa is aware of
    #[arg(short = 'l', long)]
    pub latest: bool,
    pub container: Option<String>,
    /// Only this container port: PRIVATE_PORT[/PROTO]
    pub port: Option<String>,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    pub container: String,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct PauseArgs {
    /// Act on all running (for unpause: paused) containers
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Act on the latest container capsa is aware of
    #[arg(short = 'l', long)]
    pub latest: bool,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default: only running ones)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Pretty-print container statistics to JSON or using a Go template
    #[arg(long)]
    pub format: Option<String>,
    /// Time in seconds between stats reports
    #[arg(short = 'i', long, default_value_t = 5)]
    pub interval: u64,
    /// Act on the latest container capsa is aware of
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Disable resetting the screen between intervals
    #[arg(long)]
    pub no_reset: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long)]
    pub no_stream: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ContainerPruneArgs {
    /// Provide filter values (until=, label=KEY[=VALUE], label!=KEY[=VALUE])
    #[arg(long)]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ContainerExistsArgs {
    pub container: String,
}

/// An error of this module as the binary reports it: the engine's own errors keep
/// their hints and codes through `container_err`; the others are printed here with
/// their hint.
fn ops_err(e: OpsError) -> anyhow::Error {
    match e {
        OpsError::Container(c) => container_err(c),
        e => {
            let code = e.exit_code();
            let hint = e.hint();
            let err = anyhow::Error::from(e);
            match hint {
                None => err,
                Some(h) => {
                    crate::report(&err);
                    eprintln!("hint: {h}");
                    Exit(code).into()
                }
            }
        }
    }
}

fn is_not_found(e: &ContainerError) -> bool {
    matches!(e, ContainerError::State(StateError::NotFound(_)))
}

/// The one container a command acts on: `--latest` or the name given.
fn one(
    engine: &Engine,
    latest: bool,
    name: Option<&str>,
    missing: &str,
) -> Result<ContainerRecord> {
    if latest {
        return engine.latest_container().map_err(ops_err);
    }
    match name {
        Some(n) => engine.container(n).map_err(container_err),
        None => bail!("{missing}"),
    }
}

/// Prints each container's error in a multi-container command; the last code wins.
fn finish(failed: Option<i32>) -> Result<()> {
    match failed {
        Some(code) => Err(Exit(code).into()),
        None => Ok(()),
    }
}

// ---- logs ----------------------------------------------------------------------

const COLORS: [&str; 6] = [
    "\x1b[0;32m",
    "\x1b[0;33m",
    "\x1b[0;34m",
    "\x1b[0;35m",
    "\x1b[0;36m",
    "\x1b[0;31m",
];

/// Writes log entries to stdout or stderr as their stream says, each after its
/// prefix; output is flushed when the stream changes so that the two interleave in
/// order on a terminal.
struct LogPrinter {
    timestamps: bool,
    flush_each: bool,
    last: Option<Stream>,
}

impl LogPrinter {
    fn write(&mut self, prefix: &str, e: &LogEntry) -> std::io::Result<()> {
        let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
        if self.last.is_some_and(|s| s != e.stream) {
            out.flush()?;
        }
        self.last = Some(e.stream);
        let w: &mut dyn Write = match e.stream {
            Stream::Stdout => &mut out,
            Stream::Stderr => &mut err,
        };
        w.write_all(prefix.as_bytes())?;
        if self.timestamps {
            w.write_all(logs::format_timestamp(&e.time).as_bytes())?;
            w.write_all(b" ")?;
        }
        w.write_all(&e.data)?;
        if self.flush_each {
            w.flush()?;
        }
        Ok(())
    }
}

fn parse_time(flag: &str, v: &Option<String>) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    v.as_deref()
        .map(|t| {
            logs::parse_time_filter(t, chrono::Utc::now())
                .with_context(|| format!("parsing {flag} {t:?}"))
        })
        .transpose()
}

pub fn logs(engine: &Engine, a: LogsArgs) -> Result<()> {
    let recs: Vec<ContainerRecord> = if a.latest {
        vec![engine.latest_container().map_err(ops_err)?]
    } else {
        if a.containers.is_empty() {
            bail!("specify at least one container name or ID to log");
        }
        a.containers
            .iter()
            .map(|c| engine.container(c).map_err(container_err))
            .collect::<Result<_>>()?
    };
    for r in &recs {
        engine.container_log(r).map_err(ops_err)?;
    }
    let opts = LogOptions {
        tail: (a.tail >= 0).then_some(a.tail as usize),
        since: parse_time("--since", &a.since)?,
        until: parse_time("--until", &a.until)?,
        timestamps: a.timestamps,
        follow: a.follow,
    };
    let multi = recs.len() > 1;
    let color = a.color && std::env::var_os("NO_COLOR").is_none();
    let prefixes: Vec<String> = recs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if !multi {
                return String::new();
            }
            let who = if a.names {
                r.name.clone()
            } else {
                r.id[..12].to_string()
            };
            if color {
                format!("{}{who}\x1b[0m ", COLORS[i % COLORS.len()])
            } else {
                format!("{who} ")
            }
        })
        .collect();
    let printer = Mutex::new(LogPrinter {
        timestamps: a.timestamps,
        flush_each: a.follow,
        last: None,
    });
    let print = |prefix: &str, e: &LogEntry| {
        printer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(prefix, e)
    };
    if !multi {
        engine
            .read_container_log(&recs[0], &opts, |e| print("", &e))
            .map_err(ops_err)?;
    } else if !a.follow {
        // Every container's lines, in the order of their times.
        let mut all: Vec<(usize, LogEntry)> = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            engine
                .read_container_log(r, &opts, |e| {
                    all.push((i, e));
                    Ok(())
                })
                .map_err(ops_err)?;
        }
        all.sort_by_key(|(_, e)| e.time);
        for (i, e) in &all {
            print(&prefixes[*i], e)?;
        }
    } else {
        let results: Vec<Result<(), OpsError>> = std::thread::scope(|s| {
            let handles: Vec<_> = recs
                .iter()
                .zip(&prefixes)
                .map(|(r, p)| {
                    let print = &print;
                    let opts = &opts;
                    s.spawn(move || engine.read_container_log(r, opts, |e| print(p, &e)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Ok(())))
                .collect()
        });
        for r in results {
            r.map_err(ops_err)?;
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

// ---- attach ----------------------------------------------------------------------

pub async fn attach(engine: &Engine, a: AttachArgs) -> Result<()> {
    let rec = one(
        engine,
        a.latest,
        a.container.as_deref(),
        "you must provide the name or id of a running container",
    )?;
    if rec.status != Status::Running {
        bail!("you can only attach to running containers");
    }
    // Without -i (or a terminal) the container has no stdin to feed; detach keys need
    // ours read, which only a terminal in raw mode makes useful.
    let stdin = !a.no_stdin && (rec.config.stdin || rec.config.tty);
    crate::commands::attach::attach_running(
        engine,
        &rec.id,
        stdin,
        rec.config.tty,
        a.detach_keys.as_deref(),
        a.sig_proxy.unwrap_or(true),
    )
    .await?;
    // Podman ends every attach session with a newline on stdout and exits 0, whether
    // the container exited (with any code) or the user detached.
    println!();
    Ok(())
}

// ---- restart, pause, unpause ------------------------------------------------------

/// The containers a multi-container command acts on: `(as printed, ID)`.
fn targets(
    engine: &Engine,
    all: bool,
    latest: bool,
    names: &[String],
    keep: impl Fn(&ContainerRecord) -> bool,
) -> Result<Vec<(String, String)>> {
    if all {
        return Ok(engine
            .list_containers()
            .map_err(container_err)?
            .into_iter()
            .filter(|c| keep(c))
            .map(|c| (c.id.clone(), c.id))
            .collect());
    }
    if latest {
        let r = engine.latest_container().map_err(ops_err)?;
        return Ok(vec![(r.id.clone(), r.id)]);
    }
    if names.is_empty() {
        bail!("you must provide at least one name or id");
    }
    Ok(names.iter().map(|n| (n.clone(), n.clone())).collect())
}

pub fn restart(engine: &Engine, a: RestartArgs) -> Result<()> {
    let running = a.running;
    let list = targets(engine, a.all, a.latest, &a.containers, |c| {
        !running || matches!(c.status, Status::Running | Status::Paused)
    })?;
    let mut failed = None;
    for (shown, id) in list {
        match engine.restart_container(&id, a.time) {
            Ok(_) => println!("{shown}"),
            Err(e) => failed = Some(crate::report(&ops_err(e))),
        }
    }
    finish(failed)
}

pub fn pause(engine: &Engine, a: PauseArgs) -> Result<()> {
    let list = targets(engine, a.all, a.latest, &a.containers, |c| {
        c.status == Status::Running
    })?;
    let mut failed = None;
    for (shown, id) in list {
        match engine.pause_container(&id) {
            Ok(_) => println!("{shown}"),
            Err(e) => failed = Some(crate::report(&ops_err(e))),
        }
    }
    finish(failed)
}

pub fn unpause(engine: &Engine, a: PauseArgs) -> Result<()> {
    let list = targets(engine, a.all, a.latest, &a.containers, |c| {
        c.status == Status::Paused
    })?;
    let mut failed = None;
    for (shown, id) in list {
        match engine.unpause_container(&id) {
            Ok(_) => println!("{shown}"),
            Err(e) => failed = Some(crate::report(&ops_err(e))),
        }
    }
    finish(failed)
}

// ---- top ---------------------------------------------------------------------------

pub fn top(engine: &Engine, a: TopArgs) -> Result<()> {
    let (rec, descriptors) = if a.latest {
        (engine.latest_container().map_err(ops_err)?, &a.args[..])
    } else {
        let Some((c, rest)) = a.args.split_first() else {
            bail!("you must provide the name or id of a running container");
        };
        (engine.container(c).map_err(container_err)?, rest)
    };
    let table = match engine.container_top(&rec.id, descriptors) {
        Ok(t) => t,
        Err(e @ OpsError::UnknownDescriptor(_)) => {
            // As podman does: descriptors psgo does not know go to the container's own
            // ps, whose output is then the answer.
            let mut args = vec!["ps".to_string()];
            args.extend(descriptors.iter().cloned());
            let code = engine.exec_container(
                &rec.id,
                &ExecOptions {
                    args,
                    ..Default::default()
                },
            );
            return match code {
                Ok(0) => Ok(()),
                _ => Err(ops_err(e)),
            };
        }
        Err(e) => return Err(ops_err(e)),
    };
    let mut tw = TabWriter::podman();
    tw.write_str(&format!("{}\n", table.headers.join("\t")));
    for row in &table.rows {
        tw.write_str(&format!("{}\n", row.join("\t")));
    }
    std::io::stdout().write_all(tw.finish().as_bytes())?;
    Ok(())
}

// ---- port --------------------------------------------------------------------------

/// Every published port of a container as `(container port, protocol, host address)`,
/// in podman's order: by protocol, then container port.
fn port_lines(mappings: &[PortMapping]) -> Vec<(u16, String, String)> {
    let mut lines: Vec<(capsa_engine::network::Protocol, u16, u16, String)> = Vec::new();
    for m in mappings {
        let ip = match m.host_addr() {
            Some(std::net::IpAddr::V6(a)) => format!("[{a}]"),
            Some(a) => a.to_string(),
            None if m.host_ip.is_empty() => "0.0.0.0".into(),
            None => m.host_ip.clone(),
        };
        for (h, c) in m.pairs() {
            lines.push((m.protocol, c, h, ip.clone()));
        }
    }
    lines.sort_by_key(|x| (x.0, x.1, x.2));
    lines
        .into_iter()
        .map(|(p, c, h, ip)| (c, p.as_str().to_string(), format!("{ip}:{h}")))
        .collect()
}

pub fn port(engine: &Engine, a: PortArgs) -> Result<()> {
    if a.all {
        if a.container.is_some() {
            bail!("no arguments are needed with --all");
        }
        let mut out = std::io::stdout().lock();
        for c in engine.list_containers().map_err(container_err)? {
            if c.status != Status::Running {
                continue;
            }
            for (cp, proto, host) in port_lines(&c.config.ports) {
                writeln!(out, "{}\t{cp}/{proto} -> {host}", &c.id[..12])?;
            }
        }
        return Ok(());
    }
    // With --latest the one argument is the port.
    let (name, want) = if a.latest {
        (None, a.container.as_deref().or(a.port.as_deref()))
    } else {
        (a.container.as_deref(), a.port.as_deref())
    };
    let rec = one(
        engine,
        a.latest,
        name,
        "you must supply a running container name or id",
    )?;
    let lines = if rec.status == Status::Running {
        port_lines(&rec.config.ports)
    } else {
        Vec::new()
    };
    let mut out = std::io::stdout().lock();
    match want {
        None => {
            for (cp, proto, host) in lines {
                writeln!(out, "{cp}/{proto} -> {host}")?;
            }
        }
        Some(w) => {
            let (num, proto) = w.split_once('/').unwrap_or((w, "tcp"));
            let num: u16 = num
                .parse()
                .map_err(|e| anyhow!("invalid port {num:?}: {e}"))?;
            let hits: Vec<&String> = lines
                .iter()
                .filter(|(cp, p, _)| *cp == num && p.eq_ignore_ascii_case(proto))
                .map(|(_, _, h)| h)
                .collect();
            if hits.is_empty() {
                bail!("failed to find published port {w:?}");
            }
            for h in hits {
                writeln!(out, "{h}")?;
            }
        }
    }
    Ok(())
}

// ---- rename, exists, prune -------------------------------------------------------

pub fn rename(engine: &Engine, a: RenameArgs) -> Result<()> {
    engine
        .rename_container(&a.container, &a.name)
        .map_err(ops_err)?;
    Ok(())
}

pub fn exists(engine: &Engine, a: ContainerExistsArgs) -> Result<()> {
    match engine.container(&a.container) {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Err(Exit(1).into()),
        Err(e) => Err(container_err(e)),
    }
}

pub fn prune(engine: &Engine, a: ContainerPruneArgs) -> Result<()> {
    let now = chrono::Utc::now();
    let filters = a
        .filter
        .iter()
        .map(|f| PruneFilter::parse(f, now))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ops_err)?;
    if !a.force {
        let mut err = std::io::stderr().lock();
        write!(
            err,
            "WARNING! This will remove all non running containers.\nAre you sure you want to continue? [y/N] "
        )?;
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
    let mut failed = None;
    for (id, r) in engine.prune_containers(&filters).map_err(ops_err)? {
        match r {
            Ok(()) => println!("{id}"),
            Err(e) => failed = Some(crate::report(&container_err(e))),
        }
    }
    finish(failed)
}

// ---- stats -------------------------------------------------------------------------

/// go-units' `HumanSize` (4 significant digits, decimal units, no space).
fn human_size4(bytes: u64) -> String {
    output::go_size(bytes, 1000.0, &output::SI_UNITS, 4, "")
}

/// go-units' `BytesSize` (binary units).
fn bytes_size4(bytes: u64) -> String {
    output::go_size(bytes, 1024.0, &output::IEC_UNITS, 4, "")
}

fn percent(p: f64) -> String {
    format!("{p:.2}%")
}

/// `stats --format json`: podman 4.3's document. A struct, not a `json!` map, because
/// the keys must come in podman's order (serde_json's maps sort them).
#[derive(Debug, serde::Serialize)]
struct StatsDoc {
    id: String,
    name: String,
    cpu_time: String,
    cpu_percent: String,
    avg_cpu: String,
    mem_usage: String,
    mem_percent: String,
    net_io: String,
    block_io: String,
    pids: String,
}

/// The documents as podman prints them (Go's `json.MarshalIndent` with a one-space
/// indent).
fn stats_json(docs: &[StatsDoc]) -> Result<String> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b" "),
    );
    serde::Serialize::serialize(docs, &mut ser)?;
    out.push(b'\n');
    Ok(String::from_utf8(out)?)
}

/// One row of `stats`: the template fields podman offers, and its JSON document.
fn stats_row(s: &ContainerStats, cpu_pct: f64, no_trunc: bool) -> (Value, StatsDoc) {
    let avg = if s.uptime_nanos > 0 {
        s.cpu_nanos as f64 / s.uptime_nanos as f64 * 100.0
    } else {
        0.0
    };
    let mem_pct = if s.mem_limit > 0 {
        s.mem_usage as f64 / s.mem_limit as f64 * 100.0
    } else {
        0.0
    };
    let id = if no_trunc {
        s.id.clone()
    } else {
        s.id[..12].to_string()
    };
    let mem = format!(
        "{} / {}",
        human_size4(s.mem_usage),
        human_size4(s.mem_limit)
    );
    let net = format!("{} / {}", human_size4(s.net_rx), human_size4(s.net_tx));
    let block = format!(
        "{} / {}",
        human_size4(s.block_read),
        human_size4(s.block_write)
    );
    let cpu_time = ops::go_duration(u128::from(s.cpu_nanos));
    let row = json!({
        "ID": id,
        "ContainerID": s.id,
        "Name": s.name,
        "CPUPerc": percent(cpu_pct),
        "CPU": cpu_pct,
        "AVGCPU": percent(avg),
        "MemUsage": mem,
        "MemUsageBytes": format!("{} / {}", bytes_size4(s.mem_usage), bytes_size4(s.mem_limit)),
        "MemPerc": percent(mem_pct),
        "NetIO": net,
        "BlockIO": block,
        "PIDS": s.pids.to_string(),
        "UpTime": cpu_time,
        "Duration": s.cpu_nanos,
    });
    let doc = StatsDoc {
        id,
        name: s.name.clone(),
        cpu_time,
        cpu_percent: percent(cpu_pct),
        avg_cpu: percent(avg),
        mem_usage: mem,
        mem_percent: percent(mem_pct),
        net_io: net,
        block_io: block,
        pids: s.pids.to_string(),
    };
    (row, doc)
}

/// Podman's header for a stats template field.
fn stats_header(field: &str) -> String {
    match field {
        "ID" => "ID".into(),
        "ContainerID" => "CONTAINER ID".into(),
        "UpTime" => "CPU TIME".into(),
        "CPUPerc" => "CPU %".into(),
        "AVGCPU" => "AVG CPU %".into(),
        "MemUsage" | "MemUsageBytes" => "MEM USAGE / LIMIT".into(),
        "MemPerc" => "MEM %".into(),
        "NetIO" => "NET IO".into(),
        "BlockIO" => "BLOCK IO".into(),
        "PIDS" => "PIDS".into(),
        other => output::header_for(other),
    }
}

fn stats_columns() -> Vec<Column> {
    [
        ("ID", "ID"),
        ("NAME", "Name"),
        ("CPU %", "CPUPerc"),
        ("MEM USAGE / LIMIT", "MemUsage"),
        ("MEM %", "MemPerc"),
        ("NET IO", "NetIO"),
        ("BLOCK IO", "BlockIO"),
        ("PIDS", "PIDS"),
        ("CPU TIME", "UpTime"),
        ("AVG CPU %", "AVGCPU"),
    ]
    .into_iter()
    .map(|(header, field)| Column { header, field })
    .collect()
}

/// Renders one report: the default table, JSON, or a template (a `table` template gets
/// podman's stats headers).
fn render_stats(format: &Option<String>, rows: &[Value], docs: &[StatsDoc]) -> Result<String> {
    let fmt = Format::parse(
        format
            .as_deref()
            .map(|f| if f.trim() == "{{json .}}" { "json" } else { f }),
        stats_columns(),
    );
    match fmt {
        Format::Json => stats_json(docs),
        Format::Table(cols) => {
            let mut tw = TabWriter::podman();
            let h: Vec<&str> = cols.iter().map(|c| c.header).collect();
            tw.write_str(&format!("{}\n", h.join("\t")));
            for r in rows {
                let cells: Vec<String> = cols
                    .iter()
                    .map(|c| output::plain(r.get(c.field).unwrap_or(&Value::Null)))
                    .collect();
                tw.write_str(&format!("{}\n", cells.join("\t")));
            }
            Ok(tw.finish())
        }
        Format::Template { template, table } => {
            let src = normalize_escapes(&template);
            let t =
                Template::parse(&src).map_err(|e| anyhow!("parsing --format {template:?}: {e}"))?;
            let mut tw = TabWriter::podman();
            if table {
                tw.write_str(&format!("{}\n", template_headers(&src)));
            }
            for r in rows {
                let mut line = t
                    .execute(r)
                    .map_err(|e| anyhow!("executing --format {template:?}: {e}"))?;
                if !line.ends_with('\n') {
                    line.push('\n');
                }
                tw.write_str(&line);
            }
            Ok(tw.finish())
        }
    }
}

/// The header line of a `table` template: each `{{.Field}}` becomes its header.
fn template_headers(src: &str) -> String {
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
        out.push_str(&stats_header(field.split('.').next().unwrap_or(field)));
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out.trim_end_matches('\n').to_string()
}

pub fn stats(engine: &Engine, a: StatsArgs) -> Result<()> {
    engine.check_stats_supported().map_err(ops_err)?;
    let pick = |engine: &Engine| -> Result<Vec<ContainerRecord>> {
        if a.latest {
            return Ok(vec![engine.latest_container().map_err(ops_err)?]);
        }
        if !a.containers.is_empty() {
            return a
                .containers
                .iter()
                .map(|c| engine.container(c).map_err(container_err))
                .collect();
        }
        let mut all = engine.list_containers().map_err(container_err)?;
        if !a.all {
            all.retain(|c| matches!(c.status, Status::Running | Status::Paused));
        }
        Ok(all)
    };
    let mut previous: std::collections::HashMap<String, ContainerStats> = Default::default();
    loop {
        let recs = pick(engine)?;
        let mut rows = Vec::new();
        let mut docs = Vec::new();
        let mut now = Vec::new();
        for r in &recs {
            let s = engine.container_stats(r).map_err(ops_err)?;
            // The first report averages over the container's run, as podman's does;
            // later ones cover the interval since the one before.
            let cpu = match previous.get(&s.id) {
                Some(p) if s.sampled > p.sampled && s.cpu_nanos >= p.cpu_nanos => {
                    let wall = s.sampled.duration_since(p.sampled).as_nanos() as f64;
                    (s.cpu_nanos - p.cpu_nanos) as f64 / wall * 100.0
                }
                _ if s.uptime_nanos > 0 => s.cpu_nanos as f64 / s.uptime_nanos as f64 * 100.0,
                _ => 0.0,
            };
            let (row, doc) = stats_row(&s, cpu, a.no_trunc);
            rows.push(row);
            docs.push(doc);
            now.push(s);
        }
        let text = render_stats(&a.format, &rows, &docs)?;
        let mut out = std::io::stdout().lock();
        if !a.no_stream && !a.no_reset && out.is_terminal() {
            out.write_all(b"\x1b[2J\x1b[H")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        drop(out);
        if a.no_stream {
            return Ok(());
        }
        previous = now.into_iter().map(|s| (s.id.clone(), s)).collect();
        let until = Instant::now() + Duration::from_secs(a.interval.max(1));
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capsa_engine::network::Protocol;

    #[test]
    fn sizes_like_go_units_human_size() {
        assert_eq!(human_size4(0), "0B");
        assert_eq!(human_size4(90), "90B");
        assert_eq!(human_size4(503_808), "503.8kB");
        assert_eq!(human_size4(25_276_063_744), "25.28GB");
        assert_eq!(human_size4(491_520), "491.5kB");
        assert_eq!(bytes_size4(491_520), "480KiB");
        assert_eq!(bytes_size4(25_276_063_744), "23.54GiB");
    }

    #[test]
    fn ports_in_podman_order() {
        let m = |ip: &str, c: u16, h: u16, range: u16, protocol| PortMapping {
            host_ip: ip.into(),
            container_port: c,
            host_port: h,
            range,
            protocol,
        };
        let lines = port_lines(&[
            m("", 95, 18095, 1, Protocol::Tcp),
            m("127.0.0.1", 85, 18085, 1, Protocol::Udp),
            m("", 90, 18090, 2, Protocol::Tcp),
            m("::1", 70, 18070, 1, Protocol::Tcp),
        ]);
        let text: Vec<String> = lines
            .iter()
            .map(|(c, p, h)| format!("{c}/{p} -> {h}"))
            .collect();
        assert_eq!(
            text,
            [
                "70/tcp -> [::1]:18070",
                "90/tcp -> 0.0.0.0:18090",
                "91/tcp -> 0.0.0.0:18091",
                "95/tcp -> 0.0.0.0:18095",
                "85/udp -> 127.0.0.1:18085",
            ]
        );
    }

    #[test]
    fn stats_json_as_podman_prints_it() {
        let doc = |id: &str| StatsDoc {
            id: id.into(),
            name: "web".into(),
            cpu_time: "14.925084ms".into(),
            cpu_percent: "0.04%".into(),
            avg_cpu: "0.04%".into(),
            mem_usage: "274.4kB / 25.28GB".into(),
            mem_percent: "0.00%".into(),
            net_io: "726B / 1.586kB".into(),
            block_io: "0B / 0B".into(),
            pids: "1".into(),
        };
        // podman 4.3.1's output for the same numbers, byte for byte.
        assert_eq!(
            stats_json(&[doc("b22f482176a2")]).unwrap(),
            r#"[
 {
  "id": "b22f482176a2",
  "name": "web",
  "cpu_time": "14.925084ms",
  "cpu_percent": "0.04%",
  "avg_cpu": "0.04%",
  "mem_usage": "274.4kB / 25.28GB",
  "mem_percent": "0.00%",
  "net_io": "726B / 1.586kB",
  "block_io": "0B / 0B",
  "pids": "1"
 }
]
"#
        );
        assert_eq!(stats_json(&[]).unwrap(), "[]\n");
    }

    #[test]
    fn stats_table_headers() {
        assert_eq!(
            template_headers("{{.ID}}\t{{.UpTime}}\t{{.AVGCPU}}\t{{.Name}}"),
            "ID\tCPU TIME\tAVG CPU %\tNAME"
        );
    }
}
