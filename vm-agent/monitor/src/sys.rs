//! Thin wrappers over the few system calls the monitor needs that std does not offer:
//! each turns a C return value into `io::Result` and owns what it creates.

use std::ffi::CStr;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Retries a call interrupted by a signal handler (the monitor installs none, but a
/// stopped-and-continued process sees EINTR too).
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Makes this process the reaper of its orphaned descendants, so the container's process
/// becomes our child once the runtime that forked it exits.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(drop)
}

/// A new session, so that the caller's terminal hanging up does not reach us.
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no arguments.
    cvt(unsafe { libc::setsid() }).map(drop)
}

pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// The signals the monitor handles through its signalfd: SIGCHLD, plus SIGTERM, SIGINT and
/// SIGHUP, which are read and ignored. Blocking them (rather than SIG_IGN) keeps the
/// children's dispositions default: std empties the mask of every child it spawns.
fn handled_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any use.
    let mut set: libc::sigset_t = unsafe { mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

/// Blocks the handled signals and returns a non-blocking signalfd that reports them.
pub fn signalfd() -> io::Result<OwnedFd> {
    let set = handled_signals();
    // SAFETY: `set` is a valid sigset_t; the old mask is not asked for.
    let r = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, ptr::null_mut()) };
    cvt(r)?;
    // SAFETY: -1 asks for a new fd; `set` is valid; the result is checked below.
    let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
    // SAFETY: signalfd returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads and discards every pending signal of a signalfd.
pub fn drain_signalfd(fd: BorrowedFd<'_>) {
    let mut info = mem::MaybeUninit::<libc::signalfd_siginfo>::uninit();
    loop {
        // SAFETY: `info` has room for one signalfd_siginfo, the unit signalfd reads in.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                info.as_mut_ptr().cast(),
                mem::size_of::<libc::signalfd_siginfo>(),
            )
        };
        if n <= 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl Ended {
    /// The shell's convention, which Docker and Podman report: a signal `N` is `128+N`.
    pub fn code(self) -> i32 {
        match self {
            Ended::Exited(c) => c,
            Ended::Signaled(s) => 128 + s,
        }
    }
}

/// Reaps one child that has ended, if any: `Ok(None)` when none has.
pub fn reap_any() -> io::Result<Option<(i32, Ended)>> {
    let mut status = 0;
    // SAFETY: `status` is a valid int to write into.
    let pid = retry(|| cvt(unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) }))?;
    if pid == 0 {
        return Ok(None);
    }
    let ended = if libc::WIFSIGNALED(status) {
        Ended::Signaled(libc::WTERMSIG(status))
    } else {
        Ended::Exited(libc::WEXITSTATUS(status))
    };
    Ok(Some((pid, ended)))
}

/// A pipe whose two ends are close-on-exec: `(read, write)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 returned two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a valid fd take and return plain flags.
    unsafe {
        let fl = cvt(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
        cvt(libc::fcntl(
            fd.as_raw_fd(),
            libc::F_SETFL,
            fl | libc::O_NONBLOCK,
        ))?;
    }
    Ok(())
}

/// Whether `fd` is open in this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD with FD_CLOEXEC on a descriptor number; a closed one gives EBADF.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).map(drop)
}

/// `dup2(from, to)`: `to` becomes a copy of `from` (without close-on-exec).
pub fn dup2(from: BorrowedFd<'_>, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on descriptor numbers; `to` is replaced atomically.
    retry(|| cvt(unsafe { libc::dup2(from.as_raw_fd(), to) })).map(drop)
}

/// Closes a descriptor this process inherited and does not own through an `OwnedFd`.
pub fn close_raw(fd: RawFd) {
    // SAFETY: only used for inherited descriptors no OwnedFd refers to.
    unsafe { libc::close(fd) };
}

/// Takes ownership of an inherited descriptor number.
///
/// # Safety
/// `fd` must be open and owned by nothing else in this process.
pub unsafe fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller guarantees `fd` is open and unowned.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    retry(|| cvt_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }))
}

pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    retry(|| cvt_size(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) }))
}

/// Sends one packet without blocking and without SIGPIPE.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: `buf` is valid for reads of its length.
    retry(|| cvt_size(unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) }))
}

/// Receives one packet without blocking.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| {
        // SAFETY: `buf` is valid for writes of its length.
        cvt_size(unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        })
    })
}

fn sockaddr_un(path: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.is_empty() || path.len() >= addr.sun_path.len() || path.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path is empty or longer than 107 bytes",
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    let len = mem::size_of::<libc::sa_family_t>() + path.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// The address of a unix socket named as `NOTIFY_SOCKET` names one: a path, or `@name`
/// for a socket in the abstract namespace (no file, no trailing NUL).
pub fn unix_address(addr: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    let Some(name) = addr.strip_prefix(b"@") else {
        return sockaddr_un(addr);
    };
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.is_empty() || name.len() >= sa.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "abstract socket name is empty or longer than 107 bytes",
        ));
    }
    // sun_path[0] stays NUL: that marks the abstract namespace.
    for (d, s) in sa.sun_path[1..].iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let len = mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    Ok((sa, len as libc::socklen_t))
}

/// An unbound datagram socket, non-blocking and close-on-exec, to send from.
pub fn datagram_socket() -> io::Result<OwnedFd> {
    let ty = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = cvt(unsafe { libc::socket(libc::AF_UNIX, ty, 0) })?;
    // SAFETY: socket returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A datagram socket bound at `path` (relative to the working directory when it does
/// not start with `/`) with `mode`, non-blocking and close-on-exec.
pub fn bind_datagram(path: &CStr, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let (addr, len) = sockaddr_un(path.to_bytes())?;
    let fd = datagram_socket()?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) })?;
    // SAFETY: `path` is a NUL-terminated string.
    cvt(unsafe { libc::chmod(path.as_ptr(), mode) })?;
    Ok(fd)
}

/// Sends one datagram to `to` without blocking and without SIGPIPE.
pub fn send_to(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    to: &(libc::sockaddr_un, libc::socklen_t),
) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    retry(|| {
        // SAFETY: `buf` is valid for reads of its length; `to` is a valid address of
        // the length it carries.
        cvt_size(unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                flags,
                (&raw const to.0).cast(),
                to.1,
            )
        })
    })
}

/// A listening unix socket bound at `path` (relative to the working directory when it
/// does not start with `/`) with mode 0600, non-blocking and close-on-exec.
pub fn listen_unix(path: &CStr, kind: libc::c_int, backlog: i32) -> io::Result<OwnedFd> {
    let (addr, len) = sockaddr_un(path.to_bytes())?;
    let ty = kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = cvt(unsafe { libc::socket(libc::AF_UNIX, ty, 0) })?;
    // SAFETY: socket returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) })?;
    // Nobody can connect before listen(2), so the mode is right before the first client.
    // SAFETY: `path` is a NUL-terminated string.
    cvt(unsafe { libc::chmod(path.as_ptr(), 0o600) })?;
    // SAFETY: listen on the socket just bound.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// Accepts one pending connection (non-blocking, close-on-exec); `Ok(None)` when none is
/// pending.
pub fn accept(fd: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    let r = retry(|| {
        // SAFETY: no peer address is asked for.
        cvt(unsafe { libc::accept4(fd.as_raw_fd(), ptr::null_mut(), ptr::null_mut(), flags) })
    });
    match r {
        // SAFETY: accept4 returned a new fd that nothing else owns.
        Ok(c) => Ok(Some(unsafe { OwnedFd::from_raw_fd(c) })),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Asks for a larger send buffer, so a client that reads a little late is not dropped
/// at the first burst; the kernel caps it (root may go above the cap).
pub fn grow_send_buffer(fd: BorrowedFd<'_>, bytes: i32) {
    for opt in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: `bytes` is a valid int of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&raw const bytes).cast(),
                mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

/// Receives one descriptor sent with SCM_RIGHTS over a connected socket (how the OCI
/// runtime hands over the pty master on the console socket).
pub fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // Room for one control message carrying one int, aligned as cmsghdr wants.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all-zero is valid before the fields are set.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _; // socklen_t on musl, usize on glibc
    retry(|| {
        // SAFETY: `msg` points at live buffers of the stated sizes.
        cvt_size(unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) })
    })?;
    let mut got = None;
    // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled, within
    // msg_controllen; the data of an SCM_RIGHTS message is a list of ints.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let n =
                    ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / mem::size_of::<RawFd>();
                let p = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..n {
                    let fd = OwnedFd::from_raw_fd(ptr::read_unaligned(p.add(i)));
                    if got.is_none() {
                        got = Some(fd);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    got.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no descriptor in the message"))
}

/// Sets a terminal's size (TIOCSWINSZ on the pty master).
pub fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(drop)
}

/// poll(2) over `fds`, retried on EINTR; `timeout_ms` < 0 waits forever.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid array of its length.
    retry(|| cvt(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) }))
        .map(|n| n as usize)
}

pub fn pollfd(fd: RawFd, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Opens /dev/null on every closed descriptor below `upto`, lowest first, so that the
/// monitor's own descriptors land above the ones it keeps for the container (and
/// nothing of ours becomes a stdio fd by accident). These stay inheritable.
pub fn fill_fd_slots(upto: i32) -> io::Result<()> {
    for fd in 0..upto {
        if fd_is_open(fd) {
            continue;
        }
        // SAFETY: the path is a NUL-terminated literal; every lower fd is open, so the
        // kernel returns exactly `fd`, which the process keeps (inherited by children).
        let got = cvt(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) })?;
        if got != fd {
            close_raw(got);
            return Err(io::Error::other(
                "descriptor slots changed while filling them",
            ));
        }
    }
    Ok(())
}

/// Points fds 0–2 at /dev/null.
pub fn stdio_to_devnull() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        dup2(null.as_fd(), fd)?;
    }
    Ok(())
}

/// Sets every signal's action to the default, between fork and exec of a child (the
/// runtime, the exit command): ignored signals survive exec, and the caller may have
/// left some ignored (a shell does for background jobs), as glibc's posix_spawn does for
/// its internal signals 32 and 33. The raw system call, because glibc refuses those two.
/// Async-signal-safe.
pub fn default_signal_actions() {
    // The kernel's struct sigaction with every field zero: SIG_DFL, no flags, empty
    // mask, whatever the order of its fields on this architecture.
    let act = [0u64; 4];
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads one kernel sigaction (at most 32 bytes) from `act`
        // and writes nothing back; 8 is the kernel's sigset size (64 signals).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                act.as_ptr(),
                ptr::null_mut::<u64>(),
                8usize,
            )
        };
    }
}

/// Drops this process's page-table entries for the code of the program and its shared
/// libraries (private, executable file mappings), so that its resident set is the code
/// the event loop goes on to run rather than all the start-up touched: the dynamic
/// loader's relocation work and the setup. The pages stay in the page cache and fault
/// back in when used. Code is never written, so nothing private is lost (which rules
/// out doing this to the read-only data mappings, whose relocated parts are private
/// copies).
pub fn trim_code_pages() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let mut f = line.split_ascii_whitespace();
        let (Some(range), Some("r-xp")) = (f.next(), f.next()) else {
            continue;
        };
        if !f.nth(3).is_some_and(|p| p.starts_with('/')) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: the range is one of our own executable, unwritten file mappings; after
        // MADV_DONTNEED its pages read back the same bytes from the file.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}
