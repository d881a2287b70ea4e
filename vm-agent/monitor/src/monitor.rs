//! What the monitor does, in the order of docs/internals.md ("The monitor"): set up in
//! the run directory, have the OCI runtime create the container, report to the caller
//! on the sync fd, then copy output to the log and the attached clients until the
//! container's process exits, record the exit and run the exit command.

use std::ffi::{CString, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::args::{Args, LogDriver};
use crate::logfile::{self, Format, Log, Stream};
use crate::notify::{self, Relay};
use crate::sys::{self, Ended};

/// One read of container output, and the largest client packet (plus its kind byte).
const BUF: usize = 16 * 1024;
/// Attach connections served at once; more are refused (closed at once).
const MAX_CLIENTS: usize = 64;
/// Client stdin held while the container does not read it; clients are not read
/// above it.
const STDIN_HIGH: usize = 64 * 1024;
/// At most this many reads when draining after the exit: a process outside the
/// container's pid namespace may keep writing.
const DRAIN_READS: usize = 2048;
/// How long output waits for a client whose socket is full before that client is
/// dropped: a client that reads late still gets everything, one that stopped reading
/// holds the output (and the log) back no longer than this.
const STALL: Duration = Duration::from_secs(2);

/// Attach message kinds, the first byte of every packet.
pub mod kind {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const EXIT: u8 = 3;
    pub const RESIZE: u8 = 4;
    pub const STDIN_CLOSED: u8 = 5;
}

/// The first poll slot of an attach client: before them come the signalfd, the attach
/// socket, stdout, stderr, the container's stdin and the notify socket.
const CLIENTS: usize = 6;

/// Files in the run directory (the monitor's working directory).
const ATTACH: &str = "attach";
const CONSOLE: &str = "console";
const PIDFILE: &str = "pidfile";
const EXIT: &str = "exit";
const MONITOR_PID: &str = "monitor.pid";
const LOG_ERROR: &str = "log-error";

#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn ctx(what: impl fmt::Display) -> impl FnOnce(io::Error) -> Error {
    move |e| Error(format!("{what}: {e}"))
}

/// Runs the monitor; returns its exit code: 0 once the container was reported created
/// and has exited (and the exit command ran), 1 when it could not be created.
pub fn run(args: Args) -> i32 {
    let mut sync = match prepare(&args) {
        Ok(s) => SyncFd(s),
        Err(e) => {
            eprintln!("capsa-monitor: error: {e}");
            return 1;
        }
    };
    match setup(&args) {
        Ok(ready) => {
            sync.send(&format!("pid {}", ready.pid));
            if args.log_driver != LogDriver::Passthrough {
                // The caller may wait for EOF on what it gave us as stdio.
                let _ = sys::stdio_to_devnull();
            }
            ready.serve(&args);
            0
        }
        Err(e) => {
            sync.send(&format!("error {}", one_line(&e.0)));
            eprintln!("capsa-monitor: error: {e}");
            1
        }
    }
}

/// Fds 0 to 3+N-1 filled and the sync fd taken.
fn prepare(args: &Args) -> Result<Option<File>, Error> {
    // Everything the monitor opens lands above the fds kept for the container.
    sys::fill_fd_slots(3 + args.preserve_fds as i32).map_err(ctx("opening /dev/null"))?;
    match args.sync_fd {
        Some(fd) if sys::fd_is_open(fd) => {
            sys::set_cloexec(fd).map_err(ctx("--sync-fd"))?;
            // SAFETY: the caller handed this open fd to us; nothing else owns it.
            Ok(Some(File::from(unsafe { sys::owned(fd) })))
        }
        Some(fd) => Err(Error(format!("--sync-fd {fd} is not open"))),
        None => Ok(None),
    }
}

/// The caller's end of the one-line report.
struct SyncFd(Option<File>);

impl SyncFd {
    fn send(&mut self, line: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

fn one_line(s: &str) -> String {
    let mut out = String::new();
    for l in s.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(l);
    }
    out
}

/// The runtime's `create` command line (after the program itself).
pub fn create_args(
    args: &Args,
    bundle: &Path,
    pidfile: &Path,
    console: Option<&Path>,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = args.runtime_args.clone();
    a.extend([
        "create".into(),
        "--bundle".into(),
        bundle.into(),
        "--pid-file".into(),
        pidfile.into(),
    ]);
    if let Some(c) = console {
        a.extend(["--console-socket".into(), c.into()]);
    }
    if args.preserve_fds > 0 {
        a.extend([
            "--preserve-fds".into(),
            args.preserve_fds.to_string().into(),
        ]);
    }
    a.push(args.id.as_str().into());
    a
}

/// The path the runtime connects to for the console socket bound in the run directory:
/// absolute when it fits a socket address, else through our working directory in /proc
/// (the 108-byte limit applies to the whole path).
pub fn console_path(rundir: &Path, pid: i32) -> PathBuf {
    let abs = rundir.join(CONSOLE);
    if abs.as_os_str().len() < 108 {
        abs
    } else {
        PathBuf::from(format!("/proc/{pid}/cwd/{CONSOLE}"))
    }
}

/// A created container, its output fds and the attach socket.
struct Ready {
    pid: i32,
    signals: OwnedFd,
    listener: OwnedFd,
    outputs: [Option<OwnedFd>; 2],
    stdin: Stdin,
    log: Option<Log<File>>,
    notify: Option<Relay>,
}

enum Stdin {
    /// The container's stdin is /dev/null or the monitor's own.
    None,
    Pipe(OwnedFd),
    /// Written to the pty master, `outputs[0]`.
    Pty,
}

fn atomic_write(name: &str, content: &str) -> io::Result<()> {
    let tmp = format!("{name}.tmp");
    fs::write(&tmp, content)?;
    fs::rename(&tmp, name)
}

fn setup(args: &Args) -> Result<Ready, Error> {
    // Fails only for a process group leader, which keeps the caller's session.
    let _ = sys::setsid();
    sys::set_child_subreaper().map_err(ctx("becoming a subreaper"))?;
    // Before any child exists, so no SIGCHLD is missed.
    let signals = sys::signalfd().map_err(ctx("creating a signalfd"))?;

    let log = match (args.log_driver, &args.log_path) {
        (LogDriver::K8sFile | LogDriver::JsonFile, Some(p)) => {
            let f = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(p)
                .map_err(ctx(format!("opening the log {}", p.display())))?;
            let format = if args.log_driver == LogDriver::K8sFile {
                Format::K8sFile
            } else {
                Format::JsonFile
            };
            Some(Log::new(f, format))
        }
        _ => None,
    };
    let bundle = std::path::absolute(&args.bundle)
        .map_err(ctx(format!("bundle {}", args.bundle.display())))?;
    std::env::set_current_dir(&args.rundir).map_err(ctx(format!(
        "entering the run directory {}",
        args.rundir.display()
    )))?;
    let rundir = std::env::current_dir().map_err(ctx("the run directory"))?;
    let mut cleanup = Cleanup(true);
    for stale in [EXIT, "exit.tmp", PIDFILE, ATTACH, CONSOLE, notify::SOCKET] {
        let _ = fs::remove_file(stale);
    }
    atomic_write(MONITOR_PID, &format!("{}\n", sys::getpid())).map_err(ctx(format!(
        "writing {}",
        rundir.join(MONITOR_PID).display()
    )))?;

    // A relative bind: the run directory's own path may be too long for a socket.
    let listener = sys::listen_unix(&cstr(ATTACH), libc::SOCK_SEQPACKET, 16)
        .map_err(ctx(format!("binding {}", rundir.join(ATTACH).display())))?;
    let console = if args.terminal {
        let l = sys::listen_unix(&cstr(CONSOLE), libc::SOCK_STREAM, 1)
            .map_err(ctx(format!("binding {}", rundir.join(CONSOLE).display())))?;
        Some(l)
    } else {
        None
    };
    // Bound before `create`, which bind-mounts its directory into the container.
    let notify = match &args.sdnotify_socket {
        Some(host) => Some(Relay::bind(host).map_err(ctx(format!(
            "binding {}",
            rundir.join(notify::SOCKET).display()
        )))?),
        None => None,
    };

    let mut cmd = command(&args.runtime);
    let console_at = console
        .as_ref()
        .map(|_| console_path(&rundir, sys::getpid()));
    cmd.args(create_args(
        args,
        &bundle,
        &rundir.join(PIDFILE),
        console_at.as_deref(),
    ));
    let mut outputs: [Option<OwnedFd>; 2] = [None, None];
    let mut stdin = Stdin::None;
    // Where the runtime's own complaints can be read back if create fails.
    let mut errors = None;
    if args.log_driver == LogDriver::Passthrough {
        cmd.stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
    } else if args.terminal {
        let (r, w) = sys::pipe().map_err(ctx("creating a pipe"))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(w);
        errors = Some(r);
    } else {
        if args.stdin {
            let (r, w) = sys::pipe().map_err(ctx("creating a pipe"))?;
            sys::set_nonblocking(w.as_fd()).map_err(ctx("stdin pipe"))?;
            cmd.stdin(r);
            stdin = Stdin::Pipe(w);
        } else {
            cmd.stdin(Stdio::null());
        }
        let (r1, w1) = sys::pipe().map_err(ctx("creating a pipe"))?;
        let (r2, w2) = sys::pipe().map_err(ctx("creating a pipe"))?;
        cmd.stdout(w1).stderr(w2);
        errors = Some(r2.try_clone().map_err(ctx("stderr pipe"))?);
        outputs = [Some(r1), Some(r2)];
    }
    let rt = args.runtime.display().to_string();
    let status = {
        let mut child = cmd
            .spawn()
            .map_err(ctx(format!("running the OCI runtime {rt}")))?;
        // The write ends live in `cmd`: closed now, they are held by the container only.
        drop(cmd);
        child
            .wait()
            .map_err(ctx(format!("waiting for {rt} create")))?
    };
    if !status.success() {
        let mut detail = errors.map(|fd| read_some(&fd)).unwrap_or_default();
        if detail.trim().is_empty() {
            detail = format!("{rt} create {} failed: {status}", args.id);
        }
        return Err(Error(detail));
    }
    drop(errors);
    let _ = fs::remove_file(CONSOLE);
    if let Some(l) = console {
        let master = receive_pty(&l).map_err(ctx(format!(
            "receiving the terminal from {rt} on {}",
            rundir.join(CONSOLE).display()
        )))?;
        sys::set_nonblocking(master.as_fd()).map_err(ctx("pty master"))?;
        if let Some((rows, cols)) = args.terminal_size {
            sys::set_winsize(master.as_fd(), rows, cols).map_err(ctx("sizing the terminal"))?;
        }
        outputs[0] = Some(master);
        if args.stdin {
            stdin = Stdin::Pty;
        }
    }
    for fd in outputs.iter().flatten() {
        sys::set_nonblocking(fd.as_fd()).map_err(ctx("output pipe"))?;
    }
    let pid = fs::read_to_string(PIDFILE)
        .map_err(ctx(format!("reading {}", rundir.join(PIDFILE).display())))?;
    let pid: i32 = pid.trim().parse().map_err(|_| {
        Error(format!(
            "{}: not a process id: {pid:?}",
            rundir.join(PIDFILE).display()
        ))
    })?;
    // The runtime has them; the monitor's copies would keep pipes and sockets open.
    for fd in 3..3 + args.preserve_fds as i32 {
        sys::close_raw(fd);
    }
    cleanup.0 = false;
    Ok(Ready {
        pid,
        signals,
        listener,
        outputs,
        stdin,
        log,
        notify,
    })
}

/// A child process with every signal action at its default and an empty signal mask.
fn command(program: &Path) -> Command {
    let mut c = Command::new(program);
    // SAFETY: the hook only makes rt_sigaction calls, which are async-signal-safe; std
    // empties the signal mask itself.
    unsafe {
        c.pre_exec(|| {
            sys::default_signal_actions();
            Ok(())
        })
    };
    c
}

/// Removes what a failed setup left in the run directory (the working directory).
struct Cleanup(bool);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.0 {
            for f in [ATTACH, CONSOLE, MONITOR_PID, notify::SOCKET] {
                let _ = fs::remove_file(f);
            }
        }
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in a constant")
}

/// What is readable in a pipe whose writers are gone (the runtime's error message).
fn read_some(fd: &OwnedFd) -> String {
    let _ = sys::set_nonblocking(fd.as_fd());
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while out.len() < 8192 {
        match sys::read(fd.as_fd(), &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pty master the runtime sent to the console socket while it ran `create`.
fn receive_pty(listener: &OwnedFd) -> io::Result<OwnedFd> {
    let conn = sys::accept(listener.as_fd())?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the runtime never connected"))?;
    // The runtime has exited, so the message is complete; read it blocking.
    let fl_ok = {
        // SAFETY: F_GETFL/F_SETFL on a valid fd take and return plain flags.
        unsafe {
            let fl = libc::fcntl(conn.as_raw_fd(), libc::F_GETFL);
            fl >= 0 && libc::fcntl(conn.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK) >= 0
        }
    };
    if !fl_ok {
        return Err(io::Error::last_os_error());
    }
    sys::recv_fd(conn.as_fd())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Read {
    Data,
    /// Nothing now (it would block).
    Empty,
    /// End of file, or the stream failed.
    End,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientStdin {
    /// Has sent no stdin yet.
    Unknown,
    Open,
    Closed,
}

struct Client {
    fd: OwnedFd,
    stdin: ClientStdin,
    /// Its socket was full for the packet in `Serve::stall`.
    behind: bool,
}

/// The event loop's state once the container exists.
struct Serve<'a> {
    args: &'a Args,
    buf: Vec<u8>,
    clients: Vec<Client>,
    outputs: [Option<OwnedFd>; 2],
    stdin: Stdin,
    pending: Vec<u8>,
    close_stdin: bool,
    log: Option<Log<File>>,
    log_warned: bool,
    pid: i32,
    ended: Option<Ended>,
    /// The last output packet, while some client has still to take it; no output is
    /// read meanwhile (until `stall_until`, when those clients are dropped).
    stall: Vec<u8>,
    stall_until: Option<Instant>,
    drain_reads: usize,
    notify: Option<Relay>,
}

impl Ready {
    fn serve(self, args: &Args) {
        let Ready {
            pid,
            signals,
            listener,
            outputs,
            stdin,
            log,
            notify,
        } = self;
        let mut s = Serve {
            args,
            buf: vec![0; BUF + 1],
            clients: Vec::new(),
            outputs,
            stdin,
            pending: Vec::new(),
            close_stdin: false,
            log,
            log_warned: false,
            pid,
            ended: None,
            stall: Vec::new(),
            stall_until: None,
            drain_reads: 0,
            notify,
        };
        let mut fds = Vec::with_capacity(8);
        sys::trim_code_pages();
        while !s.done() {
            s.step(&signals, &listener, &mut fds);
        }
        let code = s.ended.map(Ended::code).unwrap_or(-1);
        let _ = atomic_write(EXIT, &format!("{code} {}\n", logfile::unix_nanos()));
        // Clients still in the listen queue learn the exit code too.
        s.accept(&listener);
        s.say_goodbye(code);
        drop(listener);
        let _ = fs::remove_file(ATTACH);
        if s.notify.take().is_some() {
            let _ = fs::remove_file(notify::SOCKET);
        }
        drop(s);
        if let Some(cmd) = &args.exit_command {
            let _ = command(cmd)
                .args(&args.exit_args)
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Serve<'_> {
    /// The container has exited, its output is drained and every client has it.
    fn done(&self) -> bool {
        self.ended.is_some()
            && self.stall_until.is_none()
            && self.outputs.iter().all(Option::is_none)
    }

    /// One poll and everything it reported.
    fn step(&mut self, signals: &OwnedFd, listener: &OwnedFd, fds: &mut Vec<libc::pollfd>) {
        // After the exit, output is read until it would block rather than polled for:
        // a process outside the container may hold the pipe open.
        let draining = self.ended.is_some() && self.stall_until.is_none();
        if draining {
            for stream in [Stream::Stdout, Stream::Stderr] {
                self.drain_reads += 1;
                if self.drain_reads > DRAIN_READS || self.read_output(stream) != Read::Data {
                    self.close_output(stream);
                }
                if self.stall_until.is_some() {
                    break;
                }
            }
            if self.done() {
                return;
            }
        }
        let read_outputs = self.ended.is_none() && self.stall_until.is_none();
        fds.clear();
        fds.push(sys::pollfd(signals.as_raw_fd(), libc::POLLIN));
        fds.push(sys::pollfd(listener.as_raw_fd(), libc::POLLIN));
        for o in &self.outputs {
            // A slot not polled has fd -1, which poll skips.
            let fd = o
                .as_ref()
                .filter(|_| read_outputs)
                .map_or(-1, |f| f.as_raw_fd());
            fds.push(sys::pollfd(fd, libc::POLLIN));
        }
        let stdin_fd = match (&self.stdin, self.pending.is_empty()) {
            (Stdin::Pipe(f), false) => f.as_raw_fd(),
            (Stdin::Pty, false) => self.outputs[0].as_ref().map_or(-1, |f| f.as_raw_fd()),
            _ => -1,
        };
        fds.push(sys::pollfd(stdin_fd, libc::POLLOUT));
        let notify_fd = self.notify.as_ref().map_or(-1, Relay::fd);
        fds.push(sys::pollfd(notify_fd, libc::POLLIN));
        let client_events = if self.pending.len() < STDIN_HIGH {
            libc::POLLIN
        } else {
            0
        };
        for c in &self.clients {
            let out = if c.behind { libc::POLLOUT } else { 0 };
            fds.push(sys::pollfd(c.fd.as_raw_fd(), client_events | out));
        }
        let timeout = match self.stall_until {
            Some(t) => t.saturating_duration_since(Instant::now()).as_millis() as i32 + 1,
            None if draining => 0,
            None => -1,
        };
        if sys::poll(fds, timeout).is_err() {
            return;
        }
        let ready = |p: &libc::pollfd| p.fd >= 0 && p.revents != 0;

        for (i, p) in fds[CLIENTS..].iter().enumerate().rev() {
            if !ready(p) {
                continue;
            }
            let keep = (!self.clients[i].behind || self.catch_up(i)) && self.client_packet(i);
            if !keep {
                self.clients.swap_remove(i);
            }
        }
        if let Some(t) = self.stall_until {
            let late = Instant::now() >= t;
            if late {
                self.clients.retain(|c| !c.behind);
            }
            if !self.clients.iter().any(|c| c.behind) {
                self.stall_until = None;
            }
        }
        // Before any output: a client that connected before the container wrote gets
        // all of it.
        if ready(&fds[1]) {
            self.accept(listener);
        }
        if ready(&fds[4]) {
            self.flush_stdin();
        }
        if ready(&fds[5])
            && let Some(n) = &self.notify
        {
            n.pump(&mut self.buf, sys::getpid());
        }
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            if ready(&fds[2 + i]) && self.read_output(stream) == Read::End {
                self.close_output(stream);
            }
        }
        if ready(&fds[0]) {
            sys::drain_signalfd(signals.as_fd());
            self.reap();
        }
    }

    /// Gives client `i` the stalled packet; false when it is gone.
    fn catch_up(&mut self, i: usize) -> bool {
        let c = &mut self.clients[i];
        match sys::send(c.fd.as_fd(), &self.stall) {
            Ok(_) => {
                c.behind = false;
                true
            }
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
    }

    fn reap(&mut self) {
        while let Ok(Some((pid, ended))) = sys::reap_any() {
            if pid == self.pid {
                self.ended = Some(ended);
            }
        }
    }

    fn accept(&mut self, listener: &OwnedFd) {
        while let Ok(Some(fd)) = sys::accept(listener.as_fd()) {
            if self.clients.len() >= MAX_CLIENTS {
                continue;
            }
            sys::grow_send_buffer(fd.as_fd(), 1 << 20);
            self.clients.push(Client {
                fd,
                stdin: ClientStdin::Unknown,
                behind: false,
            });
        }
    }

    /// Reads one chunk of a stream and sends it on.
    fn read_output(&mut self, stream: Stream) -> Read {
        let Some(fd) = &self.outputs[stream as usize] else {
            return Read::End;
        };
        match sys::read(fd.as_fd(), &mut self.buf[1..]) {
            Ok(0) => Read::End,
            Ok(n) => {
                self.dispatch(stream, n);
                Read::Data
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::Empty,
            // EIO: every end of the pty's terminal side is closed.
            Err(_) => Read::End,
        }
    }

    fn close_output(&mut self, stream: Stream) {
        if self.outputs[stream as usize].take().is_none() {
            return;
        }
        if let Some(log) = &mut self.log {
            log.end(stream, &logfile::now());
        }
        if matches!(self.stdin, Stdin::Pty) && stream == Stream::Stdout {
            self.stdin = Stdin::None;
        }
    }

    /// Sends `buf[1..=n]` of `stream` to the log and to every client. A client whose
    /// socket is full stalls the output until it has taken this packet (see `STALL`).
    fn dispatch(&mut self, stream: Stream, n: usize) {
        if let Some(log) = &mut self.log {
            log.write(stream, &self.buf[1..=n], &logfile::now());
            if let Some(e) = log.take_error()
                && !self.log_warned
            {
                self.log_warned = true;
                warn_log(self.args, &e);
            }
        }
        self.buf[0] = match stream {
            Stream::Stdout => kind::STDOUT,
            Stream::Stderr => kind::STDERR,
        };
        let packet = &self.buf[..=n];
        let mut stalled = false;
        self.clients
            .retain_mut(|c| match sys::send(c.fd.as_fd(), packet) {
                Ok(_) => true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.behind = true;
                    stalled = true;
                    true
                }
                Err(_) => false,
            });
        if stalled {
            self.stall.clear();
            self.stall.extend_from_slice(packet);
            self.stall_until = Some(Instant::now() + STALL);
        }
    }

    /// Handles one packet from client `i`; false when it is gone.
    fn client_packet(&mut self, i: usize) -> bool {
        let n = match sys::recv(self.clients[i].fd.as_fd(), &mut self.buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        };
        match self.buf[0] {
            kind::STDIN => {
                if matches!(self.stdin, Stdin::None) || self.close_stdin {
                    return true;
                }
                let c = &mut self.clients[i];
                if c.stdin == ClientStdin::Unknown {
                    c.stdin = ClientStdin::Open;
                }
                self.pending.extend_from_slice(&self.buf[1..n]);
                self.flush_stdin();
            }
            kind::STDIN_CLOSED => {
                self.clients[i].stdin = ClientStdin::Closed;
                let others = self.clients.iter().any(|c| c.stdin == ClientStdin::Open);
                if !others && matches!(self.stdin, Stdin::Pipe(_)) {
                    self.close_stdin = true;
                    self.flush_stdin();
                }
            }
            kind::RESIZE => {
                let size = std::str::from_utf8(&self.buf[1..n]).ok().and_then(|s| {
                    let (r, c) = s.trim().split_once(' ')?;
                    Some((r.trim().parse().ok()?, c.trim().parse().ok()?))
                });
                if let (Some((rows, cols)), true, Some(pty)) =
                    (size, self.args.terminal, &self.outputs[0])
                {
                    let _ = sys::set_winsize(pty.as_fd(), rows, cols);
                }
            }
            _ => {}
        }
        true
    }

    /// Writes what clients sent for the container's stdin, as far as it takes it now.
    fn flush_stdin(&mut self) {
        let target = match &self.stdin {
            Stdin::Pipe(f) => Some(f.as_fd()),
            Stdin::Pty => self.outputs[0].as_ref().map(|f| f.as_fd()),
            Stdin::None => None,
        };
        let Some(target) = target else {
            self.pending = Vec::new();
            return;
        };
        let mut done = 0;
        let mut gone = false;
        while done < self.pending.len() {
            match sys::write(target, &self.pending[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        self.pending.drain(..done);
        if self.pending.is_empty() && self.pending.capacity() > BUF {
            self.pending = Vec::new();
        }
        if gone || (self.close_stdin && self.pending.is_empty()) {
            if let Stdin::Pipe(_) = self.stdin {
                self.stdin = Stdin::None;
            }
            self.pending = Vec::new();
        }
    }

    /// The exit message to every client; one whose socket is full gets up to `STALL`.
    fn say_goodbye(&mut self, code: i32) {
        let mut msg = vec![kind::EXIT];
        msg.extend_from_slice(code.to_string().as_bytes());
        let mut waiting: Vec<Client> = Vec::new();
        for c in self.clients.drain(..) {
            if let Err(e) = sys::send(c.fd.as_fd(), &msg)
                && e.kind() == io::ErrorKind::WouldBlock
            {
                waiting.push(c);
            }
        }
        let deadline = Instant::now() + STALL;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut fds: Vec<libc::pollfd> = waiting
                .iter()
                .map(|c| sys::pollfd(c.fd.as_raw_fd(), libc::POLLOUT))
                .collect();
            if sys::poll(&mut fds, left.as_millis() as i32 + 1).is_err() {
                break;
            }
            let mut i = 0;
            waiting.retain(|c| {
                let r = fds[i].revents;
                i += 1;
                if r == 0 {
                    return true;
                }
                matches!(sys::send(c.fd.as_fd(), &msg), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            });
        }
    }
}

/// The one warning about a failing log, in `<rundir>/log-error`.
fn warn_log(args: &Args, e: &io::Error) {
    let path = args
        .log_path
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let line = format!(
        "{} writing the log {path}: {e}; output that cannot be written is dropped\n",
        String::from_utf8_lossy(&logfile::now())
    );
    let f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(LOG_ERROR);
    if let Ok(mut f) = f {
        let _ = f.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &str) -> Args {
        let line = format!(
            "--id c1 --bundle /b --runtime /usr/bin/crun --rundir /r --log-driver none {extra}"
        );
        Args::parse(line.split_whitespace().map(OsString::from)).unwrap()
    }

    fn s(v: Vec<OsString>) -> String {
        v.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn create_command_lines() {
        let cases = [
            ("", None, "create --bundle /b --pid-file /r/pidfile c1"),
            (
                "--runtime-arg --root --runtime-arg /s --preserve-fds 2",
                None,
                "--root /s create --bundle /b --pid-file /r/pidfile --preserve-fds 2 c1",
            ),
            (
                "--terminal",
                Some("/r/console"),
                "create --bundle /b --pid-file /r/pidfile --console-socket /r/console c1",
            ),
        ];
        for (extra, console, want) in cases {
            let a = args(extra);
            let got = create_args(
                &a,
                Path::new("/b"),
                Path::new("/r/pidfile"),
                console.map(Path::new),
            );
            assert_eq!(s(got), want, "{extra}");
        }
    }

    #[test]
    fn console_paths() {
        assert_eq!(
            console_path(Path::new("/run/capsa/c1"), 42),
            Path::new("/run/capsa/c1/console")
        );
        let long = PathBuf::from(format!("/run/{}", "x".repeat(100)));
        assert_eq!(console_path(&long, 42), Path::new("/proc/42/cwd/console"));
    }

    #[test]
    fn one_line_errors() {
        assert_eq!(one_line("a\n\n  b  \n"), "a; b");
        assert_eq!(one_line(""), "");
    }
}
