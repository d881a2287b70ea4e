//! Tree copies that keep what a root filesystem needs: owners, modes, xattrs, times,
//! symlinks, hard links and device nodes. One copier serves volume copy-up, the copy
//! fallback of container root filesystems and id-shifted copies of layers.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{StoreError, io_at};

/// Moves an owner (`uid`, `gid`) to the one the copy gets; `None` when it has none.
pub(crate) type OwnerMap<'a> = &'a dyn Fn(u32, u32) -> Option<(u32, u32)>;

/// An owner the [`OwnerMap`] could not move: (path, "uid" or "gid", id).
pub(crate) type Unmapped = (PathBuf, &'static str, u32);

#[derive(Default)]
pub(crate) struct Copier<'a> {
    /// (dev, inode) of a copied file with several links → its copy.
    links: HashMap<(u64, u64), PathBuf>,
    warned: bool,
    /// Copying a layer as a layer: overlayfs' markers (xattrs, whiteout devices) come
    /// along and must arrive, and every owner, mode and marker that cannot be set is an
    /// error. Otherwise (a root filesystem's content) the copy is best effort, with one
    /// warning, and overlayfs' own xattrs stay behind.
    layer: bool,
    owners: Option<OwnerMap<'a>>,
    /// Set when the copy failed because `owners` had no mapping.
    pub(crate) unmapped: Option<Unmapped>,
}

fn overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name.starts_with(b"user.fuseoverlayfs.")
}

impl<'a> Copier<'a> {
    /// A copy of a layer as a layer (see [`Copier::layer`]), owners moved by `owners`.
    pub(crate) fn for_layer(owners: Option<OwnerMap<'a>>) -> Copier<'a> {
        Copier {
            layer: true,
            owners,
            ..Copier::default()
        }
    }

    /// Copies the entries of `src` into the existing directory `dst`, in name order.
    pub(crate) fn copy_children(&mut self, src: &Path, dst: &Path) -> Result<(), StoreError> {
        let mut names: Vec<_> = fs::read_dir(src)
            .map_err(io_at("reading", src))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_at("reading", src))?;
        names.sort();
        for n in names {
            self.copy_entry(&src.join(&n), &dst.join(&n))?;
        }
        Ok(())
    }

    pub(crate) fn copy_entry(&mut self, src: &Path, dst: &Path) -> Result<(), StoreError> {
        let m = fs::symlink_metadata(src).map_err(io_at("reading", src))?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(dst).map_err(io_at("creating", dst))?;
            self.copy_children(src, dst)?;
        } else if ft.is_symlink() {
            let t = fs::read_link(src).map_err(io_at("reading", src))?;
            std::os::unix::fs::symlink(&t, dst).map_err(io_at("creating", dst))?;
        } else if ft.is_file() {
            let key = (m.dev(), m.ino());
            if m.nlink() > 1
                && let Some(first) = self.links.get(&key)
            {
                return fs::hard_link(first, dst).map_err(io_at("linking", dst));
            }
            fs::copy(src, dst).map_err(io_at("copying", src))?;
            if m.nlink() > 1 {
                self.links.insert(key, dst.to_path_buf());
            }
        } else if ft.is_socket() {
            return Ok(());
        } else {
            let kind = if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else {
                rustix::fs::FileType::BlockDevice
            };
            let mode = rustix::fs::Mode::from_raw_mode(m.mode() & 0o7777);
            if let Err(e) = rustix::fs::mknodat(rustix::fs::CWD, dst, kind, mode, m.rdev()) {
                let whiteout = ft.is_char_device() && m.rdev() == 0;
                if self.layer && (whiteout || ft.is_fifo()) {
                    return Err(io_at("creating", dst)(e.into()));
                }
                // Device nodes need CAP_MKNOD in the initial namespace (the unpacker
                // skips them rootless for the same reason).
                tracing::warn!("not copying {}: {e}", src.display());
                return Ok(());
            }
        }
        self.copy_meta(src, dst, &m)
    }

    /// Owner first (chown clears set-id bits and file capabilities), then mode, xattrs
    /// and times.
    pub(crate) fn copy_meta(
        &mut self,
        src: &Path,
        dst: &Path,
        m: &fs::Metadata,
    ) -> Result<(), StoreError> {
        let (uid, gid) = match self.owners {
            None => (m.uid(), m.gid()),
            Some(map) => match map(m.uid(), m.gid()) {
                Some(o) => o,
                None => {
                    let bad = if map(m.uid(), 0).is_none() {
                        ("uid", m.uid())
                    } else {
                        ("gid", m.gid())
                    };
                    self.unmapped = Some((src.to_path_buf(), bad.0, bad.1));
                    return Err(io_at("mapping the owner of", src)(io::Error::other(
                        format!("{} {} has no mapping", bad.0, bad.1),
                    )));
                }
            },
        };
        if let Err(e) = std::os::unix::fs::lchown(dst, Some(uid), Some(gid)) {
            if self.layer {
                return Err(io_at("changing the owner of", dst)(e));
            }
            self.warn(format_args!(
                "cannot give {} the owner {uid}:{gid}: {e}",
                dst.display()
            ));
        }
        let symlink = m.file_type().is_symlink();
        if !symlink
            && let Err(e) = fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))
            && self.layer
        {
            return Err(io_at("setting the mode of", dst)(e));
        }
        self.copy_xattrs(src, dst, symlink)?;
        let ts = |s: i64, ns: i64| rustix::fs::Timespec {
            tv_sec: s,
            tv_nsec: ns as _,
        };
        let times = rustix::fs::Timestamps {
            last_access: ts(m.atime(), m.atime_nsec()),
            last_modification: ts(m.mtime(), m.mtime_nsec()),
        };
        let _ = rustix::fs::utimensat(
            rustix::fs::CWD,
            dst,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        );
        Ok(())
    }

    fn warn(&mut self, what: std::fmt::Arguments) {
        if !self.warned {
            self.warned = true;
            tracing::warn!("copying: {what}");
        }
    }

    /// In a layer copy overlayfs' markers must arrive (a lost opaque marker brings
    /// deleted files back); others (security.capability of a binary, in a namespace
    /// that cannot set it) are dropped with one warning.
    fn copy_xattrs(&mut self, src: &Path, dst: &Path, symlink: bool) -> Result<(), StoreError> {
        let mut names = vec![0u8; 64 * 1024];
        let n = match rustix::fs::llistxattr(src, &mut names[..]) {
            Ok(n) => n,
            Err(rustix::io::Errno::NOTSUP) => return Ok(()),
            Err(e) if self.layer => {
                return Err(io_at("listing the xattrs of", src)(e.into()));
            }
            Err(_) => return Ok(()),
        };
        let mut value = vec![0u8; 64 * 1024];
        for raw in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
            let overlay = overlay_xattr(raw);
            if overlay && !self.layer {
                continue;
            }
            let Ok(name) = std::str::from_utf8(raw) else {
                continue;
            };
            let len = match rustix::fs::lgetxattr(src, name, &mut value[..]) {
                Ok(len) => len,
                Err(e) if self.layer => {
                    return Err(io_at("reading the xattrs of", src)(e.into()));
                }
                Err(_) => continue,
            };
            if let Err(e) =
                rustix::fs::lsetxattr(dst, name, &value[..len], rustix::fs::XattrFlags::empty())
            {
                if self.layer && overlay && !symlink {
                    return Err(io_at("setting an overlay xattr on", dst)(e.into()));
                }
                self.warn(format_args!(
                    "not copying xattr {name} of {}: {e}",
                    src.display()
                ));
            }
        }
        Ok(())
    }
}
