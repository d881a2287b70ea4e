//! Commands on existing containers (logs, attach, restart, top, port, rename, pause,
//! unpause, stats, container prune/exists) under crun, with the busybox image of the
//! fixture registry, checked against what Podman 4.3 prints and exits with. Every test
//! runs twice: as root and as the unprivileged test user (`CAPSA_TEST_ROOTLESS_USER`).

mod common;
use common::*;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn inspect(c: &Capsa, name: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&c.ok(&["container", "inspect", name])).unwrap();
    v[0].clone()
}

fn state(c: &Capsa, name: &str) -> String {
    inspect(c, name)["State"]["Status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits for `child` at most `limit`; kills it and fails the test when it is late.
fn wait_for(mut child: Child, limit: Duration, what: &str) -> std::process::Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not end within {limit:?}: {}{}",
                stdout(&out),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines of a `logs -t` output: (time, text).
fn timed(out: &str) -> Vec<(String, String)> {
    out.lines()
        .map(|l| {
            let (t, rest) = l.split_once(' ').unwrap();
            (t.to_string(), rest.to_string())
        })
        .collect()
}

both!(logs_streams_and_filters, |c: &Capsa, img: &str| {
    c.ok(&[
        "run",
        "-d",
        "--name",
        "lg",
        img,
        "sh",
        "-c",
        "echo out1; echo err1 >&2; sleep 1.2; echo out2",
    ]);
    c.ok(&["wait", "lg"]);
    // Tried: plain logs. Each stream goes to its own fd, as in podman.
    let out = c.run(&["logs", "lg"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "out1\nout2\n");
    assert_eq!(stderr(&out), "err1\n");
    // Tried: --tail 1 (the last line only), --tail 0 (nothing), --tail -1 (all).
    let out = c.run(&["logs", "--tail", "1", "lg"]);
    assert_eq!(
        (stdout(&out).as_str(), stderr(&out).as_str()),
        ("out2\n", "")
    );
    let out = c.run(&["logs", "--tail", "0", "lg"]);
    assert_eq!((stdout(&out).as_str(), stderr(&out).as_str()), ("", ""));
    assert_eq!(c.ok(&["logs", "--tail", "-1", "lg"]), "out1\nout2\n");
    // Tried: -t puts the time (RFC 3339 with nanoseconds) before each line.
    let lines = timed(&c.ok(&["logs", "-t", "lg"]));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].1, "out1");
    assert_eq!(lines[1].1, "out2");
    for (t, _) in &lines {
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "not a time: {t}"
        );
    }
    // Tried: --since the second line's time, --until the first's.
    assert_eq!(c.ok(&["logs", "--since", &lines[1].0, "lg"]), "out2\n");
    assert_eq!(c.ok(&["logs", "--until", &lines[0].0, "lg"]), "out1\n");
    assert_eq!(c.ok(&["logs", "--since", "10m", "lg"]), "out1\nout2\n");
    assert_eq!(c.ok(&["logs", "--until", "10m", "lg"]), "");
    let err = c.fails(&["logs", "--since", "bogus", "lg"], 125);
    assert!(err.contains("--since") && err.contains("bogus"), "{err}");
    // Tried: two containers: every line carries the container's short ID, or with
    // --names its name; lines are merged in time order.
    c.ok(&["run", "--name", "lg2", img, "echo", "second"]);
    let id1 = inspect(c, "lg")["Id"].as_str().unwrap()[..12].to_string();
    let id2 = inspect(c, "lg2")["Id"].as_str().unwrap()[..12].to_string();
    let out = c.ok(&["logs", "lg", "lg2"]);
    assert_eq!(
        out,
        format!("{id1} out1\n{id1} out2\n{id2} second\n"),
        "merged by time"
    );
    let out = c.run(&["logs", "--names", "lg", "lg2"]);
    assert_eq!(stdout(&out), "lg out1\nlg out2\nlg2 second\n");
    assert_eq!(stderr(&out), "lg err1\n");
    // One container with --names has no prefix, as in podman.
    assert_eq!(c.ok(&["logs", "--names", "lg2"]), "second\n");
    // Tried: the none and passthrough log drivers keep no log: podman's error.
    c.ok(&[
        "create",
        "--name",
        "quiet",
        "--log-driver",
        "none",
        img,
        "true",
    ]);
    let err = c.fails(&["logs", "quiet"], 125);
    assert!(
        err.contains("this container is using the 'none' log driver, cannot read logs"),
        "{err}"
    );
    // Tried: a container that never ran has an empty log; a missing one is an error.
    c.ok(&["create", "--name", "fresh", img, "true"]);
    assert_eq!(c.ok(&["logs", "fresh"]), "");
    let err = c.fails(&["logs", "nosuch"], 125);
    assert!(
        err.contains("no container with name or ID \"nosuch\" found"),
        "{err}"
    );
    let err = c.fails(&["logs"], 125);
    assert!(err.contains("specify at least one container"), "{err}");
});

both!(
    logs_follow_ends_with_the_container,
    |c: &Capsa, img: &str| {
        // Tried: -f on a container that prints, sleeps and prints again: both lines come,
        // and logs returns once the container has exited.
        c.ok(&[
            "run",
            "-d",
            "--name",
            "fl",
            img,
            "sh",
            "-c",
            "echo a; sleep 2; echo b",
        ]);
        let t = Instant::now();
        let child = c
            .cmd(&["logs", "-f", "fl"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_for(child, Duration::from_secs(20), "logs -f");
        assert_eq!(stdout(&out), "a\nb\n", "{}", stderr(&out));
        assert!(t.elapsed() >= Duration::from_millis(1500), "it followed");
        // Tried: -f on a long-running container, then stop: logs ends too.
        c.ok(&[
            "run",
            "-d",
            "--name",
            "long",
            img,
            "sh",
            "-c",
            "echo started; sleep 1000",
        ]);
        let child = c
            .cmd(&["logs", "-f", "long"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        c.ok(&["stop", "-t", "0", "long"]);
        let out = wait_for(child, Duration::from_secs(15), "logs -f after stop");
        assert_eq!(stdout(&out), "started\n");
        assert_eq!(out.status.code(), Some(0));
        // Tried: -f on a container that has exited already returns at once.
        let out = wait_for(
            c.cmd(&["logs", "-f", "fl"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
            Duration::from_secs(10),
            "logs -f of an exited container",
        );
        assert_eq!(stdout(&out), "a\nb\n");
    }
);

/// `capsa ARGS` under script(1), so that it has a terminal; stdin is a pipe the test
/// writes to.
fn under_script(c: &Capsa, args: &[&str]) -> Command {
    let cmd = c.cmd(args);
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let line: Vec<String> = std::iter::once(quote(&cmd.get_program().to_string_lossy()))
        .chain(cmd.get_args().map(|a| quote(&a.to_string_lossy())))
        .collect();
    let mut script = Command::new("script");
    script.args(["-qec", &line.join(" "), "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    script
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    script
}

both!(attach_streams_and_detach_keys, |c: &Capsa, img: &str| {
    // Tried: attach to a container without a terminal: its output until it exits,
    // then podman's extra newline, and exit code 0 (podman's attach does not pass the
    // container's code on).
    c.ok(&[
        "run",
        "-d",
        "--name",
        "later",
        img,
        "sh",
        "-c",
        "sleep 1; echo hi; echo oops >&2; exit 7",
    ]);
    let out = c.run(&["attach", "--no-stdin", "later"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "hi\n\n");
    assert_eq!(stderr(&out), "oops\n");
    assert_eq!(inspect(c, "later")["State"]["ExitCode"], 7);
    // Tried: attach to a stopped container: podman's refusal.
    let err = c.fails(&["attach", "later"], 125);
    assert!(
        err.contains("you can only attach to running containers"),
        "{err}"
    );
    let err = c.fails(&["attach", "nosuch"], 125);
    assert!(err.contains("nosuch"), "{err}");
    // Tried: stdin piped through to a container started with -i.
    c.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "reader",
        img,
        "sh",
        "-c",
        "read x; echo got $x",
    ]);
    let (code, out, _) = with_stdin(c, &["attach", "reader"], "hello\n");
    assert_eq!(code, Some(0));
    assert_eq!(out, "got hello\n\n");

    // Tried: a terminal (script(1)) attached to `-it sh`; a command typed in runs,
    // then the detach keys (ctrl-x) end the session and the container runs on.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIP attach with a terminal: script(1) (util-linux) is not installed");
        return;
    }
    c.ok(&["run", "-d", "-it", "--name", "shell", img, "sh"]);
    let mut child = under_script(c, &["attach", "--detach-keys", "ctrl-x", "shell"])
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    input.write_all(b"echo hi-$((6*7))\r").unwrap();
    input.flush().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    input.write_all(b"\x18").unwrap();
    input.flush().unwrap();
    let out = wait_for(child, Duration::from_secs(15), "attach with detach keys");
    drop(input);
    let text = stdout(&out);
    assert!(text.contains("hi-42"), "the typed command ran: {text:?}");
    assert_eq!(out.status.code(), Some(0), "{text:?} {}", stderr(&out));
    assert_eq!(state(c, "shell"), "running", "detaching leaves it running");
    // Tried: the default detach keys (ctrl-p ctrl-q) too.
    let mut child = under_script(c, &["attach", "shell"]).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    input.write_all(b"\x10\x11").unwrap();
    input.flush().unwrap();
    let out = wait_for(child, Duration::from_secs(15), "attach with ctrl-p ctrl-q");
    drop(input);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(state(c, "shell"), "running");
    let err = c.fails(&["attach", "--detach-keys", "ctrl-", "shell"], 125);
    assert!(err.contains("detach"), "{err}");
});

both!(restart_runs_again, |c: &Capsa, img: &str| {
    // Tried: restart of a running container (sleep as pid 1 ignores SIGTERM, so -t 1
    // ends in SIGKILL): it prints the name and runs again with a new process.
    c.ok(&["run", "-d", "--name", "r", img, "sleep", "1000"]);
    let pid1 = inspect(c, "r")["State"]["Pid"].as_i64().unwrap();
    let t = Instant::now();
    assert_eq!(c.ok(&["restart", "-t", "1", "r"]), "r\n");
    assert!(t.elapsed() < Duration::from_secs(10));
    let v = inspect(c, "r");
    assert_eq!(v["State"]["Status"], "running");
    assert_ne!(v["State"]["Pid"].as_i64().unwrap(), pid1);
    assert_eq!(v["RestartCount"], 0);
    // Tried: restart of an exited container starts it.
    c.ok(&["run", "--name", "once", img, "true"]);
    assert_eq!(state(c, "once"), "exited");
    c.ok(&["restart", "once"]);
    c.ok(&["wait", "once"]);
    assert_eq!(inspect(c, "once")["State"]["ExitCode"], 0);
    // Tried: a --rm container survives its restart.
    c.ok(&["run", "-d", "--rm", "--name", "tmp", img, "sleep", "1000"]);
    c.ok(&["restart", "-t", "0", "tmp"]);
    assert_eq!(state(c, "tmp"), "running");
    // Tried: --running -a restarts only the running ones and prints full IDs.
    let out = c.ok(&["restart", "--running", "-a", "-t", "0"]);
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(ids.len(), 2, "{out}");
    assert!(ids.iter().all(|i| i.len() == 64), "{out}");
    // Tried: the usage errors.
    let err = c.fails(&["restart"], 125);
    assert!(err.contains("at least one name or id"), "{err}");
    let err = c.fails(&["restart", "nosuch"], 125);
    assert!(
        err.contains("no container with name or ID \"nosuch\" found"),
        "{err}"
    );
    // (Not `rm -t 0`: its stop runs the cleanup that --rm asks for first.)
    c.ok(&["rm", "-f", "r", "tmp"]);
});

both!(top_shows_the_processes, |c: &Capsa, img: &str| {
    c.ok(&["run", "-d", "--name", "t", img, "sleep", "1000"]);
    // Tried: default columns; pid 1 is the container's sleep, run by root.
    let out = c.ok(&["top", "t"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "USER", "PID", "PPID", "%CPU", "ELAPSED", "TTY", "TIME", "COMMAND"
        ]
    );
    assert!(
        out.starts_with("USER        PID         PPID        %CPU"),
        "{out}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], "root");
    assert_eq!(row[1], "1");
    assert_eq!(row[2], "0");
    assert_eq!(row[5], "?");
    assert_eq!(&row[7..], ["sleep", "1000"]);
    // Tried: a process added with exec shows too, its parent outside the container.
    // (Its output goes nowhere: a detached exec keeps the fds it was given.)
    let st = c
        .cmd(&["exec", "-d", "t", "sleep", "999"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let out = c.ok(&["top", "t", "pid", "ppid", "args"]);
    assert!(
        out.starts_with("PID         PPID        COMMAND\n"),
        "{out}"
    );
    assert!(
        out.contains("\n1           0           sleep 1000"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.ends_with("sleep 999 ") && l.split_whitespace().nth(1) == Some("0")),
        "{out}"
    );
    // Tried: descriptors psgo does not know go to the container's own ps.
    let out = c.ok(&["top", "t", "-o", "pid,comm"]);
    assert!(out.contains("PID") && out.contains("sleep"), "{out}");
    // Tried: a container that does not run.
    c.ok(&["create", "--name", "idle", img, "true"]);
    let err = c.fails(&["top", "idle"], 125);
    assert!(
        err.contains("top can only be used on running containers"),
        "{err}"
    );
    c.fails(&["top"], 125);
    c.ok(&["rm", "-f", "-t", "0", "t"]);
});

/// A TCP port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

both!(port_lists_published_ports, |c: &Capsa, img: &str| {
    let (p1, p2) = (free_port(), free_port());
    let out = c.run(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("{p1}:80"),
        "-p",
        &format!("127.0.0.1:{p2}:81/udp"),
        img,
        "sleep",
        "1000",
    ]);
    if !out.status.success() {
        let err = stderr(&out);
        if err.contains("pasta") || err.contains("slirp4netns") {
            eprintln!("SKIP port_lists_published_ports: no network helper here: {err}");
            return;
        }
        panic!("run -p failed: {err}");
    }
    // Tried: every mapping, podman's format and order (tcp first).
    assert_eq!(
        c.ok(&["port", "web"]),
        format!("80/tcp -> 0.0.0.0:{p1}\n81/udp -> 127.0.0.1:{p2}\n")
    );
    // Tried: one private port, with and without its protocol.
    assert_eq!(c.ok(&["port", "web", "80"]), format!("0.0.0.0:{p1}\n"));
    assert_eq!(c.ok(&["port", "web", "80/tcp"]), format!("0.0.0.0:{p1}\n"));
    assert_eq!(
        c.ok(&["port", "web", "81/udp"]),
        format!("127.0.0.1:{p2}\n")
    );
    let err = c.fails(&["port", "web", "81"], 125);
    assert!(
        err.contains("failed to find published port \"81\""),
        "{err}"
    );
    // Tried: --all, each line after the container's short ID.
    let id = inspect(c, "web")["Id"].as_str().unwrap()[..12].to_string();
    assert_eq!(
        c.ok(&["port", "-a"]),
        format!("{id}\t80/tcp -> 0.0.0.0:{p1}\n{id}\t81/udp -> 127.0.0.1:{p2}\n")
    );
    let err = c.fails(&["port", "-a", "web"], 125);
    assert!(err.contains("no arguments are needed with --all"), "{err}");
    // Tried: a container without ports, and a stopped one: nothing, exit 0.
    c.ok(&["run", "-d", "--name", "plain", img, "sleep", "1000"]);
    assert_eq!(c.ok(&["port", "plain"]), "");
    c.ok(&["stop", "-t", "0", "web"]);
    assert_eq!(c.ok(&["port", "web"]), "");
    c.fails(&["port"], 125);
    c.ok(&["rm", "-f", "-t", "0", "plain"]);
});

both!(rename_keeps_names_unique, |c: &Capsa, img: &str| {
    c.ok(&["create", "--name", "a", img, "true"]);
    c.ok(&["run", "-d", "--name", "b", img, "sleep", "1000"]);
    // Tried: rename a created and a running container; no output.
    assert_eq!(c.ok(&["rename", "a", "c"]), "");
    assert_eq!(c.ok(&["rename", "b", "b2"]), "");
    let names = c.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["b2", "c"]);
    assert_eq!(state(c, "b2"), "running");
    // Tried: a name another container has, a bad name, a missing container.
    let err = c.fails(&["rename", "c", "b2"], 125);
    assert!(
        err.contains("already in use") && err.contains("hint:"),
        "{err}"
    );
    let err = c.fails(&["rename", "c", "bad name"], 125);
    assert!(err.contains("names must match"), "{err}");
    let err = c.fails(&["rename", "nosuch", "x"], 125);
    assert!(err.contains("nosuch"), "{err}");
    // Tried: its own name: fine.
    c.ok(&["rename", "c", "c"]);
    // Tried: twenty renames racing for one name: exactly one wins.
    for i in 0..20 {
        c.ok(&["create", "--name", &format!("n{i}"), img, "true"]);
    }
    let children: Vec<_> = (0..20)
        .map(|i| {
            c.cmd(&["rename", &format!("n{i}"), "winner"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let won = children
        .into_iter()
        .map(|ch| ch.wait_with_output().unwrap().status.success())
        .filter(|ok| *ok)
        .count();
    assert_eq!(won, 1);
    let names = c.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(names.lines().filter(|n| *n == "winner").count(), 1);
    c.ok(&["rm", "-f", "-t", "0", "b2"]);
});

both!(pause_and_unpause, |c: &Capsa, img: &str| {
    let rootless = c.user.is_some();
    c.ok(&["run", "-d", "--name", "p", img, "sleep", "1000"]);
    let out = c.run(&["pause", "p"]);
    let err = stderr(&out);
    if err.contains("does not have a cgroup") {
        // Tried: rootless without delegated cgroup v2 controllers (this host's case):
        // podman's refusal, with a hint.
        assert!(rootless, "as root the container has a cgroup: {err}");
        assert_eq!(out.status.code(), Some(125));
        assert!(err.contains("hint:") && err.contains("cgroup v2"), "{err}");
        assert_eq!(state(c, "p"), "running");
        c.ok(&["rm", "-f", "-t", "0", "p"]);
        return;
    }
    // Tried: pause freezes it (ps shows Paused), unpause thaws it.
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(stdout(&out), "p\n");
    assert_eq!(state(c, "p"), "paused");
    assert!(c.ok(&["ps"]).contains("Paused"));
    let err = c.fails(&["pause", "p"], 125);
    assert!(err.contains("is already paused"), "{err}");
    assert_eq!(c.ok(&["unpause", "p"]), "p\n");
    assert_eq!(state(c, "p"), "running");
    let err = c.fails(&["unpause", "p"], 125);
    assert!(err.contains("is not paused, can't unpause"), "{err}");
    // Tried: a restart of a paused container.
    c.ok(&["pause", "p"]);
    c.ok(&["restart", "-t", "0", "p"]);
    assert_eq!(state(c, "p"), "running");
    c.ok(&["create", "--name", "idle", img, "true"]);
    let err = c.fails(&["pause", "idle"], 125);
    assert!(err.contains("is not running, can't pause"), "{err}");
    c.ok(&["rm", "-f", "-t", "0", "p"]);
});

both!(stats_reads_the_cgroup, |c: &Capsa, img: &str| {
    let rootless = c.user.is_some();
    c.ok(&["run", "-d", "--name", "s", img, "sleep", "1000"]);
    let out = c.run(&["stats", "--no-stream", "s"]);
    let err = stderr(&out);
    if rootless && err.contains("stats is not supported in rootless mode") {
        // Tried: rootless on a host without delegated cgroup v2 (this host's case):
        // podman's message, exit 125.
        assert_eq!(out.status.code(), Some(125));
        assert!(err.contains("hint:"), "{err}");
        c.ok(&["rm", "-f", "-t", "0", "s"]);
        return;
    }
    // Tried: the default table: podman's columns, one row with one process.
    assert_eq!(out.status.code(), Some(0), "{err}");
    let text = stdout(&out);
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("ID            NAME        CPU %       MEM USAGE / LIMIT  MEM %"),
        "{text}"
    );
    assert!(
        header.ends_with("PIDS        CPU TIME    AVG CPU %"),
        "{text}"
    );
    let row = lines.next().unwrap();
    assert!(row.contains(" s ") && row.contains('%'), "{row}");
    // Tried: json and a template. podman 4.3's keys, in its order, indented by one
    // space (Go's MarshalIndent with " ").
    let text = c.ok(&["stats", "--no-stream", "--format", "json", "s"]);
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  \""))
        .filter_map(|l| l.split_once("\": ").map(|(k, _)| k))
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "name",
            "cpu_time",
            "cpu_percent",
            "avg_cpu",
            "mem_usage",
            "mem_percent",
            "net_io",
            "block_io",
            "pids"
        ],
        "{text}"
    );
    assert!(text.starts_with("[\n {\n  \"id\": \""), "{text}");
    assert!(text.ends_with("\n }\n]\n"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v[0]["id"].as_str().unwrap().len(), 12);
    assert_eq!(v[0]["name"], "s");
    assert_eq!(v[0]["pids"], "1");
    assert!(v[0]["mem_usage"].as_str().unwrap().contains(" / "));
    assert_eq!(
        c.ok(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.PIDS}}",
            "s"
        ]),
        "s 1\n"
    );
    let out = c.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "table {{.ID}}\t{{.UpTime}}",
        "s",
    ]);
    assert!(out.starts_with("ID            CPU TIME\n"), "{out}");
    // Tried: a container that does not run reads as zeros, as in podman.
    c.ok(&["create", "--name", "idle", img, "true"]);
    let out = c.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}} {{.PIDS}}",
        "idle",
    ]);
    assert_eq!(out, "0B / 0B 0\n");
    // Tried: --no-trunc in json: the full ID.
    let v: serde_json::Value = serde_json::from_str(&c.ok(&[
        "stats",
        "--no-stream",
        "--no-trunc",
        "--format",
        "json",
        "idle",
    ]))
    .unwrap();
    assert_eq!(v[0]["id"].as_str().unwrap().len(), 64);
    assert_eq!(v[0]["cpu_time"], "0s");
    assert_eq!(v[0]["mem_usage"], "0B / 0B");
    c.ok(&["rm", "-f", "-t", "0", "s"]);
});

both!(prune_and_exists, |c: &Capsa, img: &str| {
    let keep = c.ok(&["run", "-d", "--name", "up", img, "sleep", "1000"]);
    let done = c.ok(&["run", "--name", "done", img, "true"]);
    assert_eq!(done, "");
    c.ok(&[
        "create", "--name", "made", "--label", "tier=web", img, "true",
    ]);
    // Tried: exists answers with its exit code only.
    let out = c.run(&["container", "exists", "made"]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(0), String::new()));
    let out = c.run(&["container", "exists", "nosuch"]);
    assert_eq!((out.status.code(), stderr(&out)), (Some(1), String::new()));
    // Tried: no answer but "n": nothing is removed.
    let (code, out, err) = with_stdin(c, &["container", "prune"], "n\n");
    assert_eq!((code, out.as_str()), (Some(0), ""));
    assert!(
        err.contains("Are you sure you want to continue? [y/N]"),
        "{err}"
    );
    assert_eq!(c.ok(&["ps", "-aq"]).lines().count(), 3);
    // Tried: a label filter removes only the labelled one and prints its full ID.
    let made = inspect(c, "made")["Id"].as_str().unwrap().to_string();
    assert_eq!(
        c.ok(&["container", "prune", "-f", "--filter", "label=tier=web"]),
        format!("{made}\n")
    );
    // Tried: until= in the past removes nothing; a bad filter is refused.
    assert_eq!(
        c.ok(&["container", "prune", "-f", "--filter", "until=1h"]),
        ""
    );
    let err = c.fails(&["container", "prune", "-f", "--filter", "bogus=1"], 125);
    assert!(err.contains("bogus is an invalid filter"), "{err}");
    // Tried: "y": every container that does not run goes; the running one stays.
    let done_id = inspect(c, "done")["Id"].as_str().unwrap().to_string();
    let (code, out, _) = with_stdin(c, &["container", "prune"], "y\n");
    assert_eq!((code, out), (Some(0), format!("{done_id}\n")));
    assert_eq!(c.ok(&["ps", "-aq", "--no-trunc"]).trim(), keep.trim());
    c.ok(&["rm", "-f", "-t", "0", "up"]);
});

both!(ps_filters_before_and_since, |c: &Capsa, img: &str| {
    for n in ["fa", "fb", "fc"] {
        c.ok(&["create", "--name", n, img, "true"]);
        // Created times must differ for the order to be defined.
        std::thread::sleep(Duration::from_millis(20));
    }
    let names = |filters: &[&str]| {
        let mut args = vec!["ps", "-a", "--format", "{{.Names}}"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        c.ok(&args)
    };
    // Tried against podman 4.3: newest first, the named container itself excluded.
    assert_eq!(names(&["before=fb"]), "fa\n");
    assert_eq!(names(&["before=fc"]), "fb\nfa\n");
    assert_eq!(names(&["since=fb"]), "fc\n");
    assert_eq!(names(&["since=fa"]), "fc\nfb\n");
    // By ID prefix, and combined (each filter narrows the list).
    let id = inspect(c, "fb")["Id"].as_str().unwrap().to_string();
    assert_eq!(names(&[&format!("since={}", &id[..8])]), "fc\n");
    assert_eq!(names(&["since=fa", "before=fc"]), "fb\n");
    assert_eq!(names(&["before=fb", "before=fc"]), "fa\n");
    assert_eq!(names(&["since=fc"]), "");
    // Without -a only running containers are candidates.
    assert_eq!(
        c.ok(&["ps", "--filter", "since=fa", "--format", "{{.Names}}"]),
        ""
    );
    // An unknown container: podman's error and exit code, even with nothing to list.
    let err = c.fails(&["ps", "-a", "--filter", "before=nosuch"], 125);
    assert!(
        err.contains("no container with name or ID \"nosuch\" found"),
        "{err}"
    );
});
