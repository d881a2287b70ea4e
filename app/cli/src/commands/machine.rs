//! `capsa machine`: Linux VMs to run the engine in (docs/machines.md). Podman's
//! subcommands and flags; several machines may run at once.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use capsa_core::driver::{self, StopOutcome, VmDriver, VmStatus};
use capsa_core::machine::{
    DEFAULT_NAME, ENV_MACHINE_IMAGE, InitOptions, Machine, StartOptions, Step, StepReporter, Store,
    download::Progress,
};
use capsa_core::ssh::{Session, SshTarget};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::output::{self, Column, Format};

#[derive(Subcommand, Debug)]
pub enum MachineCommand {
    /// Initialize a new virtual machine
    Init(InitArgs),
    /// Start an existing machine
    Start(NameArg),
    /// Stop an existing machine
    Stop(NameArg),
    /// Restart an existing machine
    Restart(NameArg),
    /// Remove an existing machine
    Rm(RmArgs),
    /// List machines
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Inspect an existing machine
    Inspect(InspectArgs),
    /// Display machine host info
    Info(InfoArgs),
    /// Set a virtual machine setting
    Set(SetArgs),
    /// Remove all machines
    Reset(ResetArgs),
    /// SSH into an existing machine
    Ssh(SshArgs),
    /// Runs a Virtualization.framework VM in this process (started by `machine start`)
    #[command(hide = true)]
    VzRun { spec: std::path::PathBuf },
}

#[derive(Args, Debug)]
pub struct NameArg {
    /// Name of the machine (default: capsa-default)
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Name of the machine (default: capsa-default)
    pub name: Option<String>,
    /// Number of CPUs
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Memory in MiB
    #[arg(short, long, default_value_t = 2048)]
    pub memory: u64,
    /// Disk size in GiB
    #[arg(long, default_value_t = 100)]
    pub disk_size: u64,
    /// Guest image: a directory, its .tar, or an http(s) URL of the tar (default: $CAPSA_MACHINE_IMAGE)
    #[arg(long, value_name = "PATH|URL")]
    pub image: Option<String>,
    /// Volumes to share with the machine (HOST:GUEST[:ro])
    #[arg(short, long = "volume", value_name = "HOST:GUEST")]
    pub volumes: Vec<String>,
    /// Run the engine in the machine as root
    #[arg(long)]
    pub rootful: bool,
    /// Start the machine now
    #[arg(long)]
    pub now: bool,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Name of the machine (default: capsa-default)
    pub name: Option<String>,
    /// Stop and remove a running machine, without confirmation
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Format output: json, or a Go template
    #[arg(long)]
    pub format: Option<String>,
    /// Do not print headers
    #[arg(short, long)]
    pub noheading: bool,
    /// Show only machine names
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Machines to inspect (default: capsa-default)
    pub names: Vec<String>,
    /// Format output with a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Format output: json, or a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// Name of the machine (default: capsa-default)
    pub name: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory in MiB
    #[arg(short, long)]
    pub memory: Option<u64>,
    /// Disk size in GiB (it can only grow)
    #[arg(long)]
    pub disk_size: Option<u64>,
    /// Run the engine in the machine as root
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub rootful: Option<bool>,
}

#[derive(Args, Debug)]
pub struct SshArgs {
    /// Username to log in as (default: the machine's, capsa or root when rootful)
    #[arg(long)]
    pub username: Option<String>,
    /// [NAME] [COMMAND [ARG...]]: without COMMAND, an interactive shell
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "NAME] [COMMAND"
    )]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ResetArgs {
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(cmd: MachineCommand) -> Result<()> {
    let store = Store::open_default()?;
    match cmd {
        MachineCommand::VzRun { spec } => platform::vz_run(&spec),
        MachineCommand::Init(a) => init(&store, a).await,
        MachineCommand::Start(a) => start(&store, &name(a.name)).await,
        MachineCommand::Stop(a) => stop(&store, &name(a.name)).await,
        MachineCommand::Restart(a) => {
            let n = name(a.name);
            stop(&store, &n).await?;
            start(&store, &n).await
        }
        MachineCommand::Rm(a) => rm(&store, a),
        MachineCommand::Ls(a) => ls(&store, a),
        MachineCommand::Inspect(a) => inspect(&store, a),
        MachineCommand::Info(a) => info(&store, a),
        MachineCommand::Set(a) => set(&store, a),
        MachineCommand::Reset(a) => reset(&store, a),
        MachineCommand::Ssh(a) => ssh(&store, a).await,
    }
}

/// The backend of a machine (`qemu`, or `applehv` on macOS).
fn driver_for(m: &Machine) -> Result<Box<dyn VmDriver>> {
    Ok(driver::for_provider(&m.config.vm_type, &vz_helper())?)
}

/// How a Virtualization.framework VM gets a process of its own: this binary's hidden
/// `machine vz-run SPEC`.
fn vz_helper() -> Vec<std::ffi::OsString> {
    let exe = std::env::current_exe().unwrap_or_else(|_| "capsa".into());
    vec![exe.into(), "machine".into(), "vz-run".into()]
}

#[cfg(target_os = "macos")]
mod platform {
    pub fn vz_run(spec: &std::path::Path) -> anyhow::Result<()> {
        Ok(capsa_core::vz::run(spec)?)
    }
}

#[cfg(not(target_os = "macos"))]
mod platform {
    pub fn vz_run(_spec: &std::path::Path) -> anyhow::Result<()> {
        anyhow::bail!("Virtualization.framework machines run on macOS only")
    }
}

fn name(n: Option<String>) -> String {
    n.unwrap_or_else(|| DEFAULT_NAME.to_string())
}

/// Prints steps on stderr: "Starting QEMU… done (1.2 s)".
struct Steps {
    tty: bool,
}

impl StepReporter for Steps {
    fn begin(&mut self, step: &Step) {
        if self.tty {
            eprint!("{}…", step.name);
        } else {
            eprintln!("{}…", step.name);
        }
        let _ = std::io::stderr().flush();
    }
    fn done(&mut self, step: &Step, took: Duration) {
        if self.tty {
            eprintln!(" done ({:.1} s)", took.as_secs_f64());
        } else {
            eprintln!("{}: done ({:.1} s)", step.name, took.as_secs_f64());
        }
    }
    fn warn(&mut self, message: &str) {
        if self.tty {
            eprintln!();
        }
        eprintln!("WARN: {message}");
    }
}

fn steps() -> Steps {
    Steps {
        tty: std::io::stderr().is_terminal(),
    }
}

async fn init(store: &Store, a: InitArgs) -> Result<()> {
    let image = a
        .image
        .or_else(|| {
            std::env::var(ENV_MACHINE_IMAGE)
                .ok()
                .filter(|s| !s.is_empty())
        })
        .ok_or_else(|| {
            capsa_core::machine::MachineError::Image(capsa_core::machine::ImageError::Missing(
                "(none given)".into(),
            ))
        })?;
    let opts = InitOptions {
        name: name(a.name),
        cpus: a.cpus,
        memory_mib: a.memory,
        disk_size_gib: a.disk_size,
        image,
        volumes: a.volumes,
        rootful: a.rootful,
        vm_type: driver::default_provider()?,
    };
    let tty = std::io::stderr().is_terminal();
    let mut last_pct = u64::MAX;
    let mut progress = |p: Progress| {
        let pct = p.total.map(|t| p.done * 100 / t.max(1)).unwrap_or(0);
        if pct != last_pct && (tty || pct.is_multiple_of(10)) {
            last_pct = pct;
            let total = p
                .total
                .map(output::human_size)
                .unwrap_or_else(|| "?".into());
            if tty {
                eprint!(
                    "\rDownloading image: {} / {total} ({pct}%)",
                    output::human_size(p.done)
                );
            } else {
                eprintln!(
                    "Downloading image: {} / {total} ({pct}%)",
                    output::human_size(p.done)
                );
            }
        }
    };
    let m = store.init(&opts, &mut progress).await?;
    if tty && last_pct != u64::MAX {
        eprintln!();
    }
    eprintln!(
        "Machine {:?} created: {} CPUs, {} MiB, {} GiB disk, image {} {}",
        m.name(),
        m.config.cpus,
        m.config.memory_mib,
        m.config.disk_size_gib,
        m.config.image.version,
        m.config.image.arch
    );
    if a.now {
        return start(store, m.name()).await;
    }
    eprintln!(
        "To start your machine run:\n\n\tcapsa machine start{}\n",
        name_suffix(m.name())
    );
    Ok(())
}

fn name_suffix(n: &str) -> String {
    if n == DEFAULT_NAME {
        String::new()
    } else {
        format!(" {n}")
    }
}

async fn start(store: &Store, n: &str) -> Result<()> {
    let mut m = store.get(n)?;
    let driver = driver_for(&m)?;
    eprintln!("Starting machine {n:?}");
    let accel = m
        .start(&*driver, &StartOptions::default(), &mut steps())
        .await?;
    eprintln!("Machine {n:?} started successfully ({accel})");
    Ok(())
}

async fn stop(store: &Store, n: &str) -> Result<()> {
    let m = store.get(n)?;
    let driver = driver_for(&m)?;
    match m.stop(&*driver, &mut steps()).await? {
        StopOutcome::AlreadyStopped => eprintln!("Machine {n:?} is not running"),
        o => eprintln!("Machine {n:?} stopped successfully ({})", outcome(o)),
    }
    Ok(())
}

fn outcome(o: StopOutcome) -> &'static str {
    match o {
        StopOutcome::AlreadyStopped => "already stopped",
        StopOutcome::Powerdown => "the guest powered off",
        StopOutcome::Quit => "the hypervisor quit",
        StopOutcome::Killed => "the hypervisor was killed",
    }
}

/// As podman does: the first argument is the machine when one has that name, else it
/// starts the command.
fn ssh_split(store: &Store, mut args: Vec<String>) -> (String, Vec<String>) {
    let known = store.names().unwrap_or_default();
    match args.first() {
        Some(first) if known.contains(first) => {
            let n = args.remove(0);
            (n, args)
        }
        _ => (DEFAULT_NAME.to_string(), args),
    }
}

async fn ssh(store: &Store, a: SshArgs) -> Result<()> {
    let (n, command) = ssh_split(store, a.args);
    let m = store.get(&n)?;
    if m.status() != VmStatus::Running {
        return Err(capsa_core::machine::MachineError::NotRunning(n).into());
    }
    let mut target = SshTarget::machine(&m);
    if let Some(user) = a.username {
        target.user = user;
    }
    // Joined with spaces for the guest's shell, as ssh(1) does.
    let command = (!command.is_empty()).then(|| command.join(" "));
    let result = async {
        let session = Session::connect(&target).await?;
        let code = session.run_local(command.as_deref()).await;
        session.close().await;
        code
    }
    .await;
    match result? {
        0 => Ok(()),
        code => Err(crate::Exit(code).into()),
    }
}

fn rm(store: &Store, a: RmArgs) -> Result<()> {
    let n = name(a.name);
    let m = store.get(&n)?;
    m.remove(&*driver_for(&m)?, a.force)?;
    println!("{n}");
    Ok(())
}

fn last_up(m: &Machine, running: bool) -> String {
    if running && m.starting() {
        "Currently starting".into()
    } else if running {
        "Currently running".into()
    } else {
        m.config
            .last_up
            .map(output::human_since)
            .unwrap_or_else(|| "Never".into())
    }
}

fn iec(bytes: u64) -> String {
    output::go_size(bytes, 1024.0, &output::IEC_UNITS, 4, "")
}

fn ls(store: &Store, a: LsArgs) -> Result<()> {
    let machines = store.list()?;
    if a.quiet {
        for m in &machines {
            println!("{}", m.name());
        }
        return Ok(());
    }
    let mut rows = vec![];
    let mut docs = vec![];
    for m in &machines {
        let running = m.status() == VmStatus::Running;
        let starting = running && m.starting();
        let c = &m.config;
        let vm_type = &c.vm_type;
        let default = c.name == DEFAULT_NAME;
        rows.push(json!({
            "Name": if default { format!("{}*", c.name) } else { c.name.clone() },
            "VMType": vm_type,
            "Created": output::human_since(c.created),
            "LastUp": last_up(m, running),
            "CPUs": c.cpus,
            "Memory": iec(c.memory_mib << 20),
            "DiskSize": iec(c.disk_size_gib << 30),
        }));
        // podman 4's `machine ls --format json` shape.
        docs.push(json!({
            "Name": c.name,
            "Default": default,
            "Created": c.created.to_rfc3339(),
            "Running": running && !starting,
            "Starting": starting,
            "LastUp": c.last_up.map(|t| t.to_rfc3339()).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "Stream": c.image.source,
            "VMType": vm_type,
            "CPUs": c.cpus,
            "Memory": (c.memory_mib << 20).to_string(),
            "DiskSize": (c.disk_size_gib << 30).to_string(),
            "Port": c.ssh_port,
            "RemoteUsername": c.ssh_user(),
            "IdentityPath": m.ssh_identity(),
            "UserModeNetworking": true,
        }));
    }
    let cols = vec![
        Column {
            header: "NAME",
            field: "Name",
        },
        Column {
            header: "VM TYPE",
            field: "VMType",
        },
        Column {
            header: "CREATED",
            field: "Created",
        },
        Column {
            header: "LAST UP",
            field: "LastUp",
        },
        Column {
            header: "CPUS",
            field: "CPUs",
        },
        Column {
            header: "MEMORY",
            field: "Memory",
        },
        Column {
            header: "DISK SIZE",
            field: "DiskSize",
        },
    ];
    let format = Format::parse(a.format.as_deref(), cols);
    output::print(&format, &rows, &Value::Array(docs), a.noheading)
}

fn inspect_doc(m: &Machine) -> Value {
    let c = &m.config;
    let running = m.status() == VmStatus::Running;
    json!({
        "Name": c.name,
        "ConfigDir": { "Path": m.dir },
        "Created": c.created.to_rfc3339(),
        "LastUp": c.last_up.map(|t| t.to_rfc3339()),
        "State": if running { "running" } else { "stopped" },
        "VMType": c.vm_type,
        "Resources": {
            "CPUs": c.cpus,
            "Memory": c.memory_mib,
            "DiskSize": c.disk_size_gib,
        },
        "Image": {
            "Name": c.image.name,
            "Version": c.image.version,
            "Arch": c.image.arch,
            "Source": c.image.source,
            "Path": m.image_dir(),
        },
        "Mounts": c.volumes.iter().map(|v| json!({
            "Source": v.host, "Target": v.guest, "Tag": v.tag, "ReadOnly": v.read_only,
        })).collect::<Vec<_>>(),
        "Rootful": c.rootful,
        "SSHConfig": {
            "IdentityPath": m.ssh_identity(),
            "Port": c.ssh_port,
            "RemoteUsername": c.ssh_user(),
        },
        "ConnectionInfo": {
            "QMPSocket": { "Path": m.qmp_socket() },
            "AgentSocket": { "Path": m.agent_socket() },
            "SerialLog": { "Path": m.serial_log() },
            "PidFile": { "Path": m.pid_file() },
        },
        "DataDisk": { "Path": m.data_disk() },
        "Events": { "Path": m.events_path() },
        "UserModeNetworking": true,
    })
}

fn inspect(store: &Store, a: InspectArgs) -> Result<()> {
    let names = if a.names.is_empty() {
        vec![DEFAULT_NAME.to_string()]
    } else {
        a.names
    };
    let mut docs = vec![];
    for n in &names {
        docs.push(inspect_doc(&store.get(n)?));
    }
    output::print_inspect(docs, a.format.as_deref())
}

fn info(store: &Store, a: InfoArgs) -> Result<()> {
    let machines = store.list()?;
    let running = machines
        .iter()
        .filter(|m| m.status() == VmStatus::Running)
        .count();
    let arch = std::env::consts::ARCH;
    let choice = capsa_core::accel::choose(arch, Some(&store.runtime.join("capsa")))?;
    let driver = driver::for_provider(&driver::default_provider()?, &vz_helper())?;
    let caps = driver.capabilities();
    let qemu = capsa_core::qemu::find_program(&format!("qemu-system-{arch}"));
    let doc = json!({
        "Host": {
            "Arch": arch,
            "OS": std::env::consts::OS,
            "CurrentMachine": if machines.iter().any(|m| m.name() == DEFAULT_NAME) { DEFAULT_NAME } else { "" },
            "DefaultMachine": DEFAULT_NAME,
            "MachineConfigDir": { "Path": store.root },
            "MachineImageDir": { "Path": store.cache.join("images") },
            "MachineState": if running > 0 { "Running" } else { "" },
            "NumberOfMachines": machines.len(),
            "NumberOfRunningMachines": running,
            "VMType": caps.vm_type,
            "Accelerator": choice.accel,
            "AcceleratorNote": choice.fallback_reason,
            "Hypervisor": qemu,
            "Capabilities": caps,
        },
        "Version": {
            "Version": env!("CARGO_PKG_VERSION"),
            "OsArch": format!("{}/{arch}", std::env::consts::OS),
        }
    });
    match a.format.as_deref() {
        Some("json") => {
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(())
        }
        Some(f) => output::print_inspect(vec![doc], Some(f)),
        None => {
            print_yaml(&doc, 0);
            Ok(())
        }
    }
}

/// `machine info`'s default output, YAML like podman's.
fn print_yaml(v: &Value, indent: usize) {
    if let Value::Object(map) = v {
        for (k, val) in map {
            let pad = " ".repeat(indent);
            match val {
                Value::Object(_) => {
                    println!("{pad}{}:", lower_first(k));
                    print_yaml(val, indent + 2);
                }
                other => println!("{pad}{}: {}", lower_first(k), yaml_scalar(other)),
            }
        }
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Null => "\"\"".into(),
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn set(store: &Store, a: SetArgs) -> Result<()> {
    let n = name(a.name);
    let mut m = store.get(&n)?;
    m.set(a.cpus, a.memory, a.disk_size, a.rootful)?;
    Ok(())
}

fn reset(store: &Store, a: ResetArgs) -> Result<()> {
    let machines = store.list()?;
    if !a.force {
        eprintln!("Warning: this command will delete all existing machines:");
        for m in &machines {
            eprintln!("{}", m.name());
        }
        eprint!("Are you sure you want to continue? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let _lock = store.lock()?;
    for m in &machines {
        m.remove(&*driver_for(m)?, true)?;
    }
    let _ = std::fs::remove_dir_all(store.cache.join("images"));
    Ok(())
}
