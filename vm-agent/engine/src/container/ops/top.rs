//! `top`: the processes in a container's pid namespace, read from /proc and shown with
//! the descriptors podman's `top` (psgo) knows, under the same headers. Pids, parent
//! pids and process groups are the ones seen inside the container; users and groups
//! are named from the container's own /etc/passwd and /etc/group.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::Path;

use crate::container::state::{ContainerRecord, Status};
use crate::engine::Engine;

use super::{OpsError, go_duration};

/// What `top` shows without descriptors (podman's default).
pub const DEFAULT_DESCRIPTORS: [&str; 8] = [
    "user", "pid", "ppid", "pcpu", "etime", "tty", "time", "args",
];

/// A table of processes: one header per descriptor, one row per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopTable {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Args,
    CapAmb,
    CapBnd,
    CapEff,
    CapInh,
    CapPrm,
    Comm,
    Etime,
    Group,
    Hgroup,
    Hpid,
    Huser,
    Label,
    Nice,
    Pcpu,
    Pgid,
    Pid,
    Ppid,
    Rgroup,
    Rss,
    Ruser,
    Seccomp,
    State,
    Stime,
    Time,
    Tty,
    User,
    Vsz,
}

/// psgo's descriptors: the name, its AIX-style alias, the header.
const DESCRIPTORS: &[(&str, &str, &str, Field)] = &[
    ("args", "%a", "COMMAND", Field::Args),
    ("capamb", "", "AMBIENT CAPS", Field::CapAmb),
    ("capbnd", "", "BOUNDING CAPS", Field::CapBnd),
    ("capeff", "", "EFFECTIVE CAPS", Field::CapEff),
    ("capinh", "", "INHERITED CAPS", Field::CapInh),
    ("capprm", "", "PERMITTED CAPS", Field::CapPrm),
    ("comm", "%c", "COMMAND", Field::Comm),
    ("etime", "%t", "ELAPSED", Field::Etime),
    ("group", "%G", "GROUP", Field::Group),
    ("hgroup", "", "HGROUP", Field::Hgroup),
    ("hpid", "", "HPID", Field::Hpid),
    ("huser", "", "HUSER", Field::Huser),
    ("label", "", "LABEL", Field::Label),
    ("nice", "%n", "NI", Field::Nice),
    ("pcpu", "%C", "%CPU", Field::Pcpu),
    ("pgid", "%r", "PGID", Field::Pgid),
    ("pid", "%p", "PID", Field::Pid),
    ("ppid", "%P", "PPID", Field::Ppid),
    ("rgroup", "%g", "RGROUP", Field::Rgroup),
    ("rss", "", "RSS", Field::Rss),
    ("ruser", "%u", "RUSER", Field::Ruser),
    ("seccomp", "", "SECCOMP", Field::Seccomp),
    ("state", "", "STATE", Field::State),
    ("stime", "", "STIME", Field::Stime),
    ("time", "%x", "TIME", Field::Time),
    ("tty", "%y", "TTY", Field::Tty),
    ("user", "%U", "USER", Field::User),
    ("vsz", "%z", "VSZ", Field::Vsz),
];

/// The descriptors in `args` (each argument may hold several, separated by commas or
/// blanks); the first unknown one is the error. None at all means the default set.
fn parse_descriptors(args: &[String]) -> Result<Vec<(&'static str, Field)>, String> {
    let words: Vec<&str> = args
        .iter()
        .flat_map(|a| a.split([',', ' ', '\t']))
        .filter(|w| !w.is_empty())
        .collect();
    let words = if words.is_empty() {
        DEFAULT_DESCRIPTORS.to_vec()
    } else {
        words
    };
    words
        .into_iter()
        .map(|w| {
            DESCRIPTORS
                .iter()
                .find(|(name, aix, _, _)| *name == w || (!aix.is_empty() && *aix == w))
                .map(|(_, _, header, f)| (*header, *f))
                .ok_or_else(|| w.to_string())
        })
        .collect()
}

/// What /proc says about one process.
#[derive(Debug, Clone, Default)]
struct Proc {
    host_pid: i32,
    /// The pid, parent pid and process group inside the container's pid namespace.
    pid: i32,
    host_ppid: i32,
    ppid: i32,
    pgid: i32,
    state: char,
    comm: String,
    args: String,
    tty_nr: u64,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    nice: i64,
    start_ticks: u64,
    /// Real and effective ids, as this process sees them.
    uid: [u32; 2],
    gid: [u32; 2],
    rss_kb: u64,
    vsz_kb: u64,
    seccomp: Option<u8>,
    caps: [u64; 5],
    label: String,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let f: Vec<&str> = stat[close + 2..].split(' ').collect();
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let mut p = Proc {
        host_pid: pid,
        pid,
        state: f.first()?.chars().next().unwrap_or('?'),
        host_ppid: f.get(1)?.parse().ok()?,
        pgid: f.get(2)?.parse().ok()?,
        tty_nr: num(4),
        cpu_ticks: num(11) + num(12),
        nice: f.get(16).and_then(|s| s.parse().ok()).unwrap_or(0),
        start_ticks: num(19),
        comm,
        ..Default::default()
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    for line in status.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let nums: Vec<&str> = v.split_whitespace().collect();
        let id = |i: usize| nums.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
        let cap = || u64::from_str_radix(v.trim(), 16).unwrap_or(0);
        match k {
            "NSpid" => p.pid = nums.last().and_then(|s| s.parse().ok()).unwrap_or(pid),
            "NSpgid" => p.pgid = nums.last().and_then(|s| s.parse().ok()).unwrap_or(p.pgid),
            "Uid" => p.uid = [id(0), id(1)],
            "Gid" => p.gid = [id(0), id(1)],
            "VmRSS" => p.rss_kb = id(0) as u64,
            "VmSize" => p.vsz_kb = id(0) as u64,
            "Seccomp" => p.seccomp = nums.first().and_then(|s| s.parse().ok()),
            "CapInh" => p.caps[0] = cap(),
            "CapPrm" => p.caps[1] = cap(),
            "CapEff" => p.caps[2] = cap(),
            "CapBnd" => p.caps[3] = cap(),
            "CapAmb" => p.caps[4] = cap(),
            _ => {}
        }
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    p.args = if cmdline.is_empty() {
        format!("[{}]", p.comm)
    } else {
        // As psgo shows it: every NUL a blank, so the line ends in one.
        String::from_utf8_lossy(&cmdline).replace('\0', " ")
    };
    p.label = fs::read_to_string(format!("/proc/{pid}/attr/current"))
        .map(|s| s.trim_end_matches(['\0', '\n']).to_string())
        .unwrap_or_default();
    Some(p)
}

fn ns_inode(pid: i32, ns: &str) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The processes of the container whose first process is `pid`: everything in its
/// pid namespace, or, when it shares ours, it and its descendants.
fn container_procs(pid: i32) -> io::Result<Vec<Proc>> {
    let target = ns_inode(pid, "pid").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {pid} is gone or its namespaces cannot be read"),
        )
    })?;
    let shared = ns_inode(std::process::id() as i32, "pid").as_deref() == Some(target.as_str());
    let mut all = Vec::new();
    for e in fs::read_dir("/proc")?.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if !shared && ns_inode(p, "pid").as_deref() != Some(target.as_str()) {
            continue;
        }
        if let Some(proc) = read_proc(p) {
            all.push(proc);
        }
    }
    if shared {
        let mut keep: Vec<i32> = vec![pid];
        let mut i = 0;
        while i < keep.len() {
            let parent = keep[i];
            keep.extend(
                all.iter()
                    .filter(|p| p.host_ppid == parent)
                    .map(|p| p.host_pid),
            );
            i += 1;
        }
        all.retain(|p| keep.contains(&p.host_pid));
    }
    let inner: HashMap<i32, i32> = all.iter().map(|p| (p.host_pid, p.pid)).collect();
    for p in &mut all {
        // A parent outside the namespace (the runtime, for `exec`) shows as 0.
        p.ppid = inner.get(&p.host_ppid).copied().unwrap_or(0);
    }
    all.sort_by_key(|p| p.pid);
    Ok(all)
}

/// One line of /proc/<pid>/uid_map or gid_map: inside, outside, count.
fn parse_id_map(text: &str) -> Vec<(u64, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|n| n.parse::<u64>().ok());
            Some((it.next()??, it.next()??, it.next()??))
        })
        .collect()
}

/// `id` through a map, from the inside to the outside or back.
fn map_id(map: &[(u64, u64, u64)], id: u32, to_outside: bool) -> Option<u32> {
    let id = u64::from(id);
    map.iter().find_map(|&(inside, outside, count)| {
        let (from, to) = if to_outside {
            (inside, outside)
        } else {
            (outside, inside)
        };
        (id >= from && id < from + count).then(|| (to + (id - from)) as u32)
    })
}

/// Turns ids as this process sees them into the container's names and the host's ids.
struct Ids {
    /// Our ids → the container's, when it has a user namespace of its own.
    to_container: Option<[Vec<(u64, u64, u64)>; 2]>,
    /// Our ids → the host's (our own namespace's maps).
    to_host: [Vec<(u64, u64, u64)>; 2],
    users: BTreeMap<u32, String>,
    groups: BTreeMap<u32, String>,
}

impl Ids {
    fn new(pid: i32) -> Ids {
        let own = |f: &str| parse_id_map(&fs::read_to_string(f).unwrap_or_default());
        let nested = ns_inode(pid, "user") != ns_inode(std::process::id() as i32, "user");
        let to_container = nested.then(|| {
            [
                own(&format!("/proc/{pid}/uid_map")),
                own(&format!("/proc/{pid}/gid_map")),
            ]
        });
        let names = |file: &str| -> BTreeMap<u32, String> {
            fs::read_to_string(Path::new(&format!("/proc/{pid}/root/etc")).join(file))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    Some((f.get(2)?.parse().ok()?, f.first()?.to_string()))
                })
                .rev()
                .collect()
        };
        Ids {
            to_container,
            to_host: [own("/proc/self/uid_map"), own("/proc/self/gid_map")],
            users: names("passwd"),
            groups: names("group"),
        }
    }

    /// An id (0 uid, 1 gid) as the container sees it, named when it can be.
    fn name(&self, kind: usize, id: u32) -> String {
        let inner = match &self.to_container {
            Some(maps) => map_id(&maps[kind], id, false),
            None => Some(id),
        };
        let table = if kind == 0 { &self.users } else { &self.groups };
        match inner {
            Some(i) => table.get(&i).cloned().unwrap_or_else(|| i.to_string()),
            None => "?".into(),
        }
    }

    fn host(&self, kind: usize, id: u32) -> String {
        let map = &self.to_host[kind];
        if map.is_empty() {
            return id.to_string();
        }
        map_id(map, id, true)
            .map(|h| h.to_string())
            .unwrap_or_else(|| "?".into())
    }
}

const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A capability set as psgo prints it: `full`, `none`, or the names in order.
fn caps_text(set: u64, last_cap: u32) -> String {
    let all = if last_cap >= 63 {
        u64::MAX
    } else {
        (1u64 << (last_cap + 1)) - 1
    };
    if set & all == all {
        return "full".into();
    }
    let mut names: Vec<String> = (0..64)
        .filter(|b| set & (1u64 << b) != 0)
        .map(|b| {
            CAP_NAMES
                .get(b as usize)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("CAP_{b}"))
        })
        .collect();
    if names.is_empty() {
        return "none".into();
    }
    names.sort();
    names.join(",")
}

/// A controlling terminal from `tty_nr` (Linux's device numbering).
fn tty_name(tty_nr: u64) -> String {
    let major = ((tty_nr >> 8) & 0xfff) as u32;
    let minor = ((tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00)) as u32;
    match major {
        _ if tty_nr == 0 => "?".into(),
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        5 if minor == 0 => "tty".into(),
        5 if minor == 1 => "console".into(),
        _ => "?".into(),
    }
}

/// The clock that `starttime` in /proc/<pid>/stat counts from, in nanoseconds.
fn boottime_nanos() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Go's `time.Time` `String()` without the monotonic part, in local time.
fn go_time(t: chrono::DateTime<chrono::Local>) -> String {
    let zone = if t.offset().local_minus_utc() == 0 {
        "UTC".to_string()
    } else {
        t.format("%:z").to_string()
    };
    format!("{} {zone}", t.format("%Y-%m-%d %H:%M:%S %z"))
}

fn render(procs: &[Proc], fields: &[Field], ids: &Ids) -> Vec<Vec<String>> {
    let hz = clock_ticks();
    let now = boottime_nanos();
    let wall = chrono::Local::now();
    let last_cap: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    procs
        .iter()
        .map(|p| {
            let started = u128::from(p.start_ticks) * 1_000_000_000 / u128::from(hz);
            let elapsed = now.saturating_sub(started);
            let cpu_secs = p.cpu_ticks / hz;
            fields
                .iter()
                .map(|f| match f {
                    Field::Args => p.args.clone(),
                    Field::Comm => p.comm.clone(),
                    Field::CapInh => caps_text(p.caps[0], last_cap),
                    Field::CapPrm => caps_text(p.caps[1], last_cap),
                    Field::CapEff => caps_text(p.caps[2], last_cap),
                    Field::CapBnd => caps_text(p.caps[3], last_cap),
                    Field::CapAmb => caps_text(p.caps[4], last_cap),
                    Field::Etime => go_duration(elapsed),
                    Field::Time => go_duration(u128::from(cpu_secs) * 1_000_000_000),
                    Field::Pcpu => {
                        let e = elapsed as f64 / 1e9;
                        let pct = if e > 0.0 {
                            100.0 * cpu_secs as f64 / e
                        } else {
                            0.0
                        };
                        format!("{pct:.3}")
                    }
                    Field::User => ids.name(0, p.uid[1]),
                    Field::Ruser => ids.name(0, p.uid[0]),
                    Field::Group => ids.name(1, p.gid[1]),
                    Field::Rgroup => ids.name(1, p.gid[0]),
                    Field::Huser => ids.host(0, p.uid[1]),
                    Field::Hgroup => ids.host(1, p.gid[1]),
                    Field::Hpid => p.host_pid.to_string(),
                    Field::Pid => p.pid.to_string(),
                    Field::Ppid => p.ppid.to_string(),
                    Field::Pgid => p.pgid.to_string(),
                    Field::Nice => p.nice.to_string(),
                    Field::Tty => tty_name(p.tty_nr),
                    Field::State => p.state.to_string(),
                    Field::Rss => p.rss_kb.to_string(),
                    Field::Vsz => p.vsz_kb.to_string(),
                    Field::Label => {
                        if p.label.is_empty() {
                            "?".into()
                        } else {
                            p.label.clone()
                        }
                    }
                    Field::Seccomp => match p.seccomp {
                        Some(0) => "disabled".into(),
                        Some(1) => "strict".into(),
                        Some(2) => "filter".into(),
                        _ => "?".into(),
                    },
                    Field::Stime => {
                        let secs = i64::try_from(elapsed / 1_000_000_000).unwrap_or(0);
                        go_time(wall - chrono::TimeDelta::seconds(secs))
                    }
                })
                .collect()
        })
        .collect()
}

impl Engine {
    /// `top`: the container's processes under `descriptors` (none: the default set).
    /// An unknown descriptor is [`OpsError::UnknownDescriptor`]; podman then runs `ps`
    /// inside the container with the same arguments, which the caller may do.
    pub fn container_top(&self, input: &str, descriptors: &[String]) -> Result<TopTable, OpsError> {
        let rec: ContainerRecord = self.container(input)?;
        if !matches!(rec.status, Status::Running | Status::Paused) || rec.pid <= 0 {
            return Err(OpsError::TopNotRunning);
        }
        let fields = parse_descriptors(descriptors).map_err(OpsError::UnknownDescriptor)?;
        let procs = container_procs(rec.pid).map_err(|source| OpsError::Proc {
            id: rec.id.clone(),
            source,
        })?;
        let ids = Ids::new(rec.pid);
        let kinds: Vec<Field> = fields.iter().map(|(_, f)| *f).collect();
        Ok(TopTable {
            headers: fields.iter().map(|(h, _)| h.to_string()).collect(),
            rows: render(&procs, &kinds, &ids),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_parse_with_aliases_and_commas() {
        let d = |args: &[&str]| {
            parse_descriptors(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map(|v| v.into_iter().map(|(h, _)| h).collect::<Vec<_>>())
        };
        assert_eq!(
            d(&[]).unwrap(),
            [
                "USER", "PID", "PPID", "%CPU", "ELAPSED", "TTY", "TIME", "COMMAND"
            ]
        );
        assert_eq!(
            d(&["pid,comm", "user"]).unwrap(),
            ["PID", "COMMAND", "USER"]
        );
        assert_eq!(d(&["%p", "%U", "huser"]).unwrap(), ["PID", "USER", "HUSER"]);
        assert_eq!(d(&["pid", "-o"]).unwrap_err(), "-o");
    }

    #[test]
    fn id_maps() {
        let m =
            parse_id_map("         0       1001          1\n         1     100000      65536\n");
        assert_eq!(map_id(&m, 0, true), Some(1001));
        assert_eq!(map_id(&m, 5, true), Some(100004));
        assert_eq!(map_id(&m, 70000, true), None);
        assert_eq!(map_id(&m, 100004, false), Some(5));
    }

    #[test]
    fn capabilities_and_terminals() {
        assert_eq!(caps_text(0, 40), "none");
        assert_eq!(caps_text((1 << 41) - 1, 40), "full");
        assert_eq!(
            caps_text((1 << 0) | (1 << 31) | (1 << 6), 40),
            "CHOWN,SETFCAP,SETGID"
        );
        assert_eq!(tty_name(0), "?");
        assert_eq!(tty_name((136 << 8) | 3), "pts/3");
        assert_eq!(tty_name((4 << 8) | 1), "tty1");
    }

    #[test]
    fn own_process_reads() {
        let me = std::process::id() as i32;
        let p = read_proc(me).unwrap();
        assert_eq!(p.host_pid, me);
        assert!(p.args.ends_with(' '), "{:?}", p.args);
        assert!(p.start_ticks > 0);
        let procs = container_procs(me).unwrap();
        assert!(procs.iter().any(|p| p.host_pid == me));
    }
}
