//! `capsa-monitor`: one small synchronous process per container, the role conmon plays
//! for Podman. It owns starting the OCI runtime's `create`, the container's stdio (pipes
//! or the pty), the log (k8s-file, json-file), the attach socket, reaping the container's
//! process, the exit file and running the exit command. It does not own the container
//! record, `start`, stopping or deleting the container: the engine does those through the
//! runtime. It also relays the container's systemd notifications (`--sdnotify-socket`).
//! The contract is docs/internals.md, "The monitor". std and libc only, one
//! poll(2) loop and no threads, so that its memory stays below conmon's.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod args;
pub mod logfile;
pub mod monitor;
pub mod notify;
pub mod sys;

use std::ffi::OsString;

/// The binary: parse, run, map to an exit code (0 once the container was reported and
/// has exited, 1 when it could not be created, 125 for a bad command line).
pub fn main() -> i32 {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let args = match args::Args::parse(argv.iter().cloned()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("capsa-monitor: error: {e}");
            eprintln!(
                "hint: capsa-monitor is spawned by `capsa run`/`capsa start`; see docs/internals.md"
            );
            if let Some(fd) = args::Args::sync_fd_of(&argv)
                && sys::fd_is_open(fd)
            {
                // SAFETY: the caller handed this open fd to us; nothing else owns it.
                let mut f = std::fs::File::from(unsafe { sys::owned(fd) });
                let _ = std::io::Write::write_all(&mut f, format!("error {e}\n").as_bytes());
            }
            return 125;
        }
    };
    monitor::run(args)
}
