//! User namespaces for containers (`--userns keep-id`, `--userns auto`), the way Podman
//! and containers/storage make them: the `--userns` grammar, the maps a container gets,
//! free ranges for `auto`, and the id-shifted copies of image layers that make files
//! show their true owners inside a nested user namespace.
//!
//! Ids here are those of the namespace capsa runs in: real host ids as root, ids of the
//! user's pause namespace rootless (0 = the user, 1… = the subordinate range). Layers are
//! stored with the ids the image gives them, so a container whose root is some other id
//! needs the layers shifted by its map. Idmapped mounts would avoid the copy, but they are
//! not available rootless; one copy per (layer, map) is kept next to the layer in the
//! store and shared by every container with that map, and goes when the layer goes.
//! What this module does not own: the record format (container::state), the mount itself
//! (container::rootfs) and the runtime configuration (container::spec).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::container::spec::{IdMap, SpecOptions};
use crate::container::state::{ContainerConfig, ContainerRecord};
use crate::engine::Engine;
use crate::store::copy::Copier;
use crate::store::lock::FileLock;
use crate::store::{ImageRecord, StoreError};

/// containers/storage's `auto_userns_min_size` and `auto_userns_max_size`.
pub const MIN_AUTO_SIZE: u32 = 1024;
pub const MAX_AUTO_SIZE: u32 = 65536;
/// The /etc/subuid and /etc/subgid user whose ranges root's `auto` namespaces use.
pub const SUBID_USER: &str = "containers";
/// The overflow id: never counted when an image's size is estimated (most images have a
/// `nobody` that would otherwise make every namespace 65536 ids).
const NOBODY: u32 = 65534;

#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error(
        "invalid --userns {0:?}: use host, keep-id[:uid=U,gid=G] or auto[:size=N,uidmapping=C:H:N,gidmapping=C:H:N]"
    )]
    BadMode(String),
    #[error("invalid --userns {mode:?}: {detail}")]
    BadOption { mode: String, detail: String },
    #[error("keep-id is only supported in rootless mode")]
    KeepIdAsRoot,
    #[error("no {kind} ranges found for user \"{user}\" in {file}")]
    NoSubids {
        kind: &'static str,
        user: String,
        file: String,
    },
    #[error("not enough free {kind}s for a user namespace of {size} ids: {free} left")]
    NotEnoughIds {
        kind: &'static str,
        size: u64,
        free: u64,
    },
    #[error("{path}: {kind} {id} has no mapping in the container's user namespace")]
    Unmapped {
        path: PathBuf,
        kind: &'static str,
        id: u32,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("listing containers: {0}")]
    Containers(String),
}

impl IdmapError {
    pub fn hint(&self) -> Option<String> {
        match self {
            IdmapError::KeepIdAsRoot => {
                Some("run capsa as a regular user, or use --userns auto as root".into())
            }
            IdmapError::NoSubids { user, .. } => Some(format!(
                "add a range for {user} to /etc/subuid and /etc/subgid, e.g. `{user}:2147483647:2147483648`"
            )),
            IdmapError::NotEnoughIds { .. } => Some(
                "remove containers that use --userns auto, or ask for fewer ids with auto:size=N"
                    .into(),
            ),
            IdmapError::Unmapped { .. } => {
                Some("give the namespace more ids with --userns auto:size=N".into())
            }
            _ => None,
        }
    }
}

fn io_at(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IdmapError + use<> {
    let path = path.to_path_buf();
    move |source| IdmapError::Io { what, path, source }
}

/// `--userns` as the user wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UsernsMode {
    /// No namespace of its own: capsa's (the host's as root, the pause process's rootless).
    #[default]
    Host,
    /// Rootless: the caller's uid (or `uid=`) is the same inside, the rest of the range
    /// around it.
    KeepId { uid: Option<u32>, gid: Option<u32> },
    /// A range of its own, disjoint from other `auto` containers.
    Auto(AutoOptions),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoOptions {
    /// `size=`; else estimated from the image.
    pub size: Option<u32>,
    /// `uidmapping=C:H:N`: container ids C… are host ids H… whatever was allocated.
    pub uid_mappings: Vec<IdMap>,
    pub gid_mappings: Vec<IdMap>,
}

impl UsernsMode {
    pub fn parse<'a>(s: &'a str) -> Result<UsernsMode, IdmapError> {
        let (name, opts) = match s.split_once(':') {
            Some((n, o)) => (n, Some(o)),
            None => (s, None),
        };
        let bad = |detail: String| IdmapError::BadOption {
            mode: s.to_string(),
            detail,
        };
        let options = |o: Option<&'a str>| -> Result<Vec<(&'a str, &'a str)>, IdmapError> {
            let Some(o) = o else { return Ok(Vec::new()) };
            o.split(',')
                .map(|kv| {
                    kv.split_once('=')
                        .filter(|(k, _)| !k.is_empty())
                        .ok_or_else(|| bad(format!("{kv:?} is not an option=value")))
                })
                .collect()
        };
        let number = |k: &str, v: &str| {
            v.parse::<u32>()
                .map_err(|_| bad(format!("{k} must be a number, not {v:?}")))
        };
        match name {
            "" | "host" if opts.is_none() => Ok(UsernsMode::Host),
            "keep-id" => {
                let (mut uid, mut gid) = (None, None);
                for (k, v) in options(opts)? {
                    match k {
                        "uid" => uid = Some(number(k, v)?),
                        "gid" => gid = Some(number(k, v)?),
                        _ => {
                            return Err(bad(format!(
                                "unknown option {k:?} (keep-id takes uid and gid)"
                            )));
                        }
                    }
                }
                Ok(UsernsMode::KeepId { uid, gid })
            }
            "auto" => {
                let mut a = AutoOptions::default();
                for (k, v) in options(opts)? {
                    match k {
                        "size" => {
                            let n = number(k, v)?;
                            if !(1..=MAX_AUTO_SIZE).contains(&n) {
                                return Err(bad(format!(
                                    "size must be between 1 and {MAX_AUTO_SIZE}, not {n}"
                                )));
                            }
                            a.size = Some(n);
                        }
                        "uidmapping" | "gidmapping" => {
                            let m = parse_mapping(v)
                                .ok_or_else(|| bad(format!("{k} must be CONTAINER:HOST:SIZE (numbers, SIZE at least 1), not {v:?}")))?;
                            if k == "uidmapping" {
                                a.uid_mappings.push(m);
                            } else {
                                a.gid_mappings.push(m);
                            }
                        }
                        _ => {
                            return Err(bad(format!(
                                "unknown option {k:?} (auto takes size, uidmapping and gidmapping)"
                            )));
                        }
                    }
                }
                Ok(UsernsMode::Auto(a))
            }
            _ => Err(IdmapError::BadMode(s.to_string())),
        }
    }
}

fn parse_mapping(v: &str) -> Option<IdMap> {
    let mut it = v.split(':').map(|x| x.parse::<u32>().ok());
    let (container, host, size) = (it.next()??, it.next()??, it.next()??);
    if it.next().is_some() || size == 0 {
        return None;
    }
    u32::try_from(container as u64 + size as u64 - 1).ok()?;
    u32::try_from(host as u64 + size as u64 - 1).ok()?;
    Some(IdMap {
        container,
        host,
        size,
    })
}

/// The maps of a container with a user namespace of its own, as kept in its record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMappings {
    pub uid_map: Vec<IdMap>,
    pub gid_map: Vec<IdMap>,
}

impl IdMappings {
    /// Names the shifted copies of layers made for these maps.
    pub fn key(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (tag, maps) in [("u", &self.uid_map), ("g", &self.gid_map)] {
            for m in maps {
                h.update(format!("{tag}{}:{}:{};", m.container, m.host, m.size));
            }
        }
        hex::encode(h.finalize())[..16].to_string()
    }

    /// Podman's `HostConfig.IDMappings` of `inspect`.
    pub fn inspect(&self) -> serde_json::Value {
        let f = |maps: &[IdMap]| -> Vec<String> {
            maps.iter()
                .map(|m| format!("{}:{}:{}", m.container, m.host, m.size))
                .collect()
        };
        serde_json::json!({"UidMap": f(&self.uid_map), "GidMap": f(&self.gid_map)})
    }
}

/// The id `id` (inside the container) has in capsa's namespace.
pub fn to_host(maps: &[IdMap], id: u32) -> Option<u32> {
    maps.iter()
        .find(|m| id >= m.container && id - m.container < m.size)
        .map(|m| m.host + (id - m.container))
}

/// The id that `id` (in capsa's namespace) has inside the container.
pub fn to_container(maps: &[IdMap], id: u32) -> Option<u32> {
    maps.iter()
        .find(|m| id >= m.host && id - m.host < m.size)
        .map(|m| m.container + (id - m.host))
}

/// Half-open ranges of ids.
type Ranges = Vec<(u64, u64)>;

fn subtract(from: &[(u64, u64)], take: &[(u64, u64)]) -> Ranges {
    let mut out: Ranges = from.to_vec();
    for &(ts, te) in take {
        out = out
            .into_iter()
            .flat_map(|(s, e)| {
                let mut parts = Vec::new();
                if ts >= e || te <= s {
                    parts.push((s, e));
                } else {
                    if s < ts {
                        parts.push((s, ts));
                    }
                    if te < e {
                        parts.push((te, e));
                    }
                }
                parts
            })
            .collect();
    }
    out.sort();
    out
}

/// Podman's keep-id map for container id `id` in a namespace of `max + 1` ids (0 is the
/// user): container 0… are 1…, `id` is 0, the ids above `id` are themselves.
pub fn keep_id_map(id: u32, max: u32) -> Vec<IdMap> {
    let mut out = Vec::new();
    if id.min(max) > 0 {
        out.push(IdMap {
            container: 0,
            host: 1,
            size: id.min(max),
        });
    }
    out.push(IdMap {
        container: id,
        host: 0,
        size: 1,
    });
    if max > id {
        out.push(IdMap {
            container: id + 1,
            host: id + 1,
            size: max - id,
        });
    }
    out
}

/// Container ids 0…size−1 (less those `extra` maps) onto the lowest free ids of `avail`
/// not in `used`, first fit across ranges, then `extra` as given.
pub fn allocate(
    kind: &'static str,
    size: u32,
    avail: &[(u64, u64)],
    used: &[(u64, u64)],
    extra: &[IdMap],
) -> Result<Vec<IdMap>, IdmapError> {
    let extra_host: Ranges = extra
        .iter()
        .map(|m| (m.host as u64, m.host as u64 + m.size as u64))
        .collect();
    let extra_ctr: Ranges = extra
        .iter()
        .map(|m| (m.container as u64, m.container as u64 + m.size as u64))
        .collect();
    let free = subtract(&subtract(avail, used), &extra_host);
    let wanted = subtract(&[(0, size as u64)], &extra_ctr);
    let need: u64 = wanted.iter().map(|(s, e)| e - s).sum();
    let have: u64 = free.iter().map(|(s, e)| e - s).sum();
    if need > have {
        return Err(IdmapError::NotEnoughIds {
            kind,
            size: size as u64,
            free: have,
        });
    }
    let mut out = Vec::new();
    let mut free_it = free.into_iter();
    let mut cur = free_it.next();
    for (mut cs, ce) in wanted {
        while cs < ce {
            let (hs, he) = cur.expect("enough free ids were counted");
            let n = (ce - cs).min(he - hs);
            out.push(IdMap {
                container: cs as u32,
                host: hs as u32,
                size: n as u32,
            });
            cs += n;
            cur = if hs + n < he {
                Some((hs + n, he))
            } else {
                free_it.next()
            };
        }
    }
    out.extend_from_slice(extra);
    out.sort_by_key(|m| m.container);
    Ok(out)
}

/// Lines of /proc/self/uid_map or gid_map: (inside, outside, count).
pub fn parse_proc_map(text: &str) -> Vec<(u64, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|x| x.parse::<u64>().ok());
            Some((it.next()??, it.next()??, it.next()??))
        })
        .collect()
}

fn own_map(kind: &str) -> Result<Vec<(u64, u64, u64)>, IdmapError> {
    let p = PathBuf::from(format!("/proc/self/{kind}_map"));
    let text = fs::read_to_string(&p).map_err(io_at("reading", &p))?;
    Ok(parse_proc_map(&text))
}

/// The ids `auto` may use: rootless, every id of capsa's namespace but 0 (the user);
/// as root, the ranges /etc/subuid and /etc/subgid give the user `containers`.
fn available(kind: &'static str, rootless: bool) -> Result<Ranges, IdmapError> {
    if rootless {
        let ranges: Ranges = own_map(kind)?
            .into_iter()
            .map(|(inside, _, n)| (inside, inside + n))
            .collect();
        return Ok(subtract(&ranges, &[(0, 1)]));
    }
    let file = if kind == "uid" {
        "/etc/subuid"
    } else {
        "/etc/subgid"
    };
    let text = fs::read_to_string(file).unwrap_or_default();
    let ranges: Ranges = crate::userns::parse_subid(&text, SUBID_USER, u32::MAX)
        .into_iter()
        .map(|r| (r.start, r.start + r.count))
        .collect();
    if ranges.is_empty() {
        return Err(IdmapError::NoSubids {
            kind: if kind == "uid" { "subuid" } else { "subgid" },
            user: SUBID_USER.into(),
            file: file.into(),
        });
    }
    Ok(ranges)
}

/// At `create`: checks `--userns`, picks the container's maps into `config.idmappings`
/// and, for keep-id without `-u`, the user it runs as. For `auto` the returned lock must
/// be held until the record is written: ranges in use are read from the records, so two
/// creates at once never pick the same one.
pub fn prepare_create(
    engine: &Engine,
    img: &ImageRecord,
    config: &mut ContainerConfig,
) -> Result<Option<FileLock>, IdmapError> {
    config.idmappings = None;
    let rootless = engine.store.rootless();
    match UsernsMode::parse(&config.userns)? {
        UsernsMode::Host => Ok(None),
        UsernsMode::KeepId { uid, gid } => {
            if !rootless {
                return Err(IdmapError::KeepIdAsRoot);
            }
            let (uids, gids) = (own_map("uid")?, own_map("gid")?);
            let me = |m: &[(u64, u64, u64)]| {
                m.iter().find(|l| l.0 == 0).map(|l| l.1 as u32).unwrap_or(0)
            };
            let top = |m: &[(u64, u64, u64)]| {
                m.iter()
                    .map(|l| l.0 + l.2)
                    .max()
                    .unwrap_or(1)
                    .saturating_sub(1)
                    .min(u32::MAX as u64) as u32
            };
            let (u, g) = (uid.unwrap_or(me(&uids)), gid.unwrap_or(me(&gids)));
            config.idmappings = Some(IdMappings {
                uid_map: keep_id_map(u, top(&uids)),
                gid_map: keep_id_map(g, top(&gids)),
            });
            if config.user.is_empty() {
                config.user = format!("{u}:{g}");
            }
            Ok(None)
        }
        UsernsMode::Auto(a) => {
            let lock_path = engine.store.root().join("userns.lock");
            let lock = FileLock::exclusive(&lock_path).map_err(io_at("locking", &lock_path))?;
            let size = match a.size {
                Some(n) => n,
                None => estimate_size(engine, img, config)?,
            };
            let mut used_u = Ranges::new();
            let mut used_g = Ranges::new();
            let records = engine
                .containers()
                .and_then(|c| Ok(c.list()?))
                .map_err(|e| IdmapError::Containers(e.to_string()))?;
            for r in records {
                if !matches!(UsernsMode::parse(&r.config.userns), Ok(UsernsMode::Auto(_))) {
                    continue;
                }
                if let Some(m) = &r.config.idmappings {
                    let span = |m: &IdMap| (m.host as u64, m.host as u64 + m.size as u64);
                    used_u.extend(m.uid_map.iter().map(span));
                    used_g.extend(m.gid_map.iter().map(span));
                }
            }
            let uid_map = allocate(
                "uid",
                size,
                &available("uid", rootless)?,
                &used_u,
                &a.uid_mappings,
            )?;
            let gid_map = allocate(
                "gid",
                size,
                &available("gid", rootless)?,
                &used_g,
                &a.gid_mappings,
            )?;
            config.idmappings = Some(IdMappings { uid_map, gid_map });
            Ok(Some(lock))
        }
    }
}

/// containers/storage's estimate of the ids an image needs: one more than the largest
/// owner of a file in its layers or id in its /etc/passwd and /etc/group (the `nobody`
/// entries of those files aside), at least [`MIN_AUTO_SIZE`]; a numeric `-u` counts too.
fn estimate_size(
    engine: &Engine,
    img: &ImageRecord,
    config: &ContainerConfig,
) -> Result<u32, IdmapError> {
    let lowers = engine
        .rootfs_lowers(img)
        .map_err(|e| IdmapError::Containers(e.to_string()))?;
    let mut max = 0u32;
    for l in &lowers {
        max = max.max(max_owner(l)?);
    }
    for file in ["etc/passwd", "etc/group"] {
        if let Some(text) = lowers
            .iter()
            .rev()
            .find_map(|l| fs::read_to_string(l.join(file)).ok())
        {
            max = max.max(max_user_file_id(&text));
        }
    }
    for part in config.user.split(':') {
        if let Ok(id) = part.parse::<u32>() {
            max = max.max(id);
        }
    }
    Ok(max.saturating_add(1).clamp(MIN_AUTO_SIZE, MAX_AUTO_SIZE))
}

/// The largest id in a passwd or group file (fields 3 and 4), `nobody` aside.
fn max_user_file_id(text: &str) -> u32 {
    let mut max = 0;
    for f in text.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
        if f.len() < 3 || matches!(f[0], "nobody" | "nogroup") {
            continue;
        }
        for v in f.iter().skip(2).take(2) {
            if let Ok(id) = v.parse::<u32>()
                && id != NOBODY
            {
                max = max.max(id);
            }
        }
    }
    max
}

fn max_owner(dir: &Path) -> Result<u32, IdmapError> {
    let mut max = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io_at("reading", &d))? {
            let e = e.map_err(io_at("reading", &d))?;
            let m = e.metadata().map_err(io_at("reading", &e.path()))?;
            // Files of `nobody` count (containers/storage counts every owner in a
            // layer): a copy could not give them an owner otherwise.
            max = max.max(m.uid()).max(m.gid());
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(max)
}

/// At start: the directories the root filesystem stacks. Without maps, `lowers` as
/// they are; with maps, their shifted copies (made on first use), and the container's
/// upper and work directories are given to its root, so `/` is root's inside.
pub fn container_lowers(
    engine: &Engine,
    r: &ContainerRecord,
    lowers: Vec<PathBuf>,
) -> Result<Vec<PathBuf>, IdmapError> {
    let Some(maps) = &r.config.idmappings else {
        return Ok(lowers);
    };
    let cdir = engine.container_dir(&r.id);
    let root = (to_host(&maps.uid_map, 0), to_host(&maps.gid_map, 0));
    for d in [cdir.join("upper"), cdir.join("work")] {
        fs::create_dir_all(&d).map_err(io_at("creating", &d))?;
        std::os::unix::fs::lchown(&d, root.0, root.1)
            .map_err(io_at("changing the owner of", &d))?;
    }
    lowers.iter().map(|l| shifted_layer(l, maps)).collect()
}

/// The copy of layer tree `diff` (`layers/<driver>/<id>/diff`) with every owner moved
/// by `maps`: `layers/<driver>/<id>/idmap/<key>`. Built under a lock per copy into
/// `.tmp-<key>` and renamed into place, so a killed build is never seen (the next one
/// starts over); it goes with the layer when garbage collection removes that.
pub fn shifted_layer(diff: &Path, maps: &IdMappings) -> Result<PathBuf, IdmapError> {
    let layer = diff.parent().unwrap_or(diff);
    let cache = layer.join("idmap");
    let key = maps.key();
    let dest = cache.join(&key);
    if dest.is_dir() {
        return Ok(dest);
    }
    fs::create_dir_all(&cache).map_err(io_at("creating", &cache))?;
    let lock_path = cache.join(format!(".{key}.lock"));
    let _lock = FileLock::exclusive(&lock_path).map_err(io_at("locking", &lock_path))?;
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = cache.join(format!(".tmp-{key}"));
    crate::store::remove_tree(&tmp);
    // containers/storage's chown-by-maps: owners moved, everything else kept,
    // overlayfs' whiteouts and opaque markers included.
    let map = |uid, gid| Some((to_host(&maps.uid_map, uid)?, to_host(&maps.gid_map, gid)?));
    let mut copier = Copier::for_layer(Some(&map));
    if let Err(e) = copier.copy_entry(diff, &tmp) {
        crate::store::remove_tree(&tmp);
        return Err(match (copier.unmapped.take(), e) {
            (Some((path, kind, id)), _) => IdmapError::Unmapped { path, kind, id },
            (
                None,
                StoreError::Io {
                    action,
                    path,
                    source,
                },
            ) => IdmapError::Io {
                what: action,
                path,
                source,
            },
            (None, e) => IdmapError::Io {
                what: "copying",
                path: diff.to_path_buf(),
                source: io::Error::other(e.to_string()),
            },
        });
    }
    fs::rename(&tmp, &dest).map_err(io_at("renaming into place", &dest))?;
    Ok(dest)
}

/// Shifted copies of the layers of `lowers` that exist (for tests and `inspect`).
pub fn cached_copies(layers_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for l in fs::read_dir(layers_dir).into_iter().flatten().flatten() {
        for c in fs::read_dir(l.path().join("idmap"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !c.file_name().to_string_lossy().starts_with('.') {
                out.push(c.path());
            }
        }
    }
    out.sort();
    out
}

/// At start and exec: the container's maps into the runtime configuration, keep-id's
/// passwd and group entries and `HOME` as Podman makes them, and the owner of volumes
/// made for the container (their data directories are created by capsa, owned by ids
/// that mean nothing inside the namespace).
pub fn apply_to_spec(
    engine: &Engine,
    r: &ContainerRecord,
    merged: &Path,
    o: &mut SpecOptions,
) -> Result<(), IdmapError> {
    let Some(maps) = &r.config.idmappings else {
        return Ok(());
    };
    o.user_ns = Some((maps.uid_map.clone(), maps.gid_map.clone()));
    let user = (to_host(&maps.uid_map, o.uid), to_host(&maps.gid_map, o.gid));
    let vols = crate::volume::Volumes::new(engine.store.root())
        .map_err(|e| IdmapError::Containers(e.to_string()))?;
    for m in &r.config.mounts {
        let Some(name) = &m.volume else { continue };
        if m.chown || m.created {
            // Before the launch's own call, which would use the unmapped ids.
            vols.chown_if_needed(name, user.0.unwrap_or(0), user.1.unwrap_or(0))
                .map_err(|e| IdmapError::Containers(e.to_string()))?;
        }
        if m.chown || (m.created && r.started_at.is_none()) {
            let p = Path::new(&m.source);
            std::os::unix::fs::lchown(p, user.0, user.1)
                .map_err(io_at("changing the owner of", p))?;
        }
    }
    // The entries are for the caller's own uid (namespace id 0), as Podman adds them;
    // keep-id:uid= and -u of another user get none.
    if let Ok(UsernsMode::KeepId { uid: None, .. }) = UsernsMode::parse(&r.config.userns)
        && user.0 == Some(0)
    {
        let home = if r.config.workdir.is_empty() {
            "/".to_string()
        } else {
            r.config.workdir.clone()
        };
        add_keep_id_entries(merged, o.uid, o.gid, &home)?;
        if !o.env.iter().any(|e| e.starts_with("HOME=")) {
            o.env.push(format!("HOME={home}"));
        }
    }
    Ok(())
}

/// Host name of a uid or gid from /etc/passwd or /etc/group (visible inside the
/// rootless namespace: it is the host's file system).
fn host_name(file: &str, id: u32) -> Option<String> {
    fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == id.to_string()).then(|| f[0].to_string())
    })
}

/// Podman's entries for the keep-id user when the image lacks them:
/// `name:*:uid:gid::home:/bin/sh` and `group:x:gid:name`, written into the container's
/// own files (the overlay copies them up). Files reached through a symlink that leaves
/// the root filesystem are left alone.
fn add_keep_id_entries(merged: &Path, uid: u32, gid: u32, home: &str) -> Result<(), IdmapError> {
    let name = host_name("/etc/passwd", uid).unwrap_or_else(|| uid.to_string());
    let group = host_name("/etc/group", gid).unwrap_or_else(|| name.clone());
    let root = fs::canonicalize(merged).map_err(io_at("resolving", merged))?;
    let add = |file: &str, line: String| -> Result<(), IdmapError> {
        let p = merged.join(file);
        let Ok(real) = fs::canonicalize(&p) else {
            return Ok(());
        };
        if !real.starts_with(&root) || !real.is_file() {
            return Ok(());
        }
        let text = fs::read_to_string(&real).map_err(io_at("reading", &real))?;
        let id = line.split(':').nth(2).unwrap_or_default().to_string();
        if text
            .lines()
            .any(|l| l.split(':').nth(2) == Some(id.as_str()))
        {
            return Ok(());
        }
        let sep = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        use std::io::Write;
        fs::OpenOptions::new()
            .append(true)
            .open(&real)
            .and_then(|mut f| f.write_all(format!("{sep}{line}\n").as_bytes()))
            .map_err(io_at("writing", &real))
    };
    add(
        "etc/passwd",
        format!("{name}:*:{uid}:{gid}::{home}:/bin/sh"),
    )?;
    add("etc/group", format!("{group}:x:{gid}:{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    fn m(container: u32, host: u32, size: u32) -> IdMap {
        IdMap {
            container,
            host,
            size,
        }
    }

    #[test]
    fn modes_parse_like_podman() {
        assert_eq!(UsernsMode::parse("").unwrap(), UsernsMode::Host);
        assert_eq!(UsernsMode::parse("host").unwrap(), UsernsMode::Host);
        assert_eq!(
            UsernsMode::parse("keep-id").unwrap(),
            UsernsMode::KeepId {
                uid: None,
                gid: None
            }
        );
        assert_eq!(
            UsernsMode::parse("keep-id:uid=5,gid=6").unwrap(),
            UsernsMode::KeepId {
                uid: Some(5),
                gid: Some(6)
            }
        );
        assert_eq!(
            UsernsMode::parse("auto:size=2000,uidmapping=0:10:1,gidmapping=5:7:2").unwrap(),
            UsernsMode::Auto(AutoOptions {
                size: Some(2000),
                uid_mappings: vec![m(0, 10, 1)],
                gid_mappings: vec![m(5, 7, 2)],
            })
        );
        for (bad, says) in [
            ("keep-id:uid=x", "uid must be a number, not \"x\""),
            ("keep-id:foo=1", "unknown option \"foo\""),
            ("keep-id:uid", "is not an option=value"),
            ("auto:size=0", "size must be between 1 and 65536, not 0"),
            ("auto:size=65537", "size must be between 1 and 65536"),
            ("auto:size=-1", "size must be a number"),
            (
                "auto:uidmapping=0:5:x",
                "uidmapping must be CONTAINER:HOST:SIZE",
            ),
            (
                "auto:gidmapping=0:5:0",
                "gidmapping must be CONTAINER:HOST:SIZE",
            ),
            ("auto:uidmapping=4294967295:5:2", "uidmapping must be"),
            ("auto:", "is not an option=value"),
            ("private", "use host, keep-id"),
            ("ns:/proc/1/ns/user", "use host, keep-id"),
            ("host:x", "use host, keep-id"),
            ("nonsense", "use host, keep-id"),
        ] {
            let e = UsernsMode::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.starts_with(&format!("invalid --userns {bad:?}")), "{e}");
        }
    }

    #[test]
    fn keep_id_maps_match_podman() {
        // Podman 4.3, rootless as uid 1001 with 65536 subordinate ids.
        assert_eq!(
            keep_id_map(1001, 65536),
            [m(0, 1, 1001), m(1001, 0, 1), m(1002, 1002, 64535)]
        );
        // keep-id:uid=5: 0 1 5 / 5 0 1 / 6 6 65531.
        assert_eq!(
            keep_id_map(5, 65536),
            [m(0, 1, 5), m(5, 0, 1), m(6, 6, 65531)]
        );
        assert_eq!(keep_id_map(0, 65536), [m(0, 0, 1), m(1, 1, 65536)]);
        // Without subordinate ids only the user itself is mapped.
        assert_eq!(keep_id_map(1000, 0), [m(1000, 0, 1)]);
        assert_eq!(to_host(&keep_id_map(1001, 65536), 0), Some(1));
        assert_eq!(to_host(&keep_id_map(1001, 65536), 1001), Some(0));
        assert_eq!(to_host(&keep_id_map(1001, 65536), 2000), Some(2000));
        assert_eq!(to_host(&keep_id_map(1001, 65536), 65537), None);
    }

    #[test]
    fn auto_ranges_are_first_fit_and_disjoint() {
        let avail = [(1, 65537)];
        let a = allocate("uid", 1024, &avail, &[], &[]).unwrap();
        assert_eq!(a, [m(0, 1, 1024)]);
        let b = allocate("uid", 2000, &avail, &[(1, 1025)], &[]).unwrap();
        assert_eq!(b, [m(0, 1025, 2000)]);
        // A hole left by a removed container is reused first; a namespace may span ranges.
        let c = allocate("uid", 1500, &avail, &[(1025, 3025), (3500, 4000)], &[]).unwrap();
        assert_eq!(c, [m(0, 1, 1024), m(1024, 3025, 475), m(1499, 4000, 1)]);
        // Several subordinate ranges.
        let d = allocate("gid", 10, &[(100, 104), (200, 300)], &[], &[]).unwrap();
        assert_eq!(d, [m(0, 100, 4), m(4, 200, 6)]);
        // uidmapping= takes its container ids out of the allocation and its host ids
        // out of the pool.
        let e = allocate("uid", 1024, &avail, &[], &[m(0, 5, 1)]).unwrap();
        assert_eq!(e, [m(0, 5, 1), m(1, 1, 4), m(5, 6, 1019)]);
        let err = allocate("uid", 65536, &avail, &[(1, 2)], &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("not enough free uids for a user namespace of 65536 ids: 65535 left"),
            "{err}"
        );
        assert!(err.hint().is_some());
    }

    #[test]
    fn range_subtraction() {
        assert_eq!(subtract(&[(0, 10)], &[(3, 5)]), [(0, 3), (5, 10)]);
        assert_eq!(subtract(&[(0, 10)], &[(0, 10)]), []);
        assert_eq!(
            subtract(&[(0, 10), (20, 30)], &[(5, 25)]),
            [(0, 5), (25, 30)]
        );
        assert_eq!(subtract(&[(0, 10)], &[(10, 20)]), [(0, 10)]);
    }

    #[test]
    fn proc_maps_and_user_files() {
        let p =
            parse_proc_map("         0       1001          1\n         1     100000      65536\n");
        assert_eq!(p, [(0, 1001, 1), (1, 100000, 65536)]);
        let passwd = "root:x:0:0::/root:/bin/sh\nwww:x:33:2000::/:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
        assert_eq!(max_user_file_id(passwd), 2000);
        let group = "root:x:0:\nnogroup:x:65534:\nstaff:x:50:www\n";
        assert_eq!(max_user_file_id(group), 50);
    }

    #[test]
    fn cache_keys_tell_maps_apart() {
        let a = IdMappings {
            uid_map: vec![m(0, 1, 1024)],
            gid_map: vec![m(0, 1, 1024)],
        };
        let mut b = a.clone();
        b.gid_map[0].host = 1025;
        assert_eq!(a.key(), a.clone().key());
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key().len(), 16);
        assert_eq!(
            a.inspect(),
            serde_json::json!({"UidMap": ["0:1:1024"], "GidMap": ["0:1:1024"]})
        );
    }

    #[test]
    fn keep_id_entries_are_added_once_and_stay_inside() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("merged");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh").unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        add_keep_id_entries(&root, 4242, 4343, "/work").unwrap();
        add_keep_id_entries(&root, 4242, 4343, "/work").unwrap();
        let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert_eq!(
            passwd,
            "root:x:0:0::/root:/bin/sh\n4242:*:4242:4343::/work:/bin/sh\n"
        );
        let group = fs::read_to_string(root.join("etc/group")).unwrap();
        assert_eq!(group, "root:x:0:\n4242:x:4343:4242\n");
        // A passwd that points out of the root file system is not written.
        let outside = t.path().join("host-passwd");
        fs::write(&outside, "").unwrap();
        fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/passwd")).unwrap();
        add_keep_id_entries(&root, 4242, 4343, "/").unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "");
    }

    /// The shifted copy keeps everything but the owners, which move by the map; it is
    /// built once, atomically, and a leftover of a killed build is not used.
    #[test]
    fn shifted_copy_keeps_the_tree() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP shifted_copy_keeps_the_tree: needs root (chown to any id)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let diff = t.path().join("layer/diff");
        fs::create_dir_all(diff.join("bin")).unwrap();
        fs::create_dir_all(diff.join("home/www")).unwrap();
        fs::create_dir_all(diff.join("gone")).unwrap();
        fs::write(diff.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(diff.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(diff.join("bin/tool"), diff.join("bin/tool2")).unwrap();
        std::os::unix::fs::symlink("tool", diff.join("bin/link")).unwrap();
        fs::write(diff.join("home/www/index"), b"hi").unwrap();
        std::os::unix::fs::lchown(diff.join("home/www"), Some(33), Some(34)).unwrap();
        std::os::unix::fs::lchown(diff.join("home/www/index"), Some(33), Some(34)).unwrap();
        std::os::unix::fs::lchown(diff.join("bin/link"), Some(7), Some(8)).unwrap();
        fs::set_permissions(diff.join("home"), fs::Permissions::from_mode(0o711)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            diff.join("deleted"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        let opaque = rustix::fs::lsetxattr(
            diff.join("gone"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        let maps = IdMappings {
            uid_map: vec![m(0, 100000, 65536)],
            gid_map: vec![m(0, 200000, 65536)],
        };
        // A build that was killed half way.
        let cache = t.path().join("layer/idmap");
        fs::create_dir_all(cache.join(format!(".tmp-{}/junk", maps.key()))).unwrap();
        let copy = shifted_layer(&diff, &maps).unwrap();
        assert_eq!(copy, cache.join(maps.key()));
        assert!(!cache.join(format!(".tmp-{}", maps.key())).exists());
        assert!(!copy.join("junk").exists());
        let md = |p: &str| fs::symlink_metadata(copy.join(p)).unwrap();
        assert_eq!((md("").uid(), md("").gid()), (100000, 200000));
        assert_eq!(
            (md("bin/tool").uid(), md("bin/tool").gid()),
            (100000, 200000)
        );
        assert_eq!(
            md("bin/tool").mode() & 0o7777,
            0o4755,
            "set-id bits survive"
        );
        assert_eq!(
            md("bin/tool").ino(),
            md("bin/tool2").ino(),
            "hard links stay"
        );
        assert_eq!(
            fs::read_link(copy.join("bin/link")).unwrap(),
            Path::new("tool")
        );
        assert_eq!(
            (md("bin/link").uid(), md("bin/link").gid()),
            (100007, 200008)
        );
        assert_eq!(
            (md("home/www").uid(), md("home/www").gid()),
            (100033, 200034)
        );
        assert_eq!(fs::read(copy.join("home/www/index")).unwrap(), b"hi");
        assert_eq!(md("home").mode() & 0o7777, 0o711);
        assert!(md("deleted").file_type().is_char_device() && md("deleted").rdev() == 0);
        assert_eq!(
            md("home/www/index").mtime(),
            fs::metadata(diff.join("home/www/index")).unwrap().mtime()
        );
        if opaque {
            let mut v = [0u8; 8];
            let n =
                rustix::fs::lgetxattr(copy.join("gone"), "trusted.overlay.opaque", &mut v).unwrap();
            assert_eq!(&v[..n], b"y");
        }
        // Built once: a second call finds it.
        fs::write(copy.join("marker"), b"").unwrap();
        assert_eq!(shifted_layer(&diff, &maps).unwrap(), copy);
        assert!(copy.join("marker").exists());
        assert_eq!(cached_copies(t.path()), vec![copy]);
        // An owner the map does not cover fails the build and leaves nothing.
        let small = IdMappings {
            uid_map: vec![m(0, 100000, 10)],
            gid_map: vec![m(0, 200000, 65536)],
        };
        let e = shifted_layer(&diff, &small).unwrap_err();
        assert!(e.to_string().contains("uid 33 has no mapping"), "{e}");
        assert!(!cache.join(small.key()).exists());
        assert!(!cache.join(format!(".tmp-{}", small.key())).exists());
    }
}
