//! The host's addresses and default route, as the generated /etc/hosts needs them.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address of a host interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub interface: String,
    pub addr: IpAddr,
}

/// Every address of every interface that is up, in the kernel's order.
pub fn interface_addresses() -> Vec<IfAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills head with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family tells its real type.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        out.push(IfAddr {
            interface: name.to_string_lossy().into_owned(),
            addr,
        });
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Loopback and link-local addresses are no use to a container.
pub fn is_usable(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// The interface of the first IPv4 default route, from /proc/net/route text.
pub fn default_route_interface(route: &str) -> Option<String> {
    route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        let up = u32::from_str_radix(f.get(3)?, 16).ok()? & 1 != 0;
        (up && *f.get(1)? == "00000000" && *f.get(7)? == "00000000").then(|| f[0].to_string())
    })
}

/// The IPv4 address pasta will give the container: it copies the first address of the
/// interface that has the default route.
pub fn pasta_guest_ipv4(addrs: &[IfAddr], route: &str) -> Option<Ipv4Addr> {
    let iface = default_route_interface(route)?;
    addrs.iter().find_map(|a| match a.addr {
        IpAddr::V4(v4) if a.interface == iface && is_usable(&a.addr) => Some(v4),
        _ => None,
    })
}

pub fn read_route() -> String {
    fs::read_to_string("/proc/net/route").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        podman0\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
        eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";

    #[test]
    fn default_route() {
        assert_eq!(default_route_interface(ROUTE).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\n"), None);
        let addrs = [
            IfAddr {
                interface: "lo".into(),
                addr: "127.0.0.1".parse().unwrap(),
            },
            IfAddr {
                interface: "podman0".into(),
                addr: "10.88.0.1".parse().unwrap(),
            },
            IfAddr {
                interface: "eth0".into(),
                addr: "fe80::1".parse().unwrap(),
            },
            IfAddr {
                interface: "eth0".into(),
                addr: "192.0.2.2".parse().unwrap(),
            },
        ];
        assert_eq!(
            pasta_guest_ipv4(&addrs, ROUTE),
            Some(Ipv4Addr::new(192, 0, 2, 2))
        );
    }

    #[test]
    fn this_host_has_addresses() {
        let all = interface_addresses();
        assert!(all.iter().any(|a| a.addr.is_loopback()), "{all:?}");
        assert!(!is_usable(&"fe80::1".parse().unwrap()));
        assert!(!is_usable(&"169.254.1.1".parse().unwrap()));
        assert!(is_usable(&"fd00::2".parse().unwrap()));
    }
}
