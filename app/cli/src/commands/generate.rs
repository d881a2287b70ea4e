//! `generate systemd`: prints (or with `--files` writes) a systemd service unit for a
//! container, as `podman generate systemd` does; `--format quadlet` gives Podman's
//! Quadlet `.container` file instead. The unit's text comes from the engine
//! (`container::systemd::unit`); see docs/systemd.md.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use capsa_engine::Engine;
use capsa_engine::container::systemd::unit::{Options, Unit};
use clap::{Args, Subcommand};

use crate::cli::Global;

#[derive(Subcommand, Debug)]
pub enum GenerateCommand {
    /// Generate systemd units for a container
    Systemd(SystemdArgs),
}

#[derive(Args, Debug)]
pub struct SystemdArgs {
    /// Use the container's name instead of its ID in the unit and its commands
    #[arg(short = 'n', long)]
    pub name: bool,
    /// Create a new container when the unit starts and remove it when it stops
    #[arg(long)]
    pub new: bool,
    /// systemd restart policy: no, on-success, on-failure, on-abnormal, on-watchdog,
    /// on-abort, always (default: the container's, else on-failure)
    #[arg(long, value_name = "POLICY")]
    pub restart_policy: Option<String>,
    /// systemd RestartSec (seconds)
    #[arg(long, value_name = "SECONDS")]
    pub restart_sec: Option<u32>,
    /// Start timeout in seconds (TimeoutStartSec)
    #[arg(long, value_name = "SECONDS")]
    pub start_timeout: Option<u32>,
    /// Stop timeout in seconds (default: the container's)
    #[arg(
        short = 't',
        long = "stop-timeout",
        alias = "time",
        value_name = "SECONDS"
    )]
    pub stop_timeout: Option<u32>,
    /// Write the unit to a file in the current directory and print its path
    #[arg(short = 'f', long)]
    pub files: bool,
    /// json: a JSON object of unit names and texts; quadlet: Podman's .container file
    #[arg(long)]
    pub format: Option<String>,
    /// Prefix of the unit's name
    #[arg(long, default_value = "container")]
    pub container_prefix: String,
    /// Between the prefix and the container's name or ID
    #[arg(long, default_value = "-")]
    pub separator: String,
    /// Leave out the header comment (name, generator, date)
    #[arg(long)]
    pub no_header: bool,
    /// Add a Wants= dependency (may be repeated)
    #[arg(long, value_name = "UNIT")]
    pub wants: Vec<String>,
    /// Add an After= dependency (may be repeated)
    #[arg(long, value_name = "UNIT")]
    pub after: Vec<String>,
    /// Add a Requires= dependency (may be repeated)
    #[arg(long, value_name = "UNIT")]
    pub requires: Vec<String>,
    /// Set an environment variable of the unit (KEY=VALUE)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The container
    pub container: String,
}

pub fn run(engine: &Engine, g: &Global, cmd: GenerateCommand) -> Result<()> {
    match cmd {
        GenerateCommand::Systemd(a) => systemd(engine, g, a),
    }
}

/// The global flags a unit repeats so that it finds the same store (absolute paths).
fn global_args(g: &Global) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (flag, path) in [("--root", &g.root), ("--runroot", &g.runroot)] {
        if let Some(p) = path {
            let abs = std::path::absolute(p).with_context(|| format!("{flag} {}", p.display()))?;
            out.extend([flag.to_string(), abs.to_string_lossy().into_owned()]);
        }
    }
    if let Some(d) = &g.storage_driver {
        out.extend(["--storage-driver".to_string(), d.clone()]);
    }
    Ok(out)
}

fn systemd(engine: &Engine, g: &Global, a: SystemdArgs) -> Result<()> {
    let quadlet = match a.format.as_deref() {
        None | Some("json") => false,
        Some("quadlet") => true,
        Some(f) => bail!("invalid --format {f:?}: use json or quadlet"),
    };
    for e in &a.env {
        if !e.contains('=') {
            bail!("invalid --env {e:?}: use KEY=VALUE");
        }
    }
    let o = Options {
        new: a.new,
        use_name: a.name,
        restart_policy: a.restart_policy,
        restart_sec: a.restart_sec,
        stop_timeout: a.stop_timeout,
        start_timeout: a.start_timeout,
        container_prefix: a.container_prefix,
        separator: a.separator,
        no_header: a.no_header,
        wants: a.wants,
        after: a.after,
        requires: a.requires,
        env: a.env,
        capsa: std::env::current_exe().context("finding the capsa executable")?,
        global_args: global_args(g)?,
        version: env!("CARGO_PKG_VERSION").into(),
        now: chrono::Utc::now()
            .format("%a %b %e %H:%M:%S UTC %Y")
            .to_string(),
    };
    let unit = engine
        .generate_systemd(&a.container, &o, quadlet)
        .map_err(capsa_engine::EngineError::from)?;
    let key = unit
        .name
        .rsplit_once('.')
        .map_or(unit.name.as_str(), |(k, _)| k)
        .to_string();
    let shown = if a.files {
        write_file(&unit)?.to_string_lossy().into_owned()
    } else {
        unit.text.clone()
    };
    if a.format.as_deref() == Some("json") {
        let doc = serde_json::json!({ key: shown });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if a.files {
        println!("{shown}");
    } else {
        print!("{shown}");
    }
    Ok(())
}

/// Writes the unit into the current directory; returns its absolute path.
fn write_file(unit: &Unit) -> Result<PathBuf> {
    let path = std::env::current_dir()
        .context("finding the current directory")?
        .join(&unit.name);
    std::fs::write(&path, &unit.text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
