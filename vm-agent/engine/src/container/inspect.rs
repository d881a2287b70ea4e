//! `inspect` of a container in Docker's JSON shape (as Podman prints it): State, Config,
//! HostConfig, Mounts, NetworkSettings, plus Podman's extra top-level keys.

use serde_json::{Value, json};

use crate::container::spec;
use crate::container::state::{ContainerRecord, Status};
use crate::engine::Engine;

/// Go's zero time, which Docker prints for times that never happened.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn signal_number(name: &str) -> i32 {
    const NAMES: &[&str] = &[
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM",
    ];
    let bare = name.trim_start_matches("SIG");
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| i as i32 + 1)
        .or_else(|| bare.parse().ok())
        .unwrap_or(15)
}

pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Created => "created",
        Status::Running => "running",
        Status::Paused => "paused",
        Status::Stopped => "stopped",
        Status::Exited => "exited",
    }
}

impl Engine {
    pub fn inspect_container(&self, r: &ContainerRecord) -> Value {
        let c = &r.config;
        let dir = self.container_dir(&r.id);
        let rundir = self.container_rundir(&r.id);
        let mut caps: Vec<String> = spec::DEFAULT_CAPABILITIES
            .iter()
            .map(|s| s.to_string())
            .collect();
        let norm = |s: &String| {
            let u = s.to_ascii_uppercase();
            if u.starts_with("CAP_") {
                u
            } else {
                format!("CAP_{u}")
            }
        };
        for d in &c.cap_drop {
            let d = norm(d);
            caps.retain(|x| *x != d);
        }
        for a in &c.cap_add {
            let a = norm(a);
            if !caps.contains(&a) {
                caps.push(a);
            }
        }
        if c.privileged {
            caps = spec::all_capabilities();
        }
        let ports = crate::network::ports::inspect_ports(&c.ports, &c.exposed);
        let image_digest = self
            .lookup_image(&r.image_id)
            .map(|i| i.digest)
            .unwrap_or_default();
        let (path, args) = match r.command.split_first() {
            Some((p, a)) => (p.clone(), a.to_vec()),
            None => (String::new(), Vec::new()),
        };
        let network_mode = match c.network.as_str() {
            "" | "private" | "bridge" => "pasta".to_string(),
            n => n.to_string(),
        };
        let log_path = self.log_path(r);
        json!({
            "Id": r.id,
            "Created": r.created,
            "Path": path,
            "Args": args,
            "State": {
                "OciVersion": "1.0.2",
                "Status": status_name(r.status),
                "Running": r.status == Status::Running,
                "Paused": r.status == Status::Paused,
                "Restarting": false,
                "OOMKilled": false,
                "Dead": false,
                "Pid": r.pid,
                "ConmonPid": r.monitor_pid,
                "ExitCode": r.exit_code.unwrap_or(0),
                "Error": r.error,
                "StartedAt": r.started_at.clone().unwrap_or_else(|| ZERO_TIME.into()),
                "FinishedAt": r.finished_at.clone().unwrap_or_else(|| ZERO_TIME.into()),
                "Health": {"Status": "", "FailingStreak": 0, "Log": null},
            },
            "Image": r.image_id,
            "ImageDigest": image_digest,
            "ImageName": r.image_name,
            "Rootfs": "",
            "Pod": "",
            "ResolvConfPath": rundir.join("resolv.conf"),
            "HostnamePath": rundir.join("hostname"),
            "HostsPath": rundir.join("hosts"),
            "StaticDir": dir,
            "OCIConfigPath": dir.join("config.json"),
            "OCIRuntime": if c.runtime.is_empty() { "crun" } else { &c.runtime },
            "ConmonPidFile": rundir.join("monitor.pid"),
            "PidFile": rundir.join("pidfile"),
            "Name": r.name,
            "RestartCount": r.restart_count,
            "Driver": self.store.driver().name(),
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "EffectiveCaps": caps,
            "BoundingCaps": caps,
            "ExecIDs": [],
            "GraphDriver": {
                "Name": self.store.driver().name(),
                "Data": {
                    "UpperDir": dir.join("upper"),
                    "WorkDir": dir.join("work"),
                    "MergedDir": dir.join("merged"),
                },
            },
            "Mounts": c.mounts.iter().filter_map(|m| m.inspect.clone()).collect::<Vec<_>>(),
            "Dependencies": [],
            "NetworkSettings": {
                "EndpointID": "",
                "Gateway": "",
                "IPAddress": "",
                "IPPrefixLen": 0,
                "IPv6Gateway": "",
                "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0,
                "MacAddress": "",
                "Bridge": "",
                "SandboxID": "",
                "HairpinMode": false,
                "LinkLocalIPv6Address": "",
                "LinkLocalIPv6PrefixLen": 0,
                "Ports": ports,
                "SandboxKey": if r.pid > 0 { format!("/proc/{}/ns/net", r.pid) } else { String::new() },
            },
            "Namespace": "",
            "IsInfra": false,
            "IsService": false,
            "Config": {
                "Hostname": if c.hostname.is_empty() { r.id[..12].to_string() } else { c.hostname.clone() },
                "Domainname": "",
                "User": c.user,
                "AttachStdin": false,
                "AttachStdout": false,
                "AttachStderr": false,
                "Tty": c.tty,
                "OpenStdin": c.stdin,
                "StdinOnce": false,
                "Env": c.env,
                "Cmd": c.cmd,
                "Image": r.image_name,
                "Volumes": null,
                "WorkingDir": if c.workdir.is_empty() { "/" } else { &c.workdir },
                "Entrypoint": c.entrypoint.join(" "),
                "OnBuild": null,
                "Labels": r.labels,
                "Annotations": c.annotations,
                "StopSignal": signal_number(&c.stop_signal),
                "StopTimeout": c.stop_timeout,
                "Umask": "0022",
                "Timeout": 0,
                "Passwd": true,
                "sdNotifyMode": if c.sdnotify.is_empty() { "container" } else { &c.sdnotify },
            },
            "HostConfig": {
                "Binds": c
                    .mounts
                    .iter()
                    .filter(|m| m.kind != crate::volume::MountKind::Tmpfs)
                    .map(|m| format!("{}:{}", m.volume.clone().unwrap_or_else(|| m.source.clone()), m.destination))
                    .collect::<Vec<_>>(),
                "CgroupManager": "cgroupfs",
                "CgroupMode": "host",
                "ContainerIDFile": "",
                "LogConfig": {
                    "Type": c.log_driver,
                    "Config": null,
                    "Path": log_path,
                    "Tag": "",
                    "Size": "0B",
                },
                "NetworkMode": network_mode,
                "PortBindings": ports,
                "RestartPolicy": {
                    "Name": if c.restart_policy == "no" { "" } else { &c.restart_policy },
                    "MaximumRetryCount": c.restart_max,
                },
                "AutoRemove": c.auto_remove,
                "VolumeDriver": "",
                "VolumesFrom": null,
                "CapAdd": c.cap_add,
                "CapDrop": c.cap_drop,
                "Dns": c.dns,
                "DnsOptions": c.dns_options,
                "DnsSearch": c.dns_search,
                "ExtraHosts": c.add_hosts,
                "GroupAdd": [],
                "IpcMode": "shareable",
                "Cgroup": "",
                "Cgroups": "default",
                "Links": null,
                "OomScoreAdj": 0,
                "PidMode": "private",
                "Privileged": c.privileged,
                "PublishAllPorts": false,
                "ReadonlyRootfs": c.read_only,
                "SecurityOpt": [],
                "Tmpfs": {},
                "UTSMode": "private",
                "UsernsMode": c.userns,
                "IDMappings": c.idmappings.as_ref().map(|m| m.inspect()),
                "ShmSize": 65536000,
                "Runtime": "oci",
                "ConsoleSize": [0, 0],
                "Isolation": "",
                "CpuShares": 0,
                "Memory": c.memory.unwrap_or(0),
                "NanoCpus": c.cpus.map(|x| (x * 1e9) as i64).unwrap_or(0),
                "CgroupParent": "",
                "CpuPeriod": 0,
                "CpuQuota": 0,
                "CpusetCpus": "",
                "CpusetMems": "",
                "Devices": [],
                "MemoryReservation": 0,
                "MemorySwap": 0,
                "PidsLimit": c.pids_limit.unwrap_or(0),
                "Ulimits": spec::caller_rlimits().iter().map(|(n, s, h)| json!({"Name": n, "Soft": s, "Hard": h})).collect::<Vec<_>>(),
            },
        })
    }
}
