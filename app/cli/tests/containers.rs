//! Containers under a real OCI runtime (crun), from images pulled from the fixture
//! registry. Every test runs twice: as root and as the unprivileged test user
//! (`CAPSA_TEST_ROOTLESS_USER`, with subuids), each with its own store.

mod common;
use common::*;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn ps_json(c: &Capsa) -> Vec<serde_json::Value> {
    serde_json::from_str(&c.ok(&["ps", "-a", "--format", "json"])).unwrap()
}

fn inspect(c: &Capsa, name: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&c.ok(&["container", "inspect", name])).unwrap();
    v[0].clone()
}

both!(run_output_and_exit_codes, |c: &Capsa, img: &str| {
    let out = c.run(&["run", "--rm", img, "echo", "hello", "world"]);
    assert_eq!(stdout(&out), "hello world\n");
    assert_eq!(out.status.code(), Some(0));
    // The container's own exit code comes back.
    let out = c.run(&[
        "run",
        "--name",
        "three",
        img,
        "sh",
        "-c",
        "echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stderr(&out), "err\n");
    let ps = ps_json(c);
    assert_eq!(ps.len(), 1, "--rm removed the first container");
    assert_eq!(ps[0]["Names"][0], "three");
    assert_eq!(ps[0]["State"], "exited");
    assert_eq!(ps[0]["ExitCode"], 3);
    let table = c.ok(&["ps", "-a"]);
    assert!(table.starts_with("CONTAINER ID  IMAGE"), "{table}");
    assert!(table.contains("Exited (3)"), "{table}");
    // 127: the command does not exist; 126: it cannot be executed.
    let err = c.fails(&["run", "--rm", img, "no-such-command"], 127);
    assert!(err.contains("no-such-command"), "{err}");
    c.fails(&["run", "--rm", img, "/etc/passwd"], 126);
});

both!(detached_lifecycle, |c: &Capsa, img: &str| {
    let id = c.ok(&["run", "-d", "--name", "web", img, "sleep", "1000"]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "run -d prints the full ID: {id}");
    let ps = c.ok(&["ps"]);
    assert!(ps.contains(&id[..12]) && ps.contains("Up "), "{ps}");
    let v = inspect(c, "web");
    assert_eq!(v["State"]["Status"], "running");
    let pid = v["State"]["Pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // rm of a running container is refused with Podman's exit code 2.
    let err = c.fails(&["rm", "web"], 2);
    assert!(err.contains("running"), "{err}");
    // stop: SIGTERM is ignored by sleep as pid 1, so SIGKILL after the timeout.
    let t = Instant::now();
    assert_eq!(c.ok(&["stop", "-t", "1", "web"]).trim(), "web");
    assert!(t.elapsed() < Duration::from_secs(8));
    let v = inspect(c, "web");
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 137);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    // start again, then kill with a signal and wait for the code. (pid 1 ignores
    // signals it has no handler for, so the shell traps USR1.)
    c.ok(&["start", "web"]);
    assert_eq!(inspect(c, "web")["State"]["Status"], "running");
    c.ok(&["rm", "-f", "web"]);
    c.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        img,
        "sh",
        "-c",
        "trap 'exit 42' USR1; sleep 1000 & wait",
    ]);
    c.ok(&["kill", "-s", "USR1", "web"]);
    assert_eq!(c.ok(&["wait", "web"]).trim(), "42");
    c.ok(&["rm", "web"]);
    assert!(ps_json(c).is_empty());
    c.fails(&["rm", "web"], 1);
});

both!(create_then_start_attached, |c: &Capsa, img: &str| {
    let id = c.ok(&[
        "create",
        "--name",
        "made",
        "-e",
        "GREETING=hi",
        img,
        "sh",
        "-c",
        "echo $GREETING",
    ]);
    assert_eq!(id.trim().len(), 64);
    assert_eq!(inspect(c, "made")["State"]["Status"], "created");
    let out = c.ok(&["start", "-a", "made"]);
    assert_eq!(out, "hi\n");
    assert_eq!(inspect(c, "made")["State"]["ExitCode"], 0);
});

both!(stdin_is_piped_through, |c: &Capsa, img: &str| {
    let mut child = c
        .cmd(&["run", "--rm", "-i", img, "sh", "-c", "tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped text\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED TEXT\n");
    assert_eq!(out.status.code(), Some(0));
});

both!(bad_input_is_refused, |c: &Capsa, img: &str| {
    // An image that is nowhere: 125 with the name in the message.
    let reg = std::env::var("CAPSA_TEST_REGISTRY").unwrap();
    let err = c.fails(
        &["run", "--rm", &format!("{reg}/no/such:image"), "true"],
        125,
    );
    assert!(err.contains("no/such"), "{err}");
    // A name already in use.
    c.ok(&["create", "--name", "dup", img, "true"]);
    let err = c.fails(&["create", "--name", "dup", img, "true"], 125);
    assert!(
        err.contains("already in use") && err.contains("hint:"),
        "{err}"
    );
    // Bad flag values, each named in the error.
    for (flag, value) in [
        ("--restart", "sometimes"),
        ("--pull", "whenever"),
        ("--log-driver", "carrier-pigeon"),
        ("--network", "nonet"),
        ("--memory", "lots"),
        ("--workdir", "relative"),
    ] {
        let err = c.fails(&["create", flag, value, img, "true"], 125);
        assert!(
            err.contains(flag) && err.contains(value),
            "{flag} {value}: {err}"
        );
    }
    // A runtime binary that is not there.
    let err = c.fails(
        &["run", "--rm", "--runtime", "/nonexistent/crun", img, "true"],
        125,
    );
    assert!(
        err.contains("/nonexistent/crun") && err.contains("hint:"),
        "{err}"
    );
    // Nothing half-made was left behind by the failures (only "dup" and the runtime
    // failure's container, which Podman keeps too, in state created).
    for c in ps_json(c) {
        assert_eq!(c["State"], "created", "{c}");
    }
});

both!(exits_at_once_and_monitor_killed, |c: &Capsa, img: &str| {
    // A container that exits at once: wait and ps agree on its code.
    let id = c.ok(&["run", "-d", img, "true"]);
    assert_eq!(c.ok(&["wait", id.trim()]).trim(), "0");
    let ps = ps_json(c);
    assert_eq!(ps[0]["State"], "exited");
    c.ok(&["rm", id.trim()]);
    // The monitor killed with SIGKILL: ps reports the container exited, promptly.
    c.ok(&["run", "-d", "--name", "orphan", img, "sleep", "1000"]);
    let v = inspect(c, "orphan");
    let monitor = v["State"]["ConmonPid"].as_i64().unwrap();
    let ctr = v["State"]["Pid"].as_i64().unwrap();
    assert!(monitor > 0);
    std::process::Command::new("kill")
        .args(["-9", &monitor.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{monitor}/stat")).exists()
        && std::fs::read_to_string(format!("/proc/{monitor}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    let ps = c.ok(&["ps", "-a"]);
    assert!(t.elapsed() < Duration::from_secs(5), "ps must not hang");
    assert!(ps.contains("Exited"), "{ps}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{ctr}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{ctr}")).exists()
            || std::fs::read_to_string(format!("/proc/{ctr}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "what was left of the container was stopped"
    );
    c.ok(&["rm", "orphan"]);
});

both!(full_log_disk_does_not_block, |c: &Capsa, img: &str| {
    // /dev/full fails every write with ENOSPC: the container still runs to its end and
    // its output still reaches the attached terminal.
    let out = c.run(&[
        "run",
        "--rm",
        "--log-opt",
        "path=/dev/full",
        img,
        "sh",
        "-c",
        "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("line 199"));
});

both!(twenty_detached_runs_at_once, |c: &Capsa, img: &str| {
    let children: Vec<_> = (0..20)
        .map(|i| {
            c.cmd(&[
                "run",
                "-d",
                "--name",
                &format!("par{i}"),
                img,
                "sleep",
                "1000",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for ch in children {
        let out = ch.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let running = c.ok(&["ps", "-q"]);
    assert_eq!(running.lines().count(), 20, "{running}");
    c.ok(&["rm", "-af", "-t", "0"]);
    assert!(ps_json(c).is_empty());
});

#[test]
fn loginuid_is_inherited_as_root() {
    let Some((c, img)) = container_store(false) else {
        return;
    };
    if std::fs::read_to_string("/proc/self/loginuid").is_err() {
        eprintln!("SKIP loginuid_is_inherited_as_root: the kernel has no audit loginuid");
        return;
    }
    // A shell gets login uid 4242 (as a login would give it) and starts capsa; the
    // container's process carries the same login uid because it descends from it.
    let script = format!(
        "echo 4242 > /proc/self/loginuid && exec {} --root {} --runroot {} run --rm {img} cat /proc/self/loginuid",
        bin().display(),
        c.root().display(),
        c.path().join("run").display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .env(
            "CONTAINERS_REGISTRIES_CONF",
            c.path().join("registries.conf"),
        )
        .output()
        .unwrap();
    if !out.status.success() && stderr(&out).contains("loginuid") {
        eprintln!(
            "SKIP loginuid_is_inherited_as_root: cannot set a login uid here: {}",
            stderr(&out)
        );
        return;
    }
    assert_eq!(stdout(&out).trim(), "4242", "{}", stderr(&out));
}

both!(init_seccomp_and_limits, |c: &Capsa, img: &str| {
    // --init: catatonit is pid 1 and runs the command.
    let out = c.ok(&["run", "--rm", "--init", img, "cat", "/proc/1/cmdline"]);
    assert!(out.starts_with("/run/capsa-init"), "{out:?}");
    let rootless = c.user.is_some();
    if !rootless {
        // The default seccomp filter refuses swapoff even with CAP_SYS_ADMIN
        // (EPERM); unconfined, the same call reaches the kernel (ENOENT).
        let out = c.run(&[
            "run",
            "--rm",
            "--cap-add",
            "SYS_ADMIN",
            img,
            "busybox",
            "swapoff",
            "/nonexistent",
        ]);
        assert!(
            stderr(&out).contains("Operation not permitted"),
            "{}",
            stderr(&out)
        );
        let out = c.run(&[
            "run",
            "--rm",
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            img,
            "busybox",
            "swapoff",
            "/nonexistent",
        ]);
        assert!(stderr(&out).contains("No such file"), "{}", stderr(&out));
        // As root, limits are applied (cgroup v1 or v2).
        c.ok(&[
            "run",
            "--rm",
            "--memory",
            "64m",
            "--pids-limit",
            "100",
            img,
            "true",
        ]);
    } else if !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        // Rootless without cgroup v2 delegation: refused with the reason.
        let err = c.fails(&["create", "--memory", "64m", img, "true"], 125);
        assert!(err.contains("cgroup v2"), "{err}");
    }
    // A seccomp profile file that is not JSON is refused, naming the file.
    let bad = c.path().join("bad-seccomp.json");
    std::fs::write(&bad, "not json").unwrap();
    let bad = bad.to_string_lossy().into_owned();
    let err = c.fails(
        &[
            "run",
            "--rm",
            "--security-opt",
            &format!("seccomp={bad}"),
            img,
            "true",
        ],
        125,
    );
    assert!(err.contains(&bad), "{err}");
});

both!(images_in_use_are_kept, |c: &Capsa, img: &str| {
    // rmi of an image a container uses: refused with Podman's code 2, nothing removed;
    // with --force the container goes too.
    let id = c.ok(&["create", "--name", "user", img, "true"]);
    let err = c.fails(&["rmi", img], 2);
    assert!(
        err.contains("in use by a container") && err.contains(id.trim()),
        "{err}"
    );
    assert_eq!(c.image_count(), 1);
    assert_eq!(ps_json(c).len(), 1);
    c.ok(&["rmi", "-f", img]);
    assert_eq!(c.image_count(), 0);
    assert!(ps_json(c).is_empty());
});

both!(published_ports_tcp_and_udp, |c: &Capsa, img: &str| {
    // busybox httpd on a published port, fetched from the host.
    let free = |proto: &str| -> u16 {
        if proto == "tcp" {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        } else {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        }
    };
    let port = free("tcp");
    c.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("127.0.0.1:{port}:80"),
        img,
        "sh",
        "-c",
        "mkdir -p /www && echo served-by-capsa > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    let ps = c.ok(&["ps"]);
    assert!(ps.contains(&format!("127.0.0.1:{port}->80/tcp")), "{ps}");
    let v = inspect(c, "web");
    assert_eq!(
        v["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        port.to_string()
    );
    let mut body = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Read;
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            body.clear();
            let _ = s.read_to_string(&mut body);
            if body.contains("served-by-capsa") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(body.contains("served-by-capsa"), "{body:?}");
    // UDP: busybox has no UDP server, so a tiny static echo program (compiled here,
    // bind-mounted with -v) answers one datagram through the published port.
    let Some(echo) = udp_echo_binary(c) else {
        return;
    };
    let uport = free("udp");
    c.ok(&[
        "run",
        "-d",
        "--name",
        "udp",
        "-v",
        &format!("{}:/udpecho:ro", echo.display()),
        "-p",
        &format!("127.0.0.1:{uport}:5000/udp"),
        img,
        "/udpecho",
        "5000",
    ]);
    // Datagrams sent from the host reach the container (its echo program logs each).
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let log = c
        .root()
        .join("containers")
        .join(inspect(c, "udp")["Id"].as_str().unwrap())
        .join("ctr.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = String::new();
    while Instant::now() < deadline && !got.contains("got 4 from") {
        let _ = sock.send_to(b"ping", ("127.0.0.1", uport));
        std::thread::sleep(Duration::from_millis(200));
        got = std::fs::read_to_string(&log).unwrap_or_default();
    }
    assert!(
        got.contains("got 4 from"),
        "the datagram reached the container: {got:?}"
    );
    // The generated files: hostname = short ID, /etc/hosts names it.
    let id = v["Id"].as_str().unwrap();
    let out = c.ok(&["exec", "web", "cat", "/etc/hostname", "/etc/hosts"]);
    assert!(out.starts_with(&id[..12]), "{out}");
    assert!(out.contains("localhost"), "{out}");
    // --network none: loopback only, no helper.
    let out = c.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        img,
        "cat",
        "/proc/net/dev",
    ]);
    assert!(!out.contains("eth0") && !out.contains("tap0"), "{out}");
    // A busy host port: a clear error.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bport = busy.local_addr().unwrap().port();
    let err = c.fails(
        &[
            "run",
            "--rm",
            "-p",
            &format!("127.0.0.1:{bport}:80"),
            img,
            "true",
        ],
        125,
    );
    assert!(err.contains(&bport.to_string()), "{err}");
});

/// A static UDP echo server (`/udpecho PORT`: answers `echo:<payload>`), built with gcc
/// into the test's directory; `None` (after a loud skip) without a C toolchain.
fn udp_echo_binary(c: &Capsa) -> Option<std::path::PathBuf> {
    let src = c.path().join("udpecho.c");
    let bin = c.path().join("udpecho");
    std::fs::write(
        &src,
        r#"#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) return 1;
    for (;;) {
        char buf[512], out[600];
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        if (n < 0) return 2;
        fprintf(stderr, "got %d from %s\\n", (int)n, inet_ntoa(from.sin_addr));
        memcpy(out, "echo:", 5);
        memcpy(out + 5, buf, n);
        sendto(s, out, n + 5, 0, (struct sockaddr *)&from, fl);
    }
}
"#,
    )
    .unwrap();
    let out = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            std::process::Command::new("chmod")
                .arg("755")
                .arg(&bin)
                .status()
                .unwrap();
            Some(bin)
        }
        Ok(o) => {
            eprintln!(
                "SKIP udp part: gcc -static failed (scripts/setup.sh installs gcc and libc6-dev): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("SKIP udp part: no gcc ({e}); scripts/setup.sh installs it");
            None
        }
    }
}

#[test]
fn vfs_store_runs_containers() {
    // With the vfs driver each layer is a full copy: the container must see the top one
    // only (a file deleted by a later layer stays deleted).
    let Ok(reg) = std::env::var("CAPSA_TEST_REGISTRY") else {
        eprintln!("SKIP vfs_store_runs_containers: CAPSA_TEST_REGISTRY is not set");
        return;
    };
    if !is_root() || !monitor_bin().is_file() {
        eprintln!("SKIP vfs_store_runs_containers: needs root and capsa-monitor");
        return;
    }
    let c = Capsa::with_driver("vfs");
    let image = format!("{reg}/layers:latest");
    c.ok(&["pull", "-q", &image]);
    let expected = std::fs::read_to_string(format!(
        "{}/layers.expected",
        std::env::var("CAPSA_TEST_FIXTURES").unwrap_or_default()
    ))
    .unwrap_or_default();
    let out = c.ok(&["run", "--rm", &image, "busybox", "find", "/", "-xdev"]);
    let runtime = [
        "/dev",
        "/proc",
        "/sys",
        "/run",
        "/tmp",
        "/etc/hosts",
        "/etc/hostname",
        "/etc/resolv.conf",
    ];
    let keep = |p: &&str| {
        !runtime
            .iter()
            .any(|r| p == r || p.starts_with(&format!("{r}/")))
            && *p != "/"
    };
    let mut want: Vec<&str> = expected
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(keep)
        .collect();
    let mut got: Vec<&str> = out.lines().filter(keep).collect();
    want.sort();
    got.sort();
    assert!(!want.is_empty(), "layers.expected lists paths");
    assert_eq!(
        got, want,
        "the container sees exactly the image's final tree"
    );
}

both!(tty_end_to_end, |c: &Capsa, img: &str| {
    // A real terminal (script(1) gives capsa a pty): the container gets a tty of the
    // same size before its process starts, output comes back through it, and the
    // container's exit code is capsa's.
    let cmd = c.cmd(&[
        "run",
        "-it",
        "--rm",
        img,
        "sh",
        "-c",
        "busybox stty size; tty; exit 5",
    ]);
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
        .collect();
    let line = format!("stty rows 33 cols 101; {prog} {}", args.join(" "));
    let out = cmd_with_script(c, &line);
    let text = stdout(&out);
    assert!(text.contains("33 101"), "{text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert_eq!(out.status.code(), Some(5), "{text:?}");
});

/// Runs a shell line under script(1), with the test's environment for capsa.
fn cmd_with_script(c: &Capsa, line: &str) -> std::process::Output {
    let base = c.cmd(&[]);
    let mut s = std::process::Command::new("script");
    s.args(["-qec", line, "/dev/null"]);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    // stdin stays open (an empty pipe held until the end): script(1) ends the session
    // early when its own stdin reaches end-of-file.
    s.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = s.spawn().unwrap();
    let keep_open = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    drop(keep_open);
    out
}

both!(slow_reader_loses_nothing, |c: &Capsa, img: &str| {
    // Whoever reads capsa's output stalls for 3 s (longer than the monitor waits for a
    // full client): all 3 MB and the last line still arrive, with the exit code.
    let mut cmd = c.cmd(&[
        "run",
        "--rm",
        img,
        "sh",
        "-c",
        "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo END; exit 4",
    ]);
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let mut out = Vec::new();
    use std::io::Read;
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(out.len(), 3_000_000 + 1 + 4, "every byte arrived");
    assert!(out.ends_with(b"\nEND\n"));
    assert_eq!(status.code(), Some(4));
});

/// The words of `id -G` in a container run with `args`.
fn groups(c: &Capsa, img: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["run", "--rm"];
    all.extend(args);
    all.extend([img, "id", "-G"]);
    c.ok(&all).split_whitespace().map(str::to_string).collect()
}

both!(run_limits_sysctls_shm_and_groups, |c: &Capsa, img: &str| {
    // Tried against podman 4.3: --ulimit (soft:hard, one value for both).
    let out = c.ok(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=512:1024",
        img,
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn",
    ]);
    assert_eq!(out, "512\n1024\n");
    let out = c.ok(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=256",
        img,
        "sh",
        "-c",
        "ulimit -Hn",
    ]);
    assert_eq!(out, "256\n");
    // exec gets the container's limits too.
    c.ok(&[
        "run",
        "-d",
        "--name",
        "lim",
        "--ulimit",
        "nofile=300:400",
        img,
        "sleep",
        "1000",
    ]);
    assert_eq!(c.ok(&["exec", "lim", "sh", "-c", "ulimit -n"]), "300\n");
    c.ok(&["rm", "-f", "-t", "0", "lim"]);
    let err = c.fails(&["create", "--ulimit", "nofile=abc", img], 125);
    assert!(
        err.contains("ulimit option \"nofile=abc\" requires name=SOFT:HARD"),
        "{err}"
    );
    let err = c.fails(&["create", "--ulimit", "bogus=1", img], 125);
    assert!(err.contains("invalid ulimit type: bogus"), "{err}");
    // --sysctl: namespaced ones only, set in the container's own namespaces.
    let out = c.ok(&[
        "run",
        "--rm",
        "--sysctl",
        "kernel.msgmax=8192",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        img,
        "cat",
        "/proc/sys/kernel/msgmax",
        "/proc/sys/net/ipv4/ip_forward",
    ]);
    assert_eq!(out, "8192\n1\n");
    let err = c.fails(&["create", "--sysctl", "vm.swappiness=1", img], 125);
    assert!(
        err.contains("sysctl 'vm.swappiness' is not allowed"),
        "{err}"
    );
    let err = c.fails(
        &[
            "create",
            "--network",
            "host",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            img,
        ],
        125,
    );
    assert!(
        err.contains("can't be set since Network Namespace set to host"),
        "{err}"
    );
    // --shm-size: the size of /dev/shm (podman's default 64 MiB otherwise).
    let shm = |args: &[&str]| {
        let mut all = vec!["run", "--rm"];
        all.extend(args);
        all.extend([img, "sh", "-c", "grep ' /dev/shm ' /proc/self/mountinfo"]);
        c.ok(&all)
    };
    assert!(shm(&["--shm-size", "1m"]).contains("size=1024k"));
    assert!(shm(&[]).contains("size=65536k"));
    let err = c.fails(&["create", "--shm-size", "abc", img], 125);
    assert!(err.contains("invalid --shm-size"), "{err}");
    // --group-add: ids and the container's group names; unknown names fail at start
    // (podman: "unable to find group nosuch: no matching entries in group file").
    let g = groups(c, img, &["--group-add", "10", "--group-add", "nobody"]);
    for want in ["0", "10", "65534"] {
        assert!(g.contains(&want.to_string()), "{want} not in {g:?}");
    }
    let out = c.run(&["run", "--rm", "--group-add", "nosuch", img, "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("unable to find group nosuch: no matching entries in group file"),
        "{}",
        stderr(&out)
    );
});

both!(
    run_namespaces_timezone_env_and_labels,
    |c: &Capsa, img: &str| {
        // --pid=host: the host's processes, pid 1 included.
        let host_init = std::fs::read("/proc/1/cmdline").unwrap();
        let out = c
            .cmd(&[
                "run",
                "--rm",
                "--pid",
                "host",
                img,
                "cat",
                "/proc/1/cmdline",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(out.stdout, host_init);
        let out = c
            .cmd(&["run", "--rm", img, "cat", "/proc/1/cmdline"])
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"cat\0/proc/1/cmdline\0");
        // --ipc=host: the host's IPC namespace (busybox has no readlink: ls -l shows it).
        let ipc_of = |args: &[&str]| {
            let mut all = vec!["run", "--rm"];
            all.extend(args);
            all.extend([img, "ls", "-l", "/proc/self/ns/ipc"]);
            c.ok(&all)
        };
        let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap();
        let host_ipc = host_ipc.to_str().unwrap();
        let out = ipc_of(&["--ipc", "host"]);
        assert!(out.trim_end().ends_with(&format!("-> {host_ipc}")), "{out}");
        let out = ipc_of(&[]);
        assert!(!out.contains(host_ipc), "{out}");
        // --uts=host: the host's name; a --hostname with it is podman's error.
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(
            c.ok(&["run", "--rm", "--uts", "host", img, "hostname"]),
            host_name
        );
        let err = c.fails(&["create", "--uts", "host", "--hostname", "x", img], 125);
        assert!(
            err.contains("cannot set hostname when running in the host UTS namespace"),
            "{err}"
        );
        let err = c.fails(&["create", "--pid", "bogus", img], 125);
        assert!(
            err.contains("unrecognized namespace mode bogus passed"),
            "{err}"
        );
        // --tz: the zone's file at /etc/localtime (podman sets no TZ variable).
        if std::path::Path::new("/usr/share/zoneinfo/Asia/Tokyo").is_file() {
            let out = c.ok(&[
                "run",
                "--rm",
                "--tz",
                "Asia/Tokyo",
                img,
                "sh",
                "-c",
                "date +%Z; echo \"TZ=$TZ\"",
            ]);
            assert_eq!(out, "JST\nTZ=\n");
        } else {
            eprintln!("SKIP --tz: /usr/share/zoneinfo/Asia/Tokyo is missing (tzdata)");
        }
        let err = c.fails(&["create", "--tz", "Nope/Where", img], 125);
        assert!(
            err.contains("stat /usr/share/zoneinfo/Nope/Where: no such file or directory"),
            "{err}"
        );
        // --env-host: the caller's variables, under -e.
        let out = c
            .cmd(&[
                "run",
                "--rm",
                "--env-host",
                "-e",
                "OVER=flag",
                img,
                "sh",
                "-c",
                "echo $FROM_HOST $OVER",
            ])
            .env("FROM_HOST", "yes")
            .env("OVER", "host")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), "yes flag\n");
        // --label-file, with --label winning.
        let f = c.path().join("labels");
        std::fs::write(&f, "# comment\na=from-file\n\nb=2\n").unwrap();
        c.ok(&[
            "create",
            "--name",
            "lab",
            "--label-file",
            f.to_str().unwrap(),
            "--label",
            "a=flag",
            img,
            "true",
        ]);
        let labels = &inspect(c, "lab")["Config"]["Labels"];
        assert_eq!(labels["a"], "flag", "{labels}");
        assert_eq!(labels["b"], "2", "{labels}");
    }
);
