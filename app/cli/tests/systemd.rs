//! systemd integration under crun (docs/systemd.md), as root and as the rootless test
//! user: `--sdnotify` with NOTIFY_SOCKET pointing at a socket the test binds, socket
//! activation with LISTEN_FDS/LISTEN_PID as systemd sets them, and `generate systemd`
//! (checked with `systemd-analyze verify` when it is installed, and by running the
//! commands of a `--new` unit).
//!
//! The container side of the protocol needs a program that sends datagrams and accepts
//! on an inherited socket, which busybox has not: a small static C helper is built with
//! gcc (scripts/setup.sh installs it) and bind-mounted into the container.

mod common;
use common::*;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The container's side of systemd's protocols.
const HELPER_C: &str = r#"
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* notify MSG...: each MSG is one datagram to $NOTIFY_SOCKET (a path or @abstract). */
static int notify(int argc, char **argv) {
  const char *p = getenv("NOTIFY_SOCKET");
  if (!p || !*p) { fprintf(stderr, "sdhelper: NOTIFY_SOCKET is not set\n"); return 2; }
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  size_t n = strlen(p);
  if (n >= sizeof a.sun_path) return 2;
  memcpy(a.sun_path, p, n);
  if (a.sun_path[0] == '@') a.sun_path[0] = 0;
  int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  for (int i = 0; i < argc; i++) {
    socklen_t len = offsetof(struct sockaddr_un, sun_path) + n;
    if (sendto(fd, argv[i], strlen(argv[i]), 0, (struct sockaddr *)&a, len) < 0) {
      perror("sdhelper: sendto");
      return 1;
    }
  }
  return 0;
}

/* serve: a socket-activated service as sd_listen_fds(3) checks it: accepts one
   connection on fd 3 and tells the client what it was given; then writes to the fd
   after the activated ones, if one was passed. */
static int serve(void) {
  const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
  const char *names = getenv("LISTEN_FDNAMES");
  if (!pid || atoi(pid) != getpid()) {
    fprintf(stderr, "sdhelper: LISTEN_PID=%s is not %d\n", pid ? pid : "", (int)getpid());
    return 3;
  }
  int n = fds ? atoi(fds) : 0;
  if (n < 1) { fprintf(stderr, "sdhelper: LISTEN_FDS=%s\n", fds ? fds : ""); return 4; }
  int c = accept(3, NULL, NULL);
  if (c < 0) { perror("sdhelper: accept"); return 5; }
  dprintf(c, "LISTEN_FDS=%s LISTEN_PID=%s LISTEN_FDNAMES=%s\n", fds, pid, names ? names : "");
  close(c);
  if (fcntl(3 + n, F_GETFD) >= 0) dprintf(3 + n, "extra fd %d\n", 3 + n);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "notify")) return notify(argc - 2, argv + 2);
  if (argc == 2 && !strcmp(argv[1], "serve")) return serve();
  fprintf(stderr, "usage: sdhelper notify MSG... | sdhelper serve\n");
  return 2;
}
"#;

/// The helper, built once per test run; `None` (after a loud skip) without gcc.
fn helper_binary() -> Option<&'static Path> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let src = dir.join(format!("sdhelper-{}.c", std::process::id()));
            let bin = dir.join(format!("sdhelper-{}", std::process::id()));
            std::fs::write(&src, HELPER_C).unwrap();
            let out = Command::new("gcc")
                .args(["-static", "-O2", "-o"])
                .arg(&bin)
                .arg(&src)
                .output();
            let _ = std::fs::remove_file(&src);
            match out {
                Ok(o) if o.status.success() => Some(bin),
                Ok(o) => {
                    eprintln!(
                        "SKIP: gcc -static failed: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    None
                }
                Err(e) => {
                    eprintln!("SKIP: gcc is not installed ({e}; scripts/setup.sh installs it)");
                    None
                }
            }
        })
        .as_deref()
}

/// The helper copied where the test's user can read it; the `-v` value that mounts it
/// at /sdhelper.
fn helper_mount(c: &Capsa) -> Option<String> {
    let bin = helper_binary()?;
    let dst = c.path().join("sdhelper");
    if !dst.exists() {
        std::fs::copy(bin, &dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Some(format!("{}:/sdhelper:ro", dst.display()))
}

/// A datagram socket standing in for systemd's; `addr` is what NOTIFY_SOCKET says.
struct Host {
    sock: UnixDatagram,
    addr: String,
}

impl Host {
    /// At a path in the test's directory (writable by the rootless user too).
    fn path(c: &Capsa) -> Host {
        let p = c.path().join("systemd-notify.sock");
        let sock = UnixDatagram::bind(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        Host {
            sock,
            addr: p.display().to_string(),
        }
    }

    /// In the abstract namespace (`@name`).
    fn abstract_ns(tag: &str) -> Host {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("capsa-it-sd-{tag}-{}-{n}", std::process::id());
        let a = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        Host {
            sock: UnixDatagram::bind_addr(&a).unwrap(),
            addr: format!("@{name}"),
        }
    }

    /// Datagrams until one contains each of `all`, or `wait` passes.
    fn until_all(&self, all: &[&str], wait: Duration) -> Vec<String> {
        self.sock
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + wait;
        let mut got: Vec<String> = Vec::new();
        let mut buf = [0u8; 4096];
        let seen = |got: &[String]| all.iter().all(|w| got.iter().any(|m| m.contains(w)));
        while Instant::now() < deadline && !seen(&got) {
            if let Ok(n) = self.sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        eprintln!("notifications: {got:?}");
        got
    }

    /// Datagrams until one contains `until`, or `wait` passes.
    fn until(&self, until: &str, wait: Duration) -> Vec<String> {
        self.until_all(&[until], wait)
    }

    /// What has arrived by now.
    fn pending(&self) -> Vec<String> {
        self.until("\0never", Duration::from_millis(300))
    }
}

/// Runs capsa with NOTIFY_SOCKET set; returns stdout after asserting success.
fn notified(c: &Capsa, host: &Host, args: &[&str]) -> String {
    let out = c
        .cmd(args)
        .env("NOTIFY_SOCKET", &host.addr)
        .output()
        .unwrap();
    eprintln!(
        "$ NOTIFY_SOCKET={} capsa {}\n[exit {:?}]\n{}{}",
        host.addr,
        args.join(" "),
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    assert!(out.status.success(), "capsa {args:?} failed");
    stdout(&out)
}

fn monitor_pid(c: &Capsa, name: &str) -> i64 {
    let v: serde_json::Value =
        serde_json::from_str(&c.ok(&["container", "inspect", name])).unwrap();
    let pid = v[0]["State"]["ConmonPid"].as_i64().unwrap();
    assert!(pid > 0);
    pid
}

both!(
    sdnotify_conmon_sends_ready_and_the_monitor_pid,
    |c: &Capsa, img: &str| {
        let host = Host::abstract_ns("conmon");
        notified(
            c,
            &host,
            &[
                "run",
                "-d",
                "--name",
                "svc",
                "--sdnotify=conmon",
                img,
                "sleep",
                "100",
            ],
        );
        let got = host.until("READY=1", TIMEOUT);
        let pid = monitor_pid(c, "svc");
        assert_eq!(got, [format!("MAINPID={pid}\nREADY=1\n")]);
        // The container does not get the socket.
        let env = c.ok(&["exec", "svc", "env"]);
        assert!(!env.contains("NOTIFY_SOCKET"), "{env}");
        assert!(host.pending().is_empty(), "nothing more is sent");
    }
);

both!(
    sdnotify_container_relays_what_the_container_sends,
    |c: &Capsa, img: &str| {
        let Some(helper) = helper_mount(c) else {
            return;
        };
        let host = Host::path(c);
        // READY=1 only once the test creates /go: `run -d` must not wait for it (crun
        // would, were NOTIFY_SOCKET left in its environment).
        let script = "/sdhelper notify STATUS=starting MAINPID=1 && \
                  until [ -e /go ]; do sleep 0.1; done && \
                  /sdhelper notify \"$(printf 'STATUS=serving\\nREADY=1')\" && \
                  /sdhelper notify WATCHDOG=1 && exec sleep 100";
        let t = Instant::now();
        notified(
            c,
            &host,
            &[
                "run", "-d", "--name", "app", "-v", &helper, img, "sh", "-c", script,
            ],
        );
        eprintln!("run -d took {:?}", t.elapsed());
        let pid = monitor_pid(c, "app");
        // capsa's MAINPID= and the container's first message race each other.
        let before = host.until_all(&["STATUS=starting", "MAINPID="], TIMEOUT);
        assert!(
            before.contains(&format!("MAINPID={pid}\n")),
            "capsa names the monitor: {before:?}"
        );
        assert!(before.contains(&"STATUS=starting\n".to_string()));
        assert!(!before.iter().any(|m| m.contains("READY")), "{before:?}");
        // The container's process has the relay (`exec` builds its own environment).
        let env = c.ok(&["exec", "app", "sh", "-c", "tr '\\0' '\\n' </proc/1/environ"]);
        assert!(
            env.lines()
                .any(|l| l == "NOTIFY_SOCKET=/run/notify/notify.sock"),
            "{env}"
        );
        // An exec'd process does not get it: podman 4.3 (tried with --sdnotify=container
        // under a NOTIFY_SOCKET) shows it in /proc/1/environ only, not to `exec env`.
        let exec_env = c.ok(&["exec", "app", "env"]);
        assert!(!exec_env.contains("NOTIFY_SOCKET"), "{exec_env}");
        assert!(exec_env.contains("PATH="), "{exec_env}");
        c.ok(&["exec", "app", "touch", "/go"]);
        let after = host.until("WATCHDOG=1", TIMEOUT);
        assert_eq!(
            after,
            [
                format!("STATUS=serving\nREADY=1\nMAINPID={pid}\n"),
                "WATCHDOG=1\n".to_string()
            ],
            "READY=1 names the monitor, and relaying goes on after it"
        );
        let all: Vec<&String> = before.iter().chain(&after).collect();
        assert!(
            !all.iter().any(|m| m.contains("MAINPID=1\n")),
            "the container's own MAINPID is dropped: {all:?}"
        );
    }
);

both!(sdnotify_ignore_sends_nothing, |c: &Capsa, img: &str| {
    let host = Host::abstract_ns("ignore");
    let out = notified(c, &host, &["run", "--rm", "--sdnotify=ignore", img, "env"]);
    assert!(!out.contains("NOTIFY_SOCKET"), "{out}");
    assert!(host.pending().is_empty());
});

/// `c.cmd(args)` run through `sh -c 'LISTEN_PID=$$ exec …'` right before capsa (runuser
/// forks, so only a shell it runs can know capsa's pid), with `fds` at 3, 4, … as
/// systemd passes them.
fn activated(c: &Capsa, args: &[&str], env: &[(&str, &str)], fds: Vec<OwnedFd>) -> Command {
    const WRAP: &str = "LISTEN_PID=$$; export LISTEN_PID; exec \"$@\"";
    let base = c.cmd(args);
    let prog = base.get_program().to_os_string();
    let argv: Vec<OsString> = base.get_args().map(OsString::from).collect();
    let mut cmd;
    if prog == "runuser" {
        let cut = argv.iter().position(|a| a == "--").unwrap() + 1;
        cmd = Command::new("runuser");
        cmd.args(&argv[..cut]).args(["sh", "-c", WRAP, "sh"]);
        cmd.args(&argv[cut..]);
    } else {
        cmd = Command::new("sh");
        cmd.args(["-c", WRAP, "sh"]).arg(prog).args(&argv);
    }
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    if let Some(d) = base.get_current_dir() {
        cmd.current_dir(d);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null());
    assert!(fds.len() < 8);
    let mut raw = [-1 as RawFd; 8];
    for (i, f) in fds.iter().enumerate() {
        raw[i] = f.as_raw_fd();
    }
    let count = fds.len();
    // The fds live as long as the closure (in `cmd`).
    let keep = std::sync::Mutex::new(fds);
    // SAFETY: only fcntl and dup2 between fork and exec, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let _ = &keep;
            let mut high = [-1 as RawFd; 8];
            for i in 0..count {
                high[i] = libc::fcntl(raw[i], libc::F_DUPFD_CLOEXEC, 100);
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
        });
    }
    cmd
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

both!(
    socket_activation_passes_the_listening_socket,
    |c: &Capsa, img: &str| {
        let Some(helper) = helper_mount(c) else {
            return;
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // One activated socket, plus one fd of --preserve-fds after it.
        let (extra_r, extra_w) = pipe();
        let out = activated(
            c,
            &[
                "run",
                "-d",
                "--name",
                "web",
                "--preserve-fds",
                "1",
                "--network",
                "none",
                "-v",
                &helper,
                img,
                "/sdhelper",
                "serve",
            ],
            &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "web")],
            vec![OwnedFd::from(listener.try_clone().unwrap()), extra_w],
        )
        .output()
        .unwrap();
        eprintln!("{}{}", stdout(&out), stderr(&out));
        assert!(out.status.success());
        // The container accepts on the socket the test listens on, whatever its network.
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut line = String::new();
        BufReader::new(&mut conn).read_line(&mut line).unwrap();
        assert_eq!(line, "LISTEN_FDS=1 LISTEN_PID=1 LISTEN_FDNAMES=web\n");
        let mut extra = String::new();
        std::fs::File::from(extra_r)
            .read_to_string(&mut extra)
            .unwrap();
        assert_eq!(
            extra, "extra fd 4\n",
            "--preserve-fds comes after the activated fds"
        );
        assert_eq!(c.ok(&["wait", "web"]).trim(), "0");
    }
);

both!(
    socket_activation_through_systemd_socket_activate,
    |c: &Capsa, img: &str| {
        let Some(helper) = helper_mount(c) else {
            return;
        };
        let Some(tool) = which("systemd-socket-activate") else {
            eprintln!("SKIP: systemd-socket-activate is not installed (package systemd)");
            return;
        };
        // systemd's own tool binds, waits for the first connection, then execs capsa with
        // LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES set.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let listen = format!("127.0.0.1:{port}");
        let base = c.cmd(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &helper,
            img,
            "/sdhelper",
            "serve",
        ]);
        let prog = base.get_program().to_os_string();
        let argv: Vec<OsString> = base.get_args().map(OsString::from).collect();
        let wrap: [OsString; 4] = [
            tool.into_os_string(),
            "-l".into(),
            listen.clone().into(),
            "--fdname=api".into(),
        ];
        let mut cmd;
        if prog == "runuser" {
            let cut = argv.iter().position(|a| a == "--").unwrap() + 1;
            cmd = Command::new("runuser");
            cmd.args(&argv[..cut]).args(&wrap).args(&argv[cut..]);
        } else {
            cmd = Command::new(&wrap[0]);
            cmd.args(&wrap[1..]).arg(prog).args(&argv);
        }
        for (k, v) in base.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + TIMEOUT;
        let mut conn = loop {
            match std::net::TcpStream::connect(&listen) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "connecting to {listen}: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut line = String::new();
        BufReader::new(&mut conn).read_line(&mut line).unwrap();
        let out = child.wait_with_output().unwrap();
        eprintln!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(line, "LISTEN_FDS=1 LISTEN_PID=1 LISTEN_FDNAMES=api\n");
        assert!(out.status.success());
    }
);

/// A program in $PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

both!(
    socket_activation_for_another_pid_is_ignored,
    |c: &Capsa, img: &str| {
        // LISTEN_PID names some other process (a parent that did not clear it): capsa
        // passes nothing and sets nothing; --preserve-fds alone passes fds without the
        // variables.
        let (r, w) = pipe();
        let mut cmd = c.cmd(&[
            "run",
            "--rm",
            "--preserve-fds",
            "1",
            img,
            "sh",
            "-c",
            "env | grep LISTEN_ || true; echo via-fd3 >&3",
        ]);
        cmd.env("LISTEN_FDS", "1").env("LISTEN_PID", "1");
        let fd = w.as_raw_fd();
        // SAFETY: only dup2 between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        drop(w);
        eprintln!("{}{}", stdout(&out), stderr(&out));
        assert!(out.status.success());
        assert_eq!(stdout(&out), "", "no LISTEN_ variables in the container");
        let mut got = String::new();
        std::fs::File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "via-fd3\n");
    }
);

/// `systemd-analyze verify` of a unit file; `false` (after a loud skip) without it.
fn verify(unit: &Path) -> bool {
    let out = match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "SKIP systemd-analyze verify: {e} (apt-get install systemd; scripts/setup.sh --test does)"
            );
            return false;
        }
    };
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify {}:\n{}{}",
        unit.display(),
        stdout(&out),
        stderr(&out)
    );
    true
}

/// The words of an `Exec*=` line, continuation lines joined (no quoting is used by the
/// containers of these tests).
fn exec_words(unit: &str, key: &str) -> Vec<String> {
    let joined = unit.replace(" \\\n\t", " ");
    let line = joined
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in\n{unit}"));
    line.split(' ').map(String::from).collect()
}

both!(generate_systemd_units, |c: &Capsa, img: &str| {
    let id = c.ok(&[
        "create",
        "--name",
        "web",
        "-e",
        "GREETING=hi",
        "--label",
        "app=web",
        "--stop-timeout",
        "4",
        img,
        "sleep",
        "1000",
    ]);
    let id = id.trim();
    let unit = c.ok(&["generate", "systemd", "--name", "web"]);
    assert!(unit.starts_with("# container-web.service\n"), "{unit}");
    let start = exec_words(&unit, "ExecStart");
    assert_eq!(start[start.len() - 2..], ["start", "web"]);
    assert!(
        start.contains(&"--root".to_string()),
        "the store is named: {start:?}"
    );
    for want in [
        "Type=forking\n",
        "TimeoutStopSec=64\n",
        "Restart=on-failure\n",
        "Environment=CAPSA_SYSTEMD_UNIT=%n\n",
        "KillMode=mixed\n",
    ] {
        assert!(unit.contains(want), "{want}: {unit}");
    }
    let pidfile = unit
        .lines()
        .find_map(|l| l.strip_prefix("PIDFile="))
        .unwrap();
    assert!(
        pidfile.ends_with(&format!("/containers/{id}/monitor.pid")),
        "{pidfile}"
    );

    let new = c.ok(&["generate", "systemd", "--new", "-t", "2", "web"]);
    assert!(
        new.starts_with(&format!("# container-{id}.service\n")),
        "{new}"
    );
    for want in ["Type=notify\n", "NotifyAccess=all\n", "TimeoutStopSec=62\n"] {
        assert!(new.contains(want), "{want}: {new}");
    }
    let run = exec_words(&new, "ExecStart");
    let tail: Vec<&str> = run
        .iter()
        .map(String::as_str)
        .skip_while(|w| *w != "run")
        .collect();
    assert_eq!(
        tail,
        [
            "run",
            "--rm",
            "--sdnotify=conmon",
            "-d",
            "--name",
            "web",
            "-e",
            "GREETING=hi",
            "--stop-timeout",
            "4",
            "--label",
            "app=web",
            img,
            "sleep",
            "1000"
        ]
    );

    // --files, in the current directory; the units pass systemd's own checks.
    let dir = c.path().join("units");
    std::fs::create_dir(&dir).unwrap();
    if let Some(u) = &c.user {
        let st = Command::new("chown").arg(u).arg(&dir).status().unwrap();
        assert!(st.success());
    }
    for args in [
        &["generate", "systemd", "--files", "--name", "web"][..],
        &[
            "generate",
            "systemd",
            "--files",
            "--new",
            "--name",
            "--restart-policy",
            "always",
            "web",
        ][..],
    ] {
        let out = c.cmd(args).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let path = PathBuf::from(stdout(&out).trim());
        assert_eq!(path, dir.join("container-web.service"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("[Install]\nWantedBy=default.target\n"),
            "{text}"
        );
        verify(&path);
    }

    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["generate", "systemd", "--format", "json", "--name", "web"]))
            .unwrap();
    assert!(
        json["container-web"]
            .as_str()
            .unwrap()
            .contains("ExecStart="),
        "{json}"
    );
    let q = c.ok(&["generate", "systemd", "--format", "quadlet", "web"]);
    for want in [
        "\n[Container]\nContainerName=web\n",
        &format!("Image={img}\n"),
        "Environment=GREETING=hi\n",
        "Label=app=web\n",
        "Exec=sleep 1000\n",
    ] {
        assert!(q.contains(want), "{want}: {q}");
    }
    let err = c.fails(
        &[
            "generate",
            "systemd",
            "--restart-policy",
            "sometimes",
            "web",
        ],
        125,
    );
    assert!(err.contains("--restart-policy"), "{err}");
    c.fails(&["generate", "systemd", "nosuch"], 125);
});

both!(a_new_unit_runs_and_notifies, |c: &Capsa, img: &str| {
    // The commands of a --new unit, as systemd would run them (minus systemd): the
    // container is created, reports ready, and goes away at stop.
    c.ok(&["create", "--name", "job", img, "sleep", "1000"]);
    let unit = c.ok(&["generate", "systemd", "--new", "job"]);
    c.ok(&["rm", "job"]);
    let host = Host::abstract_ns("unit");
    let capsa_argv = c
        .cmd(&[])
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    // Everything after capsa and its global flags (which the unit repeats).
    let rest = |key: &str| -> Vec<String> {
        let w = exec_words(&unit, key);
        let skip = w.iter().position(|x| x == "--storage-driver").unwrap() + 2;
        assert!(capsa_argv.iter().any(|a| a == &w[skip - 1]));
        w[skip..].to_vec()
    };
    let run = |key: &str| {
        let args = rest(key);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        notified(c, &host, &args)
    };
    run("ExecStartPre");
    run("ExecStart");
    let got = host.until("READY=1", TIMEOUT);
    let pid = monitor_pid(c, "job");
    assert_eq!(got, [format!("MAINPID={pid}\nREADY=1\n")]);
    run("ExecStop");
    run("ExecStopPost");
    let ps = c.ok(&["ps", "-a", "--format", "json"]);
    assert_eq!(ps.trim(), "[]", "--rm removed it: {ps}");
});
