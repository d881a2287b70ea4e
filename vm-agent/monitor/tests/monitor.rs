//! The monitor against crun, as root: a busybox bundle per test, the monitor binary
//! spawned as `capsa start` spawns it, `crun start` run by the test as the caller would.
//! Skipped (with a reason printed) without root, crun or busybox.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capsa_engine::container::spec::{self, SpecOptions};

const MONITOR: &str = env!("CARGO_BIN_EXE_capsa-monitor");
const TIMEOUT: Duration = Duration::from_secs(30);

fn crun() -> Option<PathBuf> {
    ["/usr/bin/crun", "/usr/local/bin/crun"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Whether the test can run; prints why not. The test process becomes a subreaper, so
/// that a monitor whose parent exited can still be waited for.
fn can_run(test: &str) -> bool {
    static SUBREAPER: std::sync::Once = std::sync::Once::new();
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    SUBREAPER.call_once(|| {
        assert_eq!(
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
            0
        )
    });
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {test}: needs root (crun as root)");
        return false;
    }
    if crun().is_none() {
        eprintln!("SKIP {test}: crun is not installed (scripts/setup.sh installs it)");
        return false;
    }
    if busybox().is_none() {
        eprintln!("SKIP {test}: busybox-static is not installed (scripts/setup.sh installs it)");
        return false;
    }
    true
}

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "printf", "awk", "stty", "head", "yes", "tr", "test", "true",
    "kill", "grep",
];

/// One container: a bundle, a run directory, crun's state root and a log, all in a
/// temporary directory; `crun delete --force` when dropped.
struct Ctr {
    _dir: tempfile::TempDir,
    id: String,
    bundle: PathBuf,
    rundir: PathBuf,
    state: PathBuf,
    log: PathBuf,
}

impl Ctr {
    fn new(test: &str, args: &[&str], terminal: bool) -> Ctr {
        Ctr::with_rundir(test, args, terminal, "run")
    }

    fn with_rundir(test: &str, args: &[&str], terminal: bool, rundir: &str) -> Ctr {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        let bin = bundle.join("rootfs/bin");
        fs::create_dir_all(&bin).unwrap();
        fs::copy(busybox().unwrap(), bin.join("busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
        }
        let mut o = SpecOptions::new(args.iter().map(|s| s.to_string()).collect());
        o.terminal = terminal;
        let spec = spec::build(&o, "rootfs").unwrap();
        fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        let rundir = dir.path().join(rundir);
        fs::create_dir_all(&rundir).unwrap();
        let id = format!("capsa-mon-{test}-{}", std::process::id());
        Ctr {
            id,
            bundle,
            state: dir.path().join("state"),
            log: dir.path().join("ctr.log"),
            rundir,
            _dir: dir,
        }
    }

    /// The monitor's command line with k8s-file logging unless `extra` names a driver.
    fn args(&self, extra: &[&str]) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--id".into(),
            self.id.clone().into(),
            "--bundle".into(),
            self.bundle.clone().into(),
            "--runtime".into(),
            crun().unwrap().into(),
            "--runtime-arg".into(),
            "--root".into(),
            "--runtime-arg".into(),
            self.state.clone().into(),
            "--rundir".into(),
            self.rundir.clone().into(),
        ];
        if !extra.contains(&"--log-driver") {
            a.extend([
                "--log-driver".into(),
                "k8s-file".into(),
                "--log-path".into(),
                self.log.clone().into(),
            ]);
        }
        a.extend(extra.iter().map(OsString::from));
        a
    }

    /// Spawns the monitor with its sync pipe at fd 3 + preserved.len() and `preserved`
    /// at fds 3...
    fn spawn_with(&self, extra: &[&str], preserved: Vec<OwnedFd>, cmd: Option<Command>) -> Monitor {
        let (r, w) = pipe();
        let sync_fd = 3 + preserved.len() as RawFd;
        let mut extra: Vec<&str> = extra.to_vec();
        let sync_s = sync_fd.to_string();
        let n = preserved.len().to_string();
        extra.extend(["--sync-fd", &sync_s]);
        if !preserved.is_empty() {
            extra.extend(["--preserve-fds", &n]);
        }
        let mut cmd = cmd.unwrap_or_else(|| Command::new(MONITOR));
        cmd.args(self.args(&extra));
        assert!(preserved.len() < 8);
        let mut fds = [-1; 8];
        for (i, f) in preserved.iter().enumerate() {
            fds[i] = f.as_raw_fd();
        }
        fds[preserved.len()] = w.as_raw_fd();
        let count = preserved.len() + 1;
        // SAFETY: the closure only calls fcntl, dup2 and close, which are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way first, so that no target clobbers a source.
                // No allocation here: this runs between fork and exec.
                let mut high = [-1; 8];
                for i in 0..count {
                    high[i] = libc::fcntl(fds[i], libc::F_DUPFD_CLOEXEC, 100);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, &h) in high[..count].iter().enumerate() {
                    if libc::dup2(h, 3 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            })
        };
        let child = cmd.spawn().unwrap();
        drop(w);
        drop(preserved);
        Monitor {
            child,
            sync: File::from(r),
            rundir: self.rundir.clone(),
            monitor: None,
        }
    }

    fn spawn(&self, extra: &[&str]) -> Monitor {
        self.spawn_with(extra, Vec::new(), None)
    }

    fn crun(&self, args: &[&str]) -> std::process::Output {
        Command::new(crun().unwrap())
            .arg("--root")
            .arg(&self.state)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn start(&self) {
        let out = self.crun(&["start", &self.id]);
        assert!(
            out.status.success(),
            "crun start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The exit file's code, once it appears; its time is checked to be now-ish.
    fn exit_code(&self) -> i32 {
        let path = self.rundir.join("exit");
        let deadline = Instant::now() + TIMEOUT;
        while !path.exists() {
            assert!(Instant::now() < deadline, "no exit file after {TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let s = fs::read_to_string(&path).unwrap();
        assert!(s.ends_with('\n'), "{s:?}");
        let (code, nanos) = s.trim().split_once(' ').expect("<code> <nanos>");
        let nanos: u128 = nanos.parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        assert!(nanos <= now && now - nanos < 120_000_000_000, "{s:?}");
        assert!(!self.rundir.join("exit.tmp").exists());
        code.parse().unwrap()
    }

    /// `(stream, F|P, text)` of every k8s-file record.
    fn k8s_log(&self) -> Vec<(String, String, String)> {
        let text = fs::read_to_string(&self.log).unwrap();
        // Not lines(): a terminal's "\r" before the newline is part of the text.
        text.split_terminator('\n')
            .map(|l| {
                let mut p = l.splitn(4, ' ');
                let (t, s, f, rest) = (
                    p.next().unwrap(),
                    p.next().unwrap(),
                    p.next().unwrap(),
                    p.next().unwrap_or(""),
                );
                check_time(t);
                (s.to_string(), f.to_string(), rest.to_string())
            })
            .collect()
    }

    fn attach(&self) -> Attach {
        Attach::connect(&self.rundir.join("attach"))
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = self.crun(&["delete", "--force", &self.id]);
    }
}

fn check_time(t: &str) {
    let b = t.as_bytes();
    assert_eq!(b.len(), 30, "{t}");
    assert_eq!(
        (b[4], b[7], b[10], b[13], b[16], b[19], b[29]),
        (b'-', b'-', b'T', b':', b':', b'.', b'Z'),
        "{t}"
    );
    assert!(t.starts_with("20"), "{t}");
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two fds.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two new fds.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) > 0 }
}

/// The process the test spawned (which exits once the monitor has reported) and the
/// monitor it forked.
struct Monitor {
    child: Child,
    sync: File,
    rundir: PathBuf,
    monitor: Option<i32>,
}

impl Monitor {
    /// The one line on the sync fd, and EOF after it.
    fn sync_line(&mut self) -> String {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            assert!(
                wait_readable(self.sync.as_raw_fd(), TIMEOUT),
                "no sync line after {TIMEOUT:?}: {:?}",
                String::from_utf8_lossy(&line)
            );
            if self.sync.read(&mut b).unwrap() == 0 {
                break;
            }
            line.push(b[0]);
        }
        let s = String::from_utf8(line).unwrap();
        assert!(s.ends_with('\n') && s.matches('\n').count() == 1, "{s:?}");
        s.trim_end().to_string()
    }

    /// The container's pid from the sync line. The monitor is the process spawned, unless
    /// that was a shell that started it in the background.
    fn pid(&mut self) -> i32 {
        let l = self.sync_line();
        let pid = l.strip_prefix("pid ").unwrap_or_else(|| panic!("{l:?}"));
        let m = fs::read_to_string(self.rundir.join("monitor.pid")).unwrap();
        let m: i32 = m.trim().parse().unwrap();
        assert!(Path::new(&format!("/proc/{m}")).exists());
        if m != self.child.id() as i32 {
            self.monitor = Some(m);
        }
        pid.parse().unwrap()
    }

    fn wait_spawned(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the spawned process is still running"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The monitor's exit status.
    fn wait(&mut self) -> std::process::ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        let Some(pid) = self.monitor else {
            return self.wait_spawned();
        };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid int; the monitor is our child (we are a subreaper).
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            assert!(r >= 0, "waitpid {pid}: {}", std::io::Error::last_os_error());
            if r == pid {
                self.monitor = None;
                return std::process::ExitStatus::from_raw(status);
            }
            assert!(Instant::now() < deadline, "the monitor is still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(pid) = self.monitor {
            // SAFETY: kill and waitpid on the monitor's pid, our child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// An attach client: a SOCK_SEQPACKET connection to the monitor.
struct Attach(OwnedFd);

#[derive(Debug, Default)]
struct Received {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<String>,
}

impl Attach {
    fn connect(path: &Path) -> Attach {
        let p = path.as_os_str().as_encoded_bytes();
        // SAFETY: plain socket(2).
        let fd =
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: socket returned a new fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero is a valid sockaddr_un.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        assert!(p.len() < addr.sun_path.len(), "{path:?} is too long");
        for (d, s) in addr.sun_path.iter_mut().zip(p) {
            *d = *s as libc::c_char;
        }
        // SAFETY: `addr` is a valid sockaddr_un.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        assert_eq!(
            r,
            0,
            "connect {path:?}: {}",
            std::io::Error::last_os_error()
        );
        Attach(fd)
    }

    fn send(&self, kind: u8, data: &[u8]) {
        let mut p = vec![kind];
        p.extend_from_slice(data);
        // SAFETY: `p` is valid for reads of its length.
        let n = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                p.as_ptr().cast(),
                p.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        assert_eq!(n, p.len() as isize);
    }

    /// The next packet, or None at EOF.
    fn recv(&self) -> Option<Vec<u8>> {
        assert!(
            wait_readable(self.0.as_raw_fd(), TIMEOUT),
            "nothing from the monitor after {TIMEOUT:?}"
        );
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert!(n >= 0, "recv: {}", std::io::Error::last_os_error());
        buf.truncate(n as usize);
        (n > 0).then_some(buf)
    }

    /// Everything up to the exit message and the end of the connection.
    fn collect(&self) -> Received {
        let mut r = Received::default();
        while let Some(p) = self.recv() {
            assert!(r.exit.is_none(), "a packet after the exit message: {p:?}");
            match p[0] {
                1 => r.stdout.extend_from_slice(&p[1..]),
                2 => r.stderr.extend_from_slice(&p[1..]),
                3 => r.exit = Some(String::from_utf8(p[1..].to_vec()).unwrap()),
                k => panic!("unexpected packet kind {k}"),
            }
        }
        r
    }

    /// Stdout until it contains `want`; returns all of it.
    fn stdout_until(&self, want: &str, seen: &mut Vec<u8>) {
        while !String::from_utf8_lossy(seen).contains(want) {
            let p = self.recv().unwrap_or_else(|| {
                panic!(
                    "EOF before {want:?}; got {:?}",
                    String::from_utf8_lossy(seen)
                )
            });
            assert_eq!(p[0], 1, "{p:?}");
            seen.extend_from_slice(&p[1..]);
        }
    }
}

#[test]
fn k8s_file_streams_and_partial_lines() {
    if !can_run("k8s_file_streams_and_partial_lines") {
        return;
    }
    let c = Ctr::new(
        "k8s",
        &["sh", "-c", "echo out; echo err >&2; printf part"],
        false,
    );
    // What a previous run left (a restart reuses the run directory) is cleared.
    fs::write(c.rundir.join("exit"), "99 0\n").unwrap();
    let mut m = c.spawn(&[]);
    let pid = m.pid();
    assert!(pid > 1);
    assert!(
        !c.rundir.join("exit").exists(),
        "a stale exit file is removed"
    );
    let attach = fs::metadata(c.rundir.join("attach"))
        .expect("attach is listening before the pid is reported");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&attach.permissions()) & 0o777,
        0o600
    );
    c.start();
    assert_eq!(c.exit_code(), 0);
    assert!(m.wait().success());
    let log = c.k8s_log();
    let has = |s: &str, f: &str, t: &str| {
        log.iter()
            .any(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str()) == (s, f, t))
    };
    assert!(has("stdout", "F", "out"), "{log:?}");
    assert!(has("stderr", "F", "err"), "{log:?}");
    assert!(has("stdout", "P", "part"), "{log:?}");
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        !c.rundir.join("attach").exists(),
        "the attach socket is removed at the end"
    );
}

#[test]
fn json_file_escapes() {
    if !can_run("json_file_escapes") {
        return;
    }
    let script = r#"printf 'a"b\\c\tq\001\n'; printf '\377\n' >&2"#;
    let c = Ctr::new("json", &["sh", "-c", script], false);
    let log = c.log.to_str().unwrap().to_string();
    let mut m = c.spawn(&["--log-driver", "json-file", "--log-path", &log]);
    m.pid();
    c.start();
    assert_eq!(c.exit_code(), 0);
    assert!(m.wait().success());
    let raw = fs::read_to_string(&c.log).unwrap();
    assert!(raw.contains(r#""log":"a\"b\\c\tq\u0001\n""#), "{raw}");
    let recs: Vec<serde_json::Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2, "{raw}");
    for r in &recs {
        check_time(r["time"].as_str().unwrap());
        assert_eq!(r.as_object().unwrap().len(), 3, "{r}");
    }
    let find = |s: &str| {
        recs.iter().find(|r| r["stream"] == s).unwrap()["log"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(find("stdout"), "a\"b\\c\tq\u{1}\n");
    assert_eq!(find("stderr"), "\u{fffd}\n");
}

#[test]
fn long_line_is_cut_into_partial_records() {
    if !can_run("long_line_is_cut_into_partial_records") {
        return;
    }
    let c = Ctr::new(
        "long",
        &[
            "sh",
            "-c",
            "head -c 40000 /dev/zero | tr '\\000' x; echo; echo short",
        ],
        false,
    );
    let mut m = c.spawn(&[]);
    m.pid();
    c.start();
    assert_eq!(c.exit_code(), 0);
    assert!(m.wait().success());
    let log = c.k8s_log();
    let (last, parts) = log.split_last().unwrap();
    assert_eq!(last.2, "short");
    let (end, parts) = parts.split_last().unwrap();
    assert_eq!(end.1, "F", "the line ends with a full record");
    assert!(parts.len() >= 2, "{} records", parts.len());
    let mut line = String::new();
    for p in parts {
        assert_eq!((p.0.as_str(), p.1.as_str()), ("stdout", "P"));
        assert!(p.2.len() <= 16 * 1024, "a record of {} bytes", p.2.len());
        line.push_str(&p.2);
    }
    line.push_str(&end.2);
    assert_eq!(line, "x".repeat(40000));
}

#[test]
fn exit_code_3() {
    if !can_run("exit_code_3") {
        return;
    }
    let c = Ctr::new("exit3", &["sh", "-c", "exit 3"], false);
    let mut m = c.spawn(&[]);
    m.pid();
    c.start();
    assert_eq!(c.exit_code(), 3);
    assert!(m.wait().success());
}

#[test]
fn killed_by_sigkill_is_137() {
    if !can_run("killed_by_sigkill_is_137") {
        return;
    }
    let c = Ctr::new("kill", &["sleep", "100"], false);
    let mut m = c.spawn(&[]);
    m.pid();
    c.start();
    let out = c.crun(&["kill", &c.id, "KILL"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.exit_code(), 137);
    assert!(m.wait().success());
}

#[test]
fn attach_receives_output_and_exit() {
    if !can_run("attach_receives_output_and_exit") {
        return;
    }
    let c = Ctr::new(
        "attach",
        &["sh", "-c", "echo hi; sleep 0.2; echo there >&2; exit 5"],
        false,
    );
    let mut m = c.spawn(&["--log-driver", "none"]);
    m.pid();
    // Attached before start, as `capsa run` does.
    let a = c.attach();
    let late = c.attach();
    drop(late);
    c.start();
    let r = a.collect();
    assert_eq!(r.stdout, b"hi\n");
    assert_eq!(r.stderr, b"there\n");
    assert_eq!(r.exit.as_deref(), Some("5"));
    assert_eq!(c.exit_code(), 5);
    assert!(m.wait().success());
    assert!(!c.log.exists(), "--log-driver none writes no log");
}

#[test]
fn stdin_through_attach() {
    if !can_run("stdin_through_attach") {
        return;
    }
    let c = Ctr::new("stdin", &["cat"], false);
    let mut m = c.spawn(&["--stdin"]);
    m.pid();
    let a = c.attach();
    c.start();
    a.send(0, b"hello\n");
    let mut seen = Vec::new();
    a.stdout_until("hello\n", &mut seen);
    a.send(0, b"again");
    a.send(5, b"");
    let r = a.collect();
    seen.extend_from_slice(&r.stdout);
    assert_eq!(seen, b"hello\nagain");
    assert_eq!(
        r.exit.as_deref(),
        Some("0"),
        "cat ends when stdin is closed"
    );
    assert_eq!(c.exit_code(), 0);
    assert!(m.wait().success());
    let log = c.k8s_log();
    assert_eq!(
        log,
        [
            ("stdout".into(), "F".into(), "hello".into()),
            ("stdout".into(), "P".into(), "again".into())
        ]
    );
}

#[test]
fn terminal_output_and_resize() {
    if !can_run("terminal_output_and_resize") {
        return;
    }
    let c = Ctr::new(
        "tty",
        &["sh", "-c", "stty size; read x; stty size; echo \"got $x\""],
        true,
    );
    let mut m = c.spawn(&["--terminal", "--stdin"]);
    m.pid();
    let a = c.attach();
    a.send(4, b"30 100");
    c.start();
    let mut seen = Vec::new();
    a.stdout_until("30 100\r\n", &mut seen);
    a.send(4, b"40 120");
    a.send(0, b"go\n");
    let r = a.collect();
    seen.extend_from_slice(&r.stdout);
    let out = String::from_utf8_lossy(&seen);
    assert!(out.contains("40 120\r\n"), "{out:?}");
    assert!(out.contains("got go\r\n"), "{out:?}");
    assert!(r.stderr.is_empty());
    assert_eq!(r.exit.as_deref(), Some("0"));
    assert_eq!(c.exit_code(), 0);
    assert!(m.wait().success());
    let log = c.k8s_log();
    assert!(log.iter().all(|r| r.0 == "stdout"), "{log:?}");
    assert!(log.iter().any(|r| r.2 == "30 100\r"), "{log:?}");
}

#[test]
fn terminal_with_a_long_run_directory() {
    if !can_run("terminal_with_a_long_run_directory") {
        return;
    }
    let deep = format!("run/{}/{}", "d".repeat(60), "e".repeat(60));
    let c = Ctr::with_rundir("ttylong", &["sh", "-c", "echo tty-ok"], true, &deep);
    assert!(c.rundir.join("attach").as_os_str().len() > 108);
    let mut m = c.spawn(&["--terminal"]);
    m.pid();
    // Clients reach the socket through a directory fd, as the contract says.
    let dir = File::open(&c.rundir).unwrap();
    let a = Attach::connect(Path::new(&format!(
        "/proc/self/fd/{}/attach",
        dir.as_raw_fd()
    )));
    c.start();
    let r = a.collect();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "tty-ok\r\n");
    assert_eq!(r.exit.as_deref(), Some("0"));
    assert!(m.wait().success());
    assert!(c.k8s_log().iter().any(|r| r.2 == "tty-ok\r"));
}

#[test]
fn failing_create_reports_error() {
    if !can_run("failing_create_reports_error") {
        return;
    }
    let c = Ctr::new("fail", &["/nonexistent-binary"], false);
    let mut m = c.spawn(&[]);
    let line = m.sync_line();
    assert!(line.starts_with("error "), "{line:?}");
    assert!(line.contains("nonexistent-binary"), "{line:?}");
    let st = m.wait();
    assert!(!st.success(), "{st:?}");
    for f in ["exit", "attach", "monitor.pid"] {
        assert!(!c.rundir.join(f).exists(), "{f} left behind");
    }
}

#[test]
fn bad_command_line_reports_error() {
    if !can_run("bad_command_line_reports_error") {
        return;
    }
    let c = Ctr::new("badargs", &["true"], false);
    let mut m = c.spawn(&["--log-driver", "syslog"]);
    let line = m.sync_line();
    assert!(
        line.starts_with("error ") && line.contains("syslog"),
        "{line:?}"
    );
    assert_eq!(m.wait().code(), Some(125));
}

#[test]
fn full_log_does_not_block() {
    if !can_run("full_log_does_not_block") {
        return;
    }
    let c = Ctr::new(
        "full",
        &["sh", "-c", "yes hello | head -c 1999998; echo done"],
        false,
    );
    let mut m = c.spawn(&["--log-path", "/dev/full"]);
    m.pid();
    let a = c.attach();
    c.start();
    let r = a.collect();
    assert_eq!(r.exit.as_deref(), Some("0"));
    assert_eq!(r.stdout.len(), 1_999_998 + 5);
    assert!(r.stdout.ends_with(b"hello\ndone\n"));
    assert_eq!(c.exit_code(), 0);
    assert!(m.wait().success());
    let err = fs::read_to_string(c.rundir.join("log-error")).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/dev/full") && err.contains("No space left"),
        "{err}"
    );
}

#[test]
fn exit_command_runs_with_args() {
    if !can_run("exit_command_runs_with_args") {
        return;
    }
    let c = Ctr::new("exitcmd", &["true"], false);
    let rundir = c.rundir.to_str().unwrap().to_string();
    let script =
        r#"test -f "$0/exit" && test ! -e "$0/attach" && echo "$1 $2" > "$0/exit-command-ran""#;
    let mut m = c.spawn(&[
        "--exit-command",
        "/bin/sh",
        "--exit-arg",
        "-c",
        "--exit-arg",
        script,
        "--exit-arg",
        &rundir,
        "--exit-arg",
        "container",
        "--exit-arg",
        "cleanup",
    ]);
    m.pid();
    c.start();
    assert!(m.wait().success());
    assert_eq!(
        fs::read_to_string(c.rundir.join("exit-command-ran")).unwrap(),
        "container cleanup\n"
    );
}

#[test]
fn preserved_fds_reach_the_container() {
    if !can_run("preserved_fds_reach_the_container") {
        return;
    }
    let c = Ctr::new(
        "preserve",
        &["sh", "-c", "echo via-fd3 >&3; echo via-fd4 >&4"],
        false,
    );
    let out3 = c.rundir.join("../fd3");
    let out4 = c.rundir.join("../fd4");
    let f3 = File::create(&out3).unwrap();
    let f4 = File::create(&out4).unwrap();
    let mut m = c.spawn_with(&[], vec![f3.into(), f4.into()], None);
    m.pid();
    c.start();
    assert_eq!(c.exit_code(), 0);
    assert!(m.wait().success());
    assert_eq!(fs::read_to_string(out3).unwrap(), "via-fd3\n");
    assert_eq!(fs::read_to_string(out4).unwrap(), "via-fd4\n");
}

#[test]
fn passthrough_gives_the_container_our_stdio() {
    if !can_run("passthrough_gives_the_container_our_stdio") {
        return;
    }
    let c = Ctr::new(
        "pass",
        &["sh", "-c", "echo pass-out; echo pass-err >&2"],
        false,
    );
    let out = c.rundir.join("../stdout");
    let err = c.rundir.join("../stderr");
    let mut cmd = Command::new(MONITOR);
    cmd.stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap());
    let mut m = c.spawn_with(&["--log-driver", "passthrough"], Vec::new(), Some(cmd));
    m.pid();
    let a = c.attach();
    c.start();
    let r = a.collect();
    assert!(r.stdout.is_empty() && r.stderr.is_empty());
    assert_eq!(r.exit.as_deref(), Some("0"));
    assert!(m.wait().success());
    assert_eq!(fs::read_to_string(out).unwrap(), "pass-out\n");
    assert_eq!(fs::read_to_string(err).unwrap(), "pass-err\n");
}

fn proc_stat(pid: i32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    Some(after.split(' ').map(String::from).collect())
}

#[test]
fn survives_its_parent_and_ignores_termination_signals() {
    if !can_run("survives_its_parent_and_ignores_termination_signals") {
        return;
    }
    // Started from a shell's background job, which ignores SIGINT and SIGQUIT: the
    // container must not inherit that (nor the monitor's blocked signals).
    // (grep is not the last command: busybox sh as pid 1 would exec it with the SIGQUIT
    // it ignores itself.)
    let script = "sleep 0.5; echo still-here; grep -E '^Sig(Ign|Blk)' /proc/self/status; true";
    let c = Ctr::new("orphan", &["sh", "-c", script], false);
    // The caller exits right after spawning the monitor, as `capsa run -d` does.
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "\"$0\" \"$@\" & exit 0", MONITOR]);
    let mut m = c.spawn_with(&[], Vec::new(), Some(cmd));
    let parent = m.child.id() as i32;
    m.pid();
    assert!(m.wait_spawned().success(), "the parent shell has exited");
    let mpid = m.monitor.expect("the monitor is not the shell");
    let stat = proc_stat(mpid).expect("the monitor runs");
    // Fields after the name: state, ppid, pgrp, session.
    assert_ne!(stat[1], parent.to_string());
    assert_eq!(
        stat[3],
        mpid.to_string(),
        "the monitor leads its own session"
    );
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: kill with a valid signal to the monitor's pid.
        assert_eq!(unsafe { libc::kill(mpid, sig) }, 0);
    }
    std::thread::sleep(Duration::from_millis(100));
    let state = proc_stat(mpid).expect("the monitor ignores SIGTERM, SIGINT and SIGHUP");
    assert_ne!(
        state[0], "Z",
        "the monitor ignores SIGTERM, SIGINT and SIGHUP"
    );
    c.start();
    assert_eq!(c.exit_code(), 0);
    assert!(m.wait().success());
    let log = c.k8s_log();
    assert!(log.iter().any(|r| r.2 == "still-here"), "{log:?}");
    assert!(
        log.iter().any(|r| r.2 == "SigIgn:\t0000000000000000"),
        "{log:?}"
    );
    assert!(
        log.iter().any(|r| r.2 == "SigBlk:\t0000000000000000"),
        "{log:?}"
    );
}

#[test]
fn a_client_that_does_not_read_is_dropped() {
    if !can_run("a_client_that_does_not_read_is_dropped") {
        return;
    }
    let c = Ctr::new(
        "lazy",
        &["sh", "-c", "yes hello | head -c 3999996; echo done"],
        false,
    );
    let mut m = c.spawn(&["--log-driver", "none"]);
    m.pid();
    let lazy = c.attach();
    let reader = c.attach();
    c.start();
    let r = reader.collect();
    assert_eq!(r.exit.as_deref(), Some("0"));
    assert_eq!(r.stdout.len(), 3_999_996 + 5);
    assert!(m.wait().success());
    // The lazy client got what fitted in its socket, then the end, without an exit code.
    let mut got = 0;
    while let Some(p) = lazy.recv() {
        assert_eq!(p[0], 1, "no exit message for a dropped client");
        got += p.len() - 1;
    }
    assert!(got > 0 && got < 3_999_996, "{got} bytes");
}

#[test]
fn stdin_closes_when_the_last_client_with_stdin_closes_it() {
    if !can_run("stdin_closes_when_the_last_client_with_stdin_closes_it") {
        return;
    }
    let c = Ctr::new("stdin2", &["cat"], false);
    let mut m = c.spawn(&["--stdin", "--log-driver", "none"]);
    m.pid();
    let a = c.attach();
    let b = c.attach();
    // A watcher that never sends stdin does not keep it open.
    let watcher = c.attach();
    c.start();
    a.send(0, b"from a\n");
    let mut seen = Vec::new();
    b.stdout_until("from a\n", &mut seen);
    b.send(0, b"b0\n");
    b.stdout_until("b0\n", &mut seen);
    a.send(5, b"");
    // b still has stdin open: cat is still reading.
    b.send(0, b"from b\n");
    b.stdout_until("from b\n", &mut seen);
    b.send(5, b"");
    let r = b.collect();
    assert_eq!(r.exit.as_deref(), Some("0"));
    let w = watcher.collect();
    assert_eq!(w.stdout, b"from a\nb0\nfrom b\n");
    assert_eq!(w.exit.as_deref(), Some("0"));
    assert!(m.wait().success());
}

/// Datagrams received on `sock` until one contains `until` (or the timeout).
fn notifications(sock: &std::os::unix::net::UnixDatagram, until: &str) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !got.iter().any(|m: &String| m.contains(until)) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn notifications_are_relayed_to_the_host_socket() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    if !can_run("notifications_are_relayed_to_the_host_socket") {
        return;
    }
    // Once with a path and once with an abstract socket, as NOTIFY_SOCKET may name either.
    for abstract_ns in [false, true] {
        let c = Ctr::new("notify", &["sleep", "100"], false);
        let (host, addr) = if abstract_ns {
            let name = format!("capsa-mon-notify-{}", std::process::id());
            let a = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            (UnixDatagram::bind_addr(&a).unwrap(), format!("@{name}"))
        } else {
            let p = c.rundir.join("../host.sock");
            (UnixDatagram::bind(&p).unwrap(), p.display().to_string())
        };
        let mut m = c.spawn(&["--sdnotify-socket", &addr]);
        m.pid();
        let monitor = m.monitor.unwrap_or(m.child.id() as i32);
        let inner = c.rundir.join("notify/notify.sock");
        let mode = fs::metadata(&inner).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o777, "anyone in the container may notify");
        c.start();
        // What the container would send through /run/notify/notify.sock.
        let ctr = UnixDatagram::unbound().unwrap();
        for msg in [
            "STATUS=starting",
            "MAINPID=1",
            "STATUS=up\nREADY=1",
            "WATCHDOG=1",
        ] {
            ctr.send_to(msg.as_bytes(), &inner).unwrap();
        }
        let got = notifications(&host, "WATCHDOG=1");
        assert_eq!(
            got,
            [
                "STATUS=starting\n".to_string(),
                format!("STATUS=up\nREADY=1\nMAINPID={monitor}\n"),
                "WATCHDOG=1\n".to_string(),
            ],
            "MAINPID=1 is dropped, READY=1 names the monitor, and relaying goes on after it"
        );
        let out = c.crun(&["kill", &c.id, "KILL"]);
        assert!(out.status.success());
        assert_eq!(c.exit_code(), 137);
        assert!(m.wait().success());
        assert!(!inner.exists(), "the socket is removed at the exit");
    }
}
