//! Container records on disk: `<root>/containers/<id>/container.json`, each replaced
//! by an atomic rename and changed under its own flock; creation (which must keep names
//! unique) is serialised by `<root>/containers.lock`. Nothing lives in a daemon, so any
//! `capsa` process sees the same containers.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::lock::FileLock;
use crate::store::{io_at, write_atomic};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the container name \"{0}\" is already in use")]
    NameInUse(String),
    #[error("invalid container name {0:?}: names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")]
    BadName(String),
    #[error("no container with name or ID \"{0}\" found")]
    NotFound(String),
    #[error("corrupt container record {path}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Stopped,
    Exited,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub image_name: String,
    pub command: Vec<String>,
    pub created: String,
    pub status: Status,
    pub pid: i32,
    pub exit_code: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Everything `create` was asked for; each start builds the runtime bundle from it.
    #[serde(default)]
    pub config: ContainerConfig,
    /// The monitor of the current run and its start time (to tell a reused pid apart).
    #[serde(default)]
    pub monitor_pid: i32,
    #[serde(default)]
    pub monitor_start: String,
    /// The network helper (pasta or slirp4netns) of the current run.
    #[serde(default)]
    pub net: Option<crate::network::HelperProcess>,
    /// Set by `stop`/`kill` so that `--restart` does not bring the container back.
    #[serde(default)]
    pub stopped_by_user: bool,
    #[serde(default)]
    pub restart_count: u32,
    /// The root filesystem is mounted and the runtime still knows the container.
    #[serde(default)]
    pub mounted: bool,
    /// How its root filesystem is assembled, chosen by probing at its first start and
    /// kept: each way leaves its upper directory in its own format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_mount: Option<crate::container::rootfs::MountDriver>,
    /// Why the last start failed, or what happened to a lost monitor.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// What `create`/`run` were asked for, as the engine keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    /// The image as the user named it.
    pub image: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    /// `-u`: user[:group], names or ids.
    pub user: String,
    pub hostname: String,
    pub tty: bool,
    /// `-i`: keep stdin open.
    pub stdin: bool,
    pub read_only: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    pub seccomp_profile: Option<String>,
    pub label_disable: bool,
    pub userns: String,
    /// The maps `--userns keep-id|auto` chose at create (container::idmap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idmappings: Option<crate::container::idmap::IdMappings>,
    pub init: bool,
    /// "no", "on-failure", "always", "unless-stopped".
    pub restart_policy: String,
    pub restart_max: u32,
    /// `--rm`: removed when it exits.
    pub auto_remove: bool,
    pub stop_signal: String,
    pub stop_timeout: u32,
    pub log_driver: String,
    pub log_opts: std::collections::BTreeMap<String, String>,
    pub runtime: String,
    /// `--network` as given ("" is the default private network).
    pub network: String,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    pub add_hosts: Vec<String>,
    /// Published ports.
    pub ports: Vec<crate::network::ports::PortMapping>,
    /// The image's ExposedPorts (`80/tcp`), for inspect.
    pub exposed: Vec<String>,
    /// `-v`, `--mount`, `--tmpfs`, resolved.
    pub mounts: Vec<crate::volume::ResolvedMount>,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub sdnotify: String,
    pub preserve_fds: u32,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// `--ulimit`: (RLIMIT_ name, soft, hard), replacing the caller's own limit of
    /// that type.
    pub ulimits: Vec<(String, u64, u64)>,
    /// `--sysctl`: namespaced kernel parameters.
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// `--shm-size` in bytes (default 64 MiB).
    pub shm_size: Option<u64>,
    /// `--group-add`: supplementary groups, names or ids, resolved in the container.
    pub group_add: Vec<String>,
    /// `--tz`: `local` or a zoneinfo name; the file becomes /etc/localtime.
    pub timezone: String,
    /// `--pid`, `--ipc`, `--uts`: "" (private) or "host".
    pub pid_ns: String,
    pub ipc_ns: String,
    pub uts_ns: String,
}

/// The containers of one store root.
pub struct Containers {
    dir: PathBuf,
    lock: PathBuf,
    tmp: PathBuf,
}

/// A name is valid when it matches Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric())
        && c.all(|x| x.is_ascii_alphanumeric() || "_.-".contains(x))
}

/// A fresh 64-hex-digit container ID.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// A Docker-style `adjective_noun` name.
pub fn generate_name() -> String {
    const ADJ: &[&str] = &[
        "brave", "calm", "eager", "fervent", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nimble", "quirky", "serene", "sharp", "stoic", "vibrant", "wizardly", "zealous",
    ];
    const NOUN: &[&str] = &[
        "babbage", "curie", "darwin", "euler", "faraday", "galois", "hopper", "kepler", "lovelace",
        "noether", "pascal", "ritchie", "shannon", "tesla", "turing", "wozniak",
    ];
    let a = ADJ[rand::random_range(0..ADJ.len())];
    let n = NOUN[rand::random_range(0..NOUN.len())];
    format!("{a}_{n}")
}

impl Containers {
    pub fn new(root: &Path) -> Result<Containers, StateError> {
        let dir = root.join("containers");
        fs::create_dir_all(&dir).map_err(io_at("creating", &dir))?;
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_at("creating", &tmp))?;
        Ok(Containers {
            lock: root.join("containers.lock"),
            dir,
            tmp,
        })
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(id).join("container.json")
    }

    /// Adds a container; `rec.name` empty picks a free generated name.
    pub fn create(&self, mut rec: ContainerRecord) -> Result<ContainerRecord, StateError> {
        if !rec.name.is_empty() && !valid_name(&rec.name) {
            return Err(StateError::BadName(rec.name));
        }
        let _l = FileLock::exclusive(&self.lock).map_err(io_at("locking", &self.lock))?;
        let existing = self.list()?;
        if rec.name.is_empty() {
            rec.name = loop {
                let n = generate_name();
                if !existing.iter().any(|c| c.name == n) {
                    break n;
                }
            };
        } else if existing.iter().any(|c| c.name == rec.name) {
            return Err(StateError::NameInUse(rec.name));
        }
        if rec.id.is_empty() {
            rec.id = new_id();
        }
        let d = self.dir.join(&rec.id);
        fs::create_dir(&d).map_err(io_at("creating", &d))?;
        self.write(&rec)?;
        Ok(rec)
    }

    fn write(&self, rec: &ContainerRecord) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(rec).expect("serialisable");
        write_atomic(&self.tmp, &self.record_path(&rec.id), &bytes)?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<ContainerRecord, StateError> {
        let p = self.record_path(id);
        let b = fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StateError::NotFound(id.to_string()),
            _ => io_at("reading", &p)(e).into(),
        })?;
        serde_json::from_slice(&b).map_err(|source| StateError::Corrupt { path: p, source })
    }

    /// Every container, oldest first. A directory without a record (a create that was
    /// killed half way) is skipped.
    pub fn list(&self) -> Result<Vec<ContainerRecord>, StateError> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)
            .map_err(io_at("reading", &self.dir))?
            .flatten()
        {
            match self.get(&e.file_name().to_string_lossy()) {
                Ok(r) => out.push(r),
                Err(StateError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created));
        Ok(out)
    }

    /// By full name, full ID or unique ID prefix.
    pub fn lookup(&self, input: &str) -> Result<ContainerRecord, StateError> {
        let all = self.list()?;
        if let Some(c) = all.iter().find(|c| c.name == input || c.id == input) {
            return Ok(c.clone());
        }
        let hits: Vec<&ContainerRecord> = all.iter().filter(|c| c.id.starts_with(input)).collect();
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(StateError::NotFound(input.to_string())),
        }
    }

    /// Read-modify-write of one record under its own lock.
    pub fn update<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord) -> T,
    ) -> Result<T, StateError> {
        let lp = self.dir.join(id).join("lock");
        let _l = FileLock::exclusive(&lp).map_err(io_at("locking", &lp))?;
        let mut rec = self.get(id)?;
        let out = f(&mut rec);
        self.write(&rec)?;
        Ok(out)
    }

    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let d = self.dir.join(id);
        // Rename first, so a half-removed container is never listed.
        let doomed = self.tmp.join(format!("rm-{id}"));
        fs::rename(&d, &doomed).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StateError::NotFound(id.to_string()),
            _ => io_at("removing", &d)(e).into(),
        })?;
        crate::store::remove_tree(&doomed);
        Ok(())
    }

    /// Gives container `id` a new name. Holds the lock `create` takes, so two renames
    /// (or a rename and a create) never end with one name twice; renaming a container
    /// to the name it has is a no-op.
    pub fn rename(&self, id: &str, new_name: &str) -> Result<ContainerRecord, StateError> {
        if !valid_name(new_name) {
            return Err(StateError::BadName(new_name.to_string()));
        }
        let _l = FileLock::exclusive(&self.lock).map_err(io_at("locking", &self.lock))?;
        if self
            .list()?
            .iter()
            .any(|c| c.name == new_name && c.id != id)
        {
            return Err(StateError::NameInUse(new_name.to_string()));
        }
        self.update(id, |r| {
            r.name = new_name.to_string();
            r.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> ContainerRecord {
        ContainerRecord {
            name: name.into(),
            image_id: "abc".into(),
            created: chrono::Utc::now().to_rfc3339(),
            ..Default::default()
        }
    }

    #[test]
    fn names_are_unique_and_checked() {
        let t = tempfile::tempdir().unwrap();
        let c = Containers::new(t.path()).unwrap();
        let a = c.create(rec("web")).unwrap();
        assert_eq!(a.id.len(), 64);
        let err = c.create(rec("web")).unwrap_err();
        assert!(err.to_string().contains("already in use"), "{err}");
        assert!(matches!(c.create(rec("-bad")), Err(StateError::BadName(_))));
        let g = c.create(rec("")).unwrap();
        assert!(g.name.contains('_'));
        assert_eq!(c.lookup("web").unwrap().id, a.id);
        assert_eq!(c.lookup(&a.id[..12]).unwrap().name, "web");
        assert!(matches!(c.lookup("nope"), Err(StateError::NotFound(_))));
    }

    #[test]
    fn update_and_remove() {
        let t = tempfile::tempdir().unwrap();
        let c = Containers::new(t.path()).unwrap();
        let a = c.create(rec("x")).unwrap();
        c.update(&a.id, |r| {
            r.status = Status::Exited;
            r.exit_code = Some(3);
        })
        .unwrap();
        assert_eq!(c.get(&a.id).unwrap().exit_code, Some(3));
        c.remove(&a.id).unwrap();
        assert!(c.list().unwrap().is_empty());
        assert!(matches!(c.remove(&a.id), Err(StateError::NotFound(_))));
    }

    #[test]
    fn twenty_creates_at_once_all_succeed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let root = root.clone();
                std::thread::spawn(move || {
                    let c = Containers::new(&root).unwrap();
                    c.create(rec(&format!("c{i}"))).unwrap();
                    // And a generated name each, racing for uniqueness.
                    c.create(rec("")).unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let all = Containers::new(&root).unwrap().list().unwrap();
        assert_eq!(all.len(), 40);
        let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 40, "every name unique");
    }
}
