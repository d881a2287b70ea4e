//! Hypervisor processes that outlive the command that started them: spawned in their
//! own session with stdio on files, recorded as `PID STARTTIME` so that a reused pid is
//! never mistaken for the VM (the pattern of the engine's pause process).

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("opening {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}: {source}")]
    PidFile {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// A running process known by pid and start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    pub pid: i32,
    pub start_time: String,
}

/// Spawns `argv` in a new session, stdin from /dev/null and stdout+stderr appended to
/// `log`, and records it in `pid_file`. A thread reaps it, so a long-lived caller (the
/// desktop app, a test) does not keep a zombie that looks alive.
pub fn spawn_daemon(argv: &[String], log: &Path, pid_file: &Path) -> Result<Daemon, ProcessError> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| ProcessError::Log {
            path: log.display().to_string(),
            source,
        })?;
    let err = out.try_clone().map_err(|source| ProcessError::Log {
        path: log.display().to_string(),
        source,
    })?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
    let pid = child.id() as i32;
    std::thread::spawn(move || child.wait());
    let start_time = platform::start_time(pid).unwrap_or_default();
    let d = Daemon { pid, start_time };
    write_pid_file(pid_file, &d)?;
    Ok(d)
}

pub fn write_pid_file(path: &Path, d: &Daemon) -> Result<(), ProcessError> {
    let tmp = path.with_extension("pid.tmp");
    fs::write(&tmp, format!("{} {}\n", d.pid, d.start_time))
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|source| ProcessError::PidFile {
            path: path.display().to_string(),
            source,
        })
}

/// The process recorded in `pid_file`, when it still runs (same pid, same start time).
pub fn live(pid_file: &Path) -> Option<Daemon> {
    let text = fs::read_to_string(pid_file).ok()?;
    let (pid, start) = text.trim().split_once(' ')?;
    let pid: i32 = pid.parse().ok()?;
    let now = platform::start_time(pid)?;
    (now == start).then_some(Daemon {
        pid,
        start_time: now,
    })
}

impl Daemon {
    pub fn alive(&self) -> bool {
        platform::start_time(self.pid).as_deref() == Some(self.start_time.as_str())
    }

    pub fn signal(&self, sig: i32) -> io::Result<()> {
        if !self.alive() {
            return Ok(());
        }
        // SAFETY: plain kill(2) on a pid we just checked is still ours.
        if unsafe { libc::kill(self.pid, sig) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until the process is gone; false on timeout.
    pub fn wait_gone(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while self.alive() {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

#[cfg(target_os = "linux")]
mod platform {
    /// Field 22 of /proc/PID/stat; `None` when gone or a zombie.
    pub fn start_time(pid: i32) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 2..];
        let mut fields = after.split(' ');
        if matches!(fields.next(), Some("Z" | "X" | "x")) {
            return None;
        }
        fields.nth(18).map(str::to_string)
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    /// Without /proc, liveness is kill(pid, 0); the start time is not compared.
    pub fn start_time(pid: i32) -> Option<String> {
        // SAFETY: signal 0 only checks for existence.
        (unsafe { libc::kill(pid, 0) } == 0).then(String::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_is_tracked_and_reused_pids_are_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("x.pid");
        let log = dir.path().join("x.log");
        let argv = vec!["sh".into(), "-c".into(), "echo hi; exec sleep 30".into()];
        let d = spawn_daemon(&argv, &log, &pid_file).unwrap();
        assert_eq!(live(&pid_file), Some(d.clone()));
        // Its own session: the new process leads it.
        let sid = unsafe { libc::getsid(d.pid) };
        assert_eq!(sid, d.pid);
        // Its stdout goes to the log.
        let end = Instant::now() + Duration::from_secs(10);
        while !fs::read_to_string(&log).unwrap().contains("hi") {
            assert!(Instant::now() < end, "nothing in the log");
            std::thread::sleep(Duration::from_millis(20));
        }
        d.signal(libc::SIGKILL).unwrap();
        assert!(d.wait_gone(Duration::from_secs(5)));
        assert_eq!(live(&pid_file), None);
        // Same pid, other start time: not ours.
        fs::write(&pid_file, format!("{} 1\n", std::process::id())).unwrap();
        assert_eq!(live(&pid_file), None);
    }
}
