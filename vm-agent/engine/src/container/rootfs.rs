//! A container's root filesystem: the image's layers (each an overlay diff in the
//! store) merged with the container's own upper and work directories. Three ways,
//! tried in this order at a container's first start and then kept for it:
//!
//! 1. the kernel's overlayfs (rootless: inside capsa's user namespace, with the
//!    `userxattr` option matching the `user.overlay.*` markers the unpacker writes);
//! 2. `fuse-overlayfs`, where the kernel refuses (older kernels, or a store on a
//!    filesystem overlayfs cannot use as upper, such as another overlay);
//! 3. a plain copy of the layers (`copy`), which needs nothing but costs the image's
//!    size per container; `diff` and `commit` then compare it with the image.
//!
//! `CAPSA_ROOTFS_MOUNT=overlay|fuse-overlayfs|copy` forces one.

mod copy;

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

pub use copy::UpperView;

/// Forces one way of assembling root filesystems (see the module's documentation).
pub const ENV_ROOTFS_MOUNT: &str = "CAPSA_ROOTFS_MOUNT";

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
    #[error("fuse-overlayfs could not mount {target}: {detail}")]
    Fuse { target: PathBuf, detail: String },
    #[error("copying the image into {target}")]
    Copy {
        target: PathBuf,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("no way to assemble the root filesystem at {target} worked: {tried}")]
    NoDriver { target: PathBuf, tried: String },
    #[error("{ENV_ROOTFS_MOUNT}={0:?} is not one of overlay, fuse-overlayfs, copy")]
    BadDriver(String),
    #[error("unmounting {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl RootfsError {
    pub fn hint(&self) -> Option<String> {
        match self {
            RootfsError::NoDriver { .. } | RootfsError::Fuse { .. } => Some(
                "install fuse-overlayfs and make /dev/fuse usable, or set CAPSA_ROOTFS_MOUNT=copy"
                    .into(),
            ),
            RootfsError::BadDriver(_) => {
                Some(format!("unset {ENV_ROOTFS_MOUNT} to let capsa choose"))
            }
            _ => None,
        }
    }
}

/// How a root filesystem is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountDriver {
    Overlay,
    FuseOverlayfs,
    Copy,
}

impl MountDriver {
    pub const ALL: [MountDriver; 3] = [
        MountDriver::Overlay,
        MountDriver::FuseOverlayfs,
        MountDriver::Copy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MountDriver::Overlay => "overlay",
            MountDriver::FuseOverlayfs => "fuse-overlayfs",
            MountDriver::Copy => "copy",
        }
    }

    pub fn from_name(name: &str) -> Result<MountDriver, RootfsError> {
        MountDriver::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| RootfsError::BadDriver(name.to_string()))
    }

    /// The driver forced by `CAPSA_ROOTFS_MOUNT`, if any.
    pub fn forced() -> Result<Option<MountDriver>, RootfsError> {
        match std::env::var(ENV_ROOTFS_MOUNT) {
            Ok(v) if !v.is_empty() => MountDriver::from_name(&v).map(Some),
            _ => Ok(None),
        }
    }
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

/// Assembles the root filesystem under `dir` (`dir/merged`, with `dir/upper` and
/// `dir/work`) and returns it with the way that worked: `keep` (the container's earlier
/// choice) or the forced driver only, else each in turn.
pub fn mount(
    lowers: &[PathBuf],
    dir: &Path,
    userxattr: bool,
    keep: Option<MountDriver>,
) -> Result<(PathBuf, MountDriver), RootfsError> {
    let candidates: Vec<MountDriver> = match (MountDriver::forced()?, keep) {
        (_, Some(d)) | (Some(d), None) => vec![d],
        (None, None) => MountDriver::ALL.to_vec(),
    };
    let mut tried = Vec::new();
    for d in &candidates {
        match mount_with(*d, lowers, dir, userxattr) {
            Ok(m) => {
                if !tried.is_empty() {
                    tracing::info!(
                        "root filesystem of {} by {} ({})",
                        dir.display(),
                        d.name(),
                        tried.join("; ")
                    );
                }
                return Ok((m, *d));
            }
            Err(e) if candidates.len() == 1 => return Err(e),
            Err(e) => tried.push(format!("{}: {}", d.name(), error_chain(&e))),
        }
    }
    Err(RootfsError::NoDriver {
        target: dir.join("merged"),
        tried: tried.join("; "),
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Assembles the root filesystem with one driver.
pub fn mount_with(
    driver: MountDriver,
    lowers: &[PathBuf],
    dir: &Path,
    userxattr: bool,
) -> Result<PathBuf, RootfsError> {
    let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
    if driver == MountDriver::Copy {
        copy::populate(lowers, dir, &merged)?;
        return Ok(merged);
    }
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).map_err(|source| RootfsError::Create {
            path: d.clone(),
            source,
        })?;
    }
    let options = overlay_options(lowers, &upper, &work, userxattr);
    match driver {
        MountDriver::Overlay => kernel_mount(&merged, options)?,
        _ => fuse_mount(&merged, &options)?,
    }
    Ok(merged)
}

fn kernel_mount(merged: &Path, options: String) -> Result<(), RootfsError> {
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
            target: merged.to_path_buf(),
            options,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `fuse-overlayfs`, which daemonizes once the mount is in place. Its output goes
/// to a file, never to our pipes: the daemon outlives this command, and a caller reading
/// our stdout or stderr to the end would wait for it.
fn fuse_mount(merged: &Path, options: &str) -> Result<(), RootfsError> {
    let fail = |detail: String| RootfsError::Fuse {
        target: merged.to_path_buf(),
        detail,
    };
    let log_path = merged.with_file_name("fuse-overlayfs.log");
    let log = fs::File::create(&log_path)
        .map_err(|e| fail(format!("creating {}: {e}", log_path.display())))?;
    let log2 = log
        .try_clone()
        .map_err(|e| fail(format!("creating {}: {e}", log_path.display())))?;
    // Without `squash_to_root` and friends, owners stay what the layers hold.
    let status = Command::new("fuse-overlayfs")
        .arg("-o")
        .arg(options)
        .arg(merged)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .status()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => fail("fuse-overlayfs is not installed".into()),
            _ => fail(format!("running fuse-overlayfs: {e}")),
        })?;
    if !status.success() {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let detail: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("unknown argument ignored"))
            .collect();
        return Err(fail(format!("{status}: {}", detail.join(" ").trim())));
    }
    Ok(())
}

/// Takes the root filesystem apart: unmounts it (lazily, so a straggling process cannot
/// block it; fuse-overlayfs exits when its mount goes). A copy stays: it is the
/// container's content.
pub fn unmount(driver: MountDriver, merged: &Path) -> Result<(), RootfsError> {
    if driver == MountDriver::Copy {
        return Ok(());
    }
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

/// The container's changes in overlay upper-directory form, for `diff`, `commit` and
/// `ps -s`: its real upper directory, or for a copy one built for the occasion.
pub fn upper_view(
    driver: MountDriver,
    lowers: &[PathBuf],
    dir: &Path,
    xattr_prefix: &'static str,
) -> Result<UpperView, RootfsError> {
    match driver {
        MountDriver::Copy => copy::synthesize_upper(lowers, dir, xattr_prefix),
        _ => Ok(UpperView::real(dir.join("upper"))),
    }
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
        let merged = match mount_with(
            MountDriver::Overlay,
            &[base, top],
            &t.path().join("ctr"),
            false,
        ) {
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
        unmount(MountDriver::Overlay, &merged).unwrap();
        assert_eq!(seen, (true, false, false, Some(b"new".to_vec())));
    }

    fn tree(root: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        fn walk(root: &Path, rel: &Path, out: &mut Vec<(String, String)>) {
            let mut names: Vec<_> = fs::read_dir(root.join(rel))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                let p = rel.join(&n);
                let full = root.join(&p);
                if full.is_dir() {
                    out.push((p.display().to_string(), "dir".into()));
                    walk(root, &p, out);
                } else {
                    let data = fs::read_to_string(&full).unwrap_or_default();
                    out.push((p.display().to_string(), data));
                }
            }
        }
        walk(root, Path::new(""), &mut out);
        out
    }

    /// Each way of assembling a root filesystem shows the same tree for the same
    /// layers, and after the same writes `diff` finds the same changes in each.
    #[test]
    fn every_driver_shows_the_same_tree_and_changes() {
        if !rustix::process::geteuid().is_root() {
            eprintln!(
                "SKIP every_driver_shows_the_same_tree_and_changes: needs root for trusted.* xattrs and mknod"
            );
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base");
        let top = t.path().join("top");
        layer(
            &base,
            &[
                ("data/a", b"a"),
                ("data/b", b"b"),
                ("sub/old", b"old"),
                ("keep/k", b"k"),
            ],
        );
        layer(
            &top,
            &[
                ("data/.wh.b", b""),
                ("sub/.wh..wh..opq", b""),
                ("sub/new", b"new"),
            ],
        );
        let lowers = [base, top];
        let mut trees = Vec::new();
        let mut changes = Vec::new();
        for d in MountDriver::ALL {
            if d == MountDriver::FuseOverlayfs && which("fuse-overlayfs").is_none() {
                eprintln!(
                    "SKIP every_driver_shows_the_same_tree_and_changes (fuse-overlayfs part): not installed"
                );
                continue;
            }
            let dir = t.path().join(d.name());
            let merged = mount_with(d, &lowers, &dir, false)
                .unwrap_or_else(|e| panic!("{}: {}", d.name(), error_chain(&e)));
            trees.push((d, tree(&merged)));
            fs::write(merged.join("data/a"), b"changed").unwrap();
            fs::write(merged.join("added"), b"+").unwrap();
            fs::remove_file(merged.join("sub/new")).unwrap();
            fs::remove_dir_all(merged.join("keep")).unwrap();
            unmount(d, &merged).unwrap();
            let view = upper_view(d, &lowers, &dir, "trusted.").unwrap();
            let c =
                crate::container::fsops::layer_changes(view.path(), &lowers, "trusted.").unwrap();
            let c: Vec<String> = c
                .iter()
                .map(|c| format!("{} {}", c.kind.letter(), c.path))
                .collect();
            changes.push((d, c));
            if d == MountDriver::Copy {
                let synth = view.path().to_path_buf();
                drop(view);
                assert!(!synth.exists(), "the synthesized upper is removed");
                // A second mount of a finished copy keeps what the container wrote.
                let again = mount_with(d, &lowers, &dir, false).unwrap();
                assert_eq!(fs::read(again.join("data/a")).unwrap(), b"changed");
            }
        }
        let expected_tree: Vec<(String, String)> = [
            ("data", "dir"),
            ("data/a", "a"),
            ("keep", "dir"),
            ("keep/k", "k"),
            ("sub", "dir"),
            ("sub/new", "new"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        for (d, t) in &trees {
            assert_eq!(t, &expected_tree, "tree of {}", d.name());
        }
        let expected_changes = vec!["A /added", "C /data/a", "D /keep", "C /sub", "D /sub/new"];
        for (d, c) in &changes {
            let mut c = c.clone();
            if *d == MountDriver::FuseOverlayfs {
                // fuse-overlayfs copies a directory up with its own times, so a parent
                // of a changed file also shows as changed (as with Podman on it).
                let all = c.clone();
                c.retain(|x| {
                    !(x.starts_with("C ") && all.iter().any(|y| y.starts_with(&format!("{}/", x))))
                        || expected_changes.contains(&x.as_str())
                });
            }
            assert_eq!(c, expected_changes, "changes of {}", d.name());
        }
    }

    fn which(cmd: &str) -> Option<PathBuf> {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(cmd))
                .find(|c| c.is_file())
        })
    }

    #[test]
    fn a_forced_driver_must_be_known() {
        for d in MountDriver::ALL {
            assert_eq!(MountDriver::from_name(d.name()).unwrap(), d);
        }
        let e = MountDriver::from_name("zfs").unwrap_err();
        assert_eq!(
            e.to_string(),
            "CAPSA_ROOTFS_MOUNT=\"zfs\" is not one of overlay, fuse-overlayfs, copy"
        );
        assert!(e.hint().is_some());
    }

    /// The probe moves on when a way fails: a layer path with a comma cannot be put in
    /// overlay mount options (kernel and fuse-overlayfs both split on it), so only the
    /// copy works; when no way works the error lists each attempt.
    #[test]
    fn the_probe_falls_back_and_reports_every_attempt() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP the_probe_falls_back_and_reports_every_attempt: mounting needs root");
            return;
        }
        if MountDriver::forced().ok().flatten().is_some() {
            eprintln!(
                "SKIP the_probe_falls_back_and_reports_every_attempt: {ENV_ROOTFS_MOUNT} is set"
            );
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let odd = t.path().join("lay,er");
        layer(&odd, &[("etc/os", b"capsa")]);
        let (merged, d) = mount(
            std::slice::from_ref(&odd),
            &t.path().join("c1"),
            false,
            None,
        )
        .unwrap();
        assert_eq!(d, MountDriver::Copy);
        assert_eq!(fs::read(merged.join("etc/os")).unwrap(), b"capsa");

        let missing = t.path().join("missing,layer");
        let e = mount(&[missing], &t.path().join("c2"), false, None).unwrap_err();
        let text = error_chain(&e);
        for part in ["overlay:", "fuse-overlayfs:", "copy:"] {
            assert!(text.contains(part), "{part} missing from: {text}");
        }
        assert!(e.hint().is_some());
        // A container keeps its way: no probing once chosen.
        let e = mount(
            std::slice::from_ref(&odd),
            &t.path().join("c3"),
            false,
            Some(MountDriver::Overlay),
        )
        .unwrap_err();
        assert!(matches!(e, RootfsError::Mount { .. }), "{e}");
    }
}
