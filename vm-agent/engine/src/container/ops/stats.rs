//! `stats`: what a container's cgroup reports (memory, CPU time, pids, block I/O,
//! from cgroup v1 controllers or the v2 unified hierarchy) and its network counters.
//!
//! A container has a cgroup of its own when its cgroup differs from its monitor's
//! (the monitor stays in the caller's). Rootless containers on a cgroup v1 host, or on
//! a v2 host without delegation, share the caller's cgroup: there is nothing to read
//! and nothing to freeze for `pause`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::container::state::{ContainerRecord, Status};
use crate::engine::Engine;

use super::OpsError;

/// One sample of a container's resource use. A container that is not running reads
/// as all zeros, as in podman.
#[derive(Debug, Clone)]
pub struct ContainerStats {
    pub id: String,
    pub name: String,
    /// CPU time used, in nanoseconds.
    pub cpu_nanos: u64,
    /// Memory in use (without inactive file cache) and the limit (at most the host's
    /// memory).
    pub mem_usage: u64,
    pub mem_limit: u64,
    pub net_rx: u64,
    pub net_tx: u64,
    pub block_read: u64,
    pub block_write: u64,
    pub pids: u64,
    /// How long the container has run, in nanoseconds, when sampled.
    pub uptime_nanos: u64,
    pub sampled: Instant,
}

/// The cgroup directories of a process: v1 controller → directory, and the v2 one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Cgroup {
    pub v1: BTreeMap<String, PathBuf>,
    pub v2: Option<PathBuf>,
}

impl Cgroup {
    pub fn can_freeze(&self) -> bool {
        self.v1.contains_key("freezer")
            || self
                .v2
                .as_ref()
                .is_some_and(|d| d.join("cgroup.freeze").exists())
    }

    fn is_empty(&self) -> bool {
        self.v1.is_empty() && self.v2.is_none()
    }
}

/// Whether the host runs the unified hierarchy only (cgroup v2).
pub fn cgroup_v2_host() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// A cgroup mount from mountinfo: (its root in the hierarchy, mount point, v2, super
/// options).
type CgroupMount = (String, PathBuf, bool, Vec<String>);

fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let v2 = match *post.first()? {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let opts = post
                .get(2)
                .map(|o| o.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            Some((
                pre.get(3)?.to_string(),
                PathBuf::from(pre.get(4)?),
                v2,
                opts,
            ))
        })
        .collect()
}

/// Where `path` of a hierarchy is, given the mount whose root is `root`.
fn under(mount: &Path, root: &str, path: &str) -> Option<PathBuf> {
    let rel = if root == "/" {
        path
    } else {
        path.strip_prefix(root)?
    };
    Some(mount.join(rel.trim_start_matches('/')))
}

/// Resolves /proc/<pid>/cgroup text against this process's cgroup mounts.
fn resolve(proc_cgroup: &str, mountinfo: &str) -> Cgroup {
    let mounts = cgroup_mounts(mountinfo);
    let mut cg = Cgroup::default();
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if controllers.is_empty() {
            cg.v2 = mounts
                .iter()
                .find(|m| m.2)
                .and_then(|(root, mp, _, _)| under(mp, root, path));
            continue;
        }
        for c in controllers.split(',') {
            let c = c.trim_start_matches("name=");
            let found = mounts.iter().find(|(_, _, v2, opts)| {
                !v2 && opts
                    .iter()
                    .any(|o| o == c || o.strip_prefix("name=") == Some(c))
            });
            if let Some(dir) = found.and_then(|(root, mp, _, _)| under(mp, root, path)) {
                cg.v1.insert(c.to_string(), dir);
            }
        }
    }
    cg
}

fn cgroup_of(pid: i32) -> Cgroup {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return Cgroup::default();
    };
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    resolve(&text, &mountinfo)
}

/// The container's cgroups that are its own: those that differ from its monitor's.
pub(super) fn own_cgroup(pid: i32, monitor_pid: i32) -> Cgroup {
    if pid <= 0 {
        return Cgroup::default();
    }
    let mut cg = cgroup_of(pid);
    let theirs = if monitor_pid > 0 {
        cgroup_of(monitor_pid)
    } else {
        cgroup_of(std::process::id() as i32)
    };
    cg.v1.retain(|c, dir| theirs.v1.get(c) != Some(dir));
    if cg.v2.is_some() && cg.v2 == theirs.v2 {
        cg.v2 = None;
    }
    cg
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat).
fn keyed(p: &Path) -> BTreeMap<String, u64> {
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Bytes read and written from blkio.throttle.io_service_bytes (`8:0 Read 4096`).
fn blkio_v1(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [_, op, n] = f.as_slice() {
            let n: u64 = n.parse().unwrap_or(0);
            match *op {
                "Read" => r += n,
                "Write" => w += n,
                _ => {}
            }
        }
    }
    (r, w)
}

/// Bytes read and written from io.stat (`8:0 rbytes=4096 wbytes=0 …`).
fn io_v2(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for (k, v) in text.split_whitespace().filter_map(|kv| kv.split_once('=')) {
        let n: u64 = v.parse().unwrap_or(0);
        match k {
            "rbytes" => r += n,
            "wbytes" => w += n,
            _ => {}
        }
    }
    (r, w)
}

/// Received and sent bytes over every interface but loopback (/proc/<pid>/net/dev).
fn net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0, 0);
    for l in text.lines().skip(2) {
        let Some((iface, rest)) = l.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        rx += f.first().copied().unwrap_or(0);
        tx += f.get(8).copied().unwrap_or(0);
    }
    (rx, tx)
}

fn host_memory() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(u64::MAX, |kb| kb * 1024)
}

impl Engine {
    /// Refuses as podman does where no container can have a cgroup: rootless on a host
    /// without the unified hierarchy.
    pub fn check_stats_supported(&self) -> Result<(), OpsError> {
        if self.store.rootless() && !cgroup_v2_host() {
            return Err(OpsError::StatsRootless);
        }
        Ok(())
    }

    /// One sample of the container's resource use.
    pub fn container_stats(&self, rec: &ContainerRecord) -> Result<ContainerStats, OpsError> {
        let mut s = ContainerStats {
            id: rec.id.clone(),
            name: rec.name.clone(),
            cpu_nanos: 0,
            mem_usage: 0,
            mem_limit: 0,
            net_rx: 0,
            net_tx: 0,
            block_read: 0,
            block_write: 0,
            pids: 0,
            uptime_nanos: 0,
            sampled: Instant::now(),
        };
        if !matches!(rec.status, Status::Running | Status::Paused) || rec.pid <= 0 {
            return Ok(s);
        }
        let cg = own_cgroup(rec.pid, rec.monitor_pid);
        if cg.is_empty() {
            return Err(if self.store.rootless() {
                OpsError::StatsRootless
            } else {
                OpsError::StatsNoCgroup(rec.id.clone())
            });
        }
        let v1 = |c: &str, f: &str| cg.v1.get(c).map(|d| d.join(f));
        let v2 = |f: &str| cg.v2.as_ref().map(|d| d.join(f));
        let host_mem = host_memory();
        if let Some(usage) = v1("memory", "memory.usage_in_bytes").and_then(|p| read_u64(&p)) {
            let stat = keyed(&cg.v1["memory"].join("memory.stat"));
            let inactive = stat.get("total_inactive_file").copied().unwrap_or(0);
            s.mem_usage = if inactive < usage {
                usage - inactive
            } else {
                usage
            };
            s.mem_limit = v1("memory", "memory.limit_in_bytes")
                .and_then(|p| read_u64(&p))
                .unwrap_or(u64::MAX);
        } else if let Some(usage) = v2("memory.current").and_then(|p| read_u64(&p)) {
            let stat = v2("memory.stat").map(|p| keyed(&p)).unwrap_or_default();
            let inactive = stat.get("inactive_file").copied().unwrap_or(0);
            s.mem_usage = if inactive < usage {
                usage - inactive
            } else {
                usage
            };
            s.mem_limit = v2("memory.max")
                .and_then(|p| read_u64(&p))
                .unwrap_or(u64::MAX);
        }
        s.mem_limit = s.mem_limit.min(host_mem);
        s.cpu_nanos = v1("cpuacct", "cpuacct.usage")
            .and_then(|p| read_u64(&p))
            .or_else(|| {
                let stat = keyed(&v2("cpu.stat")?);
                Some(stat.get("usage_usec")? * 1000)
            })
            .unwrap_or(0);
        s.pids = v1("pids", "pids.current")
            .or_else(|| v2("pids.current"))
            .and_then(|p| read_u64(&p))
            .unwrap_or(0);
        (s.block_read, s.block_write) = match v1("blkio", "blkio.throttle.io_service_bytes") {
            Some(p) => blkio_v1(&fs::read_to_string(p).unwrap_or_default()),
            None => v2("io.stat")
                .map(|p| io_v2(&fs::read_to_string(p).unwrap_or_default()))
                .unwrap_or((0, 0)),
        };
        if rec.config.network != "host" {
            (s.net_rx, s.net_tx) = net_dev(
                &fs::read_to_string(format!("/proc/{}/net/dev", rec.pid)).unwrap_or_default(),
            );
        }
        if let Some(started) = rec
            .started_at
            .as_deref()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
        {
            s.uptime_nanos = (chrono::Utc::now() - started)
                .num_nanoseconds()
                .unwrap_or(0)
                .max(0) as u64;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 /inner /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
";

    #[test]
    fn cgroups_resolve_on_a_hybrid_host() {
        let cg = resolve(
            "4:memory:/abc\n2:cpu,cpuacct:/abc\n1:name=systemd:/abc\n5:freezer:/inner/abc\n0::/abc\n",
            MOUNTINFO,
        );
        assert_eq!(cg.v1["memory"], Path::new("/sys/fs/cgroup/memory/abc"));
        assert_eq!(
            cg.v1["cpuacct"],
            Path::new("/sys/fs/cgroup/cpu,cpuacct/abc")
        );
        assert_eq!(cg.v1["systemd"], Path::new("/sys/fs/cgroup/systemd/abc"));
        assert_eq!(cg.v1["freezer"], Path::new("/sys/fs/cgroup/freezer/abc"));
        assert_eq!(
            cg.v2.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified/abc"))
        );
        assert!(cg.can_freeze());
    }

    #[test]
    fn counters_parse() {
        assert_eq!(
            blkio_v1("8:0 Read 4096\n8:0 Write 512\n8:0 Sync 1\n8:16 Read 4\nTotal 4612\n"),
            (4100, 512)
        );
        assert_eq!(
            io_v2("8:0 rbytes=100 wbytes=20 rios=1\n8:16 rbytes=1 wbytes=2\n"),
            (101, 22)
        );
        let dev = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     500       5    0    0    0     0          0         0      500       5    0    0    0     0       0          0
  eth0:      90       1    0    0    0     0          0         0      290       3    0    0    0     0       0          0
";
        assert_eq!(net_dev(dev), (90, 290));
    }

    #[test]
    fn a_process_shares_its_own_cgroup() {
        let me = std::process::id() as i32;
        assert!(own_cgroup(me, me).is_empty());
    }
}
