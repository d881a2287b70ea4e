//! Operations on containers that exist already, built on the lifecycle: rename,
//! pause and unpause (the runtime freezes the container's cgroup), restart, reading
//! the log with the container's state in mind (`logs -f` ends when the container
//! stops), prune, and, in submodules, the processes inside a container (`top`) and the
//! resource use its cgroup reports (`stats`).
//!
//! Records change under their own lock ([`Containers::update`]); a rename also holds
//! the lock that `create` takes, so names stay unique.

mod stats;
mod top;

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

pub use stats::{ContainerStats, cgroup_v2_host};
pub use top::{DEFAULT_DESCRIPTORS, TopTable};

use crate::container::lifecycle::ContainerError;
use crate::container::logs::{self, LogEntry, LogError, LogFormat, LogOptions};
use crate::container::runtime::Runtime;
use crate::container::state::{ContainerRecord, Containers, StateError, Status};
use crate::engine::Engine;
use crate::userns;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(
        "this container is using the '{0}' log driver, cannot read logs: this container is not logging output"
    )]
    NoLog(String),
    #[error("renaming container {id}")]
    Rename {
        id: String,
        #[source]
        source: StateError,
    },
    #[error("\"{0}\" is not running, can't pause: container state improper")]
    PauseNotRunning(String),
    #[error("\"{0}\" is already paused: container state improper")]
    AlreadyPaused(String),
    #[error("\"{0}\" is not paused, can't unpause: container state improper")]
    NotPaused(String),
    #[error("{}", no_cgroup_message(.action, .id, *.rootless, *.v2))]
    NoCgroup {
        action: &'static str,
        id: String,
        rootless: bool,
        v2: bool,
    },
    #[error("stats is not supported in rootless mode without cgroups v2")]
    StatsRootless,
    #[error("container {0} has no cgroup of its own to read statistics from")]
    StatsNoCgroup(String),
    #[error("top can only be used on running containers")]
    TopNotRunning,
    #[error("unknown descriptor: {0}")]
    UnknownDescriptor(String),
    #[error("reading the processes of container {id}")]
    Proc {
        id: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} is an invalid filter")]
    BadFilter(String),
    #[error("invalid filter {filter:?}")]
    BadFilterValue {
        filter: String,
        #[source]
        source: LogError,
    },
}

fn no_cgroup_message(action: &str, id: &str, rootless: bool, v2: bool) -> String {
    match (rootless, v2) {
        (true, false) => format!(
            "can not {action} containers on rootless containers with cgroup V1: this container does not have a cgroup"
        ),
        (true, true) => format!(
            "can not {action} containers on rootless containers without delegated cgroup v2 controllers: this container does not have a cgroup"
        ),
        (false, _) => {
            format!("can not {action} container {id}: this container does not have a cgroup")
        }
    }
}

impl OpsError {
    pub fn hint(&self) -> Option<String> {
        match self {
            OpsError::Container(e) => e.hint(),
            OpsError::NoCgroup { rootless: true, .. } | OpsError::StatsRootless => Some(
                "rootless containers get a cgroup only on a cgroup v2 host that delegates controllers to your user (systemd: user@.service with Delegate=yes); run as root, or inside `capsa machine`".into(),
            ),
            OpsError::Rename {
                source: StateError::NameInUse(_),
                ..
            } => Some("choose another name, or remove the other container with `capsa rm`".into()),
            OpsError::NoLog(_) => Some(
                "only containers created with --log-driver k8s-file (the default) or json-file keep a log".into(),
            ),
            OpsError::BadFilter(_) => Some("container prune filters are until= and label=".into()),
            _ => None,
        }
    }

    /// Podman's exit code: 125 except where the container's own error says otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpsError::Container(e) => e.exit_code(),
            _ => 125,
        }
    }
}

impl From<StateError> for OpsError {
    fn from(e: StateError) -> Self {
        OpsError::Container(e.into())
    }
}

impl From<crate::container::runtime::RuntimeError> for OpsError {
    fn from(e: crate::container::runtime::RuntimeError) -> Self {
        OpsError::Container(e.into())
    }
}

/// A runtime command line for the actions the runtime module has no builder for
/// (`pause`, `resume`): `<runtime> --root <state> <action> <id>`.
pub fn runtime_args(rt: &Runtime, action: &str, id: &str) -> Vec<OsString> {
    vec![
        rt.path.clone().into(),
        "--root".into(),
        rt.state_root.clone().into(),
        action.into(),
        id.into(),
    ]
}

/// How long `restart` waits for the previous run's monitor (and the cleanup it runs)
/// to finish before starting the next run.
const MONITOR_GONE_TIMEOUT: Duration = Duration::from_secs(15);

/// A container `prune` tried to remove: its ID and how that went.
pub type PruneOutcome = (String, Result<(), ContainerError>);

/// One filter of `container prune`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PruneFilter {
    /// Only containers created before this time.
    Until(DateTime<Utc>),
    /// `label=KEY[=VALUE]` (containers that have it) or `label!=…` (that do not).
    Label {
        key: String,
        value: Option<String>,
        negate: bool,
    },
}

impl PruneFilter {
    /// `until=TIME|DURATION`, `label=KEY[=VALUE]`, `label!=KEY[=VALUE]`.
    pub fn parse(s: &str, now: DateTime<Utc>) -> Result<PruneFilter, OpsError> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| OpsError::BadFilter(s.to_string()))?;
        let label = |negate| {
            let (k, v) = match value.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (value.to_string(), None),
            };
            PruneFilter::Label {
                key: k,
                value: v,
                negate,
            }
        };
        match key {
            "until" => logs::parse_time_filter(value, now)
                .map(PruneFilter::Until)
                .map_err(|source| OpsError::BadFilterValue {
                    filter: s.to_string(),
                    source,
                }),
            "label" => Ok(label(false)),
            "label!" => Ok(label(true)),
            other => Err(OpsError::BadFilter(other.to_string())),
        }
    }

    pub fn matches(&self, rec: &ContainerRecord) -> bool {
        match self {
            PruneFilter::Until(t) => rec.created.parse::<DateTime<Utc>>().is_ok_and(|c| c < *t),
            PruneFilter::Label { key, value, negate } => {
                let has = rec
                    .labels
                    .get(key)
                    .is_some_and(|v| value.as_ref().is_none_or(|want| v == want));
                has != *negate
            }
        }
    }
}

impl Engine {
    /// `rename`: the new name must be valid and not taken by another container.
    pub fn rename_container(
        &self,
        input: &str,
        new_name: &str,
    ) -> Result<ContainerRecord, OpsError> {
        let rec = self.container(input)?;
        self.containers()?
            .rename(&rec.id, new_name)
            .map_err(|source| OpsError::Rename {
                id: rec.id.clone(),
                source,
            })
    }

    /// `pause`: the runtime freezes the container's cgroup.
    pub fn pause_container(&self, input: &str) -> Result<ContainerRecord, OpsError> {
        let rec = self.container(input)?;
        match rec.status {
            Status::Running => {}
            Status::Paused => return Err(OpsError::AlreadyPaused(rec.id)),
            _ => return Err(OpsError::PauseNotRunning(rec.id)),
        }
        self.freeze(&rec, "pause", Status::Running, Status::Paused)
    }

    /// `unpause`: the runtime thaws the container's cgroup.
    pub fn unpause_container(&self, input: &str) -> Result<ContainerRecord, OpsError> {
        let rec = self.container(input)?;
        if rec.status != Status::Paused {
            return Err(OpsError::NotPaused(rec.id));
        }
        self.freeze(&rec, "resume", Status::Paused, Status::Running)
    }

    fn freeze(
        &self,
        rec: &ContainerRecord,
        action: &'static str,
        from: Status,
        to: Status,
    ) -> Result<ContainerRecord, OpsError> {
        let verb = if action == "pause" {
            "pause"
        } else {
            "unpause"
        };
        let cg = stats::own_cgroup(rec.pid, rec.monitor_pid);
        if !cg.can_freeze() {
            return Err(OpsError::NoCgroup {
                action: verb,
                id: rec.id.clone(),
                rootless: self.store.rootless(),
                v2: cgroup_v2_host(),
            });
        }
        let rt = self.runtime_for(rec)?;
        let containers = self.containers()?;
        containers.update(&rec.id, |r| -> Result<(), OpsError> {
            if r.status != from {
                return Err(match from {
                    Status::Paused => OpsError::NotPaused(r.id.clone()),
                    _ => OpsError::PauseNotRunning(r.id.clone()),
                });
            }
            rt.run(action, &r.id, &runtime_args(&rt, action, &r.id))?;
            r.status = to;
            Ok(())
        })??;
        Ok(containers.get(&rec.id)?)
    }

    /// `restart`: stops a running (or paused) container as `stop` does, then starts it.
    /// As in Podman, a restart asked for by the user resets the restart count that
    /// `--restart` keeps, and a `--rm` container survives its restart.
    pub fn restart_container(
        &self,
        input: &str,
        timeout: Option<u32>,
    ) -> Result<ContainerRecord, OpsError> {
        let rec = self.container(input)?;
        let containers = self.containers()?;
        let auto_remove = rec.config.auto_remove;
        if auto_remove {
            containers.update(&rec.id, |r| r.config.auto_remove = false)?;
        }
        let result = self.restart_inner(&containers, &rec, timeout);
        if auto_remove {
            match containers.update(&rec.id, |r| r.config.auto_remove = true) {
                Ok(()) | Err(StateError::NotFound(_)) => {}
                Err(e) => tracing::warn!("restoring --rm of container {}: {e}", &rec.id[..12]),
            }
        }
        result
    }

    fn restart_inner(
        &self,
        containers: &Containers,
        rec: &ContainerRecord,
        timeout: Option<u32>,
    ) -> Result<ContainerRecord, OpsError> {
        if rec.status == Status::Paused {
            self.unpause_container(&rec.id)?;
        }
        if matches!(rec.status, Status::Running | Status::Paused) {
            self.stop_container(&rec.id, timeout)?;
            // The old run's monitor runs `container cleanup` before it exits; starting
            // before that is over would race with it.
            let deadline = Instant::now() + MONITOR_GONE_TIMEOUT;
            while rec.monitor_pid > 0
                && userns::start_time(rec.monitor_pid).as_deref()
                    == Some(rec.monitor_start.as_str())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        containers.update(&rec.id, |r| {
            r.stopped_by_user = false;
            r.restart_count = 0;
        })?;
        Ok(self.start_container(&rec.id, &mut |_| Ok(()))?)
    }

    /// Where a container's log is and in which format; `NoLog` for the drivers that
    /// keep none.
    pub fn container_log(&self, rec: &ContainerRecord) -> Result<(PathBuf, LogFormat), OpsError> {
        let format = match rec.config.log_driver.as_str() {
            "" | "k8s-file" => LogFormat::K8sFile,
            "json-file" => LogFormat::JsonFile,
            d @ ("none" | "passthrough") => return Err(OpsError::NoLog(d.to_string())),
            other => other.parse()?,
        };
        Ok((self.log_path(rec), format))
    }

    /// Reads a container's log (see [`logs::read_log`]); with `follow` it ends once
    /// the container is no longer running (or was removed). A container that never ran
    /// has no log file yet: that reads as an empty log.
    pub fn read_container_log(
        &self,
        rec: &ContainerRecord,
        opts: &LogOptions,
        on_entry: impl FnMut(LogEntry) -> io::Result<()>,
    ) -> Result<(), OpsError> {
        let (path, format) = self.container_log(rec)?;
        let id = rec.id.clone();
        let stopped = || match self.container(&id) {
            Ok(r) => !matches!(r.status, Status::Running | Status::Paused),
            Err(_) => true,
        };
        match logs::read_log(&path, format, opts, stopped, on_entry) {
            Err(LogError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(())
            }
            other => Ok(other?),
        }
    }

    /// `container prune`: removes every container that is not running (or paused) and
    /// matches all `filters`; returns each one's ID with how its removal went.
    pub fn prune_containers(&self, filters: &[PruneFilter]) -> Result<Vec<PruneOutcome>, OpsError> {
        let mut out = Vec::new();
        for rec in self.list_containers()? {
            if matches!(rec.status, Status::Running | Status::Paused)
                || !filters.iter().all(|f| f.matches(&rec))
            {
                continue;
            }
            match self.remove_container(&rec.id, false) {
                // Started meanwhile: not prunable any more.
                Err(ContainerError::Running(_)) => {}
                Err(ContainerError::State(StateError::NotFound(_))) => {}
                r => out.push((rec.id, r.map(drop))),
            }
        }
        Ok(out)
    }

    /// The container whose record is newest (`--latest`).
    pub fn latest_container(&self) -> Result<ContainerRecord, OpsError> {
        let mut all = self.containers()?.list()?;
        all.sort_by(|a, b| a.created.cmp(&b.created));
        match all.pop() {
            Some(r) => Ok(self.sync_container(r)?),
            None => {
                Err(ContainerError::Invalid("no containers to act on as the latest".into()).into())
            }
        }
    }
}

/// Go's `time.Duration` `String()`: `0s`, `750ns`, `1.5µs`, `7.609378ms`,
/// `5.227204436s`, `1h2m3.5s` (what podman prints for elapsed and CPU times).
pub fn go_duration(nanos: u128) -> String {
    fn frac(v: u128, prec: u32) -> (String, u128) {
        let p = 10u128.pow(prec);
        let f = v % p;
        if f == 0 {
            return (String::new(), v / p);
        }
        let digits = format!("{f:0width$}", width = prec as usize);
        (format!(".{}", digits.trim_end_matches('0')), v / p)
    }
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        let (f, i) = frac(nanos, 3);
        return format!("{i}{f}µs");
    }
    if nanos < 1_000_000_000 {
        let (f, i) = frac(nanos, 6);
        return format!("{i}{f}ms");
    }
    let (f, secs) = frac(nanos, 9);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}{f}s")
    } else if secs >= 60 {
        format!("{m}m{s}{f}s")
    } else {
        format!("{s}{f}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_print_like_go() {
        for (n, want) in [
            (0u128, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_500, "1.5µs"),
            (7_609_378, "7.609378ms"),
            (1_000_000, "1ms"),
            (1_000_000_000, "1s"),
            (5_227_204_436, "5.227204436s"),
            (65_000_000_000, "1m5s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_500_000_000, "1h2m3.5s"),
        ] {
            assert_eq!(go_duration(n), want, "{n}");
        }
    }

    #[test]
    fn pause_and_resume_command_lines() {
        let rt = Runtime {
            name: "crun".into(),
            path: "/usr/bin/crun".into(),
            state_root: "/run/capsa/runtime/crun".into(),
        };
        for (action, want) in [
            (
                "pause",
                "/usr/bin/crun --root /run/capsa/runtime/crun pause c1",
            ),
            (
                "resume",
                "/usr/bin/crun --root /run/capsa/runtime/crun resume c1",
            ),
        ] {
            let got: Vec<String> = runtime_args(&rt, action, "c1")
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert_eq!(got.join(" "), want);
        }
    }

    fn rec(created: &str, labels: &[(&str, &str)]) -> ContainerRecord {
        ContainerRecord {
            created: created.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn prune_filters() {
        let now: DateTime<Utc> = "2024-05-01T12:00:00Z".parse().unwrap();
        let f = |s: &str| PruneFilter::parse(s, now).unwrap();
        let old = rec("2024-05-01T10:00:00Z", &[("app", "web"), ("tier", "")]);
        let new = rec("2024-05-01T11:59:00Z", &[]);
        assert!(f("until=1h").matches(&old));
        assert!(!f("until=1h").matches(&new));
        assert!(f("until=2024-05-01T11:00:00Z").matches(&old));
        assert!(f("label=app").matches(&old));
        assert!(f("label=app=web").matches(&old));
        assert!(!f("label=app=db").matches(&old));
        assert!(f("label=tier").matches(&old));
        assert!(!f("label=app").matches(&new));
        assert!(f("label!=app").matches(&new));
        assert!(!f("label!=app=web").matches(&old));
        assert!(f("label!=app=db").matches(&old));
        let e = PruneFilter::parse("bogus=1", now).unwrap_err();
        assert_eq!(e.to_string(), "bogus is an invalid filter");
        assert!(PruneFilter::parse("until=yesterday", now).is_err());
        assert!(PruneFilter::parse("label", now).is_err());
    }

    #[test]
    fn renames_keep_names_unique() {
        let t = tempfile::tempdir().unwrap();
        let c = Containers::new(t.path()).unwrap();
        let ids: Vec<String> = (0..16)
            .map(|i| {
                c.create(ContainerRecord {
                    name: format!("c{i}"),
                    created: format!("2024-05-01T10:00:{i:02}Z"),
                    ..Default::default()
                })
                .unwrap()
                .id
            })
            .collect();
        let root = t.path().to_path_buf();
        let won: usize = ids
            .into_iter()
            .map(|id| {
                let root = root.clone();
                std::thread::spawn(move || {
                    Containers::new(&root)
                        .unwrap()
                        .rename(&id, "winner")
                        .is_ok()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum();
        assert_eq!(won, 1);
        let all = c.list().unwrap();
        assert_eq!(all.iter().filter(|r| r.name == "winner").count(), 1);
        let w = all.iter().find(|r| r.name == "winner").unwrap();
        // Its own name again is fine; a bad one is refused.
        assert!(c.rename(&w.id, "winner").is_ok());
        assert!(matches!(
            c.rename(&w.id, "-bad"),
            Err(StateError::BadName(_))
        ));
    }

    #[test]
    fn no_cgroup_messages() {
        let e = OpsError::NoCgroup {
            action: "pause",
            id: "abc".into(),
            rootless: true,
            v2: false,
        };
        assert_eq!(
            e.to_string(),
            "can not pause containers on rootless containers with cgroup V1: this container does not have a cgroup"
        );
        assert!(e.hint().unwrap().contains("cgroup v2"));
    }
}
