//! Applies one layer tarball (already decompressed) to a directory.
//!
//! Every entry path is checked before anything is written: absolute paths, `..`
//! components, and writes through a symlink or hard link that would leave the layer are
//! refused, so a hostile layer cannot touch anything outside the directory it is applied
//! to. Whiteouts are either applied (vfs: the directory holds the whole root filesystem)
//! or recorded in overlayfs form (overlay: the directory holds this layer's diff only).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const MAX_SYMLINK_HOPS: usize = 40;

/// How whiteouts are represented in the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The destination is a full root filesystem: whiteouts delete what they name.
    Apply,
    /// The destination is an overlayfs upper/lower diff: whiteouts become 0/0 character
    /// devices, opaque directories get the `<prefix>overlay.opaque` xattr.
    Overlay { xattr_prefix: &'static str },
}

#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    pub whiteouts: WhiteoutMode,
    /// Running without real root: device nodes cannot be made and are skipped.
    pub rootless: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// Bytes of regular file content written.
    pub size: u64,
    pub entries: u64,
    pub skipped_devices: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("reading layer tarball: {0}")]
    Tar(#[source] io::Error),
    #[error("layer entry {0:?} has an absolute path")]
    AbsolutePath(String),
    #[error("layer entry {0:?} contains '..'")]
    DotDot(String),
    #[error(
        "layer entry {entry:?} would be written through symlink {link:?} -> {target:?}, which leads out of the layer"
    )]
    EscapingSymlink {
        entry: String,
        link: String,
        target: String,
    },
    #[error("layer entry {entry:?} is a hard link to {target:?}, which leads out of the layer")]
    EscapingHardlink { entry: String, target: String },
    #[error("layer entry {entry:?} is a hard link to {target:?}, which is not in the layer")]
    MissingHardlinkTarget { entry: String, target: String },
    #[error("layer entry {entry:?}: {parent:?} is not a directory")]
    NotADirectory { entry: String, parent: String },
    #[error("layer entry {entry:?}: too many levels of symbolic links")]
    SymlinkLoop { entry: String },
    #[error(
        "layer entry {entry:?} is owned by {uid}:{gid}, which is not mapped in the user namespace"
    )]
    UnmappedOwner { entry: String, uid: u64, gid: u64 },
    #[error("writing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Applies the tar stream `r` to `dest` (which must exist).
pub fn unpack<R: Read>(r: R, dest: &Path, opts: UnpackOptions) -> Result<UnpackStats, UnpackError> {
    let mut archive = tar::Archive::new(r);
    let mut stats = UnpackStats::default();
    let mut created: HashSet<PathBuf> = HashSet::new();
    // Directory times are set last: writing children would change them again.
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    let mut writers = Writers::new();
    // Directories already resolved (relative path -> real path). Only this unpack
    // changes the tree, and anything that removes a path clears the cache.
    let mut dirs: HashMap<PathBuf, PathBuf> = HashMap::new();
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        let raw_path = entry.path_bytes().into_owned();
        let ename = String::from_utf8_lossy(&raw_path).into_owned();
        let rel = match clean_path(&raw_path, &ename)? {
            Some(rel) => rel,
            None => continue, // the layer root itself
        };
        stats.entries += 1;
        let name = rel
            .file_name()
            .expect("cleaned path has a name")
            .to_os_string();
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        writers.settle(dest, &rel)?;
        let parent = match dirs.get(parent_rel) {
            Some(p) => p.clone(),
            None => {
                let p = resolve_dir(dest, parent_rel, &ename, true)?;
                dirs.insert(parent_rel.to_path_buf(), p.clone());
                p
            }
        };

        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            writers.barrier()?;
            dirs.clear();
            apply_whiteout(&parent, parent_rel, hidden, &name, &created, opts)?;
            continue;
        }

        let target = parent.join(&name);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let (uid, gid) = owner(&mut entry, &header);
        let mode = header.mode().map_err(UnpackError::Tar)? & 0o7777;
        let mtime = header.mtime().unwrap_or(0);
        let xattrs = xattrs(&mut entry);

        if kind.is_dir() {
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    dirs.clear();
                    remove_any(&target)?;
                    mkdir(&target)?;
                }
                Err(_) => mkdir(&target)?,
            }
            dirs.insert(rel.clone(), target.clone());
            set_owner(&target, uid, gid, &ename)?;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(io_err(&target))?;
            set_xattrs(&target, &xattrs);
            dir_times.push((target, mtime));
            created.insert(rel);
            continue;
        }

        if let Ok(m) = fs::symlink_metadata(&target) {
            if m.is_dir() {
                // Files below it may still be being written.
                writers.barrier()?;
            }
            dirs.clear();
            remove_any(&target)?;
        }
        let is_file = kind.is_file() || kind == tar::EntryType::Continuous || kind.is_gnu_sparse();
        if is_file && entry.size() <= PARALLEL_MAX_FILE {
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut data).map_err(UnpackError::Tar)?;
            stats.size += data.len() as u64;
            writers.submit(Job {
                path: target,
                entry: ename,
                content: JobContent::File(data),
                uid,
                gid,
                mode,
                mtime,
                xattrs,
            })?;
            created.insert(rel);
            continue;
        } else if is_file {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)
                .map_err(io_err(&target))?;
            stats.size += io::copy(&mut entry, &mut f).map_err(io_err(&target))?;
            drop(f);
            set_owner(&target, uid, gid, &ename)?;
            // chmod after chown: chown clears setuid/setgid bits.
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(io_err(&target))?;
        } else if kind.is_symlink() {
            let link = entry
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default();
            writers.submit(Job {
                path: target,
                entry: ename,
                content: JobContent::Symlink(link),
                uid,
                gid,
                mode,
                mtime,
                xattrs,
            })?;
            created.insert(rel);
            continue;
        } else if kind.is_hard_link() {
            let link = entry
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default();
            let link_display = String::from_utf8_lossy(&link).into_owned();
            let escaping = || UnpackError::EscapingHardlink {
                entry: ename.clone(),
                target: link_display.clone(),
            };
            let link_rel = match clean_path(&link, &link_display) {
                Ok(Some(p)) => p,
                _ => return Err(escaping()),
            };
            writers.settle(dest, &link_rel)?;
            let link_parent = match resolve_dir(
                dest,
                link_rel.parent().unwrap_or(Path::new("")),
                &ename,
                false,
            ) {
                Ok(p) => p,
                Err(UnpackError::EscapingSymlink { .. }) => return Err(escaping()),
                Err(e) => return Err(e),
            };
            let source = link_parent.join(link_rel.file_name().expect("has a name"));
            match fs::symlink_metadata(&source) {
                Ok(m) if !m.is_dir() => {}
                _ => {
                    return Err(UnpackError::MissingHardlinkTarget {
                        entry: ename,
                        target: link_display,
                    });
                }
            }
            fs::hard_link(&source, &target).map_err(io_err(&target))?;
            created.insert(rel);
            continue; // a hard link shares its target's metadata
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let file_type = if kind.is_fifo() {
                libc::S_IFIFO
            } else if kind.is_character_special() {
                libc::S_IFCHR
            } else {
                libc::S_IFBLK
            };
            if opts.rootless && !kind.is_fifo() {
                tracing::warn!(
                    "skipping device node {}: it cannot be created rootless",
                    &ename
                );
                stats.skipped_devices += 1;
                continue;
            }
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            mknod(&target, file_type | mode, libc::makedev(major, minor))?;
            set_owner(&target, uid, gid, &ename)?;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(io_err(&target))?;
        } else {
            tracing::debug!("skipping layer entry {} of type {:?}", &ename, kind);
            continue;
        }
        set_xattrs(&target, &xattrs);
        set_mtime(&target, mtime);
        created.insert(rel);
    }
    writers.finish()?;
    for (dir, mtime) in dir_times.iter().rev() {
        set_mtime(dir, *mtime);
    }
    Ok(stats)
}

/// Files up to this size are handed to the writer threads; larger ones are written by
/// the reading thread (their cost is bandwidth, not per-file latency).
const PARALLEL_MAX_FILE: u64 = 8 << 20;
/// Writer threads per layer. Creating an inode costs about a millisecond on some
/// filesystems whatever its size, and those waits overlap across threads.
const WRITERS: usize = 8;
/// Jobs queued per writer: lets the reader run ahead into other directories.
const QUEUE: usize = 512;

/// A regular file or symlink to create, with its metadata.
struct Job {
    path: PathBuf,
    entry: String,
    content: JobContent,
    uid: u64,
    gid: u64,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

enum JobContent {
    File(Vec<u8>),
    Symlink(Vec<u8>),
}

fn run_job(job: &Job) -> Result<(), UnpackError> {
    match &job.content {
        JobContent::File(data) => {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&job.path)
                .map_err(io_err(&job.path))?;
            io::Write::write_all(&mut f, data).map_err(io_err(&job.path))?;
            drop(f);
            set_owner(&job.path, job.uid, job.gid, &job.entry)?;
            // chmod after chown: chown clears setuid/setgid bits.
            fs::set_permissions(&job.path, fs::Permissions::from_mode(job.mode))
                .map_err(io_err(&job.path))?;
        }
        JobContent::Symlink(target) => {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), &job.path)
                .map_err(io_err(&job.path))?;
            set_owner(&job.path, job.uid, job.gid, &job.entry)?;
        }
    }
    set_xattrs(&job.path, &job.xattrs);
    set_mtime(&job.path, job.mtime);
    Ok(())
}

/// Writer threads that create files while the tar stream is read. Anything that
/// depends on a file being there (a hard link to it, replacing it, writing below it)
/// first waits for the writers to drain (`barrier`).
struct Writers {
    txs: Vec<std::sync::mpsc::SyncSender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    state: std::sync::Arc<(std::sync::Mutex<WriterState>, std::sync::Condvar)>,
    pending: HashSet<PathBuf>,
}

#[derive(Default)]
struct WriterState {
    in_flight: usize,
    error: Option<UnpackError>,
}

impl Writers {
    fn new() -> Writers {
        let state: std::sync::Arc<(std::sync::Mutex<WriterState>, std::sync::Condvar)> =
            Default::default();
        let mut txs = Vec::with_capacity(WRITERS);
        let threads = (0..WRITERS)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
                txs.push(tx);
                let state = state.clone();
                std::thread::spawn(move || {
                    for job in rx {
                        let res = run_job(&job);
                        let (lock, cv) = &*state;
                        let mut st = lock.lock().expect("not poisoned");
                        st.in_flight -= 1;
                        if let Err(e) = res {
                            st.error.get_or_insert(e);
                        }
                        cv.notify_all();
                    }
                })
            })
            .collect();
        Writers {
            txs,
            threads,
            state,
            pending: HashSet::new(),
        }
    }

    /// Files of one directory go to one writer: creating entries in a directory takes
    /// its lock, so writers gain only when they work in different directories.
    fn submit(&mut self, job: Job) -> Result<(), UnpackError> {
        self.take_error()?;
        self.pending.insert(job.path.clone());
        self.state.0.lock().expect("not poisoned").in_flight += 1;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&job.path.parent(), &mut h);
        let i = (std::hash::Hasher::finish(&h) % self.txs.len() as u64) as usize;
        self.txs[i]
            .send(job)
            .expect("writer threads live until finish");
        Ok(())
    }

    fn take_error(&self) -> Result<(), UnpackError> {
        match self.state.0.lock().expect("not poisoned").error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits until every submitted file exists.
    fn barrier(&mut self) -> Result<(), UnpackError> {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().expect("not poisoned");
        while st.in_flight > 0 {
            st = cv.wait(st).expect("not poisoned");
        }
        drop(st);
        self.pending.clear();
        self.take_error()
    }

    /// Waits first when `path` or one of its parents is still being written.
    fn settle(&mut self, dest: &Path, rel: &Path) -> Result<(), UnpackError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if rel
            .ancestors()
            .any(|a| !a.as_os_str().is_empty() && self.pending.contains(&dest.join(a)))
        {
            self.barrier()?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), UnpackError> {
        let res = self.barrier();
        self.txs.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        res
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.txs.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Normalises an entry path to a relative one. `None` is the layer root.
fn clean_path(raw: &[u8], ename: &str) -> Result<Option<PathBuf>, UnpackError> {
    let path = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::AbsolutePath(ename.to_string()));
            }
            Component::ParentDir => return Err(UnpackError::DotDot(ename.to_string())),
            Component::CurDir => {}
            Component::Normal(n) => out.push(n),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// Resolves the directory `rel` inside `root`, following symlinks only while they stay
/// inside the layer, creating missing directories when `create` is set.
fn resolve_dir(root: &Path, rel: &Path, entry: &str, create: bool) -> Result<PathBuf, UnpackError> {
    let mut todo: VecDeque<OsString> = rel
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut cur = PathBuf::new();
    let mut hops = 0;
    while let Some(comp) = todo.pop_front() {
        if comp == "." {
            continue;
        }
        if comp == ".." {
            if !cur.pop() {
                unreachable!("'..' is only queued from checked symlink targets");
            }
            continue;
        }
        let here = root.join(&cur).join(&comp);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.is_dir() => cur.push(&comp),
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(UnpackError::SymlinkLoop {
                        entry: entry.to_string(),
                    });
                }
                let target = fs::read_link(&here).map_err(io_err(&here))?;
                let escaping = || UnpackError::EscapingSymlink {
                    entry: entry.to_string(),
                    link: cur.join(&comp).display().to_string(),
                    target: target.display().to_string(),
                };
                if target.is_absolute() {
                    return Err(escaping());
                }
                // Check lexically that the target stays inside before following it.
                let mut depth = cur.components().count() as isize;
                for c in target.components() {
                    match c {
                        Component::ParentDir => depth -= 1,
                        Component::Normal(_) => depth += 1,
                        _ => {}
                    }
                    if depth < 0 {
                        return Err(escaping());
                    }
                }
                for c in target.components().rev() {
                    todo.push_front(c.as_os_str().to_os_string());
                }
            }
            Ok(_) => {
                return Err(UnpackError::NotADirectory {
                    entry: entry.to_string(),
                    parent: cur.join(&comp).display().to_string(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                mkdir(&here)?;
                cur.push(&comp);
            }
            Err(e) => return Err(io_err(&here)(e)),
        }
    }
    Ok(root.join(cur))
}

fn apply_whiteout(
    parent: &Path,
    parent_rel: &Path,
    hidden: &[u8],
    name: &OsStr,
    created: &HashSet<PathBuf>,
    opts: UnpackOptions,
) -> Result<(), UnpackError> {
    let opaque = name.as_bytes() == OPAQUE_MARKER.as_bytes();
    match opts.whiteouts {
        WhiteoutMode::Apply if opaque => {
            // Hide what lower layers put here, but keep what this layer already wrote.
            for child in fs::read_dir(parent).map_err(io_err(parent))? {
                let child = child.map_err(io_err(parent))?;
                if !created.contains(&parent_rel.join(child.file_name())) {
                    remove_any(&child.path())?;
                }
            }
        }
        WhiteoutMode::Apply => {
            let victim = parent.join(OsStr::from_bytes(hidden));
            if fs::symlink_metadata(&victim).is_ok() {
                remove_any(&victim)?;
            }
        }
        WhiteoutMode::Overlay { xattr_prefix } if opaque => {
            let attr = format!("{xattr_prefix}overlay.opaque");
            if let Err(e) = setxattr(parent, &attr, b"y") {
                return Err(io_err(parent)(e));
            }
        }
        WhiteoutMode::Overlay { .. } => {
            let victim = parent.join(OsStr::from_bytes(hidden));
            if fs::symlink_metadata(&victim).is_ok() {
                remove_any(&victim)?;
            }
            mknod(&victim, libc::S_IFCHR, 0)?;
        }
    }
    Ok(())
}

/// The entry's owner: the header's ids, overridden by PAX `uid`/`gid` records.
pub(crate) fn owner<R: Read>(entry: &mut tar::Entry<R>, header: &tar::Header) -> (u64, u64) {
    let mut uid = header.uid().unwrap_or(0);
    let mut gid = header.gid().unwrap_or(0);
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            let parse = || ext.value().ok().and_then(|v| v.parse::<u64>().ok());
            match ext.key() {
                Ok("uid") => uid = parse().unwrap_or(uid),
                Ok("gid") => gid = parse().unwrap_or(gid),
                _ => {}
            }
        }
    }
    (uid, gid)
}

/// The entry's extended attributes (PAX `SCHILY.xattr.*` records).
pub(crate) fn xattrs<R: Read>(entry: &mut tar::Entry<R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(key) = ext.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
            {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    out
}

fn set_xattrs(path: &Path, attrs: &[(String, Vec<u8>)]) {
    for (name, value) in attrs {
        if let Err(e) = setxattr(path, name, value) {
            tracing::debug!("cannot set xattr {name} on {}: {e}", path.display());
        }
    }
}

fn set_owner(path: &Path, uid: u64, gid: u64, entry: &str) -> Result<(), UnpackError> {
    let (Ok(u), Ok(g)) = (u32::try_from(uid), u32::try_from(gid)) else {
        return Err(UnpackError::UnmappedOwner {
            entry: entry.to_string(),
            uid,
            gid,
        });
    };
    match std::os::unix::fs::lchown(path, Some(u), Some(g)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(UnpackError::UnmappedOwner {
            entry: entry.to_string(),
            uid,
            gid,
        }),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn mkdir(path: &Path) -> Result<(), UnpackError> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(io_err(path))
}

fn remove_any(path: &Path) -> Result<(), UnpackError> {
    let m = fs::symlink_metadata(path).map_err(io_err(path))?;
    if m.is_dir() {
        fs::remove_dir_all(path).map_err(io_err(path))
    } else {
        fs::remove_file(path).map_err(io_err(path))
    }
}

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn mknod(path: &Path, mode: u32, dev: libc::dev_t) -> Result<(), UnpackError> {
    let c = cstr(path).map_err(io_err(path))?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::mknod(c.as_ptr(), mode, dev) } != 0 {
        return Err(io_err(path)(io::Error::last_os_error()));
    }
    Ok(())
}

fn setxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cstr(path)?;
    let n = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: pointers are valid for the given lengths for the duration of the call.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_mtime(path: &Path, mtime: u64) {
    let Ok(c) = cstr(path) else { return };
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    // SAFETY: c is a valid path and times points to two timespecs.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn opts() -> UnpackOptions {
        UnpackOptions {
            whiteouts: WhiteoutMode::Apply,
            rootless: false,
        }
    }

    /// A tarball builder that, unlike `tar::Builder`'s path helpers, writes any name
    /// it is given, so hostile archives can be made.
    struct Tb(tar::Builder<Vec<u8>>);
    impl Tb {
        fn new() -> Self {
            Self(tar::Builder::new(Vec::new()))
        }
        fn raw(&mut self, kind: tar::EntryType, name: &str, link: &str, data: &[u8], mode: u32) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_mtime(1_600_000_000);
            h.set_cksum();
            self.0.append(&h, data).unwrap();
        }
        fn file(&mut self, name: &str, data: &[u8]) {
            self.raw(tar::EntryType::Regular, name, "", data, 0o644);
        }
        fn dir(&mut self, name: &str) {
            self.raw(tar::EntryType::Directory, name, "", b"", 0o755);
        }
        fn symlink(&mut self, name: &str, target: &str) {
            self.raw(tar::EntryType::Symlink, name, target, b"", 0o777);
        }
        fn hardlink(&mut self, name: &str, target: &str) {
            self.raw(tar::EntryType::Link, name, target, b"", 0o644);
        }
        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn apply(tb: Tb, dest: &Path, o: UnpackOptions) -> Result<UnpackStats, UnpackError> {
        unpack(&tb.bytes()[..], dest, o)
    }

    /// Nothing outside `root/layer` may have appeared: every hostile test checks it.
    fn assert_nothing_outside(root: &Path) {
        let names: Vec<_> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![OsString::from("layer")],
            "wrote outside the layer"
        );
    }

    fn sandbox() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let layer = t.path().join("layer");
        fs::create_dir(&layer).unwrap();
        (t, layer)
    }

    #[test]
    fn regular_files_dirs_links_and_modes() {
        let (_t, l) = sandbox();
        let mut tb = Tb::new();
        tb.dir("./etc/");
        tb.file("./etc/passwd", b"root:x:0:0::/root:/bin/sh\n");
        tb.raw(regular(), "usr/bin/su-test", "", b"x", 0o4755);
        tb.symlink("link-abs", "/etc/passwd");
        tb.hardlink("etc/hard", "etc/passwd");
        let stats = apply(tb, &l, opts()).unwrap();
        assert_eq!(stats.entries, 5);
        assert_eq!(
            fs::read(l.join("etc/hard")).unwrap(),
            fs::read(l.join("etc/passwd")).unwrap()
        );
        assert_eq!(
            fs::metadata(l.join("etc/hard")).unwrap().ino(),
            fs::metadata(l.join("etc/passwd")).unwrap().ino()
        );
        assert_eq!(
            fs::metadata(l.join("usr/bin/su-test")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert_eq!(
            fs::read_link(l.join("link-abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            fs::metadata(l.join("etc/passwd")).unwrap().mtime(),
            1_600_000_000
        );
    }

    fn regular() -> tar::EntryType {
        tar::EntryType::Regular
    }

    #[test]
    fn parallel_writers_keep_tar_order() {
        // Many files over many directories, then entries that depend on earlier ones:
        // hard links to them, a second copy of a path (the later one wins), a symlink
        // used as a parent, and a directory replaced by a file.
        let (_t, l) = sandbox();
        let mut tb = Tb::new();
        for i in 0..1500 {
            tb.file(&format!("d{}/f{i}", i % 37), format!("v1-{i}").as_bytes());
        }
        for i in (0..1500).step_by(10) {
            tb.hardlink(&format!("links/h{i}"), &format!("d{}/f{i}", i % 37));
        }
        for i in (0..1500).step_by(7) {
            tb.file(&format!("d{}/f{i}", i % 37), format!("v2-{i}").as_bytes());
        }
        tb.symlink("via", "d3");
        tb.file("via/through-link", b"ok");
        tb.file("d5", b"now a file");
        apply(tb, &l, opts()).unwrap();
        for i in 0..1500 {
            let want = if i % 7 == 0 {
                format!("v2-{i}")
            } else {
                format!("v1-{i}")
            };
            if i % 37 == 5 {
                continue; // d5 was replaced by a file
            }
            assert_eq!(
                fs::read_to_string(l.join(format!("d{}/f{i}", i % 37))).unwrap(),
                want
            );
        }
        for i in (0..1500).step_by(10) {
            // A link made before the path was rewritten keeps the first content.
            assert_eq!(
                fs::read_to_string(l.join(format!("links/h{i}"))).unwrap(),
                format!("v1-{i}")
            );
        }
        assert_eq!(fs::read(l.join("d3/through-link")).unwrap(), b"ok");
        assert_eq!(fs::read(l.join("d5")).unwrap(), b"now a file");
    }

    #[test]
    fn dotdot_entry_is_refused() {
        let (t, l) = sandbox();
        let mut tb = Tb::new();
        tb.file("../evil", b"x");
        let err = apply(tb, &l, opts()).unwrap_err();
        assert!(matches!(err, UnpackError::DotDot(_)), "{err}");
        assert_nothing_outside(t.path());
    }

    #[test]
    fn absolute_entry_is_refused() {
        let (t, l) = sandbox();
        let mut tb = Tb::new();
        tb.file("/evil", b"x");
        let err = apply(tb, &l, opts()).unwrap_err();
        assert!(matches!(err, UnpackError::AbsolutePath(_)), "{err}");
        assert_nothing_outside(t.path());
    }

    #[test]
    fn write_through_absolute_symlink_is_refused() {
        // a -> /etc, then a/passwd: would overwrite the host's /etc/passwd if followed.
        let (t, l) = sandbox();
        let mut tb = Tb::new();
        tb.symlink("a", "/etc");
        tb.file("a/passwd", b"pwned");
        let err = apply(tb, &l, opts()).unwrap_err();
        assert!(matches!(err, UnpackError::EscapingSymlink { .. }), "{err}");
        assert!(err.to_string().contains("leads out of the layer"));
        assert_nothing_outside(t.path());
    }

    #[test]
    fn write_through_relative_escaping_symlink_is_refused() {
        let (t, l) = sandbox();
        let mut tb = Tb::new();
        tb.dir("d");
        tb.symlink("d/up", "../..");
        tb.file("d/up/escaped", b"pwned");
        let err = apply(tb, &l, opts()).unwrap_err();
        assert!(matches!(err, UnpackError::EscapingSymlink { .. }), "{err}");
        assert_nothing_outside(t.path());
    }

    #[test]
    fn write_through_inside_symlink_is_followed() {
        // merged /usr: lib -> usr/lib, then lib/x lands in usr/lib/x.
        let (_t, l) = sandbox();
        let mut tb = Tb::new();
        tb.dir("usr/lib");
        tb.symlink("lib", "usr/lib");
        tb.file("lib/x", b"ok");
        apply(tb, &l, opts()).unwrap();
        assert_eq!(fs::read(l.join("usr/lib/x")).unwrap(), b"ok");
    }

    #[test]
    fn escaping_hardlinks_are_refused() {
        for target in ["/etc/passwd", "../outside", "a/../../outside"] {
            let (t, l) = sandbox();
            fs::write(t.path().join("outside"), b"secret").unwrap();
            let mut tb = Tb::new();
            tb.hardlink("h", target);
            let err = apply(tb, &l, opts()).unwrap_err();
            assert!(
                matches!(err, UnpackError::EscapingHardlink { .. }),
                "{target}: {err}"
            );
            assert!(!l.join("h").exists());
        }
    }

    #[test]
    fn hardlink_through_escaping_symlink_is_refused() {
        let (t, l) = sandbox();
        let mut tb = Tb::new();
        tb.symlink("a", "/etc");
        tb.hardlink("h", "a/passwd");
        let err = apply(tb, &l, opts()).unwrap_err();
        assert!(matches!(err, UnpackError::EscapingHardlink { .. }), "{err}");
        assert_nothing_outside(t.path());
    }

    #[test]
    fn whiteouts_apply_in_vfs_mode() {
        let (_t, l) = sandbox();
        let mut tb = Tb::new();
        tb.file("data/a", b"a");
        tb.file("data/b", b"b");
        tb.file("sub/old", b"old");
        apply(tb, &l, opts()).unwrap();
        let mut tb = Tb::new();
        tb.file("data/.wh.b", b"");
        tb.file("sub/new", b"new");
        tb.file("sub/.wh..wh..opq", b"");
        apply(tb, &l, opts()).unwrap();
        assert!(l.join("data/a").exists());
        assert!(!l.join("data/b").exists());
        assert!(
            !l.join("sub/old").exists(),
            "opaque dir hides lower content"
        );
        assert!(
            l.join("sub/new").exists(),
            "opaque dir keeps this layer's content"
        );
        assert!(!l.join("data/.wh.b").exists());
    }

    #[test]
    fn whiteouts_become_overlay_devices() {
        if !rustix::process::geteuid().is_root() {
            eprintln!(
                "SKIP whiteouts_become_overlay_devices: needs root for trusted.* xattrs and mknod"
            );
            return;
        }
        let (_t, l) = sandbox();
        let mut tb = Tb::new();
        tb.file("data/.wh.b", b"");
        tb.file("sub/.wh..wh..opq", b"");
        let o = UnpackOptions {
            whiteouts: WhiteoutMode::Overlay {
                xattr_prefix: "trusted.",
            },
            rootless: false,
        };
        apply(tb, &l, o).unwrap();
        let m = fs::symlink_metadata(l.join("data/b")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &m.file_type()
        ));
        assert_eq!(m.rdev(), 0);
    }

    #[test]
    fn file_replaces_directory_and_back() {
        let (_t, l) = sandbox();
        let mut tb = Tb::new();
        tb.file("x/inner", b"1");
        tb.file("x", b"now a file");
        tb.dir("y");
        apply(tb, &l, opts()).unwrap();
        assert_eq!(fs::read(l.join("x")).unwrap(), b"now a file");
    }

    #[test]
    fn truncated_tar_is_an_error() {
        let (_t, l) = sandbox();
        let mut tb = Tb::new();
        tb.file("big", &[7u8; 4096]);
        let bytes = tb.bytes();
        let err = unpack(&bytes[..1024], &l, opts()).unwrap_err();
        assert!(
            err.to_string().contains("big")
                || matches!(err, UnpackError::Tar(_) | UnpackError::Io { .. }),
            "{err}"
        );
    }
}
