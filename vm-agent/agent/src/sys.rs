//! What the agent reads from and does to the guest system: facts for Hello and Info, the
//! clock, users, authorized keys.

use capsa_proto::{GuestInfo, InfoReply};
use std::ffi::CStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

fn utsname() -> (String, String, String) {
    // SAFETY: uname fills the struct it is given; zeroed is a valid utsname.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return Default::default();
    }
    let field = |chars: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates every field.
        unsafe { CStr::from_ptr(chars.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    (
        field(&uts.release),
        field(&uts.machine),
        field(&uts.nodename),
    )
}

pub fn uptime_ms() -> u64 {
    // SAFETY: clock_gettime fills the timespec it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// A `Key: N kB` line of /proc/meminfo or /proc/self/status, in bytes.
fn kb_field(path: &str, key: &str) -> u64 {
    let Ok(text) = fs::read_to_string(path) else {
        return 0;
    };
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

pub fn agent_rss_bytes() -> u64 {
    kb_field("/proc/self/status", "VmRSS")
}

fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn load() -> [f64; 3] {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0.0));
    [
        fields.next().unwrap_or(0.0),
        fields.next().unwrap_or(0.0),
        fields.next().unwrap_or(0.0),
    ]
}

pub fn guest_info(pid1: bool) -> GuestInfo {
    let (kernel, arch, hostname) = utsname();
    GuestInfo {
        kernel,
        arch,
        hostname,
        uptime_ms: uptime_ms(),
        memory_total_bytes: kb_field("/proc/meminfo", "MemTotal"),
        cpus: cpus(),
        pid1,
    }
}

pub fn info(software: &str, protocol_version: u32, pid1: bool) -> InfoReply {
    let (kernel, _, hostname) = utsname();
    InfoReply {
        software: software.to_string(),
        protocol_version,
        kernel,
        hostname,
        uptime_ms: uptime_ms(),
        memory_total_bytes: kb_field("/proc/meminfo", "MemTotal"),
        memory_available_bytes: kb_field("/proc/meminfo", "MemAvailable"),
        load: load(),
        cpus: cpus(),
        agent_rss_bytes: agent_rss_bytes(),
        pid1,
    }
}

pub fn set_realtime(unix_nanos: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (unix_nanos / 1_000_000_000) as _,
        tv_nsec: (unix_nanos % 1_000_000_000) as _,
    };
    // SAFETY: clock_settime reads the timespec we pass.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A passwd entry.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    /// Supplementary groups from /etc/group.
    pub groups: Vec<u32>,
}

/// Looks `spec` (a name or a numeric uid) up in `<sysroot>/etc/passwd`. A numeric uid
/// without an entry still resolves (home /, gid = uid), as `podman exec --user 1234` does.
pub fn lookup_user(sysroot: &Path, spec: &str) -> Option<User> {
    let passwd = fs::read_to_string(sysroot.join("etc/passwd")).unwrap_or_default();
    let numeric: Option<u32> = spec.parse().ok();
    let found = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        let uid: u32 = f[2].parse().ok()?;
        let matches = f[0] == spec || numeric == Some(uid);
        matches.then(|| User {
            name: f[0].to_string(),
            uid,
            gid: f[3].parse().unwrap_or(uid),
            home: f[5].to_string(),
            shell: f[6].to_string(),
            groups: Vec::new(),
        })
    });
    let mut user = match (found, numeric) {
        (Some(user), _) => user,
        (None, Some(uid)) => User {
            name: uid.to_string(),
            uid,
            gid: uid,
            home: "/".into(),
            shell: "/bin/sh".into(),
            groups: Vec::new(),
        },
        (None, None) => return None,
    };
    let group = fs::read_to_string(sysroot.join("etc/group")).unwrap_or_default();
    user.groups = group
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let members = f.get(3)?;
            members
                .split(',')
                .any(|m| m == user.name)
                .then(|| f[2].parse().ok())?
        })
        .collect();
    Some(user)
}

/// The user the agent itself runs as.
pub fn current_user(sysroot: &Path) -> User {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    lookup_user(sysroot, &uid.to_string()).expect("a numeric uid always resolves")
}

/// Writes `keys` to root's and the capsa user's `~/.ssh/authorized_keys` under `sysroot`
/// (the guest's `/`; tests point it elsewhere). A user missing from passwd is skipped.
pub fn set_authorized_keys(sysroot: &Path, keys: &[String]) -> io::Result<Vec<String>> {
    let mut text = String::new();
    for key in keys {
        let key = key.trim();
        if key.contains('\n') || key.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a key must be one non-empty line",
            ));
        }
        text.push_str(key);
        text.push('\n');
    }
    let mut written = Vec::new();
    for name in ["root", "capsa"] {
        let Some(user) = lookup_user(sysroot, name).filter(|u| u.name == name) else {
            continue;
        };
        let home = sysroot.join(user.home.trim_start_matches('/'));
        let ssh = home.join(".ssh");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&ssh)
            .map_err(|e| with_path(e, &ssh))?;
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700))
            .map_err(|e| with_path(e, &ssh))?;
        let path = ssh.join("authorized_keys");
        let tmp = ssh.join(".authorized_keys.tmp");
        {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| with_path(e, &tmp))?;
            file.write_all(text.as_bytes())
                .map_err(|e| with_path(e, &tmp))?;
        }
        // sshd refuses keys in files or directories the user does not own.
        chown(&ssh, user.uid, user.gid)?;
        chown(&tmp, user.uid, user.gid)?;
        fs::rename(&tmp, &path).map_err(|e| with_path(e, &path))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

fn chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    match std::os::unix::fs::chown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        // Not root (tests): the files are ours already, which is what matters.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        Err(e) => Err(with_path(e, path)),
    }
}

pub fn with_path(err: io::Error, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

/// A signal by name (`TERM`, `SIGTERM`, any case) or Linux number.
pub fn parse_signal(spec: &str) -> Option<i32> {
    if let Ok(n) = spec.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = spec.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return None,
    })
}
