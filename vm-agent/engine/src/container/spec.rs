//! The OCI runtime configuration (config.json) for a container, built as data the way
//! Podman builds it: namespaces, Podman's default capabilities, masked and read-only
//! paths, the standard mounts, and rlimits never above the caller's own hard limits.

use oci_spec::runtime::Spec;
use serde_json::{Value, json};

/// Podman's default capability set (containers.conf `default_capabilities`).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Paths hidden from containers (as runc and Podman mask them).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/fs/selinux",
    "/sys/dev/block",
];

pub const READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("building the OCI runtime configuration: {0}")]
    Invalid(#[from] serde_json::Error),
}

/// Which network namespace the container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkNs {
    /// A new, private namespace.
    Private,
    /// The host's.
    Host,
    /// An existing namespace at this path (`ns:PATH`, `container:ID`).
    Path(String),
}

/// A uid or gid mapping of a user namespace: `size` ids from `container` up are `host`
/// and up in the namespace of the process that creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

#[derive(Debug, Clone)]
pub struct SpecOptions {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub terminal: bool,
    pub read_only: bool,
    pub network: NetworkNs,
    /// A new user namespace with these maps; `None` keeps the caller's.
    pub user_ns: Option<(Vec<IdMap>, Vec<IdMap>)>,
    /// Running without real root: mounts that need it are replaced by bind mounts.
    pub rootless: bool,
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub privileged: bool,
    /// (type, soft, hard), e.g. ("RLIMIT_NOFILE", 1024, 4096).
    pub rlimits: Vec<(String, u64, u64)>,
    /// Extra mounts as OCI mount objects (binds, volumes, tmpfs).
    pub mounts: Vec<Value>,
    /// The seccomp filter (`linux.seccomp`); `None` runs unconfined.
    pub seccomp: Option<Value>,
    /// `linux.resources` (memory, cpu, pids), when limits were asked for.
    pub resources: Option<Value>,
    /// `linux.sysctl` (`--sysctl`).
    pub sysctl: std::collections::BTreeMap<String, String>,
    /// The size of /dev/shm in bytes (`--shm-size`); `None` is 64 MiB.
    pub shm_size: Option<u64>,
    /// Namespaces shared with the host instead of new ones: "pid", "ipc", "uts".
    pub host_namespaces: Vec<&'static str>,
}

impl SpecOptions {
    /// A command with Podman's defaults around it.
    pub fn new(args: Vec<String>) -> SpecOptions {
        SpecOptions {
            args,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            hostname: String::new(),
            terminal: false,
            read_only: false,
            network: NetworkNs::Private,
            user_ns: None,
            rootless: false,
            capabilities: DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect(),
            no_new_privileges: false,
            privileged: false,
            rlimits: caller_rlimits(),
            mounts: Vec::new(),
            seccomp: Some(default_seccomp()),
            resources: None,
            sysctl: Default::default(),
            shm_size: None,
            host_namespaces: Vec::new(),
        }
    }
}

/// The caller's own NOFILE and NPROC limits: a container never asks for more than the
/// invoking process has (crun fails with EPERM otherwise, see MACHINE-NOTES).
pub fn caller_rlimits() -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for (name, res) in [
        ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE),
        ("RLIMIT_NPROC", libc::RLIMIT_NPROC),
    ] {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct it is given.
        if unsafe { libc::getrlimit(res, &mut r) } == 0 {
            out.push((name.to_string(), r.rlim_cur, r.rlim_max));
        }
    }
    out
}

/// The standard mounts of a Linux container.
fn base_mounts(o: &SpecOptions) -> Vec<Value> {
    let own_userns = o.rootless || o.user_ns.is_some();
    let sys = if own_userns && o.network == NetworkNs::Host {
        // sysfs cannot be mounted in a user namespace that does not own the netns.
        json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    } else {
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]})
    };
    let mut pts = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    // gid 5 (tty) must exist where devpts is mounted: not in the rootless namespace, nor
    // in a container namespace too small to hold it.
    let tty_mapped = match &o.user_ns {
        Some((_, gids)) => gids
            .iter()
            .any(|m| m.container <= 5 && 5 - m.container < m.size),
        None => true,
    };
    if !o.rootless && tty_mapped {
        pts.push("gid=5");
    }
    // A container with an IPC namespace of its own (owned by our user namespace when
    // rootless) can mount mqueue either way.
    let mqueue = json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]});
    let host_ns = |n: &str| o.host_namespaces.contains(&n);
    let in_userns = o.rootless || o.user_ns.is_some();
    // Sharing the host's namespace means sharing its files: procfs, mqueue cannot be
    // mounted from a user namespace that does not own the pid or IPC namespace.
    let proc = if host_ns("pid") && in_userns {
        json!({"destination": "/proc", "type": "bind", "source": "/proc", "options": ["rbind", "nosuid", "noexec", "nodev"]})
    } else {
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]})
    };
    let shm = if host_ns("ipc") {
        json!({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm", "options": ["rbind", "nosuid", "noexec", "nodev"]})
    } else {
        let size = format!("size={}k", o.shm_size.unwrap_or(64 << 20).div_ceil(1024));
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", size]})
    };
    let mut mounts = vec![
        proc,
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": pts}),
        shm,
        mqueue,
        sys,
    ];
    // Nor can it see the host's queues: the caller binds the host's /dev/mqueue when
    // the host has one (`container::options`).
    if host_ns("ipc") && in_userns {
        mounts.retain(|m| m["destination"] != "/dev/mqueue");
    }
    mounts
}

/// The config.json for `rootfs` (a path relative to the bundle or absolute).
pub fn build(o: &SpecOptions, rootfs: &str) -> Result<Spec, SpecError> {
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    namespaces.retain(|n| {
        !o.host_namespaces
            .contains(&n["type"].as_str().unwrap_or_default())
    });
    match &o.network {
        NetworkNs::Private => namespaces.push(json!({"type": "network"})),
        NetworkNs::Host => {}
        NetworkNs::Path(p) => namespaces.push(json!({"type": "network", "path": p})),
    }
    let maps = |m: &[IdMap]| -> Vec<Value> {
        m.iter()
            .map(|x| json!({"containerID": x.container, "hostID": x.host, "size": x.size}))
            .collect()
    };
    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": if o.privileged { Vec::new() } else { MASKED_PATHS.to_vec() },
        "readonlyPaths": if o.privileged { Vec::new() } else { READONLY_PATHS.to_vec() },
    });
    if let Some((uids, gids)) = &o.user_ns {
        linux["namespaces"]
            .as_array_mut()
            .expect("a list")
            .push(json!({"type": "user"}));
        linux["uidMappings"] = json!(maps(uids));
        linux["gidMappings"] = json!(maps(gids));
    }
    let caps = if o.privileged {
        all_capabilities()
    } else {
        o.capabilities.clone()
    };
    if let Some(sc) = &o.seccomp
        && !o.privileged
    {
        linux["seccomp"] = sc.clone();
    }
    if let Some(r) = &o.resources {
        linux["resources"] = r.clone();
    }
    if !o.sysctl.is_empty() {
        linux["sysctl"] = json!(o.sysctl);
    }
    // No hostname without a UTS namespace of its own (the runtime would refuse it).
    let hostname = (!o.host_namespaces.contains(&"uts")).then_some(&o.hostname);
    let mut mounts = base_mounts(o);
    mounts.extend(o.mounts.iter().cloned());
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": o.terminal,
            "user": {"uid": o.uid, "gid": o.gid, "additionalGids": o.additional_gids},
            "args": o.args,
            "env": o.env,
            "cwd": o.cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "rlimits": o.rlimits.iter().map(|(t, soft, hard)| json!({"type": t, "soft": soft, "hard": hard})).collect::<Vec<_>>(),
            "noNewPrivileges": o.no_new_privileges,
        },
        "root": {"path": rootfs, "readonly": o.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    });
    Ok(serde_json::from_value(spec)?)
}

/// System calls a container has no business making, refused with EPERM: the kernel's
/// module, key, clock, swap, accounting, reboot and kexec interfaces, raw I/O ports,
/// BPF and perf (information leaks), userfaultfd, and the handle-based opens that
/// escape bind mounts. Everything else is allowed (capabilities still gate what needs
/// privilege). `--security-opt seccomp=unconfined` drops it; `seccomp=FILE` replaces it.
pub fn default_seccomp() -> Value {
    const DENIED: &[&str] = &[
        "acct",
        "add_key",
        "bpf",
        "clock_adjtime",
        "clock_settime",
        "create_module",
        "delete_module",
        "finit_module",
        "get_kernel_syms",
        "init_module",
        "ioperm",
        "iopl",
        "kcmp",
        "kexec_file_load",
        "kexec_load",
        "keyctl",
        "lookup_dcookie",
        "name_to_handle_at",
        "nfsservctl",
        "open_by_handle_at",
        "perf_event_open",
        "pivot_root",
        "query_module",
        "quotactl",
        "reboot",
        "request_key",
        "settimeofday",
        "stime",
        "swapoff",
        "swapon",
        "_sysctl",
        "syslog",
        "uselib",
        "userfaultfd",
        "ustat",
        "vm86",
        "vm86old",
    ];
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": [{"names": DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    })
}

/// A seccomp profile from a file: the OCI form (`linux.seccomp`) or Docker's (the same
/// keys plus `archMap`, `includes`/`excludes` and `comment`, which are dropped here;
/// rules with `includes`/`excludes` conditions are kept as unconditional).
pub fn seccomp_from_json(text: &str) -> Result<Value, String> {
    let mut v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let obj = v
        .as_object_mut()
        .ok_or("a seccomp profile is a JSON object")?;
    if !obj.contains_key("defaultAction") {
        return Err("the profile has no defaultAction".into());
    }
    if let Some(arch_map) = obj.remove("archMap")
        && !obj.contains_key("architectures")
    {
        let archs: Vec<Value> = arch_map
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.get("architecture").cloned())
                    .collect()
            })
            .unwrap_or_default();
        obj.insert("architectures".into(), Value::Array(archs));
    }
    if let Some(calls) = obj.get_mut("syscalls").and_then(Value::as_array_mut) {
        for c in calls.iter_mut() {
            if let Some(c) = c.as_object_mut() {
                for k in ["comment", "includes", "excludes"] {
                    c.remove(k);
                }
                if let Some(name) = c.remove("name") {
                    c.insert("names".into(), json!([name]));
                }
            }
        }
    }
    Ok(v)
}

/// Every capability the kernel knows, for `--privileged`.
pub fn all_capabilities() -> Vec<String> {
    [
        "CAP_AUDIT_CONTROL",
        "CAP_AUDIT_READ",
        "CAP_AUDIT_WRITE",
        "CAP_BLOCK_SUSPEND",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_KILL",
        "CAP_LEASE",
        "CAP_LINUX_IMMUTABLE",
        "CAP_MAC_ADMIN",
        "CAP_MAC_OVERRIDE",
        "CAP_MKNOD",
        "CAP_NET_ADMIN",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_RAW",
        "CAP_PERFMON",
        "CAP_SETFCAP",
        "CAP_SETGID",
        "CAP_SETPCAP",
        "CAP_SETUID",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_CHROOT",
        "CAP_SYS_MODULE",
        "CAP_SYS_NICE",
        "CAP_SYS_PACCT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(spec: &Spec) -> Value {
        serde_json::to_value(spec).unwrap()
    }

    #[test]
    fn defaults_match_podman() {
        let s = js(&build(&SpecOptions::new(vec!["sh".into()]), "rootfs").unwrap());
        assert_eq!(s["process"]["args"], json!(["sh"]));
        assert_eq!(s["root"]["path"], "rootfs");
        let caps = s["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), 11);
        assert!(caps.contains(&json!("CAP_NET_BIND_SERVICE")));
        assert!(!caps.contains(&json!("CAP_SYS_ADMIN")));
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "cgroup", "network"]);
        assert!(
            s["linux"]["maskedPaths"]
                .as_array()
                .unwrap()
                .contains(&json!("/proc/kcore"))
        );
        let dests: Vec<&str> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys"
            ]
        );
    }

    #[test]
    fn table_of_variations() {
        struct Case {
            what: &'static str,
            tweak: fn(&mut SpecOptions),
            check: fn(&Value),
        }
        let cases = [
            Case {
                what: "host network: no network namespace",
                tweak: |o| o.network = NetworkNs::Host,
                check: |s| {
                    assert!(
                        !s["linux"]["namespaces"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|n| n["type"] == "network")
                    )
                },
            },
            Case {
                what: "joined network namespace",
                tweak: |o| o.network = NetworkNs::Path("/run/netns/x".into()),
                check: |s| {
                    assert!(
                        s["linux"]["namespaces"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|n| n["path"] == "/run/netns/x")
                    )
                },
            },
            Case {
                what: "user namespace maps",
                tweak: |o| {
                    let m = vec![
                        IdMap {
                            container: 0,
                            host: 1000,
                            size: 1,
                        },
                        IdMap {
                            container: 1,
                            host: 100000,
                            size: 65536,
                        },
                    ];
                    o.user_ns = Some((m.clone(), m));
                },
                check: |s| {
                    assert_eq!(s["linux"]["uidMappings"][1]["hostID"], 100000);
                    assert!(
                        s["linux"]["namespaces"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|n| n["type"] == "user")
                    );
                },
            },
            Case {
                what: "a small user namespace as root: no devpts gid 5, /sys bound with host network",
                tweak: |o| {
                    let m = vec![IdMap {
                        container: 0,
                        host: 100000,
                        size: 3,
                    }];
                    o.user_ns = Some((m.clone(), m));
                    o.network = NetworkNs::Host;
                },
                check: |s| {
                    let m = s["mounts"].as_array().unwrap();
                    assert!(
                        m.iter()
                            .any(|m| m["destination"] == "/sys" && m["type"] == "bind")
                    );
                    let pts = m.iter().find(|m| m["destination"] == "/dev/pts").unwrap();
                    assert!(!pts["options"].as_array().unwrap().contains(&json!("gid=5")));
                    assert_eq!(s["linux"]["gidMappings"][0]["size"], 3);
                },
            },
            Case {
                what: "rootless with host network binds /sys and has no devpts gid",
                tweak: |o| {
                    o.rootless = true;
                    o.network = NetworkNs::Host;
                },
                check: |s| {
                    let m = s["mounts"].as_array().unwrap();
                    assert!(
                        m.iter()
                            .any(|m| m["destination"] == "/sys" && m["type"] == "bind")
                    );
                    let pts = m.iter().find(|m| m["destination"] == "/dev/pts").unwrap();
                    assert!(!pts["options"].as_array().unwrap().contains(&json!("gid=5")));
                },
            },
            Case {
                what: "privileged: all capabilities, nothing masked",
                tweak: |o| o.privileged = true,
                check: |s| {
                    assert!(
                        s["process"]["capabilities"]["bounding"]
                            .as_array()
                            .unwrap()
                            .contains(&json!("CAP_SYS_ADMIN"))
                    );
                    assert!(
                        s["linux"]
                            .get("maskedPaths")
                            .is_none_or(|v| v.as_array().is_none_or(|a| a.is_empty()))
                    );
                },
            },
            Case {
                what: "read-only root, tty, user and cwd",
                tweak: |o| {
                    o.read_only = true;
                    o.terminal = true;
                    o.uid = 1000;
                    o.gid = 100;
                    o.cwd = "/srv".into();
                },
                check: |s| {
                    assert_eq!(s["root"]["readonly"], true);
                    assert_eq!(s["process"]["terminal"], true);
                    assert_eq!(s["process"]["user"]["uid"], 1000);
                    assert_eq!(s["process"]["cwd"], "/srv");
                },
            },
        ];
        for c in cases {
            let mut o = SpecOptions::new(vec!["true".into()]);
            (c.tweak)(&mut o);
            let s = js(&build(&o, "rootfs").unwrap());
            eprintln!("case: {}", c.what);
            (c.check)(&s);
        }
    }

    #[test]
    fn rlimits_never_exceed_the_callers() {
        let o = SpecOptions::new(vec!["true".into()]);
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
        let nofile = o
            .rlimits
            .iter()
            .find(|(t, _, _)| t == "RLIMIT_NOFILE")
            .unwrap();
        assert_eq!(nofile.2, r.rlim_max);
        let s = js(&build(&o, "rootfs").unwrap());
        assert!(
            s["process"]["rlimits"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["type"] == "RLIMIT_NOFILE")
        );
    }

    /// The spec runs under the real runtime: crun executes a command in a busybox
    /// root filesystem unpacked by the store's unpacker.
    #[test]
    fn crun_runs_the_spec() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP crun_runs_the_spec: needs root");
            return;
        }
        let Ok(busybox) = which("busybox") else {
            eprintln!(
                "SKIP crun_runs_the_spec: busybox-static is not installed (scripts/setup.sh installs it)"
            );
            return;
        };
        if which("crun").is_err() {
            eprintln!(
                "SKIP crun_runs_the_spec: crun is not installed (scripts/setup.sh installs it)"
            );
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let rootfs = t.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
        let mut o = SpecOptions::new(vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo hello from $(/bin/busybox hostname); /bin/busybox id -u".into(),
        ]);
        o.hostname = "capsa-test".into();
        let spec = build(&o, "rootfs").unwrap();
        std::fs::write(
            t.path().join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        let id = format!("capsa-spec-test-{}", std::process::id());
        let out = std::process::Command::new("crun")
            .args(["run", "--bundle"])
            .arg(t.path())
            .arg(&id)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "crun failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout, "hello from capsa-test\n0\n");
    }

    fn which(name: &str) -> Result<std::path::PathBuf, ()> {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or(())
    }

    /// `--pid`/`--ipc`/`--uts host`, `--sysctl` and `--shm-size` as Podman writes them.
    #[test]
    fn host_namespaces_sysctls_and_shm_size() {
        let mount = |s: &Value, dest: &str| -> Value {
            s["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["destination"] == dest)
                .cloned()
                .unwrap()
        };
        let mut o = SpecOptions::new(vec!["sh".into()]);
        o.hostname = "box".into();
        o.host_namespaces = vec!["pid", "uts"];
        o.sysctl.insert("kernel.msgmax".into(), "8192".into());
        o.shm_size = Some(1 << 20);
        let s = js(&build(&o, "rootfs").unwrap());
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["ipc", "mount", "cgroup", "network"]);
        assert!(s["hostname"].is_null(), "{}", s["hostname"]);
        assert_eq!(s["linux"]["sysctl"], json!({"kernel.msgmax": "8192"}));
        assert!(
            mount(&s, "/dev/shm")["options"]
                .as_array()
                .unwrap()
                .contains(&json!("size=1024k"))
        );
        assert_eq!(mount(&s, "/proc")["type"], "proc");
        // Rootless, the host's procfs and IPC files are bound, not mounted anew.
        o.rootless = true;
        o.host_namespaces = vec!["pid", "ipc"];
        let s = js(&build(&o, "rootfs").unwrap());
        assert_eq!(s["hostname"], "box");
        for dest in ["/proc", "/dev/shm"] {
            assert_eq!(mount(&s, dest)["type"], "bind", "{dest}");
            assert_eq!(mount(&s, dest)["source"], dest, "{dest}");
        }
        assert!(
            !s["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["destination"] == "/dev/mqueue")
        );
        // The default /dev/shm is Podman's 64 MiB.
        let s = js(&build(&SpecOptions::new(vec!["sh".into()]), "rootfs").unwrap());
        assert!(
            mount(&s, "/dev/shm")["options"]
                .as_array()
                .unwrap()
                .contains(&json!("size=65536k"))
        );
        assert!(s["linux"]["sysctl"].is_null());
    }
}
