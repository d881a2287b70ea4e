//! A small UDP forwarder for the published ports a helper cannot serve both ways: with
//! pasta of Debian 12, ports whose host and container numbers differ (the replies are
//! lost); with slirp4netns, every UDP port (`--disable-host-loopback` drops replies to
//! clients on the host's loopback).
//!
//! capsa binds the host sockets itself (so a busy port fails the start), then a
//! detached process takes them over: it enters the container's network namespace and,
//! per client address, keeps a socket there connected to `127.0.0.1:<container port>`,
//! so the container sees the client as a loopback peer (as with pasta's own loopback
//! path) and its replies travel back from the published address and port. Idle clients
//! are dropped after a minute. It exits with the helper process (a pidfd), which the
//! teardown stops.
//!
//! The forwarder is the current executable run again: a function placed in
//! `.init_array` runs before `main` (before the test harness in tests) and takes over
//! when the environment asks for it, so any binary that links the engine can be its
//! own forwarder without a `main` that knows about it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Helper, PortMapping, Protocol, detach};

/// Set in the forwarder: the container port of each host socket, in descriptor order.
const ENV_FORWARD: &str = "_CAPSA_UDP_FORWARD";
const NETNS_FD: RawFd = 3;
const HELPER_FD: RawFd = 4;
const FIRST_SOCKET_FD: RawFd = 5;
/// A client silent this long loses its socket in the namespace.
const IDLE: Duration = Duration::from_secs(60);
/// At most this many clients at once; the least recently active one makes room.
const MAX_CLIENTS: usize = 1024;

/// One published UDP port pair the forwarder serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Forward {
    /// `None`: every address (IPv6 and IPv4 where the host has IPv6).
    pub host_addr: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
}

/// Splits `ports` into what `helper` publishes itself and what the forwarder serves.
pub(crate) fn split(helper: Helper, ports: &[PortMapping]) -> (Vec<PortMapping>, Vec<Forward>) {
    let mut own = Vec::new();
    let mut fwd = Vec::new();
    for m in ports {
        let ours = m.protocol == Protocol::Udp
            && match helper {
                Helper::Pasta => m.host_port != m.container_port,
                Helper::Slirp4netns => true,
            };
        if !ours {
            own.push(m.clone());
            continue;
        }
        for (h, c) in m.pairs() {
            fwd.push(Forward {
                host_addr: m.host_addr(),
                host_port: h,
                container_port: c,
            });
        }
    }
    (own, fwd)
}

/// Binds the host socket of `f`.
pub(crate) fn bind(f: &Forward) -> io::Result<UdpSocket> {
    match f.host_addr {
        Some(a) => UdpSocket::bind((a, f.host_port)),
        // `[::]` also takes IPv4 (bindv6only is off by default); without IPv6, 0.0.0.0.
        None => UdpSocket::bind((Ipv6Addr::UNSPECIFIED, f.host_port))
            .or_else(|_| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, f.host_port))),
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static FORWARD_HOOK: extern "C" fn() = forward_hook;

extern "C" fn forward_hook() {
    // SAFETY: getenv before main, while nothing else runs.
    let v = unsafe { libc::getenv(c"_CAPSA_UDP_FORWARD".as_ptr()) };
    if v.is_null() {
        return;
    }
    // SAFETY: getenv returned a NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(v) }.to_string_lossy();
    let Some(ports) = v
        .split(',')
        .map(|p| p.parse::<u16>().ok())
        .collect::<Option<Vec<u16>>>()
    else {
        return;
    };
    // SAFETY: `start` placed these descriptors; nobody else owns them in this process.
    let (netns, helper, sockets) = unsafe {
        (
            OwnedFd::from_raw_fd(NETNS_FD),
            OwnedFd::from_raw_fd(HELPER_FD),
            ports
                .iter()
                .enumerate()
                .map(|(i, p)| (UdpSocket::from_raw_fd(FIRST_SOCKET_FD + i as RawFd), *p))
                .collect(),
        )
    };
    // SAFETY: prctl on ourselves.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"capsa-udpfwd".as_ptr()) };
    let code = match serve(netns, helper, sockets) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    // SAFETY: the forwarder ends here; nothing of main may run.
    unsafe { libc::_exit(code) }
}

struct Client {
    listener: usize,
    peer: SocketAddr,
    sock: UdpSocket,
    last: Instant,
}

/// The forwarder's loop; returns when the helper exits.
fn serve(netns: OwnedFd, helper: OwnedFd, listeners: Vec<(UdpSocket, u16)>) -> io::Result<()> {
    // SAFETY: setns on our own, single-threaded process: sockets made from here on
    // live in the container's namespace, the listeners stay in the host's.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    drop(netns);
    for (l, _) in &listeners {
        l.set_nonblocking(true)?;
    }
    let mut clients: Vec<Client> = Vec::new();
    let mut index: HashMap<(usize, SocketAddr), usize> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(1 + listeners.len() + clients.len());
        let pfd = |fd: RawFd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        fds.push(pfd(helper.as_raw_fd()));
        fds.extend(listeners.iter().map(|(l, _)| pfd(l.as_raw_fd())));
        fds.extend(clients.iter().map(|c| pfd(c.sock.as_raw_fd())));
        // SAFETY: fds is a valid array of pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 10_000) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[0].revents != 0 {
            return Ok(());
        }
        let now = Instant::now();
        for (i, (l, cport)) in listeners.iter().enumerate() {
            if fds[1 + i].revents == 0 {
                continue;
            }
            while let Ok((n, peer)) = l.recv_from(&mut buf) {
                let slot = match index.get(&(i, peer)) {
                    Some(s) => *s,
                    None => {
                        if clients.len() >= MAX_CLIENTS
                            && let Some(oldest) =
                                (0..clients.len()).min_by_key(|k| clients[*k].last)
                        {
                            let c = clients.swap_remove(oldest);
                            index.remove(&(c.listener, c.peer));
                            if let Some(moved) = clients.get(oldest) {
                                index.insert((moved.listener, moved.peer), oldest);
                            }
                        }
                        let Ok(sock) = connect_inside(*cport) else {
                            continue;
                        };
                        clients.push(Client {
                            listener: i,
                            peer,
                            sock,
                            last: now,
                        });
                        index.insert((i, peer), clients.len() - 1);
                        clients.len() - 1
                    }
                };
                let c = &mut clients[slot];
                c.last = now;
                // A refused send (nothing listens yet) is the client's loss, as in UDP.
                let _ = c.sock.send(&buf[..n]);
            }
        }
        let first_client = 1 + listeners.len();
        for (k, c) in clients.iter_mut().enumerate() {
            if fds.get(first_client + k).is_none_or(|p| p.revents == 0) {
                continue;
            }
            loop {
                match c.sock.recv(&mut buf) {
                    Ok(n) => {
                        c.last = now;
                        let _ = listeners[c.listener].0.send_to(&buf[..n], c.peer);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // An ICMP error for an earlier datagram; the socket stays usable.
                    Err(_) => break,
                }
            }
        }
        let before = clients.len();
        clients.retain(|c| now.duration_since(c.last) < IDLE);
        if clients.len() != before {
            index = clients
                .iter()
                .enumerate()
                .map(|(k, c)| ((c.listener, c.peer), k))
                .collect();
        }
    }
}

/// A socket in the container's namespace connected to its loopback `port`.
fn connect_inside(port: u16) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    s.connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Starts the forwarder for `sockets` (bound by [`bind`], paired with the container
/// port each serves) in `netns`; it exits when the process of the pidfd `helper` does.
/// Returns its pid.
pub(crate) fn start(
    netns: BorrowedFd<'_>,
    helper: BorrowedFd<'_>,
    sockets: &[(UdpSocket, u16)],
) -> io::Result<i32> {
    // Referenced here so the linker keeps the hook in every binary that can call this.
    std::hint::black_box(&FORWARD_HOOK);
    let ports: Vec<String> = sockets.iter().map(|(_, p)| p.to_string()).collect();
    let mut fds = vec![(netns, NETNS_FD), (helper, HELPER_FD)];
    for (i, (s, _)) in sockets.iter().enumerate() {
        fds.push((s.as_fd(), FIRST_SOCKET_FD + i as RawFd));
    }
    detach::spawn_detached(&detach::Exec {
        path: Path::new("/proc/self/exe"),
        argv: vec![OsStr::new("capsa-udpfwd")],
        env: vec![format!("{ENV_FORWARD}={}", ports.join(","))],
        fds,
        cwd: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ports::parse_publish_all;

    #[test]
    fn which_ports_are_forwarded() {
        let ports = parse_publish_all(&[
            "8080:80",
            "127.0.0.1:9999:7/udp",
            "5353:5353/udp",
            "[::1]:6000-6001:60-61/udp",
        ])
        .unwrap();
        let (own, fwd) = split(Helper::Pasta, &ports);
        let own: Vec<String> = own.iter().map(|m| m.to_string()).collect();
        assert_eq!(own, ["8080:80/tcp", "5353:5353/udp"]);
        let at = |a: Option<&str>, h, c| Forward {
            host_addr: a.map(|a| a.parse().unwrap()),
            host_port: h,
            container_port: c,
        };
        assert_eq!(
            fwd,
            [
                at(Some("127.0.0.1"), 9999, 7),
                at(Some("::1"), 6000, 60),
                at(Some("::1"), 6001, 61),
            ]
        );
        // slirp4netns loses replies to loopback clients on every UDP port.
        let (own, fwd) = split(Helper::Slirp4netns, &ports);
        assert_eq!(own.len(), 1);
        assert_eq!(fwd.len(), 4);
        assert_eq!(fwd[1], at(None, 5353, 5353));
    }
}
