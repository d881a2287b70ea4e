//! Starting an exec's process: user, environment, working directory, and its stdio as
//! pipes or a pty.

use crate::fdio::FdStream;
use crate::reaper::{self, Status};
use crate::sys::{self, User};
use capsa_proto::{ErrorBody, ErrorCode, ExecRequest, WinSize};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

pub type Reader = Box<dyn AsyncRead + Unpin + Send>;
pub type Writer = Box<dyn AsyncWrite + Unpin + Send>;

pub struct Spawned {
    pub pid: i32,
    pub status: oneshot::Receiver<Status>,
    pub stdin: Option<Writer>,
    pub stdout: Option<Reader>,
    pub stderr: Option<Reader>,
    /// The pty master, for Resize.
    pub pty: Option<FdStream>,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn err(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

pub fn spawn(req: &ExecRequest) -> Result<Spawned, ErrorBody> {
    let Some(program) = req.argv.first() else {
        return Err(err(ErrorCode::BadRequest, "exec needs a non-empty argv"));
    };
    let root = Path::new("/");
    let me = sys::current_user(root);
    let user = match &req.user {
        Some(spec) => sys::lookup_user(root, spec).ok_or_else(|| {
            err(
                ErrorCode::NoSuchUser,
                format!("no such user {spec:?} in the guest"),
            )
        })?,
        None => me.clone(),
    };
    if me.uid != 0 && user.uid != me.uid {
        return Err(err(
            ErrorCode::PermissionDenied,
            format!(
                "the agent runs as uid {} and cannot start processes as {:?}",
                me.uid, user.name
            ),
        ));
    }
    let cwd = match &req.cwd {
        Some(cwd) => {
            if !Path::new(cwd).is_dir() {
                return Err(err(
                    ErrorCode::BadRequest,
                    format!("working directory {cwd:?} does not exist in the guest"),
                ));
            }
            cwd.clone()
        }
        None if Path::new(&user.home).is_dir() => user.home.clone(),
        None => "/".to_string(),
    };

    let mut cmd = Command::new(program);
    cmd.args(&req.argv[1..]).current_dir(&cwd).env_clear();
    cmd.env("PATH", DEFAULT_PATH)
        .env("HOME", &user.home)
        .env("USER", &user.name)
        .env("LOGNAME", &user.name)
        .env("SHELL", &user.shell);
    if req.tty {
        cmd.env("TERM", "xterm-256color");
    }
    for entry in &req.env {
        match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                cmd.env(key, value);
            }
            _ => {
                return Err(err(
                    ErrorCode::BadRequest,
                    format!("environment entry {entry:?} is not KEY=VALUE"),
                ));
            }
        }
    }

    let pty = if req.tty {
        let (master, slave) = open_pty(req.size)
            .map_err(|e| err(ErrorCode::Failed, format!("cannot open a pty: {e}")))?;
        let dup = |fd: &OwnedFd| -> Result<Stdio, ErrorBody> {
            fd.try_clone()
                .map(Stdio::from)
                .map_err(|e| err(ErrorCode::Failed, format!("cannot duplicate the pty: {e}")))
        };
        cmd.stdin(dup(&slave)?)
            .stdout(dup(&slave)?)
            .stderr(dup(&slave)?);
        Some(master)
    } else {
        let piped = |wanted: bool| {
            if wanted {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        cmd.stdin(piped(req.stdin.is_some()))
            .stdout(piped(req.stdout.is_some()))
            .stderr(piped(req.stderr.is_some()));
        None
    };

    let switch_user = me.uid == 0;
    let tty = req.tty;
    let (uid, gid, groups) = (user.uid, user.gid, user.groups.clone());
    // SAFETY: only async-signal-safe system calls run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // A session of its own: signals reach its whole group, and a pty can become
            // its controlling terminal.
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if switch_user
                && (libc::setgroups(groups.len(), groups.as_ptr()) < 0
                    || libc::setgid(gid) < 0
                    || libc::setuid(uid) < 0)
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| spawn_error(program, &user, e))?;
    let pid = child.id() as i32;
    // Before any await: the reaper shares this thread and cannot have reaped it yet.
    let status = reaper::watch(pid);
    drop(cmd);

    let pipe_err = |e: io::Error| err(ErrorCode::Failed, format!("cannot set up stdio: {e}"));
    let mut spawned = Spawned {
        pid,
        status,
        stdin: None,
        stdout: None,
        stderr: None,
        pty: None,
    };
    if let Some(master) = pty {
        let stream = FdStream::new(master, true).map_err(pipe_err)?;
        spawned.stdin = req.stdin.map(|_| Box::new(stream.clone()) as Writer);
        spawned.stdout = Some(Box::new(stream.clone()));
        spawned.pty = Some(stream);
    } else {
        if let Some(stdin) = child.stdin.take() {
            let fd = OwnedFd::from(stdin);
            spawned.stdin = Some(Box::new(pipe::Sender::from_owned_fd(fd).map_err(pipe_err)?));
        }
        if let Some(stdout) = child.stdout.take() {
            let fd = OwnedFd::from(stdout);
            spawned.stdout = Some(Box::new(
                pipe::Receiver::from_owned_fd(fd).map_err(pipe_err)?,
            ));
        }
        if let Some(stderr) = child.stderr.take() {
            let fd = OwnedFd::from(stderr);
            spawned.stderr = Some(Box::new(
                pipe::Receiver::from_owned_fd(fd).map_err(pipe_err)?,
            ));
        }
    }
    Ok(spawned)
}

fn spawn_error(program: &str, user: &User, e: io::Error) -> ErrorBody {
    match e.kind() {
        io::ErrorKind::NotFound => err(
            ErrorCode::NotFound,
            format!("{program:?}: executable file not found in $PATH"),
        ),
        io::ErrorKind::PermissionDenied => err(
            ErrorCode::PermissionDenied,
            format!("{program:?}: permission denied (as user {:?})", user.name),
        ),
        _ => err(ErrorCode::Failed, format!("cannot start {program:?}: {e}")),
    }
}

fn open_pty(size: Option<WinSize>) -> io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    let ws = size.map(winsize);
    let ws_ptr = ws
        .as_ref()
        .map_or(std::ptr::null(), |w| w as *const libc::winsize);
    // SAFETY: openpty writes two descriptors; name and termios may be null.
    if unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            ws_ptr,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty returned two fresh descriptors that nothing else owns.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // openpty does not set close-on-exec: a leaked slave in another exec would keep this
    // pty open after its process exits.
    for fd in [&master, &slave] {
        // SAFETY: fcntl on descriptors we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((master, slave))
}

fn winsize(size: WinSize) -> libc::winsize {
    libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

pub fn resize(pty: &FdStream, size: WinSize) -> io::Result<()> {
    let ws = winsize(size);
    // SAFETY: TIOCSWINSZ reads the winsize we pass.
    if unsafe { libc::ioctl(pty.raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
