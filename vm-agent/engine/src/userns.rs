//! Rootless operation: the `capsa` process re-executes itself inside a new user
//! namespace whose uid/gid maps (set with `newuidmap`/`newgidmap` from /etc/subuid and
//! /etc/subgid) give it a range of ids, so layer files keep their owners, mapped into the
//! user's subordinate range. The parent only waits and passes on the exit code, so the
//! child (and anything it starts) still descends from the invoking process.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

/// Set in the child: the re-executed process is already inside the namespace.
pub const ENV_CHILD: &str = "_CAPSA_USERNS_FDS";
/// Set in the child: the real (outer) uid, which marks the process as rootless.
pub const ENV_ROOTLESS_UID: &str = "_CAPSA_ROOTLESS_UID";

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("creating a user namespace: {0}")]
    Unshare(#[source] io::Error),
    #[error("setting up the user namespace: {0}")]
    Setup(String),
    #[error("re-executing capsa in a user namespace: {0}")]
    Exec(#[source] io::Error),
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

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Makes sure the process runs as root of a user namespace when it is not real root.
/// Must run before any thread starts. In the parent it never returns: it exits with the
/// child's code. In the child it finishes the handshake and returns.
pub fn enter() -> Result<(), UsernsError> {
    if let Some(fds) = std::env::var_os(ENV_CHILD) {
        return finish_child(&fds);
    }
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let (to_parent_r, to_parent_w) = pipe()?;
    let (to_child_r, to_child_w) = pipe()?;
    let exe = fs::read_link("/proc/self/exe").map_err(UsernsError::Exec)?;
    let mut cmd = Command::new(exe);
    cmd.arg0(
        std::env::args_os()
            .next()
            .unwrap_or_else(|| OsString::from("capsa")),
    )
    .args(std::env::args_os().skip(1))
    .env(
        ENV_CHILD,
        format!("{},{}", to_child_r.as_raw_fd(), to_parent_w.as_raw_fd()),
    )
    .env(ENV_ROOTLESS_UID, uid.to_string());
    let (r1, w1) = (to_child_r.as_raw_fd(), to_parent_w.as_raw_fd());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [r1, w1] {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(UsernsError::Exec)?;
    drop(to_child_r);
    drop(to_parent_w);
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    // SAFETY: installing a handler that only calls kill().
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, forward as *const () as libc::sighandler_t);
        }
        // Ctrl-C reaches the whole foreground group, the child included.
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let mut from_child = fs::File::from(to_parent_r);
    let mut to_child = fs::File::from(to_child_w);
    let mut b = [0u8; 1];
    let status = match from_child.read_exact(&mut b) {
        Ok(()) => {
            let msg = match write_maps(child.id(), uid, gid) {
                Ok(()) => b"1".to_vec(),
                Err(e) => format!("0{e}").into_bytes(),
            };
            let _ = to_child.write_all(&msg);
            drop(to_child);
            child.wait()
        }
        Err(_) => child.wait(), // the child failed before unsharing and said why
    };
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)
        }),
        Err(_) => 125,
    };
    std::process::exit(code);
}

fn pipe() -> Result<(OwnedFd, OwnedFd), UsernsError> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(UsernsError::Exec(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn finish_child(fds: &std::ffi::OsStr) -> Result<(), UsernsError> {
    let s = fds.to_string_lossy();
    let (r, w) = s
        .split_once(',')
        .and_then(|(a, b)| Some((a.parse::<i32>().ok()?, b.parse::<i32>().ok()?)))
        .ok_or_else(|| UsernsError::Setup(format!("bad {ENV_CHILD} {s:?}")))?;
    // SAFETY: the parent passed us these two pipe ends.
    let (mut from_parent, mut to_parent) =
        unsafe { (fs::File::from_raw_fd(r), fs::File::from_raw_fd(w)) };
    // SAFETY: ENV_CHILD is consumed before any thread exists.
    unsafe { std::env::remove_var(ENV_CHILD) };
    // SAFETY: single-threaded; nothing shares the file table or fs state with us.
    unsafe {
        rustix::thread::unshare_unsafe(
            rustix::thread::UnshareFlags::NEWUSER | rustix::thread::UnshareFlags::NEWNS,
        )
        .or_else(|_| rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER))
    }
    .map_err(|e| UsernsError::Unshare(e.into()))?;
    to_parent
        .write_all(b"u")
        .map_err(|e| UsernsError::Setup(e.to_string()))?;
    drop(to_parent);
    let mut answer = Vec::new();
    from_parent
        .read_to_end(&mut answer)
        .map_err(|e| UsernsError::Setup(e.to_string()))?;
    match answer.split_first() {
        Some((b'1', _)) => {}
        Some((_, msg)) => {
            return Err(UsernsError::Setup(
                String::from_utf8_lossy(msg).into_owned(),
            ));
        }
        None => return Err(UsernsError::Setup("the parent process went away".into())),
    }
    // SAFETY: plain syscalls; we are single-threaded here.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            return Err(UsernsError::Setup(format!(
                "becoming root in the namespace: {}",
                io::Error::last_os_error()
            )));
        }
    }
    Ok(())
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
