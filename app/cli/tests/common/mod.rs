//! Helpers for integration tests: a private store per test, the fixture registries that
//! scripts/test.sh starts, and the capsa binary run as root or as the rootless user.
#![allow(dead_code)]

pub mod fake;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Skips the test loudly when a fixture is missing.
#[macro_export]
macro_rules! need {
    ($var:expr) => {
        match std::env::var($var) {
            Ok(v) if !v.is_empty() => v,
            _ => {
                eprintln!(
                    "SKIP {}: {} is not set (scripts/test.sh starts the fixtures and sets it)",
                    module_path!(),
                    $var
                );
                return;
            }
        }
    };
}

pub struct Capsa {
    pub dir: tempfile::TempDir,
    pub driver: &'static str,
    pub user: Option<String>,
    pub extra_env: Vec<(String, String)>,
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_capsa"))
}

/// `capsa-monitor`, built next to `capsa` by `cargo test --workspace`.
pub fn monitor_bin() -> PathBuf {
    bin().with_file_name("capsa-monitor")
}

impl Drop for Capsa {
    /// Containers a test left behind are removed, so nothing keeps running and no
    /// mount keeps the temporary directory busy.
    fn drop(&mut self) {
        if self.root().join("containers").is_dir() {
            let _ = self.cmd(&["rm", "-af", "-t", "0"]).output();
        }
    }
}

impl Capsa {
    pub fn new() -> Capsa {
        Self::with_driver("overlay")
    }

    pub fn with_driver(driver: &'static str) -> Capsa {
        let dir = tempfile::Builder::new()
            .prefix("capsa-it-")
            .tempdir()
            .unwrap();
        let c = Capsa {
            dir,
            driver,
            user: None,
            extra_env: Vec::new(),
        };
        c.write_registries_conf(&[]);
        c
    }

    /// A store owned by the unprivileged test user; commands run as that user.
    pub fn rootless(user: &str) -> Capsa {
        let dir = tempfile::Builder::new()
            .prefix("capsa-it-rl-")
            .tempdir()
            .unwrap();
        let st = Command::new("chown")
            .arg(format!("{user}:"))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        // The binary must be reachable by the user whatever the checkout's permissions.
        let exe = dir.path().join("capsa");
        std::fs::copy(bin(), &exe).unwrap();
        if monitor_bin().is_file() {
            std::fs::copy(monitor_bin(), dir.path().join("capsa-monitor")).unwrap();
        }
        let c = Capsa {
            dir,
            driver: "overlay",
            user: Some(user.to_string()),
            extra_env: Vec::new(),
        };
        c.write_registries_conf(&[]);
        Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:"))
            .arg(c.dir.path())
            .status()
            .unwrap();
        c
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// registries.conf for this test: the fixture registries are plain HTTP.
    pub fn write_registries_conf(&self, search: &[&str]) {
        let mut s = String::new();
        let quoted: Vec<String> = search.iter().map(|r| format!("{r:?}")).collect();
        s.push_str(&format!(
            "unqualified-search-registries = [{}]\n",
            quoted.join(", ")
        ));
        for var in [
            "CAPSA_TEST_REGISTRY",
            "CAPSA_TEST_REGISTRY_BASIC",
            "CAPSA_TEST_REGISTRY_TOKEN",
        ] {
            if let Ok(r) = std::env::var(var) {
                s.push_str(&format!(
                    "[[registry]]\nlocation = {r:?}\ninsecure = true\n"
                ));
            }
        }
        std::fs::write(self.dir.path().join("registries.conf"), s).unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut c = match &self.user {
            None => Command::new(bin()),
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(d.join("capsa"));
                c.env("HOME", d).env_remove("XDG_RUNTIME_DIR");
                c
            }
        };
        c.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--storage-driver")
            .arg(self.driver)
            .args(args)
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().expect("capsa runs");
        eprintln!(
            "$ capsa {}\n[exit {:?}]\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "capsa {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and asserts failure with `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "capsa {args:?}: wrong exit code"
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn inspect(&self, image: &str) -> serde_json::Value {
        let out = self.ok(&["image", "inspect", image]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    /// The unpacked directories of an image's layers, bottom first.
    pub fn layer_dirs(&self, image: &str) -> Vec<PathBuf> {
        let v = self.inspect(image);
        let data = &v["GraphDriver"]["Data"];
        let mut dirs: Vec<PathBuf> = data["LowerDir"]
            .as_str()
            .map(|s| s.split(':').map(PathBuf::from).collect())
            .unwrap_or_default();
        dirs.reverse();
        dirs.push(PathBuf::from(data["UpperDir"].as_str().unwrap()));
        dirs
    }

    /// Nothing but the store (and our own files) under the test directory.
    pub fn assert_only_store_written(&self) {
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                [
                    "root",
                    "run",
                    "registries.conf",
                    "auth.json",
                    "capsa",
                    "work",
                    ".local",
                    ".config"
                ]
                .contains(&n.as_str()),
                "unexpected file {n} written next to the store"
            );
        }
    }

    pub fn image_count(&self) -> usize {
        let out = self.ok(&["images", "--format", "json"]);
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .unwrap()
            .len()
    }
}

/// Runs capsa with `input` on stdin; returns (exit code, stdout, stderr).
pub fn with_stdin(c: &Capsa, args: &[&str], input: &str) -> (Option<i32>, String, String) {
    use std::io::Write;
    let mut child = c
        .cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "$ capsa {} <<< {input:?}\n[exit {:?}]\n{}{}",
        args.join(" "),
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    (out.status.code(), stdout(&out), stderr(&out))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// A store with the busybox fixture image pulled, as root or as the rootless test user;
/// `None` (after a loud skip) when the fixtures, crun or the monitor are missing.
pub fn container_store(rootless: bool) -> Option<(Capsa, String)> {
    let Ok(reg) = std::env::var("CAPSA_TEST_REGISTRY") else {
        eprintln!("SKIP: CAPSA_TEST_REGISTRY is not set (scripts/test.sh starts the fixtures)");
        return None;
    };
    if !Path::new("/usr/bin/crun").exists() {
        eprintln!("SKIP: crun is not installed (scripts/setup.sh installs it)");
        return None;
    }
    if !monitor_bin().is_file() {
        eprintln!(
            "SKIP: {} is not built (run the tests with `cargo test --workspace`)",
            monitor_bin().display()
        );
        return None;
    }
    if !is_root() {
        eprintln!("SKIP: the container tests run as root (and switch to the rootless user)");
        return None;
    }
    let c = if rootless {
        let Ok(user) = std::env::var("CAPSA_TEST_ROOTLESS_USER") else {
            eprintln!("SKIP: CAPSA_TEST_ROOTLESS_USER is not set");
            return None;
        };
        Capsa::rootless(&user)
    } else {
        Capsa::new()
    };
    let image = format!("{reg}/busybox:latest");
    c.ok(&["pull", "-q", &image]);
    Some((c, image))
}

/// Runs `$body(&Capsa, &image)` as root and as the rootless user (a module with two
/// tests, `root` and `rootless`).
#[macro_export]
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn root() {
                if let Some((c, img)) = $crate::common::container_store(false) {
                    ($body)(&c, img.as_str());
                }
            }
            #[test]
            fn rootless() {
                if let Some((c, img)) = $crate::common::container_store(true) {
                    ($body)(&c, img.as_str());
                }
            }
        }
    };
}
