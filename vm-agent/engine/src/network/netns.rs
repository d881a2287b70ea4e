//! Network namespaces made by capsa before the runtime runs, as Podman makes them: a
//! thread unshares a new namespace, brings its loopback up, and bind-mounts it on a
//! file in the container's run directory. The spec joins that file, so the helper can
//! be started while the runtime creates the container instead of after, and the
//! namespace outlives the container's processes until [`remove`] (a restart, a
//! `container:ID` joiner and the teardown all find it there).
//!
//! Rootless capsa works in the mount namespace its pause process holds (see `userns`),
//! so the bind mount stays visible to every later command.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The file in the run directory the namespace is mounted on.
pub const FILE: &str = "netns";

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cpath(p: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// Brings `lo` up in the calling thread's network namespace: a runtime that joins a
/// namespace leaves it as it is, and a fresh one has loopback down.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket call; the descriptor is owned below.
    let s = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: s was just created.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        cvt(libc::ioctl(
            s.as_raw_fd(),
            libc::SIOCGIFFLAGS as _,
            &mut req,
        ))?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        cvt(libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req))?;
    }
    Ok(())
}

/// Makes a new network namespace with loopback up and bind-mounts it on `path` (created
/// empty; a stale mount there is replaced). Returns an open descriptor of it.
pub(crate) fn create(path: &Path) -> io::Result<OwnedFd> {
    remove(path);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let target = cpath(path)?;
    // unshare(CLONE_NEWNET) changes only the calling thread's namespace; this thread
    // ends right after, so nothing else of ours ever runs in it.
    let made = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<OwnedFd> {
            // SAFETY: plain system calls on this thread's own state and our paths.
            unsafe {
                cvt(libc::unshare(libc::CLONE_NEWNET))?;
                loopback_up()?;
                let ns = cvt(libc::open(
                    c"/proc/thread-self/ns/net".as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                ))?;
                let ns = OwnedFd::from_raw_fd(ns);
                cvt(libc::mount(
                    c"/proc/thread-self/ns/net".as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
                Ok(ns)
            }
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    });
    if made.is_err() {
        let _ = fs::remove_file(path);
    }
    made
}

/// Unmounts and deletes a namespace file made by [`create`]; the namespace itself ends
/// once no process and no descriptor holds it. Best effort and idempotent.
pub(crate) fn remove(path: &Path) {
    if let Ok(p) = cpath(path) {
        // SAFETY: a plain system call on a path we own.
        unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
    }
    let _ = fs::remove_file(path);
}

/// True when `path` holds a network namespace (a mounted nsfs file).
pub(crate) fn is_netns(path: &Path) -> bool {
    let Ok(c) = cpath(path) else { return false };
    // SAFETY: statfs fills the struct it is given.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // NSFS_MAGIC, from linux/magic.h.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == 0x6e73_6673 }
}
