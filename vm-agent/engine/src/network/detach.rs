//! Starting helper processes that belong to no capsa process: a double fork, so a
//! long-lived caller (the agent) never collects zombies and a short one (`capsa run -d`)
//! can exit. Plus the pidfd calls used to watch and stop them without pid races.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A pidfd for `pid`: it becomes readable when the process exits.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall; on success it returns a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor (pidfds are close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub(crate) fn pidfd_signal(fd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: a plain syscall on a descriptor we borrow.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout_ms` (-1: forever) for `fd` to become readable.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: p is one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in argument"))
}

/// A close-on-exec duplicate of `fd` numbered `min` or higher.
fn above(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor, which we own.
    let new = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) })?;
    // SAFETY: new was just created.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A program to start detached.
pub(crate) struct Exec<'a> {
    pub path: &'a Path,
    pub argv: Vec<&'a OsStr>,
    /// Extra environment (`NAME=value`), on top of the caller's.
    pub env: Vec<String>,
    /// (descriptor in the caller, number it gets in the program); 0, 1 and 2 not
    /// listed become /dev/null.
    pub fds: Vec<(BorrowedFd<'a>, RawFd)>,
    /// Working directory, as an open directory; `/` when `None`.
    pub cwd: Option<BorrowedFd<'a>>,
}

/// Starts `e` in a new session, as a grandchild that is reparented at once; returns its
/// pid once it has executed the program (or the reason it could not).
pub(crate) fn spawn_detached(e: &Exec<'_>) -> io::Result<i32> {
    let path = cstring(e.path.as_os_str())?;
    let argv: Vec<CString> = e
        .argv
        .iter()
        .map(|a| cstring(a))
        .collect::<io::Result<_>>()?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| !e.env.iter().any(|x| x.split('=').next() == k.to_str()))
        .map(|(k, v)| {
            let mut b = k.as_bytes().to_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            CString::new(b).unwrap_or_default()
        })
        .collect();
    for x in &e.env {
        env.push(cstring(OsStr::new(x))?);
    }
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());

    // Every descriptor the children use moves above every target first, so the dup2
    // calls in the grandchild cannot overwrite one another or the others.
    let top = e.fds.iter().map(|(_, t)| *t).max().unwrap_or(2).max(2) + 1;
    let mut moved: Vec<(OwnedFd, RawFd)> = Vec::new();
    for (src, target) in &e.fds {
        moved.push((above(*src, top)?, *target));
    }
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let devnull = above(devnull.as_fd(), top)?;
    let mut pipe = [0; 2];
    // SAFETY: pipe has room for two descriptors.
    cvt(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both were just created.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    // The original write end must not stay open here, or the read below never ends.
    let wr = {
        let moved = above(wr.as_fd(), top);
        drop(wr);
        moved?
    };
    let cwd = e.cwd.map(|c| above(c, top)).transpose()?;
    let plan: Vec<(RawFd, RawFd)> = moved.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect();
    let cwd = cwd.as_ref().map(|c| c.as_raw_fd());

    // SAFETY: between fork and exec (or _exit) the children only make async-signal-safe
    // system calls on memory prepared above; nothing allocates or takes a lock.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        // SAFETY: see above.
        unsafe {
            intermediate(
                wr.as_raw_fd(),
                devnull.as_raw_fd(),
                &plan,
                cwd,
                &path,
                &argv_p,
                &env_p,
            )
        }
    }
    drop(wr);
    let mut status = 0;
    // SAFETY: reaping the intermediate child, which exits at once.
    while unsafe { libc::waitpid(child, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    let mut file = std::fs::File::from(rd);
    let mut buf = Vec::new();
    io::Read::read_to_end(&mut file, &mut buf)?;
    // Messages of 8 bytes (kind, value), each written at once so they never interleave:
    // the grandchild's pid from the intermediate, an errno from whichever failed.
    let mut pid = None;
    for m in buf.chunks_exact(8) {
        let kind = i32::from_ne_bytes([m[0], m[1], m[2], m[3]]);
        let value = i32::from_ne_bytes([m[4], m[5], m[6], m[7]]);
        match kind {
            MSG_ERRNO => return Err(io::Error::from_raw_os_error(value)),
            MSG_PID => pid = Some(value),
            _ => {}
        }
    }
    pid.ok_or_else(|| io::Error::other("the helper's launcher died"))
}

const MSG_PID: i32 = 1;
const MSG_ERRNO: i32 = 2;

/// # Safety
/// Only in a child of `fork`: writes one message to the pipe.
unsafe fn send(wr: RawFd, kind: i32, value: i32) {
    let mut m = [0u8; 8];
    m[..4].copy_from_slice(&kind.to_ne_bytes());
    m[4..].copy_from_slice(&value.to_ne_bytes());
    // SAFETY: m is 8 valid bytes.
    unsafe { libc::write(wr, m.as_ptr().cast(), 8) };
}

/// # Safety
/// Only in a child of `fork`: reports errno and exits.
unsafe fn fail(wr: RawFd) -> ! {
    // SAFETY: async-signal-safe calls only.
    unsafe {
        send(wr, MSG_ERRNO, *libc::__errno_location());
        libc::_exit(127)
    }
}

/// # Safety
/// Only in the child of `fork`; the arguments point to memory prepared before the fork.
unsafe fn intermediate(
    wr: RawFd,
    devnull: RawFd,
    plan: &[(RawFd, RawFd)],
    cwd: Option<RawFd>,
    path: &CString,
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
) -> ! {
    // SAFETY: async-signal-safe calls only (see spawn_detached).
    unsafe {
        libc::setsid();
        let pid = libc::fork();
        if pid == 0 {
            grandchild(wr, devnull, plan, cwd, path, argv, env);
        }
        if pid < 0 {
            fail(wr);
        }
        send(wr, MSG_PID, pid);
        libc::_exit(0)
    }
}

/// # Safety
/// As for [`intermediate`].
unsafe fn grandchild(
    wr: RawFd,
    devnull: RawFd,
    plan: &[(RawFd, RawFd)],
    cwd: Option<RawFd>,
    path: &CString,
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
) -> ! {
    // SAFETY: async-signal-safe calls only.
    unsafe {
        // Signal state as a fresh process has it (Rust ignores SIGPIPE).
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in [
            libc::SIGPIPE,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGCHLD,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
        for std_fd in 0..3 {
            if !plan.iter().any(|(_, t)| *t == std_fd) && libc::dup2(devnull, std_fd) < 0 {
                fail(wr);
            }
        }
        for (src, target) in plan {
            if libc::dup2(*src, *target) < 0 {
                fail(wr);
            }
        }
        let ok = match cwd {
            Some(fd) => libc::fchdir(fd),
            None => libc::chdir(c"/".as_ptr()),
        };
        if ok < 0 {
            fail(wr);
        }
        libc::execve(path.as_ptr(), argv.as_ptr(), env.as_ptr());
        fail(wr)
    }
}
