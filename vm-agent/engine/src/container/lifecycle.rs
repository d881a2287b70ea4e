//! The container lifecycle with no daemon: `create` writes a record; `start` mounts the
//! root filesystem, writes the runtime bundle and spawns `capsa-monitor`, which runs the
//! OCI runtime's `create` and reports the container's pid; `start` then runs the
//! runtime's `start`. When the container exits, the monitor writes the exit file and
//! runs `capsa container cleanup`, which tears the run down and applies `--rm` and
//! `--restart`. Every command that reads a record first brings it up to date from the
//! exit file and the monitor's liveness ([`Engine::sync_container`]), so the state is
//! true even when no capsa process was around when the container exited.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::container::rootfs;
use crate::container::runtime::{Runtime, RuntimeError};
use crate::container::spec::{self, NetworkNs, SpecOptions};
use crate::container::state::{ContainerConfig, ContainerRecord, Containers, StateError, Status};
use crate::engine::{Engine, EngineError};
use crate::store::ImageRecord;
use crate::userns;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Attach(#[from] crate::container::attach::AttachError),
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    #[error(transparent)]
    Idmap(#[from] crate::container::idmap::IdmapError),
    /// The container's command could not be run: 126 (cannot invoke) or 127 (not found).
    #[error("{message}")]
    Exec { code: i32, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "cannot remove container {0} as it is running - running or paused containers cannot be removed without force: container state improper"
    )]
    Running(String),
    #[error("container {0} is not running: container state improper")]
    NotRunning(String),
    #[error("capsa-monitor not found next to {0} or in $PATH")]
    NoMonitor(String),
    #[error("capsa-monitor for container {id}: {detail}")]
    Monitor { id: String, detail: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl ContainerError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ContainerError::Runtime(e) => e.hint(),
            ContainerError::Idmap(e) => e.hint(),
            ContainerError::Rootfs(e) => e.hint(),
            ContainerError::Running(_) => Some("stop it first, or pass --force".into()),
            ContainerError::NoMonitor(_) => {
                Some("install capsa-monitor next to capsa, or point CAPSA_MONITOR at it".into())
            }
            ContainerError::State(StateError::NameInUse(_)) => {
                Some("choose another --name, or remove the other container with `capsa rm`".into())
            }
            ContainerError::State(StateError::NotFound(_)) => {
                Some("`capsa ps -a` lists the containers in this store".into())
            }
            _ => None,
        }
    }

    /// Podman's exit code for this error: 126/127 for a command that cannot run.
    pub fn exit_code(&self) -> i32 {
        match self {
            ContainerError::Exec { code, .. } => *code,
            _ => 125,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Io { what, source }
}

/// What `create` needs besides the configuration.
pub struct CreateRequest {
    pub name: String,
    pub image: ImageRecord,
    /// `--entrypoint` given (even empty): the image's Cmd is then dropped, as Docker does.
    pub entrypoint: Option<Vec<String>>,
    /// The command after the image name; empty keeps the image's Cmd.
    pub command: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// `-v`, `--mount` and `--tmpfs`, parsed; the image's VOLUMEs are added.
    pub mounts: Vec<crate::volume::MountRequest>,
    /// `-P`: publish every port the image exposes, on random host ports.
    pub publish_all: bool,
    pub config: ContainerConfig,
}

/// How a run ended, as the exit file tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: i32,
    pub unix_nanos: i128,
}

pub fn read_exit_file(rundir: &Path) -> Option<ExitInfo> {
    let text = fs::read_to_string(rundir.join("exit")).ok()?;
    let mut it = text.split_whitespace();
    let code = it.next()?.parse().ok()?;
    let unix_nanos = it.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    Some(ExitInfo { code, unix_nanos })
}

fn rfc3339_from_nanos(n: i128) -> String {
    let secs = (n / 1_000_000_000) as i64;
    let nanos = (n % 1_000_000_000) as u32;
    chrono::DateTime::from_timestamp(secs, nanos)
        .unwrap_or_else(chrono::Utc::now)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Where `capsa-monitor` is: `$CAPSA_MONITOR`, next to the running executable, the
/// libexec directories, then `$PATH`.
pub fn find_monitor() -> Result<PathBuf, ContainerError> {
    if let Some(p) = std::env::var_os("CAPSA_MONITOR") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join("capsa-monitor"));
        // `cargo test` runs binaries from target/<profile>/deps.
        if let Some(up) = dir.parent() {
            candidates.push(up.join("capsa-monitor"));
        }
    }
    candidates.push("/usr/libexec/capsa/capsa-monitor".into());
    candidates.push("/usr/local/libexec/capsa/capsa-monitor".into());
    if let Some(paths) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&paths).map(|d| d.join("capsa-monitor")));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| ContainerError::NoMonitor(exe.display().to_string()))
}

/// The user and group a `-u` value (or the image's User) means inside `rootfs`.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<(u32, u32, Vec<u32>), ContainerError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let groups = fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    let (uid, mut gid, name) = if user.is_empty() {
        (0, 0, Some("root".to_string()))
    } else if let Ok(n) = user.parse::<u32>() {
        let entry = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2] == user);
        match entry {
            Some(f) => (n, f[3].parse().unwrap_or(0), Some(f[0].to_string())),
            None => (n, 0, None),
        }
    } else {
        let f = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == user)
            .ok_or_else(|| {
                ContainerError::Invalid(format!(
                    "unable to find user {user}: no matching entries in passwd file"
                ))
            })?;
        (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            Some(user.to_string()),
        )
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    ContainerError::Invalid(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
    }
    let mut extra = Vec::new();
    if group.is_none()
        && let Some(name) = name
    {
        for f in groups.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() > 3
                && f[3].split(',').any(|m| m == name)
                && let Ok(g) = f[2].parse::<u32>()
                && g != gid
            {
                extra.push(g);
            }
        }
    }
    Ok((uid, gid, extra))
}

/// The image config's `config` object (Docker's container config).
fn image_container_config(engine: &Engine, img: &ImageRecord) -> Result<Value, EngineError> {
    Ok(engine.image_config(img)?.config.unwrap_or(Value::Null))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Docker's rule for environment lists: later `KEY=…` entries replace earlier ones.
pub fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for e in overrides {
        let key = e.split('=').next().unwrap_or(e);
        if let Some(slot) = out
            .iter_mut()
            .find(|x| x.split('=').next().unwrap_or(x) == key)
        {
            *slot = e.clone();
        } else {
            out.push(e.clone());
        }
    }
    out
}

impl Engine {
    pub fn containers(&self) -> Result<Containers, ContainerError> {
        Ok(Containers::new(self.store.root())?)
    }

    /// Per-run files of a container (attach socket, exit file, pid files).
    pub fn container_rundir(&self, id: &str) -> PathBuf {
        self.store.runroot().join("containers").join(id)
    }

    /// The container's own directory in the store (record, bundle, writable layer).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.store.root().join("containers").join(id)
    }

    /// The OCI runtime a container runs under.
    pub fn runtime_for(&self, rec: &ContainerRecord) -> Result<Runtime, ContainerError> {
        let name = if rec.config.runtime.is_empty() {
            "crun"
        } else {
            &rec.config.runtime
        };
        let base = Path::new(name)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.to_string());
        Ok(Runtime::find(
            name,
            &self.store.runroot().join("runtime").join(base),
        )?)
    }

    /// Creates a container record from an image and the user's configuration.
    pub fn create_container(&self, req: CreateRequest) -> Result<ContainerRecord, EngineError> {
        let img_cfg = image_container_config(self, &req.image)?;
        let mut config = req.config;
        // Held until the record is written: `auto` ranges are read from the records.
        let _userns = crate::container::idmap::prepare_create(self, &req.image, &mut config)
            .map_err(ContainerError::from)?;
        let entrypoint = match &req.entrypoint {
            Some(e) => e.clone(),
            None => strings(&img_cfg["Entrypoint"]),
        };
        let cmd = if !req.command.is_empty() {
            req.command.clone()
        } else if req.entrypoint.is_some() {
            Vec::new()
        } else {
            strings(&img_cfg["Cmd"])
        };
        let command: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
        if command.is_empty() {
            return Err(ContainerError::Invalid(
                "no command or entrypoint provided, and no CMD or ENTRYPOINT from image".into(),
            )
            .into());
        }
        config.entrypoint = entrypoint;
        config.cmd = cmd;
        let mut env = strings(&img_cfg["Env"]);
        if env.is_empty() {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        if config.tty {
            env = merge_env(&env, &["TERM=xterm".to_string()]);
        }
        config.env = merge_env(&env, &config.env);
        if config.workdir.is_empty() {
            config.workdir = img_cfg["WorkingDir"].as_str().unwrap_or("").to_string();
        }
        if config.user.is_empty() {
            config.user = img_cfg["User"].as_str().unwrap_or("").to_string();
        }
        if config.stop_signal.is_empty() {
            config.stop_signal = img_cfg["StopSignal"]
                .as_str()
                .unwrap_or("SIGTERM")
                .to_string();
        }
        if config.stop_timeout == 0 {
            config.stop_timeout = 10;
        }
        if config.log_driver.is_empty() {
            config.log_driver = "k8s-file".into();
        }
        if config.image.is_empty() {
            config.image = req
                .image
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| req.image.id.clone());
        }
        resources(&config, self.store.rootless())?;
        let mut requests = req.mounts;
        let covered = |reqs: &[crate::volume::MountRequest], d: &str| {
            reqs.iter()
                .any(|r| r.destination.trim_end_matches('/') == d.trim_end_matches('/'))
        };
        if let Some(vols) = img_cfg["Volumes"].as_object() {
            for dest in vols.keys() {
                if !covered(&requests, dest) {
                    requests.push(
                        crate::volume::MountRequest::anonymous_volume(dest)
                            .map_err(ContainerError::from)?,
                    );
                }
            }
        }
        if config.read_only {
            // Podman's --read-only-tmpfs: scratch space where programs expect it.
            for dest in ["/tmp", "/var/tmp", "/run"] {
                if !covered(&requests, dest) {
                    requests
                        .push(crate::volume::parse_tmpfs_flag(dest).map_err(ContainerError::from)?);
                }
            }
        }
        let user = config
            .user
            .split_once(':')
            .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
            .or_else(|| config.user.parse::<u32>().ok().map(|u| (u, u)));
        config.mounts = crate::volume::Volumes::new(self.store.root())
            .and_then(|v| v.resolve(&requests, user))
            .map_err(ContainerError::from)?;
        if let Some(e) = img_cfg["ExposedPorts"].as_object() {
            config.exposed = e.keys().cloned().collect();
        }
        let mode = crate::network::NetworkMode::parse(&config.network)
            .map_err(|e| ContainerError::Invalid(e.to_string()))?;
        if req.publish_all {
            let extra = crate::network::ports::publish_exposed(&config.ports, &config.exposed)
                .map_err(|e| ContainerError::Invalid(e.to_string()))?;
            config.ports.extend(extra);
        }
        if !config.ports.is_empty() && !mode.is_private() {
            return Err(ContainerError::Invalid(format!(
                "published ports need a private network, not --network {mode}"
            ))
            .into());
        }
        crate::network::ports::assign_host_ports(&mut config.ports)
            .map_err(|e| ContainerError::Invalid(e.to_string()))?;
        let mut labels = std::collections::BTreeMap::new();
        if let Some(l) = img_cfg["Labels"].as_object() {
            for (k, v) in l {
                labels.insert(k.clone(), v.as_str().unwrap_or("").to_string());
            }
        }
        labels.extend(req.labels);
        let rec = ContainerRecord {
            name: req.name,
            image_id: req.image.id.clone(),
            image_name: config.image.clone(),
            command,
            created: now(),
            labels,
            config,
            ..Default::default()
        };
        Ok(self
            .containers()?
            .create(rec)
            .map_err(ContainerError::from)?)
    }

    /// Looks a container up and brings its state up to date.
    pub fn container(&self, input: &str) -> Result<ContainerRecord, ContainerError> {
        let rec = self.containers()?.lookup(input)?;
        self.sync_container(rec)
    }

    /// Every container, each brought up to date.
    pub fn list_containers(&self) -> Result<Vec<ContainerRecord>, ContainerError> {
        let all = self.containers()?.list()?;
        all.into_iter().map(|r| self.sync_container(r)).collect()
    }

    /// A running container whose exit file exists has exited; one whose monitor is gone
    /// without an exit file lost its monitor: what is left of it is killed and it is
    /// recorded as exited. Persisted under the record's lock.
    pub fn sync_container(&self, rec: ContainerRecord) -> Result<ContainerRecord, ContainerError> {
        if !matches!(rec.status, Status::Running | Status::Paused) || !self.needs_sync(&rec) {
            return Ok(rec);
        }
        let containers = self.containers()?;
        match containers.update(&rec.id, |r| self.sync_locked(r)) {
            Ok(()) => Ok(containers.get(&rec.id)?),
            Err(StateError::NotFound(_)) => Err(StateError::NotFound(rec.id).into()),
            Err(e) => Err(e.into()),
        }
    }

    fn needs_sync(&self, rec: &ContainerRecord) -> bool {
        let rundir = self.container_rundir(&rec.id);
        rundir.join("exit").exists() || !self.monitor_alive(rec)
    }

    fn monitor_alive(&self, rec: &ContainerRecord) -> bool {
        rec.monitor_pid > 0
            && userns::start_time(rec.monitor_pid).as_deref() == Some(rec.monitor_start.as_str())
    }

    fn sync_locked(&self, r: &mut ContainerRecord) {
        if !matches!(r.status, Status::Running | Status::Paused) {
            return;
        }
        let rundir = self.container_rundir(&r.id);
        if let Some(exit) = read_exit_file(&rundir) {
            r.status = Status::Exited;
            r.exit_code = Some(exit.code);
            r.finished_at = Some(rfc3339_from_nanos(exit.unix_nanos));
            r.pid = 0;
        } else if !self.monitor_alive(r) {
            tracing::warn!(
                "the monitor of container {} is gone; stopping what is left of it",
                &r.id[..12]
            );
            if let Ok(rt) = self.runtime_for(r) {
                let _ = rt.run("kill", &r.id, &rt.kill_args(&r.id, "KILL", false));
            }
            r.status = Status::Exited;
            r.exit_code = Some(137);
            r.finished_at = Some(now());
            r.pid = 0;
            r.error = "the container's monitor was killed".into();
        }
    }

    /// Starts a created or exited container. `on_created` runs once the runtime has
    /// created it and before it starts (to attach without losing output); it gets the
    /// container's run directory.
    pub fn start_container(
        &self,
        input: &str,
        on_created: &mut dyn FnMut(&Path) -> Result<(), ContainerError>,
    ) -> Result<ContainerRecord, ContainerError> {
        let containers = self.containers()?;
        let rec = containers.lookup(input)?;
        let id = rec.id.clone();
        containers.update(&id, |r| {
            self.sync_locked(r);
            if r.status == Status::Running {
                return Ok(());
            }
            // A start by the user switches --restart back on, as Podman does.
            r.stopped_by_user = false;
            r.restart_count = 0;
            self.start_locked(r, on_created)
        })??;
        Ok(containers.get(&id)?)
    }

    /// A paused container is thawed before it is signalled (a frozen process cannot act
    /// on a signal).
    fn thaw(&self, rec: &ContainerRecord, rt: &Runtime) {
        if rec.status == Status::Paused {
            let args = vec![
                rt.path.clone().into_os_string(),
                "--root".into(),
                rt.state_root.clone().into_os_string(),
                "resume".into(),
                rec.id.clone().into(),
            ];
            if let Err(e) = rt.run("resume", &rec.id, &args) {
                tracing::warn!("{e}");
            }
            let _ = self.containers().map(|c| {
                c.update(&rec.id, |r| {
                    if r.status == Status::Paused {
                        r.status = Status::Running;
                    }
                })
            });
        }
    }

    fn start_locked(
        &self,
        r: &mut ContainerRecord,
        on_created: &mut dyn FnMut(&Path) -> Result<(), ContainerError>,
    ) -> Result<(), ContainerError> {
        let rt = self.runtime_for(r)?;
        if r.mounted {
            self.teardown(r, &rt);
        }
        let monitor = find_monitor()?;
        let img = self
            .lookup_image(&r.image_id)
            .map_err(|e| ContainerError::Invalid(format!("image of container: {e}")))?;
        let lowers = self
            .rootfs_lowers(&img)
            .map_err(|e| ContainerError::Invalid(e.to_string()))?;
        let lowers = crate::container::idmap::container_lowers(self, r, lowers)?;
        let cdir = self.container_dir(&r.id);
        let (merged, driver) =
            rootfs::mount(&lowers, &cdir, self.store.rootless(), r.rootfs_mount)?;
        r.rootfs_mount = Some(driver);
        r.mounted = true;
        let result = self.launch(r, &rt, &monitor, &cdir, &merged, on_created);
        if let Err(e) = &result {
            r.error = e.to_string();
            self.teardown(r, &rt);
        }
        result
    }

    fn launch(
        &self,
        r: &mut ContainerRecord,
        rt: &Runtime,
        monitor: &Path,
        cdir: &Path,
        merged: &Path,
        on_created: &mut dyn FnMut(&Path) -> Result<(), ContainerError>,
    ) -> Result<(), ContainerError> {
        let rundir = self.container_rundir(&r.id);
        if rundir.exists() {
            let _ = fs::remove_dir_all(&rundir);
        }
        fs::create_dir_all(&rundir).map_err(io_err(format!("creating {}", rundir.display())))?;
        fs::create_dir_all(&rt.state_root)
            .map_err(io_err(format!("creating {}", rt.state_root.display())))?;
        let so = self.spec_options(r, merged)?;
        let vols = crate::volume::Volumes::new(self.store.root())?;
        for m in r.config.mounts.iter().filter(|m| m.copy_up || m.chown) {
            if let Some(name) = &m.volume {
                if m.chown || m.created {
                    vols.chown_if_needed(name, so.uid, so.gid)?;
                }
                if m.copy_up {
                    vols.copy_up(name, merged, &m.destination)?;
                }
            }
        }
        let mut so = so;
        let mode = crate::network::NetworkMode::parse(&r.config.network)
            .map_err(|e| ContainerError::Invalid(e.to_string()))?;
        let helper = match &mode {
            crate::network::NetworkMode::Private(named) => Some(
                crate::network::select_helper(*named)
                    .map_err(|e| ContainerError::Invalid(e.to_string()))?,
            ),
            _ => None,
        };
        so.network = match (&mode, mode.spec_netns()) {
            (_, Some(ns)) => ns,
            (crate::network::NetworkMode::Container(other), None) => {
                let o = self.container(other)?;
                if o.status != Status::Running || o.pid <= 0 {
                    return Err(ContainerError::NotRunning(other.clone()));
                }
                // The namespace file outlives a pid that could be reused.
                match crate::network::netns_file(&self.container_rundir(&o.id)) {
                    Some(p) => NetworkNs::Path(p.to_string_lossy().into_owned()),
                    None => NetworkNs::Path(format!("/proc/{}/ns/net", o.pid)),
                }
            }
            _ => NetworkNs::Private,
        };
        // A namespace of ours, so the helper can configure it while the runtime creates
        // the container. A container with its own user namespace needs a network
        // namespace that namespace owns (for sysfs), made by the runtime: the helper
        // follows `crun create` then.
        let net_err = |e: crate::network::NetworkError| ContainerError::Invalid(e.to_string());
        let netns = match helper {
            Some(_) if so.user_ns.is_none() => {
                let (path, ns) = crate::network::create_netns(&rundir).map_err(net_err)?;
                so.network = NetworkNs::Path(path.to_string_lossy().into_owned());
                Some(ns)
            }
            _ => None,
        };
        if r.config.hostname.is_empty() {
            so.hostname = crate::network::default_hostname(&mode, &r.id);
        }
        let c = &r.config;
        let file_opts = crate::network::files::FileOptions::from_flags(
            &so.hostname,
            &r.name,
            &c.add_hosts,
            &c.dns,
            &c.dns_search,
            &c.dns_options,
        )
        .map_err(|e| ContainerError::Invalid(e.to_string()))?;
        let files = crate::network::files::write(&rundir, &mode, helper, &file_opts)
            .map_err(|e| ContainerError::Invalid(e.to_string()))?;
        // The user's own mounts of these files win.
        for f in files {
            if !so.mounts.iter().any(|m| m["destination"] == f.destination) {
                so.mounts.push(f.oci());
            }
        }
        let sd = crate::container::systemd::SystemdEnv::current();
        crate::container::systemd::apply_to_spec(&mut so, sd, &r.config, &rundir)?;
        crate::container::options::apply_start(&mut so, &r.config, &rundir)?;
        let spec = spec::build(&so, &merged.to_string_lossy())?;
        let bytes = serde_json::to_vec_pretty(&spec).expect("a spec serialises");
        fs::write(cdir.join("config.json"), bytes)
            .map_err(io_err(format!("writing {}/config.json", cdir.display())))?;
        let starting = match (helper, &netns) {
            (Some(h), Some(ns)) => Some(
                crate::network::start(h, std::os::fd::AsFd::as_fd(ns), &r.config.ports, &rundir)
                    .map_err(net_err)?,
            ),
            _ => None,
        };
        let spawned = self.spawn_monitor(r, rt, monitor, cdir, &rundir);
        // Recorded even when the monitor failed, so the teardown stops the helper.
        if let Some(s) = starting {
            r.net = Some(s.finish().map_err(net_err)?);
        }
        let pid = spawned?;
        r.pid = pid;
        if let Some(h) = helper
            && r.net.is_none()
        {
            r.net = Some(crate::network::setup(h, pid, &r.config.ports, &rundir).map_err(net_err)?);
        }
        on_created(&rundir)?;
        rt.run("start", &r.id, &rt.start_args(&r.id))?;
        crate::container::systemd::notify_started(sd, &r.config, r.monitor_pid);
        r.status = Status::Running;
        r.started_at = Some(now());
        r.finished_at = None;
        r.exit_code = None;
        r.error.clear();
        Ok(())
    }

    fn spec_options(
        &self,
        r: &ContainerRecord,
        merged: &Path,
    ) -> Result<SpecOptions, ContainerError> {
        let c = &r.config;
        let mut o = SpecOptions::new(r.command.clone());
        o.env = c.env.clone();
        if !c.workdir.is_empty() {
            o.cwd = c.workdir.clone();
        }
        let (uid, gid, extra) = resolve_user(merged, &c.user)?;
        (o.uid, o.gid, o.additional_gids) = (uid, gid, extra);
        o.hostname = if c.hostname.is_empty() {
            r.id[..12].to_string()
        } else {
            c.hostname.clone()
        };
        o.terminal = c.tty;
        o.read_only = c.read_only;
        o.privileged = c.privileged;
        o.no_new_privileges = c.no_new_privileges;
        o.rootless = self.store.rootless();
        let norm = |s: &str| {
            let u = s.to_ascii_uppercase();
            if u.starts_with("CAP_") {
                u
            } else {
                format!("CAP_{u}")
            }
        };
        if c.cap_drop.iter().any(|d| d.eq_ignore_ascii_case("all")) {
            o.capabilities.clear();
        }
        for d in &c.cap_drop {
            let d = norm(d);
            o.capabilities.retain(|x| *x != d);
        }
        for a in &c.cap_add {
            if a.eq_ignore_ascii_case("all") {
                o.capabilities = spec::all_capabilities();
                continue;
            }
            let a = norm(a);
            if !o.capabilities.contains(&a) {
                o.capabilities.push(a);
            }
        }
        o.mounts = c.mounts.iter().map(|m| m.oci.clone()).collect();
        o.seccomp =
            match c.seccomp_profile.as_deref() {
                None | Some("") => o.seccomp,
                Some("unconfined") => None,
                Some(path) => {
                    let text = fs::read_to_string(path)
                        .map_err(io_err(format!("reading the seccomp profile {path}")))?;
                    Some(spec::seccomp_from_json(&text).map_err(|e| {
                        ContainerError::Invalid(format!("seccomp profile {path}: {e}"))
                    })?)
                }
            };
        o.resources = resources(c, self.store.rootless())?;
        if c.init {
            let init = find_init()?;
            o.mounts.push(serde_json::json!({
                "destination": INIT_PATH, "type": "bind", "source": init,
                "options": ["bind", "ro", "nosuid", "nodev"],
            }));
            let mut args = vec![INIT_PATH.to_string(), "--".to_string()];
            args.append(&mut o.args);
            o.args = args;
        }
        crate::container::idmap::apply_to_spec(self, r, merged, &mut o)?;
        crate::container::options::apply_process(&mut o, c, merged)?;
        Ok(o)
    }

    /// Spawns the monitor and waits for its one line; returns the container's pid.
    fn spawn_monitor(
        &self,
        r: &mut ContainerRecord,
        rt: &Runtime,
        monitor: &Path,
        cdir: &Path,
        rundir: &Path,
    ) -> Result<i32, ContainerError> {
        let c = &r.config;
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io_err("creating the monitor's sync pipe")(
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: pipe2 returned two fresh descriptors we now own.
        let (sync_r, sync_w) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let sd = crate::container::systemd::SystemdEnv::current();
        let preserve = crate::container::systemd::preserved_fds(sd, c) as i32;
        let sync_fd = 3 + preserve;
        let exe = std::env::current_exe().map_err(io_err("finding the capsa executable"))?;
        let mut cmd = Command::new(monitor);
        cmd.arg("--id").arg(&r.id).arg("--bundle").arg(cdir);
        cmd.arg("--runtime").arg(&rt.path);
        for a in ["--root".into(), OsString::from(&rt.state_root)] {
            cmd.arg("--runtime-arg").arg(a);
        }
        cmd.arg("--rundir").arg(rundir);
        let log_driver = if c.log_driver.is_empty() {
            "k8s-file"
        } else {
            &c.log_driver
        };
        cmd.arg("--log-driver").arg(log_driver);
        cmd.arg("--log-path").arg(self.log_path(r));
        if c.tty {
            cmd.arg("--terminal");
            if let Some((rows, cols)) = terminal_size() {
                cmd.arg("--terminal-size").arg(format!("{rows}x{cols}"));
            }
        }
        if c.stdin {
            cmd.arg("--stdin");
        }
        if preserve > 0 {
            cmd.arg("--preserve-fds").arg(preserve.to_string());
        }
        cmd.arg("--sync-fd").arg(sync_fd.to_string());
        crate::container::systemd::configure_monitor(&mut cmd, sd, c);
        cmd.arg("--exit-command").arg(&exe);
        let mut exit_args: Vec<OsString> = vec![
            "--root".into(),
            self.store.root().into(),
            "--runroot".into(),
            self.store.runroot().into(),
            "--storage-driver".into(),
            self.store.driver().name().into(),
            "container".into(),
            "cleanup".into(),
            r.id.clone().into(),
        ];
        for a in exit_args.drain(..) {
            cmd.arg("--exit-arg").arg(a);
        }
        cmd.current_dir(rundir);
        if log_driver != "passthrough" {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        let w = sync_w.as_raw_fd();
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if w == sync_fd {
                    let flags = libc::fcntl(w, libc::F_GETFD);
                    libc::fcntl(w, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(w, sync_fd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Nothing else leaks into the monitor (a caller's pipe kept open by it
                // would never see end-of-file).
                libc::syscall(libc::SYS_close_range, sync_fd as u32 + 1, u32::MAX, 0);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| ContainerError::Monitor {
            id: r.id.clone(),
            detail: format!("starting {}: {e}", monitor.display()),
        })?;
        drop(sync_w);
        let mut line = String::new();
        let _ = BufReader::new(fs::File::from(sync_r)).read_line(&mut line);
        let line = line.trim_end();
        r.monitor_pid = child.id() as i32;
        r.monitor_start = userns::start_time(r.monitor_pid).unwrap_or_default();
        if let Some(pid) = line.strip_prefix("pid ") {
            // The monitor runs on after we return; it is reparented when we exit.
            std::thread::spawn(move || child.wait());
            return pid.trim().parse().map_err(|_| ContainerError::Monitor {
                id: r.id.clone(),
                detail: format!("unexpected answer {line:?}"),
            });
        }
        let _ = child.wait();
        let detail = line.strip_prefix("error ").unwrap_or(line).to_string();
        if detail.is_empty() {
            return Err(ContainerError::Monitor {
                id: r.id.clone(),
                detail: "it exited without reporting the container's pid".into(),
            });
        }
        Err(exec_error(&rt.name, &detail))
    }

    /// The directories a container's root filesystem stacks, bottom first: every layer
    /// with the overlay driver; with vfs only the top one, which is already a full copy
    /// with the deletions applied (its parents would bring deleted files back).
    pub fn rootfs_lowers(
        &self,
        img: &ImageRecord,
    ) -> Result<Vec<PathBuf>, crate::store::StoreError> {
        let layers: &[String] = match self.store.driver() {
            crate::store::Driver::Vfs => img.layers.last().map(std::slice::from_ref).unwrap_or(&[]),
            crate::store::Driver::Overlay => &img.layers,
        };
        layers.iter().map(|l| self.store.layer_diff(l)).collect()
    }

    /// The log file (`--log-opt path=` or `ctr.log` in the container's directory).
    pub fn log_path(&self, r: &ContainerRecord) -> PathBuf {
        r.config
            .log_opts
            .get("path")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.container_dir(&r.id).join("ctr.log"))
    }

    /// Undoes a run: the runtime forgets the container, the network helper stops, the
    /// root filesystem is unmounted. Every step is best effort and idempotent.
    fn teardown(&self, r: &mut ContainerRecord, rt: &Runtime) {
        let _ = rt.run("delete", &r.id, &rt.delete_args(&r.id, true));
        if let Some(net) = r.net.take() {
            // Waiting for the helper to exit only matters for ports it must free.
            crate::network::stop(&net, !r.config.ports.is_empty());
        }
        crate::network::remove_netns(&self.container_rundir(&r.id));
        let merged = self.container_dir(&r.id).join("merged");
        let driver = r.rootfs_mount.unwrap_or(rootfs::MountDriver::Overlay);
        if let Err(e) = rootfs::unmount(driver, &merged)
            && !matches!(&e, rootfs::RootfsError::Unmount { source, .. } if source.raw_os_error() == Some(libc::EINVAL) || source.raw_os_error() == Some(libc::ENOENT))
        {
            tracing::warn!("{e}");
        }
        r.mounted = false;
    }

    /// `container cleanup`, run by the monitor when the container exits (and by `stop`
    /// and `rm`): tears the run down, then applies `--rm` or `--restart`.
    pub fn cleanup_container(&self, input: &str) -> Result<(), ContainerError> {
        let containers = self.containers()?;
        let rec = match containers.lookup(input) {
            Ok(r) => r,
            Err(StateError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let id = rec.id.clone();
        enum Next {
            Nothing,
            Remove,
        }
        let next = containers.update(&id, |r| -> Result<Next, ContainerError> {
            self.sync_locked(r);
            if r.status != Status::Exited {
                return Ok(Next::Nothing);
            }
            if r.mounted {
                let rt = self.runtime_for(r)?;
                self.teardown(r, &rt);
            }
            if r.config.auto_remove {
                return Ok(Next::Remove);
            }
            if self.should_restart(r) {
                r.restart_count += 1;
                // A container that keeps failing is restarted more slowly (up to 5 s).
                let backoff = 100u64.saturating_mul(1 << r.restart_count.min(6)).min(5000);
                std::thread::sleep(Duration::from_millis(backoff));
                self.start_locked(r, &mut |_| Ok(()))?;
            }
            Ok(Next::Nothing)
        });
        match next {
            Ok(Ok(Next::Remove)) => self.remove_container_dirs(&id),
            Ok(Ok(Next::Nothing)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(StateError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn should_restart(&self, r: &ContainerRecord) -> bool {
        if r.stopped_by_user {
            return false;
        }
        let code = r.exit_code.unwrap_or(0);
        match r.config.restart_policy.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => {
                code != 0 && (r.config.restart_max == 0 || r.restart_count < r.config.restart_max)
            }
            _ => false,
        }
    }

    fn remove_container_dirs(&self, id: &str) -> Result<(), ContainerError> {
        let _ = fs::remove_dir_all(self.container_rundir(id));
        match self.containers()?.remove(id) {
            Ok(()) | Err(StateError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends a signal through the runtime; `user` marks it as the user's doing (no
    /// restart afterwards).
    pub fn kill_container(
        &self,
        input: &str,
        signal: &str,
    ) -> Result<ContainerRecord, ContainerError> {
        let rec = self.container(input)?;
        if !matches!(rec.status, Status::Running | Status::Paused) {
            return Err(ContainerError::NotRunning(rec.id[..12].to_string()));
        }
        let containers = self.containers()?;
        containers.update(&rec.id, |r| r.stopped_by_user = true)?;
        let rt = self.runtime_for(&rec)?;
        if signal.trim_start_matches("SIG") == "KILL" || signal == "9" {
            self.thaw(&rec, &rt);
        }
        rt.run("kill", &rec.id, &rt.kill_args(&rec.id, signal, false))?;
        Ok(rec)
    }

    /// Waits until the container is no longer running (or `timeout` passes); returns its
    /// record then, or `None` when it was removed meanwhile.
    pub fn wait_container(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<ContainerRecord>, ContainerError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(2);
        loop {
            let rec = match self.containers()?.get(id) {
                Ok(r) => r,
                Err(StateError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let rec = match self.sync_container(rec) {
                Ok(r) => r,
                Err(ContainerError::State(StateError::NotFound(_))) => return Ok(None),
                Err(e) => return Err(e),
            };
            if !matches!(rec.status, Status::Running | Status::Paused) {
                return Ok(Some(rec));
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Ok(Some(rec));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    /// `stop`: the stop signal, then SIGKILL after `timeout` seconds; waits for the exit
    /// and cleans up.
    pub fn stop_container(
        &self,
        input: &str,
        timeout: Option<u32>,
    ) -> Result<ContainerRecord, ContainerError> {
        let rec = self.container(input)?;
        let containers = self.containers()?;
        if !matches!(rec.status, Status::Running | Status::Paused) {
            if rec.mounted {
                self.cleanup_container(&rec.id)?;
            }
            return Ok(rec);
        }
        containers.update(&rec.id, |r| r.stopped_by_user = true)?;
        let rt = self.runtime_for(&rec)?;
        self.thaw(&rec, &rt);
        let t = timeout.unwrap_or(rec.config.stop_timeout);
        if t > 0 {
            let sig = rec.config.stop_signal.trim_start_matches("SIG").to_string();
            let _ = rt.run("kill", &rec.id, &rt.kill_args(&rec.id, &sig, false));
        }
        let mut after = self.wait_container(&rec.id, Some(Duration::from_secs(t.into())))?;
        if after
            .as_ref()
            .is_some_and(|r| matches!(r.status, Status::Running | Status::Paused))
        {
            if let Err(e) = rt.run("kill", &rec.id, &rt.kill_args(&rec.id, "KILL", false)) {
                tracing::warn!("{e}");
            }
            after = self.wait_container(&rec.id, Some(Duration::from_secs(10)))?;
        }
        self.cleanup_container(&rec.id)?;
        Ok(after.unwrap_or(rec))
    }

    /// `rm`: refuses a running container unless `force` (which kills it first); with
    /// `volumes`, its anonymous volumes go too.
    pub fn remove_container_and_volumes(
        &self,
        input: &str,
        force: bool,
        volumes: bool,
    ) -> Result<ContainerRecord, ContainerError> {
        let rec = self.remove_container(input, force)?;
        if volumes {
            let vols = crate::volume::Volumes::new(self.store.root())?;
            let in_use = crate::volume::in_use_by_containers(self.store.root())?;
            for m in rec.config.mounts.iter().filter(|m| m.anonymous) {
                if let Some(name) = &m.volume
                    && let Err(e) = vols.remove(name, &in_use, false)
                {
                    tracing::warn!("removing volume {name}: {e}");
                }
            }
        }
        Ok(rec)
    }

    /// `rm` without the volumes.
    pub fn remove_container(
        &self,
        input: &str,
        force: bool,
    ) -> Result<ContainerRecord, ContainerError> {
        let rec = self.container(input)?;
        if matches!(rec.status, Status::Running | Status::Paused) {
            if !force {
                return Err(ContainerError::Running(rec.id.clone()));
            }
            self.containers()?.update(&rec.id, |r| {
                r.stopped_by_user = true;
                r.config.auto_remove = false;
            })?;
            let rt = self.runtime_for(&rec)?;
            self.thaw(&rec, &rt);
            if let Err(e) = rt.run("kill", &rec.id, &rt.kill_args(&rec.id, "KILL", false)) {
                tracing::warn!("{e}");
            }
            self.wait_container(&rec.id, Some(Duration::from_secs(10)))?;
        }
        if rec.mounted || matches!(rec.status, Status::Running | Status::Paused) {
            let containers = self.containers()?;
            let _ = containers.update(&rec.id, |r| {
                self.sync_locked(r);
                if let Ok(rt) = self.runtime_for(r) {
                    self.teardown(r, &rt);
                }
            });
        }
        self.remove_container_dirs(&rec.id)?;
        Ok(rec)
    }
}

/// The size of our terminal when stdin is one: a container with a tty starts with it.
fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass; fd 0 may be anything (errors are
    // reported through the return value).
    let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Where `--init` puts the init binary inside the container.
const INIT_PATH: &str = "/run/capsa-init";

/// The init for `--init`: `$CAPSA_INIT_PATH`, catatonit (as Podman), or tini.
fn find_init() -> Result<PathBuf, ContainerError> {
    if let Some(p) = std::env::var_os("CAPSA_INIT_PATH") {
        return Ok(PathBuf::from(p));
    }
    [
        "/usr/bin/catatonit",
        "/usr/libexec/podman/catatonit",
        "/usr/bin/tini-static",
        "/usr/bin/tini",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .ok_or_else(|| {
        ContainerError::Invalid(
            "--init needs an init binary: catatonit or tini was not found (install the catatonit package, or set CAPSA_INIT_PATH)".into(),
        )
    })
}

/// Whether this process may set limits through cgroup v2: a unified hierarchy whose
/// own cgroup lists the controllers and is writable (delegated).
fn cgroup2_delegated(needed: &[&str]) -> bool {
    let Ok(me) = fs::read_to_string("/proc/self/cgroup") else {
        return false;
    };
    let Some(path) = me.lines().find_map(|l| l.strip_prefix("0::")) else {
        return false;
    };
    let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let Ok(controllers) = fs::read_to_string(dir.join("cgroup.controllers")) else {
        return false;
    };
    let have: Vec<&str> = controllers.split_whitespace().collect();
    needed.iter().all(|n| have.contains(n))
        && rustix::fs::access(&dir, rustix::fs::Access::WRITE_OK).is_ok()
}

/// `linux.resources` for `--memory`, `--cpus` and `--pids-limit`. Rootless, they need
/// cgroup v2 with delegation; without it they are refused rather than silently dropped.
fn resources(c: &ContainerConfig, rootless: bool) -> Result<Option<Value>, ContainerError> {
    if c.memory.is_none() && c.cpus.is_none() && c.pids_limit.is_none() {
        return Ok(None);
    }
    let mut needed = Vec::new();
    let mut r = serde_json::Map::new();
    if let Some(m) = c.memory {
        needed.push("memory");
        r.insert("memory".into(), serde_json::json!({"limit": m}));
    }
    if let Some(cpus) = c.cpus {
        needed.push("cpu");
        let period = 100_000u64;
        r.insert(
            "cpu".into(),
            serde_json::json!({"quota": (cpus * period as f64) as i64, "period": period}),
        );
    }
    if let Some(p) = c.pids_limit {
        needed.push("pids");
        r.insert("pids".into(), serde_json::json!({"limit": p}));
    }
    if rootless && !cgroup2_delegated(&needed) {
        return Err(ContainerError::Invalid(format!(
            "resource limits ({}) need cgroup v2 with the controllers delegated to your user, which this host does not provide: rootless containers cannot be limited here (run as root, or on a cgroup v2 host with systemd delegation, e.g. inside `capsa machine`)",
            needed.join(", ")
        )));
    }
    Ok(Some(Value::Object(r)))
}

/// What `exec` runs.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    pub detach: bool,
    pub privileged: bool,
}

impl Engine {
    /// Runs a process in a running container through the runtime's `exec`, with our
    /// stdio; returns its exit code (a detached one: 0 once it started).
    pub fn exec_container(&self, input: &str, o: &ExecOptions) -> Result<i32, ContainerError> {
        let rec = self.container(input)?;
        if rec.status != Status::Running {
            return Err(ContainerError::NotRunning(rec.id[..12].to_string()));
        }
        let rt = self.runtime_for(&rec)?;
        let merged = self.container_dir(&rec.id).join("merged");
        let mut so = self.spec_options(&rec, &merged)?;
        if let Some(u) = &o.user {
            let (uid, gid, extra) = resolve_user(&merged, u)?;
            (so.uid, so.gid, so.additional_gids) = (uid, gid, extra);
        }
        if let Some(w) = &o.workdir {
            so.cwd = w.clone();
        }
        so.env = merge_env(&so.env, &o.env);
        so.args = o.args.clone();
        so.terminal = o.tty;
        so.privileged = so.privileged || o.privileged;
        let spec = spec::build(&so, "/")?;
        let process = serde_json::to_vec(&spec.process()).expect("a process serialises");
        let rundir = self.container_rundir(&rec.id);
        let file = tempfile::Builder::new()
            .prefix("exec-")
            .suffix(".json")
            .tempfile_in(&rundir)
            .map_err(io_err(format!("creating a file in {}", rundir.display())))?;
        fs::write(file.path(), process).map_err(io_err("writing the exec process"))?;
        let mut args: Vec<OsString> = vec![
            rt.path.clone().into(),
            "--root".into(),
            rt.state_root.clone().into(),
            "exec".into(),
            "--process".into(),
            file.path().into(),
        ];
        if o.detach {
            args.push("--detach".into());
        }
        args.push(rec.id.clone().into());
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..]);
        if o.detach {
            // A detached process must not hold the caller's output open.
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        let status = cmd
            .status()
            .map_err(io_err(format!("running {}", rt.path.display())))?;
        Ok(status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
        }))
    }
}

/// Podman's reading of a runtime failure: a command that is missing exits 127, one
/// that cannot be executed 126.
pub fn exec_error(runtime: &str, detail: &str) -> ContainerError {
    let lower = detail.to_ascii_lowercase();
    let message = format!("{runtime}: {detail}");
    let exec_related = lower.contains("executable") || lower.contains("exec ");
    if exec_related && (lower.contains("not found") || lower.contains("no such file")) {
        ContainerError::Exec {
            code: 127,
            message: format!(
                "{message}: OCI runtime attempted to invoke a command that was not found"
            ),
        }
    } else if exec_related
        && (lower.contains("permission denied") || lower.contains("is a directory"))
    {
        ContainerError::Exec {
            code: 126,
            message: format!("{message}: OCI permission denied"),
        }
    } else {
        ContainerError::Exec { code: 125, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_replace_by_key() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let got = merge_env(&base, &["A=2".into(), "B=3".into()]);
        assert_eq!(got, ["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn users_resolve_in_the_rootfs() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("etc")).unwrap();
        fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:33::/var/www:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            t.path().join("etc/group"),
            "root:x:0:\nwww:x:33:\nweb:x:99:www\n",
        )
        .unwrap();
        assert_eq!(resolve_user(t.path(), "").unwrap(), (0, 0, vec![]));
        assert_eq!(resolve_user(t.path(), "www").unwrap(), (33, 33, vec![99]));
        assert_eq!(resolve_user(t.path(), "33").unwrap(), (33, 33, vec![99]));
        assert_eq!(resolve_user(t.path(), "1234:5").unwrap(), (1234, 5, vec![]));
        assert_eq!(resolve_user(t.path(), "www:web").unwrap(), (33, 99, vec![]));
        let e = resolve_user(t.path(), "nobody").unwrap_err();
        assert!(e.to_string().contains("unable to find user nobody"), "{e}");
    }

    #[test]
    fn runtime_failures_map_to_podman_codes() {
        let e = exec_error(
            "crun",
            "executable file `nope` not found in $PATH: No such file or directory",
        );
        assert_eq!(e.exit_code(), 127);
        let e = exec_error("crun", "open executable: Permission denied");
        assert_eq!(e.exit_code(), 126);
        let e = exec_error(
            "crun",
            "error stat'ing file `/dev/mqueue`: No such file or directory",
        );
        assert_eq!(e.exit_code(), 125);
        let e = exec_error("crun", "open executable: Permission denied");
        assert_eq!(e.exit_code(), 126);
        assert_eq!(exec_error("crun", "something else").exit_code(), 125);
    }
}
