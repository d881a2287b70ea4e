//! Stopping pasta when its container exits.
//!
//! The pasta of Debian 12 (2023-03-09) quits only when a network namespace it was given
//! as a file path is deleted; it never notices that the processes of a namespace it
//! joined through /proc exited, and it keeps that namespace alive itself. So a small
//! watcher waits on pidfds of the container and of pasta and stops pasta when the
//! container is gone.
//!
//! The watcher is the current executable run again: a function placed in `.init_array`
//! runs before `main` (before the test harness in tests) and takes over when the
//! environment asks for it, so any binary that links the engine can be its own watcher
//! without a `main` that knows about it, and the watcher is a fresh small process
//! rather than a fork of a large one.

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

use super::detach;

/// Set in the watcher: the descriptors of the container's and the helper's pidfds.
const ENV_WATCH: &str = "_CAPSA_NETWORK_WATCH";
const WATCH_FDS: &str = "3,4";

#[used]
#[unsafe(link_section = ".init_array")]
static WATCH_HOOK: extern "C" fn() = watch_hook;

extern "C" fn watch_hook() {
    // SAFETY: getenv before main, while nothing else runs.
    let v = unsafe { libc::getenv(c"_CAPSA_NETWORK_WATCH".as_ptr()) };
    if v.is_null() {
        return;
    }
    // SAFETY: getenv returned a NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(v) };
    if v.to_bytes() != WATCH_FDS.as_bytes() {
        return;
    }
    // SAFETY: the descriptors were placed by `start`; only system calls follow.
    unsafe { watch(3, 4) }
}

/// # Safety
/// `container` and `helper` must be pidfds owned by this process.
unsafe fn watch(container: i32, helper: i32) -> ! {
    // SAFETY: plain system calls on our own descriptors.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"capsa-netwatch".as_ptr());
        let mut fds = [
            libc::pollfd {
                fd: container,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: helper,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            let r = libc::poll(fds.as_mut_ptr(), 2, -1);
            if r < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if r < 0 || fds[1].revents != 0 {
                libc::_exit(0);
            }
            if fds[0].revents != 0 {
                break;
            }
        }
        let signal = |sig: i32| {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                helper,
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        signal(libc::SIGTERM);
        let mut p = libc::pollfd {
            fd: helper,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut p, 1, 2000) == 0 {
            signal(libc::SIGKILL);
        }
        libc::_exit(0)
    }
}

/// Starts a watcher that stops the process of `helper` (a pidfd) once the process of
/// `container` (a pidfd) exits.
pub(crate) fn start(container: BorrowedFd<'_>, helper: BorrowedFd<'_>) -> io::Result<()> {
    // Referenced here so the linker keeps the hook in every binary that can call this.
    std::hint::black_box(&WATCH_HOOK);
    let exe = Path::new("/proc/self/exe");
    detach::spawn_detached(&detach::Exec {
        path: exe,
        argv: vec![OsStr::new("capsa-netwatch")],
        env: vec![format!("{ENV_WATCH}={WATCH_FDS}")],
        fds: vec![(container, 3), (helper, 4)],
        cwd: None,
    })
    .map(|_| ())
}
