//! `generate systemd`: a service unit that runs an existing container (`capsa start`,
//! `Type=forking` with the monitor's pid file, as Podman 4.3 writes it) or, with `--new`,
//! one that creates a fresh container at every start (`capsa run --rm -d
//! --sdnotify=conmon`, `Type=notify`, `NotifyAccess=all`); and the same container as a
//! Quadlet `.container` file for Podman's generator. See docs/systemd.md.
//!
//! The `run` command line of `--new` is rebuilt from the record: what the image
//! provides anyway (its Env, Cmd, Entrypoint, WorkingDir, User, StopSignal, Labels,
//! VOLUMEs) and Capsa's defaults are left out, so the unit keeps following the image.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::container::state::{ContainerConfig, ContainerRecord};
use crate::volume::{MountKind, ResolvedMount};

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error(
        "invalid --restart-policy {0:?}: use no, on-success, on-failure, on-abnormal, on-watchdog, on-abort or always"
    )]
    RestartPolicy(String),
    #[error("invalid --separator {0:?}: unit names take letters, digits and \":-_.\\\" only")]
    Name(String),
}

/// What the image gives a container it creates; left out of a rebuilt `run`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageDefaults {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub stop_signal: String,
    pub labels: BTreeMap<String, String>,
    /// VOLUME destinations.
    pub volumes: Vec<String>,
}

impl ImageDefaults {
    /// From the image config's `config` object (Docker's container config).
    pub fn from_config(c: &Value) -> ImageDefaults {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let text = |v: &Value| v.as_str().unwrap_or("").to_string();
        ImageDefaults {
            env: strings(&c["Env"]),
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            workdir: text(&c["WorkingDir"]),
            user: text(&c["User"]),
            stop_signal: text(&c["StopSignal"]),
            labels: c["Labels"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                .unwrap_or_default(),
            volumes: c["Volumes"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// `generate systemd`'s flags, and what the caller knows about itself.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--new`: create the container at start, remove it at stop.
    pub new: bool,
    /// `--name`: name the unit and the commands after the container's name, not its ID.
    pub use_name: bool,
    /// `--restart-policy` (default: the container's policy, else on-failure).
    pub restart_policy: Option<String>,
    pub restart_sec: Option<u32>,
    /// `--time`/`-t` (default: the container's stop timeout).
    pub stop_timeout: Option<u32>,
    pub start_timeout: Option<u32>,
    pub container_prefix: String,
    pub separator: String,
    pub no_header: bool,
    pub wants: Vec<String>,
    pub after: Vec<String>,
    pub requires: Vec<String>,
    /// `--env`/`-e`: `Environment=` lines of the unit.
    pub env: Vec<String>,
    /// The capsa executable and the global flags to repeat (`--root`, …).
    pub capsa: PathBuf,
    pub global_args: Vec<String>,
    pub version: String,
    /// For the header: when it was generated.
    pub now: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            new: false,
            use_name: false,
            restart_policy: None,
            restart_sec: None,
            stop_timeout: None,
            start_timeout: None,
            container_prefix: "container".into(),
            separator: "-".into(),
            no_header: false,
            wants: Vec::new(),
            after: Vec::new(),
            requires: Vec::new(),
            env: Vec::new(),
            capsa: PathBuf::from("/usr/bin/capsa"),
            global_args: Vec::new(),
            version: String::new(),
            now: String::new(),
        }
    }
}

/// Where the store keeps a container's files (for `RequiresMountsFor=` and `PIDFile=`).
#[derive(Debug, Clone)]
pub struct StorePaths {
    pub root: PathBuf,
    pub runroot: PathBuf,
    /// `<runroot>/containers/<id>/monitor.pid`.
    pub monitor_pid_file: PathBuf,
}

/// A generated file: its name (`container-web.service`, `web.container`) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    pub text: String,
}

/// The `--sdnotify` a `--new` unit runs with: Podman keeps an explicit `container`
/// (the application says when it is ready) and uses `conmon` otherwise (ready once it
/// runs; `ignore` would leave a `Type=notify` unit waiting forever).
pub fn new_sdnotify(config: &ContainerConfig) -> &'static str {
    if config.sdnotify == "container" {
        "container"
    } else {
        "conmon"
    }
}

/// One `capsa run` flag and what it is in a Quadlet `.container` file.
#[derive(Debug, Clone, PartialEq)]
struct Flag {
    args: Vec<String>,
    /// A Quadlet key and its value; `None`: passed as `PodmanArgs=`.
    quadlet: Option<(&'static str, String)>,
}

fn flag(args: &[&str], quadlet: Option<(&'static str, &str)>) -> Flag {
    Flag {
        args: args.iter().map(|s| s.to_string()).collect(),
        quadlet: quadlet.map(|(k, v)| (k, v.to_string())),
    }
}

/// Options as the mount flag spells them: what `resolve` added by default is left out.
fn mount_options(m: &ResolvedMount) -> Vec<String> {
    let all: Vec<String> = m.oci["options"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut out: Vec<String> = all
        .iter()
        .filter(|o| {
            let o = o.as_str();
            let default = match m.kind {
                MountKind::Bind => matches!(o, "rw" | "rprivate" | "rbind"),
                MountKind::Volume => {
                    matches!(o, "rw" | "rprivate" | "rbind" | "nosuid" | "nodev")
                }
                MountKind::Tmpfs => {
                    matches!(o, "rw" | "rprivate" | "nosuid" | "nodev" | "tmpcopyup")
                }
            };
            !default
        })
        .cloned()
        .collect();
    if m.kind == MountKind::Tmpfs && !all.iter().any(|o| o == "tmpcopyup") {
        out.push("notmpcopyup".into());
    }
    if m.chown {
        out.push("U".into());
    }
    if m.kind == MountKind::Volume && !m.copy_up {
        out.push("nocopy".into());
    }
    if let Some(mode) = m.inspect.as_ref().and_then(|i| i["Mode"].as_str())
        && !mode.is_empty()
    {
        out.push(mode.to_string());
    }
    out
}

fn mount_flag(m: &ResolvedMount, img: &ImageDefaults, read_only: bool) -> Option<Flag> {
    let opts = mount_options(m);
    let with_opts = |base: String| {
        if opts.is_empty() {
            base
        } else {
            format!("{base}:{}", opts.join(","))
        }
    };
    let dest = &m.destination;
    match m.kind {
        MountKind::Tmpfs => {
            // --read-only's scratch space comes back by itself.
            let implied = read_only && ["/tmp", "/var/tmp", "/run"].contains(&dest.as_str());
            if implied && opts.is_empty() {
                return None;
            }
            let v = if opts.is_empty() {
                dest.clone()
            } else {
                format!("{dest}:{}", opts.join(","))
            };
            Some(Flag {
                args: vec!["--tmpfs".into(), v.clone()],
                quadlet: Some(("Tmpfs", v)),
            })
        }
        MountKind::Volume if m.anonymous => {
            // The image's VOLUMEs come back by themselves.
            if img.volumes.iter().any(|v| v.trim_end_matches('/') == dest) {
                return None;
            }
            Some(Flag {
                args: vec!["-v".into(), dest.clone()],
                quadlet: Some(("Volume", dest.clone())),
            })
        }
        MountKind::Volume | MountKind::Bind => {
            let src = m.volume.clone().unwrap_or_else(|| m.source.clone());
            let v = with_opts(format!("{src}:{dest}"));
            Some(Flag {
                args: vec!["-v".into(), v.clone()],
                quadlet: Some(("Volume", v)),
            })
        }
    }
}

/// The `run` flags that recreate the container, without those the unit sets itself
/// (`--name`, `-d`, `--rm`, `--sdnotify`, `--restart`).
fn run_flags(rec: &ContainerRecord, img: &ImageDefaults) -> Vec<Flag> {
    let c = &rec.config;
    let mut out = Vec::new();
    let tty_term = |e: &String| c.tty && e == "TERM=xterm" && !img.env.contains(e);
    let default_path = |e: &String| {
        img.env.is_empty()
            && e == "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    };
    for e in &c.env {
        if !img.env.contains(e) && !tty_term(e) && !default_path(e) {
            out.push(flag(&["-e", e], Some(("Environment", e))));
        }
    }
    if c.tty {
        out.push(flag(&["-t"], None));
    }
    if c.stdin {
        out.push(flag(&["-i"], None));
    }
    if !c.workdir.is_empty() && c.workdir != img.workdir {
        out.push(flag(&["-w", &c.workdir], Some(("WorkingDir", &c.workdir))));
    }
    if !c.user.is_empty() && c.user != img.user {
        let q = match c.user.split_once(':') {
            Some(_) => None,
            None => Some(("User", c.user.as_str())),
        };
        out.push(flag(&["-u", &c.user], q));
    }
    if !c.hostname.is_empty() {
        out.push(flag(
            &["--hostname", &c.hostname],
            Some(("HostName", &c.hostname)),
        ));
    }
    if c.read_only {
        out.push(flag(&["--read-only"], Some(("ReadOnly", "true"))));
    }
    if c.privileged {
        out.push(flag(&["--privileged"], None));
    }
    for a in &c.cap_add {
        out.push(flag(&["--cap-add", a], Some(("AddCapability", a))));
    }
    for d in &c.cap_drop {
        out.push(flag(&["--cap-drop", d], Some(("DropCapability", d))));
    }
    if c.no_new_privileges {
        out.push(flag(
            &["--security-opt", "no-new-privileges"],
            Some(("NoNewPrivileges", "true")),
        ));
    }
    if let Some(p) = &c.seccomp_profile {
        out.push(flag(
            &["--security-opt", &format!("seccomp={p}")],
            Some(("SeccompProfile", p)),
        ));
    }
    if c.label_disable {
        out.push(flag(&["--security-opt", "label=disable"], None));
    }
    if !c.userns.is_empty() {
        out.push(flag(&["--userns", &c.userns], Some(("UserNS", &c.userns))));
    }
    if c.init {
        out.push(flag(&["--init"], Some(("RunInit", "true"))));
    }
    for (name, soft, hard) in &c.ulimits {
        let v = format!("{name}={soft}:{hard}");
        out.push(flag(&["--ulimit", &v], Some(("Ulimit", &v))));
    }
    for (k, v) in &c.sysctls {
        let kv = format!("{k}={v}");
        out.push(flag(&["--sysctl", &kv], Some(("Sysctl", &kv))));
    }
    if let Some(size) = c.shm_size {
        out.push(flag(&["--shm-size", &size.to_string()], None));
    }
    for g in &c.group_add {
        out.push(flag(&["--group-add", g], None));
    }
    if !c.timezone.is_empty() {
        out.push(flag(
            &["--tz", &c.timezone],
            Some(("Timezone", &c.timezone)),
        ));
    }
    for (opt, ns) in [
        ("--pid", &c.pid_ns),
        ("--ipc", &c.ipc_ns),
        ("--uts", &c.uts_ns),
    ] {
        if !ns.is_empty() {
            out.push(flag(&[opt, ns], None));
        }
    }
    let default_signal = if img.stop_signal.is_empty() {
        "SIGTERM"
    } else {
        &img.stop_signal
    };
    if !c.stop_signal.is_empty() && c.stop_signal != default_signal {
        out.push(flag(&["--stop-signal", &c.stop_signal], None));
    }
    if c.stop_timeout != 0 && c.stop_timeout != 10 {
        out.push(flag(&["--stop-timeout", &c.stop_timeout.to_string()], None));
    }
    if !c.log_driver.is_empty() && c.log_driver != "k8s-file" {
        out.push(flag(
            &["--log-driver", &c.log_driver],
            Some(("LogDriver", &c.log_driver)),
        ));
    }
    for (k, v) in &c.log_opts {
        out.push(flag(&["--log-opt", &format!("{k}={v}")], None));
    }
    if !c.runtime.is_empty() {
        out.push(flag(&["--runtime", &c.runtime], None));
    }
    if !c.network.is_empty() {
        out.push(flag(
            &["--network", &c.network],
            Some(("Network", &c.network)),
        ));
    }
    for d in &c.dns {
        out.push(flag(&["--dns", d], Some(("DNS", d))));
    }
    for d in &c.dns_search {
        out.push(flag(&["--dns-search", d], Some(("DNSSearch", d))));
    }
    for d in &c.dns_options {
        out.push(flag(&["--dns-option", d], Some(("DNSOption", d))));
    }
    for h in &c.add_hosts {
        out.push(flag(&["--add-host", h], None));
    }
    for p in &c.ports {
        let p = p.to_string();
        out.push(flag(&["-p", &p], Some(("PublishPort", &p))));
    }
    for m in &c.mounts {
        out.extend(mount_flag(m, img, c.read_only));
    }
    if let Some(m) = c.memory {
        out.push(flag(&["--memory", &m.to_string()], None));
    }
    if let Some(cpus) = c.cpus {
        out.push(flag(&["--cpus", &cpus.to_string()], None));
    }
    if let Some(p) = c.pids_limit {
        out.push(flag(
            &["--pids-limit", &p.to_string()],
            Some(("PidsLimit", &p.to_string())),
        ));
    }
    if c.preserve_fds > 0 {
        out.push(flag(&["--preserve-fds", &c.preserve_fds.to_string()], None));
    }
    for (k, v) in &c.annotations {
        let kv = format!("{k}={v}");
        out.push(flag(&["--annotation", &kv], Some(("Annotation", &kv))));
    }
    for (k, v) in &rec.labels {
        if img.labels.get(k) != Some(v) {
            let kv = format!("{k}={v}");
            out.push(flag(&["--label", &kv], Some(("Label", &kv))));
        }
    }
    if c.entrypoint != img.entrypoint {
        let e = match c.entrypoint.as_slice() {
            [one] => one.clone(),
            _ => serde_json::to_string(&c.entrypoint).expect("strings serialise"),
        };
        out.push(flag(&["--entrypoint", &e], None));
    }
    out
}

/// The arguments after the image: the command, when it is not the image's.
fn command_args(c: &ContainerConfig, img: &ImageDefaults) -> Vec<String> {
    if c.entrypoint != img.entrypoint || c.cmd != img.cmd {
        c.cmd.clone()
    } else {
        Vec::new()
    }
}

/// Quotes one word for an `Exec*=` line (and Quadlet's `Exec=`, `Environment=`):
/// `%` and `$` are doubled (systemd expands specifiers and variables), words with
/// blanks, quotes, backslashes or `;` are double-quoted with C escapes.
pub fn quote(word: &str) -> String {
    let word = word.replace('%', "%%").replace('$', "$$");
    let plain = !word.is_empty()
        && !word
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'\\;".contains(c));
    if plain {
        return word;
    }
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quoted(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// An `Exec*=` line: the first words, then one continuation line per group (as Podman
/// lays them out).
fn exec_line(key: &str, first: &[String], groups: &[Vec<String>], last: &[String]) -> String {
    let mut s = format!("{key}={}", quoted(first));
    for g in groups {
        s.push_str(" \\\n\t");
        s.push_str(&quoted(g));
    }
    if !last.is_empty() {
        s.push(' ');
        s.push_str(&quoted(last));
    }
    s.push('\n');
    s
}

/// systemd's `Restart=` for this container: `--restart-policy`, else the container's
/// own (`unless-stopped` is `always`), else `on-failure`; plus `StartLimitBurst=` for
/// `on-failure:N`.
fn restart(c: &ContainerConfig, o: &Options) -> Result<(String, Option<u32>), UnitError> {
    const VALID: &[&str] = &[
        "no",
        "on-success",
        "on-failure",
        "on-abnormal",
        "on-watchdog",
        "on-abort",
        "always",
    ];
    if let Some(p) = &o.restart_policy {
        if !VALID.contains(&p.as_str()) {
            return Err(UnitError::RestartPolicy(p.clone()));
        }
        return Ok((p.clone(), None));
    }
    Ok(match c.restart_policy.as_str() {
        "always" | "unless-stopped" => ("always".into(), None),
        "on-failure" => (
            "on-failure".into(),
            (c.restart_max > 0).then_some(c.restart_max),
        ),
        _ => ("on-failure".into(), None),
    })
}

fn unit_name(rec: &ContainerRecord, o: &Options) -> Result<String, UnitError> {
    let base = if o.use_name { &rec.name } else { &rec.id };
    let ok = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\".contains(c))
    };
    if !ok(&o.separator) || !ok(&o.container_prefix) {
        return Err(UnitError::Name(o.separator.clone()));
    }
    Ok(if o.container_prefix.is_empty() {
        base.clone()
    } else {
        format!("{}{}{base}", o.container_prefix, o.separator)
    })
}

fn header(file: &str, o: &Options) -> String {
    if o.no_header {
        return String::new();
    }
    let mut s = format!("# {file}\n# autogenerated by capsa {}\n", o.version);
    if !o.now.is_empty() {
        s.push_str(&format!("# {}\n", o.now));
    }
    s.push('\n');
    s
}

fn unit_section(description: &str, o: &Options, mounts: &[&PathBuf]) -> String {
    let mut s = format!("[Unit]\nDescription={description}\n");
    let mut wants = vec!["network-online.target".to_string()];
    wants.extend(o.wants.iter().cloned());
    let mut after = vec!["network-online.target".to_string()];
    after.extend(o.after.iter().cloned());
    s.push_str(&format!("Wants={}\n", wants.join(" ")));
    s.push_str(&format!("After={}\n", after.join(" ")));
    if !o.requires.is_empty() {
        s.push_str(&format!("Requires={}\n", o.requires.join(" ")));
    }
    if !mounts.is_empty() {
        let m: Vec<String> = mounts.iter().map(|p| quote(&p.to_string_lossy())).collect();
        s.push_str(&format!("RequiresMountsFor={}\n", m.join(" ")));
    }
    s
}

/// The service unit for `rec`.
pub fn service(
    rec: &ContainerRecord,
    img: &ImageDefaults,
    store: &StorePaths,
    o: &Options,
) -> Result<Unit, UnitError> {
    let c = &rec.config;
    let name = unit_name(rec, o)?;
    let file = format!("{name}.service");
    let (restart, burst) = restart(c, o)?;
    let stop = o.stop_timeout.unwrap_or(if c.stop_timeout == 0 {
        10
    } else {
        c.stop_timeout
    });
    let target = if o.use_name || o.new {
        rec.name.clone()
    } else {
        rec.id.clone()
    };
    let capsa = |args: &[&str]| -> Vec<String> {
        let mut v = vec![o.capsa.to_string_lossy().into_owned()];
        v.extend(o.global_args.iter().cloned());
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let t = stop.to_string();

    let mut s = header(&file, o);
    s.push_str(&unit_section(
        &format!("capsa {file}"),
        o,
        &[&store.root, &store.runroot],
    ));
    if let Some(n) = burst {
        s.push_str(&format!("StartLimitBurst={n}\n"));
    }
    s.push_str("\n[Service]\nEnvironment=CAPSA_SYSTEMD_UNIT=%n\n");
    for e in &o.env {
        s.push_str(&format!("Environment={}\n", quote(e)));
    }
    s.push_str(&format!("Restart={restart}\n"));
    if let Some(r) = o.restart_sec {
        s.push_str(&format!("RestartSec={r}\n"));
    }
    if let Some(t) = o.start_timeout {
        s.push_str(&format!("TimeoutStartSec={t}\n"));
    }
    s.push_str(&format!("TimeoutStopSec={}\n", 60 + stop));
    if o.new {
        // Podman's `run --replace`: whatever is left under the name goes first.
        s.push_str(&exec_line(
            "ExecStartPre",
            &capsa(&["rm", "-f", "--ignore", "-t", &t, &target]),
            &[],
            &[],
        ));
        let mut groups: Vec<Vec<String>> = vec![
            vec!["--rm".into()],
            vec![format!("--sdnotify={}", new_sdnotify(c))],
            vec!["-d".into()],
            vec!["--name".into(), rec.name.clone()],
        ];
        groups.extend(run_flags(rec, img).into_iter().map(|f| f.args));
        let mut last = vec![c.image.clone()];
        last.extend(command_args(c, img));
        s.push_str(&exec_line("ExecStart", &capsa(&["run"]), &groups, &last));
        s.push_str(&exec_line(
            "ExecStop",
            &capsa(&["stop"]),
            &[vec![
                "--ignore".into(),
                "-t".into(),
                t.clone(),
                target.clone(),
            ]],
            &[],
        ));
        s.push_str(&exec_line(
            "ExecStopPost",
            &capsa(&["rm"]),
            &[
                vec!["-f".into()],
                vec!["--ignore".into(), "-t".into(), t.clone(), target.clone()],
            ],
            &[],
        ));
        s.push_str("KillMode=mixed\nType=notify\nNotifyAccess=all\n");
    } else {
        s.push_str(&exec_line(
            "ExecStart",
            &capsa(&["start", &target]),
            &[],
            &[],
        ));
        for key in ["ExecStop", "ExecStopPost"] {
            s.push_str(&exec_line(
                key,
                &capsa(&["stop"]),
                &[vec!["-t".into(), t.clone(), target.clone()]],
                &[],
            ));
        }
        s.push_str(&format!(
            "PIDFile={}\n",
            quote(&store.monitor_pid_file.to_string_lossy())
        ));
        s.push_str("KillMode=mixed\nType=forking\n");
    }
    s.push_str("\n[Install]\nWantedBy=default.target\n");
    Ok(Unit {
        name: file,
        text: s,
    })
}

/// The container as a Quadlet `.container` file (for Podman 4.8 and later; capsa does
/// not read these). Flags without a Quadlet key go to `PodmanArgs=`.
pub fn quadlet(rec: &ContainerRecord, img: &ImageDefaults, o: &Options) -> Result<Unit, UnitError> {
    let c = &rec.config;
    let file = format!("{}.container", rec.name);
    let (restart, burst) = restart(c, o)?;
    let stop = o.stop_timeout.unwrap_or(if c.stop_timeout == 0 {
        10
    } else {
        c.stop_timeout
    });
    let mut s = header(&file, o);
    s.push_str(&unit_section(
        &format!("capsa container {}", rec.name),
        o,
        &[],
    ));
    if let Some(n) = burst {
        s.push_str(&format!("StartLimitBurst={n}\n"));
    }
    s.push_str("\n[Container]\n");
    s.push_str(&format!("ContainerName={}\n", rec.name));
    s.push_str(&format!("Image={}\n", c.image));
    let mut podman_args: Vec<String> = Vec::new();
    for f in run_flags(rec, img) {
        match f.quadlet {
            Some((key, value)) => s.push_str(&format!("{key}={}\n", quote(&value))),
            None => podman_args.extend(f.args),
        }
    }
    if new_sdnotify(c) == "container" {
        s.push_str("Notify=true\n");
    }
    if !podman_args.is_empty() {
        s.push_str(&format!("PodmanArgs={}\n", quoted(&podman_args)));
    }
    let cmd = command_args(c, img);
    if !cmd.is_empty() {
        s.push_str(&format!("Exec={}\n", quoted(&cmd)));
    }
    s.push_str("\n[Service]\n");
    for e in &o.env {
        s.push_str(&format!("Environment={}\n", quote(e)));
    }
    s.push_str(&format!("Restart={restart}\n"));
    if let Some(r) = o.restart_sec {
        s.push_str(&format!("RestartSec={r}\n"));
    }
    if let Some(t) = o.start_timeout {
        s.push_str(&format!("TimeoutStartSec={t}\n"));
    }
    s.push_str(&format!("TimeoutStopSec={}\n", 60 + stop));
    s.push_str("\n[Install]\nWantedBy=default.target\n");
    Ok(Unit {
        name: file,
        text: s,
    })
}

#[cfg(test)]
mod tests;
