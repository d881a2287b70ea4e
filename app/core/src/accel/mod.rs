//! Which accelerator a VM gets: probed, not assumed (HVF on macOS, KVM on Linux, WHPX on
//! Windows, TCG when those are missing or do not actually run a guest), with the
//! `CAPSA_MACHINE_ACCEL` override. On Linux the probe runs a few instructions under KVM,
//! because a `/dev/kvm` that opens is no proof that guests run (see MACHINE-NOTES.md).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as platform;
#[cfg(target_os = "windows")]
mod windows;
#[cfg(target_os = "windows")]
use windows as platform;
#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
mod other;
#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
use other as platform;

#[cfg(target_os = "linux")]
pub use linux::{KvmProbe, probe_kvm};

/// Environment variable that forces an accelerator: `kvm`, `tcg`, `hvf` or `whpx`.
pub const ENV_ACCEL: &str = "CAPSA_MACHINE_ACCEL";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Hvf,
    Whpx,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Hvf => "hvf",
            Accel::Whpx => "whpx",
            Accel::Tcg => "tcg",
        }
    }

    /// The hardware accelerator this platform would use, if any.
    pub fn native() -> Option<Accel> {
        platform::NATIVE
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown accelerator {0:?} in {ENV_ACCEL}: expected kvm, tcg, hvf or whpx")]
pub struct UnknownAccel(pub String);

impl FromStr for Accel {
    type Err = UnknownAccel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kvm" => Ok(Accel::Kvm),
            "hvf" => Ok(Accel::Hvf),
            "whpx" => Ok(Accel::Whpx),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(UnknownAccel(s.to_string())),
        }
    }
}

/// The outcome of choosing: the accelerator, and why a faster one was not taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub accel: Accel,
    /// Set when the platform's accelerator was unusable: a warning for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// `env` when `CAPSA_MACHINE_ACCEL` decided, `probe` otherwise.
    pub source: String,
}

/// Chooses the accelerator for a guest of `guest_arch` (`x86_64`, `aarch64`).
/// `cache_dir` keeps the probe's answer for this boot of the host (the probe is cheap
/// when KVM works, but waits for its timeout when KVM hangs).
pub fn choose(guest_arch: &str, cache_dir: Option<&Path>) -> Result<Choice, UnknownAccel> {
    if let Some(v) = std::env::var_os(ENV_ACCEL).filter(|v| !v.is_empty()) {
        let accel: Accel = v.to_string_lossy().parse()?;
        return Ok(Choice {
            accel,
            fallback_reason: None,
            source: "env".into(),
        });
    }
    if guest_arch != std::env::consts::ARCH {
        return Ok(Choice {
            accel: Accel::Tcg,
            fallback_reason: Some(format!(
                "the guest is {guest_arch} and this host is {}: hardware acceleration needs the same architecture",
                std::env::consts::ARCH
            )),
            source: "probe".into(),
        });
    }
    let cached = cache_dir.and_then(read_cache);
    if let Some(c) = cached {
        return Ok(c);
    }
    let choice = match platform::probe() {
        Ok(accel) => Choice {
            accel,
            fallback_reason: None,
            source: "probe".into(),
        },
        Err(reason) => Choice {
            accel: Accel::Tcg,
            fallback_reason: Some(reason),
            source: "probe".into(),
        },
    };
    if let Some(dir) = cache_dir {
        write_cache(dir, &choice);
    }
    Ok(choice)
}

#[derive(Serialize, Deserialize)]
struct Cached {
    boot_id: String,
    choice: Choice,
}

const CACHE_FILE: &str = "accel-probe.json";

fn read_cache(dir: &Path) -> Option<Choice> {
    let boot = platform::boot_id()?;
    let c: Cached = serde_json::from_slice(&std::fs::read(dir.join(CACHE_FILE)).ok()?).ok()?;
    (c.boot_id == boot).then_some(c.choice)
}

fn write_cache(dir: &Path, choice: &Choice) {
    let Some(boot_id) = platform::boot_id() else {
        return;
    };
    let c = Cached {
        boot_id,
        choice: choice.clone(),
    };
    let _ = std::fs::create_dir_all(dir);
    let tmp = dir.join(format!("{CACHE_FILE}.{}", std::process::id()));
    if let Ok(bytes) = serde_json::to_vec_pretty(&c)
        && std::fs::write(&tmp, bytes).is_ok()
    {
        let _ = std::fs::rename(&tmp, dir.join(CACHE_FILE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        for (s, a) in [
            ("kvm", Accel::Kvm),
            ("TCG", Accel::Tcg),
            ("hvf", Accel::Hvf),
            ("whpx", Accel::Whpx),
        ] {
            assert_eq!(s.parse::<Accel>().unwrap(), a);
            assert_eq!(a.as_str(), s.to_ascii_lowercase());
        }
        let e = "xen".parse::<Accel>().unwrap_err().to_string();
        assert!(e.contains("\"xen\"") && e.contains(ENV_ACCEL), "{e}");
    }

    #[test]
    fn foreign_guest_gets_tcg() {
        if std::env::var_os(ENV_ACCEL).is_some() {
            println!("SKIP foreign_guest_gets_tcg: {ENV_ACCEL} is set");
            return;
        }
        let other = if std::env::consts::ARCH == "x86_64" {
            "aarch64"
        } else {
            "x86_64"
        };
        let c = choose(other, None).unwrap();
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.fallback_reason.unwrap().contains(other));
    }
}
