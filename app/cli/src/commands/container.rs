//! Container commands: run, create, start, stop, kill, rm, ps, wait and the monitor's
//! exit command (`container cleanup`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use capsa_engine::Engine;
use capsa_engine::container::lifecycle::{ContainerError, CreateRequest};
use capsa_engine::container::state::{ContainerConfig, ContainerRecord, Status};
use capsa_engine::image::pull::PullOptions;
use capsa_engine::store::ImageRecord;
use clap::Args;
use serde_json::{Value, json};

use crate::Exit;
use crate::commands::CodedError;
use crate::output::{self, Column, Format};
use crate::progress::StderrProgress;

/// The flags `run` and `create` share. `-h` is `--hostname`, as in Podman, so help is
/// `--help` only.
#[derive(Args, Debug, Clone, Default)]
#[command(disable_help_flag = true)]
pub struct CreateArgs {
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables in the container
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Bind mount a volume into the container (SRC:DST[:OPTS])
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount to the container (type=bind|volume|tmpfs,...)
    #[arg(long)]
    pub mount: Vec<String>,
    /// Mount a temporary filesystem (PATH[:OPTS])
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Set container hostname
    #[arg(long, short = 'h')]
    pub hostname: Option<String>,
    /// Make the container's root filesystem read-only
    #[arg(long)]
    pub read_only: bool,
    /// Add capabilities to the container
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop capabilities from the container
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Security options (no-new-privileges, seccomp=unconfined|PATH, label=disable)
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Give extended privileges to the container
    #[arg(long)]
    pub privileged: bool,
    /// User namespace: host, keep-id[:uid=U,gid=G] (rootless) or auto[:size=N,uidmapping=C:H:N,gidmapping=C:H:N]
    #[arg(long)]
    pub userns: Option<String>,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    pub init: bool,
    /// Restart policy: no, on-failure[:max_retries], always, unless-stopped
    #[arg(long)]
    pub restart: Option<String>,
    /// Signal to stop a container (default SIGTERM)
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container (default 10)
    #[arg(long)]
    pub stop_timeout: Option<u32>,
    /// Set metadata on the container
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Logging driver: k8s-file, json-file, none, passthrough
    #[arg(long)]
    pub log_driver: Option<String>,
    /// Logging driver options (path=FILE, max-size=…)
    #[arg(long)]
    pub log_opt: Vec<String>,
    /// Write the container ID to the file
    #[arg(long)]
    pub cidfile: Option<PathBuf>,
    /// Pull image policy: always, missing, never, newer
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Memory limit (format: <number>[<unit>], where unit = b, k, m or g)
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Tune container pids limit (-1 for unlimited)
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Publish a container's port to the host ([ip:][hostPort:]containerPort[/proto])
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports on the host
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Network mode: private (default), none, host, ns:PATH, container:ID
    #[arg(long = "network", alias = "net")]
    pub network: Option<String>,
    /// Set custom DNS servers
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long)]
    pub dns_search: Vec<String>,
    /// Set custom DNS options
    #[arg(long = "dns-option", alias = "dns-opt")]
    pub dns_option: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long)]
    pub add_host: Vec<String>,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// OCI runtime to use (crun, runc, youki, or a path)
    #[arg(long, env = "CAPSA_RUNTIME")]
    pub runtime: Option<String>,
    /// Pass this many file descriptors (from 3 on) into the container
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// How READY=1 reaches $NOTIFY_SOCKET: container, conmon, ignore
    #[arg(long, default_value = "", hide_default_value = true)]
    pub sdnotify: String,
    /// Add an annotation to the container (key=value)
    #[arg(long)]
    pub annotation: Vec<String>,
    /// Use all current host environment variables in the container
    #[arg(long)]
    pub env_host: bool,
    /// Read in a line delimited file of labels
    #[arg(long, value_name = "FILE")]
    pub label_file: Vec<PathBuf>,
    /// Ulimit options (TYPE=SOFT[:HARD], -1 for unlimited)
    #[arg(long, value_name = "TYPE=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// Sysctl options (net.*, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm*)
    #[arg(long, value_delimiter = ',', value_name = "KEY=VALUE")]
    pub sysctl: Vec<String>,
    /// Size of /dev/shm (format: <number>[<unit>], where unit = b, k, m or g)
    #[arg(long)]
    pub shm_size: Option<String>,
    /// Add additional groups to join (names or ids)
    #[arg(long)]
    pub group_add: Vec<String>,
    /// Set timezone in container (local, or a zoneinfo name such as Europe/Paris)
    #[arg(long)]
    pub tz: Option<String>,
    /// PID namespace to use: private or host
    #[arg(long)]
    pub pid: Option<String>,
    /// IPC namespace to use: private, shareable or host
    #[arg(long)]
    pub ipc: Option<String>,
    /// UTS namespace to use: private or host
    #[arg(long)]
    pub uts: Option<String>,
    /// Use TLS when pulling the image (see `pull --tls-verify`)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub tls_verify: Option<bool>,
    /// Image to create the container from
    pub image: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Run the container in the background and print its ID
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Proxy received signals to the container (default true without a tty)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub sig_proxy: Option<bool>,
    /// Key sequence for detaching a container (default ctrl-p,ctrl-q)
    #[arg(long)]
    pub detach_keys: Option<String>,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach container's STDOUT and STDERR
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Key sequence for detaching a container
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Proxy received signals to the container
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub sig_proxy: Option<bool>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait for stop before killing the container
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<u32>,
    /// Stop all running containers
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Ignore errors when a specified container is missing
    #[arg(short = 'i', long)]
    pub ignore: bool,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    /// Signal all running containers
    #[arg(short = 'a', long)]
    pub all: bool,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force removal of a running or unusable container
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove all containers
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    pub volumes: bool,
    /// Ignore errors when a specified container is missing
    #[arg(short = 'i', long)]
    pub ignore: bool,
    /// Seconds to wait for stop before killing the container
    #[arg(short = 't', long = "time")]
    pub time: Option<u32>,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all the containers, default is only running containers
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Print the numeric IDs of the containers only
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print the n last created containers (all states)
    #[arg(short = 'n', long, default_value_t = -1, allow_negative_numbers = true)]
    pub last: i64,
    /// Act on the latest container
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Filter output based on conditions given
    #[arg(short = 'f', long)]
    pub filter: Vec<String>,
    /// Pretty-print containers to JSON or using a Go template
    #[arg(long)]
    pub format: Option<String>,
    /// Display the extended information
    #[arg(long)]
    pub no_trunc: bool,
    /// Do not print headers
    #[arg(long)]
    pub noheading: bool,
    /// Display the total file sizes
    #[arg(short = 's', long)]
    pub size: bool,
    /// Sort output by: command, created, id, image, names, runningfor, size, status
    #[arg(long, default_value = "created")]
    pub sort: String,
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Condition to wait on (stopped, exited)
    #[arg(long)]
    pub condition: Vec<String>,
    /// Ignore errors when a specified container is missing
    #[arg(short = 'i', long)]
    pub ignore: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Run the command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Run as this user (name or uid, with an optional :group)
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    pub privileged: bool,
    /// Key sequence for detaching
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Container to run in
    pub container: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ObjectInspectArgs {
    /// Format the output using the given Go template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Which kind of object: container, image or all
    #[arg(short = 't', long = "type")]
    pub kind: Option<String>,
    /// Display the total file size
    #[arg(short = 's', long)]
    pub size: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CleanupArgs {
    pub container: String,
}

pub(crate) fn container_err(e: ContainerError) -> anyhow::Error {
    anyhow::Error::from(capsa_engine::EngineError::from(e))
}

fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.trim_end_matches('b').chars().last() {
        Some('k') => (&t[..t.find('k').unwrap_or(t.len())], 1u64 << 10),
        Some('m') => (&t[..t.find('m').unwrap_or(t.len())], 1 << 20),
        Some('g') => (&t[..t.find('g').unwrap_or(t.len())], 1 << 30),
        _ => (t.trim_end_matches('b'), 1),
    };
    let n: f64 = num.parse().map_err(|_| {
        anyhow!("invalid size {s:?}: use a number with an optional unit b, k, m or g")
    })?;
    if n < 0.0 {
        bail!("invalid size {s:?}: must not be negative");
    }
    Ok((n * mult as f64) as u64)
}

fn parse_env_file(path: &PathBuf) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --env-file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(expand_env)
        .collect())
}

/// `-e KEY` takes KEY's value from our environment (and is dropped when unset), as
/// Docker does; `-e KEY=VALUE` is kept as it is.
fn expand_env(e: &str) -> Option<String> {
    if e.contains('=') {
        return Some(e.to_string());
    }
    std::env::var(e).ok().map(|v| format!("{e}={v}"))
}

fn parse_labels(items: &[String]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// Turns the flags into the engine's configuration, checking each value.
fn build_config(a: &CreateArgs) -> Result<ContainerConfig> {
    let mut c = ContainerConfig::default();
    let mut env = Vec::new();
    if a.env_host {
        env.extend(std::env::vars().map(|(k, v)| format!("{k}={v}")));
    }
    for f in &a.env_file {
        env.extend(parse_env_file(f)?);
    }
    env.extend(a.env.iter().filter_map(|e| expand_env(e)));
    c.env = env;
    c.workdir = a.workdir.clone().unwrap_or_default();
    if !c.workdir.is_empty() && !c.workdir.starts_with('/') {
        bail!(
            "invalid --workdir {:?}: the path must be absolute",
            c.workdir
        );
    }
    c.user = a.user.clone().unwrap_or_default();
    c.hostname = a.hostname.clone().unwrap_or_default();
    c.tty = a.tty;
    c.stdin = a.interactive;
    c.read_only = a.read_only;
    c.privileged = a.privileged;
    c.cap_add = a.cap_add.clone();
    c.cap_drop = a.cap_drop.clone();
    for o in &a.security_opt {
        match o.split_once(['=', ':']) {
            None if o == "no-new-privileges" => c.no_new_privileges = true,
            Some(("no-new-privileges", v)) => c.no_new_privileges = v != "false",
            Some(("seccomp", v)) => c.seccomp_profile = Some(v.to_string()),
            Some(("label", "disable")) => c.label_disable = true,
            Some(("label", _)) => {}
            _ => bail!(
                "invalid --security-opt {o:?}: use no-new-privileges, seccomp=unconfined|PATH or label=disable"
            ),
        }
    }
    c.userns = a.userns.clone().unwrap_or_default();
    capsa_engine::container::idmap::UsernsMode::parse(&c.userns)?;
    c.init = a.init;
    if let Some(r) = &a.restart {
        let (name, max) = match r.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (r.as_str(), None),
        };
        if !matches!(name, "no" | "on-failure" | "always" | "unless-stopped") {
            bail!(
                "invalid --restart {r:?}: use no, on-failure[:max_retries], always or unless-stopped"
            );
        }
        if let Some(m) = max {
            if name != "on-failure" {
                bail!("invalid --restart {r:?}: a retry count goes with on-failure only");
            }
            c.restart_max = m.parse().map_err(|_| {
                anyhow!("invalid --restart {r:?}: the retry count must be a number")
            })?;
        }
        if a.rm && name != "no" {
            bail!("the --rm option conflicts with --restart {name}");
        }
        c.restart_policy = name.to_string();
    }
    c.auto_remove = a.rm;
    if let Some(s) = &a.stop_signal {
        c.stop_signal = normalize_signal(s)?;
    }
    c.stop_timeout = a.stop_timeout.unwrap_or(0);
    let driver = a.log_driver.clone().unwrap_or_default();
    if !matches!(
        driver.as_str(),
        "" | "k8s-file" | "json-file" | "none" | "passthrough"
    ) {
        bail!("invalid --log-driver {driver:?}: use k8s-file, json-file, none or passthrough");
    }
    c.log_driver = driver;
    for o in &a.log_opt {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid --log-opt {o:?}: use KEY=VALUE"))?;
        c.log_opts.insert(k.to_string(), v.to_string());
    }
    c.runtime = a.runtime.clone().unwrap_or_default();
    c.network = a.network.clone().unwrap_or_default();
    capsa_engine::network::NetworkMode::parse(&c.network)?;
    let mut ports = Vec::new();
    for p in &a.publish {
        ports.push(capsa_engine::network::ports::parse_publish(p)?);
    }
    c.ports = ports;
    c.dns = a.dns.clone();
    c.dns_search = a.dns_search.clone();
    c.dns_options = a.dns_option.clone();
    for h in &a.add_host {
        if !h.contains(':') {
            bail!("invalid --add-host {h:?}: use HOST:IP");
        }
    }
    c.add_hosts = a.add_host.clone();
    c.memory = a
        .memory
        .as_deref()
        .map(|m| parse_size(m).with_context(|| format!("invalid --memory {m:?}")))
        .transpose()?;
    if let Some(cpus) = a.cpus
        && cpus <= 0.0
    {
        bail!("invalid --cpus {cpus}: must be greater than 0");
    }
    c.cpus = a.cpus;
    c.pids_limit = a.pids_limit;
    if !matches!(a.sdnotify.as_str(), "" | "container" | "conmon" | "ignore") {
        bail!(
            "invalid --sdnotify {:?}: use container, conmon or ignore",
            a.sdnotify
        );
    }
    c.sdnotify = a.sdnotify.clone();
    c.preserve_fds = a.preserve_fds;
    c.annotations = parse_labels(&a.annotation);
    run_options(a, &mut c)?;
    if !matches!(a.pull.as_str(), "always" | "missing" | "never" | "newer") {
        bail!(
            "invalid --pull {:?}: use always, missing, never or newer",
            a.pull
        );
    }
    Ok(c)
}

/// `--ulimit`, `--sysctl`, `--shm-size`, `--group-add`, `--tz`, `--pid`, `--ipc`,
/// `--uts`, checked now as Podman checks them at create.
fn run_options(a: &CreateArgs, c: &mut ContainerConfig) -> Result<()> {
    use capsa_engine::container::options as opts;
    for u in &a.ulimit {
        let (kind, soft, hard) = opts::parse_ulimit(u)?;
        c.ulimits.retain(|(k, _, _)| *k != kind);
        c.ulimits.push((kind, soft, hard));
    }
    c.pid_ns = opts::parse_namespace("pid", a.pid.as_deref().unwrap_or_default())?;
    c.ipc_ns = opts::parse_namespace("ipc", a.ipc.as_deref().unwrap_or_default())?;
    c.uts_ns = opts::parse_namespace("uts", a.uts.as_deref().unwrap_or_default())?;
    if c.uts_ns == "host" && a.hostname.is_some() {
        return Err(opts::OptionsError::HostnameWithHostUts.into());
    }
    let host_net = c.network == "host";
    for s in &a.sysctl {
        let (k, v) = opts::parse_sysctl(s, host_net, c.ipc_ns == "host")?;
        c.sysctls.insert(k, v);
    }
    c.shm_size = a
        .shm_size
        .as_deref()
        .map(|s| parse_size(s).with_context(|| format!("invalid --shm-size {s:?}")))
        .transpose()?;
    if c.shm_size == Some(0) {
        bail!("invalid --shm-size \"0\": must be greater than 0");
    }
    c.group_add = a.group_add.clone();
    if let Some(tz) = &a.tz {
        opts::timezone_file(tz)?;
        c.timezone = tz.clone();
    }
    Ok(())
}

/// `--label-file` (one `KEY=VALUE` a line; `#` comments), then `--label`, which wins.
fn labels_of(a: &CreateArgs) -> Result<BTreeMap<String, String>> {
    let mut items = Vec::new();
    for f in &a.label_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading --label-file {}", f.display()))?;
        items.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    items.extend(a.label.iter().cloned());
    Ok(parse_labels(&items))
}

/// `TERM`, `15`, `SIGTERM` → `SIGTERM`.
pub fn normalize_signal(s: &str) -> Result<String> {
    const NAMES: &[&str] = &[
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    let up = s.trim().to_ascii_uppercase();
    let bare = up.strip_prefix("SIG").unwrap_or(&up);
    if let Ok(n) = bare.parse::<usize>()
        && (1..=NAMES.len()).contains(&n)
    {
        return Ok(format!("SIG{}", NAMES[n - 1]));
    }
    if NAMES.contains(&bare) || bare.starts_with("RTMIN") || bare.starts_with("RTMAX") {
        return Ok(format!("SIG{bare}"));
    }
    bail!("invalid signal {s:?}")
}

/// Finds or pulls the image per `--pull`.
async fn image_for(engine: &Engine, a: &CreateArgs) -> Result<ImageRecord> {
    let local = engine.lookup_image(&a.image);
    let pull = match a.pull.as_str() {
        "always" => true,
        "never" => false,
        "newer" => true,
        _ => local.is_err(),
    };
    if !pull {
        return Ok(local?);
    }
    let opts = PullOptions {
        tls_verify: a.tls_verify,
        ..Default::default()
    };
    let progress = StderrProgress::new(false);
    match engine.pull(&a.image, &opts, &progress).await {
        Ok(mut imgs) if !imgs.is_empty() => Ok(imgs.remove(0)),
        Ok(_) => bail!("pulling {}: no image", a.image),
        Err(e) if a.pull == "newer" && local.is_ok() => {
            tracing::warn!("pulling {}: {e}; using the local image", a.image);
            Ok(local?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates the container (pulling first when needed); returns its record.
pub async fn create_from(engine: &Engine, a: &CreateArgs) -> Result<ContainerRecord> {
    let config = build_config(a)?;
    let image = image_for(engine, a).await?;
    let entrypoint = a.entrypoint.as_ref().map(|e| {
        if e.trim_start().starts_with('[') {
            serde_json::from_str::<Vec<String>>(e).unwrap_or_else(|_| vec![e.clone()])
        } else if e.is_empty() {
            Vec::new()
        } else {
            vec![e.clone()]
        }
    });
    let cwd = std::env::current_dir().context("finding the current directory")?;
    let mut mounts = Vec::new();
    for v in &a.volume {
        mounts.push(capsa_engine::volume::parse_volume_flag(v, &cwd)?);
    }
    for m in &a.mount {
        mounts.push(capsa_engine::volume::parse_mount_flag(m, &cwd)?);
    }
    for t in &a.tmpfs {
        mounts.push(capsa_engine::volume::parse_tmpfs_flag(t)?);
    }
    let rec = engine.create_container(CreateRequest {
        mounts,
        publish_all: a.publish_all,
        name: a.name.clone().unwrap_or_default(),
        image,
        entrypoint,
        command: a.command.clone(),
        labels: labels_of(a)?,
        config,
    })?;
    if let Some(f) = &a.cidfile {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(f)
            .with_context(|| format!("creating --cidfile {}", f.display()))?;
        file.write_all(rec.id.as_bytes())?;
    }
    Ok(rec)
}

pub async fn create(engine: &Engine, a: CreateArgs) -> Result<()> {
    let rec = create_from(engine, &a).await?;
    println!("{}", rec.id);
    Ok(())
}

pub async fn run(engine: &Engine, a: RunArgs) -> Result<()> {
    let rec = create_from(engine, &a.create).await?;
    if a.detach {
        engine
            .start_container(&rec.id, &mut |_| Ok(()))
            .map_err(container_err)?;
        println!("{}", rec.id);
        return Ok(());
    }
    let code = crate::commands::attach::start_attached(
        engine,
        &rec.id,
        a.create.interactive,
        a.create.tty,
        a.detach_keys.as_deref(),
        a.sig_proxy.unwrap_or(true),
    )
    .await?;
    if let Some(code) = code {
        if a.create.rm {
            let _ = engine.remove_container(&rec.id, true);
        }
        return Err(Exit(code).into());
    }
    Ok(())
}

pub async fn start(engine: &Engine, a: StartArgs) -> Result<()> {
    if a.attach || a.interactive {
        if a.containers.len() > 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        let rec = engine.container(&a.containers[0]).map_err(container_err)?;
        let code = crate::commands::attach::start_attached(
            engine,
            &rec.id,
            a.interactive,
            rec.config.tty,
            a.detach_keys.as_deref(),
            a.sig_proxy.unwrap_or(true),
        )
        .await?;
        if let Some(code) = code {
            return Err(Exit(code).into());
        }
        return Ok(());
    }
    let mut failed = None;
    for c in &a.containers {
        match engine.start_container(c, &mut |_| Ok(())) {
            Ok(_) => println!("{c}"),
            Err(e) => failed = Some(report_one(container_err(e))),
        }
    }
    finish(failed)
}

/// Prints one container's error in a multi-container command; returns its exit code.
fn report_one(e: anyhow::Error) -> i32 {
    crate::report(&e)
}

fn finish(failed: Option<i32>) -> Result<()> {
    match failed {
        Some(code) => Err(Exit(code).into()),
        None => Ok(()),
    }
}

fn targets(
    engine: &Engine,
    all: bool,
    names: &[String],
    running_only: bool,
) -> Result<Vec<String>> {
    if all {
        return Ok(engine
            .list_containers()
            .map_err(container_err)?
            .into_iter()
            .filter(|c| !running_only || matches!(c.status, Status::Running | Status::Paused))
            .map(|c| c.id)
            .collect());
    }
    if names.is_empty() {
        bail!("you must provide at least one container name or ID");
    }
    Ok(names.to_vec())
}

pub fn stop(engine: &Engine, a: StopArgs) -> Result<()> {
    let mut failed = None;
    for c in targets(engine, a.all, &a.containers, true)? {
        match engine.stop_container(&c, a.time) {
            Ok(_) => println!("{c}"),
            Err(ContainerError::State(capsa_engine::container::state::StateError::NotFound(_)))
                if a.ignore => {}
            Err(e) => failed = Some(report_one(container_err(e))),
        }
    }
    finish(failed)
}

pub fn kill(engine: &Engine, a: KillArgs) -> Result<()> {
    let sig = normalize_signal(&a.signal)?;
    let mut failed = None;
    for c in targets(engine, a.all, &a.containers, true)? {
        match engine.kill_container(&c, sig.trim_start_matches("SIG")) {
            Ok(_) => println!("{c}"),
            Err(e) => failed = Some(report_one(container_err(e))),
        }
    }
    finish(failed)
}

pub fn rm(engine: &Engine, a: RmArgs) -> Result<()> {
    let mut failed = None;
    for c in targets(engine, a.all, &a.containers, false)? {
        let mut stopped_and_gone = false;
        if let Some(t) = a.time
            && a.force
        {
            // A --rm container is removed by its own cleanup once stopped.
            let known = engine.container(&c).is_ok();
            let _ = engine.stop_container(&c, Some(t));
            stopped_and_gone = known && engine.container(&c).is_err();
        }
        if stopped_and_gone {
            println!("{c}");
            continue;
        }
        match engine.remove_container_and_volumes(&c, a.force, a.volumes) {
            Ok(rec) => println!("{}", if a.all { rec.id } else { c }),
            Err(ContainerError::State(capsa_engine::container::state::StateError::NotFound(_)))
                if a.ignore => {}
            Err(e @ ContainerError::Running(_)) => {
                crate::report(&container_err(e));
                failed = Some(2);
            }
            Err(
                e @ ContainerError::State(capsa_engine::container::state::StateError::NotFound(_)),
            ) => {
                crate::report(&container_err(e));
                failed = Some(1);
            }
            Err(e) => failed = Some(report_one(container_err(e))),
        }
    }
    finish(failed)
}

pub fn wait(engine: &Engine, a: WaitArgs) -> Result<()> {
    let mut failed = None;
    for c in &a.containers {
        let rec = match engine.container(c) {
            Ok(r) => r,
            Err(ContainerError::State(capsa_engine::container::state::StateError::NotFound(_)))
                if a.ignore =>
            {
                println!("-1");
                continue;
            }
            Err(e) => {
                failed = Some(report_one(container_err(e)));
                continue;
            }
        };
        match engine
            .wait_container(&rec.id, None)
            .map_err(container_err)?
        {
            Some(r) => println!("{}", r.exit_code.unwrap_or(0)),
            None => {
                failed = Some(report_one(anyhow!(
                    "container {c} was removed while waiting"
                )))
            }
        }
    }
    finish(failed)
}

/// `inspect` and `container inspect`: containers first, then images (for `all`).
pub fn inspect(engine: &Engine, a: ObjectInspectArgs, default_kind: &str) -> Result<()> {
    let kind = a.kind.as_deref().unwrap_or(default_kind);
    if !matches!(kind, "all" | "container" | "image") {
        bail!("invalid --type {kind:?}: use container, image or all");
    }
    let mut docs = Vec::new();
    let mut missing = None;
    for name in &a.names {
        if kind != "image" {
            match engine.container(name) {
                Ok(rec) => {
                    let mut doc = engine.inspect_container(&rec);
                    if a.size {
                        let rw = engine.container_rw_size(&rec);
                        doc["SizeRw"] = json!(rw);
                    }
                    docs.push(doc);
                    continue;
                }
                Err(ContainerError::State(
                    capsa_engine::container::state::StateError::NotFound(_),
                )) => {}
                Err(e) => return Err(container_err(e)),
            }
        }
        if kind != "container" {
            match engine.lookup_image(name) {
                Ok(img) => {
                    docs.push(engine.inspect_image(&img)?);
                    continue;
                }
                Err(capsa_engine::EngineError::ImageNotKnown(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        missing.get_or_insert_with(|| match kind {
            "container" => format!("no such container {name}"),
            "image" => format!("{name}: image not known"),
            _ => format!("no such object: {name:?}"),
        });
    }
    output::print_inspect(docs, a.format.as_deref())?;
    if let Some(m) = missing {
        return Err(CodedError {
            code: 125,
            message: m,
        }
        .into());
    }
    Ok(())
}

pub fn exec(engine: &Engine, a: ExecArgs) -> Result<()> {
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(parse_env_file(f)?);
    }
    env.extend(a.env.iter().filter_map(|e| expand_env(e)));
    let opts = capsa_engine::container::lifecycle::ExecOptions {
        args: a.command.clone(),
        env,
        user: a.user.clone(),
        workdir: a.workdir.clone(),
        tty: a.tty,
        detach: a.detach,
        privileged: a.privileged,
    };
    let code = engine
        .exec_container(&a.container, &opts)
        .map_err(container_err)?;
    if code != 0 {
        return Err(Exit(code).into());
    }
    Ok(())
}

pub fn cleanup(engine: &Engine, a: CleanupArgs) -> Result<()> {
    engine
        .cleanup_container(&a.container)
        .map_err(container_err)
}

/// Podman's STATUS column text.
pub fn status_text(rec: &ContainerRecord) -> String {
    let since = |t: &Option<String>| {
        t.as_deref()
            .and_then(output::parse_time)
            .map(output::human_since)
            .unwrap_or_default()
    };
    match rec.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", since(&rec.started_at)),
        Status::Paused => format!("Paused {}", since(&rec.started_at)),
        Status::Stopped | Status::Exited => format!(
            "Exited ({}) {}",
            rec.exit_code.unwrap_or(0),
            since(&rec.finished_at)
        ),
    }
}

fn state_name(s: Status) -> &'static str {
    match s {
        Status::Created => "created",
        Status::Running => "running",
        Status::Paused => "paused",
        Status::Stopped => "stopped",
        Status::Exited => "exited",
    }
}

fn unix(t: &Option<String>) -> i64 {
    t.as_deref()
        .and_then(output::parse_time)
        .map(|t| t.timestamp())
        .unwrap_or(-62135596800)
}

/// `reference`: the container a `before=`/`since=` filter names.
fn matches_filter(
    rec: &ContainerRecord,
    f: &str,
    reference: Option<&ContainerRecord>,
) -> Result<bool> {
    let (k, v) = f
        .split_once('=')
        .ok_or_else(|| anyhow!("invalid filter {f:?}: use KEY=VALUE"))?;
    Ok(match k {
        "id" => rec.id.starts_with(v),
        "name" => rec.name.contains(v),
        "status" => state_name(rec.status) == v,
        "exited" => {
            rec.status == Status::Exited
                && rec.exit_code.map(|c| c.to_string()) == Some(v.to_string())
        }
        "label" => match v.split_once('=') {
            Some((lk, lv)) => rec.labels.get(lk).is_some_and(|x| x == lv),
            None => rec.labels.contains_key(v),
        },
        "ancestor" => rec.image_name.contains(v) || rec.image_id.starts_with(v),
        "before" | "since" => {
            let created = |c: &ContainerRecord| output::parse_time(&c.created);
            match (created(rec), reference.and_then(created)) {
                (Some(ours), Some(theirs)) if k == "before" => ours < theirs,
                (Some(ours), Some(theirs)) => ours > theirs,
                _ => false,
            }
        }
        _ => bail!(
            "invalid filter {k:?}: use id, name, status, exited, label, ancestor, before or since"
        ),
    })
}

pub fn ps(engine: &Engine, a: PsArgs) -> Result<()> {
    let mut list = engine.list_containers().map_err(container_err)?;
    let all = a.all || a.last >= 0 || a.latest;
    if !all {
        list.retain(|c| matches!(c.status, Status::Running | Status::Paused));
    }
    for f in &a.filter {
        // Podman looks the named container up first: an unknown one is an error even
        // when nothing would be listed.
        let reference = match f.split_once('=') {
            Some(("before" | "since", v)) => Some(engine.container(v).map_err(container_err)?),
            _ => None,
        };
        let mut keep = Vec::new();
        for c in list {
            if matches_filter(&c, f, reference.as_ref())? {
                keep.push(c);
            }
        }
        list = keep;
    }
    // Newest first, as Podman prints them.
    list.sort_by(|x, y| y.created.cmp(&x.created));
    if a.latest {
        list.truncate(1);
    }
    if a.last >= 0 {
        list.truncate(a.last as usize);
    }
    match a.sort.as_str() {
        "created" | "runningfor" => {}
        "id" => list.sort_by(|x, y| x.id.cmp(&y.id)),
        "names" => list.sort_by(|x, y| x.name.cmp(&y.name)),
        "image" => list.sort_by(|x, y| x.image_name.cmp(&y.image_name)),
        "command" => list.sort_by(|x, y| x.command.cmp(&y.command)),
        "status" => list.sort_by_key(|x| state_name(x.status)),
        "size" => {}
        other => bail!(
            "invalid --sort {other:?}: use command, created, id, image, names, runningfor, size or status"
        ),
    }
    if a.quiet {
        for c in &list {
            println!("{}", if a.no_trunc { &c.id[..] } else { &c.id[..12] });
        }
        return Ok(());
    }
    let mut cols = vec![
        Column {
            header: "CONTAINER ID",
            field: "ID",
        },
        Column {
            header: "IMAGE",
            field: "Image",
        },
        Column {
            header: "COMMAND",
            field: "Command",
        },
        Column {
            header: "CREATED",
            field: "CreatedHuman",
        },
        Column {
            header: "STATUS",
            field: "Status",
        },
        Column {
            header: "PORTS",
            field: "Ports",
        },
        Column {
            header: "NAMES",
            field: "Names",
        },
    ];
    if a.size {
        cols.push(Column {
            header: "SIZE",
            field: "Size",
        });
    }
    let format = Format::parse(a.format.as_deref(), cols);
    let rows: Vec<Value> = list
        .iter()
        .map(|c| {
            let cmd = c.command.join(" ");
            let cmd = if a.no_trunc || cmd.chars().count() <= 20 {
                cmd
            } else {
                format!("{}...", cmd.chars().take(17).collect::<String>())
            };
            let size = if a.size {
                output::human_size(engine.container_rw_size(c))
            } else {
                String::new()
            };
            json!({
                "ID": if a.no_trunc { c.id.clone() } else { c.id[..12].to_string() },
                "Image": c.image_name,
                "ImageID": c.image_id,
                "Command": cmd,
                "CreatedHuman": c.created.parse::<chrono::DateTime<chrono::Utc>>().map(output::human_since).unwrap_or_default(),
                "CreatedAt": c.created,
                "RunningFor": c.created.parse::<chrono::DateTime<chrono::Utc>>().map(output::human_since).unwrap_or_default(),
                "Status": status_text(c),
                "State": state_name(c.status),
                "Ports": capsa_engine::network::ports::ps_ports(&c.config.ports),
                "Names": c.name,
                "Labels": c.labels,
                "Size": size,
                "Pid": c.pid,
                "ExitCode": c.exit_code.unwrap_or(0),
            })
        })
        .collect();
    let docs = Value::Array(
        list.iter()
            .map(|c| {
                json!({
                    "AutoRemove": c.config.auto_remove,
                    "Command": c.command,
                    "CreatedAt": c.created.parse::<chrono::DateTime<chrono::Utc>>().map(output::human_since).unwrap_or_default(),
                    "Exited": c.status == Status::Exited,
                    "ExitedAt": unix(&c.finished_at),
                    "ExitCode": c.exit_code.unwrap_or(0),
                    "Id": c.id,
                    "Image": c.image_name,
                    "ImageID": c.image_id,
                    "IsInfra": false,
                    "Labels": c.labels,
                    "Names": [c.name],
                    "Namespaces": {},
                    "Networks": [],
                    "Mounts": c.config.mounts.iter().map(|m| m.destination.clone()).collect::<Vec<_>>(),
                    "Pid": c.pid,
                    "Pod": "",
                    "PodName": "",
                    "Ports": if c.config.ports.is_empty() { Value::Null } else { json!(c.config.ports) },
                    "Size": Value::Null,
                    "StartedAt": unix(&c.started_at),
                    "State": state_name(c.status),
                    "Status": status_text(c),
                    "Created": c.created.parse::<chrono::DateTime<chrono::Utc>>().map(|t| t.timestamp()).unwrap_or(0),
                })
            })
            .collect(),
    );
    output::print(&format, &rows, &docs, a.noheading)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_normalise() {
        assert_eq!(normalize_signal("term").unwrap(), "SIGTERM");
        assert_eq!(normalize_signal("9").unwrap(), "SIGKILL");
        assert_eq!(normalize_signal("SIGUSR1").unwrap(), "SIGUSR1");
        assert!(normalize_signal("NOPE").is_err());
        assert!(normalize_signal("99").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("4kb").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn bad_flag_values_are_refused() {
        let base = CreateArgs {
            image: "busybox".into(),
            pull: "missing".into(),
            sdnotify: "container".into(),
            ..Default::default()
        };
        for (what, args) in [
            (
                "restart policy",
                CreateArgs {
                    restart: Some("sometimes".into()),
                    ..base.clone()
                },
            ),
            (
                "retry count on always",
                CreateArgs {
                    restart: Some("always:3".into()),
                    ..base.clone()
                },
            ),
            (
                "rm with restart",
                CreateArgs {
                    restart: Some("always".into()),
                    rm: true,
                    ..base.clone()
                },
            ),
            (
                "log driver",
                CreateArgs {
                    log_driver: Some("syslog2".into()),
                    ..base.clone()
                },
            ),
            (
                "pull policy",
                CreateArgs {
                    pull: "sometimes".into(),
                    ..base.clone()
                },
            ),
            (
                "relative workdir",
                CreateArgs {
                    workdir: Some("tmp".into()),
                    ..base.clone()
                },
            ),
            (
                "network",
                CreateArgs {
                    network: Some("mynet".into()),
                    ..base.clone()
                },
            ),
            (
                "memory",
                CreateArgs {
                    memory: Some("lots".into()),
                    ..base.clone()
                },
            ),
            (
                "security opt",
                CreateArgs {
                    security_opt: vec!["apparmor=x".into()],
                    ..base.clone()
                },
            ),
            (
                "add-host",
                CreateArgs {
                    add_host: vec!["nohost".into()],
                    ..base.clone()
                },
            ),
        ] {
            assert!(build_config(&args).is_err(), "{what} should be refused");
        }
        assert!(build_config(&base).is_ok());
    }
}
