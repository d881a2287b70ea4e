//! Published ports: the `-p`/`--publish` grammar of Docker and Podman, `-P` (every port
//! the image exposes), random host ports, and the two ways they are shown: Docker's
//! `NetworkSettings.Ports` map and the PORTS column of `ps`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("invalid --publish (-p) value {value:?}: {reason}")]
    Publish { value: String, reason: String },
    #[error("invalid exposed port {value:?} in the image config: {reason}")]
    Exposed { value: String, reason: String },
    #[error("host port {port}/{protocol} is published twice ({first} and {second})")]
    Duplicate {
        port: u16,
        protocol: Protocol,
        first: String,
        second: String,
    },
    #[error("finding a free host port for {mapping}: {source}")]
    NoFreePort {
        mapping: String,
        #[source]
        source: io::Error,
    },
}

/// The transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(format!(
                "unknown protocol {s:?} (expected tcp, udp or sctp)"
            )),
        }
    }
}

fn one() -> u16 {
    1
}

/// One published port or range of ports, stored as Podman stores it (same JSON fields).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address to listen on, without brackets; empty for every address.
    #[serde(default)]
    pub host_ip: String,
    pub container_port: u16,
    /// The first host port; 0 until [`assign_host_ports`] picks a free one.
    #[serde(default)]
    pub host_port: u16,
    /// How many consecutive ports, from `container_port` and `host_port` on (at least 1).
    #[serde(default = "one")]
    pub range: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    /// The last container port of the range.
    pub fn container_end(&self) -> u16 {
        self.container_port.saturating_add(self.range.max(1) - 1)
    }

    /// The last host port of the range (meaningless while `host_port` is 0).
    pub fn host_end(&self) -> u16 {
        self.host_port.saturating_add(self.range.max(1) - 1)
    }

    /// `(host port, container port)` for each port of the range.
    pub fn pairs(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        (0..self.range.max(1)).map(move |i| {
            (
                self.host_port.saturating_add(i),
                self.container_port.saturating_add(i),
            )
        })
    }

    /// The parsed host address, `None` for every address.
    pub fn host_addr(&self) -> Option<IpAddr> {
        self.host_ip.parse().ok()
    }
}

/// `-p` syntax, for messages: `[ip:]hostPort:containerPort/proto`.
impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_addr() {
            Some(IpAddr::V6(a)) => write!(f, "[{a}]:")?,
            Some(a) => write!(f, "{a}:")?,
            None => {}
        }
        if self.host_port != 0 {
            write_range(f, self.host_port, self.host_end())?;
        }
        if self.host_port != 0 || !self.host_ip.is_empty() {
            f.write_str(":")?;
        }
        write_range(f, self.container_port, self.container_end())?;
        write!(f, "/{}", self.protocol)
    }
}

fn write_range(f: &mut impl fmt::Write, start: u16, end: u16) -> fmt::Result {
    if end > start {
        write!(f, "{start}-{end}")
    } else {
        write!(f, "{start}")
    }
}

/// A port or `start-end` range: (first port, number of ports).
fn parse_range(s: &str, what: &str) -> Result<(u16, u16), String> {
    let num = |p: &str| -> Result<u16, String> {
        if p.is_empty() {
            return Err(format!("{what} port is empty"));
        }
        if !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{what} port {p:?} is not a number"));
        }
        match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            _ => Err(format!("{what} port {p} is out of range 1-65535")),
        }
    };
    match s.split_once('-') {
        None => Ok((num(s)?, 1)),
        Some((a, b)) => {
            let (start, end) = (num(a)?, num(b)?);
            if end < start {
                return Err(format!("{what} port range {s} ends before it starts"));
            }
            Ok((start, end - start + 1))
        }
    }
}

/// Parses one `-p`/`--publish` value: `[ip:][hostPort:]containerPort[/protocol]`, with
/// ranges (`8000-8010:80-90`), IPv6 addresses in brackets (`[::1]:8080:80`) and an
/// empty or missing host port meaning a random free one (`host_port` 0).
pub fn parse_publish(value: &str) -> Result<PortMapping, PortError> {
    let err = |reason: String| PortError::Publish {
        value: value.to_string(),
        reason,
    };
    let (spec, protocol) = match value.rsplit_once('/') {
        Some((spec, proto)) => (spec, proto.parse::<Protocol>().map_err(err)?),
        None => (value, Protocol::Tcp),
    };
    let (ip, rest) = if let Some(after) = spec.strip_prefix('[') {
        let (ip, rest) = after
            .split_once(']')
            .ok_or_else(|| err("missing ] after the IPv6 address".into()))?;
        let rest = rest.strip_prefix(':').ok_or_else(|| {
            err("expected :hostPort:containerPort after the address in brackets".into())
        })?;
        if !rest.contains(':') {
            return Err(err(
                "an address needs a host port (which may be empty): ip:hostPort:containerPort"
                    .into(),
            ));
        }
        (Some(ip), rest)
    } else {
        match spec.matches(':').count() {
            0 | 1 => (None, spec),
            2 => {
                let (ip, rest) = spec.split_once(':').unwrap_or_default();
                (Some(ip), rest)
            }
            _ => {
                return Err(err(
                    "too many colons: the format is [ip:][hostPort:]containerPort[/protocol], with IPv6 addresses in brackets ([::1]:8080:80)".into(),
                ));
            }
        }
    };
    let host_ip = match ip {
        None => String::new(),
        Some("") => return Err(err("the host address is empty".into())),
        Some(ip) => ip
            .parse::<IpAddr>()
            .map_err(|_| err(format!("{ip:?} is not an IP address")))?
            .to_string(),
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let (container_port, range) = parse_range(container, "container").map_err(err)?;
    let host_port = if host.is_empty() {
        0
    } else {
        let (host_port, host_range) = parse_range(host, "host").map_err(err)?;
        if host_range != range {
            return Err(err(format!(
                "the host port range {host} ({host_range} ports) and the container port range {container} ({range} ports) differ in length"
            )));
        }
        host_port
    };
    Ok(PortMapping {
        host_ip,
        container_port,
        host_port,
        range,
        protocol,
    })
}

/// Parses every `-p` value, then checks that no host port is published twice.
pub fn parse_publish_all<S: AsRef<str>>(values: &[S]) -> Result<Vec<PortMapping>, PortError> {
    let out = values
        .iter()
        .map(|v| parse_publish(v.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    check_conflicts(&out)?;
    Ok(out)
}

/// Parses an `ExposedPorts` key of an image config (`80/tcp`, `53/udp`, `8000-8010/tcp`,
/// or a bare `80` meaning tcp).
pub fn parse_exposed(value: &str) -> Result<(u16, u16, Protocol), PortError> {
    let err = |reason: String| PortError::Exposed {
        value: value.to_string(),
        reason,
    };
    let (ports, protocol) = match value.rsplit_once('/') {
        Some((p, proto)) => (p, proto.parse::<Protocol>().map_err(err)?),
        None => (value, Protocol::Tcp),
    };
    let (port, range) = parse_range(ports, "container").map_err(err)?;
    Ok((port, range, protocol))
}

/// `-P`: a mapping to random host ports for each exposed port (the keys of the image
/// config's `ExposedPorts`) that `published` does not publish already.
pub fn publish_exposed<S: AsRef<str>>(
    published: &[PortMapping],
    exposed: &[S],
) -> Result<Vec<PortMapping>, PortError> {
    let mut taken: BTreeSet<(Protocol, u16)> = published
        .iter()
        .flat_map(|m| m.pairs().map(move |(_, c)| (m.protocol, c)))
        .collect();
    let mut out = Vec::new();
    for e in exposed {
        let (port, range, protocol) = parse_exposed(e.as_ref())?;
        for p in port..=port + (range - 1) {
            if taken.insert((protocol, p)) {
                out.push(PortMapping {
                    host_ip: String::new(),
                    container_port: p,
                    host_port: 0,
                    range: 1,
                    protocol,
                });
            }
        }
    }
    Ok(out)
}

fn ips_overlap(a: &str, b: &str) -> bool {
    let any = |s: &str| s.is_empty() || s.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    a == b || any(a) || any(b)
}

/// Fails when two mappings would listen on the same host port and protocol.
pub fn check_conflicts(mappings: &[PortMapping]) -> Result<(), PortError> {
    for (i, a) in mappings.iter().enumerate() {
        if a.host_port == 0 {
            continue;
        }
        for b in &mappings[i + 1..] {
            if b.host_port == 0 || a.protocol != b.protocol || !ips_overlap(&a.host_ip, &b.host_ip)
            {
                continue;
            }
            let (lo, hi) = (a.host_port.max(b.host_port), a.host_end().min(b.host_end()));
            if lo <= hi {
                return Err(PortError::Duplicate {
                    port: lo,
                    protocol: a.protocol,
                    first: a.to_string(),
                    second: b.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Something bound to a host port, held until every random port is chosen so that two
/// mappings never get the same one.
enum Held {
    Tcp(#[allow(dead_code)] TcpListener),
    Udp(#[allow(dead_code)] UdpSocket),
}

fn bind(ip: IpAddr, port: u16, protocol: Protocol) -> io::Result<(Held, u16)> {
    let addr = SocketAddr::new(ip, port);
    // SCTP cannot be probed with std; a free TCP port of the same number is a good guess.
    match protocol {
        Protocol::Udp => {
            let s = UdpSocket::bind(addr)?;
            let p = s.local_addr()?.port();
            Ok((Held::Udp(s), p))
        }
        Protocol::Tcp | Protocol::Sctp => {
            let s = TcpListener::bind(addr)?;
            let p = s.local_addr()?.port();
            Ok((Held::Tcp(s), p))
        }
    }
}

/// The kernel's range of ephemeral ports, where random host ports come from.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .filter(|(a, b)| a < b)
        .unwrap_or((32768, 60999))
}

/// Gives every mapping without a host port (`host_port` 0) a free one, as `create`
/// does: one port from the kernel, or for a range a free run of consecutive ports.
/// Ports are free when this runs; nothing reserves them until the container starts.
pub fn assign_host_ports(mappings: &mut [PortMapping]) -> Result<(), PortError> {
    let mut held = Vec::new();
    let mut used: BTreeSet<(Protocol, u16)> = mappings
        .iter()
        .filter(|m| m.host_port != 0)
        .flat_map(|m| m.pairs().map(move |(h, _)| (m.protocol, h)))
        .collect();
    for m in mappings.iter_mut().filter(|m| m.host_port == 0) {
        let ip = m.host_addr().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let shown = m.to_string();
        let no_port = |source| PortError::NoFreePort {
            mapping: shown.clone(),
            source,
        };
        let range = m.range.max(1);
        if range == 1 {
            let mut last = None;
            for _ in 0..32 {
                match bind(ip, 0, m.protocol) {
                    Ok((h, p)) => {
                        held.push(h);
                        if used.insert((m.protocol, p)) {
                            m.host_port = p;
                            break;
                        }
                    }
                    Err(e) => {
                        last = Some(e);
                        break;
                    }
                }
            }
            if m.host_port == 0 {
                return Err(no_port(last.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::AddrInUse, "no free port")
                })));
            }
            continue;
        }
        let (lo, hi) = ephemeral_range();
        if hi - lo < range {
            return Err(no_port(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "the range of {range} ports is larger than the ephemeral port range {lo}-{hi}"
                ),
            )));
        }
        'attempt: for _ in 0..64 {
            let start = rand::random_range(lo..=hi - range + 1);
            let mut these = Vec::new();
            for p in start..start + range {
                if used.contains(&(m.protocol, p)) {
                    continue 'attempt;
                }
                match bind(ip, p, m.protocol) {
                    Ok((h, _)) => these.push(h),
                    Err(_) => continue 'attempt,
                }
            }
            held.extend(these);
            for p in start..start + range {
                used.insert((m.protocol, p));
            }
            m.host_port = start;
            break;
        }
        if m.host_port == 0 {
            return Err(no_port(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("no run of {range} free consecutive ports found"),
            )));
        }
    }
    drop(held);
    check_conflicts(mappings)
}

/// One entry of Docker's `NetworkSettings.Ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    #[serde(rename = "HostIp")]
    pub host_ip: String,
    #[serde(rename = "HostPort")]
    pub host_port: String,
}

/// Docker's `NetworkSettings.Ports`: `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`,
/// one key per container port; exposed ports that are not published map to `null`.
pub fn inspect_ports<S: AsRef<str>>(
    mappings: &[PortMapping],
    exposed: &[S],
) -> BTreeMap<String, Option<Vec<PortBinding>>> {
    let mut out: BTreeMap<String, Option<Vec<PortBinding>>> = BTreeMap::new();
    for e in exposed {
        if let Ok((port, range, protocol)) = parse_exposed(e.as_ref()) {
            for p in port..=port + (range - 1) {
                out.entry(format!("{p}/{protocol}")).or_insert(None);
            }
        }
    }
    for m in mappings {
        for (h, c) in m.pairs() {
            out.entry(format!("{c}/{}", m.protocol))
                .or_insert(None)
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: m.host_ip.clone(),
                    // Not assigned yet: Docker shows an empty port too.
                    host_port: if m.host_port == 0 {
                        String::new()
                    } else {
                        h.to_string()
                    },
                });
        }
    }
    out
}

/// Podman's PORTS column: `0.0.0.0:8080->80/tcp, 0.0.0.0:9000-9002->90-92/udp`. Mappings
/// are grouped by host address and protocol, ordered by host port, and runs that are
/// consecutive on both sides are shown as one range.
pub fn ps_ports(mappings: &[PortMapping]) -> String {
    let mut groups: BTreeMap<(String, Protocol), Vec<(u16, u16)>> = BTreeMap::new();
    for m in mappings {
        groups
            .entry((m.host_ip.clone(), m.protocol))
            .or_default()
            .extend(m.pairs());
    }
    let mut parts = Vec::new();
    for ((ip, protocol), mut pairs) in groups {
        pairs.sort_unstable();
        pairs.dedup();
        let ip = if ip.is_empty() {
            "0.0.0.0".to_string()
        } else {
            ip
        };
        let mut i = 0;
        while i < pairs.len() {
            let (h0, c0) = pairs[i];
            let mut n = 1u16;
            while let Some(&(h, c)) = pairs.get(i + n as usize) {
                if h0.checked_add(n) == Some(h) && c0.checked_add(n) == Some(c) {
                    n += 1;
                } else {
                    break;
                }
            }
            let mut s = format!("{ip}:");
            let _ = write_range(&mut s, h0, h0 + (n - 1));
            s.push_str("->");
            let _ = write_range(&mut s, c0, c0 + (n - 1));
            s.push('/');
            s.push_str(protocol.as_str());
            parts.push(s);
            i += n as usize;
        }
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(
        host_ip: &str,
        host_port: u16,
        container_port: u16,
        range: u16,
        protocol: Protocol,
    ) -> PortMapping {
        PortMapping {
            host_ip: host_ip.into(),
            container_port,
            host_port,
            range,
            protocol,
        }
    }

    #[test]
    fn publish_grammar() {
        use Protocol::*;
        let cases: &[(&str, PortMapping)] = &[
            ("80", pm("", 0, 80, 1, Tcp)),
            ("8080:80", pm("", 8080, 80, 1, Tcp)),
            ("8080:80/udp", pm("", 8080, 80, 1, Udp)),
            ("8080:80/SCTP", pm("", 8080, 80, 1, Sctp)),
            ("127.0.0.1:8080:80", pm("127.0.0.1", 8080, 80, 1, Tcp)),
            ("127.0.0.1::80", pm("127.0.0.1", 0, 80, 1, Tcp)),
            ("0.0.0.0:8080:80/tcp", pm("0.0.0.0", 8080, 80, 1, Tcp)),
            ("[::1]:8080:80", pm("::1", 8080, 80, 1, Tcp)),
            ("[::1]::80/udp", pm("::1", 0, 80, 1, Udp)),
            ("[fd00:0::2]:8080:80", pm("fd00::2", 8080, 80, 1, Tcp)),
            ("8000-8010:80-90", pm("", 8000, 80, 11, Tcp)),
            ("80-82", pm("", 0, 80, 3, Tcp)),
            (":80", pm("", 0, 80, 1, Tcp)),
            (
                "10.0.0.1:9000-9002:90-92/udp",
                pm("10.0.0.1", 9000, 90, 3, Udp),
            ),
            ("65535:65535", pm("", 65535, 65535, 1, Tcp)),
            ("1-1:5-5", pm("", 1, 5, 1, Tcp)),
        ];
        for (input, want) in cases {
            let got = parse_publish(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&got, want, "{input}");
        }
    }

    #[test]
    fn publish_errors_name_flag_value_and_reason() {
        let cases: &[(&str, &str)] = &[
            ("0:80", "host port 0 is out of range 1-65535"),
            ("80:0", "container port 0 is out of range 1-65535"),
            ("70000:80", "host port 70000 is out of range 1-65535"),
            ("8080:99999", "container port 99999 is out of range"),
            (
                "8000-8010:80-85",
                "(11 ports) and the container port range 80-85 (6 ports) differ",
            ),
            ("8000-8002:80", "differ in length"),
            ("8080:80/xyz", "unknown protocol \"xyz\""),
            ("8080:80/", "unknown protocol \"\""),
            ("1.2.3:80:80", "\"1.2.3\" is not an IP address"),
            ("::1:8080:80", "IPv6 addresses in brackets"),
            ("[::1:80:80", "missing ]"),
            ("[::1]:80", "needs a host port"),
            ("[::1]8080:80", "expected :hostPort"),
            (":8080:80", "host address is empty"),
            ("80-", "container port is empty"),
            ("90-80", "range 90-80 ends before it starts"),
            ("http", "container port \"http\" is not a number"),
            ("", "container port is empty"),
            ("+80", "not a number"),
        ];
        for (input, want) in cases {
            let e = parse_publish(input).expect_err(input).to_string();
            assert!(
                e.starts_with(&format!("invalid --publish (-p) value {input:?}: ")),
                "{input}: {e}"
            );
            assert!(e.contains(want), "{input}: {e} (want {want:?})");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "80/tcp",
            "8080:80/udp",
            "127.0.0.1:8080:80/tcp",
            "127.0.0.1::80/tcp",
            "[::1]:8000-8002:80-82/sctp",
        ] {
            assert_eq!(parse_publish(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let e = parse_publish_all(&["8080:80", "127.0.0.1:8080:81"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "host port 8080/tcp is published twice (8080:80/tcp and 127.0.0.1:8080:81/tcp)"
        );
        assert!(parse_publish_all(&["8000-8010:80-90", "8010:100"]).is_err());
        // Different protocols or different addresses do not clash.
        parse_publish_all(&["8080:80", "8080:80/udp"]).unwrap();
        parse_publish_all(&["127.0.0.1:8080:80", "127.0.0.2:8080:80"]).unwrap();
    }

    #[test]
    fn exposed_ports() {
        let published = parse_publish_all(&["8080:80"]).unwrap();
        let extra =
            publish_exposed(&published, &["80/tcp", "53/udp", "8000-8001/tcp", "443"]).unwrap();
        let got: Vec<String> = extra.iter().map(|m| m.to_string()).collect();
        assert_eq!(got, ["53/udp", "8000/tcp", "8001/tcp", "443/tcp"]);
        let e = publish_exposed(&[], &["80/quic"]).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid exposed port \"80/quic\" in the image config"),
            "{e}"
        );
    }

    #[test]
    fn random_host_ports_are_free_and_distinct() {
        let mut m = parse_publish_all(&["80", "81", "127.0.0.1::90-93/udp", "5000:5000"]).unwrap();
        assign_host_ports(&mut m).unwrap();
        assert!(m.iter().all(|m| m.host_port != 0));
        assert_ne!(m[0].host_port, m[1].host_port);
        assert_eq!(m[2].range, 4);
        assert_eq!(m[3].host_port, 5000);
        // The range is free: every port of it can be bound.
        let held: Vec<_> = m[2]
            .pairs()
            .map(|(h, _)| UdpSocket::bind(("127.0.0.1", h)).unwrap())
            .collect();
        assert_eq!(held.len(), 4);
    }

    #[test]
    fn docker_inspect_map() {
        let m = parse_publish_all(&["8080:80", "127.0.0.1:9000-9001:90-91/udp", "[::1]:8081:80"])
            .unwrap();
        let got = serde_json::to_value(inspect_ports(&m, &["80/tcp", "443/tcp"])).unwrap();
        let want = serde_json::json!({
            "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "::1", "HostPort": "8081"}],
            "90/udp": [{"HostIp": "127.0.0.1", "HostPort": "9000"}],
            "91/udp": [{"HostIp": "127.0.0.1", "HostPort": "9001"}],
            "443/tcp": null,
        });
        assert_eq!(got, want);
    }

    #[test]
    fn ps_column_like_podman() {
        // What podman 4.3 prints for the same -p flags (measured).
        let flags = [
            "8080:80",
            "8081:81",
            "9000-9002:90-92/udp",
            "127.0.0.1:7000:70/tcp",
            "7001:71",
            "8082:83",
            "5353:53/udp",
            "6000:60/sctp",
            "33553:85",
            "37493:86",
            "[::1]:7002:72",
            "127.0.0.1:42497:87",
        ];
        let m = parse_publish_all(&flags).unwrap();
        assert_eq!(
            ps_ports(&m),
            "0.0.0.0:7001->71/tcp, 0.0.0.0:8080-8081->80-81/tcp, 0.0.0.0:8082->83/tcp, \
             0.0.0.0:33553->85/tcp, 0.0.0.0:37493->86/tcp, 0.0.0.0:5353->53/udp, \
             0.0.0.0:9000-9002->90-92/udp, 0.0.0.0:6000->60/sctp, 127.0.0.1:7000->70/tcp, \
             127.0.0.1:42497->87/tcp, ::1:7002->72/tcp"
        );
        let m = parse_publish_all(&["34443:80", "8070:8070"]).unwrap();
        assert_eq!(
            ps_ports(&m),
            "0.0.0.0:8070->8070/tcp, 0.0.0.0:34443->80/tcp"
        );
        assert_eq!(ps_ports(&[]), "");
    }

    #[test]
    fn serde_shape_is_podmans() {
        let m = parse_publish("127.0.0.1:8080:80/udp").unwrap();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"host_ip": "127.0.0.1", "container_port": 80, "host_port": 8080, "range": 1, "protocol": "udp"})
        );
        let back: PortMapping =
            serde_json::from_value(serde_json::json!({"container_port": 80, "protocol": "tcp"}))
                .unwrap();
        assert_eq!(back, pm("", 0, 80, 1, Protocol::Tcp));
    }
}
