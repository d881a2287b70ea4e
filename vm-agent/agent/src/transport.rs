//! Where host connections come from: the virtio-serial port (QEMU), a vsock listener
//! (Virtualization.framework, vhost-vsock), a unix socket or an inherited descriptor
//! (tests), or our own stdin and stdout (`capsa-agent --listen stdio` run by the host over
//! SSH). All yield the same thing, a byte stream, and the session does not know which.

use crate::fdio::FdStream;
use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};

pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Duplex for T {}

pub type Conn = Box<dyn Duplex>;

/// A `--listen` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    /// `serial[:NAME]`: the virtio-serial port with that name.
    Serial(String),
    /// `vsock[:PORT]`.
    Vsock(u32),
    /// `unix:PATH`: a listening unix socket, one session per connection.
    Unix(PathBuf),
    /// `fd:N`: an inherited listening socket, or a connected one served once.
    Fd(i32),
    /// `stdio`: one session on fd 0 (from the host) and fd 1 (to the host).
    Stdio,
}

impl Spec {
    pub fn parse(value: &str) -> Result<Spec, String> {
        let (scheme, rest) = value.split_once(':').unwrap_or((value, ""));
        match scheme {
            "serial" if rest.is_empty() => Ok(Spec::Serial(capsa_proto::VIRTIO_SERIAL_NAME.into())),
            "serial" => Ok(Spec::Serial(rest.into())),
            "vsock" if rest.is_empty() => Ok(Spec::Vsock(capsa_proto::VSOCK_PORT)),
            "vsock" => rest
                .parse()
                .map(Spec::Vsock)
                .map_err(|_| format!("invalid vsock port {rest:?}")),
            "unix" if !rest.is_empty() => Ok(Spec::Unix(rest.into())),
            "stdio" if rest.is_empty() => Ok(Spec::Stdio),
            "fd" => rest
                .parse()
                .map(Spec::Fd)
                .map_err(|_| format!("invalid descriptor {rest:?}")),
            _ => Err(format!(
                "invalid --listen {value:?}: expected serial[:NAME], vsock[:PORT], unix:PATH, fd:N or stdio"
            )),
        }
    }
}

pub enum Listener {
    Serial {
        name: String,
        port: Option<FdStream>,
        /// SIGIO: the port signals when the host connects or disconnects.
        sigio: Option<tokio::signal::unix::Signal>,
    },
    Vsock(tokio_vsock::VsockListener),
    Unix(UnixListener),
    /// One connection, served once: then the agent exits.
    Once(Option<Conn>),
}

impl Listener {
    pub fn bind(spec: &Spec) -> io::Result<Listener> {
        match spec {
            Spec::Serial(name) => Ok(Listener::Serial {
                name: name.clone(),
                port: None,
                sigio: None,
            }),
            Spec::Vsock(port) => {
                let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, *port);
                tokio_vsock::VsockListener::bind(addr)
                    .map(Listener::Vsock)
                    .map_err(|e| io::Error::new(e.kind(), format!("vsock port {port}: {e}")))
            }
            Spec::Unix(path) => {
                // A socket file left by an earlier run would make bind fail.
                if fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
                    let _ = fs::remove_file(path);
                }
                UnixListener::bind(path)
                    .map(Listener::Unix)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
            }
            Spec::Fd(fd) => {
                // SAFETY: the caller hands this descriptor to us with --listen fd:N.
                let owned = unsafe { OwnedFd::from_raw_fd(*fd) };
                let listening = is_listening(&owned)?;
                let std_stream = std::os::unix::net::UnixStream::from(owned);
                std_stream.set_nonblocking(true)?;
                if listening {
                    let std_listener =
                        std::os::unix::net::UnixListener::from(OwnedFd::from(std_stream));
                    Ok(Listener::Unix(UnixListener::from_std(std_listener)?))
                } else {
                    let stream = UnixStream::from_std(std_stream)?;
                    Ok(Listener::Once(Some(Box::new(stream))))
                }
            }
            Spec::Stdio => Ok(Listener::Once(Some(stdio_conn()?))),
        }
    }

    /// A serial port carries one host connection at a time.
    pub fn sequential(&self) -> bool {
        matches!(self, Listener::Serial { .. } | Listener::Once(_))
    }

    /// The next host connection; `None` when this listener has no more.
    pub async fn accept(&mut self) -> io::Result<Option<Conn>> {
        match self {
            Listener::Serial { name, port, sigio } => {
                if port.is_none() {
                    // The handler first: SIGIO's default action ends the process.
                    let signal =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::io())?;
                    let p = open_serial(name).await?;
                    signal_on_change(p.raw_fd())?;
                    *port = Some(p);
                    *sigio = Some(signal);
                }
                let (Some(p), Some(signal)) = (port.as_ref(), sigio.as_mut()) else {
                    unreachable!("set together above");
                };
                // The same port serves the next host connection. While no host is
                // connected the port reads end-of-file at once, so a session started
                // then would end at once, over and over (a busy loop at idle): wait
                // for the host, which the port announces with SIGIO.
                while host_absent(p.raw_fd()) {
                    tokio::select! {
                        _ = signal.recv() => {}
                        // A SIGIO lost in a race costs at most this.
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
                Ok(Some(Box::new(p.clone())))
            }
            Listener::Vsock(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok(Some(Box::new(stream)))
            }
            Listener::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok(Some(Box::new(stream)))
            }
            Listener::Once(conn) => Ok(conn.take()),
        }
    }
}

/// The session's stream from fds 0 and 1, moved to new descriptors that children do not
/// inherit; 0 and 1 become /dev/null. A process the session starts (a container's
/// monitor outlives it) would otherwise hold the host's pipes open, and the host would
/// never see the session end.
fn stdio_conn() -> io::Result<Conn> {
    use std::os::fd::AsRawFd;
    let moved = |fd: i32| -> io::Result<OwnedFd> {
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we own, or -1.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `new` was just returned to us and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(new) })
    };
    let input = moved(0)?;
    let output = moved(1)?;
    let null = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in [0, 1] {
        // SAFETY: dup2 onto the standard descriptors, which we replace on purpose.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let reader = FdStream::new(input, false)?;
    let writer = FdStream::new(output, false)?;
    Ok(Box::new(tokio::io::join(reader, writer)))
}

fn is_listening(fd: &OwnedFd) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes an int of the size we pass.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value != 0)
}

/// The /dev node of the virtio-serial port called `name`. No udev in the guest, so no
/// /dev/virtio-ports/NAME symlink: the names are in sysfs.
pub fn find_serial_port(sys_ports: &Path, name: &str) -> Option<PathBuf> {
    let entries = fs::read_dir(sys_ports).ok()?;
    for entry in entries.flatten() {
        let port_name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if port_name.trim() == name {
            return Some(Path::new("/dev").join(entry.file_name()));
        }
    }
    None
}

/// Asks the kernel for SIGIO on this descriptor: virtio_console sends it when the host
/// side of the port opens or closes (and when data arrives).
fn signal_on_change(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    unsafe {
        if libc::fcntl(fd, libc::F_SETOWN, libc::getpid()) < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether the port's host side is closed: virtio_console then polls as POLLHUP (with
/// POLLIN too, since a read would not block: it returns end of file).
fn host_absent(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLHUP != 0
}

/// Waits for the port to appear (the virtio_console module may still be loading) and
/// opens it.
async fn open_serial(name: &str) -> io::Result<FdStream> {
    let mut warned = false;
    loop {
        if let Some(path) = find_serial_port(Path::new("/sys/class/virtio-ports"), name) {
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            return FdStream::new(OwnedFd::from(file), false);
        }
        if !warned {
            eprintln!("capsa-agent: waiting for virtio-serial port {name:?}");
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_specs_parse() {
        assert_eq!(
            Spec::parse("unix:/tmp/a.sock").unwrap(),
            Spec::Unix("/tmp/a.sock".into())
        );
        assert_eq!(Spec::parse("fd:3").unwrap(), Spec::Fd(3));
        assert_eq!(
            Spec::parse("vsock").unwrap(),
            Spec::Vsock(capsa_proto::VSOCK_PORT)
        );
        assert_eq!(Spec::parse("vsock:5000").unwrap(), Spec::Vsock(5000));
        assert_eq!(Spec::parse("stdio").unwrap(), Spec::Stdio);
        assert!(Spec::parse("stdio:1").is_err());
        assert_eq!(
            Spec::parse("serial").unwrap(),
            Spec::Serial(capsa_proto::VIRTIO_SERIAL_NAME.into())
        );
        assert!(Spec::parse("unix:").is_err());
        assert!(
            Spec::parse("tcp:1")
                .unwrap_err()
                .contains("expected serial")
        );
    }

    #[test]
    fn serial_port_found_by_name_in_sysfs() {
        let dir = std::env::temp_dir().join(format!("capsa-agent-ports-{}", std::process::id()));
        for (port, name) in [
            ("vport0p0", "org.qemu.guest_agent.0"),
            ("vport0p1", "org.capsa.agent.0"),
        ] {
            fs::create_dir_all(dir.join(port)).unwrap();
            fs::write(dir.join(port).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            find_serial_port(&dir, "org.capsa.agent.0"),
            Some(PathBuf::from("/dev/vport0p1"))
        );
        assert_eq!(find_serial_port(&dir, "nope"), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
