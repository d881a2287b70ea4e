//! Tree copies that keep what a root filesystem needs: owners, modes, xattrs (not
//! overlayfs' own), times, symlinks, hard links and device nodes.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{StoreError, io_at};

/// Copies trees with owners, modes, xattrs, times, symlinks, hard links and device
/// nodes: volume copy-up and the copy fallback of container root filesystems.
#[derive(Default)]
pub(crate) struct Copier {
    /// (dev, inode) of a copied file with several links → its copy.
    links: HashMap<(u64, u64), PathBuf>,
    warned_owner: bool,
}

impl Copier {
    pub(crate) fn copy_children(&mut self, src: &Path, dst: &Path) -> Result<(), StoreError> {
        for e in fs::read_dir(src).map_err(io_at("reading", src))? {
            let e = e.map_err(io_at("reading", src))?;
            self.copy_entry(&e.path(), &dst.join(e.file_name()))?;
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
                fs::hard_link(first, dst).map_err(io_at("creating", dst))?;
                return Ok(());
            }
            fs::copy(src, dst).map_err(io_at("copying", src))?;
            if m.nlink() > 1 {
                self.links.insert(key, dst.to_path_buf());
            }
        } else {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_socket() {
                return Ok(());
            }
            let kind = if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else {
                rustix::fs::FileType::BlockDevice
            };
            let mode = rustix::fs::Mode::from_raw_mode(m.mode() & 0o7777);
            if let Err(e) = rustix::fs::mknodat(rustix::fs::CWD, dst, kind, mode, m.rdev()) {
                // Device nodes need CAP_MKNOD in the initial namespace.
                tracing::warn!("not copying {}: {e}", src.display());
                return Ok(());
            }
        }
        self.copy_meta(src, dst, &m);
        Ok(())
    }

    /// Owner, then mode (chown clears set-id bits), xattrs, then times.
    pub(crate) fn copy_meta(&mut self, src: &Path, dst: &Path, m: &fs::Metadata) {
        if let Err(e) = std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid()))
            && !self.warned_owner
        {
            self.warned_owner = true;
            tracing::warn!(
                "copying: cannot give {} the owner {}:{}: {e}",
                dst.display(),
                m.uid(),
                m.gid()
            );
        }
        if !m.file_type().is_symlink() {
            let _ = fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777));
        }
        copy_xattrs(src, dst);
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
    }
}

/// Best effort; overlayfs' own attributes (a layer directory's opaque markers) stay.
fn copy_xattrs(src: &Path, dst: &Path) {
    let mut names = vec![0u8; 64 * 1024];
    let Ok(n) = rustix::fs::llistxattr(src, &mut names[..]) else {
        return;
    };
    let mut value = vec![0u8; 64 * 1024];
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        if name.starts_with(b"trusted.overlay.")
            || name.starts_with(b"user.overlay.")
            || name.starts_with(b"user.fuseoverlayfs.")
        {
            continue;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if let Ok(len) = rustix::fs::lgetxattr(src, name, &mut value[..]) {
            let _ =
                rustix::fs::lsetxattr(dst, name, &value[..len], rustix::fs::XattrFlags::empty());
        }
    }
}
