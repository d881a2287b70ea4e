//! The real `capsa-agent` (in `--listen unix:` mode, not as PID 1) driven by the host
//! `Client`: handshake, requests, execs and their streams, flow control, and a dead agent.

mod common;
use common::agent_binary;

use capsa_core::transport::{Client, ClientError, ClientOptions, ExecOptions, UnixTransport};
use capsa_proto::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

macro_rules! agent_or_skip {
    ($name:expr) => {
        agent_or_skip!($name, &[])
    };
    ($name:expr, $args:expr) => {
        match TestAgent::start($args, None) {
            Some(agent) => agent,
            None => {
                println!(
                    "SKIP {}: capsa-agent is not built (cargo build -p capsa-agent)",
                    $name
                );
                return;
            }
        }
    };
}

fn scratch_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "capsa-agent-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct TestAgent {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl TestAgent {
    fn start(extra: &[&str], uid: Option<u32>) -> Option<TestAgent> {
        let bin = agent_binary()?;
        let dir = scratch_dir();
        let socket = dir.join("agent.sock");
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .args(extra)
            .stdin(Stdio::null());
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .unwrap();
            cmd.uid(uid).gid(uid);
        }
        let child = cmd.spawn().expect("spawn capsa-agent");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "agent socket never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(TestAgent { child, dir, socket })
    }

    async fn client(&self) -> Client {
        // The socket file appears at bind(), a moment before listen(): retry refusals.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Client::connect(&UnixTransport::new(&self.socket), ClientOptions::default()).await
            {
                Err(ClientError::Connect { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                result => return result.expect("connect and handshake"),
            }
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test]
async fn handshake_reports_the_agent_and_the_guest() {
    let agent = agent_or_skip!("handshake_reports_the_agent_and_the_guest");
    let client = agent.client().await;
    let hello = client.agent_hello();
    assert!(hello.software.starts_with("capsa-agent "), "{hello:?}");
    let guest = hello
        .guest
        .as_ref()
        .expect("guest info in the agent's Hello");
    assert!(!guest.kernel.is_empty());
    assert!(guest.memory_total_bytes > 0);
    assert!(guest.cpus >= 1);
    assert!(!guest.pid1);
    assert_eq!(client.negotiated().version, PROTOCOL_VERSION);
    assert!(client.negotiated().has(features::EXEC));
    assert!(client.negotiated().has(features::PTY));
    // Not PID 1: it cannot power a guest off, and does not claim to.
    assert!(!client.negotiated().has(features::POWER_OFF));
}

#[tokio::test]
async fn info_and_ping() {
    let agent = agent_or_skip!("info_and_ping");
    let client = agent.client().await;
    let info = client.info().await.unwrap();
    assert_eq!(info.protocol_version, PROTOCOL_VERSION);
    assert!(info.memory_total_bytes >= info.memory_available_bytes);
    assert!(info.memory_available_bytes > 0);
    assert!(info.uptime_ms > 0);
    assert!(info.agent_rss_bytes > 0);
    assert!(
        info.agent_rss_bytes < 15 * 1024 * 1024,
        "agent RSS {} bytes is over the 15 MB target",
        info.agent_rss_bytes
    );
    let rtt = client.ping().await.unwrap();
    assert!(rtt < Duration::from_secs(1), "{rtt:?}");
}

#[tokio::test]
async fn exec_streams_stdin_stdout_stderr_and_the_exit_code() {
    let agent = agent_or_skip!("exec_streams_stdin_stdout_stderr_and_the_exit_code");
    let client = agent.client().await;
    let mut options = ExecOptions::new([
        "sh",
        "-c",
        "read line; echo \"got $line\"; echo oops >&2; cat; exit 3",
    ]);
    options.stdin = true;
    options.env = vec!["GREETING=hi".into()];
    let mut exec = client.exec(options).await.unwrap();
    assert!(exec.pid() > 0);
    let mut stdin = exec.stdin.take().unwrap();
    stdin.write_all(b"hello\n").await.unwrap();
    // More than a window's worth, so stdin credit has to come back.
    let bulk = vec![b'x'; 3 * INITIAL_WINDOW as usize];
    let mut stdout = exec.stdout.take().unwrap();
    let reader = tokio::spawn(async move { stdout.read_to_end().await });
    stdin.write_all(&bulk).await.unwrap();
    stdin.close().unwrap();
    let stderr = exec.stderr.as_mut().unwrap().read_to_end().await.unwrap();
    let stdout = reader.await.unwrap().unwrap();
    let exit = exec.wait().await.unwrap();
    assert_eq!(&stdout[..10], b"got hello\n");
    assert_eq!(stdout.len(), 10 + bulk.len());
    assert!(stdout[10..].iter().all(|b| *b == b'x'));
    assert_eq!(stderr, b"oops\n");
    assert_eq!(exit.code, Some(3));
    assert_eq!(exit.shell_code(), 3);
}

#[tokio::test]
async fn exec_environment_user_and_cwd() {
    let agent = agent_or_skip!("exec_environment_user_and_cwd");
    let client = agent.client().await;
    let mut options = ExecOptions::new(["sh", "-c", "echo $GREETING; pwd; id -u"]);
    options.env = vec!["GREETING=hi there".into()];
    options.cwd = Some("/tmp".into());
    if is_root() {
        options.user = Some("nobody".into());
    }
    let mut exec = client.exec(options).await.unwrap();
    let out = exec.stdout.as_mut().unwrap().read_to_end().await.unwrap();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hi there");
    assert_eq!(lines[1], "/tmp");
    if is_root() {
        assert_eq!(lines[2], "65534", "runs as nobody");
    }
    assert_eq!(exec.wait().await.unwrap().code, Some(0));
}

#[tokio::test]
async fn exec_errors_are_typed() {
    let agent = agent_or_skip!("exec_errors_are_typed");
    let client = agent.client().await;
    let err = client
        .exec(ExecOptions::new(["definitely-not-a-command-xyz"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    assert!(
        err.to_string().contains("definitely-not-a-command-xyz"),
        "{err}"
    );
    let mut options = ExecOptions::new(["true"]);
    options.user = Some("no-such-user-xyz".into());
    let err = client.exec(options).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoSuchUser), "{err}");
    let mut options = ExecOptions::new(["true"]);
    options.cwd = Some("/no/such/dir".into());
    let err = client.exec(options).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    // The connection is still fine.
    client.ping().await.unwrap();
}

#[tokio::test]
async fn two_concurrent_execs_keep_their_output_apart() {
    let agent = agent_or_skip!("two_concurrent_execs_keep_their_output_apart");
    let client = agent.client().await;
    let size = 2_000_000;
    let spawn = |letter: &'static str| {
        let client = client.clone();
        tokio::spawn(async move {
            let script = format!("yes {letter} | head -c {size}");
            let mut exec = client
                .exec(ExecOptions::new(["sh", "-c", &script]))
                .await
                .unwrap();
            let out = exec.stdout.as_mut().unwrap().read_to_end().await.unwrap();
            let exit = exec.wait().await.unwrap();
            (out, exit)
        })
    };
    let (a, b) = (spawn("A"), spawn("B"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    for ((out, exit), letter) in [(a, b'A'), (b, b'B')] {
        assert_eq!(exit.code, Some(0));
        assert_eq!(out.len(), size);
        assert!(
            out.chunks(2)
                .all(|pair| pair[0] == letter && pair[1] == b'\n'),
            "output of the {} exec is mixed",
            letter as char
        );
    }
}

#[tokio::test]
async fn a_stalled_stream_does_not_block_other_requests() {
    let agent = agent_or_skip!("a_stalled_stream_does_not_block_other_requests");
    let client = agent.client().await;
    // Far more output than a window, and nobody reads it.
    let mut exec = client
        .exec(ExecOptions::new(["head", "-c", "50000000", "/dev/zero"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let rtt = tokio::time::timeout(Duration::from_secs(2), client.ping())
            .await
            .expect("ping answered while a stream is stalled")
            .unwrap();
        assert!(rtt < Duration::from_secs(1));
    }
    let second = client
        .exec(ExecOptions::new(["echo", "still here"]))
        .await
        .unwrap();
    let mut second = second;
    let out = second.stdout.as_mut().unwrap().read_to_end().await.unwrap();
    assert_eq!(out, b"still here\n");
    // The stalled process is still running: it waits for credit.
    let waited = tokio::time::timeout(Duration::from_millis(200), exec.wait()).await;
    assert!(
        waited.is_err(),
        "the producer should be blocked on flow control"
    );
    // Dropping the reader hands the credit back; the producer then runs to the end.
    drop(exec.stdout.take());
    let exit = tokio::time::timeout(Duration::from_secs(60), exec.wait())
        .await
        .expect("producer finishes once its output is discarded")
        .unwrap();
    assert_eq!(exit.code, Some(0));
}

#[tokio::test]
async fn exec_with_a_tty_gets_a_terminal_and_resizes() {
    let agent = agent_or_skip!("exec_with_a_tty_gets_a_terminal_and_resizes");
    let client = agent.client().await;
    let mut options = ExecOptions::new([
        "sh",
        "-c",
        "tty; stty size; [ -t 0 ] && echo stdin-is-tty; read go; stty size",
    ]);
    options.tty = true;
    options.stdin = true;
    options.size = Some(WinSize {
        rows: 30,
        cols: 100,
    });
    let mut exec = client.exec(options).await.unwrap();
    assert!(exec.stderr.is_none(), "a tty has one output stream");
    let mut stdout = exec.stdout.take().unwrap();
    let mut seen = String::new();
    while !seen.contains("stdin-is-tty") {
        let chunk = stdout
            .recv()
            .await
            .unwrap()
            .expect("output before the read");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("/dev/pts/"), "{seen:?}");
    assert!(seen.contains("30 100"), "{seen:?}");
    exec.resize(WinSize {
        rows: 40,
        cols: 120,
    })
    .await
    .unwrap();
    exec.stdin
        .as_mut()
        .unwrap()
        .write_all(b"go\r")
        .await
        .unwrap();
    let rest = stdout.read_to_end().await.unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("40 120"), "{rest:?}");
    assert!(
        seen.contains("\r\n"),
        "the pty translates newlines: {seen:?}"
    );
    assert_eq!(exec.wait().await.unwrap().code, Some(0));
}

#[tokio::test]
async fn signal_reaches_the_process() {
    let agent = agent_or_skip!("signal_reaches_the_process");
    let client = agent.client().await;
    let mut exec = client
        .exec(ExecOptions::new(["sleep", "30"]))
        .await
        .unwrap();
    exec.signal("TERM").await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(5), exec.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.signal, Some(libc::SIGTERM));
    assert_eq!(exit.shell_code(), 128 + libc::SIGTERM);
    let err = exec.signal("TERM").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoSuchExec), "{err}");
    let mut exec = client
        .exec(ExecOptions::new(["sleep", "30"]))
        .await
        .unwrap();
    let err = exec.signal("NOTASIGNAL").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    exec.signal("9").await.unwrap();
    assert_eq!(exec.wait().await.unwrap().signal, Some(9));
}

#[tokio::test]
async fn killed_agent_fails_pending_work_promptly() {
    let mut agent = agent_or_skip!("killed_agent_fails_pending_work_promptly");
    let client = agent.client().await;
    let mut exec = client
        .exec(ExecOptions::new(["sleep", "30"]))
        .await
        .unwrap();
    let mut stdout = exec.stdout.take().unwrap();
    let started = Instant::now();
    agent.child.kill().unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), exec.wait())
        .await
        .expect("wait must not hang on a dead agent")
        .unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let err = stdout.recv().await.unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err}");
    assert!(client.is_closed());
    let started = Instant::now();
    let err = client.ping().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(
        err.to_string().contains("connection to the agent lost"),
        "{err}"
    );
}

#[tokio::test]
async fn request_in_flight_when_the_agent_dies_fails() {
    // A peer that accepts, says Hello, reads a request and then dies without answering.
    let dir = scratch_dir();
    let path = dir.join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let hello = Hello::new("fake-agent", &[features::EXEC]);
        conn.write_all(&Frame::json(Kind::Hello, 0, &hello).to_bytes().unwrap())
            .unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        std::thread::sleep(Duration::from_millis(200));
    });
    let client = Client::connect(&UnixTransport::new(&path), ClientOptions::default())
        .await
        .unwrap();
    let started = Instant::now();
    let err = client.info().await.unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn silent_or_garbage_peers_fail_the_handshake_quickly() {
    let dir = scratch_dir();
    // Silent: the socket accepts (as QEMU's does before the guest is up) and says nothing.
    let silent = dir.join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    let options = ClientOptions {
        hello_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let err = Client::connect(&UnixTransport::new(&silent), options.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::HelloTimeout { .. }), "{err}");
    assert!(err.to_string().contains("hint: "), "{err}");
    drop(listener);

    // Garbage: a login prompt where the agent should be.
    let garbage = dir.join("garbage.sock");
    let listener = std::os::unix::net::UnixListener::bind(&garbage).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(b"Debian GNU/Linux 12 capsa ttyS0\r\nlogin: ")
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
    });
    let err = Client::connect(&UnixTransport::new(&garbage), options.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Handshake(_)), "{err}");
    server.join().unwrap();

    // Nobody there at all.
    let err = Client::connect(&UnixTransport::new(dir.join("none.sock")), options)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("none.sock"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A raw connection, for what the Client never sends.
fn raw_connect(socket: &Path, hello: Option<Hello>) -> (StdUnixStream, Decoder, Hello) {
    let mut conn = StdUnixStream::connect(socket).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut decoder = Decoder::new();
    let frame = raw_next(&mut conn, &mut decoder).expect("agent Hello");
    assert_eq!(frame.kind, Kind::Hello);
    let agent_hello: Hello = frame.parse().unwrap();
    let hello = hello.unwrap_or_else(|| Hello::new("raw-test", &[]));
    conn.write_all(&Frame::json(Kind::Hello, 0, &hello).to_bytes().unwrap())
        .unwrap();
    (conn, decoder, agent_hello)
}

fn raw_next(conn: &mut StdUnixStream, decoder: &mut Decoder) -> Option<Frame> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            return Some(frame);
        }
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            return None;
        }
        decoder.feed(&buf[..n]);
    }
}

#[test]
fn unknown_requests_and_kinds_get_errors_and_the_connection_survives() {
    let Some(agent) = TestAgent::start(&[], None) else {
        println!("SKIP unknown_requests_and_kinds_get_errors: capsa-agent is not built");
        return;
    };
    let (mut conn, mut decoder, _) = raw_connect(&agent.socket, None);
    let send = |conn: &mut StdUnixStream, frame: Frame| {
        conn.write_all(&frame.to_bytes().unwrap()).unwrap();
    };
    send(
        &mut conn,
        Frame::new(
            Kind::Request,
            7,
            br#"{"type":"teleport","to":"mars"}"#.to_vec(),
        ),
    );
    let frame = raw_next(&mut conn, &mut decoder).unwrap();
    assert_eq!((frame.kind, frame.channel), (Kind::Response, 7));
    let Response::Error(body) = frame.parse().unwrap() else {
        panic!("expected an error response")
    };
    assert_eq!(body.code, ErrorCode::UnknownRequest);

    send(
        &mut conn,
        Frame::new(Kind::Request, 8, b"{not json".to_vec()),
    );
    let frame = raw_next(&mut conn, &mut decoder).unwrap();
    let Response::Error(body) = frame.parse().unwrap() else {
        panic!()
    };
    assert_eq!(body.code, ErrorCode::BadRequest);

    send(
        &mut conn,
        Frame::new(Kind::Unknown(99), 3, b"future".to_vec()),
    );
    let frame = raw_next(&mut conn, &mut decoder).unwrap();
    assert_eq!((frame.kind, frame.channel), (Kind::Error, 3));
    assert_eq!(
        frame.parse::<ErrorBody>().unwrap().code,
        ErrorCode::UnknownKind
    );

    send(&mut conn, Frame::json(Kind::Request, 9, &Request::Ping));
    let frame = raw_next(&mut conn, &mut decoder).unwrap();
    assert_eq!(frame.channel, 9);
    assert_eq!(
        frame.parse::<Response>().unwrap(),
        Response::Ok(Reply::Pong)
    );
}

#[test]
fn requests_before_hello_and_incompatible_hosts_are_refused() {
    let Some(agent) = TestAgent::start(&[], None) else {
        println!(
            "SKIP requests_before_hello_and_incompatible_hosts_are_refused: capsa-agent is not built"
        );
        return;
    };
    // A request before our Hello.
    let mut conn = StdUnixStream::connect(&agent.socket).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut decoder = Decoder::new();
    assert_eq!(raw_next(&mut conn, &mut decoder).unwrap().kind, Kind::Hello);
    conn.write_all(
        &Frame::json(Kind::Request, 1, &Request::Ping)
            .to_bytes()
            .unwrap(),
    )
    .unwrap();
    let frame = raw_next(&mut conn, &mut decoder).unwrap();
    let Response::Error(body) = frame.parse().unwrap() else {
        panic!()
    };
    assert_eq!(body.code, ErrorCode::HandshakeRequired);

    // A host from the far future that no longer speaks version 1.
    let mut future = Hello::new("capsa 99", &[]);
    future.version = 99;
    future.min_version = 50;
    let (mut conn, mut decoder, _) = raw_connect(&agent.socket, Some(future));
    let frame = raw_next(&mut conn, &mut decoder).unwrap();
    assert_eq!(frame.kind, Kind::Error);
    let body: ErrorBody = frame.parse().unwrap();
    assert_eq!(body.code, ErrorCode::Incompatible);
    assert!(
        body.message.contains("no common protocol version"),
        "{body}"
    );
    assert!(
        raw_next(&mut conn, &mut decoder).is_none(),
        "agent hangs up"
    );
}

#[tokio::test]
async fn authorized_keys_are_written_for_root_and_capsa() {
    let sysroot = scratch_dir();
    std::fs::create_dir_all(sysroot.join("etc")).unwrap();
    std::fs::write(
        sysroot.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ncapsa:x:1000:1000::/home/capsa:/bin/sh\n",
    )
    .unwrap();
    let sysroot_arg = sysroot.display().to_string();
    let agent = agent_or_skip!(
        "authorized_keys_are_written_for_root_and_capsa",
        &["--sysroot", &sysroot_arg]
    );
    let client = agent.client().await;
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq1 capsa@host".to_string();
    client.set_authorized_keys(vec![key.clone()]).await.unwrap();
    for home in ["root", "home/capsa"] {
        let path = sysroot.join(home).join(".ssh/authorized_keys");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{key}\n"));
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        if is_root() && home == "home/capsa" {
            assert_eq!(meta.uid(), 1000, "sshd wants the user to own it");
        }
    }
    let err = client
        .set_authorized_keys(vec!["two\nlines".into()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("one non-empty line"), "{err}");
    let _ = std::fs::remove_dir_all(&sysroot);
}

#[tokio::test]
async fn set_time_needs_the_privilege_to_set_the_clock() {
    if !is_root() {
        println!(
            "SKIP set_time_needs_the_privilege_to_set_the_clock: needs root to start the agent as nobody"
        );
        return;
    }
    // The success path sets the real clock: it runs in the VM tests. Here the agent runs
    // as nobody, so the request reaches clock_settime and is refused.
    let Some(agent) = TestAgent::start(&[], Some(65534)) else {
        println!("SKIP set_time_needs_the_privilege_to_set_the_clock: capsa-agent is not built");
        return;
    };
    let client = agent.client().await;
    let err = client
        .set_time(std::time::SystemTime::now())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PermissionDenied), "{err}");
    assert!(err.to_string().contains("set the clock"), "{err}");
    // Nor may it start processes as another user.
    let mut options = ExecOptions::new(["true"]);
    options.user = Some("root".into());
    let err = client.exec(options).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PermissionDenied), "{err}");
}

#[tokio::test]
async fn shutdown_outside_pid1_stops_the_agent() {
    let mut agent = agent_or_skip!("shutdown_outside_pid1_stops_the_agent");
    let client = agent.client().await;
    client.shutdown().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent still running after Shutdown"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn closing_the_connection_kills_its_processes() {
    let agent = agent_or_skip!("closing_the_connection_kills_its_processes");
    let marker = agent.dir.join("survived");
    let client = agent.client().await;
    let script = format!("sleep 1; touch {}", marker.display());
    let exec = client
        .exec(ExecOptions::new(["sh", "-c", &script]))
        .await
        .unwrap();
    let pid = exec.pid();
    drop(exec);
    drop(client);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!marker.exists(), "process {pid} outlived its connection");
    // The agent itself serves the next connection.
    agent.client().await.ping().await.unwrap();
}

#[tokio::test]
async fn many_concurrent_requests_on_one_connection() {
    let agent = agent_or_skip!("many_concurrent_requests_on_one_connection");
    let client = agent.client().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                client.ping().await.map(|_| ())
            } else {
                client.info().await.map(|_| ())
            }
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

/// A TCP echo server on loopback that answers each connection with `prefix` and then
/// echoes; returns its port.
fn echo_server(prefix: &'static [u8]) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let _ = conn.write_all(prefix);
                let mut buf = [0u8; 65536];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                // End of file from the client: end ours too.
                let _ = conn.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

#[tokio::test]
async fn connect_carries_tcp_both_ways_and_reports_refusals() {
    let agent = agent_or_skip!("connect_carries_tcp_both_ways_and_reports_refusals");
    let client = agent.client().await;
    assert!(client.negotiated().has(features::CONNECT));
    let port = echo_server(b"hello\n");

    // Two connections at once, one carrying 4 MiB (far beyond the credit window):
    // both complete, and neither's bytes reach the other.
    let (mut w1, mut r1) = client.connect_tcp("127.0.0.1", port).await.unwrap();
    let (mut w2, mut r2) = client.connect_tcp("localhost", port).await.unwrap();
    let big: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    let sender = {
        let big = big.clone();
        tokio::spawn(async move {
            w1.write_all(&big).await.unwrap();
            w1.close().unwrap();
        })
    };
    w2.write_all(b"second").await.unwrap();
    w2.close().unwrap();
    let got2 = r2.read_to_end().await.unwrap();
    assert_eq!(got2, b"hello\nsecond");
    let got1 = r1.read_to_end().await.unwrap();
    sender.await.unwrap();
    assert_eq!(&got1[..6], b"hello\n");
    assert!(got1[6..] == big[..], "4 MiB came back intact");

    // Nothing listens there: a typed error, at once, and the connection lives on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = closed.local_addr().unwrap().port();
    drop(closed);
    let e = client
        .connect_tcp("127.0.0.1", dead_port)
        .await
        .err()
        .expect("refused");
    assert_eq!(e.code(), Some(ErrorCode::ConnectionRefused), "{e}");
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{dead_port}")),
        "{e}"
    );
    client.ping().await.unwrap();
}

#[tokio::test]
async fn a_forwarded_host_port_reaches_the_guest_port_and_closes_with_its_forward() {
    use capsa_core::forward::TcpForward;
    let agent = agent_or_skip!("a_forwarded_host_port_reaches_the_guest_port");
    let client = agent.client().await;
    let guest_port = echo_server(b"from the guest\n");
    let fwd = TcpForward::start(
        client.clone(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1".into(),
        guest_port,
    )
    .await
    .unwrap();
    let local = fwd.local_addr();
    // Two host clients at once, each with its own answer (blocking clients on their
    // own threads: the forward's tasks run on this test's runtime).
    let talk = move |msg: &'static [u8]| {
        tokio::task::spawn_blocking(move || {
            let mut c = std::net::TcpStream::connect(local).unwrap();
            c.write_all(msg).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            got
        })
    };
    let (a, b) = (talk(b"one"), talk(b"two"));
    assert_eq!(a.await.unwrap(), b"from the guest\none");
    assert_eq!(b.await.unwrap(), b"from the guest\ntwo");

    // The same port busy on the host: a clear error naming it.
    let e = TcpForward::start(client.clone(), local, "127.0.0.1".into(), guest_port)
        .await
        .err()
        .expect("port in use");
    assert!(e.to_string().contains(&local.to_string()), "{e}");

    // Nothing listening in the guest: the host client's connection just closes.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    let fwd2 = TcpForward::start(
        client.clone(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1".into(),
        dead,
    )
    .await
    .unwrap();
    let addr = fwd2.local_addr();
    let n = tokio::task::spawn_blocking(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(n, 0);

    // Dropping the forward frees the host port.
    drop(fwd);
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::net::TcpListener::bind(local).expect("the host port is free again");
}
