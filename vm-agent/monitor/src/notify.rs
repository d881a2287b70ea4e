//! The systemd notify relay of `--sdnotify-socket` (Podman's `--sdnotify=container`,
//! conmon's option of the same name). The monitor binds `notify/notify.sock` in the run
//! directory; the engine bind-mounts `notify/` at `/run/notify` and sets
//! `NOTIFY_SOCKET=/run/notify/notify.sock` in the container. Each datagram the
//! container sends is relayed to the host's socket for as long as the container runs
//! (conmon does not stop after `READY=1` either: `WATCHDOG=1` keeps flowing), reduced to
//! the fields that mean the same outside the container, with `MAINPID=<monitor pid>`
//! added to the one that says `READY=1`: the monitor is what systemd should watch (it
//! is in the unit's cgroup and lives exactly as long as the container; the container's
//! own pid may be in another cgroup, where systemd refuses it from an unprivileged
//! sender). See docs/systemd.md.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use crate::sys;

/// The directory bind-mounted into the container, relative to the run directory.
pub const DIR: &str = "notify";
/// The socket in it.
pub const SOCKET: &str = "notify/notify.sock";

/// Fields relayed from the container. Left out: `MAINPID` (a pid of the container's
/// namespace), `FDSTORE*` and `BARRIER` (they need descriptors, which are not
/// relayed), and anything unknown.
const RELAYED: &[&str] = &[
    "READY",
    "RELOADING",
    "STOPPING",
    "STATUS",
    "ERRNO",
    "BUSERROR",
    "EXIT_STATUS",
    "WATCHDOG",
    "WATCHDOG_USEC",
    "EXTEND_TIMEOUT_USEC",
    "MONOTONIC_USEC",
];

/// At most this many datagrams are relayed per wake-up, so that a container that
/// floods the socket cannot starve the rest of the loop.
const PER_WAKEUP: usize = 64;

/// Whether `NOTIFY_SOCKET`'s value is one the monitor can send to: an absolute path or
/// an abstract name, within the 108 bytes of a socket address.
pub fn valid_address(addr: &str) -> bool {
    (addr.starts_with('/') || addr.starts_with('@'))
        && !addr.contains('\0')
        && sys::unix_address(addr.as_bytes()).is_ok()
}

/// What reaches the host for one datagram from the container, if anything: the
/// relayed lines in their order, plus `MAINPID=<main_pid>` after `READY=1`.
pub fn relay(datagram: &[u8], main_pid: i32) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(datagram).ok()?;
    let mut out = String::new();
    let mut ready = false;
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        if !RELAYED.contains(&key) {
            continue;
        }
        ready |= line == "READY=1";
        out.push_str(line);
        out.push('\n');
    }
    if ready {
        out.push_str(&format!("MAINPID={main_pid}\n"));
    }
    (!out.is_empty()).then(|| out.into_bytes())
}

/// The bound socket in the run directory and the way out to the host's.
pub struct Relay {
    sock: OwnedFd,
    out: OwnedFd,
    host: (libc::sockaddr_un, libc::socklen_t),
}

impl Relay {
    /// Binds `notify/notify.sock` under the working directory (the run directory),
    /// replacing a stale one. Mode 0777: any user of the container may notify, as with
    /// conmon.
    pub fn bind(host: &str) -> io::Result<Relay> {
        let host = sys::unix_address(host.as_bytes())?;
        match std::fs::create_dir(DIR) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let _ = std::fs::remove_file(SOCKET);
        let path = CString::new(SOCKET).expect("no NUL in a constant");
        let sock = sys::bind_datagram(&path, 0o777)?;
        let out = sys::datagram_socket()?;
        Ok(Relay { sock, out, host })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Relays what is queued (up to [`PER_WAKEUP`] datagrams). A host socket that is
    /// gone or full loses the message: the monitor never waits for systemd.
    pub fn pump(&self, buf: &mut [u8], main_pid: i32) {
        for _ in 0..PER_WAKEUP {
            let n = match sys::recv(self.sock.as_fd(), buf) {
                Ok(n) => n,
                Err(_) => return,
            };
            if let Some(msg) = relay(&buf[..n], main_pid) {
                let _ = sys::send_to(self.out.as_fd(), &msg, &self.host);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(d: &str) -> Option<String> {
        relay(d.as_bytes(), 42).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn what_is_relayed() {
        let cases: &[(&str, Option<&str>)] = &[
            ("READY=1", Some("READY=1\nMAINPID=42\n")),
            (
                "STATUS=up\nREADY=1\n",
                Some("STATUS=up\nREADY=1\nMAINPID=42\n"),
            ),
            ("WATCHDOG=1", Some("WATCHDOG=1\n")),
            ("STATUS=a=b c", Some("STATUS=a=b c\n")),
            // The container's own pid namespace means nothing to systemd.
            ("MAINPID=1\nREADY=1", Some("READY=1\nMAINPID=42\n")),
            ("MAINPID=1", None),
            ("FDSTORE=1\nFDNAME=x", None),
            ("BARRIER=1", None),
            ("garbage", None),
            ("READY=0", Some("READY=0\n")),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(relayed(input).as_deref(), *want, "{input:?}");
        }
        assert_eq!(relay(&[0xff, b'\n'], 1), None);
    }

    #[test]
    fn addresses() {
        for ok in [
            "/run/systemd/notify",
            "@/org/freedesktop/systemd1/notify",
            "@x",
        ] {
            assert!(valid_address(ok), "{ok}");
        }
        let long = format!("/{}", "x".repeat(120));
        for bad in ["", "@", "relative", "vsock:2:1234", long.as_str(), "/a\0b"] {
            assert!(!valid_address(bad), "{bad:?}");
        }
    }
}
