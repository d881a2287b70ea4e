//! The network files of a container, written into a directory of the caller's and
//! bind-mounted over `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`, generated as
//! Podman 4.3 generates them (measured with its slirp4netns, none and host modes):
//!
//! - hosts: `--add-host` entries first, then the host's /etc/hosts entries (with
//!   localhost lines added when it has none), `host.containers.internal`, and the
//!   container's own hostname and name on its address (127.0.0.1 with `--network
//!   none`; none with `host` and `ns:`, where the host's own entries apply);
//! - resolv.conf: the host's, minus loopback nameservers in a private network (they
//!   cannot be reached from it), with the helper's DNS forwarder first (10.0.2.3 for
//!   slirp4netns, 169.254.1.1 for pasta); `--dns`, `--dns-search` (`.` for none) and
//!   `--dns-option` replace the host's values. `none` gets no resolv.conf;
//! - hostname: the hostname.
//!
//! `container:ID` shares the other container's hosts and resolv.conf (mount that
//! container's files); only /etc/hostname is written for it.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::addrs::{self, IfAddr};
use super::{Helper, NetworkMode, pasta, slirp};

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("invalid --add-host value {value:?}: {reason}")]
    AddHost { value: String, reason: String },
    #[error("invalid --dns value {0:?}: not an IP address")]
    Dns(String),
    #[error("invalid --dns-search value {0:?}: a domain has no spaces")]
    DnsSearch(String),
    #[error("invalid --dns-option value {0:?}: an option has no spaces")]
    DnsOption(String),
    #[error("conflicting options: {flag} and the network mode {mode}")]
    Conflict { flag: &'static str, mode: String },
    #[error("--add-host {0}:host-gateway: the host has no address the container could reach it on")]
    NoHostGateway(String),
    #[error(
        "a private network needs its helper chosen before its files are written (network::select_helper)"
    )]
    NoHelper,
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The name Podman gives the host in containers.
pub const HOST_INTERNAL: &str = "host.containers.internal";

/// The address an `--add-host` entry maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddHostIp {
    Addr(IpAddr),
    /// `host-gateway`: the address `host.containers.internal` gets.
    HostGateway,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddHost {
    pub name: String,
    pub ip: AddHostIp,
}

/// Parses `--add-host NAME:IP` (also `NAME=IP`, `NAME:[IPv6]` and `NAME:host-gateway`).
pub fn parse_add_host(value: &str) -> Result<AddHost, FilesError> {
    let err = |reason: &str| FilesError::AddHost {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let (name, ip) = value
        .split_once('=')
        .or_else(|| value.split_once(':'))
        .ok_or_else(|| err("expected NAME:IP"))?;
    if name.is_empty() {
        return Err(err("the host name is empty"));
    }
    if name.chars().any(|c| c.is_whitespace() || c == '#') {
        return Err(err("the host name has a space or #"));
    }
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    let ip = if ip == "host-gateway" {
        AddHostIp::HostGateway
    } else {
        AddHostIp::Addr(
            ip.parse()
                .map_err(|_| err(&format!("{ip:?} is not an IP address (or host-gateway)")))?,
        )
    };
    Ok(AddHost {
        name: name.to_string(),
        ip,
    })
}

/// What a container asked for its network files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileOptions {
    pub hostname: String,
    /// The container's name, an alias of its hostname ("" for none).
    pub name: String,
    pub add_hosts: Vec<AddHost>,
    pub dns: Vec<IpAddr>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
}

impl FileOptions {
    /// From the flags as the container record keeps them.
    pub fn from_flags<S: AsRef<str>>(
        hostname: &str,
        name: &str,
        add_hosts: &[S],
        dns: &[S],
        dns_search: &[S],
        dns_options: &[S],
    ) -> Result<FileOptions, FilesError> {
        let words = |v: &[S], bad: fn(String) -> FilesError| {
            v.iter()
                .map(|s| {
                    let s = s.as_ref();
                    if s.is_empty() || s.chars().any(char::is_whitespace) {
                        Err(bad(s.to_string()))
                    } else {
                        Ok(s.to_string())
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(FileOptions {
            hostname: hostname.to_string(),
            name: name.to_string(),
            add_hosts: add_hosts
                .iter()
                .map(|h| parse_add_host(h.as_ref()))
                .collect::<Result<_, _>>()?,
            dns: dns
                .iter()
                .map(|d| {
                    let d = d.as_ref();
                    d.parse().map_err(|_| FilesError::Dns(d.to_string()))
                })
                .collect::<Result<_, _>>()?,
            dns_search: words(dns_search, FilesError::DnsSearch)?,
            dns_options: words(dns_options, FilesError::DnsOption)?,
        })
    }
}

/// What the files are generated from on the host.
#[derive(Debug, Clone, Default)]
pub struct HostInfo {
    /// The host's /etc/hosts.
    pub hosts: String,
    /// The host's /etc/resolv.conf.
    pub resolv: String,
    pub addrs: Vec<IfAddr>,
    /// /proc/net/route.
    pub route: String,
}

impl HostInfo {
    pub fn read() -> HostInfo {
        HostInfo {
            hosts: fs::read_to_string("/etc/hosts").unwrap_or_default(),
            resolv: fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            addrs: addrs::interface_addresses(),
            route: addrs::read_route(),
        }
    }
}

/// The contents of the three files; `None` for a file the container does not get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub hosts: Option<String>,
    pub resolv_conf: Option<String>,
    pub hostname: String,
}

/// The helper of a private network, from the mode or the caller's choice.
fn private_helper(
    mode: &NetworkMode,
    helper: Option<Helper>,
) -> Result<Option<Helper>, FilesError> {
    match mode {
        NetworkMode::Private(named) => named.or(helper).map(Some).ok_or(FilesError::NoHelper),
        _ => Ok(None),
    }
}

/// The container's IPv4 address in a private network.
pub fn guest_address(helper: Helper, host: &HostInfo) -> Option<Ipv4Addr> {
    match helper {
        Helper::Slirp4netns => Some(slirp::GUEST_ADDR),
        Helper::Pasta => addrs::pasta_guest_ipv4(&host.addrs, &host.route),
    }
}

/// The address `host.containers.internal` gets: the host's first usable address (IPv4
/// first), as Podman picks it. pasta gives the container the addresses of the host's
/// default-route interface, which would lead back into the container, so they are
/// skipped for it; with no other address there is no entry.
pub fn host_internal_address(helper: Option<Helper>, host: &HostInfo) -> Option<IpAddr> {
    let skip = match helper {
        Some(Helper::Pasta) => addrs::default_route_interface(&host.route),
        _ => None,
    };
    let usable: Vec<IpAddr> = host
        .addrs
        .iter()
        .filter(|a| addrs::is_usable(&a.addr) && Some(&a.interface) != skip.as_ref())
        .map(|a| a.addr)
        .collect();
    usable
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| usable.first())
        .copied()
}

/// The entries of a hosts file: (address, names), comments dropped.
fn hosts_entries(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next().unwrap_or_default();
            let mut f = l.split_whitespace();
            let ip = f.next()?;
            let names: Vec<String> = f.map(str::to_string).collect();
            (!names.is_empty()).then(|| (ip.to_string(), names))
        })
        .collect()
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Resolv {
    nameservers: Vec<String>,
    search: Vec<String>,
    options: Vec<String>,
}

fn parse_resolv(text: &str) -> Resolv {
    let mut r = Resolv::default();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        match f.next() {
            Some("nameserver") => r.nameservers.extend(f.next().map(str::to_string)),
            // The last of search and domain wins, as in resolv.conf(5).
            Some("search" | "domain") => r.search = f.map(str::to_string).collect(),
            Some("options") => r.options.extend(f.map(str::to_string)),
            _ => {}
        }
    }
    r
}

fn is_loopback_server(s: &str) -> bool {
    let addr = s.split('%').next().unwrap_or(s);
    addr.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// The three files for a container.
pub fn render(
    mode: &NetworkMode,
    helper: Option<Helper>,
    opts: &FileOptions,
    host: &HostInfo,
) -> Result<Rendered, FilesError> {
    let conflict = |flag| FilesError::Conflict {
        flag,
        mode: mode.to_string(),
    };
    let dns_flags =
        !opts.dns.is_empty() || !opts.dns_search.is_empty() || !opts.dns_options.is_empty();
    if matches!(mode, NetworkMode::None | NetworkMode::Container(_)) && dns_flags {
        return Err(conflict("--dns"));
    }
    if matches!(mode, NetworkMode::Container(_)) && !opts.add_hosts.is_empty() {
        return Err(conflict("--add-host"));
    }
    let helper = private_helper(mode, helper)?;
    let hostname = format!("{}\n", opts.hostname);
    if let NetworkMode::Container(_) = mode {
        return Ok(Rendered {
            hosts: None,
            resolv_conf: None,
            hostname,
        });
    }
    let internal = host_internal_address(helper, host);

    let mut hosts = String::new();
    for h in &opts.add_hosts {
        let ip = match &h.ip {
            AddHostIp::Addr(a) => *a,
            AddHostIp::HostGateway => {
                internal.ok_or_else(|| FilesError::NoHostGateway(h.name.clone()))?
            }
        };
        hosts.push_str(&format!("{ip}\t{}\n", h.name));
    }
    let base = hosts_entries(&host.hosts);
    let named = |n: &str| {
        base.iter().any(|(_, names)| names.iter().any(|x| x == n))
            || opts.add_hosts.iter().any(|h| h.name == n)
    };
    if !named("localhost") {
        hosts.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
    }
    for (ip, names) in &base {
        hosts.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    if let Some(ip) = internal.filter(|_| !named(HOST_INTERNAL)) {
        hosts.push_str(&format!("{ip}\t{HOST_INTERNAL}\n"));
    }
    let own = match (mode, helper) {
        (NetworkMode::Private(_), Some(h)) => {
            Some(guest_address(h, host).unwrap_or(Ipv4Addr::LOCALHOST))
        }
        (NetworkMode::None, _) => Some(Ipv4Addr::LOCALHOST),
        _ => None,
    };
    if let Some(ip) = own.filter(|_| !opts.hostname.is_empty()) {
        let mut names = opts.hostname.clone();
        if !opts.name.is_empty() && opts.name != opts.hostname {
            names.push(' ');
            names.push_str(&opts.name);
        }
        hosts.push_str(&format!("{ip}\t{names}\n"));
    }

    let resolv_conf = if let NetworkMode::None = mode {
        None
    } else {
        let h = parse_resolv(&host.resolv);
        let nameservers: Vec<String> = if !opts.dns.is_empty() {
            opts.dns.iter().map(IpAddr::to_string).collect()
        } else if let Some(helper) = helper {
            let forwarder = match helper {
                Helper::Pasta => pasta::DNS_FORWARD,
                Helper::Slirp4netns => slirp::DNS_ADDR,
            };
            std::iter::once(forwarder.to_string())
                .chain(h.nameservers.into_iter().filter(|s| !is_loopback_server(s)))
                .collect()
        } else {
            h.nameservers
        };
        let search = match opts.dns_search.as_slice() {
            [] => h.search,
            [dot] if dot == "." => Vec::new(),
            s => s.to_vec(),
        };
        let options = if opts.dns_options.is_empty() {
            h.options
        } else {
            opts.dns_options.clone()
        };
        let mut out = String::new();
        if !search.is_empty() {
            out.push_str(&format!("search {}\n", search.join(" ")));
        }
        for n in nameservers {
            out.push_str(&format!("nameserver {n}\n"));
        }
        if !options.is_empty() {
            out.push_str(&format!("options {}\n", options.join(" ")));
        }
        Some(out)
    };
    Ok(Rendered {
        hosts: Some(hosts),
        resolv_conf,
        hostname,
    })
}

/// A generated file and where it goes in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMount {
    pub source: PathBuf,
    pub destination: &'static str,
}

impl FileMount {
    /// The OCI mount, as Podman mounts these files (read-write, private).
    pub fn oci(&self) -> serde_json::Value {
        serde_json::json!({
            "destination": self.destination,
            "type": "bind",
            "source": self.source,
            "options": ["bind", "rprivate"],
        })
    }
}

fn write_file(dir: &Path, name: &str, text: &str) -> Result<PathBuf, FilesError> {
    let path = dir.join(name);
    let err = |source| FilesError::Write {
        path: path.clone(),
        source,
    };
    let mut f = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    // Readable by any user in the container.
    f.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(err)?;
    f.persist(&path).map_err(|e| err(e.error))?;
    Ok(path)
}

/// Writes the container's network files into `dir` (hosts, resolv.conf, hostname) and
/// returns the bind mounts to add to its spec. `helper` is [`super::select_helper`]'s
/// choice for a private network, `None` otherwise.
pub fn write(
    dir: &Path,
    mode: &NetworkMode,
    helper: Option<Helper>,
    opts: &FileOptions,
) -> Result<Vec<FileMount>, FilesError> {
    write_with(dir, mode, helper, opts, &HostInfo::read())
}

pub fn write_with(
    dir: &Path,
    mode: &NetworkMode,
    helper: Option<Helper>,
    opts: &FileOptions,
    host: &HostInfo,
) -> Result<Vec<FileMount>, FilesError> {
    let r = render(mode, helper, opts, host)?;
    fs::create_dir_all(dir).map_err(|source| FilesError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut mounts = Vec::new();
    for (name, dest, text) in [
        ("hosts", "/etc/hosts", r.hosts.as_deref()),
        ("resolv.conf", "/etc/resolv.conf", r.resolv_conf.as_deref()),
        ("hostname", "/etc/hostname", Some(r.hostname.as_str())),
    ] {
        if let Some(text) = text {
            mounts.push(FileMount {
                source: write_file(dir, name, text)?,
                destination: dest,
            });
        }
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine the podman 4.3 outputs below were measured on.
    fn host() -> HostInfo {
        let a = |i: &str, s: &str| IfAddr {
            interface: i.into(),
            addr: s.parse().unwrap(),
        };
        HostInfo {
            hosts: "127.0.0.1 localhost\n127.0.0.1 runsc\n# comment\n127.0.0.1 vm\n".into(),
            resolv: "nameserver 10.255.255.53\n".into(),
            addrs: vec![
                a("lo", "127.0.0.1"),
                a("eth0", "192.0.2.2"),
                a("podman0", "10.88.0.1"),
                a("lo", "::1"),
                a("eth0", "fd00::2"),
                a("eth0", "fe80::fc:ff:fe00:1"),
            ],
            route: "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n"
                .into(),
        }
    }

    fn opts(add_hosts: &[&str], dns: &[&str], search: &[&str], options: &[&str]) -> FileOptions {
        FileOptions::from_flags(
            "3e24ec168380",
            "romantic_lederberg",
            add_hosts,
            dns,
            search,
            options,
        )
        .unwrap()
    }

    #[test]
    fn slirp4netns_like_podman() {
        // podman run --network slirp4netns --add-host foo:1.2.3.4 (podman 4.3.1)
        let r = render(
            &NetworkMode::Private(Some(Helper::Slirp4netns)),
            None,
            &opts(&["foo:1.2.3.4"], &[], &[], &[]),
            &host(),
        )
        .unwrap();
        assert_eq!(
            r.hosts.unwrap(),
            "1.2.3.4\tfoo\n127.0.0.1\tlocalhost\n127.0.0.1\trunsc\n127.0.0.1\tvm\n\
             192.0.2.2\thost.containers.internal\n10.0.2.100\t3e24ec168380 romantic_lederberg\n"
        );
        assert_eq!(
            r.resolv_conf.unwrap(),
            "nameserver 10.0.2.3\nnameserver 10.255.255.53\n"
        );
        assert_eq!(r.hostname, "3e24ec168380\n");
    }

    #[test]
    fn pasta_private_network() {
        let mut h = host();
        h.resolv =
            "search lan\nnameserver 127.0.0.53\nnameserver 9.9.9.9\noptions edns0 trust-ad\n"
                .into();
        let r = render(
            &NetworkMode::Private(None),
            Some(Helper::Pasta),
            &opts(&[], &[], &[], &[]),
            &h,
        )
        .unwrap();
        // The container has eth0's 192.0.2.2 itself, so the host is reached on podman0's.
        assert_eq!(
            r.hosts.unwrap(),
            "127.0.0.1\tlocalhost\n127.0.0.1\trunsc\n127.0.0.1\tvm\n\
             10.88.0.1\thost.containers.internal\n192.0.2.2\t3e24ec168380 romantic_lederberg\n"
        );
        assert_eq!(
            r.resolv_conf.unwrap(),
            "search lan\nnameserver 169.254.1.1\nnameserver 9.9.9.9\noptions edns0 trust-ad\n"
        );
        // Without another address there is no host.containers.internal.
        h.addrs.retain(|a| a.interface != "podman0");
        let r = render(
            &NetworkMode::Private(Some(Helper::Pasta)),
            None,
            &opts(&[], &[], &[], &[]),
            &h,
        )
        .unwrap();
        assert!(!r.hosts.unwrap().contains(HOST_INTERNAL));
    }

    #[test]
    fn dns_flags_replace_the_hosts() {
        let mut h = host();
        h.resolv = "search lan\nnameserver 127.0.0.53\noptions edns0\n".into();
        let o = opts(
            &[],
            &["1.1.1.1", "2606:4700::1111"],
            &["example.com", "corp"],
            &["ndots:2"],
        );
        let r = render(
            &NetworkMode::Private(Some(Helper::Slirp4netns)),
            None,
            &o,
            &h,
        )
        .unwrap();
        assert_eq!(
            r.resolv_conf.unwrap(),
            "search example.com corp\nnameserver 1.1.1.1\nnameserver 2606:4700::1111\noptions ndots:2\n"
        );
        let o = opts(&[], &[], &["."], &[]);
        let r = render(&NetworkMode::Host, None, &o, &h).unwrap();
        // The host's own namespace reaches its loopback resolver.
        assert_eq!(
            r.resolv_conf.unwrap(),
            "nameserver 127.0.0.53\noptions edns0\n"
        );
    }

    #[test]
    fn host_and_none_like_podman() {
        // podman run --network host --add-host foo:1.2.3.4 --dns-search example.com --dns-option ndots:2
        let r = render(
            &NetworkMode::Host,
            None,
            &opts(&["foo:1.2.3.4"], &[], &["example.com"], &["ndots:2"]),
            &host(),
        )
        .unwrap();
        assert_eq!(
            r.hosts.unwrap(),
            "1.2.3.4\tfoo\n127.0.0.1\tlocalhost\n127.0.0.1\trunsc\n127.0.0.1\tvm\n192.0.2.2\thost.containers.internal\n"
        );
        assert_eq!(
            r.resolv_conf.unwrap(),
            "search example.com\nnameserver 10.255.255.53\noptions ndots:2\n"
        );
        // podman run --network none --add-host foo:1.2.3.4 --hostname myhost
        let mut o = opts(&["foo:1.2.3.4"], &[], &[], &[]);
        o.hostname = "myhost".into();
        o.name = "elated_panini".into();
        let r = render(&NetworkMode::None, None, &o, &host()).unwrap();
        assert_eq!(
            r.hosts.unwrap(),
            "1.2.3.4\tfoo\n127.0.0.1\tlocalhost\n127.0.0.1\trunsc\n127.0.0.1\tvm\n\
             192.0.2.2\thost.containers.internal\n127.0.0.1\tmyhost elated_panini\n"
        );
        assert_eq!(r.resolv_conf, None);
        let e = render(
            &NetworkMode::None,
            None,
            &opts(&[], &["1.1.1.1"], &[], &[]),
            &host(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "conflicting options: --dns and the network mode none"
        );
    }

    #[test]
    fn empty_host_files_still_give_localhost() {
        let h = HostInfo::default();
        let r = render(
            &NetworkMode::Private(Some(Helper::Slirp4netns)),
            None,
            &opts(&[], &[], &[], &[]),
            &h,
        )
        .unwrap();
        assert_eq!(
            r.hosts.unwrap(),
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n10.0.2.100\t3e24ec168380 romantic_lederberg\n"
        );
        assert_eq!(r.resolv_conf.unwrap(), "nameserver 10.0.2.3\n");
    }

    #[test]
    fn add_host_forms() {
        let ok = |s: &str, name: &str, ip: AddHostIp| {
            assert_eq!(
                parse_add_host(s).unwrap(),
                AddHost {
                    name: name.into(),
                    ip
                },
                "{s}"
            );
        };
        let a = |s: &str| AddHostIp::Addr(s.parse().unwrap());
        ok("foo:1.2.3.4", "foo", a("1.2.3.4"));
        ok("foo=1.2.3.4", "foo", a("1.2.3.4"));
        ok("foo:::1", "foo", a("::1"));
        ok("foo:[fd00::1]", "foo", a("fd00::1"));
        ok("gw:host-gateway", "gw", AddHostIp::HostGateway);
        for (bad, why) in [
            ("foo", "expected NAME:IP"),
            (":1.2.3.4", "the host name is empty"),
            ("foo:1.2.3", "\"1.2.3\" is not an IP address"),
            ("a b:1.2.3.4", "has a space"),
        ] {
            let e = parse_add_host(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("invalid --add-host value {bad:?}: ")),
                "{e}"
            );
            assert!(e.contains(why), "{e}");
        }
        let r = render(
            &NetworkMode::Private(Some(Helper::Slirp4netns)),
            None,
            &opts(
                &["gw:host-gateway", "host.containers.internal:5.6.7.8"],
                &[],
                &[],
                &[],
            ),
            &host(),
        )
        .unwrap()
        .hosts
        .unwrap();
        assert!(
            r.starts_with("192.0.2.2\tgw\n5.6.7.8\thost.containers.internal\n"),
            "{r}"
        );
        assert_eq!(r.matches(HOST_INTERNAL).count(), 1, "{r}");
    }

    #[test]
    fn flag_errors() {
        let e = FileOptions::from_flags("h", "", &[], &["8.8.8"], &[], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --dns value \"8.8.8\": not an IP address"
        );
        let e = FileOptions::from_flags("h", "", &[], &[], &["a b"], &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid --dns-search value \"a b\"")
        );
        let e = FileOptions::from_flags("h", "", &[], &[], &[], &[""]).unwrap_err();
        assert!(e.to_string().starts_with("invalid --dns-option value \"\""));
        let e = render(
            &NetworkMode::Private(None),
            None,
            &FileOptions::default(),
            &host(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("network::select_helper"), "{e}");
    }

    #[test]
    fn files_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(&[], &[], &[], &[]);
        let mounts = write_with(
            dir.path(),
            &NetworkMode::Private(Some(Helper::Pasta)),
            None,
            &o,
            &host(),
        )
        .unwrap();
        let dests: Vec<_> = mounts.iter().map(|m| m.destination).collect();
        assert_eq!(dests, ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"]);
        for m in &mounts {
            let meta = fs::metadata(&m.source).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o644,
                "{}",
                m.source.display()
            );
        }
        assert_eq!(
            fs::read_to_string(dir.path().join("hostname")).unwrap(),
            "3e24ec168380\n"
        );
        assert_eq!(
            mounts[0].oci()["options"],
            serde_json::json!(["bind", "rprivate"])
        );
        // none: no resolv.conf; container: only the hostname.
        let m = write_with(dir.path(), &NetworkMode::None, None, &o, &host()).unwrap();
        assert_eq!(m.len(), 2);
        let m = write_with(
            dir.path(),
            &NetworkMode::Container("x".into()),
            None,
            &o,
            &host(),
        )
        .unwrap();
        assert_eq!(
            m.iter().map(|m| m.destination).collect::<Vec<_>>(),
            ["/etc/hostname"]
        );
        // The real host's files can be read and rendered.
        write(dir.path(), &NetworkMode::Host, None, &o).unwrap();
    }
}
