//! Containers on each way of assembling a root filesystem that the probe can fall back
//! to (`CAPSA_ROOTFS_MOUNT=fuse-overlayfs`, `=copy`), as root and rootless: what the
//! container writes persists across starts, `diff`, `cp` and `commit` see it, and `rm`
//! leaves no mount, no fuse-overlayfs process and no files behind.

mod common;
use common::*;
use std::path::Path;

fn exercise(rootless: bool, driver: &str) {
    if driver == "fuse-overlayfs" && !Path::new("/usr/bin/fuse-overlayfs").exists() {
        eprintln!("SKIP {driver}: fuse-overlayfs is not installed (scripts/setup.sh installs it)");
        return;
    }
    let Some((mut c, img)) = container_store(rootless) else {
        return;
    };
    c.extra_env
        .push(("CAPSA_ROOTFS_MOUNT".into(), driver.into()));
    let script =
        "cat /etc/greeting 2>/dev/null; echo hi > /etc/greeting; rm -f /bin/ls; mkdir -p /newdir";
    let first = c.ok(&["run", "--name", "w", &img, "sh", "-c", script]);
    assert_eq!(first, "", "a fresh container has no greeting yet");
    let again = c.ok(&["start", "-a", "w"]);
    assert_eq!(again, "hi\n", "the second start sees the first one's write");

    let diff = c.ok(&["diff", "w"]);
    for line in [
        "A /etc/greeting",
        "D /bin/ls",
        "A /newdir",
        "C /etc",
        "C /bin",
    ] {
        assert!(
            diff.lines().any(|l| l == line),
            "{line:?} missing from diff:\n{diff}"
        );
    }
    assert!(
        !diff
            .lines()
            .any(|l| l.starts_with("C /bin/") || l.starts_with("A /bin")),
        "only what changed is listed:\n{diff}"
    );

    // cp into the stopped container and back out.
    let host = c.path().join("note");
    std::fs::write(&host, "from the host\n").unwrap();
    if let Some(u) = &c.user {
        std::process::Command::new("chown")
            .arg(u)
            .arg(&host)
            .status()
            .unwrap();
    }
    c.ok(&["cp", host.to_str().unwrap(), "w:/newdir/note"]);
    let out_path = c.path().join("back");
    c.ok(&["cp", "w:/etc/greeting", out_path.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), "hi\n");

    // commit: the new image carries the changes and runs.
    c.ok(&["commit", "-q", "w", "localhost/committed:1"]);
    let seen = c.ok(&[
        "run",
        "--rm",
        "localhost/committed:1",
        "sh",
        "-c",
        "cat /etc/greeting /newdir/note; test -e /bin/ls && echo ls-back || echo ls-gone",
    ]);
    assert_eq!(seen, "hi\nfrom the host\nls-gone\n");

    // ps -s measures the container's own changes.
    let sizes = c.ok(&[
        "ps",
        "-a",
        "-s",
        "--filter",
        "name=w",
        "--format",
        "{{.Size}}",
    ]);
    // "hi\n" and "from the host\n": the two files the container added.
    assert!(sizes.starts_with("17"), "size column: {sizes}");

    let id = c
        .ok(&["inspect", "--format", "{{.Id}}", "w"])
        .trim()
        .to_string();
    let cdir = c.root().join("containers").join(&id);
    assert!(cdir.exists());
    c.ok(&["rm", "w"]);
    assert!(!cdir.exists(), "rm removes {}", cdir.display());
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("fuse-overlayfs.*{id}")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "no fuse-overlayfs left for the container: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&id),
        "no mount of the container left in the host namespace"
    );
}

#[test]
fn fuse_overlayfs_root() {
    exercise(false, "fuse-overlayfs");
}

#[test]
fn fuse_overlayfs_rootless() {
    exercise(true, "fuse-overlayfs");
}

#[test]
fn copy_root() {
    exercise(false, "copy");
}

#[test]
fn copy_rootless() {
    exercise(true, "copy");
}

/// The forced way must be a known one: a clear error, nothing created.
#[test]
fn unknown_forced_driver() {
    let Some((mut c, img)) = container_store(false) else {
        return;
    };
    c.extra_env
        .push(("CAPSA_ROOTFS_MOUNT".into(), "zfs".into()));
    let err = c.fails(&["run", "--rm", &img, "true"], 125);
    assert!(
        err.contains("CAPSA_ROOTFS_MOUNT=\"zfs\" is not one of overlay, fuse-overlayfs, copy"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}
