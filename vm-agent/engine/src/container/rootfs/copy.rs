//! The `copy` way of assembling a root filesystem: the layers applied one after the
//! other into a plain directory, whiteouts deleting and opaque directories emptying
//! what lies below, as the vfs storage driver does. The container writes into that
//! copy directly, so its changes are found by comparing the copy with the layers; they
//! are then laid out as an overlay upper directory would hold them, so `diff` and
//! `commit` have one format to read.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::RootfsError;
use crate::container::fsops::{Meta, is_opaque_path, lower_meta, same_dir};
use crate::store::copy::Copier;
use crate::store::{StoreError, io_at, remove_tree};

/// Marks a finished copy; a copy without it was interrupted and is made again.
const DONE: &str = "copy.done";

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Whether a layer directory hides everything below it, with either prefix: the
/// store's markers are `trusted.` as root and `user.` rootless.
fn opaque(path: &Path) -> bool {
    is_opaque_path(path, "trusted.") || is_opaque_path(path, "user.")
}

pub(super) fn populate(lowers: &[PathBuf], dir: &Path, merged: &Path) -> Result<(), RootfsError> {
    let done = dir.join(DONE);
    if done.exists() && merged.is_dir() {
        return Ok(());
    }
    let err = |source: StoreError| RootfsError::Copy {
        target: merged.to_path_buf(),
        source,
    };
    remove_tree(merged);
    fs::create_dir_all(merged)
        .map_err(io_at("creating", merged))
        .map_err(err)?;
    let mut c = Copier::default();
    for layer in lowers {
        apply_layer(&mut c, layer, merged).map_err(err)?;
    }
    if let Some(top) = lowers.last()
        && let Ok(m) = fs::symlink_metadata(top)
    {
        c.copy_meta(top, merged, &m).map_err(err)?;
    }
    fs::write(&done, b"")
        .map_err(io_at("writing", &done))
        .map_err(err)
}

/// Applies one layer directory (overlay format) onto a full tree.
fn apply_layer(c: &mut Copier<'_>, src: &Path, dst: &Path) -> Result<(), StoreError> {
    for e in fs::read_dir(src).map_err(io_at("reading", src))? {
        let e = e.map_err(io_at("reading", src))?;
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let m = fs::symlink_metadata(&s).map_err(io_at("reading", &s))?;
        let existing = fs::symlink_metadata(&d).ok();
        if is_whiteout(&m) {
            remove_tree(&d);
        } else if m.is_dir() {
            match existing {
                Some(x) if x.is_dir() => {
                    if opaque(&s) {
                        remove_tree(&d);
                        fs::create_dir(&d).map_err(io_at("creating", &d))?;
                    }
                }
                Some(_) => {
                    remove_tree(&d);
                    fs::create_dir(&d).map_err(io_at("creating", &d))?;
                }
                None => fs::create_dir(&d).map_err(io_at("creating", &d))?,
            }
            apply_layer(c, &s, &d)?;
            c.copy_meta(&s, &d, &m)?;
        } else {
            if existing.is_some() {
                remove_tree(&d);
            }
            c.copy_entry(&s, &d)?;
        }
    }
    Ok(())
}

/// An upper directory to read: the container's own, or one built from a copy and
/// removed when dropped.
pub struct UpperView {
    path: PathBuf,
    temporary: bool,
}

impl UpperView {
    pub(super) fn real(path: PathBuf) -> UpperView {
        UpperView {
            path,
            temporary: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UpperView {
    fn drop(&mut self) {
        if self.temporary {
            remove_tree(&self.path);
        }
    }
}

/// Lays out how the copy at `dir/merged` differs from `lowers` (bottom first) as an
/// overlay upper directory: changed and added entries (regular files hard-linked, not
/// copied), 0/0 character devices for deleted ones, parents with the copy's metadata.
pub(super) fn synthesize_upper(
    lowers: &[PathBuf],
    dir: &Path,
    xattr_prefix: &'static str,
) -> Result<UpperView, RootfsError> {
    let rootfs = dir.join("merged");
    let out = dir.join(format!("upper.synth-{}", std::process::id()));
    let view = UpperView {
        path: out.clone(),
        temporary: true,
    };
    let err = |source: StoreError| RootfsError::Copy {
        target: out.clone(),
        source,
    };
    remove_tree(&out);
    fs::create_dir(&out)
        .map_err(io_at("creating", &out))
        .map_err(err)?;
    let mut s = Synth {
        rootfs: &rootfs,
        out: &out,
        lowers: lowers.iter().rev().cloned().collect(),
        prefix: xattr_prefix,
        copier: Copier::default(),
        made: Vec::new(),
    };
    s.dir(Path::new("")).map_err(err)?;
    // Entries added under a directory changed its times; give the copy's back, deepest
    // first, since the walk that reads the result compares them.
    for rel in s.made.iter().rev() {
        let (src, dst) = (rootfs.join(rel), out.join(rel));
        if let Ok(m) = fs::symlink_metadata(&src) {
            s.copier.copy_meta(&src, &dst, &m).map_err(err)?;
        }
    }
    Ok(view)
}

struct Synth<'a> {
    rootfs: &'a Path,
    out: &'a Path,
    /// Top layer first, as `lower_meta` wants them.
    lowers: Vec<PathBuf>,
    prefix: &'static str,
    copier: Copier<'static>,
    /// Directories made in the output, parents first.
    made: Vec<PathBuf>,
}

impl Synth<'_> {
    /// Compares one directory; returns whether anything below it was emitted.
    fn dir(&mut self, rel: &Path) -> Result<bool, StoreError> {
        let here = self.rootfs.join(rel);
        let mut seen = BTreeSet::new();
        let mut emitted = false;
        for e in fs::read_dir(&here).map_err(io_at("reading", &here))? {
            let e = e.map_err(io_at("reading", &here))?;
            let path = rel.join(e.file_name());
            seen.insert(e.file_name());
            let full = self.rootfs.join(&path);
            let m = fs::symlink_metadata(&full).map_err(io_at("reading", &full))?;
            let mine = Meta::of_std(&m);
            match lower_meta(&self.lowers, &path, self.prefix) {
                Some(l) if l.is_dir() && mine.is_dir() => {
                    let below = self.dir(&path)?;
                    if !below && !same_dir(&mine, &l) {
                        self.parent_dirs(&path)?;
                    }
                    emitted |= below || !same_dir(&mine, &l);
                }
                Some(l) if !mine.is_dir() && self.same_entry(&full, &mine, &path, &l) => {}
                _ => {
                    self.parent_dirs(rel)?;
                    self.emit(&path)?;
                    emitted = true;
                }
            }
        }
        for name in self.lower_names(rel) {
            if !seen.contains(&name) {
                self.parent_dirs(rel)?;
                let wh = self.out.join(rel).join(&name);
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &wh,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    0,
                )
                .map_err(|e| io_at("creating the whiteout", &wh)(e.into()))?;
                emitted = true;
            }
        }
        Ok(emitted)
    }

    /// Unchanged, as far as a copy can tell: what `cp -a` and our copier keep.
    fn same_entry(&self, full: &Path, mine: &Meta, rel: &Path, lower: &Meta) -> bool {
        let same = mine.mode == lower.mode
            && mine.uid == lower.uid
            && mine.gid == lower.gid
            && mine.size == lower.size
            && mine.mtime == lower.mtime
            && mine.mtime_nsec == lower.mtime_nsec
            && mine.rdev == lower.rdev;
        if !same {
            return false;
        }
        if mine.kind() != rustix::fs::FileType::Symlink {
            return true;
        }
        let lower_path = self
            .lowers
            .iter()
            .map(|l| l.join(rel))
            .find(|p| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()));
        lower_path.is_some_and(|p| fs::read_link(p).ok() == fs::read_link(full).ok())
    }

    /// What the layers list in `rel`, whiteouts and opaque directories applied.
    fn lower_names(&self, rel: &Path) -> BTreeSet<OsString> {
        let mut names = BTreeSet::new();
        let mut hidden = BTreeSet::new();
        if !rel.as_os_str().is_empty()
            && !lower_meta(&self.lowers, rel, self.prefix).is_some_and(|m| m.is_dir())
        {
            return names;
        }
        for layer in &self.lowers {
            let mut hides_below = false;
            let mut d = layer.clone();
            let mut present = true;
            for c in rel.components() {
                d.push(c);
                match fs::symlink_metadata(&d) {
                    Ok(m) if m.is_dir() => hides_below |= is_opaque_path(&d, self.prefix),
                    Ok(_) => return names,
                    Err(_) => {
                        present = false;
                        break;
                    }
                }
            }
            if present && let Ok(rd) = fs::read_dir(&d) {
                for e in rd.flatten() {
                    let n = e.file_name();
                    if hidden.contains(&n) {
                        continue;
                    }
                    match e.metadata() {
                        Ok(m) if is_whiteout(&m) => {
                            hidden.insert(n);
                        }
                        _ => {
                            hidden.insert(n.clone());
                            names.insert(n);
                        }
                    }
                }
            }
            if hides_below {
                break;
            }
        }
        names
    }

    /// Makes `rel` and its parents in the output with the copy's metadata.
    fn parent_dirs(&mut self, rel: &Path) -> Result<(), StoreError> {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            let o = self.out.join(&cur);
            if fs::symlink_metadata(&o).is_ok() {
                continue;
            }
            let src = self.rootfs.join(&cur);
            let m = fs::symlink_metadata(&src).map_err(io_at("reading", &src))?;
            fs::create_dir(&o).map_err(io_at("creating", &o))?;
            self.copier.copy_meta(&src, &o, &m)?;
            self.made.push(cur.clone());
        }
        Ok(())
    }

    /// Puts one changed or added entry, with everything under it, into the output.
    fn emit(&mut self, rel: &Path) -> Result<(), StoreError> {
        let (src, dst) = (self.rootfs.join(rel), self.out.join(rel));
        let m = fs::symlink_metadata(&src).map_err(io_at("reading", &src))?;
        if m.is_dir() {
            fs::create_dir(&dst).map_err(io_at("creating", &dst))?;
            self.made.push(rel.to_path_buf());
            for e in fs::read_dir(&src).map_err(io_at("reading", &src))? {
                let e = e.map_err(io_at("reading", &src))?;
                self.emit(&rel.join(e.file_name()))?;
            }
            self.copier.copy_meta(&src, &dst, &m)
        } else if m.is_file() && fs::hard_link(&src, &dst).is_ok() {
            Ok(())
        } else {
            self.copier.copy_entry(&src, &dst)
        }
    }
}
