//! slirp4netns: the fallback when pasta is missing. The container gets 10.0.2.100 on
//! `tap0`, the gateway is 10.0.2.2 and slirp's DNS forwarder 10.0.2.3. Ports are added
//! through its API socket (`add_hostfwd`, IPv4 host addresses only), as Podman's
//! `port_handler=slirp4netns` does. It runs until the container's teardown stops it
//! (the namespace, made by capsa, outlives the container's processes; see `netns`).

use std::fs;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Helper, NetworkError, PortMapping, detach, find_in_path, stderr_text};

pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

const NETNS_FD: i32 = 3;
const READY_FD: i32 = 4;
const SOCKET: &str = "slirp4netns.sock";
const LOG: &str = "slirp4netns.log";

/// slirp4netns's arguments (after argv[0]), with the sandbox and seccomp filter Podman
/// turns on; the API socket is relative to its working directory, the container's
/// rundir, which keeps it clear of the 108-byte limit.
pub(crate) fn args() -> Vec<String> {
    vec![
        "--configure".into(),
        "--mtu=65520".into(),
        "--disable-host-loopback".into(),
        "--enable-sandbox".into(),
        "--enable-seccomp".into(),
        format!("--ready-fd={READY_FD}"),
        "--api-socket".into(),
        SOCKET.into(),
        "--netns-type=path".into(),
        format!("/proc/self/fd/{NETNS_FD}"),
        "tap0".into(),
    ]
}

/// One `add_hostfwd` request per port.
pub(crate) fn hostfwd_requests(ports: &[PortMapping]) -> Vec<Value> {
    let mut out = Vec::new();
    for m in ports {
        let host_addr = if m.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &m.host_ip
        };
        for (h, c) in m.pairs() {
            out.push(json!({
                "execute": "add_hostfwd",
                "arguments": {
                    "proto": m.protocol.as_str(),
                    "host_addr": host_addr,
                    "host_port": h,
                    "guest_addr": GUEST_ADDR.to_string(),
                    "guest_port": c,
                }
            }));
        }
    }
    out
}

fn hint_for(detail: &str) -> String {
    if detail.contains("hostfwd") || detail.contains("in use") {
        "is another program using that host port? `ss -lntup` shows who listens".into()
    } else if detail.contains("tun") {
        "slirp4netns needs /dev/net/tun (mode 0666 for rootless use)".into()
    } else {
        "see the log named above; pasta (the passt package) is the preferred helper".into()
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut p = [0; 2];
    // SAFETY: p has room for two descriptors.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just created and are ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

/// Sends one API request and returns the answer.
fn request(dir: BorrowedFd<'_>, req: &Value) -> io::Result<Value> {
    let path = format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd());
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(req.to_string().as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    serde_json::from_str(&answer).map_err(|e| io::Error::other(format!("{e} in {answer:?}")))
}

/// slirp4netns while it configures the namespace; [`Starting::finish`] waits for it and
/// publishes the ports.
pub(crate) struct Starting {
    pid: i32,
    ready: OwnedFd,
    dir: fs::File,
    log_path: PathBuf,
    ports: Vec<PortMapping>,
}

/// Starts slirp4netns for `netns` and returns at once.
pub(crate) fn spawn(
    netns: BorrowedFd<'_>,
    ports: &[PortMapping],
    rundir: &Path,
) -> Result<Starting, NetworkError> {
    let helper = Helper::Slirp4netns;
    let spawn_err = |source| NetworkError::Spawn { helper, source };
    let path = find_in_path(helper.binary()).ok_or(NetworkError::NotFound(helper))?;
    let dir = fs::File::open(rundir).map_err(spawn_err)?;
    let log_path = rundir.join(LOG);
    let log = fs::File::create(&log_path).map_err(spawn_err)?;
    let _ = fs::remove_file(rundir.join(SOCKET));
    let (ready_r, ready_w) = pipe().map_err(spawn_err)?;
    let argv0 = std::ffi::OsString::from(helper.binary());
    let args = args();
    let mut argv = vec![argv0.as_os_str()];
    argv.extend(args.iter().map(std::ffi::OsStr::new));
    tracing::debug!(?argv, "starting slirp4netns");
    let pid = detach::spawn_detached(&detach::Exec {
        path: &path,
        argv,
        env: Vec::new(),
        fds: vec![
            (log.as_fd(), 1),
            (log.as_fd(), 2),
            (netns, NETNS_FD),
            (ready_w.as_fd(), READY_FD),
        ],
        cwd: Some(dir.as_fd()),
    })
    .map_err(spawn_err)?;
    Ok(Starting {
        pid,
        ready: ready_r,
        dir,
        log_path,
        ports: ports.to_vec(),
    })
}

impl Starting {
    /// Waits until the tap device is configured and the API socket listens, then
    /// publishes the ports; returns slirp4netns's pid.
    pub(crate) fn finish(self) -> Result<i32, NetworkError> {
        let helper = Helper::Slirp4netns;
        let Starting {
            pid,
            ready,
            dir,
            log_path,
            ports,
        } = self;
        let stop = || {
            if let Ok(fd) = detach::pidfd_open(pid) {
                let _ = detach::pidfd_signal(fd.as_fd(), libc::SIGKILL);
            }
        };
        let failed = |detail: String| {
            stop();
            let log = fs::read(&log_path).unwrap_or_default();
            let detail = format!(
                "{detail}: {} (log: {})",
                stderr_text(&log),
                log_path.display()
            );
            NetworkError::Failed {
                helper,
                hint: hint_for(&detail),
                detail,
            }
        };
        if !detach::wait_readable(ready.as_fd(), 10_000).unwrap_or(false) {
            return Err(failed("not ready after 10 seconds".into()));
        }
        let mut ready = fs::File::from(ready);
        let mut b = [0u8; 1];
        if !matches!(ready.read(&mut b), Ok(1) if b[0] == b'1') {
            return Err(failed("it exited while starting".into()));
        }
        for req in hostfwd_requests(&ports) {
            let answer = request(dir.as_fd(), &req)
                .map_err(|e| failed(format!("API request {req}: {e}")))?;
            if let Some(err) = answer.get("error") {
                let desc = err
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                let a = &req["arguments"];
                return Err(failed(format!(
                    "publishing host port {}:{}/{}: {desc}",
                    a["host_addr"].as_str().unwrap_or_default(),
                    a["host_port"],
                    a["proto"].as_str().unwrap_or_default()
                )));
            }
        }
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ports::parse_publish_all;

    #[test]
    fn command_line() {
        assert_eq!(
            args().join(" "),
            "--configure --mtu=65520 --disable-host-loopback --enable-sandbox --enable-seccomp --ready-fd=4 --api-socket slirp4netns.sock --netns-type=path /proc/self/fd/3 tap0"
        );
    }

    #[test]
    fn api_requests() {
        let ports = parse_publish_all(&["8080-8081:80-81", "127.0.0.1:5353:53/udp"]).unwrap();
        let got: Vec<String> = hostfwd_requests(&ports)
            .iter()
            .map(Value::to_string)
            .collect();
        assert_eq!(
            got,
            [
                r#"{"arguments":{"guest_addr":"10.0.2.100","guest_port":80,"host_addr":"0.0.0.0","host_port":8080,"proto":"tcp"},"execute":"add_hostfwd"}"#,
                r#"{"arguments":{"guest_addr":"10.0.2.100","guest_port":81,"host_addr":"0.0.0.0","host_port":8081,"proto":"tcp"},"execute":"add_hostfwd"}"#,
                r#"{"arguments":{"guest_addr":"10.0.2.100","guest_port":53,"host_addr":"127.0.0.1","host_port":5353,"proto":"udp"},"execute":"add_hostfwd"}"#,
            ]
        );
    }
}
