//! Real pasta and slirp4netns against real network namespaces: a process holds a new
//! namespace (`unshare --net sleep`, optionally in its own user namespace), the helper is
//! attached to it with a TCP and a UDP port, a listener runs inside, and bytes travel
//! from the host's 127.0.0.1 to it (and back, for UDP, also through a port whose host
//! and container numbers differ). Then the teardown stops the helper. Each test says
//! SKIP and why when the machine cannot run it.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::files::{HostInfo, guest_address};
use super::ports::{assign_host_ports, parse_publish_all};
use super::*;

const CHILD_ENV: &str = "CAPSA_NET_TEST_CHILD";

fn missing(tools: &[&str]) -> Option<String> {
    let gone: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_in_path(t).is_none())
        .collect();
    (!gone.is_empty()).then(|| format!("{} not installed", gone.join(", ")))
}

/// An error with its sources, as the CLI prints it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A process in a new network namespace (and user namespace with `userns`).
struct Holder {
    child: Child,
    pid: i32,
    userns: bool,
}

impl Holder {
    fn spawn(userns: bool) -> Holder {
        let mut cmd = Command::new("unshare");
        if userns {
            cmd.args(["--user", "--map-root-user"]);
        }
        // Without --fork, unshare becomes sleep: the child's pid is the holder's.
        let child = cmd
            .args(["--net", "sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let pid = child.id() as i32;
        wait_for(&format!("process {pid} to be sleep"), || {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        Holder { child, pid, userns }
    }

    /// nsenter arguments that enter the holder's network namespace.
    fn nsenter(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        if self.userns {
            a.extend(["--preserve-credentials".into(), "-U".into()]);
        }
        a.extend(["-n".into(), "-t".into(), self.pid.to_string()]);
        a
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when something in `pid`'s namespace listens on `port` (TCP) or is bound to it
/// (UDP).
fn bound_in(pid: i32, proto: &str, port: u16) -> bool {
    let want = format!(":{port:04X}");
    [proto.to_string(), format!("{proto}6")].iter().any(|p| {
        fs::read_to_string(format!("/proc/{pid}/net/{p}"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(1).is_some_and(|a| a.ends_with(&want))
                    && (proto == "udp" || f.get(3) == Some(&"0A"))
            })
    })
}

fn gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|st| st == "Z" || st == "X"),
    }
}

/// A UDP echo server inside the namespace of `pid`, on a thread that entered it.
fn udp_echo(pid: i32, port: u16) -> mpsc::Receiver<Vec<u8>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (got_tx, got_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let ns = fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
        // SAFETY: setns on this thread only.
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", io::Error::last_os_error());
        let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 1500];
        let mut first = true;
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
            if first {
                let _ = got_tx.send(buf[..n].to_vec());
                first = false;
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    got_rx
}

/// Sends `payload` from `from` to `from:port` until an answer comes back from there;
/// returns it (empty when none came).
fn udp_exchange(from: &str, port: u16, payload: &[u8]) -> Vec<u8> {
    let s = UdpSocket::bind((from, 0)).unwrap();
    // Connected: only an answer from the published port counts.
    s.connect((from, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for _ in 0..20 {
        let _ = s.send(payload);
        let mut buf = [0u8; 1500];
        if let Ok(n) = s.recv(&mut buf) {
            return buf[..n].to_vec();
        }
    }
    Vec::new()
}

/// Attaches `helper` to a new namespace, checks TCP and UDP through published ports,
/// then that the helper exits with the namespace's process.
fn exercise(helper: Helper, userns: bool) {
    let mut holder = Holder::spawn(userns);
    let rundir = tempfile::tempdir().unwrap();
    let mut ports = parse_publish_all(&["127.0.0.1::80"]).unwrap();
    // A UDP port with the same number inside and out, and one with different numbers
    // (which pasta cannot answer through: capsa's forwarder serves it).
    let free_udp = || {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (udp_port, remapped, inner) = (free_udp(), free_udp(), free_udp());
    ports.push(ports::parse_publish(&format!("{udp_port}:{udp_port}/udp")).unwrap());
    ports.push(ports::parse_publish(&format!("127.0.0.1:{remapped}:{inner}/udp")).unwrap());
    assign_host_ports(&mut ports).unwrap();
    let tcp_port = ports[0].host_port;

    let proc = setup(helper, holder.pid, &ports, rundir.path())
        .unwrap_or_else(|e| panic!("{helper} setup: {}", chain(&e)));
    assert!(!gone(proc.pid), "{helper} is not running");
    eprintln!("{helper}: pid {}, tcp {tcp_port}, udp {udp_port}", proc.pid);

    // The container's address is the one the hosts file names.
    let ip = Command::new("nsenter")
        .args(holder.nsenter())
        .args(["busybox", "ip", "-4", "addr"])
        .output()
        .unwrap();
    let ip = String::from_utf8_lossy(&ip.stdout);
    if let Some(want) = guest_address(helper, &HostInfo::read()) {
        assert!(
            ip.contains(&format!("inet {want}/")),
            "{helper} address {want} not in:\n{ip}"
        );
    }

    // DNS through the helper's forwarder, the first nameserver of resolv.conf.
    let forwarder = match helper {
        Helper::Pasta => pasta::DNS_FORWARD,
        Helper::Slirp4netns => slirp::DNS_ADDR,
    };
    let lookup = |pre: &[String], server: Option<String>| {
        let out = Command::new("timeout")
            .arg("10")
            .args(pre)
            .args(["busybox", "nslookup", "example.com"])
            .args(server)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let answered = |out: &str| out.contains("NXDOMAIN") || out.contains("Name:");
    if answered(&lookup(&[], None)) {
        let mut pre = vec!["nsenter".to_string()];
        pre.extend(holder.nsenter());
        let out = lookup(&pre, Some(forwarder.to_string()));
        assert!(
            answered(&out),
            "no DNS answer through {helper}'s {forwarder}:\n{out}"
        );
    } else {
        eprintln!("SKIP: the host's own DNS does not answer, so the forwarder is not checked");
    }

    // TCP: busybox nc listens in the namespace, the host connects to 127.0.0.1.
    let mut nc = Command::new("nsenter")
        .args(holder.nsenter())
        .args(["busybox", "nc", "-l", "-p", "80"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("nc to listen", || bound_in(holder.pid, "tcp", 80));
    let payload = b"hello through the published tcp port\n";
    let mut s = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
    s.write_all(payload).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    nc.stdout.take().unwrap().read_to_end(&mut got).unwrap();
    let _ = nc.wait();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(payload)
    );

    // UDP: echo servers in the namespace; answers must come back to the host's
    // loopback, from the published port.
    let got = udp_echo(holder.pid, udp_port);
    let payload = b"hello through the published udp port";
    let arrived = udp_exchange("127.0.0.1", udp_port, payload);
    assert_eq!(got.recv_timeout(Duration::from_secs(5)).unwrap(), payload);
    assert_eq!(arrived, payload, "no UDP answer came back through {helper}");
    let got = udp_echo(holder.pid, inner);
    let payload = b"hello through a remapped udp port";
    let arrived = udp_exchange("127.0.0.1", remapped, payload);
    assert_eq!(got.recv_timeout(Duration::from_secs(5)).unwrap(), payload);
    assert_eq!(
        arrived, payload,
        "no UDP answer came back through {helper} from {remapped} (container port {inner})"
    );

    // The namespace's process exiting is not enough: the teardown stops the helper, and
    // the forwarder with it (its host port is free again).
    holder.kill();
    teardown(&proc);
    wait_for(&format!("{helper} (pid {}) to stop", proc.pid), || {
        gone(proc.pid)
    });
    wait_for(&format!("host port {remapped} to be free"), || {
        UdpSocket::bind(("127.0.0.1", remapped)).is_ok()
    });
}

fn root_checks(tools: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("needs root (the rootless case runs as capsa-test)".into());
    }
    missing(tools)
}

#[test]
fn pasta_publishes_tcp_and_udp_as_root() {
    if let Some(why) = root_checks(&["pasta", "unshare", "nsenter", "busybox"]) {
        eprintln!("SKIP: {why}");
        return;
    }
    exercise(Helper::Pasta, false);
}

#[test]
fn pasta_publishes_into_a_user_namespace() {
    if let Some(why) = root_checks(&["pasta", "unshare", "nsenter", "busybox"]) {
        eprintln!("SKIP: {why}");
        return;
    }
    exercise(Helper::Pasta, true);
}

#[test]
fn slirp4netns_publishes_tcp_and_udp_as_root() {
    if let Some(why) = root_checks(&["slirp4netns", "unshare", "nsenter", "busybox"]) {
        eprintln!("SKIP: {why}");
        return;
    }
    exercise(Helper::Slirp4netns, false);
}

#[test]
fn slirp4netns_publishes_into_a_user_namespace() {
    if let Some(why) = root_checks(&["slirp4netns", "unshare", "nsenter", "busybox"]) {
        eprintln!("SKIP: {why}");
        return;
    }
    exercise(Helper::Slirp4netns, true);
}

/// Runs `exercise` as the unprivileged `capsa-test`, as root of a user namespace of its
/// own, the way rootless capsa runs.
fn rootless(helper: Helper) {
    if let Some(why) = root_checks(&[helper.binary(), "unshare", "nsenter", "busybox", "runuser"]) {
        eprintln!("SKIP: {why}");
        return;
    }
    if !fs::read_to_string("/etc/passwd")
        .is_ok_and(|p| p.lines().any(|l| l.starts_with("capsa-test:")))
    {
        eprintln!("SKIP: no user capsa-test");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    // The test binary may live where capsa-test cannot read; run a copy.
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("engine-tests");
    fs::copy(&exe, &copy).unwrap();
    let out = Command::new("runuser")
        .args(["-u", "capsa-test", "--", "env"])
        .arg(format!(
            "PATH={}",
            std::env::var("PATH").unwrap_or_default()
        ))
        .arg(format!("{CHILD_ENV}={helper}"))
        .args(["unshare", "--user", "--map-root-user"])
        .arg(&copy)
        .args([
            "network::tests::rootless_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "rootless {helper} failed:\n{text}");
    assert!(
        text.contains("rootless child: ok"),
        "the child did not run:\n{text}"
    );
}

#[test]
fn pasta_publishes_rootless_as_capsa_test() {
    rootless(Helper::Pasta);
}

#[test]
fn slirp4netns_publishes_rootless_as_capsa_test() {
    rootless(Helper::Slirp4netns);
}

/// The rootless half of the tests above; does nothing unless they start it.
#[test]
#[ignore = "run by the rootless tests as capsa-test"]
fn rootless_child() {
    let Ok(helper) = std::env::var(CHILD_ENV) else {
        return;
    };
    let helper: Helper = helper.parse().unwrap();
    assert!(!pasta::real_root(), "expected a user namespace");
    exercise(helper, false);
    eprintln!("rootless child: ok");
}

#[test]
fn teardown_stops_the_helper() {
    if let Some(why) = root_checks(&["pasta", "slirp4netns", "unshare"]) {
        eprintln!("SKIP: {why}");
        return;
    }
    for helper in [Helper::Pasta, Helper::Slirp4netns] {
        let holder = Holder::spawn(false);
        let rundir = tempfile::tempdir().unwrap();
        let proc = setup(helper, holder.pid, &[], rundir.path()).unwrap();
        assert!(!gone(proc.pid));
        teardown(&proc);
        wait_for(&format!("{helper} to stop"), || gone(proc.pid));
        assert!(!gone(holder.pid), "the container must survive");
        // A record that outlived its helper: nothing happens.
        teardown(&proc);
    }
}

#[test]
fn helper_errors_name_the_tool_and_give_a_hint() {
    if let Some(why) = root_checks(&["pasta", "slirp4netns", "unshare"]) {
        eprintln!("SKIP: {why}");
        return;
    }
    // A host port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let ports = parse_publish_all(&[format!("127.0.0.1:{port}:80")]).unwrap();
    for helper in [Helper::Pasta, Helper::Slirp4netns] {
        let holder = Holder::spawn(false);
        let rundir = tempfile::tempdir().unwrap();
        let e = setup(helper, holder.pid, &ports, rundir.path())
            .expect_err("the port is taken")
            .to_string();
        eprintln!("{e}");
        assert!(e.starts_with(&format!("{helper} failed: ")), "{e}");
        assert!(
            e.contains("(hint: is another program using that host port?"),
            "{e}"
        );
        if helper == Helper::Pasta {
            assert!(
                e.contains(&format!(
                    "Failed to bind any port for '-t 127.0.0.1/{port}:80'"
                )),
                "{e}"
            );
        }
    }
    // Our own namespace is refused before anything runs.
    let me = std::process::id() as i32;
    let e = setup(Helper::Pasta, me, &[], Path::new("/nonexistent")).unwrap_err();
    assert!(matches!(e, NetworkError::SameNetns(_)), "{e}");
}

/// The real sequence: capsa makes the namespace, the helper starts on it while crun
/// creates a container that joins it, the generated files are mounted, and the
/// teardown stops the helper and removes the namespace.
#[test]
fn crun_container_gets_network_files_and_ports() {
    if let Some(why) = root_checks(&["crun"]) {
        eprintln!("SKIP: {why}");
        return;
    }
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        eprintln!("SKIP: busybox-static is not installed");
        return;
    };
    for helper in [Helper::Pasta, Helper::Slirp4netns] {
        if find_in_path(helper.binary()).is_none() {
            eprintln!("SKIP: {helper} is not installed");
            continue;
        }
        let t = tempfile::tempdir().unwrap();
        let bundle = t.path().join("bundle");
        fs::create_dir_all(bundle.join("rootfs/bin")).unwrap();
        fs::create_dir_all(bundle.join("rootfs/etc")).unwrap();
        fs::copy(busybox, bundle.join("rootfs/bin/busybox")).unwrap();
        let id = format!("capsa-net-test-{}-{helper}", std::process::id());
        let hostname = default_hostname(&NetworkMode::default(), "cafe0123abcdef");
        let opts =
            files::FileOptions::from_flags(&hostname, "net_test", &["db:10.1.2.3"], &[], &[], &[])
                .unwrap();
        let mode = NetworkMode::Private(Some(helper));
        let mounts = files::write(&t.path().join("net"), &mode, None, &opts).unwrap();
        let mut o = crate::container::spec::SpecOptions::new(
            [
                "/bin/busybox",
                "sh",
                "-c",
                "cat /etc/hosts /etc/resolv.conf /etc/hostname; echo ---; busybox nc -l -p 80",
            ]
            .map(String::from)
            .to_vec(),
        );
        o.hostname = hostname.clone();
        let rundir = t.path().join("run");
        fs::create_dir_all(&rundir).unwrap();
        let (ns_path, ns) = create_netns(&rundir).unwrap();
        assert_eq!(netns_file(&rundir).as_deref(), Some(ns_path.as_path()));
        let mut ports = parse_publish_all(&["127.0.0.1::80"]).unwrap();
        assign_host_ports(&mut ports).unwrap();
        let starting = start(helper, ns.as_fd(), &ports, &rundir)
            .unwrap_or_else(|e| panic!("{helper} start: {}", chain(&e)));
        o.network = NetworkNs::Path(ns_path.to_string_lossy().into_owned());
        o.mounts = mounts.iter().map(|m| m.oci()).collect();
        let spec = crate::container::spec::build(&o, "rootfs").unwrap();
        fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        let state = t.path().join("state");
        let crun = |args: &[&str]| {
            let mut c = Command::new("crun");
            c.arg("--root").arg(&state).args(args);
            c
        };
        let mut create = crun(&["create", "--bundle"])
            .arg(&bundle)
            .arg("--pid-file")
            .arg(bundle.join("pid"))
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // A file: the container keeps crun's stdio, a pipe would never end.
            .stderr(fs::File::create(t.path().join("crun.err")).unwrap())
            .spawn()
            .unwrap();
        // The container keeps crun's stdout: read it on a thread.
        let mut stdout = create.stdout.take().unwrap();
        let output = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let status = create.wait().unwrap();
        let err = fs::read_to_string(t.path().join("crun.err")).unwrap_or_default();
        assert!(status.success(), "crun create: {err}");
        let pid: i32 = fs::read_to_string(bundle.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let net = starting
            .finish()
            .unwrap_or_else(|e| panic!("{helper} start: {}", chain(&e)));
        let started = crun(&["start", &id]).status().unwrap();
        assert!(started.success());
        wait_for("nc in the container", || bound_in(pid, "tcp", 80));
        let payload = "bytes for the container\n";
        let mut s = TcpStream::connect(("127.0.0.1", ports[0].host_port)).unwrap();
        s.write_all(payload.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let out = output.join().unwrap();
        let (files_text, received) = out.split_once("---\n").unwrap_or((&out, ""));
        assert_eq!(received, payload, "{helper}: {out}");
        assert!(files_text.starts_with("10.1.2.3\tdb\n"), "{files_text}");
        let own = files::guest_address(helper, &HostInfo::read()).unwrap();
        assert!(
            files_text.contains(&format!("{own}\t{hostname} net_test\n")),
            "{files_text}"
        );
        assert!(
            files_text.ends_with(&format!("{hostname}\n")),
            "{files_text}"
        );
        let _ = crun(&["delete", "--force", &id]).status();
        teardown(&net);
        remove_netns(&rundir);
        wait_for(&format!("{helper} to stop"), || gone(net.pid));
        assert!(netns_file(&rundir).is_none());
        assert!(!ns_path.exists(), "{} is left", ns_path.display());
    }
}
