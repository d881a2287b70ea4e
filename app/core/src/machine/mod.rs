//! The machine store: one folder per machine (config.json, data.img, its own copy of the
//! guest image, serial.log, qmp.sock, agent.sock, qemu.pid, events.jsonl, an SSH key
//! pair), a lock per machine so two commands never race on one, and the lifecycle that
//! starts a VM through a [`VmDriver`] and waits for the agent with named, timed steps.
//! The layout is documented in docs/internals.md ("Machines").

pub mod download;
pub mod events;
pub mod floor;
pub mod image;
pub mod lifecycle;
mod lock;
mod sshkey;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use events::Event;
pub use image::{ImageError, Manifest};
pub use lifecycle::{StartOptions, Step, StepReporter};
pub use lock::{Lock, LockError};

use crate::driver::VmStatus;

/// The machine a command means when it names none (podman's is
/// `podman-machine-default`).
pub const DEFAULT_NAME: &str = "capsa-default";
/// Overrides the folder that holds the machines (tests, several stores side by side).
pub const ENV_MACHINE_DIR: &str = "CAPSA_MACHINE_DIR";
/// Default guest image (path or URL) for `machine init` without `--image`.
pub const ENV_MACHINE_IMAGE: &str = "CAPSA_MACHINE_IMAGE";

/// Unix socket paths are limited to 108 bytes; longer ones move to the runtime dir.
const MAX_SOCKET_PATH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error(transparent)]
    Connection(#[from] crate::connection::ConnectionError),
    #[error("machine {0:?} does not exist")]
    NotFound(String),
    #[error("machine {0:?} already exists")]
    Exists(String),
    #[error(
        "invalid machine name {0:?}: use letters, digits, '-', '_' and '.', starting with a letter or digit"
    )]
    BadName(String),
    #[error("machine {0:?} is already running")]
    AlreadyRunning(String),
    #[error("machine {0:?} is running: stop it first, or use --force")]
    Running(String),
    /// podman's words for a machine a command needs running.
    #[error("vm {0:?} is not running")]
    NotRunning(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("reading {path}: {reason}")]
    BadConfig { path: String, reason: String },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Download(#[from] download::DownloadError),
    #[error(transparent)]
    Driver(#[from] crate::driver::DriverError),
    #[error("{0}")]
    Invalid(String),
    #[error("ssh port 127.0.0.1:{port} is in use: {source}")]
    PortInUse {
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("socket {path} is in use by another process")]
    SocketInUse { path: String },
    #[error("creating the data disk {path} ({size_gib} GiB): {source}")]
    DataDisk {
        path: String,
        size_gib: u64,
        #[source]
        source: io::Error,
    },
    #[error("step {step:?} did not finish within {secs} s{log}")]
    StepTimeout {
        step: String,
        secs: u64,
        hint: String,
        log: String,
    },
    #[error("step {step:?} failed: {reason}{log}")]
    StepFailed {
        step: String,
        reason: String,
        log: String,
    },
    #[error(transparent)]
    Accel(#[from] crate::accel::UnknownAccel),
}

impl MachineError {
    /// What the user can do about it, when there is something.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            MachineError::Connection(c) => return c.hint(),
            MachineError::NotFound(_) => "list machines with `capsa machine ls`, or create one with `capsa machine init`".into(),
            MachineError::AlreadyRunning(n) => format!("stop it with `capsa machine stop {n}`"),
            MachineError::Running(n) => format!("`capsa machine stop {n}` first, or `capsa machine rm -f {n}`"),
            MachineError::NotRunning(n) if n == DEFAULT_NAME => "start it first: capsa machine start".into(),
            MachineError::NotRunning(n) => format!("start it first: capsa machine start {n}"),
            MachineError::Lock(LockError::Busy { .. }) => "wait for the other command to finish".into(),
            MachineError::PortInUse { .. } => "stop whatever listens there, or give the machine another port: edit ssh_port in its config.json".into(),
            MachineError::SocketInUse { .. } => "another QEMU may be using this machine's folder: stop it (see qemu.pid)".into(),
            MachineError::DataDisk { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                "the disk holding the machine is full: free space, or use a smaller --disk-size".into()
            }
            MachineError::StepTimeout { hint, .. } => hint.clone(),
            MachineError::Image(e) => return e.hint(),
            MachineError::Driver(crate::driver::DriverError::NotInstalled { .. }) => {
                "install QEMU (Debian: apt-get install qemu-system-x86; macOS: brew install qemu), or set CAPSA_QEMU".into()
            }
            _ => return None,
        })
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> MachineError + 'a {
    move |source| MachineError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// A host directory shared into the guest (`--volume HOST:GUEST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub host: PathBuf,
    pub guest: String,
    /// The 9p/virtiofs mount tag.
    pub tag: String,
    #[serde(default)]
    pub read_only: bool,
}

impl Volume {
    pub fn parse(spec: &str, index: usize) -> Result<Volume, MachineError> {
        let mut parts = spec.splitn(3, ':');
        let host = parts.next().unwrap_or_default();
        let guest = parts.next().unwrap_or(host);
        let read_only = match parts.next() {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(o) => {
                return Err(MachineError::Invalid(format!(
                    "invalid volume {spec:?}: unknown option {o:?} (expected ro or rw)"
                )));
            }
        };
        if host.is_empty() || !guest.starts_with('/') || !Path::new(host).is_absolute() {
            return Err(MachineError::Invalid(format!(
                "invalid volume {spec:?}: expected HOST:GUEST with absolute paths"
            )));
        }
        Ok(Volume {
            host: host.into(),
            guest: guest.into(),
            tag: format!("vol{index}"),
            read_only,
        })
    }

    /// This volume in `capsa.mounts=` (`TAG:PATH[:ro]`, comma-separated). The kernel
    /// splits its command line at spaces and the guest init splits the list at commas, so
    /// the guest path is percent-encoded (every byte but `A-Za-z0-9/._-+@=~`) and the
    /// init decodes it; `ro` makes the guest mount read-only too, on top of the host's
    /// read-only export.
    pub fn mount_arg(&self) -> String {
        let mut path = String::with_capacity(self.guest.len());
        for b in self.guest.bytes() {
            if b.is_ascii_alphanumeric() || b"/._-+@=~".contains(&b) {
                path.push(char::from(b));
            } else {
                path.push_str(&format!("%{b:02X}"));
            }
        }
        let ro = if self.read_only { ":ro" } else { "" };
        format!("{}:{path}{ro}", self.tag)
    }
}

/// The guest image a machine was created with (its own copy lives in `image/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Kernel arguments the image needs (the manifest's `cmdline`).
    pub cmdline: String,
    /// Where the image came from (path or URL), for `inspect`.
    pub source: String,
    /// The machine's copy, relative to the machine folder.
    pub path: PathBuf,
}

/// config.json in the machine folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfig {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_size_gib: u64,
    pub image: ImageInfo,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub rootful: bool,
    pub ssh_port: u16,
    /// Private key for `machine ssh`, relative to the machine folder.
    pub ssh_identity: PathBuf,
    pub created: DateTime<Utc>,
    #[serde(default)]
    pub last_up: Option<DateTime<Utc>>,
    /// The backend (`qemu`, `applehv`): chosen at init, the VM TYPE of `machine ls`.
    #[serde(default = "qemu_vm_type")]
    pub vm_type: String,
}

fn qemu_vm_type() -> String {
    "qemu".into()
}

impl MachineConfig {
    pub fn ssh_user(&self) -> &'static str {
        if self.rootful { "root" } else { "capsa" }
    }
}

/// The folder of all machines, plus where their caches and long socket paths go.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
    pub cache: PathBuf,
    pub runtime: PathBuf,
}

/// Options of `machine init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_size_gib: u64,
    /// Directory, tar or http(s) URL of a guest image.
    pub image: String,
    pub volumes: Vec<String>,
    /// The backend, from [`crate::driver::default_provider`].
    pub vm_type: String,
    pub rootful: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            name: DEFAULT_NAME.into(),
            cpus: 2,
            memory_mib: 2048,
            disk_size_gib: 100,
            image: String::new(),
            volumes: vec![],
            rootful: false,
            vm_type: "qemu".into(),
        }
    }
}

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.len() <= 64
}

impl Store {
    /// `CAPSA_MACHINE_DIR`, else the platform's data dir (`~/.local/share/capsa/machines`
    /// on Linux, `~/Library/Application Support/capsa/machines` on macOS).
    pub fn open_default() -> Result<Store, MachineError> {
        let dirs = directories::ProjectDirs::from("", "", "capsa");
        let root = match std::env::var_os(ENV_MACHINE_DIR).filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => dirs
                .as_ref()
                .map(|d| d.data_dir().join("machines"))
                .ok_or_else(|| {
                    MachineError::Invalid("no home directory: set CAPSA_MACHINE_DIR".into())
                })?,
        };
        let cache = match std::env::var_os(ENV_MACHINE_DIR).filter(|v| !v.is_empty()) {
            // Tests keep everything under their own folder.
            Some(_) => root.join(".cache"),
            None => dirs
                .as_ref()
                .map(|d| d.cache_dir().to_path_buf())
                .unwrap_or_else(|| root.join(".cache")),
        };
        let runtime = dirs
            .as_ref()
            .and_then(|d| d.runtime_dir().map(Path::to_path_buf))
            .unwrap_or_else(|| {
                // SAFETY: getuid has no preconditions.
                let uid = unsafe { libc::getuid() };
                std::env::temp_dir().join(format!("capsa-{uid}"))
            });
        Ok(Store::at(root, cache, runtime))
    }

    pub fn at(root: PathBuf, cache: PathBuf, runtime: PathBuf) -> Store {
        Store {
            root,
            cache,
            runtime,
        }
    }

    pub fn machine_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Names of all machines, sorted.
    pub fn names(&self) -> Result<Vec<String>, MachineError> {
        let mut names = vec![];
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(io_err("reading", &self.root)(e)),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if valid_name(&name) && e.path().join("config.json").is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn get(&self, name: &str) -> Result<Machine, MachineError> {
        if !valid_name(name) {
            return Err(MachineError::BadName(name.into()));
        }
        let dir = self.machine_dir(name);
        let path = dir.join("config.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(MachineError::NotFound(name.into()));
            }
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        let config: MachineConfig =
            serde_json::from_slice(&bytes).map_err(|e| MachineError::BadConfig {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Machine {
            dir,
            runtime: self.runtime.clone(),
            config,
        })
    }

    pub fn list(&self) -> Result<Vec<Machine>, MachineError> {
        self.names()?.iter().map(|n| self.get(n)).collect()
    }

    /// Takes the store-wide lock (init, reset).
    pub fn lock(&self) -> Result<Lock, MachineError> {
        fs::create_dir_all(&self.root).map_err(io_err("creating", &self.root))?;
        Ok(Lock::acquire(
            &self.root.join(".lock"),
            "the machine store",
        )?)
    }

    /// `machine init`: the folder, the image copy, the data disk, the SSH key pair and
    /// config.json, in that order; a failure removes the half-made folder.
    pub async fn init(
        &self,
        opts: &InitOptions,
        progress: &mut dyn FnMut(download::Progress),
    ) -> Result<Machine, MachineError> {
        if !valid_name(&opts.name) {
            return Err(MachineError::BadName(opts.name.clone()));
        }
        if opts.cpus == 0 || opts.memory_mib < 128 || opts.disk_size_gib == 0 {
            return Err(MachineError::Invalid(format!(
                "invalid resources: --cpus {} --memory {} --disk-size {} (need cpus ≥ 1, memory ≥ 128 MiB, disk ≥ 1 GiB)",
                opts.cpus, opts.memory_mib, opts.disk_size_gib
            )));
        }
        let volumes = opts
            .volumes
            .iter()
            .enumerate()
            .map(|(i, v)| Volume::parse(v, i))
            .collect::<Result<Vec<_>, _>>()?;
        // Resolve a URL before taking the lock: a download may take minutes.
        let source = if image::is_url(&opts.image) {
            download::fetch(&opts.image, &self.cache.join("images"), progress)
                .await?
                .display()
                .to_string()
        } else {
            opts.image.clone()
        };
        let _lock = self.lock()?;
        let dir = self.machine_dir(&opts.name);
        if dir.join("config.json").exists() {
            return Err(MachineError::Exists(opts.name.clone()));
        }
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let made = (|| {
            let manifest = image::install(Path::new(&source), &dir.join("image"), &self.cache)?;
            let m = Machine {
                dir: dir.clone(),
                runtime: self.runtime.clone(),
                config: MachineConfig {
                    name: opts.name.clone(),
                    cpus: opts.cpus,
                    memory_mib: opts.memory_mib,
                    disk_size_gib: opts.disk_size_gib,
                    image: ImageInfo {
                        name: manifest.name.clone(),
                        version: manifest.version.clone(),
                        arch: manifest.arch.clone(),
                        cmdline: manifest.cmdline.clone(),
                        source: opts.image.clone(),
                        path: "image".into(),
                    },
                    volumes,
                    rootful: opts.rootful,
                    ssh_port: free_port()?,
                    ssh_identity: "id_ed25519".into(),
                    created: Utc::now(),
                    last_up: None,
                    vm_type: opts.vm_type.clone(),
                },
            };
            m.resize_data_disk(opts.disk_size_gib)?;
            sshkey::generate(&m.dir.join("id_ed25519"), &opts.name)?;
            m.save()?;
            m.record_connection()?;
            m.event(Event::new("created"));
            Ok::<_, MachineError>(m)
        })();
        if made.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        made
    }
}

/// A free TCP port on 127.0.0.1, from the kernel (the port stays free only until
/// someone else takes it: `start` checks again).
fn free_port() -> Result<u16, MachineError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| MachineError::Invalid(format!("finding a free port: {e}")))?;
    Ok(l.local_addr().map(|a| a.port()).unwrap_or(0))
}

/// One machine: its folder and its config.
#[derive(Debug, Clone)]
pub struct Machine {
    pub dir: PathBuf,
    runtime: PathBuf,
    pub config: MachineConfig,
}

impl Machine {
    pub fn name(&self) -> &str {
        &self.config.name
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn data_disk(&self) -> PathBuf {
        self.dir.join("data.img")
    }
    pub fn image_dir(&self) -> PathBuf {
        self.dir.join(&self.config.image.path)
    }
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    pub fn events_path(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }
    pub fn ssh_identity(&self) -> PathBuf {
        self.dir.join(&self.config.ssh_identity)
    }
    pub fn ssh_public_key(&self) -> PathBuf {
        let mut p = self.ssh_identity().into_os_string();
        p.push(".pub");
        p.into()
    }

    /// Where the sockets go: the machine folder, or a folder in the runtime dir when the
    /// paths would be too long for a unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        let longest = self.dir.join("agent.sock");
        if longest.as_os_str().len() <= MAX_SOCKET_PATH {
            self.dir.clone()
        } else {
            use sha2::Digest;
            let h = sha2::Sha256::digest(self.dir.as_os_str().as_encoded_bytes());
            self.runtime.join("capsa-machines").join(format!(
                "{}-{}",
                self.name(),
                &hex::encode(h)[..8]
            ))
        }
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.socket_dir().join("qmp.sock")
    }
    pub fn agent_socket(&self) -> PathBuf {
        self.socket_dir().join("agent.sock")
    }

    /// Takes this machine's lock: every command that changes the machine holds it.
    pub fn lock(&self) -> Result<Lock, MachineError> {
        Ok(Lock::acquire(
            &self.dir.join("lock"),
            &format!("machine {:?}", self.name()),
        )?)
    }

    /// Writes config.json atomically.
    pub fn save(&self) -> Result<(), MachineError> {
        let path = self.config_path();
        let tmp = self.dir.join("config.json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.config).expect("config serializes");
        fs::write(&tmp, bytes)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(io_err("writing", &path))
    }

    /// Appends to events.jsonl; the log is informative, so a failure is only logged.
    pub fn event(&self, e: Event) {
        if let Err(err) = events::append(&self.events_path(), &e) {
            tracing::warn!("writing {}: {err}", self.events_path().display());
        }
    }

    pub fn events(&self) -> Vec<Event> {
        events::read(&self.events_path())
    }

    /// Creates data.img or grows it to `size_gib` (sparse). Writing the last byte makes
    /// a full disk fail here, not later in the guest.
    pub fn resize_data_disk(&self, size_gib: u64) -> Result<(), MachineError> {
        let path = self.data_disk();
        let size = size_gib << 30;
        let err = |source| MachineError::DataDisk {
            path: path.display().to_string(),
            size_gib,
            source,
        };
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        let cur = f.metadata().map_err(err)?.len();
        if cur > size {
            return Err(MachineError::Invalid(format!(
                "the data disk is {} GiB: it can only grow",
                cur >> 30
            )));
        }
        f.set_len(size).map_err(err)?;
        // Allocate the filesystem's first blocks for real: a sparse file on a full disk
        // would be created fine and fail at the guest's first write.
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[0u8; 4096], 0).map_err(err)?;
        f.sync_all().map_err(err)?;
        Ok(())
    }

    /// The VM's state as the hypervisor process says it: a SIGKILLed QEMU is stopped.
    /// Between `machine start` launching the VM and the agent's Hello (or a failure):
    /// what `machine ls` shows as "Currently starting".
    pub fn starting(&self) -> bool {
        self.events()
            .iter()
            .rev()
            .find(|e| e.event != "step")
            .is_some_and(|e| e.event == "starting")
    }

    pub fn status(&self) -> VmStatus {
        if crate::process::live(&self.pid_file()).is_some() {
            VmStatus::Running
        } else {
            VmStatus::Stopped
        }
    }

    /// The kernel command line: the image's own arguments plus the contract's.
    pub fn kernel_cmdline(&self, arch: crate::qemu::cmdline::Arch) -> String {
        let c = &self.config;
        let mut parts: Vec<String> = vec![];
        if !c.image.cmdline.trim().is_empty() {
            parts.push(c.image.cmdline.trim().to_string());
        }
        parts.push(format!("console={}", arch.console()));
        parts.push("capsa.net=qemu-user".into());
        parts.push(format!("capsa.rootful={}", u8::from(c.rootful)));
        parts.push(format!("capsa.hostname={}", c.name));
        if !c.volumes.is_empty() {
            let m: Vec<String> = c.volumes.iter().map(Volume::mount_arg).collect();
            parts.push(format!("capsa.mounts={}", m.join(",")));
        }
        parts.join(" ")
    }

    /// What the driver needs to run this machine.
    pub fn vm_spec(
        &self,
        accel: crate::accel::Accel,
    ) -> Result<crate::driver::VmSpec, MachineError> {
        let arch = crate::qemu::cmdline::Arch::parse(&self.config.image.arch).ok_or_else(|| {
            MachineError::Invalid(format!(
                "unsupported guest architecture {:?}",
                self.config.image.arch
            ))
        })?;
        let img = self.image_dir();
        Ok(crate::driver::VmSpec {
            name: self.config.name.clone(),
            arch: arch.as_str().into(),
            accel,
            cpus: self.config.cpus,
            memory_mib: self.config.memory_mib,
            kernel: img.join("vmlinuz"),
            initrd: img.join("initrd.img"),
            cmdline: self.kernel_cmdline(arch),
            rootfs: img.join("rootfs.img"),
            data_disk: self.data_disk(),
            serial_log: self.serial_log(),
            qmp_socket: self.qmp_socket(),
            agent_socket: self.agent_socket(),
            pid_file: self.pid_file(),
            vmm_log: self.vmm_log(),
            ssh_port: self.config.ssh_port,
            shares: self
                .config
                .volumes
                .iter()
                .map(|v| crate::qemu::cmdline::Share {
                    tag: v.tag.clone(),
                    host_path: v.host.clone(),
                    read_only: v.read_only,
                })
                .collect(),
        })
    }

    /// Removes the machine's folder (and its socket folder); the caller checked it is
    /// stopped and holds its lock.
    /// The machine as a connection (`capsa system connection ls`): SSH to the guest's
    /// engine user through the forwarded port, with the machine's key.
    pub fn connection(&self) -> crate::connection::Destination {
        crate::connection::Destination {
            uri: format!(
                "ssh://{}@127.0.0.1:{}",
                self.config.ssh_user(),
                self.config.ssh_port
            ),
            identity: self.ssh_identity().display().to_string(),
            is_machine: true,
        }
    }

    /// Adds or refreshes the machine's connection; the first one becomes the default.
    pub fn record_connection(&self) -> Result<(), MachineError> {
        let Some(path) = crate::connection::Connections::default_path() else {
            return Ok(());
        };
        crate::connection::Connections::update(&path, |c| {
            let name = self.name();
            c.map.remove(name);
            c.add(name, self.connection(), false)
        })?;
        Ok(())
    }

    pub fn remove_files(&self) -> Result<(), MachineError> {
        if let Some(path) = crate::connection::Connections::default_path() {
            // Gone already (or never written) is fine: the machine is what is removed.
            let _ = crate::connection::Connections::update(&path, |c| {
                if c.map.get(self.name()).is_some_and(|d| d.is_machine) {
                    c.remove(self.name())?;
                }
                Ok(())
            });
        }
        let sd = self.socket_dir();
        if sd != self.dir {
            let _ = fs::remove_dir_all(&sd);
        }
        fs::remove_dir_all(&self.dir).map_err(io_err("removing", &self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["capsa-default", "a", "m1.test_2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-x", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn volumes() {
        let v = Volume::parse("/home/u/src:/src:ro", 1).unwrap();
        assert_eq!(v.host, PathBuf::from("/home/u/src"));
        assert_eq!(
            (v.guest.as_str(), v.tag.as_str(), v.read_only),
            ("/src", "vol1", true)
        );
        let v = Volume::parse("/data", 0).unwrap();
        assert_eq!(v.guest, "/data");
        for bad in ["rel:/x", "/x:rel", "/x:/y:zz", ""] {
            assert!(Volume::parse(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn mount_args_encode_what_the_kernel_command_line_would_split() {
        let v = Volume::parse("/home/u/my src,v2:/work/my src,v2:ro", 3).unwrap();
        assert_eq!(v.guest, "/work/my src,v2");
        assert_eq!(v.mount_arg(), "vol3:/work/my%20src%2Cv2:ro");
        let v = Volume::parse("/a:/b/100%_\"q\"\tx\u{e9}", 0).unwrap();
        assert_eq!(v.mount_arg(), "vol0:/b/100%25_%22q%22%09x%C3%A9");
        let v = Volume::parse("/a:/plain/a-b_c.d+e@f=g~h", 1).unwrap();
        assert_eq!(v.mount_arg(), "vol1:/plain/a-b_c.d+e@f=g~h");
    }

    #[test]
    fn long_paths_move_sockets_to_the_runtime_dir() {
        let short = Machine {
            dir: "/m/short".into(),
            runtime: "/run/user/1".into(),
            config: sample("short"),
        };
        assert_eq!(short.qmp_socket(), PathBuf::from("/m/short/qmp.sock"));
        let long_dir = PathBuf::from(format!("/{}/long", "d".repeat(100)));
        let long = Machine {
            dir: long_dir,
            runtime: "/run/user/1".into(),
            config: sample("long"),
        };
        let s = long.agent_socket();
        assert!(
            s.starts_with("/run/user/1/capsa-machines/"),
            "{}",
            s.display()
        );
        assert!(s.as_os_str().len() < 108);
    }

    #[test]
    fn kernel_cmdline_follows_the_contract() {
        let mut c = sample("m1");
        c.image.cmdline = "ro quiet".into();
        c.rootful = true;
        c.volumes = vec![
            Volume::parse("/a:/mnt/a", 0).unwrap(),
            Volume::parse("/b b:/mnt/b b:ro", 1).unwrap(),
        ];
        let m = Machine {
            dir: "/m".into(),
            runtime: "/r".into(),
            config: c,
        };
        assert_eq!(
            m.kernel_cmdline(crate::qemu::cmdline::Arch::X86_64),
            "ro quiet console=ttyS0 capsa.net=qemu-user capsa.rootful=1 capsa.hostname=m1 capsa.mounts=vol0:/mnt/a,vol1:/mnt/b%20b:ro"
        );
    }

    pub(crate) fn sample(name: &str) -> MachineConfig {
        MachineConfig {
            name: name.into(),
            cpus: 1,
            memory_mib: 512,
            disk_size_gib: 1,
            image: ImageInfo {
                name: "capsa-guest".into(),
                version: "1".into(),
                arch: "x86_64".into(),
                cmdline: String::new(),
                source: "/img".into(),
                path: "image".into(),
            },
            volumes: vec![],
            rootful: false,
            ssh_port: 2222,
            ssh_identity: "id_ed25519".into(),
            created: Utc::now(),
            last_up: None,
            vm_type: "qemu".into(),
        }
    }
}
