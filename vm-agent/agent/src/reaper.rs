//! The one place that calls waitpid. As PID 1 the agent inherits every orphan of the
//! guest and must reap them; a reaper that waits for any child would also steal the exit
//! status of our own execs from whoever waits for them, so both go through here: execs
//! register their pid and get their status, everything else is reaped and dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Clone, Copy, Debug)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
}

static WAITING: Mutex<Option<HashMap<i32, oneshot::Sender<Status>>>> = Mutex::new(None);

/// Starts reaping. Must run before the first child is spawned, so no SIGCHLD is missed.
pub fn start() -> std::io::Result<()> {
    *WAITING.lock().unwrap() = Some(HashMap::new());
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            reap_all();
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

/// Returns the status of `pid` once it exits. Call it right after spawning, before any
/// await: the reaper runs on the same thread, so it cannot have reaped `pid` yet.
pub fn watch(pid: i32) -> oneshot::Receiver<Status> {
    let (tx, rx) = oneshot::channel();
    WAITING
        .lock()
        .unwrap()
        .as_mut()
        .expect("reaper started")
        .insert(pid, tx);
    rx
}

fn reap_all() {
    loop {
        let mut raw = 0;
        // SAFETY: waitpid writes the status into `raw`.
        let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        let status = if libc::WIFSIGNALED(raw) {
            Status::Signaled(libc::WTERMSIG(raw))
        } else {
            Status::Exited(libc::WEXITSTATUS(raw))
        };
        let mut waiting = WAITING.lock().unwrap();
        if let Some(tx) = waiting.as_mut().and_then(|w| w.remove(&pid)) {
            let _ = tx.send(status);
        }
    }
}
