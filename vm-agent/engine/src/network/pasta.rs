//! pasta (from passt): a tap device in the container's namespace that copies the host's
//! addresses and routes, with published ports bound on the host and spliced into the
//! namespace.
//!
//! What the version in Debian 12 (passt 0.0~git20230309) does, measured:
//! - it daemonizes once the namespace is configured and the ports are bound; its exit
//!   status and stderr before that tell whether it worked, `--pid` names the daemon;
//! - as real root it drops to `nobody` (and cannot enter a root-owned namespace) unless
//!   given `--runas 0`; inside a user namespace it keeps uid 0;
//! - it drops its capabilities before opening a `/proc/PID/ns/net` path, which then
//!   fails its ptrace check, so it gets our open descriptor as `/proc/self/fd/3`;
//! - an `-t` spec with a range fails only when no port of it could be bound, so each
//!   port gets its own spec (any busy port is an error);
//! - it quits when a namespace file given with `--netns` is deleted, never when the
//!   namespace's processes exit, and it keeps the namespace alive itself: capsa stops
//!   it in the container's teardown;
//! - no `--map-guest-addr`, no `--map-host-loopback`: with `--no-map-gw` (as Podman
//!   passes it) the container cannot reach the host's loopback;
//! - UDP replies to a published port whose host and container numbers differ are
//!   lost: the reply leaves from the container's port number (or not at all), with any
//!   `-u` form (`H:C`, `ADDR/H:C`) and any client address. Those ports go through
//!   capsa's own forwarder instead (see `udpfwd`).

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{Helper, NetworkError, PortMapping, Protocol, stderr_text};

/// The address in the container that pasta answers DNS queries on, forwarding them to
/// the host's first resolver (Podman uses the same one).
pub const DNS_FORWARD: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The descriptor number the namespace gets in pasta.
const NETNS_FD: i32 = 3;

/// `-t`/`-u` specs: one per port, `[addr/]host:container`.
fn port_specs(ports: &[PortMapping], protocol: Protocol) -> Vec<String> {
    let mut out = Vec::new();
    for m in ports.iter().filter(|m| m.protocol == protocol) {
        for (h, c) in m.pairs() {
            if m.host_ip.is_empty() {
                out.push(format!("{h}:{c}"));
            } else {
                out.push(format!("{}/{h}:{c}", m.host_ip));
            }
        }
    }
    if out.is_empty() {
        out.push("none".into());
    }
    out
}

/// pasta's arguments. `real_root`: running as uid 0 of the initial user namespace.
pub(crate) fn args(ports: &[PortMapping], pid_file: &Path, real_root: bool) -> Vec<String> {
    let mut a: Vec<String> = vec!["--config-net".into(), "--quiet".into()];
    if real_root {
        a.extend(["--runas".into(), "0".into()]);
    }
    a.extend(["--pid".into(), pid_file.to_string_lossy().into_owned()]);
    // No forwarding from the container to the host's ports, as Podman sets it up.
    a.extend(["-T", "none", "-U", "none", "--no-map-gw"].map(String::from));
    a.extend(["--dns-forward".into(), DNS_FORWARD.to_string()]);
    for spec in port_specs(ports, Protocol::Tcp) {
        a.extend(["-t".into(), spec]);
    }
    for spec in port_specs(ports, Protocol::Udp) {
        a.extend(["-u".into(), spec]);
    }
    a.extend(["--netns".into(), format!("/proc/self/fd/{NETNS_FD}")]);
    a
}

/// True when running as uid 0 of the initial user namespace.
pub(crate) fn real_root() -> bool {
    rustix::process::geteuid().is_root()
        && fs::read_to_string("/proc/self/uid_map")
            .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

fn hint_for(detail: &str) -> String {
    if detail.contains("bind") {
        "is another program using that host port? `ss -lntup` shows who listens".into()
    } else if detail.contains("tun") {
        "pasta needs /dev/net/tun (mode 0666 for rootless use)".into()
    } else if detail.contains("routable") || detail.contains("not usable") {
        "pasta copies the host's addresses and routes, so the host needs a default route; slirp4netns does not (CAPSA_NETWORK_CMD=slirp4netns)".into()
    } else {
        "run the same pasta command with --debug instead of --quiet to see more; slirp4netns is the fallback (CAPSA_NETWORK_CMD=slirp4netns)".into()
    }
}

/// pasta while it configures the namespace and binds the ports; [`Starting::finish`]
/// waits for it.
pub(crate) struct Starting {
    child: Child,
    pid_file: PathBuf,
}

/// Starts pasta for the namespace `netns` and returns at once, so the runtime can
/// create the container meanwhile.
pub(crate) fn spawn(
    netns: BorrowedFd<'_>,
    ports: &[PortMapping],
    rundir: &Path,
) -> Result<Starting, NetworkError> {
    let helper = Helper::Pasta;
    let pid_file = rundir.join("pasta.pid");
    let _ = fs::remove_file(&pid_file);
    let mut cmd = Command::new(helper.binary());
    cmd.args(args(ports, &pid_file, real_root()))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let fd = netns.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == NETNS_FD {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, NETNS_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    tracing::debug!(?cmd, "starting pasta");
    let child = cmd.spawn().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => NetworkError::NotFound(helper),
        _ => NetworkError::Spawn { helper, source },
    })?;
    Ok(Starting { child, pid_file })
}

impl Starting {
    /// Waits until pasta has daemonized (the namespace configured, the ports bound);
    /// returns the daemon's pid.
    pub(crate) fn finish(self) -> Result<i32, NetworkError> {
        let helper = Helper::Pasta;
        let failed = |detail: String| NetworkError::Failed {
            helper,
            hint: hint_for(&detail),
            detail,
        };
        let out = self
            .child
            .wait_with_output()
            .map_err(|source| NetworkError::Spawn { helper, source })?;
        if !out.status.success() {
            return Err(failed(format!(
                "{}: {}",
                out.status,
                stderr_text(&out.stderr)
            )));
        }
        fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .ok_or_else(|| failed(format!("it wrote no pid to {}", self.pid_file.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ports::parse_publish_all;

    #[test]
    fn command_lines() {
        let pid = Path::new("/run/c/pasta.pid");
        let none: &[&str] = &[];
        let cases: &[(&[&str], bool, &str)] = &[
            (
                none,
                false,
                "--config-net --quiet --pid /run/c/pasta.pid -T none -U none --no-map-gw --dns-forward 169.254.1.1 -t none -u none --netns /proc/self/fd/3",
            ),
            (
                &["8080:80", "127.0.0.1:5353:53/udp"],
                true,
                "--config-net --quiet --runas 0 --pid /run/c/pasta.pid -T none -U none --no-map-gw --dns-forward 169.254.1.1 -t 8080:80 -u 127.0.0.1/5353:53 --netns /proc/self/fd/3",
            ),
            (
                &["[::1]:8000-8002:80-82", "9000:90/udp", "0.0.0.0:7000:70"],
                false,
                "--config-net --quiet --pid /run/c/pasta.pid -T none -U none --no-map-gw --dns-forward 169.254.1.1 -t ::1/8000:80 -t ::1/8001:81 -t ::1/8002:82 -t 0.0.0.0/7000:70 -u 9000:90 --netns /proc/self/fd/3",
            ),
        ];
        for (flags, root, want) in cases {
            let ports = parse_publish_all(flags).unwrap();
            assert_eq!(args(&ports, pid, *root).join(" "), *want, "{flags:?}");
        }
    }
}
