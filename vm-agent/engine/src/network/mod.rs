//! Networking for single containers: pasta (slirp4netns as fallback), published ports, generated /etc/hosts and /etc/resolv.conf.
//!
//! How a container with a private network is wired (the caller is `create`/`start`):
//!
//! 1. `create`: [`NetworkMode::parse`] the `--network` value; [`ports::parse_publish_all`]
//!    the `-p` values, add [`ports::publish_exposed`] for `-P`, then
//!    [`ports::assign_host_ports`] so random host ports are fixed in the record.
//! 2. Before `crun create`: [`select_helper`] (private mode only), then
//!    [`files::write`] (with [`files::FileOptions::from_flags`]) into a per-container
//!    directory; the spec gets the returned mounts ([`files::FileMount::oci`]).
//! 3. Still before `crun create`: [`create_netns`] makes the namespace and mounts it on
//!    `<rundir>/netns`, which the spec joins, and [`start`] starts the helper on it.
//!    The runtime creates the container while the helper configures the namespace;
//!    [`Starting::finish`] waits for the helper before `crun start` and returns its
//!    pid, which the record keeps. (A container with its own user namespace lets the
//!    runtime make the namespace, so the namespace belongs to it; [`setup`] attaches
//!    the helper to `/proc/<pid>/ns/net` after `crun create` instead.)
//! 4. The teardown (the container's cleanup) stops the helper with [`teardown`] and
//!    removes the namespace file with [`remove_netns`]. Neither helper notices by
//!    itself that the container's processes exited: the namespace outlives them.
//!
//! UDP ports a helper cannot answer through go through a forwarder of ours (`udpfwd`)
//! that lives as long as the helper.
//!
//! User-defined networks (bridges, DNS between containers) are not here yet.

pub mod files;
pub mod ports;

mod addrs;
mod detach;
mod netns;
mod pasta;
mod slirp;
mod udpfwd;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::container::spec::NetworkNs;
pub use ports::{PortMapping, Protocol};

/// Forces the helper of private networks: `pasta` or `slirp4netns`.
pub const ENV_NETWORK_CMD: &str = "CAPSA_NETWORK_CMD";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid --network value {value:?}: {reason}")]
    Mode { value: String, reason: String },
    #[error("{ENV_NETWORK_CMD}={0:?} is neither pasta nor slirp4netns")]
    BadOverride(String),
    #[error("{0} not found in $PATH (hint: {hint})", hint = .0.install_hint())]
    NotFound(Helper),
    #[error(
        "neither pasta nor slirp4netns found in $PATH, a private network needs one (hint: install the passt package, or slirp4netns)"
    )]
    NoHelper,
    #[error("creating a network namespace at {path}")]
    CreateNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "publishing {addr}/udp: {source} (hint: is another program using that host port? `ss -lnup` shows who listens)"
    )]
    Publish {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("starting capsa's udp forwarder for {helper}")]
    Forwarder {
        helper: Helper,
        #[source]
        source: io::Error,
    },
    #[error("opening the network namespace of process {pid}")]
    Netns {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error(
        "process {0} is in capsa's own network namespace: a private network needs a new one (NetworkNs::Private)"
    )]
    SameNetns(i32),
    #[error("{helper} cannot publish {mapping}: {reason} (hint: {hint})")]
    Unsupported {
        helper: Helper,
        mapping: String,
        reason: &'static str,
        hint: &'static str,
    },
    #[error("starting {helper}")]
    Spawn {
        helper: Helper,
        #[source]
        source: io::Error,
    },
    /// The helper ran but failed; `detail` holds its own words (stderr).
    #[error("{helper} failed: {detail} (hint: {hint})")]
    Failed {
        helper: Helper,
        detail: String,
        hint: String,
    },
}

/// The program that connects a private network namespace to the host's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Helper {
    Pasta,
    Slirp4netns,
}

impl Helper {
    pub fn binary(self) -> &'static str {
        match self {
            Helper::Pasta => "pasta",
            Helper::Slirp4netns => "slirp4netns",
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Helper::Pasta => "install the passt package, which provides pasta",
            Helper::Slirp4netns => "install the slirp4netns package",
        }
    }
}

impl fmt::Display for Helper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.binary())
    }
}

impl FromStr for Helper {
    type Err = ();
    fn from_str(s: &str) -> Result<Helper, ()> {
        match s {
            "pasta" => Ok(Helper::Pasta),
            "slirp4netns" => Ok(Helper::Slirp4netns),
            _ => Err(()),
        }
    }
}

/// The `--network` of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum NetworkMode {
    /// A new network namespace reaching out through pasta or slirp4netns (the default);
    /// `Some` when `--network pasta` or `--network slirp4netns` named the helper.
    Private(Option<Helper>),
    /// A new network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
    /// `ns:PATH`: join the namespace at PATH.
    Ns(PathBuf),
    /// `container:ID`: join another container's namespace.
    Container(String),
}

impl Default for NetworkMode {
    fn default() -> NetworkMode {
        NetworkMode::Private(None)
    }
}

impl NetworkMode {
    /// Parses a `--network` value; the empty string is the default private network.
    pub fn parse(value: &str) -> Result<NetworkMode, NetworkError> {
        let err = |reason: String| NetworkError::Mode {
            value: value.to_string(),
            reason,
        };
        let (kind, arg) = match value.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (value, None),
        };
        match (kind, arg) {
            ("" | "private", None) => Ok(NetworkMode::Private(None)),
            ("none", None) => Ok(NetworkMode::None),
            ("host", None) => Ok(NetworkMode::Host),
            ("pasta" | "slirp4netns", None) => Ok(NetworkMode::Private(kind.parse().ok())),
            ("pasta" | "slirp4netns", Some(_)) => Err(err(format!(
                "options for {kind} are not supported; use --network {kind}"
            ))),
            ("ns", Some(p)) if p.starts_with('/') => Ok(NetworkMode::Ns(PathBuf::from(p))),
            ("ns", _) => Err(err(
                "ns: needs the absolute path of a network namespace, e.g. ns:/run/netns/NAME"
                    .into(),
            )),
            ("container", Some(id)) if !id.is_empty() => {
                Ok(NetworkMode::Container(id.to_string()))
            }
            ("container", _) => Err(err("container: needs a container name or ID".into())),
            ("bridge", None) => Err(err(
                "the bridge network comes with user-defined networks, which capsa does not have yet (a later issue adds them); leave --network out for a private network that publishes ports".into(),
            )),
            ("none" | "host" | "private" | "bridge", Some(_)) => {
                Err(err(format!("{kind} takes no options")))
            }
            _ => Err(err(format!(
                "no network named {value:?}: user-defined networks are not supported yet (a later issue adds them); use private, pasta, slirp4netns, none, host, ns:PATH or container:ID"
            ))),
        }
    }

    /// True for the modes that get their own helper and can publish ports.
    pub fn is_private(&self) -> bool {
        matches!(self, NetworkMode::Private(_))
    }

    /// The network namespace for the OCI spec; `None` for `container:ID`, which the
    /// caller resolves to `NetworkNs::Path("/proc/<its pid>/ns/net")`.
    pub fn spec_netns(&self) -> Option<NetworkNs> {
        match self {
            NetworkMode::Private(_) | NetworkMode::None => Some(NetworkNs::Private),
            NetworkMode::Host => Some(NetworkNs::Host),
            NetworkMode::Ns(p) => Some(NetworkNs::Path(p.to_string_lossy().into_owned())),
            NetworkMode::Container(_) => None,
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkMode::Private(None) => f.write_str("private"),
            NetworkMode::Private(Some(h)) => f.write_str(h.binary()),
            NetworkMode::None => f.write_str("none"),
            NetworkMode::Host => f.write_str("host"),
            NetworkMode::Ns(p) => write!(f, "ns:{}", p.display()),
            NetworkMode::Container(id) => write!(f, "container:{id}"),
        }
    }
}

impl From<NetworkMode> for String {
    fn from(m: NetworkMode) -> String {
        m.to_string()
    }
}

impl TryFrom<String> for NetworkMode {
    type Error = NetworkError;
    fn try_from(s: String) -> Result<NetworkMode, NetworkError> {
        NetworkMode::parse(&s)
    }
}

/// The default hostname: the host's with `--network host` (as Podman does), else the
/// first 12 characters of the container ID.
pub fn default_hostname(mode: &NetworkMode, id: &str) -> String {
    match mode {
        NetworkMode::Host => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
        _ => id.chars().take(12).collect(),
    }
}

/// An executable `name` in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Which helper a private network uses: the one `--network` named, else
/// `CAPSA_NETWORK_CMD`, else pasta when installed, else slirp4netns.
pub fn select_helper(requested: Option<Helper>) -> Result<Helper, NetworkError> {
    choose_helper(
        requested,
        std::env::var(ENV_NETWORK_CMD).ok().as_deref(),
        |h| find_in_path(h.binary()).is_some(),
    )
}

fn choose_helper(
    requested: Option<Helper>,
    env: Option<&str>,
    installed: impl Fn(Helper) -> bool,
) -> Result<Helper, NetworkError> {
    let forced = match (requested, env.filter(|e| !e.is_empty())) {
        (Some(h), _) => Some(h),
        (None, Some(e)) => Some(
            e.parse()
                .map_err(|()| NetworkError::BadOverride(e.to_string()))?,
        ),
        (None, None) => None,
    };
    match forced {
        Some(h) if installed(h) => Ok(h),
        Some(h) => Err(NetworkError::NotFound(h)),
        None => [Helper::Pasta, Helper::Slirp4netns]
            .into_iter()
            .find(|h| installed(*h))
            .ok_or(NetworkError::NoHelper),
    }
}

/// A running pasta or slirp4netns serving one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperProcess {
    pub helper: Helper,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat, to tell a reused pid apart; empty when unknown.
    #[serde(default)]
    pub start_time: String,
}

/// Fails early, before anything is started, for mappings `helper` cannot serve.
pub fn check_ports(helper: Helper, ports: &[PortMapping]) -> Result<(), NetworkError> {
    for m in ports {
        let unsupported = |reason, hint| NetworkError::Unsupported {
            helper,
            mapping: m.to_string(),
            reason,
            hint,
        };
        if m.protocol == Protocol::Sctp {
            return Err(unsupported(
                "it forwards only tcp and udp",
                "publish tcp or udp ports, or run as root with a user-defined network once capsa has them",
            ));
        }
        if helper == Helper::Slirp4netns && m.host_addr().is_some_and(|a| a.is_ipv6()) {
            return Err(unsupported(
                "its port forwarding listens on IPv4 addresses only",
                "install the passt package: pasta listens on IPv6 addresses too",
            ));
        }
        if m.host_port == 0 {
            return Err(unsupported(
                "no host port was assigned",
                "call ports::assign_host_ports when the container is created",
            ));
        }
    }
    Ok(())
}

/// Makes the private network namespace of a container and mounts it on
/// `<rundir>/netns`; returns that path (for the spec) and an open descriptor (for
/// [`start`]).
pub fn create_netns(rundir: &Path) -> Result<(PathBuf, OwnedFd), NetworkError> {
    let path = rundir.join(netns::FILE);
    let fd = netns::create(&path).map_err(|source| NetworkError::CreateNetns {
        path: path.clone(),
        source,
    })?;
    Ok((path, fd))
}

/// The namespace [`create_netns`] mounted in `rundir`, if it is there.
pub fn netns_file(rundir: &Path) -> Option<PathBuf> {
    let path = rundir.join(netns::FILE);
    netns::is_netns(&path).then_some(path)
}

/// Unmounts and deletes the namespace file of `rundir`; idempotent.
pub fn remove_netns(rundir: &Path) {
    netns::remove(&rundir.join(netns::FILE));
}

/// A helper configuring a namespace; [`Starting::finish`] waits until it is ready.
pub struct Starting {
    helper: Helper,
    inner: StartingHelper,
    netns: OwnedFd,
    forwards: Vec<(std::net::UdpSocket, u16)>,
}

enum StartingHelper {
    Pasta(pasta::Starting),
    Slirp4netns(slirp::Starting),
}

/// Starts `helper` on the namespace `netns` (a private one, whose processes may not
/// exist yet) and returns without waiting for it. The host sockets of the UDP ports
/// capsa forwards itself are bound here, so a busy port fails at once. `rundir` is the
/// container's per-run directory: the helper's pid file, log and API socket go there.
pub fn start(
    helper: Helper,
    netns: BorrowedFd<'_>,
    ports: &[PortMapping],
    rundir: &Path,
) -> Result<Starting, NetworkError> {
    check_ports(helper, ports)?;
    let (own, forwarded) = udpfwd::split(helper, ports);
    let mut forwards = Vec::new();
    for f in &forwarded {
        let sock = udpfwd::bind(f).map_err(|source| NetworkError::Publish {
            addr: match f.host_addr {
                Some(std::net::IpAddr::V6(a)) => format!("[{a}]:{}", f.host_port),
                Some(a) => format!("{a}:{}", f.host_port),
                None => format!("*:{}", f.host_port),
            },
            source,
        })?;
        forwards.push((sock, f.container_port));
    }
    let netns = netns
        .try_clone_to_owned()
        .map_err(|source| NetworkError::Spawn { helper, source })?;
    let inner = match helper {
        Helper::Pasta => StartingHelper::Pasta(pasta::spawn(netns.as_fd(), &own, rundir)?),
        Helper::Slirp4netns => {
            StartingHelper::Slirp4netns(slirp::spawn(netns.as_fd(), &own, rundir)?)
        }
    };
    Ok(Starting {
        helper,
        inner,
        netns,
        forwards,
    })
}

impl Starting {
    /// Waits until the helper has configured the namespace and published the ports,
    /// then starts the UDP forwarder if one is needed.
    pub fn finish(self) -> Result<HelperProcess, NetworkError> {
        let helper = self.helper;
        let pid = match self.inner {
            StartingHelper::Pasta(p) => p.finish()?,
            StartingHelper::Slirp4netns(s) => s.finish()?,
        };
        let proc = HelperProcess {
            helper,
            pid,
            start_time: crate::userns::start_time(pid).unwrap_or_default(),
        };
        if !self.forwards.is_empty() {
            let started = detach::pidfd_open(pid)
                .and_then(|fd| udpfwd::start(self.netns.as_fd(), fd.as_fd(), &self.forwards));
            if let Err(source) = started {
                teardown(&proc);
                return Err(NetworkError::Forwarder { helper, source });
            }
        }
        Ok(proc)
    }
}

/// Connects the network namespace of `pid` (a process with a new, private namespace,
/// such as a container created but not started) to the host through `helper`,
/// publishing `ports`; waits until it is ready. The helper runs until [`teardown`].
pub fn setup(
    helper: Helper,
    pid: i32,
    ports: &[PortMapping],
    rundir: &Path,
) -> Result<HelperProcess, NetworkError> {
    check_ports(helper, ports)?;
    let netns = open_netns(pid)?;
    start(helper, netns.as_fd(), ports, rundir)?.finish()
}

/// Opens `/proc/<pid>/ns/net`, refusing our own namespace: pasta and slirp4netns would
/// reconfigure the host's network.
fn open_netns(pid: i32) -> Result<OwnedFd, NetworkError> {
    let path = format!("/proc/{pid}/ns/net");
    let err = |source| NetworkError::Netns { pid, source };
    let f = fs::File::open(&path).map_err(err)?;
    let theirs = f.metadata().map_err(err)?;
    let ours = fs::metadata("/proc/self/ns/net").map_err(err)?;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Err(NetworkError::SameNetns(pid));
    }
    Ok(f.into())
}

/// True when `pid` is a live (not zombie) process that looks like `p`'s helper.
fn is_helper(p: &HelperProcess) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", p.pid)) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    if matches!(state, Some("Z" | "X") | None) {
        return false;
    }
    if !p.start_time.is_empty()
        && crate::userns::start_time(p.pid).as_deref() != Some(p.start_time.as_str())
    {
        return false;
    }
    let argv0 = fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default();
    let argv0 = argv0.split(|b| *b == 0).next().unwrap_or_default();
    let name = argv0.rsplit(|b| *b == b'/').next().unwrap_or_default();
    match p.helper {
        Helper::Pasta => name.starts_with(b"pasta") || name.starts_with(b"passt"),
        Helper::Slirp4netns => name.starts_with(b"slirp4netns"),
    }
}

/// Stops a container's helper if it still runs (SIGTERM, then SIGKILL after two
/// seconds); a pid that now belongs to another process is left alone.
pub fn teardown(p: &HelperProcess) {
    stop(p, true)
}

/// Asks the helper to stop; with `wait`, until it is gone (so the ports it published are
/// free again), killing it after 2 s. A container that published nothing need not wait:
/// the helper exits on its own a few milliseconds later.
pub fn stop(p: &HelperProcess, wait: bool) {
    let Ok(fd) = detach::pidfd_open(p.pid) else {
        return;
    };
    // Checked after opening the pidfd, so the signal cannot reach a reused pid.
    if !is_helper(p) {
        return;
    }
    let _ = detach::pidfd_signal(fd.as_fd(), libc::SIGTERM);
    if !wait {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if detach::wait_readable(fd.as_fd(), 50).unwrap_or(true) {
            return;
        }
    }
    let _ = detach::pidfd_signal(fd.as_fd(), libc::SIGKILL);
}

/// Turns a helper's stderr into one line for an error message, dropping pasta's
/// complaints about a missing syslog socket.
fn stderr_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !(l.starts_with("Failed to send ") && l.ends_with("to syslog")))
        .collect();
    if lines.is_empty() {
        "no error message".into()
    } else {
        lines.join("; ")
    }
}

#[cfg(test)]
mod mode_tests {
    use super::*;

    #[test]
    fn network_values() {
        let cases: &[(&str, NetworkMode)] = &[
            ("", NetworkMode::Private(None)),
            ("private", NetworkMode::Private(None)),
            ("pasta", NetworkMode::Private(Some(Helper::Pasta))),
            (
                "slirp4netns",
                NetworkMode::Private(Some(Helper::Slirp4netns)),
            ),
            ("none", NetworkMode::None),
            ("host", NetworkMode::Host),
            ("ns:/run/netns/x", NetworkMode::Ns("/run/netns/x".into())),
            ("container:abc123", NetworkMode::Container("abc123".into())),
        ];
        for (input, want) in cases {
            assert_eq!(&NetworkMode::parse(input).unwrap(), want, "{input}");
            // Stored as the string it came from.
            let json = serde_json::to_string(want).unwrap();
            assert_eq!(&serde_json::from_str::<NetworkMode>(&json).unwrap(), want);
        }
        assert_eq!(
            serde_json::to_string(&NetworkMode::Ns("/x".into())).unwrap(),
            "\"ns:/x\""
        );
    }

    #[test]
    fn network_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "mynet",
                "no network named \"mynet\": user-defined networks are not supported yet (a later issue adds them)",
            ),
            (
                "bridge",
                "the bridge network comes with user-defined networks",
            ),
            ("ns:", "ns: needs the absolute path"),
            ("ns:relative", "ns: needs the absolute path"),
            ("container:", "container: needs a container name or ID"),
            ("pasta:-T,8080", "options for pasta are not supported"),
            (
                "slirp4netns:port_handler=slirp4netns",
                "options for slirp4netns are not supported",
            ),
            ("host:x", "host takes no options"),
        ];
        for (input, want) in cases {
            let e = NetworkMode::parse(input).expect_err(input).to_string();
            assert!(
                e.starts_with(&format!("invalid --network value {input:?}: ")),
                "{e}"
            );
            assert!(e.contains(want), "{input}: {e}");
        }
    }

    #[test]
    fn spec_namespaces() {
        assert_eq!(
            NetworkMode::Private(None).spec_netns(),
            Some(NetworkNs::Private)
        );
        assert_eq!(NetworkMode::None.spec_netns(), Some(NetworkNs::Private));
        assert_eq!(NetworkMode::Host.spec_netns(), Some(NetworkNs::Host));
        assert_eq!(
            NetworkMode::Ns("/run/netns/a".into()).spec_netns(),
            Some(NetworkNs::Path("/run/netns/a".into()))
        );
        assert_eq!(NetworkMode::Container("x".into()).spec_netns(), None);
        assert_eq!(
            default_hostname(&NetworkMode::None, "0123456789abcdef"),
            "0123456789ab"
        );
    }

    #[test]
    fn helper_choice() {
        use Helper::*;
        let both = |_: Helper| true;
        let only_slirp = |h: Helper| h == Slirp4netns;
        let nothing = |_: Helper| false;
        assert_eq!(choose_helper(None, None, both).unwrap(), Pasta);
        assert_eq!(choose_helper(None, None, only_slirp).unwrap(), Slirp4netns);
        assert_eq!(
            choose_helper(None, Some("slirp4netns"), both).unwrap(),
            Slirp4netns
        );
        assert_eq!(
            choose_helper(None, Some(""), only_slirp).unwrap(),
            Slirp4netns
        );
        // --network names one: it beats the environment.
        assert_eq!(
            choose_helper(Some(Pasta), Some("slirp4netns"), both).unwrap(),
            Pasta
        );
        let e = choose_helper(None, Some("pasta"), only_slirp)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "pasta not found in $PATH (hint: install the passt package, which provides pasta)"
        );
        let e = choose_helper(None, Some("vde"), both)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "CAPSA_NETWORK_CMD=\"vde\" is neither pasta nor slirp4netns"
        );
        let e = choose_helper(None, None, nothing).unwrap_err().to_string();
        assert!(e.contains("hint: install the passt package"), "{e}");
    }

    #[test]
    fn unsupported_ports_fail_before_starting() {
        let sctp = ports::parse_publish("8080:80/sctp").unwrap();
        let e = check_ports(Helper::Pasta, &[sctp]).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "pasta cannot publish 8080:80/sctp: it forwards only tcp and udp (hint: "
            ),
            "{e}"
        );
        let v6 = ports::parse_publish("[::1]:8080:80").unwrap();
        check_ports(Helper::Pasta, std::slice::from_ref(&v6)).unwrap();
        let e = check_ports(Helper::Slirp4netns, &[v6])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("IPv4 addresses only (hint: install the passt package"),
            "{e}"
        );
    }

    #[test]
    fn helper_stderr_without_syslog_noise() {
        let raw =
            b"Failed to send 61 bytes to syslog\nFailed to bind any port for '-t 80', exiting\n";
        assert_eq!(
            stderr_text(raw),
            "Failed to bind any port for '-t 80', exiting"
        );
        assert_eq!(stderr_text(b""), "no error message");
    }
}
