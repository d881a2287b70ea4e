//! A container's root filesystem: the image's layers (each an overlay diff in the
//! store) merged by the kernel's overlayfs, with the container's own upper and work
//! directories. Rootless, the mount is made inside capsa's user namespace with the
//! `userxattr` option, matching the `user.overlay.*` whiteouts the unpacker writes.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("creating {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mounting overlay at {target} ({options})")]
    Mount {
        target: PathBuf,
        options: String,
        #[source]
        source: io::Error,
    },
    #[error("unmounting {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The overlay mount options for `lowers` (bottom layer first).
pub fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path, userxattr: bool) -> String {
    // overlayfs lists the topmost lower directory first.
    let lower: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let mut o = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    if userxattr {
        o.push_str(",userxattr");
    }
    o
}

/// Mounts the merged root filesystem under `dir` (`dir/merged`, with `dir/upper` and
/// `dir/work`); returns the merged path.
pub fn mount(lowers: &[PathBuf], dir: &Path, userxattr: bool) -> Result<PathBuf, RootfsError> {
    let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).map_err(|source| RootfsError::Create {
            path: d.clone(),
            source,
        })?;
    }
    let options = overlay_options(lowers, &upper, &work, userxattr);
    let c = |s: &[u8]| CString::new(s).expect("no NUL in paths we built");
    let (src, target, fstype, data) = (
        c(b"overlay"),
        c(merged.as_os_str().as_bytes()),
        c(b"overlay"),
        c(options.as_bytes()),
    );
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(RootfsError::Mount {
            target: merged,
            options,
            source: io::Error::last_os_error(),
        });
    }
    Ok(merged)
}

/// Unmounts a merged root filesystem (lazily, so a straggling process cannot block it).
pub fn unmount(merged: &Path) -> Result<(), RootfsError> {
    let target = CString::new(merged.as_os_str().as_bytes()).expect("no NUL in paths we built");
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(RootfsError::Unmount {
            target: merged.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::unpack::{UnpackOptions, WhiteoutMode, unpack};

    #[test]
    fn options_list_the_top_layer_first() {
        let o = overlay_options(
            &[PathBuf::from("/l/base"), PathBuf::from("/l/top")],
            Path::new("/c/upper"),
            Path::new("/c/work"),
            true,
        );
        assert_eq!(
            o,
            "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work,userxattr"
        );
    }

    fn layer(dir: &Path, files: &[(&str, &[u8])]) {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_path(name).unwrap();
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        fs::create_dir_all(dir).unwrap();
        let opts = UnpackOptions {
            whiteouts: WhiteoutMode::Overlay {
                xattr_prefix: "trusted.",
            },
            rootless: false,
        };
        unpack(&tar[..], dir, opts).unwrap();
    }

    /// The kernel reads the unpacker's whiteouts as deletions: what the store writes for
    /// overlay is what overlayfs expects.
    #[test]
    fn kernel_overlay_honours_our_whiteouts() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP kernel_overlay_honours_our_whiteouts: mounting needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base");
        let top = t.path().join("top");
        layer(
            &base,
            &[("data/a", b"a"), ("data/b", b"b"), ("sub/old", b"old")],
        );
        layer(
            &top,
            &[
                ("data/.wh.b", b""),
                ("sub/.wh..wh..opq", b""),
                ("sub/new", b"new"),
            ],
        );
        let merged = match mount(&[base, top], &t.path().join("ctr"), false) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("SKIP kernel_overlay_honours_our_whiteouts: no overlayfs here ({e})");
                return;
            }
        };
        let seen = (
            merged.join("data/a").exists(),
            merged.join("data/b").exists(),
            merged.join("sub/old").exists(),
            fs::read(merged.join("sub/new")).ok(),
        );
        unmount(&merged).unwrap();
        assert_eq!(seen, (true, false, false, Some(b"new".to_vec())));
    }
}
