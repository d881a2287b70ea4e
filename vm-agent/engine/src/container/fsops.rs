//! A container's filesystem from the outside: `cp` (in, out, between containers and as
//! tar streams), `diff`, `export` and `commit`.
//!
//! Paths inside a container are resolved here, one component at a time from a directory
//! fd of its root filesystem, each step opened with `O_NOFOLLOW`. Symlinks are read and
//! followed as the container sees them (an absolute target starts again at the
//! container's root, `..` stops at it), so no path, however crafted, leads out of the
//! root, and a component the container's processes swap for a symlink half way fails to
//! open instead of being followed. Bind mounts and volumes are entered on the way, as in
//! the container.
//!
//! Every copy is a tar stream from a producer (a walk of the source) to an extractor
//! (which creates each entry the same careful way), so host paths, containers, stdin and
//! stdout combine freely under one set of rules: Docker's for trailing `/` and `/.`,
//! Podman's for errors and ownership.
//!
//! A stopped container's root filesystem is mounted for the operation and unmounted
//! afterwards, under the record's lock so that a concurrent `start` waits; a running
//! container's mount is used as it is and never unmounted here.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use serde_json::{Map, Value, json};

use crate::container::idmap::IdMappings;
use crate::container::lifecycle::{ContainerError, resolve_user};
use crate::container::rootfs::{self, MountDriver, RootfsError};
use crate::container::state::{ContainerRecord, StateError, Status};
use crate::digest::HashingWriter;
use crate::engine::{Engine, EngineError};
use crate::image::import::apply_change;
use crate::image::manifest::{Descriptor, History, ImageConfig, Manifest, RootFs};
use crate::image::progress::Progress;
use crate::layer::compression::sniffing_decoder;
use crate::layer::unpack::WhiteoutMode;
use crate::registry::media;
use crate::store::ImageRecord;
use crate::volume::MountKind;

const MAX_SYMLINK_HOPS: usize = 40;
const OPAQUE_MARKER: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path:?} could not be found on container {container}: no such file or directory")]
    NotInContainer { path: String, container: String },
    #[error("{0:?} could not be found on the host: no such file or directory")]
    NotOnHost(String),
    #[error("{0:?}: not a directory")]
    NotADirectory(String),
    #[error("destination must be a directory when copying a directory")]
    DirectoryOntoFile,
    #[error("destination must be a directory when copying from stdin")]
    StdinDestination,
    #[error("source must be a (compressed) tar archive when copying from stdin")]
    NotATar,
    #[error("cannot overwrite directory {0:?} with non-directory")]
    OverwriteDirectory(String),
    #[error("cannot overwrite non-directory {0:?} with directory")]
    OverwriteNonDirectory(String),
    #[error(
        "copying between two host paths is not supported: name a container (CONTAINER:PATH) on one side"
    )]
    NoContainer,
    #[error("{0}")]
    Invalid(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StateError> for FsError {
    fn from(e: StateError) -> Self {
        FsError::Container(e.into())
    }
}

impl From<RootfsError> for FsError {
    fn from(e: RootfsError) -> Self {
        FsError::Container(e.into())
    }
}

impl FsError {
    /// A line telling the user what to do about this error, where there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            FsError::OverwriteDirectory(_) | FsError::OverwriteNonDirectory(_) => {
                Some("pass --overwrite to replace it".into())
            }
            FsError::NoContainer => Some("for example: capsa cp ./file mycontainer:/tmp/".into()),
            FsError::Container(e) => e.hint(),
            FsError::Engine(e) => e.hint(),
            _ => None,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> FsError {
    let what = what.into();
    move |source| FsError::Io { what, source }
}

// ---- metadata and fd helpers ----

/// The parts of `struct stat` we use, in one type whatever the architecture's layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) mtime: i64,
    pub(crate) mtime_nsec: i64,
    pub(crate) rdev: u64,
    nlink: u64,
    dev: u64,
    ino: u64,
}

impl Meta {
    // Field types differ between architectures; the casts are no-ops on some.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &rustix::fs::Stat) -> Meta {
        Meta {
            mode: st.st_mode as u32,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            size: st.st_size as u64,
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as i64,
            rdev: st.st_rdev as u64,
            nlink: st.st_nlink as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        }
    }

    pub(crate) fn of_std(m: &std::fs::Metadata) -> Meta {
        Meta {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            rdev: m.rdev(),
            nlink: m.nlink(),
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    pub(crate) fn kind(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.kind() == FileType::Directory
    }

    /// overlayfs' whiteout: a 0/0 character device.
    fn is_whiteout(&self) -> bool {
        self.kind() == FileType::CharacterDevice && self.rdev == 0
    }

    fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

fn lstat_at(dir: BorrowedFd, name: &OsStr) -> io::Result<Option<Meta>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(Meta::of(&st))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn fstat(fd: BorrowedFd) -> io::Result<Meta> {
    Ok(Meta::of(&rustix::fs::fstat(fd)?))
}

/// A directory to resolve names in (not to read).
fn open_path_dir(dir: BorrowedFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// A directory to list and to read the attributes of.
fn open_read_dir(dir: BorrowedFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn dup(fd: BorrowedFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 0)?)
}

/// The names in a directory (opened for reading), sorted bytewise as Podman walks.
fn list_dir(dir: BorrowedFd) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `name` in `dir` and, for a directory, everything below it, never following
/// a symlink.
fn remove_all_at(dir: BorrowedFd, name: &OsStr) -> io::Result<()> {
    match lstat_at(dir, name)? {
        None => Ok(()),
        Some(m) if m.is_dir() => {
            let sub = open_read_dir(dir, name)?;
            for child in list_dir(sub.as_fd())? {
                remove_all_at(sub.as_fd(), &child)?;
            }
            Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
        }
        Some(_) => Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?),
    }
}

fn times(sec: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn owner_ids(uid: u32, gid: u32) -> (Option<Uid>, Option<Gid>) {
    (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
}

/// Extended attributes worth carrying in an archive: file capabilities and `user.*`,
/// never overlayfs' own.
fn wanted_xattr(name: &str) -> bool {
    (name == "security.capability" || name.starts_with("user."))
        && !name.starts_with("user.overlay.")
        && !name.starts_with("user.fuseoverlayfs.")
}

fn read_xattrs(fd: BorrowedFd) -> Vec<(String, Vec<u8>)> {
    let Ok(size) = rustix::fs::flistxattr_query(fd) else {
        return Vec::new();
    };
    let mut names = vec![0u8; size];
    let Ok(n) = rustix::fs::flistxattr(fd, &mut names[..]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for raw in names[..n.min(size)].split(|b| *b == 0) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        if name.is_empty() || !wanted_xattr(name) {
            continue;
        }
        let Ok(len) = rustix::fs::fgetxattr_query(fd, name) else {
            continue;
        };
        let mut v = vec![0u8; len];
        if let Ok(got) = rustix::fs::fgetxattr(fd, name, &mut v[..]) {
            v.truncate(got);
            out.push((name.to_string(), v));
        }
    }
    out
}

fn set_xattrs(fd: BorrowedFd, attrs: &[(String, Vec<u8>)]) {
    for (name, value) in attrs {
        if !wanted_xattr(name) {
            continue;
        }
        if let Err(e) = rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty()) {
            tracing::debug!("cannot set xattr {name}: {e}");
        }
    }
}

/// fuse-overlayfs marks the opaque directories it makes with its own xattr when it
/// cannot write `trusted.*` (rootless), and also leaves these two entries in them.
const FUSE_OPAQUE_XATTR: &str = "user.fuseoverlayfs.opaque";
const FUSE_MARKERS: [&str; 2] = [OPAQUE_MARKER, ".wh..opq"];

fn is_fuse_marker(name: &OsStr) -> bool {
    FUSE_MARKERS.iter().any(|m| name.as_bytes() == m.as_bytes())
}

fn is_opaque_fd(fd: BorrowedFd, prefix: &str) -> bool {
    let mut v = [0u8; 1];
    [
        format!("{prefix}overlay.opaque"),
        FUSE_OPAQUE_XATTR.to_string(),
    ]
    .iter()
    .any(|a| matches!(rustix::fs::fgetxattr(fd, a.as_str(), &mut v[..]), Ok(1) if v[0] == b'y'))
}

pub(crate) fn is_opaque_path(path: &Path, prefix: &str) -> bool {
    let mut v = [0u8; 1];
    [
        format!("{prefix}overlay.opaque"),
        FUSE_OPAQUE_XATTR.to_string(),
    ]
    .iter()
    .any(|a| matches!(rustix::fs::lgetxattr(path, a.as_str(), &mut v[..]), Ok(1) if v[0] == b'y'))
}

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// The non-empty, non-`.` components of a path.
fn components(path: &[u8]) -> VecDeque<OsString> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_os_string())
        .collect()
}

// ---- paths inside a root ----

/// A bind mount or volume of a container: what is at `dest` inside it is `source`.
#[derive(Debug, Clone)]
struct MountPoint {
    dest: PathBuf,
    source: PathBuf,
}

/// A root filesystem (a container's, an upper directory, or the host's `/`) in which
/// paths are resolved without ever leaving it.
struct Root {
    fd: OwnedFd,
    mounts: Vec<MountPoint>,
}

/// A resolved path: the directory holding it, opened, and its name there.
struct Found {
    parent: OwnedFd,
    /// `.` for the root itself.
    name: OsString,
    /// The path inside the root with every symlink resolved.
    path: PathBuf,
    /// `None` when nothing is there (its directory exists).
    meta: Option<Meta>,
}

impl Root {
    fn open(dir: &Path, mounts: Vec<MountPoint>) -> io::Result<Root> {
        let fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd, mounts })
    }

    fn mount_at(&self, path: &Path) -> Option<&MountPoint> {
        self.mounts.iter().find(|m| m.dest == path)
    }

    /// Resolves `path` (taken from the root whether or not it starts with `/`). Every
    /// symlink on the way is followed inside the root; the last one only with
    /// `follow_last`. A missing last component is not an error (`meta` is `None`); a
    /// missing directory on the way is `ENOENT`, a non-directory `ENOTDIR`.
    fn resolve(&self, path: &Path, follow_last: bool) -> io::Result<Found> {
        let mut todo = components(path.as_os_str().as_bytes());
        let mut stack: Vec<(OsString, OwnedFd)> = Vec::new();
        let mut hops = 0;
        let here = |stack: &[(OsString, OwnedFd)], name: &OsStr| -> PathBuf {
            let mut p = PathBuf::from("/");
            for (n, _) in stack {
                p.push(n);
            }
            p.push(name);
            p
        };
        while let Some(comp) = todo.pop_front() {
            if comp == ".." {
                stack.pop();
                continue;
            }
            let last = todo.is_empty();
            let cpath = here(&stack, &comp);
            if let Some(m) = self.mount_at(&cpath) {
                if last {
                    return found_mount(m, cpath);
                }
                let fd = rustix::fs::open(
                    &m.source,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                stack.push((comp, fd));
                continue;
            }
            let cur = stack.last().map_or(self.fd.as_fd(), |(_, f)| f.as_fd());
            match lstat_at(cur, &comp)? {
                None if last => {
                    return Ok(Found {
                        parent: dup(cur)?,
                        name: comp,
                        path: cpath,
                        meta: None,
                    });
                }
                None => return Err(Errno::NOENT.into()),
                Some(m) if m.kind() == FileType::Symlink && (!last || follow_last) => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(Errno::LOOP.into());
                    }
                    let target = rustix::fs::readlinkat(cur, &comp, Vec::new())?;
                    let t = target.as_bytes();
                    if t.first() == Some(&b'/') {
                        stack.clear();
                    }
                    for c in components(t).into_iter().rev() {
                        todo.push_front(c);
                    }
                }
                Some(m) if last => {
                    return Ok(Found {
                        parent: dup(cur)?,
                        name: comp,
                        path: cpath,
                        meta: Some(m),
                    });
                }
                Some(m) if m.is_dir() => {
                    let fd = open_path_dir(cur, &comp)?;
                    stack.push((comp, fd));
                }
                Some(_) => return Err(Errno::NOTDIR.into()),
            }
        }
        // The path ended on a directory already entered (`a/b/..`, a symlink to a
        // directory), or on the root.
        match stack.pop() {
            None => Ok(Found {
                parent: dup(self.fd.as_fd())?,
                name: ".".into(),
                path: "/".into(),
                meta: Some(fstat(self.fd.as_fd())?),
            }),
            Some((name, fd)) => {
                let cpath = here(&stack, &name);
                if let Some(m) = self.mount_at(&cpath) {
                    return found_mount(m, cpath);
                }
                let meta = fstat(fd.as_fd())?;
                let parent = stack.last().map_or(self.fd.as_fd(), |(_, f)| f.as_fd());
                Ok(Found {
                    parent: dup(parent)?,
                    name,
                    path: cpath,
                    meta: Some(meta),
                })
            }
        }
    }

    /// Opens the directory `path` (for resolving names in it), creating what is missing
    /// with mode 0755, owned by `owner`.
    fn ensure_dir(&self, path: &Path, owner: Option<(u32, u32)>) -> io::Result<OwnedFd> {
        match self.open_dir(path) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        let mut prefix = PathBuf::from("/");
        for c in components(path.as_os_str().as_bytes()) {
            prefix.push(&c);
            let f = self.resolve(&prefix, true)?;
            match f.meta {
                Some(m) if m.is_dir() => {}
                Some(_) => return Err(Errno::NOTDIR.into()),
                None => {
                    match rustix::fs::mkdirat(&f.parent, &f.name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    if let Some((u, g)) = owner {
                        let (u, g) = owner_ids(u, g);
                        let _ = rustix::fs::chownat(
                            &f.parent,
                            &f.name,
                            u,
                            g,
                            AtFlags::SYMLINK_NOFOLLOW,
                        );
                    }
                }
            }
        }
        self.open_dir(path)
    }

    /// An existing directory, opened for resolving names in it.
    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        let f = self.resolve(path, true)?;
        match f.meta {
            None => Err(Errno::NOENT.into()),
            Some(m) if !m.is_dir() => Err(Errno::NOTDIR.into()),
            Some(_) => open_path_dir(f.parent.as_fd(), &f.name),
        }
    }

    /// Reads a small file (`/etc/passwd`), or nothing.
    fn read_file(&self, path: &str) -> Vec<u8> {
        let Ok(f) = self.resolve(Path::new(path), true) else {
            return Vec::new();
        };
        let Ok(fd) = rustix::fs::openat(
            &f.parent,
            &f.name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return Vec::new();
        };
        if !matches!(fstat(fd.as_fd()), Ok(m) if m.kind() == FileType::RegularFile) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let _ = File::from(fd).take(4 << 20).read_to_end(&mut out);
        out
    }
}

/// What a mount point resolves to: its source on the host.
fn found_mount(m: &MountPoint, cpath: PathBuf) -> io::Result<Found> {
    let parent = m.source.parent().unwrap_or(Path::new("/"));
    let name = m
        .source
        .file_name()
        .map_or_else(|| OsString::from("."), OsStr::to_os_string);
    let parent = rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let meta = lstat_at(parent.as_fd(), &name)?;
    Ok(Found {
        parent,
        name,
        path: cpath,
        meta,
    })
}

// ---- producing tar streams ----

/// Reads exactly `left` bytes: a file that shrank while it was archived is padded with
/// zeros, one that grew is cut, so the archive always matches its headers.
struct Exact<R> {
    inner: R,
    left: u64,
    eof: bool,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if max == 0 {
            return Ok(0);
        }
        let mut n = if self.eof {
            0
        } else {
            self.inner.read(&mut buf[..max])?
        };
        if n == 0 {
            self.eof = true;
            buf[..max].fill(0);
            n = max;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// One PAX record: `<length> <key>=<value>\n`, the length counting itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    loop {
        let next = rest + len.to_string().len();
        if next == len {
            break;
        }
        len = next;
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[derive(Debug, Clone, Default)]
struct TarOptions {
    /// Archiving an overlay upper directory: whiteouts become `.wh.` entries, opaque
    /// directories (this xattr prefix) get `.wh..wh..opq`.
    whiteouts: Option<&'static str>,
    /// A container with its own user namespace: owners are written as the container
    /// sees them, not as they are stored.
    owners: Option<IdMappings>,
}

/// Walks a root and writes what it finds as a tar stream: never following a symlink,
/// hard links kept as links, xattrs as PAX records.
struct Producer<'a, W: Write> {
    root: &'a Root,
    b: tar::Builder<W>,
    links: HashMap<(u64, u64), PathBuf>,
    opts: TarOptions,
}

fn header(m: &Meta, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(m.perm());
    h.set_uid(m.uid.into());
    h.set_gid(m.gid.into());
    h.set_mtime(u64::try_from(m.mtime).unwrap_or(0));
    h.set_size(0);
    h
}

fn whiteout_header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(0);
    h
}

/// Errors of an entry that vanished (or changed type) while it was being archived.
fn vanished(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR)
    )
}

impl<'a, W: Write> Producer<'a, W> {
    /// A header for `m`, its owner as the container sees it.
    fn header(&self, m: &Meta, kind: tar::EntryType) -> tar::Header {
        let mut h = header(m, kind);
        if let Some(maps) = &self.opts.owners {
            let to = crate::container::idmap::to_container;
            h.set_uid(to(&maps.uid_map, m.uid).unwrap_or(m.uid).into());
            h.set_gid(to(&maps.gid_map, m.gid).unwrap_or(m.gid).into());
        }
        h
    }

    fn new(root: &'a Root, out: W, opts: TarOptions) -> Self {
        Producer {
            root,
            b: tar::Builder::new(out),
            links: HashMap::new(),
            opts,
        }
    }

    fn finish(self) -> io::Result<W> {
        self.b.into_inner()
    }

    /// The children of directory `cpath` (inside the root), named under `prefix`.
    fn add_children(&mut self, dir: BorrowedFd, prefix: &Path, cpath: &Path) -> io::Result<()> {
        for child in list_dir(dir)? {
            if self.opts.whiteouts.is_some() && is_fuse_marker(&child) {
                continue;
            }
            let cp = cpath.join(&child);
            let tar_name = prefix.join(&child);
            match self.root.mount_at(&cp) {
                Some(m) => {
                    let f = found_mount(m, cp.clone())?;
                    self.add(f.parent.as_fd(), &f.name, &tar_name, &cp)?;
                }
                None => self.add(dir, &child, &tar_name, &cp)?,
            }
        }
        Ok(())
    }

    fn pax_xattrs(&mut self, fd: BorrowedFd) -> io::Result<()> {
        let attrs = read_xattrs(fd);
        if attrs.is_empty() {
            return Ok(());
        }
        let mut data = Vec::new();
        for (k, v) in &attrs {
            pax_record(&mut data, &format!("SCHILY.xattr.{k}"), v);
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_path("PaxHeader")?;
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, &data[..])
    }

    /// Adds `name` in `dir` as `tar_name`; `cpath` is where it is inside the root.
    fn add(
        &mut self,
        dir: BorrowedFd,
        name: &OsStr,
        tar_name: &Path,
        cpath: &Path,
    ) -> io::Result<()> {
        let Some(m) = lstat_at(dir, name)? else {
            return Ok(());
        };
        match m.kind() {
            FileType::Directory => {
                let fd = match open_read_dir(dir, name) {
                    Ok(fd) => fd,
                    Err(e) if vanished(&e) => return Ok(()),
                    Err(e) => return Err(e),
                };
                let m = fstat(fd.as_fd())?;
                self.pax_xattrs(fd.as_fd())?;
                let mut h = self.header(&m, tar::EntryType::Directory);
                self.b.append_data(&mut h, tar_name, io::empty())?;
                if let Some(prefix) = self.opts.whiteouts
                    && is_opaque_fd(fd.as_fd(), prefix)
                {
                    let mut h = whiteout_header();
                    self.b
                        .append_data(&mut h, tar_name.join(OPAQUE_MARKER), io::empty())?;
                }
                self.add_children(fd.as_fd(), tar_name, cpath)?;
            }
            FileType::RegularFile => {
                let fd = match rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(e) if vanished(&e.into()) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                let m = fstat(fd.as_fd())?;
                if m.kind() != FileType::RegularFile {
                    return Ok(());
                }
                if m.nlink > 1 {
                    if let Some(first) = self.links.get(&(m.dev, m.ino)).cloned() {
                        let mut h = self.header(&m, tar::EntryType::Link);
                        return self.b.append_link(&mut h, tar_name, first);
                    }
                    self.links.insert((m.dev, m.ino), tar_name.to_path_buf());
                }
                self.pax_xattrs(fd.as_fd())?;
                let mut h = self.header(&m, tar::EntryType::Regular);
                h.set_size(m.size);
                let data = Exact {
                    inner: File::from(fd),
                    left: m.size,
                    eof: false,
                };
                self.b.append_data(&mut h, tar_name, data)?;
            }
            FileType::Symlink => {
                let target = match rustix::fs::readlinkat(dir, name, Vec::new()) {
                    Ok(t) => t,
                    Err(e) if vanished(&e.into()) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                let mut h = self.header(&m, tar::EntryType::Symlink);
                self.b.append_link(
                    &mut h,
                    tar_name,
                    Path::new(OsStr::from_bytes(target.as_bytes())),
                )?;
            }
            FileType::CharacterDevice if m.rdev == 0 && self.opts.whiteouts.is_some() => {
                let mut wh = OsString::from(".wh.");
                wh.push(name);
                let mut h = whiteout_header();
                self.b
                    .append_data(&mut h, tar_name.with_file_name(wh), io::empty())?;
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                let kind = match m.kind() {
                    FileType::CharacterDevice => tar::EntryType::Char,
                    FileType::BlockDevice => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = self.header(&m, kind);
                if kind != tar::EntryType::Fifo {
                    h.set_device_major(rustix::fs::major(m.rdev))?;
                    h.set_device_minor(rustix::fs::minor(m.rdev))?;
                }
                self.b.append_data(&mut h, tar_name, io::empty())?;
            }
            // Sockets have no place in an archive.
            _ => {}
        }
        Ok(())
    }
}

/// Writes `found` as a tar stream: as the entry `top` (a directory with all below it),
/// or, with `top` `None`, the directory's children at the top of the archive.
fn produce<W: Write>(
    root: &Root,
    found: &Found,
    top: Option<&OsStr>,
    opts: TarOptions,
    out: W,
) -> io::Result<W> {
    let mut p = Producer::new(root, out, opts);
    match top {
        Some(t) => p.add(found.parent.as_fd(), &found.name, Path::new(t), &found.path)?,
        None => {
            let fd = open_read_dir(found.parent.as_fd(), &found.name)?;
            p.add_children(fd.as_fd(), Path::new(""), &found.path)?;
        }
    }
    p.finish()
}

// ---- extracting tar streams ----

/// Normalises a tar entry's name to a path relative to the destination; `None` for
/// the destination itself.
fn clean_entry(raw: &[u8]) -> Result<Option<PathBuf>, FsError> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(FsError::Invalid(format!(
                        "archive entry {:?} leads outside the destination",
                        String::from_utf8_lossy(raw)
                    )));
                }
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    Ok(Some(PathBuf::from(OsStr::from_bytes(&out.join(&b'/')))))
}

/// Creates the entries of a tar stream below `base` inside a root.
struct Extractor<'a> {
    root: &'a Root,
    base: PathBuf,
    /// Everything is owned by this user and group; `None` keeps the archive's owners.
    owner: Option<(u32, u32)>,
    /// Replace a directory by a non-directory and the other way round.
    overwrite: bool,
    /// Directory times, set last (creating entries in them changes them again).
    dir_times: Vec<(PathBuf, i64)>,
}

fn entry_owner<R: Read>(e: &mut tar::Entry<R>) -> (u32, u32) {
    let header = e.header().clone();
    let (uid, gid) = crate::layer::unpack::owner(e, &header);
    (
        u32::try_from(uid).unwrap_or(u32::MAX),
        u32::try_from(gid).unwrap_or(u32::MAX),
    )
}

impl Extractor<'_> {
    /// Extracts every entry; `from_stdin` makes an unreadable first entry "not a tar".
    fn run<R: Read>(&mut self, r: R, from_stdin: bool) -> Result<u64, FsError> {
        let mut ar = tar::Archive::new(r);
        let mut n = 0u64;
        let entries = ar.entries().map_err(io_err("reading the archive"))?;
        for e in entries {
            let mut e = match e {
                Ok(e) => e,
                Err(_) if from_stdin && n == 0 => return Err(FsError::NotATar),
                Err(err) => return Err(io_err("reading the archive")(err)),
            };
            n += 1;
            self.entry(&mut e)?;
        }
        if from_stdin && n == 0 {
            return Err(FsError::NotATar);
        }
        for (path, mtime) in self.dir_times.iter().rev() {
            if let Ok(f) = self.root.resolve(path, false)
                && f.meta.is_some_and(|m| m.is_dir())
            {
                let _ = rustix::fs::utimensat(
                    &f.parent,
                    &f.name,
                    &times(*mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                );
            }
        }
        Ok(n)
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<R>) -> Result<(), FsError> {
        let raw = e.path_bytes().into_owned();
        let Some(rel) = clean_entry(&raw)? else {
            // The destination directory itself keeps its owner and mode.
            return Ok(());
        };
        let target = self.base.join(&rel);
        let shown = target.display().to_string();
        let name = target
            .file_name()
            .expect("a cleaned entry has a name")
            .to_owned();
        let parent_path = target.parent().unwrap_or(Path::new("/")).to_path_buf();
        let parent = self
            .root
            .ensure_dir(&parent_path, self.owner)
            .map_err(io_err(format!(
                "creating directory {}",
                parent_path.display()
            )))?;
        let parent = parent.as_fd();
        let kind = e.header().entry_type();
        let (uid, gid) = self.owner.unwrap_or_else(|| entry_owner(e));
        let mode = e.header().mode().unwrap_or(0o644) & 0o7777;
        let mtime = e
            .header()
            .mtime()
            .ok()
            .and_then(|t| i64::try_from(t).ok())
            .unwrap_or(0);
        let xattrs = crate::layer::unpack::xattrs(e);
        let is_file = kind.is_file() || kind == tar::EntryType::Continuous || kind.is_gnu_sparse();
        let create = |source: io::Error| FsError::Io {
            what: format!("creating {shown}"),
            source,
        };

        if let Some(m) = self.root.mount_at(&target) {
            // A file bind-mounted into the container is written in place: replacing it
            // would leave the container with the old one.
            if is_file {
                let mut f = File::options()
                    .write(true)
                    .truncate(true)
                    .open(&m.source)
                    .map_err(io_err(format!("writing {}", m.source.display())))?;
                io::copy(e, &mut f).map_err(create)?;
            }
            return Ok(());
        }

        let existing = lstat_at(parent, &name).map_err(io_err(format!("reading {shown}")))?;
        if kind.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                found => {
                    if found.is_some() {
                        if !self.overwrite {
                            return Err(FsError::OverwriteNonDirectory(shown.clone()));
                        }
                        rustix::fs::unlinkat(parent, &name, AtFlags::empty())
                            .map_err(|e| create(e.into()))?;
                    }
                    match rustix::fs::mkdirat(parent, &name, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(err) => return Err(create(err.into())),
                    }
                }
            }
            let fd = open_read_dir(parent, &name).map_err(create)?;
            let (u, g) = owner_ids(uid, gid);
            if let Err(err) = rustix::fs::fchown(&fd, u, g) {
                tracing::debug!("chown {shown}: {err}");
            }
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| create(e.into()))?;
            set_xattrs(fd.as_fd(), &xattrs);
            self.dir_times.push((target, mtime));
            return Ok(());
        }
        if let Some(m) = existing {
            if m.is_dir() {
                if !self.overwrite {
                    return Err(FsError::OverwriteDirectory(shown.clone()));
                }
                remove_all_at(parent, &name).map_err(io_err(format!("removing {shown}")))?;
            } else {
                rustix::fs::unlinkat(parent, &name, AtFlags::empty())
                    .map_err(|e| io_err(format!("replacing {shown}"))(e.into()))?;
            }
        }
        let (u, g) = owner_ids(uid, gid);
        if is_file {
            let fd = rustix::fs::openat(
                parent,
                &name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| create(e.into()))?;
            let mut f = File::from(fd);
            io::copy(e, &mut f).map_err(io_err(format!("writing {shown}")))?;
            if let Err(err) = rustix::fs::fchown(&f, u, g) {
                tracing::debug!("chown {shown}: {err}");
            }
            // chmod after chown: chown clears the setuid and setgid bits.
            rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))
                .map_err(|e| io_err(format!("chmod {shown}"))(e.into()))?;
            set_xattrs(f.as_fd(), &xattrs);
            let _ = rustix::fs::futimens(&f, &times(mtime));
            return Ok(());
        }
        match kind {
            tar::EntryType::Symlink => {
                let link = e.link_name_bytes().unwrap_or_default().into_owned();
                rustix::fs::symlinkat(OsStr::from_bytes(&link), parent, &name)
                    .map_err(|e| create(e.into()))?;
            }
            tar::EntryType::Link => {
                let link = e.link_name_bytes().unwrap_or_default().into_owned();
                let missing = || {
                    FsError::Invalid(format!(
                        "archive entry {shown} is a hard link to {:?}, which is not in the archive",
                        String::from_utf8_lossy(&link)
                    ))
                };
                let src_rel = clean_entry(&link)?.ok_or_else(missing)?;
                let src = self
                    .root
                    .resolve(&self.base.join(src_rel), false)
                    .map_err(|_| missing())?;
                if src.meta.is_none_or(|m| m.is_dir()) {
                    return Err(missing());
                }
                rustix::fs::linkat(&src.parent, &src.name, parent, &name, AtFlags::empty())
                    .map_err(|e| create(e.into()))?;
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (ft, dev) = match kind {
                    tar::EntryType::Fifo => (FileType::Fifo, 0),
                    k => (
                        if k == tar::EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        },
                        rustix::fs::makedev(
                            e.header().device_major().ok().flatten().unwrap_or(0),
                            e.header().device_minor().ok().flatten().unwrap_or(0),
                        ),
                    ),
                };
                match rustix::fs::mknodat(parent, &name, ft, Mode::from_raw_mode(mode), dev) {
                    Ok(()) => {}
                    Err(Errno::PERM) if ft != FileType::Fifo => {
                        tracing::warn!("skipping device node {shown}: it cannot be created here");
                        return Ok(());
                    }
                    Err(err) => return Err(create(err.into())),
                }
                let _ =
                    rustix::fs::chmodat(parent, &name, Mode::from_raw_mode(mode), AtFlags::empty());
            }
            other => {
                tracing::debug!("skipping archive entry {shown} of type {other:?}");
                return Ok(());
            }
        }
        if let Err(err) = rustix::fs::chownat(parent, &name, u, g, AtFlags::SYMLINK_NOFOLLOW) {
            tracing::debug!("chown {shown}: {err}");
        }
        let _ = rustix::fs::utimensat(parent, &name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW);
        Ok(())
    }
}

// ---- cp ----

/// One end of `cp`, as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpLocation {
    Host(String),
    Container {
        container: String,
        path: String,
    },
    /// `-`: a tar stream on stdin or stdout.
    Stream,
}

/// Docker's reading of a `cp` argument: `-` is a stream, a path starting with `/` or `.`
/// is the host's, `NAME:PATH` is inside a container, anything else is a host path.
pub fn parse_cp_location(arg: &str) -> CpLocation {
    if arg == "-" {
        return CpLocation::Stream;
    }
    if arg.starts_with('/') || arg.starts_with('.') {
        return CpLocation::Host(arg.to_string());
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.is_empty() => CpLocation::Container {
            container: c.to_string(),
            path: p.to_string(),
        },
        _ => CpLocation::Host(arg.to_string()),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CpOptions {
    /// Podman's `--archive` (default on): copies into a container belong to its user,
    /// copies to the host to the caller; off keeps the source's owners.
    pub archive: bool,
    /// `-L`: follow a symlink named as the source. Podman always does; kept for
    /// Docker's command lines.
    pub follow_link: bool,
    /// Replace a directory by a non-directory and the other way round.
    pub overwrite: bool,
}

impl Default for CpOptions {
    fn default() -> Self {
        CpOptions {
            archive: true,
            follow_link: false,
            overwrite: false,
        }
    }
}

/// One end of a copy, resolved to a root.
struct Side<'a> {
    root: &'a Root,
    /// The path inside the root (absolute).
    path: PathBuf,
    /// As the user wrote it, for errors and for the meaning of a trailing `/` or `/.`.
    shown: String,
    container: Option<String>,
}

impl Side<'_> {
    fn not_found(&self) -> FsError {
        match &self.container {
            Some(c) => FsError::NotInContainer {
                path: self.shown.clone(),
                container: c.clone(),
            },
            None => FsError::NotOnHost(self.shown.clone()),
        }
    }

    fn resolve(&self) -> Result<Found, FsError> {
        self.root
            .resolve(&self.path, true)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => self.not_found(),
                _ => io_err(format!("resolving {}", self.shown))(e),
            })
    }

    /// `/.` at the end: the directory's content, not the directory.
    fn contents(&self) -> bool {
        self.shown == "." || self.shown.ends_with("/.")
    }

    fn trailing_slash(&self) -> bool {
        self.contents() || self.shown.ends_with('/')
    }

    /// The name the source is copied under: its last component as written (a symlink's
    /// own name, not its target's), else the resolved one.
    fn base_name(&self, found: &Found) -> OsString {
        match self.path.file_name() {
            Some(n) => n.to_os_string(),
            None => found
                .path
                .file_name()
                .map_or_else(|| OsString::from("."), OsStr::to_os_string),
        }
    }
}

fn host_path(p: &str) -> Result<PathBuf, FsError> {
    let path = Path::new(p);
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        let cwd = std::env::current_dir().map_err(io_err("finding the current directory"))?;
        Ok(cwd.join(path))
    }
}

fn container_path(rec: &ContainerRecord, p: &str) -> PathBuf {
    if p.starts_with('/') {
        PathBuf::from(p)
    } else {
        let wd = if rec.config.workdir.is_empty() {
            "/"
        } else {
            &rec.config.workdir
        };
        Path::new("/").join(wd).join(p)
    }
}

/// Copies `src` to `dst` (both resolved, `src` existing) with Docker's rules.
fn copy_between(
    src: &Side,
    dst: &Side,
    owner: Option<(u32, u32)>,
    overwrite: bool,
) -> Result<(), FsError> {
    let s = src.resolve()?;
    let Some(sm) = s.meta else {
        return Err(src.not_found());
    };
    if src.trailing_slash() && !sm.is_dir() {
        return Err(FsError::NotADirectory(src.shown.clone()));
    }
    let whole_root = s.path == Path::new("/");
    let d = dst.resolve()?;
    let (into, top) = match d.meta {
        Some(dm) if dm.is_dir() => {
            if sm.is_dir() && (src.contents() || whole_root) {
                (d.path.clone(), None)
            } else {
                (d.path.clone(), Some(src.base_name(&s)))
            }
        }
        Some(_) => {
            if sm.is_dir() {
                return Err(FsError::DirectoryOntoFile);
            }
            if dst.shown.ends_with('/') {
                return Err(FsError::NotADirectory(dst.shown.clone()));
            }
            (
                parent_of(&d.path),
                d.path.file_name().map(OsStr::to_os_string),
            )
        }
        None => {
            if dst.shown.ends_with('/') && !sm.is_dir() {
                return Err(dst.not_found());
            }
            (
                parent_of(&d.path),
                d.path.file_name().map(OsStr::to_os_string),
            )
        }
    };
    let (r, w) = pipe().map_err(io_err("creating a pipe"))?;
    std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            produce(
                src.root,
                &s,
                top.as_deref(),
                TarOptions::default(),
                io::BufWriter::with_capacity(256 * 1024, w),
            )
            .and_then(|mut w| w.flush())
        });
        let mut ex = Extractor {
            root: dst.root,
            base: into,
            owner,
            overwrite,
            dir_times: Vec::new(),
        };
        let res = ex.run(io::BufReader::with_capacity(256 * 1024, r), false);
        let produced = producer.join().expect("the tar producer does not panic");
        match (res, produced) {
            (_, Err(e)) if e.kind() != io::ErrorKind::BrokenPipe => {
                Err(io_err(format!("reading {}", src.shown))(e))
            }
            (Err(e), _) => Err(e),
            (Ok(_), _) => Ok(()),
        }
    })
}

fn parent_of(p: &Path) -> PathBuf {
    p.parent().unwrap_or(Path::new("/")).to_path_buf()
}

/// The caller's user and group (the rootless user namespace's root is the user).
fn caller_owner() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

impl Engine {
    /// `cp`: copies between a container and the host, between two containers, or
    /// between a container and a tar stream (`stdin`, `stdout`).
    pub fn copy(
        &self,
        src: &CpLocation,
        dst: &CpLocation,
        o: &CpOptions,
        stdin: &mut dyn Read,
        stdout: &mut dyn Write,
    ) -> Result<(), FsError> {
        use CpLocation::{Container, Host, Stream};
        match (src, dst) {
            (Stream, Stream) => Err(FsError::Invalid(
                "only one of SRC and DEST can be - (a tar stream)".into(),
            )),
            (Container { container, path }, Stream) => {
                let rec = self.container(container)?;
                self.with_root(&rec, |root| {
                    let side = Side {
                        root,
                        path: container_path(&rec, path),
                        shown: path.clone(),
                        container: Some(container.clone()),
                    };
                    let s = side.resolve()?;
                    let Some(sm) = s.meta else {
                        return Err(side.not_found());
                    };
                    if side.trailing_slash() && !sm.is_dir() {
                        return Err(FsError::NotADirectory(side.shown.clone()));
                    }
                    let top = if sm.is_dir() && (side.contents() || s.path == Path::new("/")) {
                        None
                    } else {
                        Some(side.base_name(&s))
                    };
                    let out = io::BufWriter::with_capacity(256 * 1024, &mut *stdout);
                    produce(root, &s, top.as_deref(), TarOptions::default(), out)
                        .and_then(|mut w| w.flush())
                        .map_err(io_err("writing the archive"))
                })
            }
            (Stream, Container { container, path }) => {
                let rec = self.container(container)?;
                self.with_root(&rec, |root| {
                    let side = Side {
                        root,
                        path: container_path(&rec, path),
                        shown: path.clone(),
                        container: Some(container.clone()),
                    };
                    let d = side.resolve().map_err(|_| FsError::StdinDestination)?;
                    if !d.meta.is_some_and(|m| m.is_dir()) {
                        return Err(FsError::StdinDestination);
                    }
                    let owner = o.archive.then(|| container_owner(root, &rec));
                    let decoder = sniffing_decoder(io::BufReader::new(stdin))
                        .map_err(|_| FsError::NotATar)?;
                    let mut ex = Extractor {
                        root,
                        base: d.path,
                        owner,
                        overwrite: o.overwrite,
                        dir_times: Vec::new(),
                    };
                    ex.run(decoder, true).map(|_| ())
                })
            }
            (Container { container, path }, Host(h)) => {
                let rec = self.container(container)?;
                let host = Root::open(Path::new("/"), Vec::new()).map_err(io_err("opening /"))?;
                let dst = Side {
                    root: &host,
                    path: host_path(h)?,
                    shown: h.clone(),
                    container: None,
                };
                self.with_root(&rec, |root| {
                    let src = Side {
                        root,
                        path: container_path(&rec, path),
                        shown: path.clone(),
                        container: Some(container.clone()),
                    };
                    copy_between(&src, &dst, o.archive.then(caller_owner), o.overwrite)
                })
            }
            (Host(h), Container { container, path }) => {
                let rec = self.container(container)?;
                let host = Root::open(Path::new("/"), Vec::new()).map_err(io_err("opening /"))?;
                let src = Side {
                    root: &host,
                    path: host_path(h)?,
                    shown: h.clone(),
                    container: None,
                };
                // A missing source fails before the container's filesystem is touched.
                if src.resolve()?.meta.is_none() {
                    return Err(src.not_found());
                }
                self.with_root(&rec, |root| {
                    let dst = Side {
                        root,
                        path: container_path(&rec, path),
                        shown: path.clone(),
                        container: Some(container.clone()),
                    };
                    let owner = o.archive.then(|| container_owner(root, &rec));
                    copy_between(&src, &dst, owner, o.overwrite)
                })
            }
            (
                Container {
                    container: a,
                    path: pa,
                },
                Container {
                    container: b,
                    path: pb,
                },
            ) => {
                let ra = self.container(a)?;
                let rb = self.container(b)?;
                let run = |src_root: &Root, dst_root: &Root| {
                    let src = Side {
                        root: src_root,
                        path: container_path(&ra, pa),
                        shown: pa.clone(),
                        container: Some(a.clone()),
                    };
                    let dst = Side {
                        root: dst_root,
                        path: container_path(&rb, pb),
                        shown: pb.clone(),
                        container: Some(b.clone()),
                    };
                    let owner = o.archive.then(|| container_owner(dst_root, &rb));
                    copy_between(&src, &dst, owner, o.overwrite)
                };
                if ra.id == rb.id {
                    self.with_root(&ra, |r| run(r, r))
                } else if ra.id < rb.id {
                    // Records are locked in ID order, so two copies cannot deadlock.
                    self.with_root(&ra, |x| self.with_root(&rb, |y| run(x, y)))
                } else {
                    self.with_root(&rb, |y| self.with_root(&ra, |x| run(x, y)))
                }
            }
            _ => Err(FsError::NoContainer),
        }
    }

    /// Runs `f` on the container's root filesystem with its volumes and bind mounts.
    fn with_root<T>(
        &self,
        rec: &ContainerRecord,
        f: impl FnOnce(&Root) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        let running = rec.mounted && matches!(rec.status, Status::Running | Status::Paused);
        if running && let Some(root) = self.namespace_root(rec) {
            return f(&root);
        }
        let mounts = match running {
            // The bundle also has the generated /etc/hosts, resolv.conf and hostname.
            true => self
                .bundle_mounts(rec)
                .unwrap_or_else(|| config_mounts(rec)),
            false => config_mounts(rec),
        };
        self.with_rootfs(rec, |merged| {
            let root = Root::open(merged, mounts)
                .map_err(io_err(format!("opening {}", merged.display())))?;
            f(&root)
        })
    }

    /// A running container's root as its processes see it, every mount of its mount
    /// namespace included (`--tmpfs`, volumes, the generated /etc files), so copies land
    /// where the container looks and a read-only mount stays read-only. Podman enters
    /// the mount namespace for this; a directory fd from `/proc/<pid>/root` walks the
    /// same mount tree without moving a thread of ours into it. `None` when the process
    /// is gone, or when its pid was reused by another process (whose root is not this
    /// container's `merged`).
    fn namespace_root(&self, rec: &ContainerRecord) -> Option<Root> {
        if rec.pid <= 0 {
            return None;
        }
        let proc_root = format!("/proc/{}/root", rec.pid);
        let fd = rustix::fs::open(
            proc_root.as_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .inspect_err(|e| tracing::debug!("opening {proc_root}: {e}"))
        .ok()?;
        let theirs = fstat(fd.as_fd()).ok()?;
        let ours = std::fs::metadata(self.container_dir(&rec.id).join("merged")).ok()?;
        (theirs.dev == ours.dev() && theirs.ino == ours.ino()).then(|| Root {
            fd,
            mounts: Vec::new(),
        })
    }

    /// Runs `f` with the container's root filesystem mounted: the running container's
    /// own mount, or one made for `f` (under the record's lock) and removed after it.
    fn with_rootfs<T>(
        &self,
        rec: &ContainerRecord,
        f: impl FnOnce(&Path) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        let cdir = self.container_dir(&rec.id);
        let merged = cdir.join("merged");
        if rec.mounted && is_mountpoint(&merged, &cdir) {
            return f(&merged);
        }
        let lowers = self.lowers(rec)?;
        let rootless = self.store.rootless();
        self.containers()?
            .update(&rec.id, |r| -> Result<T, FsError> {
                // A start that won the lock mounted it meanwhile; that mount is its own.
                let borrowed = r.mounted && is_mountpoint(&merged, &cdir);
                let (m, driver) = if borrowed {
                    (
                        merged.clone(),
                        r.rootfs_mount.unwrap_or(MountDriver::Overlay),
                    )
                } else {
                    let (m, d) = rootfs::mount(&lowers, &cdir, rootless, r.rootfs_mount)?;
                    // A copy made here is the container's content from now on.
                    r.rootfs_mount = Some(d);
                    (m, d)
                };
                let out = f(&m);
                if !borrowed && let Err(e) = rootfs::unmount(driver, &m) {
                    tracing::warn!("{e}");
                }
                out
            })?
    }

    /// The container's changes as an overlay upper directory (see [`rootfs::upper_view`]).
    pub(crate) fn upper_view(
        &self,
        rec: &ContainerRecord,
        lowers: &[PathBuf],
    ) -> Result<rootfs::UpperView, FsError> {
        let driver = rec.rootfs_mount.unwrap_or(MountDriver::Overlay);
        Ok(rootfs::upper_view(
            driver,
            lowers,
            &self.container_dir(&rec.id),
            self.xattr_prefix(),
        )?)
    }

    /// The bytes of files the container added or changed (`ps -s`, `SizeRw`); 0 when
    /// they cannot be read.
    pub fn container_rw_size(&self, rec: &ContainerRecord) -> u64 {
        let Ok(lowers) = self.lowers(rec) else {
            return 0;
        };
        let Ok(view) = self.upper_view(rec, &lowers) else {
            return 0;
        };
        let mut total = 0;
        let mut stack = vec![view.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                match e.metadata() {
                    Ok(m) if m.is_dir() => stack.push(e.path()),
                    Ok(m) => total += m.len(),
                    Err(_) => {}
                }
            }
        }
        total
    }

    /// The container's image layers, bottom first.
    pub(crate) fn lowers(&self, rec: &ContainerRecord) -> Result<Vec<PathBuf>, FsError> {
        let img = self.lookup_image(&rec.image_id)?;
        let lowers = self
            .rootfs_lowers(&img)
            .map_err(|e| FsError::from(EngineError::from(e)))?;
        // The layers a container with its own user namespace runs on: id-shifted.
        crate::container::idmap::container_lowers(self, rec, lowers)
            .map_err(|e| FsError::Container(e.into()))
    }

    fn xattr_prefix(&self) -> &'static str {
        match self.store.whiteout_mode() {
            WhiteoutMode::Overlay { xattr_prefix } => xattr_prefix,
            WhiteoutMode::Apply => "trusted.",
        }
    }
}

/// The volumes and bind mounts the container was created with.
fn config_mounts(rec: &ContainerRecord) -> Vec<MountPoint> {
    rec.config
        .mounts
        .iter()
        .filter(|m| matches!(m.kind, MountKind::Bind | MountKind::Volume))
        .filter(|m| m.source.starts_with('/'))
        .map(|m| MountPoint {
            dest: clean_abs(&m.destination),
            source: PathBuf::from(&m.source),
        })
        .collect()
}

/// The bind mounts of the running bundle (`config.json`), outside the kernel's own
/// filesystems.
fn bind_mounts_of_spec(spec: &Value) -> Vec<MountPoint> {
    let mut out = Vec::new();
    for m in spec["mounts"].as_array().into_iter().flatten() {
        let options: Vec<&str> = m["options"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let bind = m["type"] == "bind" || options.iter().any(|o| *o == "bind" || *o == "rbind");
        let (Some(dest), Some(source)) = (m["destination"].as_str(), m["source"].as_str()) else {
            continue;
        };
        let dest = clean_abs(dest);
        let kernel = ["/dev", "/proc", "/sys"]
            .iter()
            .any(|k| dest.starts_with(k));
        if bind && source.starts_with('/') && !kernel {
            out.push(MountPoint {
                dest,
                source: PathBuf::from(source),
            });
        }
    }
    out
}

impl Engine {
    fn bundle_mounts(&self, rec: &ContainerRecord) -> Option<Vec<MountPoint>> {
        let bytes = std::fs::read(self.container_dir(&rec.id).join("config.json")).ok()?;
        let spec: Value = serde_json::from_slice(&bytes).ok()?;
        Some(bind_mounts_of_spec(&spec))
    }
}

fn clean_abs(p: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in components(p.as_bytes()) {
        if c == ".." {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out
}

fn is_mountpoint(path: &Path, parent: &Path) -> bool {
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

/// The container's user and group, as its own passwd and group files say (read
/// through the root, so a symlinked /etc/passwd cannot point at the host's).
fn container_owner(root: &Root, rec: &ContainerRecord) -> (u32, u32) {
    let files = || -> io::Result<(u32, u32)> {
        let t = tempfile::tempdir()?;
        std::fs::create_dir(t.path().join("etc"))?;
        std::fs::write(t.path().join("etc/passwd"), root.read_file("/etc/passwd"))?;
        std::fs::write(t.path().join("etc/group"), root.read_file("/etc/group"))?;
        resolve_user(t.path(), &rec.config.user)
            .map(|(u, g, _)| (u, g))
            .map_err(|e| io::Error::other(e.to_string()))
    };
    files().unwrap_or_else(|e| {
        tracing::warn!("copied files belong to root: cannot resolve the container's user: {e}");
        (0, 0)
    })
}

// ---- diff ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    Modified,
    Added,
    Deleted,
}

impl ChangeKind {
    /// Podman's letter: C, A or D.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modified => 'C',
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub path: String,
}

/// Files the engine or the runtime put in every container; Podman leaves them out of
/// `diff` too.
const INIT_PATHS: &[&str] = &[
    "/dev",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/mtab",
    "/proc",
    "/run",
    "/run/.containerenv",
    "/run/notify",
    "/run/secrets",
    "/sys",
];

/// What a path is in a stack of overlay layers (top first), whiteouts and opaque
/// directories applied; `None` when it does not exist there.
pub(crate) fn lower_meta(lowers: &[PathBuf], rel: &Path, prefix: &str) -> Option<Meta> {
    let comps: Vec<_> = rel.components().collect();
    for layer in lowers {
        let mut hides_below = false;
        let mut dir = layer.clone();
        let mut present = true;
        for c in &comps[..comps.len().saturating_sub(1)] {
            dir.push(c);
            match std::fs::symlink_metadata(&dir) {
                Err(_) => {
                    present = false;
                    break;
                }
                Ok(m) => {
                    let m = Meta::of_std(&m);
                    if !m.is_dir() {
                        // A whiteout or a non-directory here hides the path in every
                        // layer below.
                        return None;
                    }
                    if is_opaque_path(&dir, prefix) {
                        hides_below = true;
                    }
                }
            }
        }
        if present && let Ok(m) = std::fs::symlink_metadata(layer.join(rel)) {
            let m = Meta::of_std(&m);
            return (!m.is_whiteout()).then_some(m);
        }
        if hides_below {
            return None;
        }
    }
    None
}

/// Same directory, as far as Docker's change detection looks: mode, size, mtime.
pub(crate) fn same_dir(a: &Meta, b: &Meta) -> bool {
    a.mode == b.mode
        && a.size == b.size
        && a.mtime == b.mtime
        && (a.mtime_nsec == b.mtime_nsec || a.mtime_nsec == 0 || b.mtime_nsec == 0)
}

struct DiffWalk<'a> {
    lowers: &'a [PathBuf],
    prefix: &'static str,
    out: Vec<Change>,
    changed_dirs: HashSet<PathBuf>,
}

impl DiffWalk<'_> {
    /// Docker's overlay change detection over one directory of the upper layer.
    fn dir(&mut self, fd: BorrowedFd, rel: &Path, in_opaque: bool) -> io::Result<()> {
        for name in list_dir(fd)? {
            if is_fuse_marker(&name) {
                continue;
            }
            let path = rel.join(&name);
            let Some(m) = lstat_at(fd, &name)? else {
                continue;
            };
            let mut sub = None;
            let mut opaque = false;
            if m.is_dir() {
                let d = open_read_dir(fd, &name)?;
                opaque = is_opaque_fd(d.as_fd(), self.prefix);
                sub = Some(d);
            }
            let lower = if in_opaque {
                None
            } else {
                lower_meta(self.lowers, &path, self.prefix)
            };
            // An opaque directory replaces one below; with nothing below it is simply
            // new (fuse-overlayfs marks every directory it creates opaque).
            let kind = if m.is_whiteout() || (opaque && lower.is_some()) {
                Some(ChangeKind::Deleted)
            } else {
                match lower {
                    None => Some(ChangeKind::Added),
                    Some(l) if m.is_dir() && l.is_dir() && same_dir(&m, &l) => None,
                    Some(_) => Some(ChangeKind::Modified),
                }
            };
            if let Some(kind) = kind {
                let abs = Path::new("/").join(&path);
                if m.is_dir() {
                    self.changed_dirs.insert(abs.clone());
                }
                // A directory with an entry added or deleted is changed, even when its
                // own times say otherwise.
                if kind != ChangeKind::Modified
                    && !rel.as_os_str().is_empty()
                    && self.changed_dirs.insert(Path::new("/").join(rel))
                {
                    self.out.push(Change {
                        kind: ChangeKind::Modified,
                        path: Path::new("/").join(rel).to_string_lossy().into_owned(),
                    });
                }
                self.out.push(Change {
                    kind,
                    path: abs.to_string_lossy().into_owned(),
                });
            }
            if let Some(d) = sub {
                self.dir(d.as_fd(), &path, in_opaque || opaque)?;
            }
        }
        Ok(())
    }
}

/// The changes an overlay upper directory makes to `lowers` (bottom first), sorted
/// by path as Podman sorts them.
pub(crate) fn layer_changes(
    upper: &Path,
    lowers: &[PathBuf],
    prefix: &'static str,
) -> io::Result<Vec<Change>> {
    let top_first: Vec<PathBuf> = lowers.iter().rev().cloned().collect();
    let mut w = DiffWalk {
        lowers: &top_first,
        prefix,
        out: Vec::new(),
        changed_dirs: HashSet::new(),
    };
    let fd = match rustix::fs::open(
        upper,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    w.dir(fd.as_fd(), Path::new(""), false)?;
    w.out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(w.out)
}

impl Engine {
    /// `diff CONTAINER`: what the container changed, added and deleted.
    pub fn container_changes(&self, input: &str) -> Result<Vec<Change>, FsError> {
        let rec = self.container(input)?;
        let lowers = self.lowers(&rec)?;
        let view = self.upper_view(&rec, &lowers)?;
        let upper = view.path();
        let changes = layer_changes(upper, &lowers, self.xattr_prefix())
            .map_err(io_err(format!("reading {}", upper.display())))?;
        Ok(changes
            .into_iter()
            .filter(|c| !INIT_PATHS.contains(&c.path.as_str()))
            .collect())
    }

    /// `diff IMAGE`: what the image's top layer changes.
    pub fn image_changes(&self, input: &str) -> Result<Vec<Change>, FsError> {
        let img = self.lookup_image(input)?;
        let mut dirs = img
            .layers
            .iter()
            .map(|l| self.store.layer_diff(l))
            .collect::<Result<Vec<_>, _>>()
            .map_err(EngineError::from)?;
        let Some(top) = dirs.pop() else {
            return Ok(Vec::new());
        };
        layer_changes(&top, &dirs, self.xattr_prefix())
            .map_err(io_err(format!("reading {}", top.display())))
    }
}

// ---- export ----

impl Engine {
    /// `export`: the container's root filesystem as a tar stream.
    pub fn export_container(&self, input: &str, out: &mut dyn Write) -> Result<(), FsError> {
        let rec = self.container(input)?;
        self.with_rootfs(&rec, |merged| {
            let root = Root::open(merged, Vec::new())
                .map_err(io_err(format!("opening {}", merged.display())))?;
            let top = root
                .resolve(Path::new("/"), true)
                .map_err(io_err(format!("opening {}", merged.display())))?;
            let w = io::BufWriter::with_capacity(256 * 1024, &mut *out);
            let opts = TarOptions {
                owners: rec.config.idmappings.clone(),
                ..TarOptions::default()
            };
            produce(&root, &top, None, opts, w)
                .and_then(|mut w| w.flush())
                .map_err(io_err("writing the archive"))
        })
    }
}

// ---- commit ----

#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The new image's name; none leaves it dangling.
    pub reference: Option<String>,
    pub author: Option<String>,
    /// Only in the docker format (Podman refuses it with oci).
    pub message: Option<String>,
    /// Dockerfile instructions applied to the config (`CMD ["sh"]`, `ENV A=b`, …).
    pub changes: Vec<String>,
    /// Pause a running container while its changes are read.
    pub pause: bool,
    /// `oci` (default) or `docker`.
    pub format: String,
    /// Volumes of the container become the image's VOLUMEs.
    pub include_volumes: bool,
    /// `--squash`: the image's layers and the container's changes become one layer
    /// (the container's whole root filesystem), and the history one entry, as Podman's.
    pub squash: bool,
}

/// The image config object for a commit: the image's, updated with what the container
/// was created with.
fn committed_config(
    base: Option<&Value>,
    rec: &ContainerRecord,
    o: &CommitOptions,
) -> Result<Map<String, Value>, FsError> {
    let mut cfg = base.and_then(Value::as_object).cloned().unwrap_or_default();
    let c = &rec.config;
    let keep_stop_signal =
        !c.stop_signal.is_empty() && (cfg.contains_key("StopSignal") || c.stop_signal != "SIGTERM");
    let mut set = |key: &str, v: Option<Value>| match v {
        Some(v) => {
            cfg.insert(key.into(), v);
        }
        None => {
            cfg.remove(key);
        }
    };
    set("Env", (!c.env.is_empty()).then(|| json!(c.env)));
    set("Cmd", (!c.cmd.is_empty()).then(|| json!(c.cmd)));
    set(
        "Entrypoint",
        (!c.entrypoint.is_empty()).then(|| json!(c.entrypoint)),
    );
    set("User", (!c.user.is_empty()).then(|| json!(c.user)));
    if !c.workdir.is_empty() {
        set("WorkingDir", Some(json!(c.workdir)));
    }
    set(
        "Labels",
        (!rec.labels.is_empty()).then(|| json!(rec.labels)),
    );
    let mut ports = Map::new();
    for p in &c.exposed {
        ports.insert(p.clone(), json!({}));
    }
    for p in &c.ports {
        for i in 0..p.range.max(1) {
            ports.insert(
                format!("{}/{}", p.container_port.saturating_add(i), p.protocol),
                json!({}),
            );
        }
    }
    if !ports.is_empty() {
        set("ExposedPorts", Some(Value::Object(ports)));
    }
    if keep_stop_signal {
        set("StopSignal", Some(json!(c.stop_signal)));
    }
    if o.include_volumes {
        let mut vols = cfg
            .get("Volumes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for m in c.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
            vols.insert(m.destination.clone(), json!({}));
        }
        if !vols.is_empty() {
            cfg.insert("Volumes".into(), Value::Object(vols));
        }
    }
    for change in &o.changes {
        apply_change(&mut cfg, change)?;
    }
    Ok(cfg)
}

/// A layer descriptor's media type in the other manifest format.
fn convert_layer_type(mt: &str, docker: bool) -> Result<String, FsError> {
    let gzip = [media::OCI_LAYER_GZIP, media::DOCKER_LAYER_GZIP];
    let plain = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.docker.image.rootfs.diff.tar",
    ];
    Ok(match (docker, mt) {
        (true, m) if gzip.contains(&m) => media::DOCKER_LAYER_GZIP.into(),
        (false, m) if gzip.contains(&m) => media::OCI_LAYER_GZIP.into(),
        (true, m) if plain.contains(&m) => plain[1].into(),
        (false, m) if plain.contains(&m) => plain[0].into(),
        (false, m) => m.to_string(),
        (true, m) => {
            return Err(FsError::Invalid(format!(
                "the image's layer media type {m} has no Docker schema 2 equivalent: commit with --format oci"
            )));
        }
    })
}

impl Engine {
    /// `commit`: a new image of the container's image layers and one more layer with
    /// what the container changed (with `squash`, of one layer holding it all); returns
    /// its record.
    pub fn commit_container(
        &self,
        input: &str,
        o: &CommitOptions,
        progress: &dyn Progress,
    ) -> Result<ImageRecord, FsError> {
        let docker = match o.format.as_str() {
            "" | "oci" => false,
            "docker" => true,
            other => {
                return Err(FsError::Invalid(format!(
                    "unrecognized image format {other:?}"
                )));
            }
        };
        if !docker && o.message.as_deref().is_some_and(|m| !m.is_empty()) {
            return Err(FsError::Invalid(
                "messages are only compatible with the docker image format (-f docker)".into(),
            ));
        }
        let names: Vec<String> = match &o.reference {
            Some(r) => vec![crate::image::ops::normalize_tag(r)?],
            None => Vec::new(),
        };
        let rec = self.container(input)?;
        let img = self.lookup_image(&rec.image_id)?;
        let base = self.image_config(&img)?;
        let (base_manifest, _) = self.image_manifest(&img)?;
        let cfg = committed_config(base.config.as_ref(), &rec, o)?;
        let mut layers = Vec::new();
        for l in base_manifest.layers.iter().filter(|_| !o.squash) {
            let mut l = l.clone();
            l.media_type = convert_layer_type(&l.media_type, docker)?;
            layers.push(l);
        }

        let _content = self.store.content_lock().map_err(EngineError::from)?;
        progress.message("Getting image source signatures");
        let pause = o.pause && rec.status == Status::Running;
        if pause {
            self.runtime_action(&rec, "pause")?;
        }
        let written = if o.squash {
            self.write_squashed_layer(&rec)
        } else {
            self.write_upper_layer(&rec)
        };
        if pause && let Err(e) = self.runtime_action(&rec, "resume") {
            tracing::warn!("{e}");
        }
        let (layer_digest, layer_size, diff_id) = written?;
        for l in &layers {
            progress.blob_start(&l.digest, Some(l.size));
            progress.blob_done(&l.digest, false);
        }
        progress.blob_start(&layer_digest, Some(layer_size));
        progress.blob_done(&layer_digest, false);
        layers.push(Descriptor {
            media_type: if docker {
                media::DOCKER_LAYER_GZIP
            } else {
                media::OCI_LAYER_GZIP
            }
            .into(),
            digest: layer_digest,
            size: layer_size,
            platform: None,
            annotations: None,
            urls: None,
        });

        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut history = if o.squash {
            Vec::new()
        } else {
            base.history.clone()
        };
        history.push(History {
            created: Some(now.clone()),
            created_by: Some(rec.command.join(" ")),
            author: o.author.clone(),
            comment: Some(format!("FROM {}", rec.image_name)),
            empty_layer: false,
        });
        let mut extra = base.extra.clone();
        if docker && let Some(m) = &o.message {
            extra.insert("comment".into(), json!(m));
        }
        let mut diff_ids = if o.squash {
            Vec::new()
        } else {
            base.rootfs.diff_ids.clone()
        };
        diff_ids.push(diff_id);
        let config = ImageConfig {
            created: Some(now),
            author: o.author.clone().or(base.author.clone()),
            architecture: base.architecture.clone(),
            os: base.os.clone(),
            variant: base.variant.clone(),
            config: Some(Value::Object(cfg)),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids,
            },
            history,
            extra,
        };
        let cfg_bytes = serde_json::to_vec(&config).expect("a config serialises");
        let cfg_digest = self
            .store
            .put_blob(&cfg_bytes, None)
            .map_err(EngineError::from)?;
        progress.message(&format!("Copying config {cfg_digest}"));
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(
                if docker {
                    media::DOCKER_MANIFEST
                } else {
                    media::OCI_MANIFEST
                }
                .into(),
            ),
            config: Descriptor {
                media_type: if docker {
                    media::DOCKER_CONFIG
                } else {
                    media::OCI_CONFIG
                }
                .into(),
                digest: cfg_digest,
                size: cfg_bytes.len() as u64,
                platform: None,
                annotations: None,
                urls: None,
            },
            layers,
            annotations: None,
        };
        progress.message("Writing manifest to image destination");
        let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serialises");
        let rec = self.commit_image(&manifest_bytes, &manifest, &config, names, None)?;
        progress.message("Storing signatures");
        Ok(rec)
    }

    /// The container's upper directory as a gzip'd layer blob, whiteouts in the
    /// archive's form; returns the blob's digest and size and the diff ID.
    fn write_upper_layer(&self, rec: &ContainerRecord) -> Result<(String, u64, String), FsError> {
        let lowers = self.lowers(rec)?;
        let view = self.upper_view(rec, &lowers)?;
        let upper = view.path().to_path_buf();
        if !upper.is_dir() {
            std::fs::create_dir_all(&upper)
                .map_err(io_err(format!("creating {}", upper.display())))?;
        }
        let opts = TarOptions {
            whiteouts: Some(self.xattr_prefix()),
            owners: rec.config.idmappings.clone(),
        };
        self.write_layer(&upper, opts)
    }

    /// The container's root filesystem as it is now (image layers and changes merged,
    /// without the container's mounts) as one gzip'd layer blob, for `commit --squash`.
    fn write_squashed_layer(
        &self,
        rec: &ContainerRecord,
    ) -> Result<(String, u64, String), FsError> {
        // The mount in capsa's namespace: the container's own mounts (volumes, tmpfs,
        // the generated /etc files) are not part of it, as they are not of the image.
        self.with_rootfs(rec, |merged| {
            let opts = TarOptions {
                owners: rec.config.idmappings.clone(),
                ..TarOptions::default()
            };
            self.write_layer(merged, opts)
        })
    }

    /// The tree at `dir` as a gzip'd layer blob; returns the blob's digest and size and
    /// the diff ID.
    fn write_layer(&self, dir: &Path, opts: TarOptions) -> Result<(String, u64, String), FsError> {
        let root =
            Root::open(dir, Vec::new()).map_err(io_err(format!("opening {}", dir.display())))?;
        let top = root
            .resolve(Path::new("/"), true)
            .map_err(io_err(format!("opening {}", dir.display())))?;
        let blob = self.store.blob_writer().map_err(EngineError::from)?;
        let gz = flate2::write::GzEncoder::new(blob, flate2::Compression::fast());
        let what = format!("archiving {}", dir.display());
        let hashing = produce(&root, &top, None, opts, HashingWriter::new(gz))
            .map_err(io_err(what.clone()))?;
        let (diff_id, _, gz) = hashing.finish();
        let blob = gz.finish().map_err(io_err(what))?;
        let digest = blob.commit(None).map_err(EngineError::from)?;
        let size = std::fs::metadata(self.store.blob_path(&digest).map_err(EngineError::from)?)
            .map(|m| m.len())
            .unwrap_or(0);
        Ok((digest, size, diff_id))
    }

    /// `pause` or `resume` through the container's OCI runtime.
    fn runtime_action(&self, rec: &ContainerRecord, action: &'static str) -> Result<(), FsError> {
        let rt = self.runtime_for(rec)?;
        let args: Vec<std::ffi::OsString> = vec![
            rt.path.clone().into(),
            "--root".into(),
            rt.state_root.clone().into(),
            action.into(),
            rec.id.clone().into(),
        ];
        rt.run(action, &rec.id, &args)
            .map_err(ContainerError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn errno_of<T>(r: io::Result<T>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    /// `base/root` with an `etc/passwd` inside and a marker file next to the root.
    fn tree() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(root.join("etc/passwd"), "inside\n").unwrap();
        std::fs::write(t.path().join("outside.txt"), "outside\n").unwrap();
        (t, root)
    }

    #[test]
    fn symlinks_and_dotdot_stay_inside_the_root() {
        let (_t, dir) = tree();
        symlink("/etc/../../../", dir.join("esc")).unwrap();
        symlink("../../../..", dir.join("tmp/rel")).unwrap();
        symlink("/etc", dir.join("abs")).unwrap();
        symlink("../outside.txt", dir.join("up")).unwrap();
        symlink("loop2", dir.join("loop1")).unwrap();
        symlink("loop1", dir.join("loop2")).unwrap();
        let root = Root::open(&dir, Vec::new()).unwrap();
        let path_of = |p: &str| root.resolve(Path::new(p), true).unwrap().path;
        for p in [
            "/esc/etc/passwd",
            "/../../../etc/passwd",
            "etc/../../etc/passwd",
            "/tmp/rel/etc/passwd",
            "/abs/passwd",
            "/esc/esc/abs/../etc/passwd",
        ] {
            assert_eq!(path_of(p), Path::new("/etc/passwd"), "{p}");
        }
        assert_eq!(root.read_file("/esc/etc/passwd"), b"inside\n");
        // A symlink to the root's parent names a file in the root, which is missing.
        let up = root.resolve(Path::new("/up"), true).unwrap();
        assert_eq!(up.path, Path::new("/outside.txt"));
        assert!(up.meta.is_none());
        assert!(root.read_file("/up").is_empty());
        // Not following the last component gives the link itself.
        let esc = root.resolve(Path::new("/esc"), false).unwrap();
        assert_eq!(esc.meta.unwrap().kind(), FileType::Symlink);
        assert_eq!(path_of("/esc"), Path::new("/"));
        assert_eq!(
            errno_of(root.resolve(Path::new("/loop1/x"), true)),
            Some(libc::ELOOP)
        );
        assert_eq!(
            errno_of(root.resolve(Path::new("/etc/passwd/x"), true)),
            Some(libc::ENOTDIR)
        );
        assert_eq!(
            errno_of(root.resolve(Path::new("/nope/x"), true)),
            Some(libc::ENOENT)
        );
        assert!(
            root.resolve(Path::new("/nope"), true)
                .unwrap()
                .meta
                .is_none()
        );
    }

    #[test]
    fn mounts_are_entered_on_the_way() {
        let (t, dir) = tree();
        let vol = t.path().join("vol");
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        std::fs::write(vol.join("sub/f"), "in the volume").unwrap();
        std::fs::create_dir(dir.join("data")).unwrap();
        let root = Root::open(
            &dir,
            vec![MountPoint {
                dest: "/data".into(),
                source: vol.clone(),
            }],
        )
        .unwrap();
        assert_eq!(root.read_file("/data/sub/f"), b"in the volume");
        assert_eq!(root.read_file("/data/sub/../../etc/passwd"), b"inside\n");
        let fd = root.ensure_dir(Path::new("/data/new/dir"), None).unwrap();
        drop(fd);
        assert!(vol.join("new/dir").is_dir());
        assert!(!dir.join("data/new").exists());
    }

    #[test]
    fn bundle_bind_mounts_without_kernel_filesystems() {
        let spec = json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev/null", "type": "bind", "source": "/dev/null", "options": ["rbind"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "/run/x/hosts", "options": ["bind"]},
            {"destination": "/data/", "source": "/srv/vol", "options": ["rw", "rbind"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
        ]});
        let got: Vec<(PathBuf, PathBuf)> = bind_mounts_of_spec(&spec)
            .into_iter()
            .map(|m| (m.dest, m.source))
            .collect();
        assert_eq!(
            got,
            [
                ("/etc/hosts".into(), "/run/x/hosts".into()),
                ("/data".into(), "/srv/vol".into())
            ]
        );
    }

    fn host_side<'a>(root: &'a Root, p: &str) -> Side<'a> {
        Side {
            root,
            path: Path::new("/").join(p.trim_end_matches('/')),
            shown: p.to_string(),
            container: None,
        }
    }

    fn ctr_side<'a>(root: &'a Root, p: &str) -> Side<'a> {
        Side {
            container: Some("ctr".into()),
            ..host_side(root, p)
        }
    }

    #[test]
    fn copies_follow_docker_rules() {
        let s = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let sp = s.path();
        std::fs::create_dir_all(sp.join("dir/sub")).unwrap();
        std::fs::write(sp.join("dir/a"), "a").unwrap();
        std::fs::write(sp.join("dir/sub/b"), "b").unwrap();
        std::fs::hard_link(sp.join("dir/a"), sp.join("dir/a2")).unwrap();
        symlink("/dir/a", sp.join("dir/alink")).unwrap();
        symlink("dir", sp.join("dirlink")).unwrap();
        std::fs::write(sp.join("file"), "f").unwrap();
        std::fs::create_dir(d.path().join("existing")).unwrap();
        std::fs::write(d.path().join("afile"), "old").unwrap();
        let src = Root::open(sp, Vec::new()).unwrap();
        let dst = Root::open(d.path(), Vec::new()).unwrap();
        let dp = |p: &str| d.path().join(p);
        let cp = |from: &str, to: &str, overwrite: bool| {
            copy_between(&ctr_side(&src, from), &host_side(&dst, to), None, overwrite)
        };
        cp("/file", "/existing", false).unwrap();
        assert_eq!(std::fs::read(dp("existing/file")).unwrap(), b"f");
        cp("/file", "/renamed", false).unwrap();
        assert_eq!(std::fs::read(dp("renamed")).unwrap(), b"f");
        cp("/file", "/afile", false).unwrap();
        assert_eq!(std::fs::read(dp("afile")).unwrap(), b"f");
        cp("/dir", "/existing", false).unwrap();
        assert_eq!(std::fs::read(dp("existing/dir/sub/b")).unwrap(), b"b");
        let a = std::fs::metadata(dp("existing/dir/a")).unwrap();
        let a2 = std::fs::metadata(dp("existing/dir/a2")).unwrap();
        assert_eq!(a.ino(), a2.ino(), "hard links stay linked");
        assert_eq!(
            std::fs::read_link(dp("existing/dir/alink")).unwrap(),
            Path::new("/dir/a"),
            "symlinks inside a copied directory stay links"
        );
        std::fs::create_dir(dp("contents")).unwrap();
        cp("/dir/.", "/contents", false).unwrap();
        assert!(dp("contents/sub/b").exists() && !dp("contents/dir").exists());
        cp("/dir/", "/newdir", false).unwrap();
        assert_eq!(std::fs::read(dp("newdir/a")).unwrap(), b"a");
        // A symlink named as the source is followed, and keeps its own name.
        cp("/dirlink", "/existing", false).unwrap();
        assert!(dp("existing/dirlink/sub/b").is_file());

        let err = cp("/dir", "/afile", false).unwrap_err();
        assert!(matches!(err, FsError::DirectoryOntoFile), "{err}");
        let err = cp("/file/", "/x", false).unwrap_err();
        assert_eq!(err.to_string(), "\"/file/\": not a directory");
        let err = cp("/nope", "/x", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"/nope\" could not be found on container ctr: no such file or directory"
        );
        let err = cp("/file", "/missing/x", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"/missing/x\" could not be found on the host: no such file or directory"
        );
        let err = cp("/file", "/nodir/", false).unwrap_err();
        assert!(matches!(err, FsError::NotOnHost(_)), "{err}");
        // A directory where the file goes is replaced only with --overwrite.
        std::fs::create_dir_all(dp("over/file")).unwrap();
        let err = cp("/file", "/over", false).unwrap_err();
        assert!(matches!(err, FsError::OverwriteDirectory(_)), "{err}");
        cp("/file", "/over", true).unwrap();
        assert_eq!(std::fs::read(dp("over/file")).unwrap(), b"f");
        std::fs::write(dp("over/dir"), "x").unwrap();
        let err = cp("/dir", "/over", false).unwrap_err();
        assert!(matches!(err, FsError::OverwriteNonDirectory(_)), "{err}");
        cp("/dir", "/over", true).unwrap();
        assert!(dp("over/dir/sub/b").is_file());
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, name, data).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, name, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn extraction_stays_inside_the_root() {
        let (t, dir) = tree();
        let root = Root::open(&dir, Vec::new()).unwrap();
        let unique = format!("capsa-fsops-escape-{}", std::process::id());
        let escape = format!("../../../../../../../../tmp/{unique}");
        let tar = tar_of(&[
            ("a", tar::EntryType::Symlink, "/"),
            ("b", tar::EntryType::Symlink, &escape),
            ("a/tmp/via-a", tar::EntryType::Regular, "x"),
            ("b", tar::EntryType::Regular, "replaces the link"),
            ("c", tar::EntryType::Symlink, "../.."),
            ("c/tmp/via-c", tar::EntryType::Regular, "y"),
            ("hard", tar::EntryType::Link, "c/tmp/via-c"),
        ]);
        let mut ex = Extractor {
            root: &root,
            base: "/tmp".into(),
            owner: None,
            overwrite: false,
            dir_times: Vec::new(),
        };
        ex.run(&tar[..], false).unwrap();
        assert_eq!(std::fs::read(dir.join("tmp/via-a")).unwrap(), b"x");
        assert_eq!(std::fs::read(dir.join("tmp/via-c")).unwrap(), b"y");
        assert_eq!(
            std::fs::read(dir.join("tmp/b")).unwrap(),
            b"replaces the link"
        );
        assert_eq!(std::fs::read(dir.join("tmp/hard")).unwrap(), b"y");
        assert!(!Path::new("/tmp").join(&unique).exists());
        assert!(!t.path().join("tmp").exists());
        // The tar crate refuses to write `..`, so the header is filled in by hand.
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..4].copy_from_slice(b"../x");
        h.set_mode(0o644);
        h.set_size(1);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"x"[..]).unwrap();
        let bad = b.into_inner().unwrap();
        let mut ex = Extractor {
            root: &root,
            base: "/".into(),
            owner: None,
            overwrite: false,
            dir_times: Vec::new(),
        };
        assert!(matches!(ex.run(&bad[..], false), Err(FsError::Invalid(_))));
        assert!(!t.path().join("x").exists());
        assert!(matches!(
            ex.run(&b"definitely not a tar archive, no no no"[..], true),
            Err(FsError::NotATar)
        ));
    }

    #[test]
    fn cp_arguments_parse_as_docker_reads_them() {
        assert_eq!(parse_cp_location("-"), CpLocation::Stream);
        assert_eq!(
            parse_cp_location("web:/etc"),
            CpLocation::Container {
                container: "web".into(),
                path: "/etc".into()
            }
        );
        assert_eq!(parse_cp_location("./a:b"), CpLocation::Host("./a:b".into()));
        assert_eq!(parse_cp_location("/x:y"), CpLocation::Host("/x:y".into()));
        assert_eq!(parse_cp_location("plain"), CpLocation::Host("plain".into()));
        assert_eq!(parse_cp_location(":x"), CpLocation::Host(":x".into()));
    }

    #[test]
    fn pax_records_count_their_own_length() {
        let mut out = Vec::new();
        pax_record(&mut out, "SCHILY.xattr.user.a", b"v");
        let text = String::from_utf8(out.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), out.len());
        let mut long = Vec::new();
        pax_record(&mut long, "k", &[b'x'; 95]);
        let text = String::from_utf8(long.clone()).unwrap();
        assert_eq!(
            text.split_once(' ').unwrap().0.parse::<usize>().unwrap(),
            long.len()
        );
    }

    fn entry_names(tar: &[u8]) -> Vec<String> {
        let mut ar = tar::Archive::new(tar);
        ar.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    /// What a container does to a lower layer, through a real overlay mount: `diff`
    /// reads it as Podman does, and the committed layer, applied by our unpacker and
    /// mounted again, gives back the same filesystem.
    #[test]
    fn overlay_changes_and_their_layer() {
        if !is_root() {
            eprintln!("SKIP overlay_changes_and_their_layer: mounting needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("lower");
        for d in ["bin", "etc", "usr/lib", "home/u", "var"] {
            std::fs::create_dir_all(lower.join(d)).unwrap();
        }
        for f in ["bin/ls", "etc/passwd", "usr/lib/x", "home/u/f"] {
            std::fs::write(lower.join(f), "old").unwrap();
        }
        let ctr = t.path().join("ctr");
        let merged = match rootfs::mount_with(
            MountDriver::Overlay,
            std::slice::from_ref(&lower),
            &ctr,
            false,
        ) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("SKIP overlay_changes_and_their_layer: no overlayfs here ({e})");
                return;
            }
        };
        let work = || -> io::Result<()> {
            std::fs::remove_file(merged.join("bin/ls"))?;
            std::fs::write(merged.join("etc/passwd"), "new")?;
            std::fs::remove_dir_all(merged.join("usr"))?;
            std::fs::create_dir(merged.join("usr"))?;
            std::fs::write(merged.join("usr/new"), "n")?;
            std::fs::remove_dir_all(merged.join("home/u"))?;
            std::fs::create_dir(merged.join("var/new"))?;
            std::fs::write(merged.join("var/new/f"), "f")?;
            std::fs::write(merged.join("added"), "a")?;
            Ok(())
        };
        let res = work();
        rootfs::unmount(MountDriver::Overlay, &merged).unwrap();
        res.unwrap();
        let changes: Vec<String> =
            layer_changes(&ctr.join("upper"), std::slice::from_ref(&lower), "trusted.")
                .unwrap()
                .iter()
                .map(|c| format!("{} {}", c.kind.letter(), c.path))
                .collect();
        assert_eq!(
            changes,
            [
                "A /added",
                "C /bin",
                "D /bin/ls",
                "C /etc/passwd",
                "C /home",
                "D /home/u",
                "D /usr",
                "A /usr/new",
                "C /var",
                "A /var/new",
                "A /var/new/f"
            ]
        );

        let upper = Root::open(&ctr.join("upper"), Vec::new()).unwrap();
        let top = upper.resolve(Path::new("/"), true).unwrap();
        let opts = TarOptions {
            whiteouts: Some("trusted."),
            ..TarOptions::default()
        };
        let tar = produce(&upper, &top, None, opts, Vec::new()).unwrap();
        let names = entry_names(&tar);
        for n in [
            "bin/.wh.ls",
            "home/.wh.u",
            "usr/.wh..wh..opq",
            "usr/new",
            "etc/passwd",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} not in {names:?}");
        }
        let layer = t.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        let unpack_opts = crate::layer::unpack::UnpackOptions {
            whiteouts: WhiteoutMode::Overlay {
                xattr_prefix: "trusted.",
            },
            rootless: false,
        };
        crate::layer::unpack::unpack(&tar[..], &layer, unpack_opts).unwrap();
        let again = rootfs::mount_with(
            MountDriver::Overlay,
            &[lower, layer],
            &t.path().join("again"),
            false,
        )
        .unwrap();
        let seen = (
            again.join("bin/ls").exists(),
            std::fs::read_to_string(again.join("etc/passwd")).ok(),
            again.join("usr/lib").exists(),
            again.join("usr/new").exists(),
            again.join("home/u").exists(),
            again.join("var/new/f").exists(),
        );
        rootfs::unmount(MountDriver::Overlay, &again).unwrap();
        assert_eq!(
            seen,
            (false, Some("new".to_string()), false, true, false, true)
        );
    }

    fn engine(t: &Path) -> Engine {
        Engine::open(crate::engine::EngineOptions {
            store: crate::store::StoreOptions {
                root: t.join("root"),
                runroot: t.join("run"),
                driver: Some(crate::store::Driver::Overlay),
                rootless: false,
            },
            auth_file: None,
        })
        .unwrap()
    }

    /// A one-layer image of a few files, imported into the store.
    fn image(e: &Engine, t: &Path) -> ImageRecord {
        let tar = tar_of(&[
            ("etc", tar::EntryType::Directory, ""),
            (
                "etc/passwd",
                tar::EntryType::Regular,
                "root:x:0:0::/root:/bin/sh\n",
            ),
            ("etc/group", tar::EntryType::Regular, "root:x:0:\n"),
            ("tmp", tar::EntryType::Directory, ""),
            ("bin", tar::EntryType::Directory, ""),
            ("bin/true", tar::EntryType::Regular, "#!/bin/sh\n"),
        ]);
        let path = t.join("rootfs.tar");
        std::fs::write(&path, tar).unwrap();
        let opts = crate::image::import::ImportOptions {
            reference: Some("fsops-base".into()),
            changes: vec!["CMD [\"/bin/true\"]".into()],
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(e.import(
            path.to_str().unwrap(),
            &opts,
            &crate::image::progress::NoProgress,
        ))
        .unwrap()
    }

    fn container(e: &Engine, img: &ImageRecord, name: &str) -> ContainerRecord {
        e.containers()
            .unwrap()
            .create(ContainerRecord {
                name: name.into(),
                image_id: img.id.clone(),
                image_name: "localhost/fsops-base:latest".into(),
                command: vec!["/bin/true".into()],
                created: chrono::Utc::now().to_rfc3339(),
                config: crate::container::state::ContainerConfig {
                    cmd: vec!["/bin/true".into()],
                    env: vec!["A=1".into()],
                    ..Default::default()
                },
                ..Default::default()
            })
            .unwrap()
    }

    /// cp, diff, export and commit on a container that never ran: its root filesystem
    /// is mounted for each operation and unmounted again.
    #[test]
    fn stopped_container_roundtrip() {
        if !is_root() {
            eprintln!("SKIP stopped_container_roundtrip: mounting needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let e = engine(t.path());
        let img = image(&e, t.path());
        let rec = container(&e, &img, "fs");
        let merged = e.container_dir(&rec.id).join("merged");
        let host = t.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("hello"), "hello from the host\n").unwrap();
        let ctr = |p: &str| CpLocation::Container {
            container: "fs".into(),
            path: p.into(),
        };
        let hostp = |p: &str| CpLocation::Host(host.join(p).display().to_string());
        let o = CpOptions::default();
        let (mut input, mut output) = (io::empty(), Vec::new());
        e.copy(&hostp("hello"), &ctr("/tmp/"), &o, &mut input, &mut output)
            .unwrap();
        assert!(!is_mountpoint(&merged, &e.container_dir(&rec.id)));
        // An escape through a symlink the container holds ends inside it.
        let links = tar_of(&[("esc", tar::EntryType::Symlink, "/etc/../../../")]);
        e.copy(
            &CpLocation::Stream,
            &ctr("/"),
            &o,
            &mut &links[..],
            &mut output,
        )
        .unwrap();
        e.copy(
            &hostp("hello"),
            &ctr("/esc/tmp/escaped"),
            &o,
            &mut input,
            &mut output,
        )
        .unwrap();
        e.copy(
            &ctr("/esc/etc/passwd"),
            &hostp("passwd"),
            &o,
            &mut input,
            &mut output,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(host.join("passwd")).unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
        let err = e
            .copy(&ctr("/nope"), &hostp("x"), &o, &mut input, &mut output)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"/nope\" could not be found on container fs: no such file or directory"
        );
        e.copy(
            &ctr("/tmp"),
            &CpLocation::Stream,
            &o,
            &mut input,
            &mut output,
        )
        .unwrap();
        let names = entry_names(&output);
        assert!(names.contains(&"tmp/hello".to_string()), "{names:?}");
        assert!(names.contains(&"tmp/escaped".to_string()), "{names:?}");

        let changes: Vec<String> = e
            .container_changes("fs")
            .unwrap()
            .iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path))
            .collect();
        assert_eq!(
            changes,
            ["A /esc", "C /tmp", "A /tmp/escaped", "A /tmp/hello"]
        );

        let mut tar = Vec::new();
        e.export_container("fs", &mut tar).unwrap();
        let names = entry_names(&tar);
        for n in ["etc/passwd", "bin/true", "tmp/hello", "esc"] {
            assert!(names.contains(&n.to_string()), "{n} not in {names:?}");
        }
        assert!(!is_mountpoint(&merged, &e.container_dir(&rec.id)));

        let co = CommitOptions {
            reference: Some("committed".into()),
            changes: vec!["CMD [\"cat\", \"/tmp/hello\"]".into()],
            author: Some("Someone".into()),
            format: "oci".into(),
            ..Default::default()
        };
        let new = e
            .commit_container("fs", &co, &crate::image::progress::NoProgress)
            .unwrap();
        assert_eq!(new.names, ["localhost/committed:latest"]);
        assert_eq!(new.layers.len(), 2);
        assert_eq!(new.layers[0], img.layers[0]);
        let cfg = e.image_config(&new).unwrap();
        let c = cfg.config.clone().unwrap();
        assert_eq!(c["Cmd"], json!(["cat", "/tmp/hello"]));
        assert_eq!(c["Env"], json!(["A=1"]));
        assert_eq!(cfg.author.as_deref(), Some("Someone"));
        assert_eq!(cfg.history.len(), 2);
        let rec2 = container(&e, &new, "fs2");
        let mut tar = Vec::new();
        e.export_container(&rec2.id, &mut tar).unwrap();
        let names = entry_names(&tar);
        assert!(names.contains(&"tmp/hello".to_string()), "{names:?}");
        let err = e
            .commit_container(
                "fs",
                &CommitOptions {
                    message: Some("m".into()),
                    format: "oci".into(),
                    ..Default::default()
                },
                &crate::image::progress::NoProgress,
            )
            .unwrap_err();
        assert!(err.to_string().contains("-f docker"), "{err}");
        let docker = e
            .commit_container(
                "fs",
                &CommitOptions {
                    message: Some("m".into()),
                    format: "docker".into(),
                    ..Default::default()
                },
                &crate::image::progress::NoProgress,
            )
            .unwrap();
        let (_, mt) = e.image_manifest(&docker).unwrap();
        assert_eq!(mt, media::DOCKER_MANIFEST);
        assert!(docker.names.is_empty());

        // --squash: one layer with the image's files and the container's changes, one
        // history entry.
        let squashed = e
            .commit_container(
                "fs",
                &CommitOptions {
                    squash: true,
                    format: "oci".into(),
                    ..Default::default()
                },
                &crate::image::progress::NoProgress,
            )
            .unwrap();
        assert_eq!(squashed.layers.len(), 1);
        assert_ne!(squashed.layers[0], img.layers[0]);
        let cfg = e.image_config(&squashed).unwrap();
        assert_eq!(cfg.rootfs.diff_ids.len(), 1);
        assert_eq!(cfg.history.len(), 1);
        assert_eq!(cfg.config.unwrap()["Env"], json!(["A=1"]));
        let rec3 = container(&e, &squashed, "fs3");
        let mut tar = Vec::new();
        e.export_container(&rec3.id, &mut tar).unwrap();
        let names = entry_names(&tar);
        for n in ["etc/passwd", "bin/true", "tmp/hello", "tmp/escaped", "esc"] {
            assert!(names.contains(&n.to_string()), "{n} not in {names:?}");
        }
        assert!(!is_mountpoint(&merged, &e.container_dir(&rec.id)));
    }
}
