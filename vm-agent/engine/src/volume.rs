//! Named volumes, and the `-v`/`--mount`/`--tmpfs` flags as OCI mounts.
//!
//! A volume is `<root>/volumes/<name>/` holding `_data/` (what containers see) and
//! `volume.json` (its record). Creation and removal are serialised by
//! `<root>/volumes.lock`; a volume's record changes under `<root>/volumes/<name>/lock`.
//! A volume is built under `<root>/volumes/.tmp/` and renamed into place, and removed by
//! renaming it there first, so no process ever sees half a volume.
//!
//! This module does not know containers: which volumes are in use is the caller's
//! answer ([`InUse`]); [`in_use_by_containers`] derives it from the container records.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::container::state::valid_name;
use crate::store::lock::FileLock;
use crate::store::{io_at, remove_tree, write_atomic};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume with name {0} already exists")]
    Exists(String),
    #[error("no volume with name \"{0}\" found")]
    NotFound(String),
    #[error("more than one volume matches \"{0}\": give more of its name")]
    Ambiguous(String),
    #[error("invalid volume name {0:?}: names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")]
    BadName(String),
    #[error("volume {name} is being used by the following container(s): {}", containers.join(", "))]
    InUse {
        name: String,
        containers: Vec<String>,
    },
    #[error("volume driver {0:?} is not available: capsa has only the \"local\" driver")]
    UnknownDriver(String),
    #[error("invalid volume option {key:?} for driver \"local\": {reason}")]
    BadOption { key: String, reason: String },
    /// A `-v`, `--mount` or `--tmpfs` value that cannot be used.
    #[error("invalid {flag} {value:?}: {reason}")]
    BadFlag {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("invalid {flag} {value:?}: statfs {}", path.display())]
    BindSource {
        flag: String,
        value: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}: duplicate mount destination")]
    DuplicateDestination(String),
    #[error("invalid volume filter {filter:?}: {reason}")]
    BadFilter { filter: String, reason: String },
    #[error("corrupt volume record {path}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl VolumeError {
    fn flag(flag: &str, value: &str, reason: impl Into<String>) -> VolumeError {
        VolumeError::BadFlag {
            flag: flag.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Volume name → IDs of the containers using it. Missing or empty: not in use.
pub type InUse = BTreeMap<String, Vec<String>>;

/// One volume's record (`volume.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub driver: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The `--opt` options as given.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// RFC 3339 with nanoseconds, as Go's RFC3339Nano prints it.
    pub created: String,
    /// `<root>/volumes/<name>/_data`; always the path in the store it was read from.
    pub mountpoint: PathBuf,
    /// Created for a container's `-v /dst` or an image's VOLUME (`rm -v` removes these).
    #[serde(default)]
    pub anonymous: bool,
    /// The owner the data directory was given (`-o uid=`, or a container's `--user`).
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    /// Still empty: the first container copies the image's content at the mount point.
    #[serde(default)]
    pub needs_copy_up: bool,
    /// Made by `volume create` without an owner: the first container's user gets it.
    #[serde(default)]
    pub needs_chown: bool,
}

/// `podman volume inspect`'s document for one volume, fields in Podman's order (a
/// `serde_json::Value` would sort them).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeInspect {
    pub name: String,
    pub driver: String,
    pub mountpoint: PathBuf,
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    pub scope: String,
    pub options: BTreeMap<String, String>,
    #[serde(rename = "UID", skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(rename = "GID", skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
    pub mount_count: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub needs_copy_up: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub needs_chown: bool,
}

impl VolumeRecord {
    /// The `volume inspect` / `volume ls --format json` document.
    pub fn inspect(&self) -> VolumeInspect {
        VolumeInspect {
            name: self.name.clone(),
            driver: self.driver.clone(),
            mountpoint: self.mountpoint.clone(),
            created_at: self.created.clone(),
            labels: self.labels.clone(),
            scope: "local".into(),
            options: self.options.clone(),
            uid: self.uid,
            gid: self.gid,
            anonymous: self.anonymous,
            mount_count: 0,
            needs_copy_up: self.needs_copy_up,
            needs_chown: self.needs_chown,
        }
    }

    pub fn created_time(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.created)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Mount options the volume asks for (`-o o=noexec,…`), applied when a container
    /// mounts it unless the container's flag says otherwise.
    fn mount_options(&self) -> Vec<String> {
        self.options
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("o"))
            .flat_map(|(_, v)| v.split(','))
            .filter(|o| !o.is_empty() && !o.contains('='))
            .map(str::to_string)
            .collect()
    }
}

/// What `volume create` (or a container needing a volume) asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// `None`: a generated 64-hex-digit name.
    pub name: Option<String>,
    /// `""` or `"local"`.
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    /// `--opt`: `o=uid=N,gid=N,nosuid,nodev,noexec,…`, `uid`, `gid`, `copy`, `nocopy`.
    pub options: BTreeMap<String, String>,
    /// An existing volume of that name is returned instead of an error (`--ignore`).
    pub ignore_existing: bool,
    pub anonymous: bool,
    /// Owner of the data directory (a container's `--user`) unless `options` give one.
    pub owner: Option<(u32, u32)>,
    /// `volume create` sets it: with no owner given, the first container's user gets
    /// the volume (Podman's NeedsChown).
    pub chown_on_first_use: bool,
}

/// What the options of a new volume mean.
#[derive(Debug, Default, PartialEq)]
struct ParsedOptions {
    uid: Option<u32>,
    gid: Option<u32>,
    nocopy: bool,
}

fn parse_create_options(opts: &BTreeMap<String, String>) -> Result<ParsedOptions, VolumeError> {
    let mut p = ParsedOptions::default();
    let id = |key: &str, v: &str| -> Result<u32, VolumeError> {
        v.parse().map_err(|_| VolumeError::BadOption {
            key: key.to_string(),
            reason: format!("{v:?} is not a numeric ID"),
        })
    };
    for (k, v) in opts {
        match k.to_ascii_lowercase().as_str() {
            "uid" => p.uid = Some(id(k, v)?),
            "gid" => p.gid = Some(id(k, v)?),
            "nocopy" => p.nocopy = true,
            "copy" => p.nocopy = false,
            "o" => {
                for o in v.split(',').filter(|o| !o.is_empty()) {
                    match o.split_once('=') {
                        Some(("uid", n)) => p.uid = Some(id("o=uid", n)?),
                        Some(("gid", n)) => p.gid = Some(id("o=gid", n)?),
                        None if matches!(
                            o,
                            "nosuid" | "suid" | "nodev" | "dev" | "noexec" | "exec"
                        ) => {}
                        _ => {
                            return Err(VolumeError::BadOption {
                                key: format!("o={o}"),
                                reason: "o= takes uid=N, gid=N, nosuid, nodev, noexec (and their opposites)"
                                    .into(),
                            });
                        }
                    }
                }
            }
            "type" | "device" | "size" | "inodes" | "noquota" => {
                return Err(VolumeError::BadOption {
                    key: k.clone(),
                    reason: "volumes backed by a device or filesystem type, and quotas, are not supported"
                        .into(),
                });
            }
            _ => {
                return Err(VolumeError::BadOption {
                    key: k.clone(),
                    reason: "known options: o, uid, gid, copy, nocopy".into(),
                });
            }
        }
    }
    Ok(p)
}

/// A removed volume and the bytes its data held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub name: String,
    pub size: u64,
}

/// The volumes of one store root.
pub struct Volumes {
    dir: PathBuf,
    tmp: PathBuf,
    lock: PathBuf,
}

/// Go's RFC3339Nano: fractional seconds without trailing zeros.
fn rfc3339_nano(t: DateTime<Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S");
    match t.timestamp_subsec_nanos() {
        0 => format!("{base}Z"),
        ns => format!("{base}.{}Z", format!("{ns:09}").trim_end_matches('0')),
    }
}

fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().mode(mode).create(path)?;
    // The umask may have narrowed it.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

impl Volumes {
    pub fn new(root: &Path) -> Result<Volumes, VolumeError> {
        let dir = root.join("volumes");
        let tmp = dir.join(".tmp");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp)
            .map_err(io_at("creating", &tmp))?;
        Ok(Volumes {
            lock: root.join("volumes.lock"),
            dir,
            tmp,
        })
    }

    /// `<root>/volumes/<name>/_data`.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("volume.json")
    }

    fn lock_all(&self) -> Result<FileLock, VolumeError> {
        Ok(FileLock::exclusive(&self.lock).map_err(io_at("locking", &self.lock))?)
    }

    fn lock_one(&self, name: &str) -> Result<FileLock, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        let p = self.dir.join(name).join("lock");
        FileLock::exclusive(&p).map_err(|e| match e.kind() {
            // The volume's directory is gone (or was never there).
            io::ErrorKind::NotFound => VolumeError::NotFound(name.to_string()),
            _ => io_at("locking", &p)(e).into(),
        })
    }

    /// Creates a volume; see [`CreateOptions`].
    pub fn create(&self, opts: CreateOptions) -> Result<VolumeRecord, VolumeError> {
        self.create_inner(opts).map(|(r, _)| r)
    }

    /// The record, and whether this call made it.
    fn create_inner(&self, opts: CreateOptions) -> Result<(VolumeRecord, bool), VolumeError> {
        if !opts.driver.is_empty() && opts.driver != "local" {
            return Err(VolumeError::UnknownDriver(opts.driver));
        }
        if let Some(n) = &opts.name
            && !valid_name(n)
        {
            return Err(VolumeError::BadName(n.clone()));
        }
        let parsed = parse_create_options(&opts.options)?;
        let _l = self.lock_all()?;
        self.sweep_tmp();
        let name = match opts.name {
            Some(n) => {
                if self.dir.join(&n).exists() {
                    if opts.ignore_existing {
                        return Ok((self.get(&n)?, false));
                    }
                    return Err(VolumeError::Exists(n));
                }
                n
            }
            None => loop {
                let n = hex::encode(rand::random::<[u8; 32]>());
                if !self.dir.join(&n).exists() {
                    break n;
                }
            },
        };
        let (uid, gid) = match (parsed.uid, parsed.gid, opts.owner) {
            (None, None, Some((u, g))) => (Some(u), Some(g)),
            (u, g, _) => (u, g),
        };
        let rec = VolumeRecord {
            name: name.clone(),
            driver: "local".into(),
            labels: opts.labels,
            options: opts.options,
            created: rfc3339_nano(Utc::now()),
            mountpoint: self.data_dir(&name),
            anonymous: opts.anonymous,
            uid,
            gid,
            needs_copy_up: !parsed.nocopy,
            needs_chown: opts.chown_on_first_use && uid.is_none() && gid.is_none(),
        };
        let staging = self.tmp.join(format!("new-{name}"));
        let built = (|| -> Result<(), VolumeError> {
            mkdir(&staging, 0o700).map_err(io_at("creating", &staging))?;
            let data = staging.join("_data");
            mkdir(&data, 0o755).map_err(io_at("creating", &data))?;
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::chown(&data, uid, gid)
                    .map_err(io_at("changing the owner of", &data))?;
            }
            let bytes = serde_json::to_vec_pretty(&rec).expect("serialisable");
            let rp = staging.join("volume.json");
            fs::write(&rp, bytes).map_err(io_at("writing", &rp))?;
            let dest = self.dir.join(&name);
            fs::rename(&staging, &dest).map_err(io_at("creating", &dest))?;
            Ok(())
        })();
        if let Err(e) = built {
            remove_tree(&staging);
            return Err(e);
        }
        Ok((rec, true))
    }

    /// Leftovers of processes killed while creating or removing a volume. Only called
    /// under `volumes.lock`, which every creation holds, so a `new-*` here is dead; a
    /// `rm-*` may still be being deleted by its process, which is harmless.
    fn sweep_tmp(&self) {
        let Ok(rd) = fs::read_dir(&self.tmp) else {
            return;
        };
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with("new-") || n.starts_with("rm-") {
                remove_tree(&e.path());
            }
        }
    }

    /// A volume by its exact name.
    pub fn get(&self, name: &str) -> Result<VolumeRecord, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        let p = self.record_path(name);
        let b = fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => VolumeError::NotFound(name.to_string()),
            _ => io_at("reading", &p)(e).into(),
        })?;
        let mut rec: VolumeRecord = serde_json::from_slice(&b)
            .map_err(|source| VolumeError::Corrupt { path: p, source })?;
        rec.mountpoint = self.data_dir(name);
        Ok(rec)
    }

    /// By exact name, else by a unique name prefix (as Podman looks volumes up).
    pub fn lookup(&self, input: &str) -> Result<VolumeRecord, VolumeError> {
        if input.is_empty() {
            return Err(VolumeError::NotFound(String::new()));
        }
        match self.get(input) {
            Err(VolumeError::NotFound(_)) => {}
            other => return other,
        }
        let all = self.list()?;
        let hits: Vec<&VolumeRecord> = all.iter().filter(|v| v.name.starts_with(input)).collect();
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(VolumeError::NotFound(input.to_string())),
            _ => Err(VolumeError::Ambiguous(input.to_string())),
        }
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<VolumeRecord>, VolumeError> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)
            .map_err(io_at("reading", &self.dir))?
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if !valid_name(&n) {
                continue;
            }
            match self.get(&n) {
                Ok(r) => out.push(r),
                Err(VolumeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The volumes `filter` selects, by name.
    pub fn list_filtered(
        &self,
        filter: &VolumeFilter,
        in_use: &InUse,
    ) -> Result<Vec<VolumeRecord>, VolumeError> {
        let all = self.list()?;
        let mut since = Vec::new();
        for r in filter.values(&["since", "after"]) {
            let v = self.lookup(r)?;
            since.push(v.created_time());
        }
        Ok(all
            .into_iter()
            .filter(|v| filter.matches(v, in_use, &since))
            .collect())
    }

    /// Read-modify-write of one record under its own lock.
    fn update<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut VolumeRecord) -> Result<T, VolumeError>,
    ) -> Result<T, VolumeError> {
        let _l = self.lock_one(name)?;
        let mut rec = self.get(name)?;
        let before = rec.clone();
        let out = f(&mut rec)?;
        if rec != before {
            let bytes = serde_json::to_vec_pretty(&rec).expect("serialisable");
            write_atomic(&self.tmp, &self.record_path(name), &bytes)?;
        }
        Ok(out)
    }

    /// Removes a volume and its data. Refused while `in_use` names containers for it,
    /// unless `force` (the caller has dealt with those containers).
    pub fn remove(
        &self,
        name: &str,
        in_use: &InUse,
        force: bool,
    ) -> Result<VolumeRecord, VolumeError> {
        let rec = self.get(name)?;
        if !force && let Some(users) = in_use.get(name).filter(|u| !u.is_empty()) {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                containers: users.clone(),
            });
        }
        let doomed = self.tmp.join(format!(
            "rm-{name}-{}",
            hex::encode(rand::random::<[u8; 4]>())
        ));
        {
            let _all = self.lock_all()?;
            // Waits for a copy-up or chown in progress.
            let _one = self.lock_one(name)?;
            let d = self.dir.join(name);
            fs::rename(&d, &doomed).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => VolumeError::NotFound(name.to_string()),
                _ => io_at("removing", &d)(e).into(),
            })?;
        }
        remove_tree(&doomed);
        Ok(rec)
    }

    /// The volumes `prune` would remove: those `filter` selects that no container uses.
    pub fn prune_candidates(
        &self,
        filter: &VolumeFilter,
        in_use: &InUse,
    ) -> Result<Vec<VolumeRecord>, VolumeError> {
        Ok(self
            .list_filtered(filter, in_use)?
            .into_iter()
            .filter(|v| in_use.get(&v.name).is_none_or(|u| u.is_empty()))
            .collect())
    }

    /// Removes the unused volumes `filter` selects; returns them with the bytes freed.
    pub fn prune(&self, filter: &VolumeFilter, in_use: &InUse) -> Result<Vec<Pruned>, VolumeError> {
        let mut out = Vec::new();
        for v in self.prune_candidates(filter, in_use)? {
            let size = disk_usage(&v.mountpoint);
            match self.remove(&v.name, in_use, false) {
                Ok(_) => out.push(Pruned { name: v.name, size }),
                // Removed meanwhile by another process.
                Err(VolumeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Docker's and Podman's copy-up: when the volume still waits for it and is empty,
    /// the image's content at `destination` (resolved inside `image_rootfs`, symlinks
    /// and all) is copied in with owners, modes, times, symlinks and hard links, and
    /// the data directory takes the image directory's owner and mode. Returns whether
    /// anything was copied. A volume found non-empty is never copied into again; one
    /// whose image has nothing at `destination` still waits for the next container.
    pub fn copy_up(
        &self,
        name: &str,
        image_rootfs: &Path,
        destination: &str,
    ) -> Result<bool, VolumeError> {
        let data = self.data_dir(name);
        self.update(name, |rec| {
            if !rec.needs_copy_up {
                return Ok(false);
            }
            let src = resolve_in_root(image_rootfs, destination);
            let Ok(meta) = fs::symlink_metadata(&src) else {
                return Ok(false);
            };
            if !meta.is_dir() {
                return Ok(false);
            }
            let empty = fs::read_dir(&data)
                .map_err(io_at("reading", &data))?
                .next()
                .is_none();
            rec.needs_copy_up = false;
            if !empty {
                return Ok(false);
            }
            let mut c = crate::store::copy::Copier::default();
            c.copy_children(&src, &data)?;
            c.copy_meta(&src, &data, &meta)?;
            Ok(true)
        })
    }

    /// Podman's first-use chown: a volume made by `volume create` without an owner
    /// becomes the first container user's (`uid`, `gid` as the container sees them).
    pub fn chown_if_needed(&self, name: &str, uid: u32, gid: u32) -> Result<(), VolumeError> {
        let data = self.data_dir(name);
        self.update(name, |rec| {
            if rec.needs_chown {
                std::os::unix::fs::lchown(&data, Some(uid), Some(gid))
                    .map_err(io_at("changing the owner of", &data))?;
                rec.needs_chown = false;
            }
            Ok(())
        })
    }

    /// Turns parsed mount flags into OCI mounts: bind sources must exist, named volumes
    /// are created when missing (owned by `user`, the container's `--user` if given),
    /// anonymous volumes get new names. On error, volumes made by this call are removed.
    pub fn resolve(
        &self,
        requests: &[MountRequest],
        user: Option<(u32, u32)>,
    ) -> Result<Vec<ResolvedMount>, VolumeError> {
        check_destinations(requests)?;
        for r in requests.iter().filter(|r| r.kind == MountKind::Bind) {
            let src = r.source.as_deref().unwrap_or_default();
            fs::metadata(src).map_err(|source| VolumeError::BindSource {
                flag: r.flag.clone(),
                value: r.spec.clone(),
                path: PathBuf::from(src),
                source,
            })?;
        }
        let mut made: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for r in requests {
            match self.resolve_one(r, user) {
                Ok((m, created)) => {
                    if created && let Some(v) = &m.volume {
                        made.push(v.clone());
                    }
                    out.push(m);
                }
                Err(e) => {
                    for v in &made {
                        let _ = self.remove(v, &InUse::new(), true);
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    fn resolve_one(
        &self,
        r: &MountRequest,
        user: Option<(u32, u32)>,
    ) -> Result<(ResolvedMount, bool), VolumeError> {
        let (source, vol, created) = match r.kind {
            MountKind::Bind => (r.source.clone().unwrap_or_default(), None, false),
            MountKind::Tmpfs => ("tmpfs".to_string(), None, false),
            MountKind::Volume => {
                let (rec, created) = self.create_inner(CreateOptions {
                    name: r.source.clone(),
                    labels: r.volume_labels.clone(),
                    options: r.volume_options.clone(),
                    ignore_existing: true,
                    anonymous: r.source.is_none(),
                    owner: user,
                    ..Default::default()
                })?;
                (
                    rec.mountpoint.to_string_lossy().into_owned(),
                    Some(rec),
                    created,
                )
            }
        };
        let vol_opts = vol.as_ref().map(|v| v.mount_options()).unwrap_or_default();
        let all = full_options(r, &vol_opts);
        let oci_opts: Vec<&String> = all.iter().filter(|o| o.as_str() != "U").collect();
        let oci_type = if r.kind == MountKind::Tmpfs {
            "tmpfs"
        } else {
            "bind"
        };
        let oci = json!({
            "destination": r.destination,
            "type": oci_type,
            "source": source,
            "options": oci_opts,
        });
        let inspect = match r.kind {
            // Podman's inspect lists no tmpfs mounts.
            MountKind::Tmpfs => None,
            kind => {
                let opts: Vec<&String> = all
                    .iter()
                    .filter(|o| !matches!(class(o), Class::RoRw | Class::Propagation))
                    .collect();
                let mut m = serde_json::Map::new();
                m.insert(
                    "Type".into(),
                    json!(if kind == MountKind::Volume {
                        "volume"
                    } else {
                        "bind"
                    }),
                );
                if let Some(v) = &vol {
                    m.insert("Name".into(), json!(v.name));
                }
                m.insert("Source".into(), json!(source));
                m.insert("Destination".into(), json!(r.destination));
                m.insert(
                    "Driver".into(),
                    json!(if vol.is_some() { "local" } else { "" }),
                );
                m.insert("Mode".into(), json!(r.relabel.clone().unwrap_or_default()));
                m.insert("Options".into(), json!(opts));
                m.insert("RW".into(), json!(!r.read_only()));
                m.insert(
                    "Propagation".into(),
                    json!(r.propagation().unwrap_or("rprivate")),
                );
                Some(Value::Object(m))
            }
        };
        Ok((
            ResolvedMount {
                kind: r.kind,
                destination: r.destination.clone(),
                source,
                anonymous: vol.as_ref().is_some_and(|v| v.anonymous),
                volume: vol.map(|v| v.name),
                created,
                chown: r.chown(),
                copy_up: r.kind == MountKind::Volume && !r.no_copy(),
                oci,
                inspect,
            },
            created,
        ))
    }
}

/// The request's options, then the volume's own, then the defaults Podman adds, in
/// Podman's order (`U` included; the OCI mount drops it).
fn full_options(r: &MountRequest, vol_opts: &[String]) -> Vec<String> {
    let mut all: Vec<String> = r
        .options
        .iter()
        .filter(|o| !matches!(class(o), Class::Copy) && o.as_str() != "notmpcopyup")
        .cloned()
        .collect();
    let has = |all: &[String], c: Class| all.iter().any(|o| class(o) == c);
    for o in vol_opts {
        if !has(&all, class(o)) {
            all.push(o.clone());
        }
    }
    if !has(&all, Class::RoRw) {
        all.push("rw".into());
    }
    if !has(&all, Class::Propagation) {
        all.push("rprivate".into());
    }
    if r.kind != MountKind::Bind {
        if !has(&all, Class::Suid) {
            all.push("nosuid".into());
        }
        if !has(&all, Class::Dev) {
            all.push("nodev".into());
        }
    }
    match r.kind {
        MountKind::Tmpfs => {
            if !r.options.iter().any(|o| class(o) == Class::TmpCopy) {
                all.push("tmpcopyup".into());
            }
        }
        _ => {
            if !has(&all, Class::Bind) {
                all.push("rbind".into());
            }
        }
    }
    all
}

/// Bytes held by the files under `path` (apparent sizes; directories count nothing).
pub fn disk_usage(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = fs::read_dir(&p) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

/// Which volumes the containers under `root` use: a container uses a volume when its
/// record (`containers/<id>/container.json`) names the volume's data directory
/// anywhere, as its stored OCI mounts (`source`) or inspect `Mounts` (`Source`) do.
pub fn in_use_by_containers(root: &Path) -> Result<InUse, VolumeError> {
    let mut out = InUse::new();
    let cdir = root.join("containers");
    let mut prefixes = vec![format!("{}/", root.join("volumes").to_string_lossy())];
    if let Ok(canon) = fs::canonicalize(root) {
        prefixes.push(format!("{}/", canon.join("volumes").to_string_lossy()));
    }
    let rd = match fs::read_dir(&cdir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_at("reading", &cdir)(e).into()),
    };
    for e in rd.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        let p = e.path().join("container.json");
        let Ok(bytes) = fs::read(&p) else { continue };
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|source| VolumeError::Corrupt { path: p, source })?;
        let mut names = Vec::new();
        for prefix in &prefixes {
            collect_volume_refs(&v, prefix, &mut names);
        }
        names.sort();
        names.dedup();
        for n in names {
            out.entry(n).or_default().push(id.clone());
        }
    }
    for users in out.values_mut() {
        users.sort();
    }
    Ok(out)
}

fn collect_volume_refs(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            if let Some(rest) = s.strip_prefix(prefix) {
                let name = rest.split('/').next().unwrap_or_default();
                let tail = &rest[name.len()..];
                if valid_name(name) && (tail == "/_data" || tail.starts_with("/_data/")) {
                    out.push(name.to_string());
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_volume_refs(x, prefix, out)),
        Value::Object(o) => o.values().for_each(|x| collect_volume_refs(x, prefix, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------
// Copy-up

/// `path` inside `root` as the container would see it: symlinks (absolute ones too)
/// resolve within `root`, and `..` never leaves it.
fn resolve_in_root(root: &Path, path: &str) -> PathBuf {
    let mut done: Vec<std::ffi::OsString> = Vec::new();
    let mut todo: Vec<std::ffi::OsString> = Path::new(path)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        let here: PathBuf = done.iter().collect();
        let cand = root.join(&here).join(&c);
        match fs::read_link(&cand) {
            Ok(target) if links < 40 => {
                links += 1;
                if target.is_absolute() {
                    done.clear();
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => done.push(c),
        }
    }
    let rel: PathBuf = done.iter().collect();
    root.join(rel)
}

// ---------------------------------------------------------------------------------
// The mount flags

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

/// One `-v`, `--mount` or `--tmpfs` value, parsed and checked but not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRequest {
    pub kind: MountKind,
    /// Bind: the host path (absolute, cleaned). Volume: its name, `None` for an
    /// anonymous volume. Tmpfs: `None`.
    pub source: Option<String>,
    /// Absolute and cleaned.
    pub destination: String,
    /// Mount options in the order given: `ro`/`rw`, a propagation, `nosuid`, `size=`,
    /// `U` (chown to the container's user), `nocopy`, …
    pub options: Vec<String>,
    /// `z` or `Z`: SELinux relabelling, shown as inspect's `Mode` (there is no SELinux
    /// labelling here).
    pub relabel: Option<String>,
    /// `--mount volume-opt=`, `volume-label=`: used when the volume is created.
    pub volume_options: BTreeMap<String, String>,
    pub volume_labels: BTreeMap<String, String>,
    /// The flag (`--volume`, `--mount`, `--tmpfs`) and the value it came from.
    pub flag: String,
    pub spec: String,
}

impl MountRequest {
    /// An anonymous volume at `destination` (an image's VOLUME).
    pub fn anonymous_volume(destination: &str) -> Result<MountRequest, VolumeError> {
        let dest = container_path("VOLUME", destination, destination)?;
        Ok(MountRequest {
            kind: MountKind::Volume,
            source: None,
            destination: dest,
            options: Vec::new(),
            relabel: None,
            volume_options: BTreeMap::new(),
            volume_labels: BTreeMap::new(),
            flag: "VOLUME".into(),
            spec: destination.to_string(),
        })
    }

    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    /// `U`: the source is chowned to the container's user (the caller's job).
    pub fn chown(&self) -> bool {
        self.options.iter().any(|o| o == "U")
    }

    pub fn no_copy(&self) -> bool {
        self.options.iter().any(|o| o == "nocopy")
    }

    pub fn propagation(&self) -> Option<&str> {
        self.options
            .iter()
            .find(|o| class(o) == Class::Propagation)
            .map(String::as_str)
    }
}

/// A mount ready for the OCI configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedMount {
    pub kind: MountKind,
    pub destination: String,
    /// The host path mounted (a volume's data directory), or `tmpfs`.
    pub source: String,
    pub volume: Option<String>,
    pub anonymous: bool,
    /// The volume was created for this container by `resolve`.
    pub created: bool,
    /// `U`: chown the source to the container's user before starting.
    pub chown: bool,
    /// A volume whose content should be copied up from the image ([`Volumes::copy_up`]),
    /// unless `nocopy` was asked for.
    pub copy_up: bool,
    /// The OCI mount object for `SpecOptions::mounts`.
    pub oci: Value,
    /// The `Mounts` entry of `container inspect` (none for tmpfs, as Podman).
    pub inspect: Option<Value>,
}

/// What kind of mount option a word is; two of a kind conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    RoRw,
    Propagation,
    Suid,
    Dev,
    Exec,
    Bind,
    Relabel,
    Chown,
    Copy,
    TmpCopy,
    Atime,
    Sync,
    /// `key=value` tmpfs options.
    Value,
    Unknown,
}

fn class(o: &str) -> Class {
    match o {
        "ro" | "rw" => Class::RoRw,
        "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" | "unbindable"
        | "runbindable" => Class::Propagation,
        "suid" | "nosuid" => Class::Suid,
        "dev" | "nodev" => Class::Dev,
        "exec" | "noexec" => Class::Exec,
        "bind" | "rbind" => Class::Bind,
        "z" | "Z" => Class::Relabel,
        "U" => Class::Chown,
        "copy" | "nocopy" => Class::Copy,
        "tmpcopyup" | "notmpcopyup" => Class::TmpCopy,
        "atime" | "noatime" | "relatime" | "norelatime" | "strictatime" | "nostrictatime"
        | "diratime" | "nodiratime" => Class::Atime,
        "sync" | "async" | "dirsync" => Class::Sync,
        _ if o.contains('=') => Class::Value,
        _ => Class::Unknown,
    }
}

const CONFLICTS: &[(Class, &str)] = &[
    (Class::RoRw, "'rw' or 'ro'"),
    (
        Class::Propagation,
        "'[r]shared', '[r]private', '[r]slave' or '[r]unbindable'",
    ),
    (Class::Suid, "'suid' or 'nosuid'"),
    (Class::Dev, "'dev' or 'nodev'"),
    (Class::Exec, "'exec' or 'noexec'"),
    (Class::Bind, "'bind' or 'rbind'"),
    (Class::Relabel, "'z' or 'Z'"),
    (Class::Copy, "'copy' or 'nocopy'"),
    (Class::TmpCopy, "'tmpcopyup' or 'notmpcopyup'"),
];

/// Checks `opts` for `kind`; the reason for the first problem.
fn check_options(kind: MountKind, opts: &[String]) -> Result<(), String> {
    for o in opts {
        let c = class(o);
        let ok = match (kind, c) {
            (_, Class::Unknown) => match o.as_str() {
                "O" => return Err("overlay volumes (O) are not supported".into()),
                "idmap" => return Err("idmapped mounts (idmap) are not supported".into()),
                "" => return Err("empty option".into()),
                _ => false,
            },
            (MountKind::Tmpfs, Class::Value) => check_tmpfs_value(o)?,
            (MountKind::Tmpfs, Class::Bind | Class::Relabel | Class::Copy) => false,
            (MountKind::Tmpfs, _) => true,
            (_, Class::Value | Class::TmpCopy | Class::Atime | Class::Sync) => false,
            (MountKind::Bind, Class::Copy) => false,
            _ => true,
        };
        if !ok {
            return Err(format!(
                "unknown option {o:?} for a {} mount",
                kind_name(kind)
            ));
        }
    }
    for (c, what) in CONFLICTS {
        let same: Vec<&str> = opts
            .iter()
            .filter(|o| class(o) == *c)
            .map(String::as_str)
            .collect();
        if same.len() > 1 {
            return Err(format!(
                "options \"{}\" conflict: give only one of {what}",
                same.join(", ")
            ));
        }
    }
    Ok(())
}

fn kind_name(k: MountKind) -> &'static str {
    match k {
        MountKind::Bind => "bind",
        MountKind::Volume => "volume",
        MountKind::Tmpfs => "tmpfs",
    }
}

/// `size=`, `mode=`, `uid=`, … of a tmpfs; the kernel would reject other values only
/// when the container starts.
fn check_tmpfs_value(o: &str) -> Result<bool, String> {
    let (k, v) = o.split_once('=').unwrap_or((o, ""));
    match k {
        "size" => {
            valid_size(v)?;
        }
        "mode" => valid_mode(v)?,
        "uid" | "gid" => {
            v.parse::<u32>()
                .map_err(|_| format!("{k} {v:?} is not a numeric ID"))?;
        }
        "nr_inodes" | "nr_blocks" => {
            valid_size(v)?;
        }
        "huge" | "mpol" => {}
        _ => return Ok(false),
    }
    Ok(true)
}

/// A size as tmpfs takes it: digits with an optional k, m, g, t suffix (any case), or
/// a percentage. Docker's `64MB`/`64MiB` forms are accepted and given back in the
/// kernel's form.
fn valid_size(v: &str) -> Result<String, String> {
    let bad = || format!("size {v:?} is not a size (a number with an optional k, m or g suffix)");
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let (num, unit) = v.split_at(digits);
    let unit = unit.to_ascii_lowercase();
    let unit = match unit.as_str() {
        "" | "b" => "",
        "%" => "%",
        "k" | "kb" | "kib" => "k",
        "m" | "mb" | "mib" => "m",
        "g" | "gb" | "gib" => "g",
        "t" | "tb" | "tib" => "t",
        _ => return Err(bad()),
    };
    Ok(format!("{num}{unit}"))
}

fn valid_mode(v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 4 || !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("mode {v:?} is not an octal mode such as 1777"));
    }
    Ok(())
}

/// `path` as an absolute, cleaned container path (Go's filepath.Clean).
fn container_path(flag: &str, spec: &str, path: &str) -> Result<String, VolumeError> {
    if path.is_empty() {
        return Err(VolumeError::flag(
            flag,
            spec,
            "container directory cannot be empty",
        ));
    }
    if !path.starts_with('/') {
        return Err(VolumeError::flag(
            flag,
            spec,
            format!("container path {path:?} must be absolute"),
        ));
    }
    Ok(clean(path))
}

fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A host path: absolute ones cleaned, relative ones joined to `cwd`.
fn host_path(cwd: &Path, p: &str) -> String {
    if p.starts_with('/') {
        clean(p)
    } else {
        clean(&format!("{}/{p}", cwd.to_string_lossy()))
    }
}

/// Splits the options list, moving `z`/`Z` out.
fn split_options(list: &str) -> (Vec<String>, Vec<String>) {
    let mut opts = Vec::new();
    let mut relabel = Vec::new();
    if list.is_empty() {
        return (opts, relabel);
    }
    for o in list.split(',') {
        if o == "z" || o == "Z" {
            relabel.push(o.to_string());
        } else {
            opts.push(o.to_string());
        }
    }
    (opts, relabel)
}

fn one_relabel(
    flag: &str,
    spec: &str,
    relabel: Vec<String>,
) -> Result<Option<String>, VolumeError> {
    match relabel.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => Err(VolumeError::flag(
            flag,
            spec,
            format!(
                "options \"{}\" conflict: give only one of 'z' or 'Z'",
                many.join(", ")
            ),
        )),
    }
}

/// `-v`/`--volume [SOURCE:]DESTINATION[:OPTIONS]`. A SOURCE starting with `/` or `.`
/// is a host path (bind mount; `.` relative to `cwd`), anything else names a volume,
/// created when missing; no SOURCE means a new anonymous volume.
pub fn parse_volume_flag(spec: &str, cwd: &Path) -> Result<MountRequest, VolumeError> {
    const FLAG: &str = "--volume";
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => (None, *d, ""),
        [s, d] => (Some(*s), *d, ""),
        [s, d, o] => (Some(*s), *d, *o),
        _ => {
            return Err(VolumeError::flag(
                FLAG,
                spec,
                "incorrect volume format, should be [SOURCE:]DESTINATION[:OPTIONS]",
            ));
        }
    };
    if src == Some("") {
        return Err(VolumeError::flag(
            FLAG,
            spec,
            "host directory cannot be empty",
        ));
    }
    let destination = container_path(FLAG, spec, dst)?;
    let (kind, source) = match src {
        None => (MountKind::Volume, None),
        Some(s) if s.starts_with('/') || s.starts_with('.') => {
            (MountKind::Bind, Some(host_path(cwd, s)))
        }
        Some(s) if s.starts_with('~') => {
            return Err(VolumeError::flag(
                FLAG,
                spec,
                format!("{s:?} is not an absolute path (the shell did not expand ~: use $HOME)"),
            ));
        }
        Some(s) if valid_name(s) => (MountKind::Volume, Some(s.to_string())),
        Some(s) => {
            return Err(VolumeError::flag(
                FLAG,
                spec,
                format!(
                    "{s:?} is neither an absolute path nor a volume name (names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*)"
                ),
            ));
        }
    };
    let (options, relabel) = split_options(opts);
    let relabel = one_relabel(FLAG, spec, relabel)?;
    check_options(kind, &options).map_err(|r| VolumeError::flag(FLAG, spec, r))?;
    Ok(MountRequest {
        kind,
        source,
        destination,
        options,
        relabel,
        volume_options: BTreeMap::new(),
        volume_labels: BTreeMap::new(),
        flag: FLAG.into(),
        spec: spec.to_string(),
    })
}

/// `--tmpfs DESTINATION[:OPTIONS]`.
pub fn parse_tmpfs_flag(spec: &str) -> Result<MountRequest, VolumeError> {
    const FLAG: &str = "--tmpfs";
    let (dst, opts) = spec.split_once(':').unwrap_or((spec, ""));
    let destination = container_path(FLAG, spec, dst)?;
    let options: Vec<String> = if opts.is_empty() {
        Vec::new()
    } else {
        opts.split(',').map(str::to_string).collect()
    };
    check_options(MountKind::Tmpfs, &options).map_err(|r| VolumeError::flag(FLAG, spec, r))?;
    Ok(MountRequest {
        kind: MountKind::Tmpfs,
        source: None,
        destination,
        options,
        relabel: None,
        volume_options: BTreeMap::new(),
        volume_labels: BTreeMap::new(),
        flag: FLAG.into(),
        spec: spec.to_string(),
    })
}

/// Docker's CSV fields: commas separate, double quotes protect commas.
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    out.push(cur);
    Ok(out)
}

fn parse_bool(key: &str, v: Option<&str>) -> Result<bool, String> {
    match v {
        None => Ok(true),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(format!("{key} must be true or false, not {other:?}")),
    }
}

const MOUNT_KEYS: &str = "type, source/src, target/destination/dst, readonly/ro, rw, \
bind-propagation, bind-nonrecursive, relabel, consistency, tmpfs-size, tmpfs-mode, \
volume-opt, volume-label, volume-nocopy, volume-driver, U/chown, nosuid, nodev, noexec, \
suid, dev, exec, notmpcopyup";

/// `--mount type=bind|volume|tmpfs,source=…,target=…[,options]` (Docker's syntax; the
/// type defaults to volume). Relative bind sources are taken from `cwd`.
pub fn parse_mount_flag(spec: &str, cwd: &Path) -> Result<MountRequest, VolumeError> {
    const FLAG: &str = "--mount";
    let bad = |r: String| VolumeError::flag(FLAG, spec, r);
    let fields = csv_fields(spec).map_err(bad)?;
    let mut kind: Option<MountKind> = None;
    let mut source: Option<String> = None;
    let mut target: Option<String> = None;
    let mut options: Vec<String> = Vec::new();
    let mut relabel = Vec::new();
    let mut vol_opts = BTreeMap::new();
    let mut vol_labels = BTreeMap::new();
    // Keys only one type takes, to check once the type is known.
    let mut only: Vec<(String, MountKind)> = Vec::new();
    let mut seen: Vec<&'static str> = Vec::new();
    for field in &fields {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (field.trim(), None),
        };
        let key = k.to_ascii_lowercase();
        let need = |v: Option<&str>| -> Result<String, VolumeError> {
            v.map(str::to_string)
                .ok_or_else(|| bad(format!("{k} needs a value ({k}=…)")))
        };
        let mut once = |name: &'static str| -> Result<(), VolumeError> {
            if seen.contains(&name) {
                return Err(bad(format!("{name} is given more than once")));
            }
            seen.push(name);
            Ok(())
        };
        match key.as_str() {
            "type" => {
                once("type")?;
                kind = Some(match need(v)?.as_str() {
                    "bind" => MountKind::Bind,
                    "volume" => MountKind::Volume,
                    "tmpfs" => MountKind::Tmpfs,
                    other => {
                        return Err(bad(format!(
                            "mount type {other:?} is not supported (bind, volume or tmpfs)"
                        )));
                    }
                });
            }
            "source" | "src" => {
                once("source")?;
                source = Some(need(v)?);
            }
            "target" | "destination" | "dst" => {
                once("target")?;
                target = Some(need(v)?);
            }
            "readonly" | "ro" => {
                if parse_bool(k, v).map_err(bad)? {
                    options.push("ro".into());
                } else {
                    options.push("rw".into());
                }
            }
            "rw" => {
                if parse_bool(k, v).map_err(bad)? {
                    options.push("rw".into());
                } else {
                    options.push("ro".into());
                }
            }
            "bind-propagation" => {
                let p = need(v)?;
                if class(&p) != Class::Propagation {
                    return Err(bad(format!(
                        "bind-propagation {p:?} is not one of shared, slave, private, unbindable and their r-forms"
                    )));
                }
                options.push(p);
                only.push((key.clone(), MountKind::Bind));
            }
            "bind-nonrecursive" => {
                if parse_bool(k, v).map_err(bad)? {
                    options.push("bind".into());
                }
                only.push((key.clone(), MountKind::Bind));
            }
            "relabel" => match need(v)?.as_str() {
                "shared" => relabel.push("z".to_string()),
                "private" => relabel.push("Z".to_string()),
                other => return Err(bad(format!("relabel {other:?} is not shared or private"))),
            },
            "z" | "Z" if v.is_none() => relabel.push(k.to_string()),
            "consistency" => {
                need(v)?;
            }
            "tmpfs-size" => {
                let s = valid_size(&need(v)?).map_err(bad)?;
                options.push(format!("size={s}"));
                only.push((key.clone(), MountKind::Tmpfs));
            }
            "tmpfs-mode" => {
                let m = need(v)?;
                valid_mode(&m).map_err(bad)?;
                options.push(format!("mode={m}"));
                only.push((key.clone(), MountKind::Tmpfs));
            }
            "volume-opt" => {
                let o = need(v)?;
                let (ok, ov) = o.split_once('=').unwrap_or((&o, ""));
                vol_opts.insert(ok.to_string(), ov.to_string());
                only.push((key.clone(), MountKind::Volume));
            }
            "volume-label" => {
                let l = need(v)?;
                let (lk, lv) = l.split_once('=').unwrap_or((&l, ""));
                if lk.is_empty() {
                    return Err(bad(format!("volume-label {l:?} has no key")));
                }
                vol_labels.insert(lk.to_string(), lv.to_string());
                only.push((key.clone(), MountKind::Volume));
            }
            "volume-nocopy" => {
                if parse_bool(k, v).map_err(bad)? {
                    options.push("nocopy".into());
                }
                only.push((key.clone(), MountKind::Volume));
            }
            "volume-driver" => {
                let d = need(v)?;
                if d != "local" {
                    return Err(VolumeError::UnknownDriver(d));
                }
                only.push((key.clone(), MountKind::Volume));
            }
            "u" | "chown" => {
                if parse_bool(k, v).map_err(bad)? {
                    options.push("U".into());
                }
            }
            "nosuid" | "suid" | "nodev" | "dev" | "noexec" | "exec" if v.is_none() => {
                options.push(key.clone())
            }
            "notmpcopyup" | "tmpcopyup" if v.is_none() => {
                options.push(key.clone());
                only.push((key.clone(), MountKind::Tmpfs));
            }
            _ => {
                return Err(bad(format!("unknown option {k:?} (known: {MOUNT_KEYS})")));
            }
        }
    }
    let kind = kind.unwrap_or(MountKind::Volume);
    if let Some((k, t)) = only.iter().find(|(_, t)| *t != kind) {
        return Err(bad(format!(
            "{k} is only valid with type={}",
            kind_name(*t)
        )));
    }
    let Some(target) = target else {
        return Err(bad(
            "target is required (target=, dst= or destination=)".into()
        ));
    };
    let destination = container_path(FLAG, spec, &target)?;
    let source = match (kind, source) {
        (MountKind::Bind, Some(s)) if !s.is_empty() => Some(host_path(cwd, &s)),
        (MountKind::Bind, _) => return Err(bad("a bind mount needs source=".into())),
        (MountKind::Volume, Some(s)) if !s.is_empty() => {
            if !valid_name(&s) {
                return Err(bad(format!(
                    "{s:?} is not a volume name (names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*; use type=bind for a host path)"
                )));
            }
            Some(s)
        }
        (MountKind::Volume, _) => None,
        (MountKind::Tmpfs, Some(_)) => {
            return Err(bad("source is not supported with tmpfs mounts".into()));
        }
        (MountKind::Tmpfs, None) => None,
    };
    if kind == MountKind::Tmpfs && !relabel.is_empty() {
        return Err(bad("relabel is not valid with type=tmpfs".into()));
    }
    let relabel = one_relabel(FLAG, spec, relabel)?;
    check_options(kind, &options).map_err(bad)?;
    Ok(MountRequest {
        kind,
        source,
        destination,
        options,
        relabel,
        volume_options: vol_opts,
        volume_labels: vol_labels,
        flag: FLAG.into(),
        spec: spec.to_string(),
    })
}

/// Two mounts at one destination are refused.
pub fn check_destinations(requests: &[MountRequest]) -> Result<(), VolumeError> {
    let mut seen = std::collections::HashSet::new();
    for r in requests {
        if !seen.insert(r.destination.as_str()) {
            return Err(VolumeError::DuplicateDestination(r.destination.clone()));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Filters

/// `volume ls`/`prune --filter`: values of one key match if any does (except `label`
/// and `label!`, where all must), and every key must match (Podman's rules).
#[derive(Debug, Clone, Default)]
pub struct VolumeFilter {
    by_key: BTreeMap<String, Vec<String>>,
    names: Vec<Regex>,
    until: Vec<DateTime<Utc>>,
}

const FILTER_KEYS: &[&str] = &[
    "name",
    "label",
    "label!",
    "dangling",
    "driver",
    "opt",
    "scope",
    "anonymous",
    "until",
    "since",
    "after",
];

fn parse_filter_bool(filter: &str, v: &str) -> Result<bool, VolumeError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(VolumeError::BadFilter {
            filter: filter.to_string(),
            reason: format!("{v:?} is not true or false"),
        }),
    }
}

impl VolumeFilter {
    /// Parses `key=value` filters.
    pub fn parse(filters: &[String]) -> Result<VolumeFilter, VolumeError> {
        let mut f = VolumeFilter::default();
        for s in filters {
            let bad = |reason: String| VolumeError::BadFilter {
                filter: s.clone(),
                reason,
            };
            let Some((k, v)) = s.split_once('=') else {
                return Err(bad("filters are KEY=VALUE".into()));
            };
            if !FILTER_KEYS.contains(&k) {
                return Err(bad(format!(
                    "{k:?} is an invalid volume filter (known: {})",
                    FILTER_KEYS.join(", ")
                )));
            }
            match k {
                "dangling" | "anonymous" => {
                    parse_filter_bool(s, v)?;
                }
                "name" => f.names.push(Regex::new(v).map_err(bad)?),
                "until" => f.until.push(parse_until(v, Utc::now()).map_err(bad)?),
                _ => {}
            }
            f.by_key
                .entry(k.to_string())
                .or_default()
                .push(v.to_string());
        }
        Ok(f)
    }

    fn values(&self, keys: &[&str]) -> Vec<&String> {
        keys.iter()
            .filter_map(|k| self.by_key.get(*k))
            .flatten()
            .collect()
    }

    /// `since`: creation times of the `since`/`after` volumes, in [`Self::values`] order.
    fn matches(&self, v: &VolumeRecord, in_use: &InUse, since: &[Option<DateTime<Utc>>]) -> bool {
        let created = v.created_time();
        let used = in_use.get(&v.name).is_some_and(|u| !u.is_empty());
        let has_label = |l: &str| match l.split_once('=') {
            Some((k, val)) => v.labels.get(k).is_some_and(|x| x == val),
            None => v.labels.contains_key(l),
        };
        for (k, vals) in &self.by_key {
            let ok = match k.as_str() {
                "name" => self.names.iter().any(|r| r.is_match(&v.name)),
                "label" => vals.iter().all(|l| has_label(l)),
                "label!" => vals.iter().all(|l| !has_label(l)),
                "dangling" => vals
                    .iter()
                    .any(|x| matches!(x.as_str(), "true" | "1") != used),
                "anonymous" => vals
                    .iter()
                    .any(|x| matches!(x.as_str(), "true" | "1") == v.anonymous),
                "driver" => vals.contains(&v.driver),
                "scope" => vals.iter().any(|s| s == "local"),
                "opt" => vals.iter().any(|o| match o.split_once('=') {
                    Some((ok, ov)) => v.options.get(ok).is_some_and(|x| x == ov),
                    None => v.options.contains_key(o.as_str()),
                }),
                "until" => self.until.iter().any(|t| created.is_some_and(|c| c < *t)),
                "since" | "after" => true,
                _ => false,
            };
            if !ok {
                return false;
            }
        }
        if !since.is_empty() {
            return since
                .iter()
                .any(|t| matches!((created, t), (Some(c), Some(t)) if c > *t));
        }
        true
    }
}

/// `until=`: a Go duration before now (`10m`, `1h30m`), Unix seconds, an RFC 3339
/// time, or a local `YYYY-MM-DD[THH:MM:SS]`.
fn parse_until(v: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Some(d) = go_duration(v) {
        return Ok(now - d);
    }
    if let Ok(secs) = v.parse::<f64>() {
        let whole = secs.trunc() as i64;
        let ns = ((secs - secs.trunc()) * 1e9) as u32;
        if let Some(t) = DateTime::from_timestamp(whole, ns) {
            return Ok(t);
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = |n: chrono::NaiveDateTime| {
        n.and_local_timezone(chrono::Local)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    };
    if let Ok(n) = chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S")
        && let Some(t) = local(n)
    {
        return Ok(t);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
        && let Some(t) = local(d.and_hms_opt(0, 0, 0).expect("midnight"))
    {
        return Ok(t);
    }
    Err(format!(
        "{v:?} is neither a duration (10m, 1h30m) nor a time (RFC 3339, YYYY-MM-DD, Unix seconds)"
    ))
}

/// Go's time.ParseDuration for non-negative values.
fn go_duration(s: &str) -> Option<chrono::Duration> {
    if s.is_empty() || s == "0" {
        return (s == "0").then(chrono::Duration::zero);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += num * mult;
    }
    Some(chrono::Duration::nanoseconds(total as i64))
}

/// The small part of Go's regexp that volume names need: literals, `.`, `[…]` classes,
/// `\` escapes, `* + ?`, and `^ $` anchors; unanchored search like MatchString.
#[derive(Debug, Clone)]
struct Regex {
    start: bool,
    end: bool,
    items: Vec<(Atom, Rep)>,
}

#[derive(Debug, Clone)]
enum Atom {
    Any,
    Char(char),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rep {
    One,
    Star,
    Plus,
    Opt,
}

impl Atom {
    fn matches(&self, c: char) -> bool {
        match self {
            Atom::Any => c != '\n',
            Atom::Char(x) => *x == c,
            Atom::Class { negated, ranges } => {
                ranges.iter().any(|(a, b)| (*a..=*b).contains(&c)) != *negated
            }
        }
    }
}

fn escape_class(c: char) -> Option<Atom> {
    let ranges = match c {
        'd' | 'D' => vec![('0', '9')],
        'w' | 'W' => vec![('0', '9'), ('a', 'z'), ('A', 'Z'), ('_', '_')],
        's' | 'S' => vec![(' ', ' '), ('\t', '\r')],
        _ => return None,
    };
    Some(Atom::Class {
        negated: c.is_ascii_uppercase(),
        ranges,
    })
}

impl Regex {
    fn new(p: &str) -> Result<Regex, String> {
        let unsupported = || {
            format!(
                "regular expression {p:?} uses syntax not supported here (supported: . [] * + ? ^ $ \\)"
            )
        };
        let mut chars: Vec<char> = p.chars().collect();
        let start = chars.first() == Some(&'^');
        if start {
            chars.remove(0);
        }
        let end =
            chars.last() == Some(&'$') && !(chars.len() >= 2 && chars[chars.len() - 2] == '\\');
        if end {
            chars.pop();
        }
        let mut items: Vec<(Atom, Rep)> = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            let atom = match c {
                '.' => Atom::Any,
                '\\' => {
                    let e = *chars.get(i).ok_or_else(unsupported)?;
                    i += 1;
                    match escape_class(e) {
                        Some(a) => a,
                        None if e.is_ascii_alphanumeric() => return Err(unsupported()),
                        None => Atom::Char(e),
                    }
                }
                '[' => {
                    let negated = chars.get(i) == Some(&'^');
                    if negated {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let c = *chars.get(i).ok_or_else(unsupported)?;
                        i += 1;
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        let lo = if c == '\\' {
                            let e = *chars.get(i).ok_or_else(unsupported)?;
                            i += 1;
                            e
                        } else {
                            c
                        };
                        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|n| *n != ']')
                        {
                            ranges.push((lo, chars[i + 1]));
                            i += 2;
                        } else {
                            ranges.push((lo, lo));
                        }
                    }
                    Atom::Class { negated, ranges }
                }
                '(' | ')' | '|' | '{' | '}' | '*' | '+' | '?' | '^' | '$' => {
                    return Err(unsupported());
                }
                c => Atom::Char(c),
            };
            let rep = match chars.get(i) {
                Some('*') => Rep::Star,
                Some('+') => Rep::Plus,
                Some('?') => Rep::Opt,
                _ => Rep::One,
            };
            if rep != Rep::One {
                i += 1;
            }
            items.push((atom, rep));
        }
        Ok(Regex { start, end, items })
    }

    fn is_match(&self, s: &str) -> bool {
        let s: Vec<char> = s.chars().collect();
        if self.start {
            return self.at(&self.items, &s);
        }
        (0..=s.len()).any(|i| self.at(&self.items, &s[i..]))
    }

    fn at(&self, items: &[(Atom, Rep)], s: &[char]) -> bool {
        let Some(((atom, rep), rest)) = items.split_first() else {
            return !self.end || s.is_empty();
        };
        match rep {
            Rep::One => !s.is_empty() && atom.matches(s[0]) && self.at(rest, &s[1..]),
            Rep::Opt => {
                (!s.is_empty() && atom.matches(s[0]) && self.at(rest, &s[1..])) || self.at(rest, s)
            }
            Rep::Star | Rep::Plus => {
                let n = s.iter().take_while(|c| atom.matches(**c)).count();
                let min = usize::from(*rep == Rep::Plus);
                (min..=n).rev().any(|k| self.at(rest, &s[k..]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    /// (what was tried, kind, source, destination, options, relabel)
    type ParseCase<'a> = (
        &'a str,
        MountKind,
        Option<&'a str>,
        &'a str,
        &'a [&'a str],
        Option<&'a str>,
    );

    fn cwd() -> &'static Path {
        Path::new("/work/dir")
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn store() -> (tempfile::TempDir, Volumes) {
        let t = tempfile::tempdir().unwrap();
        let v = Volumes::new(t.path()).unwrap();
        (t, v)
    }

    fn named(name: &str) -> CreateOptions {
        CreateOptions {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn volume_flag_good_values() {
        use MountKind::*;
        // (what was tried, kind, source, destination, options, relabel)
        let table: &[ParseCase] = &[
            // Only a destination: a new anonymous volume.
            ("/data", Volume, None, "/data", &[], None),
            // A name: a named volume.
            ("vol:/data", Volume, Some("vol"), "/data", &[], None),
            (
                "my.vol_1-x:/d:ro",
                Volume,
                Some("my.vol_1-x"),
                "/d",
                &["ro"],
                None,
            ),
            (
                "vol:/v:nocopy,noexec",
                Volume,
                Some("vol"),
                "/v",
                &["nocopy", "noexec"],
                None,
            ),
            // Absolute paths bind; both sides are cleaned like Go's filepath.Clean.
            ("/host:/c", Bind, Some("/host"), "/c", &[], None),
            (
                "/host/:/c//x/../y:ro,z",
                Bind,
                Some("/host"),
                "/c/y",
                &["ro"],
                Some("z"),
            ),
            // A leading dot binds relative to the working directory.
            ("./rel:/x", Bind, Some("/work/dir/rel"), "/x", &[], None),
            ("../up:/x", Bind, Some("/work/up"), "/x", &[], None),
            (".:/x", Bind, Some("/work/dir"), "/x", &[], None),
            // Every option class once; Z moves to relabel.
            (
                "/h:/c:rw,shared,U,nosuid,nodev,noexec,Z",
                Bind,
                Some("/h"),
                "/c",
                &["rw", "shared", "U", "nosuid", "nodev", "noexec"],
                Some("Z"),
            ),
            // An empty options part is no options.
            ("/h:/c:", Bind, Some("/h"), "/c", &[], None),
        ];
        for (spec, kind, src, dst, opts, relabel) in table {
            let r = parse_volume_flag(spec, cwd()).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(r.kind, *kind, "{spec}");
            assert_eq!(r.source.as_deref(), *src, "{spec}");
            assert_eq!(r.destination, *dst, "{spec}");
            assert_eq!(r.options, strs(opts), "{spec}");
            assert_eq!(r.relabel.as_deref(), *relabel, "{spec}");
            assert_eq!(r.flag, "--volume");
            assert_eq!(r.spec, *spec);
        }
    }

    #[test]
    fn volume_flag_bad_values() {
        // (what was tried, what the error must say)
        let table: &[(&str, &str)] = &[
            ("a:b:c:d", "incorrect volume format"),
            ("", "container directory cannot be empty"),
            (":/x", "host directory cannot be empty"),
            ("/h:", "container directory cannot be empty"),
            ("rel:dst", "container path \"dst\" must be absolute"),
            // Two parts are always SOURCE:DESTINATION, so options there are a path.
            ("/x:ro", "container path \"ro\" must be absolute"),
            ("rel", "container path \"rel\" must be absolute"),
            ("bad name!:/x", "neither an absolute path nor a volume name"),
            ("~/x:/x", "the shell did not expand ~"),
            ("/h:/x:bogus", "unknown option \"bogus\" for a bind mount"),
            ("/h:/x:ro,rw", "options \"ro, rw\" conflict"),
            ("/h:/x:ro,ro", "options \"ro, ro\" conflict"),
            ("/h:/x:shared,slave", "'[r]shared'"),
            ("/h:/x:z,Z", "options \"z, Z\" conflict"),
            ("/h:/x:nosuid,suid", "'suid' or 'nosuid'"),
            ("/h:/x:O", "overlay volumes (O) are not supported"),
            ("/h:/x:idmap", "idmapped mounts"),
            ("/h:/x:nocopy", "unknown option \"nocopy\" for a bind mount"),
            (
                "vol:/x:size=1m",
                "unknown option \"size=1m\" for a volume mount",
            ),
            ("/h:/x:ro,,rw", "empty option"),
        ];
        for (spec, want) in table {
            let e = parse_volume_flag(spec, cwd()).expect_err(spec).to_string();
            assert!(
                e.starts_with(&format!("invalid --volume {spec:?}: ")),
                "{spec}: {e}"
            );
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    #[test]
    fn mount_flag_good_values() {
        use MountKind::*;
        // (what was tried, kind, source, destination, options, relabel)
        let table: &[ParseCase] = &[
            ("type=bind,src=/h,dst=/x", Bind, Some("/h"), "/x", &[], None),
            (
                "type=bind,source=/h,destination=/x,readonly,bind-propagation=rslave",
                Bind,
                Some("/h"),
                "/x",
                &["ro", "rslave"],
                None,
            ),
            // Booleans take =true/false/1/0; keys are case-insensitive.
            (
                "Type=bind,Source=/h,Target=/x,ro=false",
                Bind,
                Some("/h"),
                "/x",
                &["rw"],
                None,
            ),
            (
                "type=bind,src=/h,dst=/x,readonly=1",
                Bind,
                Some("/h"),
                "/x",
                &["ro"],
                None,
            ),
            (
                "type=bind,src=/h,dst=/x,bind-nonrecursive,relabel=private,consistency=cached",
                Bind,
                Some("/h"),
                "/x",
                &["bind"],
                Some("Z"),
            ),
            (
                "type=bind,src=/h,dst=/x,U,nosuid",
                Bind,
                Some("/h"),
                "/x",
                &["U", "nosuid"],
                None,
            ),
            // A relative bind source is taken from the working directory.
            (
                "type=bind,src=rel,dst=/x",
                Bind,
                Some("/work/dir/rel"),
                "/x",
                &[],
                None,
            ),
            // Quotes protect commas (Docker's CSV).
            (
                "type=bind,\"src=/a,b\",dst=/x",
                Bind,
                Some("/a,b"),
                "/x",
                &[],
                None,
            ),
            // No type: a volume, as Docker; no source: anonymous.
            ("target=/data", Volume, None, "/data", &[], None),
            (
                "type=volume,src=,dst=/data",
                Volume,
                None,
                "/data",
                &[],
                None,
            ),
            (
                "type=volume,src=v,dst=/v,ro",
                Volume,
                Some("v"),
                "/v",
                &["ro"],
                None,
            ),
            (
                "type=volume,src=v,dst=/v,volume-nocopy,volume-driver=local",
                Volume,
                Some("v"),
                "/v",
                &["nocopy"],
                None,
            ),
            (
                "type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1777",
                Tmpfs,
                None,
                "/t",
                &["size=64m", "mode=1777"],
                None,
            ),
            // Docker's size units become the kernel's.
            (
                "type=tmpfs,dst=/t,tmpfs-size=1GB,notmpcopyup",
                Tmpfs,
                None,
                "/t",
                &["size=1g", "notmpcopyup"],
                None,
            ),
        ];
        for (spec, kind, src, dst, opts, relabel) in table {
            let r = parse_mount_flag(spec, cwd()).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(r.kind, *kind, "{spec}");
            assert_eq!(r.source.as_deref(), *src, "{spec}");
            assert_eq!(r.destination, *dst, "{spec}");
            assert_eq!(r.options, strs(opts), "{spec}");
            assert_eq!(r.relabel.as_deref(), *relabel, "{spec}");
        }
        let r = parse_mount_flag(
            "type=volume,src=v,dst=/v,volume-opt=o=uid=5,volume-label=a=b,volume-label=c",
            cwd(),
        )
        .unwrap();
        assert_eq!(r.volume_options.get("o").map(String::as_str), Some("uid=5"));
        assert_eq!(r.volume_labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(r.volume_labels.get("c").map(String::as_str), Some(""));
    }

    #[test]
    fn mount_flag_bad_values() {
        // (what was tried, what the error must say)
        let table: &[(&str, &str)] = &[
            ("type=foo,dst=/x", "mount type \"foo\" is not supported"),
            ("type=bind,src=/h", "target is required"),
            ("type=bind,dst=/x", "a bind mount needs source="),
            ("type=bind,src=,dst=/x", "a bind mount needs source="),
            (
                "type=bind,src=/h,dst=/x,bogus=1",
                "unknown option \"bogus\"",
            ),
            ("type=bind,src=/h,dst=/x,=", "unknown option \"\""),
            (
                "type=bind,src=/h,dst=/x,readonly=maybe",
                "readonly must be true or false, not \"maybe\"",
            ),
            (
                "type=bind,src=/h,dst=/x,ro=false,ro",
                "options \"rw, ro\" conflict",
            ),
            (
                "type=bind,src=/h,dst=/x,bind-propagation=weird",
                "bind-propagation \"weird\"",
            ),
            (
                "type=bind,src=/h,dst=/x,target=/y",
                "target is given more than once",
            ),
            (
                "type=bind,src=/h,src=/i,dst=/x",
                "source is given more than once",
            ),
            (
                "type=bind,src=/h,dst=rel",
                "container path \"rel\" must be absolute",
            ),
            (
                "type=bind,src=/h,dst=/x,tmpfs-size=1m",
                "tmpfs-size is only valid with type=tmpfs",
            ),
            (
                "type=tmpfs,dst=/x,bind-propagation=shared",
                "bind-propagation is only valid with type=bind",
            ),
            (
                "type=bind,src=/h,dst=/x,volume-nocopy",
                "volume-nocopy is only valid with type=volume",
            ),
            (
                "type=tmpfs,dst=/x,src=/y",
                "source is not supported with tmpfs mounts",
            ),
            (
                "type=tmpfs,dst=/x,tmpfs-size=abc",
                "size \"abc\" is not a size",
            ),
            (
                "type=tmpfs,dst=/x,tmpfs-size=12q",
                "size \"12q\" is not a size",
            ),
            (
                "type=tmpfs,dst=/x,tmpfs-mode=999",
                "mode \"999\" is not an octal mode",
            ),
            (
                "type=tmpfs,dst=/x,tmpfs-mode=",
                "mode \"\" is not an octal mode",
            ),
            (
                "type=tmpfs,dst=/x,relabel=shared",
                "relabel is not valid with type=tmpfs",
            ),
            (
                "type=volume,src=/abs,dst=/x",
                "\"/abs\" is not a volume name",
            ),
            ("type=volume,src=v,dst=/x,volume-label==b", "has no key"),
            (
                "type=bind,src=/h,dst=/x,relabel=odd",
                "relabel \"odd\" is not shared or private",
            ),
            ("type=bind,\"src=/h,dst=/x", "unterminated quote"),
            ("type=bind,src,dst=/x", "src needs a value"),
        ];
        for (spec, want) in table {
            let e = parse_mount_flag(spec, cwd()).expect_err(spec).to_string();
            assert!(
                e.starts_with(&format!("invalid --mount {spec:?}: ")),
                "{spec}: {e}"
            );
            assert!(e.contains(want), "{spec}: {e}");
        }
        // A volume driver other than local names the driver.
        let e = parse_mount_flag("type=volume,src=v,dst=/x,volume-driver=nfs", cwd()).unwrap_err();
        assert!(e.to_string().contains("\"nfs\""), "{e}");
    }

    #[test]
    fn tmpfs_flag_values() {
        // Good: (what was tried, destination, options)
        let good: &[(&str, &str, &[&str])] = &[
            ("/t", "/t", &[]),
            ("/t/", "/t", &[]),
            (
                "/t:ro,size=1m,mode=1777,noexec",
                "/t",
                &["ro", "size=1m", "mode=1777", "noexec"],
            ),
            (
                "/t:uid=1000,gid=1000,nr_inodes=10k,noatime,U",
                "/t",
                &["uid=1000", "gid=1000", "nr_inodes=10k", "noatime", "U"],
            ),
            ("/t:size=50%", "/t", &["size=50%"]),
        ];
        for (spec, dst, opts) in good {
            let r = parse_tmpfs_flag(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(r.kind, MountKind::Tmpfs);
            assert_eq!(r.destination, *dst, "{spec}");
            assert_eq!(r.options, strs(opts), "{spec}");
        }
        // Bad: (what was tried, what the error must say)
        let bad: &[(&str, &str)] = &[
            ("", "container directory cannot be empty"),
            ("rel", "container path \"rel\" must be absolute"),
            ("/t:bogus", "unknown option \"bogus\" for a tmpfs mount"),
            ("/t:a:b", "unknown option \"a:b\""),
            ("/t:ro,rw", "options \"ro, rw\" conflict"),
            ("/t:size=abc", "size \"abc\" is not a size"),
            ("/t:mode=8", "mode \"8\" is not an octal mode"),
            ("/t:uid=me", "uid \"me\" is not a numeric ID"),
            ("/t:rbind", "unknown option \"rbind\" for a tmpfs mount"),
            ("/t:z", "unknown option \"z\" for a tmpfs mount"),
        ];
        for (spec, want) in bad {
            let e = parse_tmpfs_flag(spec).expect_err(spec).to_string();
            assert!(
                e.starts_with(&format!("invalid --tmpfs {spec:?}: ")),
                "{spec}: {e}"
            );
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    #[test]
    fn duplicate_destinations_are_refused() {
        // Tried: a bind and a volume on /x, the second written as /x/.
        let a = parse_volume_flag("/h:/x", cwd()).unwrap();
        let b = parse_mount_flag("type=tmpfs,dst=/x/", cwd()).unwrap();
        let e = check_destinations(&[a.clone(), b]).unwrap_err();
        assert_eq!(e.to_string(), "/x: duplicate mount destination");
        check_destinations(&[a, parse_tmpfs_flag("/y").unwrap()]).unwrap();
    }

    /// The OCI options and inspect entries Podman 4.3 produced for the same flags.
    #[test]
    fn resolved_mounts_match_podman() {
        let (t, vols) = store();
        let host = t.path().join("host");
        fs::create_dir(&host).unwrap();
        let h = host.to_str().unwrap();
        let reqs = vec![
            parse_volume_flag("myvol:/data", cwd()).unwrap(),
            parse_volume_flag(&format!("{h}:/h:ro,z"), cwd()).unwrap(),
            parse_volume_flag(&format!("{h}:/h2:rw,shared,U,nosuid,nodev,noexec,Z"), cwd())
                .unwrap(),
            parse_mount_flag(
                &format!("type=bind,src={h},dst=/h3,readonly=true,bind-propagation=rslave"),
                cwd(),
            )
            .unwrap(),
            parse_volume_flag("v3:/v3:ro,noexec", cwd()).unwrap(),
            parse_volume_flag("/anon", cwd()).unwrap(),
            parse_tmpfs_flag("/t3").unwrap(),
            parse_tmpfs_flag("/t4:ro,size=1m,mode=1777,noexec").unwrap(),
            parse_mount_flag("type=tmpfs,target=/t5,tmpfs-mode=0700", cwd()).unwrap(),
        ];
        let m = vols.resolve(&reqs, None).unwrap();
        let oci_opts = |i: usize| -> Vec<String> {
            serde_json::from_value(m[i].oci["options"].clone()).unwrap()
        };
        assert_eq!(
            oci_opts(0),
            strs(&["rw", "rprivate", "nosuid", "nodev", "rbind"])
        );
        assert_eq!(oci_opts(1), strs(&["ro", "rprivate", "rbind"]));
        assert_eq!(
            oci_opts(2),
            strs(&["rw", "shared", "nosuid", "nodev", "noexec", "rbind"])
        );
        assert_eq!(oci_opts(3), strs(&["ro", "rslave", "rbind"]));
        assert_eq!(
            oci_opts(4),
            strs(&["ro", "noexec", "rprivate", "nosuid", "nodev", "rbind"])
        );
        assert_eq!(
            oci_opts(6),
            strs(&["rw", "rprivate", "nosuid", "nodev", "tmpcopyup"])
        );
        assert_eq!(
            oci_opts(7),
            strs(&[
                "ro",
                "size=1m",
                "mode=1777",
                "noexec",
                "rprivate",
                "nosuid",
                "nodev",
                "tmpcopyup"
            ])
        );
        assert_eq!(
            oci_opts(8),
            strs(&[
                "mode=0700",
                "rw",
                "rprivate",
                "nosuid",
                "nodev",
                "tmpcopyup"
            ])
        );

        let data = vols.data_dir("myvol");
        assert_eq!(
            m[0].oci,
            json!({"destination": "/data", "type": "bind", "source": data, "options": oci_opts(0)})
        );
        assert_eq!(m[6].oci["type"], "tmpfs");
        assert_eq!(m[6].oci["source"], "tmpfs");
        assert_eq!(
            m[0].inspect.as_ref().unwrap(),
            &json!({"Type": "volume", "Name": "myvol", "Source": data, "Destination": "/data",
                    "Driver": "local", "Mode": "", "Options": ["nosuid", "nodev", "rbind"],
                    "RW": true, "Propagation": "rprivate"})
        );
        assert_eq!(
            m[1].inspect.as_ref().unwrap(),
            &json!({"Type": "bind", "Source": h, "Destination": "/h", "Driver": "", "Mode": "z",
                    "Options": ["rbind"], "RW": false, "Propagation": "rprivate"})
        );
        assert_eq!(
            m[2].inspect.as_ref().unwrap(),
            &json!({"Type": "bind", "Source": h, "Destination": "/h2", "Driver": "", "Mode": "Z",
                    "Options": ["U", "nosuid", "nodev", "noexec", "rbind"], "RW": true,
                    "Propagation": "shared"})
        );
        assert_eq!(m[3].inspect.as_ref().unwrap()["Propagation"], "rslave");
        assert_eq!(m[3].inspect.as_ref().unwrap()["RW"], false);
        assert_eq!(
            m[4].inspect.as_ref().unwrap()["Options"],
            json!(["noexec", "nosuid", "nodev", "rbind"])
        );
        assert!(m[6].inspect.is_none(), "Podman lists no tmpfs in Mounts");
        assert!(m[2].chown && !m[1].chown);

        // Volumes were made on demand: named ones keep their name, the anonymous one
        // gets 64 hex digits.
        assert!(m[0].created && m[0].copy_up && !m[0].anonymous);
        assert_eq!(m[0].volume.as_deref(), Some("myvol"));
        let anon = m[5].volume.clone().unwrap();
        assert_eq!(anon.len(), 64);
        assert!(anon.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(m[5].anonymous);
        assert!(vols.get(&anon).unwrap().anonymous);
        let names: Vec<String> = vols.list().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names.len(), 3);

        // Resolving again reuses the named volume.
        let again = vols.resolve(&reqs[..1], None).unwrap();
        assert!(!again[0].created);
    }

    #[test]
    fn volume_o_options_apply_when_mounted() {
        // Tried: a volume created with -o o=noexec,uid=5 mounted without flags, and
        // with a flag saying exec.
        let (_t, vols) = store();
        let mut o = named("ox");
        o.options.insert("o".into(), "noexec,uid=5".into());
        vols.create(o).unwrap();
        let r = vols
            .resolve(&[parse_volume_flag("ox:/a", cwd()).unwrap()], None)
            .unwrap();
        assert_eq!(
            r[0].oci["options"],
            json!(["noexec", "rw", "rprivate", "nosuid", "nodev", "rbind"])
        );
        let r = vols
            .resolve(&[parse_volume_flag("ox:/a:exec", cwd()).unwrap()], None)
            .unwrap();
        assert_eq!(
            r[0].oci["options"],
            json!(["exec", "rw", "rprivate", "nosuid", "nodev", "rbind"])
        );
    }

    #[test]
    fn missing_bind_source_is_an_error() {
        // Tried: -v with a host path that does not exist.
        let (_t, vols) = store();
        let r = parse_volume_flag("/nonexistent-capsa:/x", cwd()).unwrap();
        let e = vols.resolve(&[r], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --volume \"/nonexistent-capsa:/x\": statfs /nonexistent-capsa"
        );
        let src = std::error::Error::source(&e).unwrap().to_string();
        assert!(src.contains("No such file"), "{src}");
    }

    #[test]
    fn failed_resolve_removes_the_volumes_it_made() {
        // Tried: a good named volume, then one whose volume-opt is invalid.
        let (_t, vols) = store();
        let reqs = vec![
            parse_volume_flag("first:/a", cwd()).unwrap(),
            parse_mount_flag("type=volume,src=second,dst=/b,volume-opt=bogus=1", cwd()).unwrap(),
        ];
        let e = vols.resolve(&reqs, None).unwrap_err();
        assert!(
            e.to_string().contains("invalid volume option \"bogus\""),
            "{e}"
        );
        assert!(vols.list().unwrap().is_empty(), "first was rolled back");
    }

    #[test]
    fn resolve_gives_new_volumes_the_container_user() {
        // Tried: --user 1000:1000 with a new volume (Podman records UID/GID and chowns).
        let (_t, vols) = store();
        let r = vols
            .resolve(
                &[parse_volume_flag("chv:/empty", cwd()).unwrap()],
                Some((1000, 1000)),
            )
            .unwrap();
        let v = vols.get("chv").unwrap();
        assert_eq!((v.uid, v.gid), (Some(1000), Some(1000)));
        assert!(!v.needs_chown);
        if is_root() {
            let m = fs::metadata(&r[0].source).unwrap();
            assert_eq!((m.uid(), m.gid()), (1000, 1000));
        }
    }

    #[test]
    fn create_inspect_and_conflicts() {
        let (t, vols) = store();
        let mut o = named("lab");
        o.labels.insert("a".into(), "b".into());
        o.labels.insert("c".into(), String::new());
        o.options.insert("o".into(), "uid=1000".into());
        o.chown_on_first_use = true;
        let v = vols.create(o).unwrap();
        assert_eq!(v.uid, Some(1000));
        assert!(!v.needs_chown, "an owner was given");
        assert_eq!(v.mountpoint, t.path().join("volumes/lab/_data"));
        assert!(v.mountpoint.is_dir());
        if is_root() {
            assert_eq!(fs::metadata(&v.mountpoint).unwrap().uid(), 1000);
        }
        let text = serde_json::to_string(&vols.get("lab").unwrap().inspect()).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        // Podman's field order, UID present, no NeedsChown.
        let order = [
            "\"Name\"",
            "\"Driver\"",
            "\"Mountpoint\"",
            "\"CreatedAt\"",
            "\"Labels\"",
            "\"Scope\"",
            "\"Options\"",
            "\"UID\"",
            "\"MountCount\"",
            "\"NeedsCopyUp\"",
        ];
        let pos: Vec<usize> = order
            .iter()
            .map(|k| text.find(k).unwrap_or_else(|| panic!("{k} in {text}")))
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(
            !text.contains("NeedsChown") && !text.contains("Anonymous") && !text.contains("GID")
        );
        assert_eq!(doc["Driver"], "local");
        assert_eq!(doc["Scope"], "local");
        assert_eq!(doc["Labels"], json!({"a": "b", "c": ""}));
        assert_eq!(doc["Options"], json!({"o": "uid=1000"}));
        assert!(DateTime::parse_from_rfc3339(doc["CreatedAt"].as_str().unwrap()).is_ok());

        // Tried: the same name again, without and with --ignore.
        let e = vols.create(named("lab")).unwrap_err();
        assert_eq!(e.to_string(), "volume with name lab already exists");
        let mut again = named("lab");
        again.ignore_existing = true;
        assert_eq!(vols.create(again).unwrap(), vols.get("lab").unwrap());

        // `volume create` without an owner: NeedsChown until the first container.
        let mut plain = named("plain");
        plain.chown_on_first_use = true;
        let p = vols.create(plain).unwrap();
        assert!(p.needs_chown && p.needs_copy_up);
        vols.chown_if_needed("plain", 1234, 1234).unwrap();
        assert!(!vols.get("plain").unwrap().needs_chown);
        if is_root() {
            assert_eq!(fs::metadata(&p.mountpoint).unwrap().uid(), 1234);
        }
        assert!(!vols.get("plain").unwrap().inspect().needs_chown);

        // No name: 64 hex digits, not anonymous.
        let g = vols.create(CreateOptions::default()).unwrap();
        assert_eq!(g.name.len(), 64);
        assert!(!g.anonymous);
        let a = vols
            .create(CreateOptions {
                anonymous: true,
                ..Default::default()
            })
            .unwrap();
        let doc = serde_json::to_value(a.inspect()).unwrap();
        assert_eq!(doc["Anonymous"], true);
        let names: Vec<String> = vols.list().unwrap().into_iter().map(|v| v.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "listed by name");
        assert_eq!(names.len(), 4);
    }

    #[test]
    fn bad_creates_are_refused() {
        let (_t, vols) = store();
        // (what was tried, what the error must say)
        let mut cases: Vec<(CreateOptions, &str)> = Vec::new();
        cases.push((named("bad!"), "invalid volume name \"bad!\""));
        cases.push((named("-x"), "invalid volume name"));
        cases.push((named("../x"), "invalid volume name"));
        let mut d = named("d");
        d.driver = "nfs".into();
        cases.push((d, "volume driver \"nfs\" is not available"));
        for (k, v) in [
            ("bogus", "1"),
            ("type", "tmpfs"),
            ("device", "tmpfs"),
            ("o", "size=1m"),
            ("uid", "me"),
            ("o", "uid=me"),
        ] {
            let mut o = named("o");
            o.options.insert(k.into(), v.into());
            cases.push((o, "invalid volume option"));
        }
        for (o, want) in cases {
            let what = format!("{:?} {:?} {:?}", o.name, o.driver, o.options);
            let e = vols.create(o).expect_err(&what).to_string();
            assert!(e.contains(want), "{what}: {e}");
        }
        assert!(vols.list().unwrap().is_empty(), "nothing half-made");
        assert!(fs::read_dir(&vols.tmp).unwrap().next().is_none());
    }

    #[test]
    fn lookup_by_prefix() {
        let (_t, vols) = store();
        for n in ["myvol", "myother", "solo"] {
            vols.create(named(n)).unwrap();
        }
        assert_eq!(vols.lookup("so").unwrap().name, "solo");
        assert_eq!(vols.lookup("myvol").unwrap().name, "myvol");
        assert!(matches!(vols.lookup("my"), Err(VolumeError::Ambiguous(_))));
        assert!(matches!(vols.lookup("zz"), Err(VolumeError::NotFound(_))));
        assert!(matches!(vols.lookup(""), Err(VolumeError::NotFound(_))));
        assert!(matches!(
            vols.get("../volumes"),
            Err(VolumeError::NotFound(_))
        ));
    }

    #[test]
    fn remove_refuses_volumes_in_use() {
        let (t, vols) = store();
        vols.create(named("used")).unwrap();
        fs::write(vols.data_dir("used").join("f"), "x").unwrap();
        let mut in_use = InUse::new();
        in_use.insert("used".into(), vec!["c1".into(), "c2".into()]);
        // Tried: removing a volume two containers use.
        let e = vols.remove("used", &in_use, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "volume used is being used by the following container(s): c1, c2"
        );
        assert!(vols.get("used").is_ok());
        // An empty user list is not in use.
        in_use.insert("used".into(), Vec::new());
        vols.create(named("other")).unwrap();
        vols.remove("other", &InUse::new(), false).unwrap();
        // With force it goes, data and all.
        in_use.insert("used".into(), vec!["c1".into()]);
        vols.remove("used", &in_use, true).unwrap();
        assert!(!t.path().join("volumes/used").exists());
        assert!(matches!(
            vols.remove("used", &in_use, true),
            Err(VolumeError::NotFound(_))
        ));
        assert!(vols.list().unwrap().is_empty());
        let leftovers: Vec<_> = fs::read_dir(&vols.tmp).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn prune_removes_only_unused_volumes() {
        let (_t, vols) = store();
        for n in ["a", "b", "keep"] {
            vols.create(named(n)).unwrap();
        }
        let mut lab = named("labelled");
        lab.labels.insert("tier".into(), "db".into());
        vols.create(lab).unwrap();
        fs::write(vols.data_dir("a").join("f"), vec![0u8; 1000]).unwrap();
        fs::create_dir(vols.data_dir("a").join("d")).unwrap();
        fs::write(vols.data_dir("a").join("d/g"), vec![0u8; 234]).unwrap();
        let mut in_use = InUse::new();
        in_use.insert("keep".into(), vec!["c".into()]);

        // Tried: a label filter first — only the labelled volume goes.
        let f = VolumeFilter::parse(&strs(&["label=tier=db"])).unwrap();
        let p = vols.prune(&f, &in_use).unwrap();
        assert_eq!(
            p,
            vec![Pruned {
                name: "labelled".into(),
                size: 0
            }]
        );

        let all = VolumeFilter::default();
        let cand: Vec<String> = vols
            .prune_candidates(&all, &in_use)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(cand, strs(&["a", "b"]));
        let p = vols.prune(&all, &in_use).unwrap();
        assert_eq!(
            p,
            vec![
                Pruned {
                    name: "a".into(),
                    size: 1234
                },
                Pruned {
                    name: "b".into(),
                    size: 0
                }
            ]
        );
        let left: Vec<String> = vols.list().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(left, strs(&["keep"]));
        assert!(vols.prune(&all, &in_use).unwrap().is_empty());
    }

    #[test]
    fn filters() {
        let (_t, vols) = store();
        let mut lab = named("lab");
        lab.labels.insert("a".into(), "b".into());
        lab.labels.insert("c".into(), String::new());
        lab.options.insert("o".into(), "uid=1000".into());
        vols.create(lab).unwrap();
        vols.create(named("myvol")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let anon = vols
            .create(CreateOptions {
                anonymous: true,
                ..Default::default()
            })
            .unwrap()
            .name;
        let mut in_use = InUse::new();
        in_use.insert("myvol".into(), vec!["c".into()]);
        // (filters tried, names expected)
        let table: &[(&[&str], &[&str])] = &[
            (&[], &["ANON", "lab", "myvol"]),
            // name is a regular expression, searched like Go's MatchString.
            (&["name=l"], &["lab", "myvol"]),
            (&["name=^l"], &["lab"]),
            (&["name=vol$"], &["myvol"]),
            (&["name=^m.*l$"], &["myvol"]),
            (&["name=^[a-f0-9]+$"], &["ANON"]),
            // The same key ORs...
            (&["name=^lab$", "name=^myvol$"], &["lab", "myvol"]),
            // ...different keys AND...
            (&["label=a=b", "name=my"], &[]),
            // ...and labels AND among themselves.
            (&["label=a", "label=c"], &["lab"]),
            (&["label=a", "label=zz"], &[]),
            (&["label=c="], &["lab"]),
            (&["label=a=c"], &[]),
            (&["label!=a"], &["ANON", "myvol"]),
            (&["dangling=true"], &["ANON", "lab"]),
            (&["dangling=1"], &["ANON", "lab"]),
            (&["dangling=false"], &["myvol"]),
            (&["driver=local"], &["ANON", "lab", "myvol"]),
            (&["driver=foo"], &[]),
            (&["opt=o=uid=1000"], &["lab"]),
            (&["opt=o"], &["lab"]),
            (&["anonymous=true"], &["ANON"]),
            (&["anonymous=false"], &["lab", "myvol"]),
            (&["scope=local"], &["ANON", "lab", "myvol"]),
            (&["until=1h"], &[]),
            (&["until=2999-01-01"], &["ANON", "lab", "myvol"]),
            (&["since=myvol"], &["ANON"]),
            (&["after=myvol", "dangling=false"], &[]),
        ];
        for (f, want) in table {
            let filter = VolumeFilter::parse(&strs(f)).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            let got: Vec<String> = vols
                .list_filtered(&filter, &in_use)
                .unwrap()
                .into_iter()
                .map(|v| {
                    if v.name == anon {
                        "ANON".into()
                    } else {
                        v.name
                    }
                })
                .collect();
            let mut got = got;
            got.sort();
            assert_eq!(got, strs(want), "{f:?}");
        }
        // Bad filters: (what was tried, what the error must say)
        let bad: &[(&str, &str)] = &[
            ("bogus=1", "\"bogus\" is an invalid volume filter"),
            ("label", "filters are KEY=VALUE"),
            ("dangling=x", "\"x\" is not true or false"),
            ("anonymous=maybe", "\"maybe\" is not true or false"),
            ("until=yesterday", "neither a duration"),
            ("name=(a|b)", "syntax not supported"),
        ];
        for (f, want) in bad {
            let e = VolumeFilter::parse(&strs(&[f])).expect_err(f).to_string();
            assert!(
                e.starts_with(&format!("invalid volume filter {f:?}")),
                "{e}"
            );
            assert!(e.contains(want), "{f}: {e}");
        }
        let e = vols
            .list_filtered(
                &VolumeFilter::parse(&strs(&["since=nope"])).unwrap(),
                &in_use,
            )
            .unwrap_err();
        assert!(matches!(e, VolumeError::NotFound(_)));
    }

    #[test]
    fn concurrent_creates_of_one_name_one_wins() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let handles: Vec<_> = (0..12)
            .map(|_| {
                let root = root.clone();
                std::thread::spawn(move || Volumes::new(&root).unwrap().create(named("race")))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{results:?}");
        for r in results.iter().filter(|r| r.is_err()) {
            assert!(
                matches!(r, Err(VolumeError::Exists(n)) if n == "race"),
                "{r:?}"
            );
        }
        // With --ignore every caller gets the one volume.
        let handles: Vec<_> = (0..12)
            .map(|_| {
                let root = root.clone();
                std::thread::spawn(move || {
                    let mut o = named("shared");
                    o.ignore_existing = true;
                    Volumes::new(&root).unwrap().create(o).unwrap()
                })
            })
            .collect();
        let recs: Vec<VolumeRecord> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(recs.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(Volumes::new(&root).unwrap().list().unwrap().len(), 2);
    }

    /// An image root with /data holding a file, a subdirectory with its own owner and
    /// mode, a symlink, a hard link, a fifo; and /var/run → /run.
    fn image_root(t: &Path) -> PathBuf {
        let root = t.join("rootfs");
        let data = root.join("data");
        fs::create_dir_all(data.join("sub")).unwrap();
        fs::write(data.join("file"), "hello\n").unwrap();
        fs::set_permissions(data.join("file"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::hard_link(data.join("file"), data.join("hard")).unwrap();
        symlink("file", data.join("link")).unwrap();
        fs::write(data.join("sub/deep"), "deep").unwrap();
        fs::set_permissions(data.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            data.join("pipe"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o711)).unwrap();
        if is_root() {
            std::os::unix::fs::lchown(data.join("sub"), Some(1000), Some(1001)).unwrap();
            std::os::unix::fs::lchown(data.join("link"), Some(7), Some(8)).unwrap();
            std::os::unix::fs::lchown(&data, Some(33), Some(33)).unwrap();
        }
        fs::create_dir_all(root.join("run/app")).unwrap();
        fs::write(root.join("run/app/pid"), "1").unwrap();
        fs::create_dir_all(root.join("var")).unwrap();
        symlink("/run", root.join("var/run")).unwrap();
        // A link that tries to leave the root resolves inside it.
        symlink("../../../../etc", root.join("escape")).unwrap();
        root
    }

    #[test]
    fn copy_up_copies_an_image_directory_once() {
        let (t, vols) = store();
        let root = image_root(t.path());
        vols.create(named("cu")).unwrap();
        // Tried: the first container mounting an empty new volume on /data.
        assert!(vols.copy_up("cu", &root, "/data").unwrap());
        let d = vols.data_dir("cu");
        assert_eq!(fs::read_to_string(d.join("file")).unwrap(), "hello\n");
        assert_eq!(fs::read_to_string(d.join("sub/deep")).unwrap(), "deep");
        assert_eq!(fs::read_link(d.join("link")).unwrap(), Path::new("file"));
        let f = fs::metadata(d.join("file")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o640);
        assert_eq!(
            f.ino(),
            fs::metadata(d.join("hard")).unwrap().ino(),
            "hard link kept"
        );
        let src_mtime = fs::metadata(root.join("data/file")).unwrap().mtime();
        assert_eq!(f.mtime(), src_mtime);
        use std::os::unix::fs::FileTypeExt;
        assert!(
            fs::symlink_metadata(d.join("pipe"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        let dm = fs::metadata(&d).unwrap();
        assert_eq!(
            dm.mode() & 0o7777,
            0o711,
            "the volume takes the directory's mode"
        );
        assert_eq!(fs::metadata(d.join("sub")).unwrap().mode() & 0o7777, 0o750);
        if is_root() {
            assert_eq!((dm.uid(), dm.gid()), (33, 33));
            let s = fs::metadata(d.join("sub")).unwrap();
            assert_eq!((s.uid(), s.gid()), (1000, 1001));
            let l = fs::symlink_metadata(d.join("link")).unwrap();
            assert_eq!((l.uid(), l.gid()), (7, 8));
        }
        assert!(!vols.get("cu").unwrap().needs_copy_up);
        let doc = serde_json::to_value(vols.get("cu").unwrap().inspect()).unwrap();
        assert!(doc.get("NeedsCopyUp").is_none());

        // Tried: a second container after the image content changed: no second copy.
        fs::write(root.join("data/new"), "n").unwrap();
        assert!(!vols.copy_up("cu", &root, "/data").unwrap());
        assert!(!d.join("new").exists());
    }

    #[test]
    fn copy_up_only_into_an_empty_volume() {
        let (t, vols) = store();
        let root = image_root(t.path());
        // Tried: a new volume someone already wrote to.
        vols.create(named("full")).unwrap();
        fs::write(vols.data_dir("full").join("mine"), "m").unwrap();
        assert!(!vols.copy_up("full", &root, "/data").unwrap());
        assert!(!vols.data_dir("full").join("file").exists());
        assert!(!vols.get("full").unwrap().needs_copy_up);

        // Tried: a nocopy volume.
        let mut o = named("nc");
        o.options.insert("nocopy".into(), String::new());
        vols.create(o).unwrap();
        assert!(!vols.copy_up("nc", &root, "/data").unwrap());
        assert!(fs::read_dir(vols.data_dir("nc")).unwrap().next().is_none());

        // Tried: an image with nothing at the destination: still waits for copy-up.
        vols.create(named("later")).unwrap();
        assert!(!vols.copy_up("later", &root, "/nothing/here").unwrap());
        assert!(vols.get("later").unwrap().needs_copy_up);
        // Tried: a file, not a directory, at the destination.
        assert!(!vols.copy_up("later", &root, "/data/file").unwrap());

        // Tried: a destination reached through an absolute symlink in the image.
        assert!(vols.copy_up("later", &root, "/var/run/app").unwrap());
        assert_eq!(
            fs::read_to_string(vols.data_dir("later").join("pid")).unwrap(),
            "1"
        );

        // A missing volume.
        assert!(matches!(
            vols.copy_up("ghost", &root, "/data"),
            Err(VolumeError::NotFound(_))
        ));
    }

    #[test]
    fn paths_resolve_inside_the_image() {
        let t = tempfile::tempdir().unwrap();
        let root = image_root(t.path());
        assert_eq!(resolve_in_root(&root, "/var/run/app"), root.join("run/app"));
        assert_eq!(resolve_in_root(&root, "/../../data"), root.join("data"));
        assert_eq!(
            resolve_in_root(&root, "/escape/passwd"),
            root.join("etc/passwd")
        );
        assert_eq!(resolve_in_root(&root, "/data/link"), root.join("data/file"));
    }

    #[test]
    fn in_use_comes_from_container_records() {
        let (t, vols) = store();
        vols.create(named("v1")).unwrap();
        vols.create(named("v2")).unwrap();
        let c = t.path().join("containers");
        for (id, rec) in [
            (
                "aaa",
                json!({"mounts": [{"source": vols.data_dir("v1"), "destination": "/x"}]}),
            ),
            (
                "bbb",
                json!({"Mounts": [{"Source": vols.data_dir("v1")}, {"Source": vols.data_dir("v2").join("sub")}]}),
            ),
            // Names that only look alike do not count.
            (
                "ccc",
                json!({"x": format!("{}x", vols.data_dir("v2").display()), "y": "v2"}),
            ),
        ] {
            fs::create_dir_all(c.join(id)).unwrap();
            fs::write(c.join(id).join("container.json"), rec.to_string()).unwrap();
        }
        // A container directory without a record (a create killed half way).
        fs::create_dir_all(c.join("ddd")).unwrap();
        let u = in_use_by_containers(t.path()).unwrap();
        assert_eq!(u.get("v1").unwrap(), &strs(&["aaa", "bbb"]));
        assert_eq!(u.get("v2").unwrap(), &strs(&["bbb"]));
        assert_eq!(u.len(), 2);
        let empty = tempfile::tempdir().unwrap();
        assert!(in_use_by_containers(empty.path()).unwrap().is_empty());
    }

    #[test]
    fn small_regexes() {
        // (pattern, text, matches)
        let table: &[(&str, &str, bool)] = &[
            ("l", "myvol", true),
            ("^l", "myvol", false),
            ("^my", "myvol", true),
            ("vol$", "myvol", true),
            ("vol$", "volx", false),
            ("^m.l", "myvol", false),
            ("^m.vol$", "myvol", true),
            ("^a*b+c?$", "aaabb", true),
            ("^a*b+c?$", "ac", false),
            ("^[0-9a-f]+$", "beef01", true),
            ("^[^0-9]+$", "abc1", false),
            ("^\\d\\d$", "42", true),
            ("a\\.b", "a.b", true),
            ("a\\.b", "axb", false),
            ("", "anything", true),
        ];
        for (p, s, want) in table {
            assert_eq!(Regex::new(p).unwrap().is_match(s), *want, "{p} on {s}");
        }
        for bad in ["(a)", "a|b", "a{2}", "*a", "[abc", "\\q"] {
            assert!(Regex::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn until_values() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s: &str| parse_until(s, now).unwrap().to_rfc3339();
        assert_eq!(at("1h30m"), "2024-05-01T10:30:00+00:00");
        assert_eq!(at("90s"), "2024-05-01T11:58:30+00:00");
        assert_eq!(at("1.5h"), "2024-05-01T10:30:00+00:00");
        assert_eq!(at("1700000000"), "2023-11-14T22:13:20+00:00");
        assert_eq!(at("2024-01-02T03:04:05Z"), "2024-01-02T03:04:05+00:00");
        assert!(parse_until("2024-01-02", now).is_ok());
        assert!(parse_until("1x", now).is_err());
        assert!(parse_until("h", now).is_err());
    }

    #[test]
    fn created_times_print_like_go() {
        let t =
            |s: &str| rfc3339_nano(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
        assert_eq!(
            t("2026-11-28T22:13:18.469736190Z"),
            "2026-11-28T22:13:18.46973619Z"
        );
        assert_eq!(t("2026-11-28T22:13:18Z"), "2026-11-28T22:13:18Z");
        assert_eq!(t("2026-11-28T22:13:18.5Z"), "2026-11-28T22:13:18.5Z");
    }
}
