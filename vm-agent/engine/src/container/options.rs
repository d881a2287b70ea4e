//! The `run`/`create` flags that go straight into the runtime configuration:
//! `--ulimit`, `--sysctl`, `--shm-size`, `--group-add`, `--tz` and `--pid`, `--ipc`,
//! `--uts` `host`. Their values are checked when the container is created (with
//! Podman's messages) and kept in its [`ContainerConfig`]; every start turns them into
//! [`SpecOptions`], and an exec gets the same limits and groups as the container.
//!
//! It does not own the flags' syntax (the CLI) or the OCI document (`spec`).

use std::path::{Path, PathBuf};

use crate::container::lifecycle::{ContainerError, resolve_user};
use crate::container::spec::SpecOptions;
use crate::container::state::ContainerConfig;

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("ulimit option {value:?} requires name=SOFT:HARD, failed to be parsed: {why}")]
    Ulimit { value: String, why: String },
    #[error("invalid --sysctl {0:?}: use KEY=VALUE")]
    SysctlSyntax(String),
    #[error("sysctl '{0}' is not allowed")]
    SysctlNotAllowed(String),
    #[error("sysctl {0} can't be set since {1} Namespace set to host: invalid argument")]
    SysctlHostNamespace(String, &'static str),
    #[error("unrecognized namespace mode {0} passed")]
    NamespaceMode(String),
    #[error("--{flag}={value} is not supported: use host or private")]
    NamespaceUnsupported { flag: &'static str, value: String },
    #[error(
        "invalid config provided: cannot set hostname when running in the host UTS namespace: invalid configuration"
    )]
    HostnameWithHostUts,
    #[error("running container create option: stat {}: no such file or directory", .0.display())]
    NoTimezone(PathBuf),
    #[error("invalid timezone {0:?}: a name under /usr/share/zoneinfo, or local")]
    BadTimezone(String),
}

/// Podman's `--ulimit` names and their rlimit types.
const ULIMITS: &[(&str, &str)] = &[
    ("as", "RLIMIT_AS"),
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

/// `nofile=1024:4096`, `nproc=512` (hard = soft), `-1` for unlimited.
pub fn parse_ulimit(value: &str) -> Result<(String, u64, u64), OptionsError> {
    let err = |why: String| OptionsError::Ulimit {
        value: value.to_string(),
        why,
    };
    let (name, limits) = value
        .split_once('=')
        .ok_or_else(|| err("missing '='".into()))?;
    let kind = ULIMITS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| k.to_string())
        .ok_or_else(|| err(format!("invalid ulimit type: {name}")))?;
    let number = |s: &str| -> Result<u64, OptionsError> {
        match s.parse::<i64>() {
            Ok(-1) => Ok(u64::MAX),
            Ok(n) if n >= 0 => Ok(n as u64),
            Ok(n) => Err(err(format!("invalid limit {n}"))),
            Err(_) => Err(err(format!(
                "strconv.ParseInt: parsing {s:?}: invalid syntax"
            ))),
        }
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (number(s)?, number(h)?),
        None => {
            let n = number(limits)?;
            (n, n)
        }
    };
    if soft > hard {
        return Err(err(format!(
            "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        )));
    }
    Ok((kind, soft, hard))
}

/// The namespace a sysctl belongs to, as Podman allows them: IPC's System V and
/// mqueue parameters, and the network's.
fn sysctl_namespace(key: &str) -> Option<&'static str> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some("IPC")
    } else if key.starts_with("net.") {
        Some("Network")
    } else {
        None
    }
}

/// Checks `KEY=VALUE` against the namespaces the container will have (`host_net`,
/// `host_ipc`: shared with the host).
pub fn parse_sysctl(
    item: &str,
    host_net: bool,
    host_ipc: bool,
) -> Result<(String, String), OptionsError> {
    let (k, v) = item
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| OptionsError::SysctlSyntax(item.to_string()))?;
    match sysctl_namespace(k) {
        None => Err(OptionsError::SysctlNotAllowed(k.to_string())),
        Some(ns @ "Network") if host_net => {
            Err(OptionsError::SysctlHostNamespace(item.to_string(), ns))
        }
        Some(ns @ "IPC") if host_ipc => {
            Err(OptionsError::SysctlHostNamespace(item.to_string(), ns))
        }
        Some(_) => Ok((k.to_string(), v.to_string())),
    }
}

/// `--pid`, `--ipc`, `--uts`: "" for a private namespace, "host" to share the host's.
pub fn parse_namespace(flag: &'static str, value: &str) -> Result<String, OptionsError> {
    match value {
        "" | "private" => Ok(String::new()),
        "shareable" if flag == "ipc" => Ok(String::new()),
        "host" => Ok("host".into()),
        v if v.starts_with("container:")
            || v.starts_with("ns:")
            || (flag == "ipc" && v == "none") =>
        {
            Err(OptionsError::NamespaceUnsupported {
                flag,
                value: v.to_string(),
            })
        }
        v => Err(OptionsError::NamespaceMode(v.to_string())),
    }
}

/// Where `--tz` takes the zone from: the host's /etc/localtime for `local`, else its
/// zoneinfo file. Checked at create time, as Podman does.
pub fn timezone_file(tz: &str) -> Result<PathBuf, OptionsError> {
    let path = if tz == "local" {
        PathBuf::from("/etc/localtime")
    } else {
        let rel = Path::new(tz);
        let plain = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if tz.is_empty() || !plain {
            return Err(OptionsError::BadTimezone(tz.to_string()));
        }
        Path::new("/usr/share/zoneinfo").join(rel)
    };
    if !path.is_file() {
        return Err(OptionsError::NoTimezone(path));
    }
    Ok(path)
}

/// What the container's process gets at start and in every exec: `--ulimit` (each
/// replaces the caller's limit of its type) and `--group-add` (resolved in the
/// container's /etc/group, as Podman does at start).
pub fn apply_process(
    o: &mut SpecOptions,
    c: &ContainerConfig,
    rootfs: &Path,
) -> Result<(), ContainerError> {
    for (kind, soft, hard) in &c.ulimits {
        o.rlimits.retain(|(k, _, _)| k != kind);
        o.rlimits.push((kind.clone(), *soft, *hard));
    }
    for g in &c.group_add {
        let (_, gid, _) = resolve_user(rootfs, &format!("0:{g}"))?;
        if !o.additional_gids.contains(&gid) {
            o.additional_gids.push(gid);
        }
    }
    o.sysctl = c.sysctls.clone();
    o.shm_size = c.shm_size;
    for (ns, mode) in [("pid", &c.pid_ns), ("ipc", &c.ipc_ns), ("uts", &c.uts_ns)] {
        if mode == "host" {
            o.host_namespaces.push(ns);
        }
    }
    // In a user namespace the host's message queues can only be bound, and only when
    // the host has them mounted (podman fails the start instead: "statfs /dev/mqueue").
    let in_userns = o.rootless || o.user_ns.is_some();
    if c.ipc_ns == "host" && in_userns && is_mountpoint(Path::new("/dev/mqueue")) {
        o.mounts.push(serde_json::json!({
            "destination": "/dev/mqueue",
            "type": "bind",
            "source": "/dev/mqueue",
            "options": ["rbind", "nosuid", "noexec", "nodev"],
        }));
    }
    Ok(())
}

fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// What a start adds besides: `--tz`'s zone, copied into the run directory (so the
/// container never sees a host symlink) and bind-mounted at /etc/localtime.
pub fn apply_start(
    o: &mut SpecOptions,
    c: &ContainerConfig,
    rundir: &Path,
) -> Result<(), ContainerError> {
    if c.timezone.is_empty() {
        return Ok(());
    }
    let src = timezone_file(&c.timezone).map_err(|e| ContainerError::Invalid(e.to_string()))?;
    let dst = rundir.join("localtime");
    std::fs::copy(&src, &dst).map_err(|source| ContainerError::Io {
        what: format!("copying {} to {}", src.display(), dst.display()),
        source,
    })?;
    o.mounts.retain(|m| m["destination"] != "/etc/localtime");
    o.mounts.push(serde_json::json!({
        "destination": "/etc/localtime",
        "type": "bind",
        "source": dst,
        "options": ["bind", "rw", "nosuid", "nodev"],
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_as_podman_reads_them() {
        assert_eq!(
            parse_ulimit("nofile=512:1024").unwrap(),
            ("RLIMIT_NOFILE".into(), 512, 1024)
        );
        assert_eq!(
            parse_ulimit("nproc=100").unwrap(),
            ("RLIMIT_NPROC".into(), 100, 100)
        );
        assert_eq!(
            parse_ulimit("core=-1").unwrap(),
            ("RLIMIT_CORE".into(), u64::MAX, u64::MAX)
        );
        for (bad, msg) in [
            (
                "nofile=abc",
                "strconv.ParseInt: parsing \"abc\": invalid syntax",
            ),
            ("bogus=1", "invalid ulimit type: bogus"),
            ("nofile", "missing '='"),
            (
                "nofile=10:5",
                "soft limit must be less than or equal to hard limit",
            ),
        ] {
            let e = parse_ulimit(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "ulimit option {bad:?} requires name=SOFT:HARD, failed to be parsed: "
                )) && e.contains(msg),
                "{e}"
            );
        }
    }

    #[test]
    fn sysctls_only_in_the_container_s_namespaces() {
        assert_eq!(
            parse_sysctl("kernel.msgmax=8192", false, false).unwrap(),
            ("kernel.msgmax".into(), "8192".into())
        );
        assert!(parse_sysctl("net.ipv4.ip_forward=1", false, true).is_ok());
        assert!(parse_sysctl("fs.mqueue.msg_max=20", true, false).is_ok());
        assert_eq!(
            parse_sysctl("vm.swappiness=1", false, false)
                .unwrap_err()
                .to_string(),
            "sysctl 'vm.swappiness' is not allowed"
        );
        assert_eq!(
            parse_sysctl("net.ipv4.ip_forward=1", true, false)
                .unwrap_err()
                .to_string(),
            "sysctl net.ipv4.ip_forward=1 can't be set since Network Namespace set to host: invalid argument"
        );
        assert!(parse_sysctl("kernel.sem=1 2 3 4", false, true).is_err());
        assert!(parse_sysctl("=1", false, false).is_err());
    }

    #[test]
    fn namespace_modes() {
        assert_eq!(parse_namespace("pid", "host").unwrap(), "host");
        assert_eq!(parse_namespace("uts", "private").unwrap(), "");
        assert_eq!(parse_namespace("ipc", "shareable").unwrap(), "");
        assert_eq!(
            parse_namespace("ipc", "bogus").unwrap_err().to_string(),
            "unrecognized namespace mode bogus passed"
        );
        assert!(parse_namespace("pid", "container:web").is_err());
    }

    #[test]
    fn timezones_are_zoneinfo_names() {
        assert!(matches!(
            timezone_file("../../etc/passwd"),
            Err(OptionsError::BadTimezone(_))
        ));
        assert!(matches!(
            timezone_file("/etc/passwd"),
            Err(OptionsError::BadTimezone(_))
        ));
        assert_eq!(
            timezone_file("Nope/Where").unwrap_err().to_string(),
            "running container create option: stat /usr/share/zoneinfo/Nope/Where: no such file or directory"
        );
        if Path::new("/usr/share/zoneinfo/Asia/Tokyo").is_file() {
            assert_eq!(
                timezone_file("Asia/Tokyo").unwrap(),
                Path::new("/usr/share/zoneinfo/Asia/Tokyo")
            );
        }
    }

    #[test]
    fn process_options_replace_limits_and_add_groups() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/group"), "root:x:0:\nwheel:x:10:\n").unwrap();
        let c = ContainerConfig {
            ulimits: vec![("RLIMIT_NOFILE".into(), 100, 200)],
            group_add: vec!["wheel".into(), "27".into(), "10".into()],
            pid_ns: "host".into(),
            ..Default::default()
        };
        let mut o = SpecOptions::new(vec!["sh".into()]);
        apply_process(&mut o, &c, t.path()).unwrap();
        let nofile: Vec<_> = o
            .rlimits
            .iter()
            .filter(|(k, _, _)| k == "RLIMIT_NOFILE")
            .collect();
        assert_eq!(nofile, [&("RLIMIT_NOFILE".to_string(), 100, 200)]);
        assert_eq!(o.additional_gids, [10, 27]);
        assert_eq!(o.host_namespaces, ["pid"]);
        let c = ContainerConfig {
            group_add: vec!["nosuch".into()],
            ..Default::default()
        };
        let e = apply_process(&mut o, &c, t.path()).unwrap_err();
        assert!(
            e.to_string()
                .contains("unable to find group nosuch: no matching entries in group file"),
            "{e}"
        );
    }
}
