//! The SSH client (`capsa_core::ssh`) and the SSH transport against a real server:
//! Debian's dropbear on 127.0.0.1 with its own host key, and an authorized_keys for a key
//! made the way `machine init` makes it. The transport test runs the real capsa-agent
//! (`--listen stdio`) behind it.
//!
//! dropbear reads authorized_keys from the home directory in passwd, not from $HOME, so
//! the server runs in a private mount namespace with a test folder bound over root's
//! home: that needs root, and the tests skip without it.

mod common;
use common::agent_binary;

use capsa_core::ssh::{Session, SshError, SshTarget, Stdio, known_host_path};
use capsa_core::transport::{Client, ExecOptions, SshTransport};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio as ProcStdio};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn on_path(bin: &str) -> bool {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(bin).is_file())
}

/// Why the dropbear server cannot run here, if it cannot.
fn dropbear_missing() -> Option<&'static str> {
    if !on_path("dropbear") || !on_path("dropbearkey") {
        return Some("dropbear is not installed (Debian: apt-get install dropbear-bin)");
    }
    if !is_root() {
        return Some("the dropbear test server needs root (a mount namespace over root's home)");
    }
    if !on_path("unshare") {
        return Some("unshare (util-linux) is not installed");
    }
    None
}

macro_rules! dropbear_or_skip {
    ($name:expr) => {
        match dropbear_missing() {
            Some(reason) => {
                println!("SKIP {}: {reason}", $name);
                return;
            }
            None => Dropbear::start(),
        }
    };
}

/// An ed25519 pair in OpenSSH format, as `machine init` makes it (sshkey.rs).
fn make_key(path: &Path) -> String {
    let key =
        ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .unwrap();
    let text = key.to_openssh(ssh_key::LineEnding::LF).unwrap();
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap();
    key.public_key().to_openssh().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Dropbear {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Dropbear {
    fn start() -> Dropbear {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::set_permissions(home.join(".ssh"), PermissionsExt::from_mode(0o700)).unwrap();
        let public = make_key(&dir.path().join("id_ed25519"));
        std::fs::write(home.join(".ssh/authorized_keys"), format!("{public}\n")).unwrap();
        let hostkey = dir.path().join("hostkey");
        let status = Command::new("dropbearkey")
            .args(["-t", "ed25519", "-f"])
            .arg(&hostkey)
            .stdout(ProcStdio::null())
            .stderr(ProcStdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "dropbearkey failed");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("dropbear.log")).unwrap();
        // unshare -m makes mounts private, so the bind is seen by this server only.
        let child = Command::new("unshare")
            .args(["-m", "sh", "-c"])
            .arg(r#"mount --bind "$1" ~root && exec dropbear -r "$2" -p "127.0.0.1:$3" -F -E -s -P "$4""#)
            .arg("sh")
            .arg(&home)
            .arg(&hostkey)
            .arg(port.to_string())
            .arg(dir.path().join("dropbear.pid"))
            .stdin(ProcStdio::null())
            .stdout(ProcStdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Dropbear { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dropbear did not listen on port {port}: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dropbear.log")).unwrap_or_default()
    }

    fn target(&self) -> SshTarget {
        SshTarget {
            machine: "ssh-test".into(),
            host: "127.0.0.1".into(),
            port: self.port,
            user: "root".into(),
            identity: self.dir.path().join("id_ed25519"),
            known_host: known_host_path(self.dir.path()),
            timeout: Duration::from_secs(20),
        }
    }

    async fn session(&self) -> Session {
        match Session::connect(&self.target()).await {
            Ok(s) => s,
            Err(e) => panic!("{e}\nhint: {}\ndropbear: {}", e.hint(), self.log()),
        }
    }
}

impl Drop for Dropbear {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(session: &Session, command: &str, stdin: Vec<u8>) -> Output {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let code = session
        .run(
            Some(command),
            Stdio {
                stdin: std::io::Cursor::new(stdin),
                stdout: &mut stdout,
                stderr: &mut stderr,
                tty: None,
                resize: None,
            },
        )
        .await
        .unwrap();
    Output {
        code,
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

#[tokio::test]
async fn command_output_and_exit_status() {
    let server = dropbear_or_skip!("command_output_and_exit_status");
    let session = server.session().await;
    let out = run(&session, "echo out; echo err >&2; exit 7", Vec::new()).await;
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (7, "out\n", "err\n")
    );
    // A second command on the same connection.
    assert_eq!(run(&session, "true", Vec::new()).await.code, 0);
    // Killed by a signal: 128+N, as a shell reports it.
    assert_eq!(run(&session, "kill -TERM $$", Vec::new()).await.code, 143);
    session.close().await;
}

#[tokio::test]
async fn stdin_is_piped_and_ends() {
    let server = dropbear_or_skip!("stdin_is_piped_and_ends");
    let session = server.session().await;
    let out = run(&session, "tr a-z A-Z", b"hello\n".to_vec()).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, "HELLO\n"));
    // Several windows' worth each way: stdin and stdout both need credit back.
    let bulk: Vec<u8> = (0..4 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let out = run(&session, "cat", bulk.clone()).await;
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.as_bytes() == bulk,
        "cat gave {} bytes back",
        out.stdout.len()
    );
}

#[tokio::test]
async fn the_host_key_is_pinned_and_a_changed_one_refused() {
    let server = dropbear_or_skip!("the_host_key_is_pinned_and_a_changed_one_refused");
    let target = server.target();
    server.session().await.close().await;
    let pinned = std::fs::read_to_string(&target.known_host).unwrap();
    assert!(pinned.starts_with("ssh-ed25519 "), "{pinned}");
    server.session().await.close().await;
    // Another key pinned: as if another server now answered on that port.
    let other = make_key(&server.dir.path().join("other"));
    std::fs::write(&target.known_host, format!("{other}\n")).unwrap();
    let Err(e) = Session::connect(&target).await else {
        panic!("a changed host key was accepted");
    };
    assert!(matches!(e, SshError::HostKeyChanged { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("\"ssh-test\"") && msg.contains(&target.addr()),
        "{msg}"
    );
    assert!(
        e.hint().contains(&target.known_host.display().to_string()),
        "{}",
        e.hint()
    );
}

#[tokio::test]
async fn a_key_the_guest_does_not_know_is_refused() {
    let server = dropbear_or_skip!("a_key_the_guest_does_not_know_is_refused");
    let mut target = server.target();
    target.identity = server.dir.path().join("stranger");
    make_key(&target.identity);
    let Err(e) = Session::connect(&target).await else {
        panic!("an unknown key was accepted");
    };
    assert!(matches!(e, SshError::Rejected { .. }), "{e}");
    assert!(
        e.to_string().contains("stranger") && e.to_string().contains("\"root\""),
        "{e}"
    );
    assert!(e.hint().contains("capsa machine start"), "{}", e.hint());
}

fn unreachable_target(port: u16, timeout: Duration) -> (tempfile::TempDir, SshTarget) {
    let dir = tempfile::tempdir().unwrap();
    make_key(&dir.path().join("id_ed25519"));
    let target = SshTarget {
        machine: "ssh-test".into(),
        host: "127.0.0.1".into(),
        port,
        user: "root".into(),
        identity: dir.path().join("id_ed25519"),
        known_host: known_host_path(dir.path()),
        timeout,
    };
    (dir, target)
}

#[tokio::test]
async fn nothing_listening_fails_within_the_timeout_with_the_reason() {
    // No server needed: a closed port (retried until the timeout, as a booting guest's
    // is, and then reported as refused), then one that accepts and never speaks.
    let (_dir, target) = unreachable_target(free_port(), Duration::from_secs(1));
    let started = Instant::now();
    let Err(e) = Session::connect(&target).await else {
        panic!("connected to nothing");
    };
    assert!(matches!(e, SshError::Connect { .. }), "{e}");
    assert!(e.to_string().contains(&target.addr()), "{e}");
    assert!(e.hint().contains("capsa machine start"), "{}", e.hint());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (_dir, target) = unreachable_target(port, Duration::from_millis(800));
    let started = Instant::now();
    let Err(e) = Session::connect(&target).await else {
        panic!("a silent server let us in");
    };
    assert!(matches!(e, SshError::Timeout { .. }), "{e}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn the_ssh_transport_carries_the_protocol_to_the_agent() {
    let name = "the_ssh_transport_carries_the_protocol_to_the_agent";
    let Some(agent) = agent_binary() else {
        println!("SKIP {name}: capsa-agent is not built (cargo build -p capsa-agent)");
        return;
    };
    let server = dropbear_or_skip!(name);
    let mut transport = SshTransport::new(server.target());
    transport.command = format!("{} --listen stdio", agent.display());
    assert_eq!(
        capsa_core::transport::Transport::describe(&transport),
        format!("ssh root@127.0.0.1:{}", server.port)
    );
    let client = match Client::connect(&transport, Default::default()).await {
        Ok(c) => c,
        Err(e) => panic!("{e}\ndropbear: {}", server.log()),
    };
    assert!(client.agent_hello().software.starts_with("capsa-agent "));
    client.ping().await.unwrap();
    let mut exec = client
        .exec(ExecOptions::new(["sh", "-c", "echo over ssh; exit 4"]))
        .await
        .unwrap();
    let out = exec.stdout.as_mut().unwrap().read_to_end().await.unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "over ssh\n");
    assert_eq!(exec.wait().await.unwrap().code, Some(4));
    // A second connection gets its own agent.
    let second = Client::connect(&transport, Default::default())
        .await
        .unwrap();
    second.ping().await.unwrap();
    drop(second);
    client.ping().await.unwrap();
}
