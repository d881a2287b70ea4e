//! Attaching to a container through its monitor's socket, `<rundir>/attach` (see the
//! monitor's contract in docs/internals.md).
//!
//! [`connect`] and [`Attach::pump`] are separate so that `run` can connect first, start
//! the container, and only then pump: the socket buffers what the container writes in
//! between, so no output is lost. The pump is blocking (one thread, `poll`); call it
//! from sync code or `spawn_blocking`.
//!
//! Messages, one per packet, first byte the kind: from the monitor `1` stdout data, `2`
//! stderr data, `3` the exit code in decimal; to the monitor `0` stdin data, `4`
//! `"<rows> <cols>"`, `5` stdin closed.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// Docker's and podman's default detach sequence.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

const MSG_STDIN: u8 = 0;
const MSG_STDOUT: u8 = 1;
const MSG_STDERR: u8 = 2;
const MSG_EXIT: u8 = 3;
const MSG_RESIZE: u8 = 4;
const MSG_STDIN_CLOSED: u8 = 5;

/// How much of stdin one message carries: the monitor reads client packets of at most
/// 16 KiB plus the kind byte.
const STDIN_CHUNK: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("cannot open the container's run directory {path}")]
    RunDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to the container's attach socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "invalid detach keys {keys:?}: {key:?} is not a single character or ctrl-<a-z, @, [, \\, ], ^, _>"
    )]
    BadDetachKeys { keys: String, key: String },
    #[error("cannot set up the terminal")]
    Terminal(#[source] io::Error),
    #[error("the connection to the container's monitor failed")]
    Socket(#[source] io::Error),
    #[error("the container's monitor sent an invalid exit code {0:?}")]
    BadExitCode(String),
    #[error("cannot read standard input")]
    Stdin(#[source] io::Error),
    #[error("cannot write the container's output")]
    Output(#[source] io::Error),
}

/// How an attach session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachResult {
    /// The container exited with this code (`128+N` for signal N).
    Exited(i32),
    /// The user typed the detach keys; the container keeps running.
    Detached,
    /// The monitor closed the connection without sending an exit code.
    Closed,
}

/// What to attach. An output stream whose writer is `None` is received and dropped.
pub struct AttachOptions<'a> {
    /// Forward this fd (usually fd 0) as the container's stdin; `None` to not attach
    /// stdin. At its end the monitor is told stdin closed.
    pub stdin: Option<BorrowedFd<'a>>,
    pub stdout: Option<&'a mut dyn Write>,
    pub stderr: Option<&'a mut dyn Write>,
    /// The container has a terminal. When `stdin` is a terminal too, it is put in raw
    /// mode for the session and its size is sent at the start and on every SIGWINCH.
    pub tty: bool,
    /// The bytes that detach (see [`parse_detach_keys`]); empty: no detaching.
    pub detach_keys: Vec<u8>,
}

/// A connection to a container's monitor.
#[derive(Debug)]
pub struct Attach {
    sock: OwnedFd,
}

impl AsFd for Attach {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Connects to `<rundir>/attach`. The path goes through an `O_PATH` fd of `rundir`
/// (`/proc/self/fd/<fd>/attach`), so a run directory of any length works despite the
/// 108-byte limit of socket addresses.
pub fn connect(rundir: &Path) -> Result<Attach, AttachError> {
    let dir = rustix::fs::open(
        rundir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| AttachError::RunDir {
        path: rundir.to_path_buf(),
        source: e.into(),
    })?;
    let via = format!("/proc/self/fd/{}/attach", dir.as_raw_fd());
    sys::connect_seqpacket(&via).map_err(|source| AttachError::Connect {
        path: rundir.join("attach"),
        source,
    })
}

/// [`connect`] then [`Attach::pump`], for when nothing has to happen in between.
pub fn attach(rundir: &Path, opts: AttachOptions<'_>) -> Result<AttachResult, AttachError> {
    connect(rundir)?.pump(opts)
}

impl Attach {
    /// Tells the container's terminal its size.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), AttachError> {
        sys::send(self.sock.as_fd(), &resize_message(rows, cols), false)
            .map(drop)
            .map_err(AttachError::Socket)
    }

    /// Copies the container's output to the writers and stdin to the container until
    /// the container exits, the user detaches or the monitor goes away. The terminal is
    /// restored on every way out, panics included.
    pub fn pump(self, mut opts: AttachOptions<'_>) -> Result<AttachResult, AttachError> {
        let terminal = match opts.stdin {
            Some(fd) if opts.tty && sys::isatty(fd) => Some(fd),
            _ => None,
        };
        let _raw = terminal
            .map(RawTerminal::enter)
            .transpose()
            .map_err(AttachError::Terminal)?;
        let winch = match terminal {
            Some(_) => winch::Winch::register().map_err(AttachError::Terminal)?,
            None => None,
        };
        let mut p = Pump {
            sock: self.sock.as_fd(),
            out: VecDeque::new(),
            peer_gone: false,
            buf: vec![0; 64 * 1024],
        };
        if let Some(t) = terminal {
            p.queue_resize(t);
        }
        let mut detach = DetachMatcher::new(opts.detach_keys.clone());
        let mut stdin = opts.stdin;
        let mut input = vec![0; STDIN_CHUNK];
        loop {
            let mut fds = Vec::with_capacity(3);
            let mut events = libc::POLLIN;
            if !p.out.is_empty() {
                events |= libc::POLLOUT;
            }
            fds.push(sys::pollfd(p.sock, events));
            // Stdin waits while messages are queued, so a monitor that does not read
            // holds back our reading rather than our memory.
            let stdin_at = match stdin {
                Some(fd) if p.out.is_empty() => {
                    fds.push(sys::pollfd(fd, libc::POLLIN));
                    Some(fds.len() - 1)
                }
                _ => None,
            };
            let winch_at = winch.as_ref().map(|w| {
                fds.push(sys::pollfd(w.fd(), libc::POLLIN));
                fds.len() - 1
            });
            sys::poll(&mut fds).map_err(AttachError::Socket)?;

            if fds[0].revents != 0 {
                if let Some(r) = p.receive(&mut opts)? {
                    return Ok(r);
                }
                p.flush_queue()?;
            }
            if let Some(i) = winch_at
                && fds[i].revents != 0
            {
                if let Some(w) = &winch {
                    w.drain();
                }
                if let Some(t) = terminal {
                    p.queue_resize(t);
                }
            }
            if let (Some(i), Some(fd)) = (stdin_at, stdin)
                && fds[i].revents != 0
            {
                match sys::read(fd, &mut input) {
                    Ok(0) => {
                        stdin = None;
                        p.queue_stdin(detach.take_held());
                        p.out.push_back(vec![MSG_STDIN_CLOSED]);
                    }
                    Ok(n) => {
                        let mut data = Vec::with_capacity(n);
                        let detached = detach.feed(&input[..n], &mut data);
                        p.queue_stdin(data);
                        if detached {
                            p.flush_nonblocking();
                            return Ok(AttachResult::Detached);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // A terminal whose session is gone reads as EIO: its end.
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                        stdin = None;
                        p.out.push_back(vec![MSG_STDIN_CLOSED]);
                    }
                    Err(e) => return Err(AttachError::Stdin(e)),
                }
            }
            if p.peer_gone {
                p.out.clear();
                stdin = None;
            }
            p.flush_queue()?;
        }
    }
}

struct Pump<'s> {
    sock: BorrowedFd<'s>,
    /// Messages to send once the socket takes them.
    out: VecDeque<Vec<u8>>,
    /// Sending failed because the monitor closed its end; we still read what it sent.
    peer_gone: bool,
    buf: Vec<u8>,
}

impl Pump<'_> {
    /// Queues stdin data; held detach bytes can make it longer than one packet.
    fn queue_stdin(&mut self, data: Vec<u8>) {
        for chunk in data.chunks(STDIN_CHUNK) {
            let mut m = Vec::with_capacity(chunk.len() + 1);
            m.push(MSG_STDIN);
            m.extend_from_slice(chunk);
            self.out.push_back(m);
        }
    }

    fn queue_resize(&mut self, terminal: BorrowedFd<'_>) {
        match sys::window_size(terminal) {
            Ok((rows, cols)) if rows > 0 && cols > 0 => {
                self.out.push_back(resize_message(rows, cols));
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the terminal's size"),
        }
    }

    /// Sends queued messages until the socket would block.
    fn flush_queue(&mut self) -> Result<(), AttachError> {
        while let Some(m) = self.out.front() {
            match sys::send(self.sock, m, true) {
                Ok(_) => {
                    self.out.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_disconnect(&e) => {
                    self.peer_gone = true;
                    self.out.clear();
                }
                Err(e) => return Err(AttachError::Socket(e)),
            }
        }
        Ok(())
    }

    /// Best effort before leaving: what was typed before the detach keys, if the
    /// socket takes it now (a stuck monitor must not keep us from detaching).
    fn flush_nonblocking(&mut self) {
        while let Some(m) = self.out.pop_front() {
            if sys::send(self.sock, &m, true).is_err() {
                break;
            }
        }
    }

    /// Handles the messages waiting on the socket; `Some` when the session is over.
    fn receive(
        &mut self,
        opts: &mut AttachOptions<'_>,
    ) -> Result<Option<AttachResult>, AttachError> {
        // A bounded batch, so that stdin and resizes are not starved.
        for _ in 0..64 {
            let n = match sys::recv_packet(self.sock, &mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if is_disconnect(&e) => return Ok(Some(AttachResult::Closed)),
                Err(e) => return Err(AttachError::Socket(e)),
            };
            if n == 0 {
                return Ok(Some(AttachResult::Closed));
            }
            let (kind, data) = (self.buf[0], &self.buf[1..n]);
            let w = match kind {
                MSG_STDOUT => opts.stdout.as_deref_mut(),
                MSG_STDERR => opts.stderr.as_deref_mut(),
                MSG_EXIT => {
                    let text = String::from_utf8_lossy(data);
                    return match text.trim().parse() {
                        Ok(code) => Ok(Some(AttachResult::Exited(code))),
                        Err(_) => Err(AttachError::BadExitCode(text.into_owned())),
                    };
                }
                // Kinds added to the protocol later are not for us.
                _ => continue,
            };
            if let Some(w) = w {
                w.write_all(data)
                    .and_then(|()| w.flush())
                    .map_err(AttachError::Output)?;
            }
        }
        Ok(None)
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN)
    )
}

fn resize_message(rows: u16, cols: u16) -> Vec<u8> {
    let mut m = vec![MSG_RESIZE];
    m.extend_from_slice(format!("{rows} {cols}").as_bytes());
    m
}

/// Parses detach keys in Docker's format: comma-separated keys, each a single
/// character or `ctrl-<a-z, @, [, \, ], ^, _>`; `""` disables detaching.
pub fn parse_detach_keys(keys: &str) -> Result<Vec<u8>, AttachError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    keys.split(',')
        .map(|key| {
            let bad = || AttachError::BadDetachKeys {
                keys: keys.to_string(),
                key: key.to_string(),
            };
            if key.len() == 1 {
                return Ok(key.as_bytes()[0]);
            }
            let b = key.as_bytes();
            if b.len() != 6 || !b[..5].eq_ignore_ascii_case(b"ctrl-") {
                return Err(bad());
            }
            match b[5].to_ascii_lowercase() {
                c @ b'a'..=b'z' => Ok(c - b'a' + 1),
                b'@' => Ok(0),
                b'[' => Ok(27),
                b'\\' => Ok(28),
                b']' => Ok(29),
                b'^' => Ok(30),
                b'_' => Ok(31),
                _ => Err(bad()),
            }
        })
        .collect()
}

/// Finds the detach sequence in stdin. Bytes that may start it are held back until
/// the sequence completes (nothing of it is sent) or diverges (they are sent on).
struct DetachMatcher {
    keys: Vec<u8>,
    held: Vec<u8>,
}

impl DetachMatcher {
    fn new(keys: Vec<u8>) -> DetachMatcher {
        DetachMatcher {
            keys,
            held: Vec::new(),
        }
    }

    /// Appends what is to be sent of `input` to `out`; true when the sequence was
    /// typed (what follows it in `input` is dropped).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return false;
        }
        for &b in input {
            self.held.push(b);
            // Keep the longest held suffix that can still begin the sequence.
            let mut skip = 0;
            while !self.keys.starts_with(&self.held[skip..]) {
                skip += 1;
            }
            out.extend(self.held.drain(..skip));
            if self.held.len() == self.keys.len() {
                self.held.clear();
                return true;
            }
        }
        false
    }

    fn take_held(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

/// A terminal in raw mode, restored when dropped (on errors and panics too).
pub struct RawTerminal<'a> {
    fd: BorrowedFd<'a>,
    saved: libc::termios,
}

impl<'a> RawTerminal<'a> {
    /// Puts the terminal behind `fd` in raw mode (`cfmakeraw`), as podman and docker do
    /// for `-it`: keys such as Ctrl-C reach the container instead of us.
    pub fn enter(fd: BorrowedFd<'a>) -> io::Result<RawTerminal<'a>> {
        let saved = sys::tcgetattr(fd)?;
        let mut raw = saved;
        // SAFETY: cfmakeraw only writes to the termios it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        sys::tcsetattr(fd, &raw)?;
        Ok(RawTerminal { fd, saved })
    }
}

impl Drop for RawTerminal<'_> {
    fn drop(&mut self) {
        if let Err(e) = sys::tcsetattr(self.fd, &self.saved) {
            tracing::warn!(error = %e, "cannot restore the terminal's settings");
        }
    }
}

/// SIGWINCH as readable pipes. One process-wide handler writes a byte to the pipe of
/// every registered pump, so several pumps (and tests) can run at once.
mod winch {
    use std::io;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::sync::Once;
    use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

    const SLOTS: usize = 16;
    static PIPES: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
    /// Handlers running now; a pipe is closed only when none may still write to it.
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PREVIOUS: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
    static PREVIOUS_SIGINFO: AtomicUsize = AtomicUsize::new(0);
    static INSTALL: Once = Once::new();

    extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: errno is thread-local; only async-signal-safe calls follow.
        let errno = unsafe { *libc::__errno_location() };
        RUNNING.fetch_add(1, Ordering::SeqCst);
        for p in &PIPES {
            let fd = p.load(Ordering::SeqCst);
            if fd >= 0 {
                // SAFETY: fd stays open while RUNNING is above zero (see Drop).
                unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
            }
        }
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        let prev = PREVIOUS.load(Ordering::SeqCst);
        if prev != libc::SIG_DFL && prev != libc::SIG_IGN {
            if PREVIOUS_SIGINFO.load(Ordering::SeqCst) != 0 {
                // SAFETY: the handler installed before ours, with its own signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(prev) };
                f(sig, info, ctx);
            } else {
                // SAFETY: as above.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(prev) };
                f(sig);
            }
        }
        // SAFETY: see above.
        unsafe { *libc::__errno_location() = errno };
    }

    fn install() -> io::Result<()> {
        let mut result = Ok(());
        INSTALL.call_once(|| {
            // SAFETY: a zeroed sigaction is valid; the handler only does
            // async-signal-safe work.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = handler as *const () as usize;
                sa.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
                libc::sigemptyset(&mut sa.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(libc::SIGWINCH, &sa, &mut old) != 0 {
                    result = Err(io::Error::last_os_error());
                    return;
                }
                PREVIOUS.store(old.sa_sigaction, Ordering::SeqCst);
                PREVIOUS_SIGINFO.store(
                    usize::from(old.sa_flags & libc::SA_SIGINFO != 0),
                    Ordering::SeqCst,
                );
            }
        });
        result
    }

    pub struct Winch {
        read: OwnedFd,
        /// Kept open until the slot is free (fields drop after `drop`).
        _write: OwnedFd,
        slot: usize,
    }

    impl Winch {
        /// `None` when all slots are taken: the session then misses resizes.
        pub fn register() -> io::Result<Option<Winch>> {
            let mut fds = [0; 2];
            // SAFETY: pipe2 fills the two fds on success.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: both fds are new and ours.
            let (read, write) = unsafe {
                use std::os::fd::FromRawFd;
                (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
            };
            install()?;
            for (slot, p) in PIPES.iter().enumerate() {
                if p.compare_exchange(-1, fds[1], Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    return Ok(Some(Winch {
                        read,
                        _write: write,
                        slot,
                    }));
                }
            }
            tracing::warn!("too many attach sessions; terminal resizes are not forwarded");
            Ok(None)
        }

        pub fn fd(&self) -> BorrowedFd<'_> {
            self.read.as_fd()
        }

        pub fn drain(&self) {
            let mut buf = [0u8; 64];
            // SAFETY: reads into a local buffer from our non-blocking pipe.
            while unsafe { libc::read(self.fd_raw(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        }

        fn fd_raw(&self) -> i32 {
            use std::os::fd::AsRawFd;
            self.read.as_raw_fd()
        }
    }

    impl Drop for Winch {
        fn drop(&mut self) {
            PIPES[self.slot].store(-1, Ordering::SeqCst);
            while RUNNING.load(Ordering::SeqCst) != 0 {
                std::thread::yield_now();
            }
        }
    }
}

/// Thin wrappers over the libc calls rustix's enabled features do not cover.
mod sys {
    use super::*;

    pub fn isatty(fd: BorrowedFd<'_>) -> bool {
        // SAFETY: isatty only inspects the fd.
        unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
    }

    pub fn tcgetattr(fd: BorrowedFd<'_>) -> io::Result<libc::termios> {
        // SAFETY: a zeroed termios is valid and tcgetattr fills it.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd.as_raw_fd(), &mut t) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(t)
        }
    }

    pub fn tcsetattr(fd: BorrowedFd<'_>, t: &libc::termios) -> io::Result<()> {
        loop {
            // SAFETY: t is a valid termios.
            if unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, t) } == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub fn window_size(fd: BorrowedFd<'_>) -> io::Result<(u16, u16)> {
        // SAFETY: TIOCGWINSZ fills a winsize.
        unsafe {
            let mut ws: libc::winsize = std::mem::zeroed();
            if libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok((ws.ws_row, ws.ws_col))
        }
    }

    pub fn connect_seqpacket(path: &str) -> io::Result<Attach> {
        // SAFETY: socket returns a new fd or -1.
        let fd =
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is new and ours.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let (addr, len) = sockaddr_un(path)?;
        loop {
            // SAFETY: addr is a valid sockaddr_un of length len.
            let r = unsafe {
                libc::connect(
                    sock.as_raw_fd(),
                    (&addr as *const libc::sockaddr_un).cast(),
                    len,
                )
            };
            if r == 0 {
                return Ok(Attach { sock });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub fn sockaddr_un(path: &str) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
        // SAFETY: a zeroed sockaddr_un is valid.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_bytes();
        if bytes.len() >= addr.sun_path.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket path too long",
            ));
        }
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
        Ok((addr, len as libc::socklen_t))
    }

    /// One whole packet, however big: its size is peeked first.
    pub fn recv_packet(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<usize> {
        let peek = recv(
            fd,
            buf,
            libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )?;
        if peek > buf.len() {
            buf.resize(peek, 0);
        }
        recv(fd, buf, libc::MSG_DONTWAIT)
    }

    fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        loop {
            // SAFETY: buf is valid for buf.len() bytes.
            let n =
                unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub fn send(fd: BorrowedFd<'_>, msg: &[u8], nonblocking: bool) -> io::Result<usize> {
        let mut flags = libc::MSG_NOSIGNAL;
        if nonblocking {
            flags |= libc::MSG_DONTWAIT;
        }
        loop {
            // SAFETY: msg is valid for msg.len() bytes.
            let n = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), flags) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub fn pollfd(fd: BorrowedFd<'_>, events: libc::c_short) -> libc::pollfd {
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        }
    }

    /// Waits for any of `fds`; a signal (SIGWINCH) just returns early.
    pub fn poll(fds: &mut [libc::pollfd]) -> io::Result<()> {
        // SAFETY: fds is a valid array of fds.len() pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            for f in fds.iter_mut() {
                f.revents = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    /// Waits for `fd` to be readable, failing the test after 10 s rather than hanging.
    fn wait_readable(fd: BorrowedFd<'_>) {
        let mut p = [sys::pollfd(fd, libc::POLLIN)];
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(p.as_mut_ptr(), 1, 10_000) };
        assert!(r > 0, "timed out waiting for the attach socket");
    }

    /// The side of the contract `capsa-monitor` plays, for one client.
    struct FakeMonitor {
        _dir: tempfile::TempDir,
        rundir: PathBuf,
        listener: OwnedFd,
    }

    impl FakeMonitor {
        fn new() -> FakeMonitor {
            FakeMonitor::in_subdir("run")
        }

        /// Binds `<tempdir>/<sub>/attach` the way the monitor does: relative to an fd of
        /// the run directory, so that long paths work.
        fn in_subdir(sub: &str) -> FakeMonitor {
            let dir = tempfile::tempdir().unwrap();
            let rundir = dir.path().join(sub);
            std::fs::create_dir_all(&rundir).unwrap();
            let dirfd = rustix::fs::open(
                &rundir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .unwrap();
            let via = format!("/proc/self/fd/{}/attach", dirfd.as_raw_fd());
            let (addr, len) = sys::sockaddr_un(&via).unwrap();
            // SAFETY: plain socket calls on a new fd and a valid address.
            let listener = unsafe {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
                assert!(fd >= 0);
                let fd = OwnedFd::from_raw_fd(fd);
                let r = libc::bind(
                    fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_un).cast(),
                    len,
                );
                assert_eq!(r, 0, "bind: {}", io::Error::last_os_error());
                assert_eq!(libc::listen(fd.as_raw_fd(), 4), 0);
                fd
            };
            FakeMonitor {
                _dir: dir,
                rundir,
                listener,
            }
        }

        /// Serves one client with `script` on a thread.
        fn serve<T: Send + 'static>(
            self,
            script: impl FnOnce(Client) -> T + Send + 'static,
        ) -> (PathBuf, thread::JoinHandle<T>) {
            let rundir = self.rundir.clone();
            let handle = thread::spawn(move || {
                wait_readable(self.listener.as_fd());
                // SAFETY: accept on our listening socket.
                let fd = unsafe {
                    libc::accept4(
                        self.listener.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC,
                    )
                };
                assert!(fd >= 0);
                // SAFETY: a new fd from accept.
                let client = Client(unsafe { OwnedFd::from_raw_fd(fd) });
                let r = script(client);
                drop(self);
                r
            });
            (rundir, handle)
        }
    }

    struct Client(OwnedFd);

    impl Client {
        fn send(&self, kind: u8, data: &[u8]) {
            let mut m = vec![kind];
            m.extend_from_slice(data);
            sys::send(self.0.as_fd(), &m, false).unwrap();
        }

        /// The next message, or `None` once the client has closed.
        fn recv(&self) -> Option<Vec<u8>> {
            let mut buf = vec![0; 16];
            loop {
                wait_readable(self.0.as_fd());
                match sys::recv_packet(self.0.as_fd(), &mut buf) {
                    Ok(0) => return None,
                    Ok(n) => return Some(buf[..n].to_vec()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if is_disconnect(&e) => return None,
                    Err(e) => panic!("recv: {e}"),
                }
            }
        }

        /// Stdin data up to the client's `5`, or to its end (`None` when it closed).
        fn read_stdin(&self) -> (Vec<u8>, bool) {
            let mut data = Vec::new();
            while let Some(m) = self.recv() {
                // The monitor's receive buffer.
                assert!(m.len() <= 16 * 1024 + 1, "a packet of {} bytes", m.len());
                match m[0] {
                    MSG_STDIN => data.extend_from_slice(&m[1..]),
                    MSG_STDIN_CLOSED => return (data, true),
                    other => panic!("unexpected message kind {other}"),
                }
            }
            (data, false)
        }
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two new fds.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both are new and ours.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn write_fd(fd: &OwnedFd, data: &[u8]) {
        let mut f = std::fs::File::from(fd.try_clone().unwrap());
        f.write_all(data).unwrap();
    }

    fn options<'a>(out: &'a mut Vec<u8>, err: &'a mut Vec<u8>) -> AttachOptions<'a> {
        AttachOptions {
            stdin: None,
            stdout: Some(out),
            stderr: Some(err),
            tty: false,
            detach_keys: parse_detach_keys(DEFAULT_DETACH_KEYS).unwrap(),
        }
    }

    #[test]
    fn output_is_routed_and_the_exit_code_returned() {
        let (rundir, server) = FakeMonitor::new().serve(|c| {
            c.send(MSG_STDOUT, b"hello ");
            c.send(MSG_STDERR, b"oops\n");
            c.send(9, b"a kind from a later protocol");
            c.send(MSG_STDOUT, &vec![b'x'; 200_000]);
            c.send(MSG_STDOUT, b"world\n");
            c.send(MSG_EXIT, b"42");
            // The client leaves on the exit code; we see it go.
            assert_eq!(c.recv(), None);
        });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let r = attach(&rundir, options(&mut out, &mut err)).unwrap();
        server.join().unwrap();
        assert_eq!(r, AttachResult::Exited(42));
        assert_eq!(out.len(), 6 + 200_000 + 6);
        assert!(out.starts_with(b"hello xxx") && out.ends_with(b"xxxworld\n"));
        assert_eq!(err, b"oops\n");
    }

    #[test]
    fn streams_not_attached_are_dropped() {
        let (rundir, server) = FakeMonitor::new().serve(|c| {
            c.send(MSG_STDOUT, b"out\n");
            c.send(MSG_STDERR, b"err\n");
            c.send(MSG_EXIT, b"137\n");
        });
        let mut err = Vec::new();
        let opts = AttachOptions {
            stdin: None,
            stdout: None,
            stderr: Some(&mut err),
            tty: false,
            detach_keys: Vec::new(),
        };
        assert_eq!(attach(&rundir, opts).unwrap(), AttachResult::Exited(137));
        server.join().unwrap();
        assert_eq!(err, b"err\n");
    }

    #[test]
    fn closed_without_an_exit_code() {
        let (rundir, server) = FakeMonitor::new().serve(|c| {
            c.send(MSG_STDOUT, b"last words\n");
        });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let r = attach(&rundir, options(&mut out, &mut err)).unwrap();
        server.join().unwrap();
        assert_eq!(r, AttachResult::Closed);
        assert_eq!(out, b"last words\n");
    }

    #[test]
    fn bad_exit_code_is_an_error() {
        let (rundir, server) = FakeMonitor::new().serve(|c| c.send(MSG_EXIT, b"soon"));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let e = attach(&rundir, options(&mut out, &mut err)).unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(e, AttachError::BadExitCode(ref s) if s == "soon"),
            "{e}"
        );
    }

    #[test]
    fn stdin_is_forwarded_and_its_end_reported() {
        let (rundir, server) = FakeMonitor::new().serve(|c| {
            let (data, closed) = c.read_stdin();
            c.send(MSG_STDOUT, &data);
            c.send(MSG_EXIT, b"0");
            closed
        });
        let (stdin_r, stdin_w) = pipe();
        let writer = thread::spawn(move || {
            write_fd(&stdin_w, b"hello\n\x10");
            thread::sleep(Duration::from_millis(50));
            write_fd(&stdin_w, &vec![b'z'; 100_000]);
            write_fd(&stdin_w, b"no newline");
        });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut opts = options(&mut out, &mut err);
        opts.stdin = Some(stdin_r.as_fd());
        let r = attach(&rundir, opts).unwrap();
        writer.join().unwrap();
        assert!(server.join().unwrap(), "no stdin-closed message");
        assert_eq!(r, AttachResult::Exited(0));
        let mut want = b"hello\n\x10".to_vec();
        want.extend_from_slice(&[b'z'; 100_000]);
        want.extend_from_slice(b"no newline");
        assert_eq!(out, want);
    }

    #[test]
    fn detach_keys_end_the_session_unsent() {
        let (rundir, server) = FakeMonitor::new().serve(|c| c.read_stdin());
        let (stdin_r, stdin_w) = pipe();
        // ctrl-p then x is not the sequence and goes through; ctrl-p ctrl-q is.
        write_fd(&stdin_w, b"ab\x10x\x10\x11after");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut opts = options(&mut out, &mut err);
        opts.stdin = Some(stdin_r.as_fd());
        let r = attach(&rundir, opts).unwrap();
        assert_eq!(r, AttachResult::Detached);
        assert_eq!(server.join().unwrap(), (b"ab\x10x".to_vec(), false));
        drop(stdin_w);
    }

    #[test]
    fn a_held_key_is_sent_at_the_end_of_stdin_and_empty_keys_disable() {
        for (keys, input) in [(DEFAULT_DETACH_KEYS, &b"q\x10"[..]), ("", b"\x10\x11")] {
            let (rundir, server) = FakeMonitor::new().serve(|c| {
                let got = c.read_stdin();
                c.send(MSG_EXIT, b"0");
                got
            });
            let (stdin_r, stdin_w) = pipe();
            write_fd(&stdin_w, input);
            drop(stdin_w);
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let mut opts = options(&mut out, &mut err);
            opts.stdin = Some(stdin_r.as_fd());
            opts.detach_keys = parse_detach_keys(keys).unwrap();
            assert_eq!(attach(&rundir, opts).unwrap(), AttachResult::Exited(0));
            assert_eq!(
                server.join().unwrap(),
                (input.to_vec(), true),
                "keys {keys:?}"
            );
        }
    }

    #[test]
    fn run_directories_longer_than_a_socket_address() {
        let sub = "a-rather-long-directory-name-for-a-run-directory/".repeat(4);
        let (rundir, server) = FakeMonitor::in_subdir(&sub).serve(|c| {
            c.send(MSG_EXIT, b"3");
        });
        assert!(rundir.join("attach").as_os_str().len() > 108);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let r = attach(&rundir, options(&mut out, &mut err)).unwrap();
        server.join().unwrap();
        assert_eq!(r, AttachResult::Exited(3));
    }

    #[test]
    fn connect_errors_name_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let e = connect(dir.path()).unwrap_err();
        assert!(matches!(e, AttachError::Connect { .. }));
        assert!(
            e.to_string()
                .contains(&dir.path().join("attach").display().to_string())
        );
        let e = connect(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, AttachError::RunDir { .. }), "{e}");
    }

    #[test]
    fn output_sent_between_connect_and_pump_is_kept() {
        let (tx, rx) = mpsc::channel();
        let (rundir, server) = FakeMonitor::new().serve(move |c| {
            // The container starts (and writes) as soon as the caller connected.
            c.send(MSG_STDOUT, b"early\n");
            c.send(MSG_EXIT, b"0");
            tx.send(()).unwrap();
        });
        let conn = connect(&rundir).unwrap();
        rx.recv().unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(
            conn.pump(options(&mut out, &mut err)).unwrap(),
            AttachResult::Exited(0)
        );
        server.join().unwrap();
        assert_eq!(out, b"early\n");
    }

    #[test]
    fn detach_key_format() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), [16, 17]);
        assert_eq!(parse_detach_keys("").unwrap(), Vec::<u8>::new());
        assert_eq!(
            parse_detach_keys("ctrl-a,ctrl-z,ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_").unwrap(),
            [1, 26, 0, 27, 28, 29, 30, 31]
        );
        assert!(parse_detach_keys("CTRL-A,x,,,").is_err());
        assert_eq!(parse_detach_keys("CTRL-A,x,ctrl-X").unwrap(), [1, b'x', 24]);
        assert_eq!(parse_detach_keys("a,b").unwrap(), b"ab");
        for bad in ["ctrl-", "ctrl-1", "ctrl-ab", "ab", "é", "ctrl-p,", "alt-x"] {
            let e = parse_detach_keys(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn detach_matching() {
        let run = |keys: &[u8], chunks: &[&[u8]]| {
            let mut m = DetachMatcher::new(keys.to_vec());
            let mut out = Vec::new();
            for c in chunks {
                if m.feed(c, &mut out) {
                    return (out, true);
                }
            }
            out.extend(m.take_held());
            (out, false)
        };
        // A sequence split across reads.
        assert_eq!(run(&[16, 17], &[b"a\x10", b"\x11b"]), (b"a".to_vec(), true));
        // A partial match that diverges is sent on, including a restart of the match.
        assert_eq!(
            run(&[16, 17], &[b"\x10\x10", b"\x11"]),
            (b"\x10".to_vec(), true)
        );
        assert_eq!(
            run(&[16, 16, 17], &[b"\x10\x10\x10\x11"]),
            (b"\x10".to_vec(), true)
        );
        assert_eq!(
            run(&[1, 2, 1, 3], &[b"\x01\x02\x01\x02\x01\x03"]),
            (b"\x01\x02".to_vec(), true)
        );
        assert_eq!(run(&[16, 17], &[b"x\x10y"]), (b"x\x10y".to_vec(), false));
        assert_eq!(run(&[], &[b"\x10\x11"]), (b"\x10\x11".to_vec(), false));
    }

    /// A pty pair; the slave plays the user's terminal.
    struct Pty {
        master: OwnedFd,
        slave: OwnedFd,
    }

    fn openpty(rows: u16, cols: u16) -> Pty {
        let (mut m, mut s) = (0, 0);
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty fills two new fds.
        let r =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(r, 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: new fds, ours.
        unsafe {
            Pty {
                master: OwnedFd::from_raw_fd(m),
                slave: OwnedFd::from_raw_fd(s),
            }
        }
    }

    fn canonical(fd: RawFdNum) -> bool {
        // SAFETY: the test keeps the fd open while it asks.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        sys::tcgetattr(fd).unwrap().c_lflag & libc::ICANON != 0
    }

    type RawFdNum = std::os::fd::RawFd;

    #[test]
    fn a_terminal_is_raw_during_the_session_and_resizes_are_sent() {
        let pty = openpty(40, 100);
        assert!(canonical(pty.slave.as_raw_fd()));
        let slave = pty.slave.as_raw_fd();
        let master = pty.master.try_clone().unwrap();
        let (rundir, server) = FakeMonitor::new().serve(move |c| {
            assert_eq!(c.recv().unwrap(), b"\x0440 100");
            assert!(!canonical(slave), "the terminal is not in raw mode");
            let ws = libc::winsize {
                ws_row: 50,
                ws_col: 120,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ with a valid winsize; kill to our own process.
            unsafe {
                assert_eq!(libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws), 0);
                libc::kill(libc::getpid(), libc::SIGWINCH);
            }
            assert_eq!(c.recv().unwrap(), b"\x0450 120");
            // Raw: a key arrives without a newline, and ctrl-c is data, not a signal.
            write_fd(&master, b"k\x03");
            let mut got = Vec::new();
            while got.len() < 3 {
                got.extend(c.recv().unwrap());
            }
            assert_eq!(got, b"\x00k\x03");
            c.send(MSG_STDOUT, b"bye\r\n");
            c.send(MSG_EXIT, b"0");
        });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut opts = options(&mut out, &mut err);
        opts.stdin = Some(pty.slave.as_fd());
        opts.tty = true;
        let r = attach(&rundir, opts).unwrap();
        server.join().unwrap();
        assert_eq!(r, AttachResult::Exited(0));
        assert_eq!(out, b"bye\r\n");
        assert!(
            canonical(pty.slave.as_raw_fd()),
            "the terminal was not restored"
        );
    }

    #[test]
    fn a_pipe_is_not_made_raw_even_with_tty() {
        let (rundir, server) = FakeMonitor::new().serve(|c| {
            // No resize first: the pipe has no size.
            let got = c.read_stdin();
            c.send(MSG_EXIT, b"0");
            got
        });
        let (stdin_r, stdin_w) = pipe();
        write_fd(&stdin_w, b"data");
        drop(stdin_w);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut opts = options(&mut out, &mut err);
        opts.stdin = Some(stdin_r.as_fd());
        opts.tty = true;
        assert_eq!(attach(&rundir, opts).unwrap(), AttachResult::Exited(0));
        assert_eq!(server.join().unwrap(), (b"data".to_vec(), true));
    }

    struct Failing;

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::EPIPE))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Panicking;

    impl Write for Panicking {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            panic!("writer panicked");
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_terminal_is_restored_after_errors_and_panics() {
        let pty = openpty(24, 80);
        for panics in [false, true] {
            let (rundir, server) = FakeMonitor::new().serve(|c| {
                assert_eq!(c.recv().unwrap(), b"\x0424 80");
                c.send(MSG_STDOUT, b"output nobody can take");
                // Whatever the client does next, it leaves.
                while c.recv().is_some() {}
            });
            let (mut failing, mut panicking) = (Failing, Panicking);
            let mut err = Vec::new();
            let opts = AttachOptions {
                stdin: Some(pty.slave.as_fd()),
                stdout: Some(if panics { &mut panicking } else { &mut failing }),
                stderr: Some(&mut err),
                tty: true,
                detach_keys: Vec::new(),
            };
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| attach(&rundir, opts)));
            server.join().unwrap();
            match r {
                Ok(Err(AttachError::Output(_))) => assert!(!panics),
                Err(_) => assert!(panics),
                Ok(other) => panic!("unexpected {other:?}"),
            }
            assert!(
                canonical(pty.slave.as_raw_fd()),
                "not restored (panic: {panics})"
            );
        }

        let r = std::panic::catch_unwind(|| {
            let _raw = RawTerminal::enter(pty.slave.as_fd()).unwrap();
            assert!(!canonical(pty.slave.as_raw_fd()));
            panic!("while raw");
        });
        assert!(r.is_err());
        assert!(canonical(pty.slave.as_raw_fd()));
    }
}
