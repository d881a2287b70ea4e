//! The OCI runtime command-line contract (create, start, state, kill, delete) for crun,
//! runc and youki. Command lines are built as data (and table-tested); running them is
//! a separate step.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("OCI runtime {0:?} not found in $PATH")]
    NotFound(String),
    #[error("{runtime} {action} {id}: {detail}")]
    Failed {
        runtime: String,
        action: &'static str,
        id: String,
        detail: String,
    },
}

impl RuntimeError {
    pub fn hint(&self) -> Option<String> {
        match self {
            RuntimeError::NotFound(name) => Some(format!(
                "install it (Debian: apt-get install {name}) or choose another with --runtime"
            )),
            _ => None,
        }
    }
}

/// One OCI runtime binary and the state directory it keeps containers in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub name: String,
    pub path: PathBuf,
    /// `--root`: where the runtime keeps its own state (under capsa's runroot).
    pub state_root: PathBuf,
}

/// What `state` reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RuntimeState {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub pid: i32,
}

impl Runtime {
    /// Finds `name` (crun, runc, youki or a path) in `$PATH`.
    pub fn find(name: &str, state_root: &Path) -> Result<Runtime, RuntimeError> {
        let path = if name.contains('/') {
            let p = PathBuf::from(name);
            p.is_file().then_some(p)
        } else {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        }
        .ok_or_else(|| RuntimeError::NotFound(name.to_string()))?;
        Ok(Runtime {
            name: Path::new(name)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| name.to_string()),
            path,
            state_root: state_root.to_path_buf(),
        })
    }

    fn base(&self) -> Vec<OsString> {
        vec![
            self.path.clone().into(),
            "--root".into(),
            self.state_root.clone().into(),
        ]
    }

    pub fn create_args(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
    ) -> Vec<OsString> {
        let mut a = self.base();
        a.extend([
            "create".into(),
            "--bundle".into(),
            bundle.into(),
            "--pid-file".into(),
            pid_file.into(),
        ]);
        if let Some(s) = console_socket {
            a.extend(["--console-socket".into(), s.into()]);
        }
        a.push(id.into());
        a
    }

    pub fn start_args(&self, id: &str) -> Vec<OsString> {
        let mut a = self.base();
        a.extend(["start".into(), id.into()]);
        a
    }

    pub fn state_args(&self, id: &str) -> Vec<OsString> {
        let mut a = self.base();
        a.extend(["state".into(), id.into()]);
        a
    }

    pub fn kill_args(&self, id: &str, signal: &str, all: bool) -> Vec<OsString> {
        let mut a = self.base();
        a.push("kill".into());
        if all {
            a.push("--all".into());
        }
        a.extend([id.into(), signal.into()]);
        a
    }

    pub fn delete_args(&self, id: &str, force: bool) -> Vec<OsString> {
        let mut a = self.base();
        a.push("delete".into());
        if force {
            a.push("--force".into());
        }
        a.push(id.into());
        a
    }

    /// Runs a command line built above; returns its stdout. The container's process,
    /// made by `create`, inherits the runtime's stdio: it gets /dev/null and a file, never
    /// a pipe that would stay open as long as the container lives.
    pub fn run(
        &self,
        action: &'static str,
        id: &str,
        args: &[OsString],
    ) -> Result<Vec<u8>, RuntimeError> {
        let fail = |detail: String| RuntimeError::Failed {
            runtime: self.name.clone(),
            action,
            id: id.to_string(),
            detail,
        };
        let mut out = tempfile::tempfile().map_err(|e| fail(e.to_string()))?;
        let mut err = tempfile::tempfile().map_err(|e| fail(e.to_string()))?;
        let status = Command::new(&args[0])
            .args(&args[1..])
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().map_err(|e| fail(e.to_string()))?)
            .stderr(err.try_clone().map_err(|e| fail(e.to_string()))?)
            .status()
            .map_err(|e| fail(e.to_string()))?;
        let read = |f: &mut std::fs::File| {
            use std::io::{Read, Seek};
            let mut b = Vec::new();
            let _ = f.seek(std::io::SeekFrom::Start(0));
            let _ = f.read_to_end(&mut b);
            b
        };
        if !status.success() {
            return Err(fail(
                String::from_utf8_lossy(&read(&mut err)).trim().to_string(),
            ));
        }
        Ok(read(&mut out))
    }

    pub fn state(&self, id: &str) -> Result<RuntimeState, RuntimeError> {
        let out = self.run("state", id, &self.state_args(id))?;
        serde_json::from_slice(&out).map_err(|e| RuntimeError::Failed {
            runtime: self.name.clone(),
            action: "state",
            id: id.to_string(),
            detail: format!("unreadable state: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> Runtime {
        Runtime {
            name: "crun".into(),
            path: "/usr/bin/crun".into(),
            state_root: "/run/capsa/crun".into(),
        }
    }

    fn s(v: Vec<OsString>) -> String {
        v.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn command_lines() {
        let r = rt();
        let cases = [
            (
                s(r.create_args("c1", Path::new("/b"), Path::new("/b/pid"), None)),
                "/usr/bin/crun --root /run/capsa/crun create --bundle /b --pid-file /b/pid c1",
            ),
            (
                s(r.create_args(
                    "c1",
                    Path::new("/b"),
                    Path::new("/b/pid"),
                    Some(Path::new("/b/console.sock")),
                )),
                "/usr/bin/crun --root /run/capsa/crun create --bundle /b --pid-file /b/pid --console-socket /b/console.sock c1",
            ),
            (
                s(r.start_args("c1")),
                "/usr/bin/crun --root /run/capsa/crun start c1",
            ),
            (
                s(r.state_args("c1")),
                "/usr/bin/crun --root /run/capsa/crun state c1",
            ),
            (
                s(r.kill_args("c1", "TERM", false)),
                "/usr/bin/crun --root /run/capsa/crun kill c1 TERM",
            ),
            (
                s(r.kill_args("c1", "KILL", true)),
                "/usr/bin/crun --root /run/capsa/crun kill --all c1 KILL",
            ),
            (
                s(r.delete_args("c1", true)),
                "/usr/bin/crun --root /run/capsa/crun delete --force c1",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn missing_runtime_has_a_hint() {
        let e = Runtime::find("no-such-runtime-xyz", Path::new("/tmp")).unwrap_err();
        assert!(e.to_string().contains("not found"));
        assert!(e.hint().unwrap().contains("--runtime"));
    }

    /// The whole contract against crun: create, state, start, kill, delete.
    #[test]
    fn crun_lifecycle() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP crun_lifecycle: needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let Ok(r) = Runtime::find("crun", &t.path().join("state")) else {
            eprintln!("SKIP crun_lifecycle: crun is not installed (scripts/setup.sh installs it)");
            return;
        };
        let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
        else {
            eprintln!(
                "SKIP crun_lifecycle: busybox-static is not installed (scripts/setup.sh installs it)"
            );
            return;
        };
        let bundle = t.path().join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs/bin")).unwrap();
        std::fs::copy(busybox, bundle.join("rootfs/bin/busybox")).unwrap();
        let o = super::super::spec::SpecOptions::new(vec![
            "/bin/busybox".into(),
            "sleep".into(),
            "60".into(),
        ]);
        let spec = super::super::spec::build(&o, "rootfs").unwrap();
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        let id = format!("capsa-rt-test-{}", std::process::id());
        r.run(
            "create",
            &id,
            &r.create_args(&id, &bundle, &bundle.join("pid"), None),
        )
        .unwrap();
        let st = r.state(&id).unwrap();
        assert_eq!(st.status, "created");
        assert!(st.pid > 0);
        r.run("start", &id, &r.start_args(&id)).unwrap();
        assert_eq!(r.state(&id).unwrap().status, "running");
        r.run("kill", &id, &r.kill_args(&id, "KILL", false))
            .unwrap();
        let mut stopped = false;
        for _ in 0..50 {
            if r.state(&id).unwrap().status == "stopped" {
                stopped = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(stopped, "the container stops after SIGKILL");
        r.run("delete", &id, &r.delete_args(&id, false)).unwrap();
        assert!(r.state(&id).is_err(), "deleted containers have no state");
    }
}
