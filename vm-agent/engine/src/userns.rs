//! Rootless operation, the way Podman does it: one long-lived *pause* process per user
//! holds a user namespace (uid/gid maps set with `newuidmap`/`newgidmap` from
//! /etc/subuid and /etc/subgid, so layer files keep their owners mapped into the user's
//! subordinate range) and a mount namespace. Every rootless `capsa` joins both with
//! setns(2) before it starts threads, so all commands see the same mounts (container root
//! filesystems stay mounted between commands) and can signal every container. The
//! command itself stays the process the user started: containers still descend from it.
//!
//! The pause process is recorded in `<runtime dir>/pause.pid` as `<pid> <start time>`;
//! `pause.lock` serialises its creation. When it is gone (a reboot, a kill), the next
//! command starts a new one.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::store::lock::FileLock;

/// Set in the pause process when it is spawned: its end of the handshake pipes.
const ENV_PAUSE: &str = "_CAPSA_PAUSE_FDS";
/// Set once inside the namespace: the real (outer) uid, which marks the process (and
/// everything it starts, such as the monitor and its exit command) as rootless.
pub const ENV_ROOTLESS_UID: &str = "_CAPSA_ROOTLESS_UID";

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("creating a user namespace: {0}")]
    Unshare(#[source] io::Error),
    #[error("setting up the user namespace: {0}")]
    Setup(String),
    #[error("starting the pause process: {0}")]
    Spawn(#[source] io::Error),
    #[error("joining the user namespace of pause process {pid}: {source}")]
    Join {
        pid: i32,
        #[source]
        source: io::Error,
    },
}

/// A subordinate id range from /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u64,
    pub count: u64,
}

/// Ranges for `user` (name or numeric id) in a subid file's text.
pub fn parse_subid(text: &str, user: &str, uid: u32) -> Vec<IdRange> {
    let uid_s = uid.to_string();
    text.lines()
        .filter_map(|l| {
            let mut it = l.trim().split(':');
            let (who, start, count) = (it.next()?, it.next()?, it.next()?);
            if who != user && who != uid_s {
                return None;
            }
            Some(IdRange {
                start: start.parse().ok()?,
                count: count.parse().ok()?,
            })
        })
        .collect()
}

/// True when running without real root (including inside our own namespace).
pub fn is_rootless() -> bool {
    std::env::var_os(ENV_ROOTLESS_UID).is_some() || !rustix::process::geteuid().is_root()
}

/// The uid the user really has (outside any namespace of ours).
pub fn real_uid() -> u32 {
    std::env::var(ENV_ROOTLESS_UID)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rustix::process::getuid().as_raw())
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    })
}

/// The per-user directory of runtime files (`$XDG_RUNTIME_DIR/capsa`, else
/// `/tmp/capsa-run-<uid>`): also the default rootless `--runroot`.
pub fn runtime_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| Path::new(d).is_dir())
        .map(|d| PathBuf::from(d).join("capsa"))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("capsa-run-{}", real_uid())))
}

/// In the pause process (spawned by [`enter`]) this never returns; call it first thing
/// in `main`, before parsing arguments.
pub fn run_pause_if_asked() {
    if let Some(fds) = std::env::var_os(ENV_PAUSE) {
        pause_main(&fds);
    }
}

/// Makes sure the process runs as root of the user's namespace when it is not real root.
/// Must run before any thread starts. In the pause process it never returns.
pub fn enter() -> Result<(), UsernsError> {
    if rustix::process::geteuid().is_root() {
        // Real root, or already inside (the monitor and what it runs).
        return Ok(());
    }
    let uid = rustix::process::getuid().as_raw();
    let dir = runtime_dir();
    fs::create_dir_all(&dir).map_err(|e| UsernsError::Setup(format!("{}: {e}", dir.display())))?;
    let _ = fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
    let lock_path = dir.join("pause.lock");
    let _lock = FileLock::exclusive(&lock_path)
        .map_err(|e| UsernsError::Setup(format!("locking {}: {e}", lock_path.display())))?;
    let pid_file = dir.join("pause.pid");
    let pid = match live_pause(&pid_file) {
        Some(pid) => pid,
        None => spawn_pause(uid, &pid_file)?,
    };
    join(pid)?;
    // SAFETY: still single-threaded; nothing reads the environment concurrently.
    unsafe { std::env::set_var(ENV_ROOTLESS_UID, uid.to_string()) };
    Ok(())
}

/// The pid in `pid_file` when that process still runs (same start time).
fn live_pause(pid_file: &Path) -> Option<i32> {
    let text = fs::read_to_string(pid_file).ok()?;
    let (pid, start) = text.trim().split_once(' ')?;
    let pid: i32 = pid.parse().ok()?;
    (start_time(pid)? == start).then_some(pid)
}

/// Field 22 of /proc/PID/stat: the start time, which tells a pid's reuse apart. `None`
/// when the process is gone, or dead and not yet reaped (a zombie: its parent may be
/// an init that never reaps).
pub fn start_time(pid: i32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split(' ');
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18).map(str::to_string)
}

fn spawn_pause(uid: u32, pid_file: &Path) -> Result<i32, UsernsError> {
    let gid = rustix::process::getgid().as_raw();
    let (to_parent_r, to_parent_w) = pipe()?;
    let (to_child_r, to_child_w) = pipe()?;
    let exe = fs::read_link("/proc/self/exe").map_err(UsernsError::Spawn)?;
    let mut cmd = Command::new(exe);
    cmd.arg0("capsa-pause")
        .env(
            ENV_PAUSE,
            format!("{},{}", to_child_r.as_raw_fd(), to_parent_w.as_raw_fd()),
        )
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let (r1, w1) = (to_child_r.as_raw_fd(), to_parent_w.as_raw_fd());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [r1, w1] {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(UsernsError::Spawn)?;
    drop(to_child_r);
    drop(to_parent_w);
    let mut from_child = fs::File::from(to_parent_r);
    let mut to_child = fs::File::from(to_child_w);
    let mut b = [0u8; 1];
    if from_child.read_exact(&mut b).is_err() {
        let _ = child.wait();
        return Err(UsernsError::Setup(
            "the pause process failed to create its namespaces (are unprivileged user namespaces enabled? see sysctl kernel.unprivileged_userns_clone)".into(),
        ));
    }
    let msg = match write_maps(child.id(), uid, gid) {
        Ok(()) => b"1".to_vec(),
        Err(e) => format!("0{e}").into_bytes(),
    };
    let _ = to_child.write_all(&msg);
    drop(to_child);
    if msg[0] != b'1' {
        let _ = child.wait();
        return Err(UsernsError::Setup(
            String::from_utf8_lossy(&msg[1..]).into_owned(),
        ));
    }
    // The child answers once it is root in the namespace.
    let mut ready = Vec::new();
    let _ = from_child.read_to_end(&mut ready);
    if ready.first() != Some(&b'r') {
        let _ = child.wait();
        return Err(UsernsError::Setup(
            String::from_utf8_lossy(ready.get(1..).unwrap_or_default()).into_owned(),
        ));
    }
    let pid = child.id() as i32;
    let start =
        start_time(pid).ok_or_else(|| UsernsError::Setup("the pause process exited".into()))?;
    crate::store::write_atomic(
        pid_file.parent().unwrap_or(Path::new("/")),
        pid_file,
        format!("{pid} {start}\n").as_bytes(),
    )
    .map_err(|e| UsernsError::Setup(format!("writing {}: {e}", pid_file.display())))?;
    // Not waited for: it outlives this command and is reparented.
    std::mem::forget(child);
    Ok(pid)
}

/// Joins the pause process's user and mount namespaces, keeping the working directory.
fn join(pid: i32) -> Result<(), UsernsError> {
    let err = |source| UsernsError::Join { pid, source };
    let cwd = std::env::current_dir().ok();
    let user = fs::File::open(format!("/proc/{pid}/ns/user")).map_err(err)?;
    let mnt = fs::File::open(format!("/proc/{pid}/ns/mnt")).map_err(err)?;
    rustix::thread::move_into_link_name_space(
        user.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::User),
    )
    .map_err(|e| err(e.into()))?;
    rustix::thread::move_into_link_name_space(
        mnt.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Mount),
    )
    .map_err(|e| err(e.into()))?;
    become_root().map_err(UsernsError::Setup)?;
    if let Some(cwd) = cwd {
        let _ = std::env::set_current_dir(cwd);
    }
    Ok(())
}

fn become_root() -> Result<(), String> {
    // SAFETY: plain syscalls; we are single-threaded here.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            return Err(format!(
                "becoming root in the namespace: {}",
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), UsernsError> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(UsernsError::Spawn(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The pause process: creates the namespaces, waits for its maps, then sleeps forever.
fn pause_main(fds: &std::ffi::OsStr) -> ! {
    let s = fds.to_string_lossy();
    let Some((r, w)) = s
        .split_once(',')
        .and_then(|(a, b)| Some((a.parse::<i32>().ok()?, b.parse::<i32>().ok()?)))
    else {
        std::process::exit(125);
    };
    // SAFETY: the parent passed us these two pipe ends.
    let (mut from_parent, mut to_parent) =
        unsafe { (fs::File::from_raw_fd(r), fs::File::from_raw_fd(w)) };
    // SAFETY: single-threaded; nothing shares the file table or fs state with us.
    let unshared = unsafe {
        rustix::thread::unshare_unsafe(
            rustix::thread::UnshareFlags::NEWUSER | rustix::thread::UnshareFlags::NEWNS,
        )
    };
    if unshared.is_err() {
        std::process::exit(125);
    }
    let _ = to_parent.write_all(b"u");
    let mut answer = Vec::new();
    let _ = from_parent.read_to_end(&mut answer);
    if answer.first() != Some(&b'1') {
        std::process::exit(125);
    }
    if let Err(e) = become_root() {
        let _ = to_parent.write_all(format!("e{e}").as_bytes());
        std::process::exit(125);
    }
    let _ = to_parent.write_all(b"r");
    drop(to_parent);
    // SAFETY: ignoring signals and sleeping; no Rust state is involved.
    unsafe {
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        loop {
            libc::pause();
        }
    }
}

fn write_maps(pid: u32, uid: u32, gid: u32) -> Result<(), String> {
    let name = user_name(uid).unwrap_or_else(|| uid.to_string());
    let subuids = parse_subid(
        &fs::read_to_string("/etc/subuid").unwrap_or_default(),
        &name,
        uid,
    );
    let subgids = parse_subid(
        &fs::read_to_string("/etc/subgid").unwrap_or_default(),
        &name,
        uid,
    );
    if subuids.is_empty() || subgids.is_empty() {
        tracing::warn!(
            "no subordinate ids for {name} in /etc/subuid and /etc/subgid: only your own uid is mapped, so files owned by other users in images cannot be stored (add ranges with `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}`)"
        );
        fs::write(format!("/proc/{pid}/setgroups"), "deny")
            .map_err(|e| format!("writing setgroups: {e}"))?;
        fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid} 1\n"))
            .map_err(|e| format!("writing uid_map: {e}"))?;
        fs::write(format!("/proc/{pid}/gid_map"), format!("0 {gid} 1\n"))
            .map_err(|e| format!("writing gid_map: {e}"))?;
        return Ok(());
    }
    run_map("newuidmap", pid, uid, &subuids)?;
    run_map("newgidmap", pid, gid, &subgids)
}

fn run_map(tool: &str, pid: u32, own: u32, ranges: &[IdRange]) -> Result<(), String> {
    let mut args = vec![pid.to_string(), "0".into(), own.to_string(), "1".into()];
    let mut next = 1u64;
    for r in ranges {
        args.extend([next.to_string(), r.start.to_string(), r.count.to_string()]);
        next += r.count;
    }
    let out = Command::new(tool)
        .args(&args)
        .output()
        .map_err(|e| format!("running {tool}: {e} (hint: install the uidmap package)"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_lines() {
        let text = "alice:100000:65536\nbob:165536:65536\n1001:231072:1000\n";
        assert_eq!(
            parse_subid(text, "bob", 1000),
            vec![IdRange {
                start: 165536,
                count: 65536
            }]
        );
        assert_eq!(
            parse_subid(text, "carol", 1001),
            vec![IdRange {
                start: 231072,
                count: 1000
            }]
        );
        assert!(parse_subid(text, "dave", 5).is_empty());
    }
}
