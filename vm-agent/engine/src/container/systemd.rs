//! systemd integration (docs/systemd.md): what a start does with the environment systemd
//! gives the `capsa` command, and the unit files `generate systemd` prints ([`unit`]).
//!
//! - `NOTIFY_SOCKET` with `--sdnotify`: `container` relays the container's own
//!   notifications through the monitor (`capsa-monitor --sdnotify-socket`, a socket
//!   bind-mounted at `/run/notify/notify.sock`); `conmon` has capsa send `READY=1` once the
//!   runtime's `start` returned; `ignore` sends nothing. In every mode capsa names the
//!   monitor as the service's main process (`MAINPID=`), as Podman names conmon, and the
//!   variable reaches neither the runtime (crun would run its own relay and make `start`
//!   wait for it) nor the container, unless `container` mode gives it the relay. Only
//!   the container's own process gets it: an `exec`'d one does not, as in Podman 4.3,
//!   whose exec builds the environment from the container's configuration, not from
//!   what a start added (so `exec` never goes through [`apply_to_spec`]).
//! - Socket activation: `LISTEN_FDS=N` with `LISTEN_PID` = this process passes fds
//!   3…3+N−1 into the container ahead of `--preserve-fds`, with `LISTEN_FDS=N`,
//!   `LISTEN_PID=1` and `LISTEN_FDNAMES` in its environment.
//!
//! [`SystemdEnv::capture`] takes these variables out of the process environment once, at
//! the start of `main`, so that no child (the pause process, the runtime, network
//! helpers) sees them; the engine reads the captured copy.
//!
//! It does not own the monitor's relay (vm-agent/monitor/src/notify.rs) or spawning.

pub mod unit;

use std::io;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::container::lifecycle::{ContainerError, merge_env};
use crate::container::spec::SpecOptions;
use crate::container::state::{ContainerConfig, ContainerRecord};
use crate::engine::Engine;

/// The directory of the run directory the monitor binds its relay socket in; it is
/// bind-mounted at [`CONTAINER_NOTIFY_DIR`].
pub const NOTIFY_DIR: &str = "notify";
/// Where the container finds the relay (Podman's paths).
pub const CONTAINER_NOTIFY_DIR: &str = "/run/notify";
pub const CONTAINER_NOTIFY_SOCKET: &str = "/run/notify/notify.sock";

/// The variables systemd sets for notification and socket activation.
pub const ENV_VARS: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// `--sdnotify`, as stored in the record ("" is the default, `container`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdNotify {
    Container,
    Conmon,
    Ignore,
}

impl SdNotify {
    pub fn of(config: &ContainerConfig) -> SdNotify {
        match config.sdnotify.as_str() {
            "conmon" => SdNotify::Conmon,
            "ignore" => SdNotify::Ignore,
            _ => SdNotify::Container,
        }
    }
}

/// What systemd asked of this `capsa` process through its environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemdEnv {
    /// `NOTIFY_SOCKET`, when it names a socket we can send to (a path or `@name`).
    pub notify_socket: Option<String>,
    /// `LISTEN_FDS`, when `LISTEN_PID` is this process (0 otherwise).
    pub listen_fds: u32,
    /// `LISTEN_FDNAMES`, with socket activation only.
    pub listen_fdnames: Option<String>,
}

static CAPTURED: OnceLock<SystemdEnv> = OnceLock::new();

impl SystemdEnv {
    /// Reads the variables through `get`; `pid` is the process they were given to.
    pub fn parse(get: impl Fn(&str) -> Option<String>, pid: u32) -> SystemdEnv {
        let notify_socket = get("NOTIFY_SOCKET").filter(|s| {
            let ok = valid_notify_address(s);
            if !ok {
                tracing::warn!("ignoring NOTIFY_SOCKET={s:?}: not a path or @abstract name");
            }
            ok
        });
        let ours = get("LISTEN_PID")
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|p| p == pid);
        let listen_fds = match get("LISTEN_FDS").map(|n| n.trim().parse::<u32>()) {
            Some(Ok(n)) if ours && n <= 1 << 16 => n,
            Some(Err(_)) => {
                tracing::warn!("ignoring LISTEN_FDS: not a number");
                0
            }
            _ => 0,
        };
        let listen_fdnames = get("LISTEN_FDNAMES").filter(|_| listen_fds > 0);
        SystemdEnv {
            notify_socket,
            listen_fds,
            listen_fdnames,
        }
    }

    /// The process environment as it is now.
    pub fn from_process() -> SystemdEnv {
        SystemdEnv::parse(|k| std::env::var(k).ok(), std::process::id())
    }

    /// Reads the variables once and removes them from the process environment; the
    /// activated fds become close-on-exec (only the monitor gets them, see
    /// [`configure_monitor`]). Call at the start of `main`, before any thread starts
    /// (it changes the environment). Later calls return the first answer.
    pub fn capture() -> &'static SystemdEnv {
        CAPTURED.get_or_init(|| {
            let env = SystemdEnv::from_process();
            for k in ENV_VARS {
                // SAFETY: documented precondition: no other thread exists yet.
                unsafe { std::env::remove_var(k) };
            }
            for fd in activated_fds(&env) {
                // SAFETY: F_GETFD/F_SETFD on a descriptor number only change its flags.
                unsafe {
                    let fl = libc::fcntl(fd, libc::F_GETFD);
                    if fl >= 0 {
                        libc::fcntl(fd, libc::F_SETFD, fl | libc::FD_CLOEXEC);
                    }
                }
            }
            env
        })
    }

    /// The captured variables, or (in a process that never called [`capture`]) the
    /// environment, read once.
    ///
    /// [`capture`]: SystemdEnv::capture
    pub fn current() -> &'static SystemdEnv {
        CAPTURED.get_or_init(SystemdEnv::from_process)
    }
}

fn activated_fds(env: &SystemdEnv) -> std::ops::Range<i32> {
    LISTEN_FDS_START..LISTEN_FDS_START + env.listen_fds as i32
}

/// Whether a `NOTIFY_SOCKET` value names a unix socket: an absolute path or `@name`,
/// within the 108 bytes of a socket address.
pub fn valid_notify_address(addr: &str) -> bool {
    let name_len = addr.len() - usize::from(addr.starts_with('@'));
    (addr.starts_with('/') || addr.starts_with('@'))
        && name_len > 0
        && name_len < 108
        && !addr.contains('\0')
}

/// The fds the container gets from 3 on: the socket-activated ones, then
/// `--preserve-fds`. The monitor's `--preserve-fds` and the sync fd (at 3 + this) follow
/// from it.
pub fn preserved_fds(env: &SystemdEnv, config: &ContainerConfig) -> u32 {
    env.listen_fds + config.preserve_fds
}

/// Whether this start relays notifications from the container.
fn relays(env: &SystemdEnv, config: &ContainerConfig) -> bool {
    env.notify_socket.is_some() && SdNotify::of(config) == SdNotify::Container
}

/// The environment entries this start adds to the container's.
pub fn container_env(env: &SystemdEnv, config: &ContainerConfig) -> Vec<String> {
    let mut out = Vec::new();
    if env.listen_fds > 0 {
        out.push(format!("LISTEN_FDS={}", env.listen_fds));
        out.push("LISTEN_PID=1".into());
        if let Some(names) = &env.listen_fdnames {
            out.push(format!("LISTEN_FDNAMES={names}"));
        }
    }
    if relays(env, config) {
        out.push(format!("NOTIFY_SOCKET={CONTAINER_NOTIFY_SOCKET}"));
    }
    out
}

/// The bind mount of the relay's directory, `<rundir>/notify` at `/run/notify`.
pub fn notify_mount(rundir: &Path) -> Value {
    json!({
        "destination": CONTAINER_NOTIFY_DIR,
        "type": "bind",
        "source": rundir.join(NOTIFY_DIR),
        "options": ["rbind", "rw", "nosuid", "nodev", "noexec"],
    })
}

/// Adds this start's environment and the relay's mount to the OCI configuration, and
/// creates `<rundir>/notify` for it (the monitor binds the socket there before the
/// runtime's `create`). The mount goes last, after a `/run` tmpfs of `--read-only`.
pub fn apply_to_spec(
    so: &mut SpecOptions,
    env: &SystemdEnv,
    config: &ContainerConfig,
    rundir: &Path,
) -> Result<(), ContainerError> {
    so.env = merge_env(&so.env, &container_env(env, config));
    if relays(env, config) {
        let dir = rundir.join(NOTIFY_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| ContainerError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        so.mounts
            .retain(|m| m["destination"] != CONTAINER_NOTIFY_DIR);
        so.mounts.push(notify_mount(rundir));
    }
    Ok(())
}

/// The monitor's extra arguments for this start (after its others).
pub fn monitor_args(env: &SystemdEnv, config: &ContainerConfig) -> Vec<String> {
    match &env.notify_socket {
        Some(s) if relays(env, config) => vec!["--sdnotify-socket".into(), s.clone()],
        _ => Vec::new(),
    }
}

/// Prepares the monitor's command: [`monitor_args`], none of systemd's variables in its
/// environment (nor, through it, the runtime's, the container's or the exit command's),
/// and the activated fds inherited (they are close-on-exec in capsa itself).
pub fn configure_monitor(cmd: &mut Command, env: &SystemdEnv, config: &ContainerConfig) {
    cmd.args(monitor_args(env, config));
    for k in ENV_VARS {
        cmd.env_remove(k);
    }
    let fds = activated_fds(env);
    if !fds.is_empty() {
        // SAFETY: only fcntl between fork and exec, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                for fd in fds.clone() {
                    let fl = libc::fcntl(fd, libc::F_GETFD);
                    if fl < 0 || libc::fcntl(fd, libc::F_SETFD, fl & !libc::FD_CLOEXEC) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

/// What capsa itself tells systemd once the runtime's `start` returned: the monitor is
/// the main process, and, with `conmon`, that the service is ready.
pub fn started_message(mode: SdNotify, monitor_pid: i32) -> Option<String> {
    match mode {
        SdNotify::Container => Some(format!("MAINPID={monitor_pid}\n")),
        SdNotify::Conmon => Some(format!("MAINPID={monitor_pid}\nREADY=1\n")),
        SdNotify::Ignore => None,
    }
}

/// Sends [`started_message`] to `NOTIFY_SOCKET`, if set. A failure is a warning, as in
/// Podman: the container runs either way.
pub fn notify_started(env: &SystemdEnv, config: &ContainerConfig, monitor_pid: i32) {
    let (Some(addr), Some(msg)) = (
        &env.notify_socket,
        started_message(SdNotify::of(config), monitor_pid),
    ) else {
        return;
    };
    if let Err(e) = send_notify(addr, &msg) {
        tracing::warn!("notifying systemd at {addr}: {e}");
    }
}

/// Sends one datagram to a `NOTIFY_SOCKET` address (a path or `@name`).
pub fn send_notify(addr: &str, msg: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match addr.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(msg.as_bytes(), &a)?;
        }
        None => {
            sock.send_to(msg.as_bytes(), addr)?;
        }
    }
    Ok(())
}

impl Engine {
    /// What the container's image provides by itself; empty when the image is gone
    /// (a rebuilt `run` then spells everything out).
    pub fn image_defaults(&self, rec: &ContainerRecord) -> unit::ImageDefaults {
        self.lookup_image(&rec.image_id)
            .ok()
            .and_then(|img| self.image_config(&img).ok())
            .and_then(|c| c.config)
            .map(|c| unit::ImageDefaults::from_config(&c))
            .unwrap_or_default()
    }

    /// `generate systemd`: the service unit for a container, or with `quadlet` its
    /// Quadlet `.container` file.
    pub fn generate_systemd(
        &self,
        input: &str,
        o: &unit::Options,
        quadlet: bool,
    ) -> Result<unit::Unit, ContainerError> {
        let rec = self.container(input)?;
        let img = self.image_defaults(&rec);
        let made = if quadlet {
            unit::quadlet(&rec, &img, o)
        } else {
            let store = unit::StorePaths {
                root: self.store.root().to_path_buf(),
                runroot: self.store.runroot().to_path_buf(),
                monitor_pid_file: self.container_rundir(&rec.id).join("monitor.pid"),
            };
            unit::service(&rec, &img, &store, o)
        };
        made.map_err(|e| ContainerError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)], pid: u32) -> SystemdEnv {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SystemdEnv::parse(|k| m.get(k).cloned(), pid)
    }

    fn config(sdnotify: &str, preserve_fds: u32) -> ContainerConfig {
        ContainerConfig {
            sdnotify: sdnotify.into(),
            preserve_fds,
            ..Default::default()
        }
    }

    #[test]
    fn environment_is_read_as_systemd_sets_it() {
        let e = env(
            &[
                ("NOTIFY_SOCKET", "/run/systemd/notify"),
                ("LISTEN_FDS", "2"),
                ("LISTEN_PID", "77"),
                ("LISTEN_FDNAMES", "http:https"),
            ],
            77,
        );
        assert_eq!(e.notify_socket.as_deref(), Some("/run/systemd/notify"));
        assert_eq!(
            (e.listen_fds, e.listen_fdnames.as_deref()),
            (2, Some("http:https"))
        );
        // Fds meant for another process (a parent that did not clear them) are not ours.
        let e = env(&[("LISTEN_FDS", "2"), ("LISTEN_PID", "76")], 77);
        assert_eq!((e.listen_fds, e.listen_fdnames), (0, None));
        let e = env(&[("LISTEN_FDS", "2")], 77);
        assert_eq!(e.listen_fds, 0);
        let e = env(&[("LISTEN_FDS", "x"), ("LISTEN_PID", "77")], 77);
        assert_eq!(e.listen_fds, 0);
        assert_eq!(
            env(&[("NOTIFY_SOCKET", "@abs")], 1)
                .notify_socket
                .as_deref(),
            Some("@abs")
        );
        for bad in ["relative", "", "@", "vsock:2:3"] {
            assert_eq!(
                env(&[("NOTIFY_SOCKET", bad)], 1).notify_socket,
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn what_each_mode_gives_the_container_and_the_monitor() {
        let sd = env(&[("NOTIFY_SOCKET", "@sd")], 1);
        let none = SystemdEnv::default();
        let cases = [
            (
                &sd,
                "container",
                vec!["NOTIFY_SOCKET=/run/notify/notify.sock"],
                vec!["--sdnotify-socket", "@sd"],
            ),
            (
                &sd,
                "",
                vec!["NOTIFY_SOCKET=/run/notify/notify.sock"],
                vec!["--sdnotify-socket", "@sd"],
            ),
            (&sd, "conmon", vec![], vec![]),
            (&sd, "ignore", vec![], vec![]),
            (&none, "container", vec![], vec![]),
        ];
        for (e, mode, want_env, want_args) in cases {
            let c = config(mode, 0);
            assert_eq!(container_env(e, &c), want_env, "{mode}");
            assert_eq!(monitor_args(e, &c), want_args, "{mode}");
        }
    }

    #[test]
    fn activated_fds_come_first_and_add_up_with_preserve_fds() {
        let e = env(
            &[
                ("LISTEN_FDS", "2"),
                ("LISTEN_PID", "9"),
                ("LISTEN_FDNAMES", "a:b"),
            ],
            9,
        );
        let c = config("container", 3);
        assert_eq!(preserved_fds(&e, &c), 5);
        assert_eq!(
            container_env(&e, &c),
            ["LISTEN_FDS=2", "LISTEN_PID=1", "LISTEN_FDNAMES=a:b"]
        );
        // --preserve-fds alone sets none of the variables.
        let none = SystemdEnv::default();
        assert_eq!(preserved_fds(&none, &c), 3);
        assert!(container_env(&none, &c).is_empty());
    }

    #[test]
    fn spec_gets_the_variables_and_the_relay_mount() {
        let t = tempfile::tempdir().unwrap();
        let e = env(
            &[
                ("NOTIFY_SOCKET", "/n"),
                ("LISTEN_FDS", "1"),
                ("LISTEN_PID", "4"),
            ],
            4,
        );
        let mut so = SpecOptions::new(vec!["sh".into()]);
        so.env.push("LISTEN_PID=99".into());
        apply_to_spec(&mut so, &e, &config("container", 0), t.path()).unwrap();
        assert!(so.env.contains(&"LISTEN_PID=1".to_string()), "{:?}", so.env);
        assert!(!so.env.contains(&"LISTEN_PID=99".to_string()));
        assert!(
            so.env
                .contains(&"NOTIFY_SOCKET=/run/notify/notify.sock".to_string())
        );
        let m = so.mounts.last().unwrap();
        assert_eq!(m["destination"], "/run/notify");
        assert_eq!(m["source"], t.path().join("notify").to_str().unwrap());
        assert!(t.path().join("notify").is_dir());
        let mut so = SpecOptions::new(vec!["sh".into()]);
        apply_to_spec(&mut so, &e, &config("conmon", 0), t.path()).unwrap();
        assert!(so.mounts.is_empty());
        assert!(!so.env.iter().any(|v| v.starts_with("NOTIFY_SOCKET=")));
    }

    #[test]
    fn started_messages() {
        assert_eq!(
            started_message(SdNotify::Conmon, 12).as_deref(),
            Some("MAINPID=12\nREADY=1\n")
        );
        assert_eq!(
            started_message(SdNotify::Container, 12).as_deref(),
            Some("MAINPID=12\n")
        );
        assert_eq!(started_message(SdNotify::Ignore, 12), None);
    }

    #[test]
    fn notifications_reach_paths_and_abstract_sockets() {
        use std::os::linux::net::SocketAddrExt;
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("n.sock");
        let rx = UnixDatagram::bind(&p).unwrap();
        send_notify(p.to_str().unwrap(), "READY=1").unwrap();
        let mut b = [0u8; 64];
        let n = rx.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"READY=1");
        let name = format!("capsa-sd-test-{}", std::process::id());
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&a).unwrap();
        let c = config("conmon", 0);
        let e = SystemdEnv {
            notify_socket: Some(format!("@{name}")),
            ..Default::default()
        };
        notify_started(&e, &c, 321);
        let n = rx.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"MAINPID=321\nREADY=1\n");
    }
}
