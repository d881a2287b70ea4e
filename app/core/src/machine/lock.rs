//! Advisory locks (flock) on a file: held for the whole of a command that changes a
//! machine, released by the kernel if the command dies. The holder writes its pid into
//! the file so the loser can say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{what} is busy: another capsa command (pid {pid}) is using it")]
    Busy { what: String, pid: String },
    #[error("locking {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock without waiting: a second command gets `Busy` at once instead of
    /// queueing behind a boot that may take minutes.
    pub fn acquire(path: &Path, what: &str) -> Result<Lock, LockError> {
        Lock::take(path, what, libc::LOCK_NB)
    }

    /// Waits for the lock: for changes that take a moment (a small file rewritten), where
    /// queueing is right and refusing would lose the change.
    pub fn wait(path: &Path, what: &str) -> Result<Lock, LockError> {
        Lock::take(path, what, 0)
    }

    fn take(path: &Path, what: &str, flags: libc::c_int) -> Result<Lock, LockError> {
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | flags) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = f.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Busy {
                    what: what.into(),
                    pid: if pid.is_empty() {
                        "?".into()
                    } else {
                        pid.into()
                    },
                });
            }
            return Err(io(e));
        }
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = write!(f, "{}", std::process::id());
        Ok(Lock { _file: f })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_pid() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let first = Lock::acquire(&p, "machine \"m\"").unwrap();
        let e = Lock::acquire(&p, "machine \"m\"").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "machine \"m\" is busy: another capsa command (pid {}) is using it",
                std::process::id()
            )
        );
        drop(first);
        Lock::acquire(&p, "m").unwrap();
    }
}
