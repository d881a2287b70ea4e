//! The interface every VM backend implements, kept small: start, stop (graceful with a
//! timeout, then harder), kill, status; what a backend can do is data
//! ([`Capabilities`]), so callers ask instead of matching on backend names (lima's
//! driver interface, cloud-hypervisor's hypervisor capabilities).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::accel::Accel;

/// What a backend offers; the CLI and the transports choose by these fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// `qemu`, `applehv`: the VM TYPE column of `machine ls`.
    pub vm_type: &'static str,
    /// The host reaches the agent over vsock.
    pub vsock: bool,
    /// The agent's virtio-serial port is a host unix socket.
    pub virtio_serial: bool,
    pub virtiofs: bool,
    pub ninep: bool,
    /// The guest console is written to a file (serial.log).
    pub serial_log: bool,
    /// The VM lives in its own process and outlives the command that started it.
    pub detached: bool,
    /// Accelerators this backend can use here, best first.
    pub accelerators: Vec<Accel>,
}

/// Everything a backend needs to run one machine; built by the machine store. It is
/// JSON too: the Virtualization.framework helper process reads it from a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub name: String,
    pub arch: String,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u64,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub rootfs: PathBuf,
    pub data_disk: PathBuf,
    pub serial_log: PathBuf,
    pub qmp_socket: PathBuf,
    pub agent_socket: PathBuf,
    pub pid_file: PathBuf,
    /// The hypervisor's own stdout and stderr.
    pub vmm_log: PathBuf,
    pub ssh_port: u16,
    pub shares: Vec<crate::qemu::cmdline::Share>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VmStatus {
    Running,
    Stopped,
}

/// How a stop ended: which step brought the VM down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopOutcome {
    AlreadyStopped,
    /// The guest powered off after the ACPI power button.
    Powerdown,
    /// The hypervisor was told to quit.
    Quit,
    /// The hypervisor process was killed.
    Killed,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{program} is not installed or not on PATH")]
    NotInstalled { program: String },
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error("{what} exited during start-up: {log}")]
    EarlyExit { what: String, log: String },
    #[error(transparent)]
    Qmp(#[from] crate::qmp::QmpError),
    #[error("{0}")]
    Other(String),
}

pub trait VmDriver {
    fn capabilities(&self) -> &Capabilities;
    /// Starts the VM detached; returns once the hypervisor accepts control commands
    /// (not when the guest is ready: that is the agent's Hello).
    fn start(&self, vm: &VmSpec) -> Result<(), DriverError>;
    fn status(&self, vm: &VmSpec) -> VmStatus;
    /// Graceful first: the power button and `timeout` for the guest, then quit, then kill.
    fn stop(&self, vm: &VmSpec, timeout: Duration) -> Result<StopOutcome, DriverError>;
    fn kill(&self, vm: &VmSpec) -> Result<(), DriverError>;
}

/// Overrides the backend `machine init` records (podman's CONTAINERS_MACHINE_PROVIDER).
pub const ENV_PROVIDER: &str = "CAPSA_MACHINE_PROVIDER";

/// The backends this host can run, best first: the VM TYPE names of `machine ls`.
pub fn providers() -> &'static [&'static str] {
    platform::PROVIDERS
}

/// The backend a new machine gets: `CAPSA_MACHINE_PROVIDER`, else this host's best.
pub fn default_provider() -> Result<String, DriverError> {
    match std::env::var(ENV_PROVIDER) {
        Ok(p) if !p.is_empty() => {
            if providers().contains(&p.as_str()) {
                Ok(p)
            } else {
                Err(DriverError::Other(format!(
                    "unknown machine provider {p:?} in {ENV_PROVIDER}: this host offers {}",
                    providers().join(", ")
                )))
            }
        }
        _ => Ok(providers()[0].to_string()),
    }
}

/// The driver for a machine of type `vm_type`. `helper` is the command (program and
/// leading arguments) that runs a VM in a process of its own, for backends whose VM
/// lives inside the process that created it (Virtualization.framework): the driver
/// appends the spec file to it. The CLI passes `capsa machine vz-run`.
pub fn for_provider(
    vm_type: &str,
    helper: &[std::ffi::OsString],
) -> Result<Box<dyn VmDriver>, DriverError> {
    platform::driver(vm_type, helper).ok_or_else(|| {
        DriverError::Other(format!(
            "this machine uses the {vm_type:?} backend, which this host does not offer (it offers {})",
            providers().join(", ")
        ))
    })
}

#[cfg(target_os = "macos")]
mod platform {
    use super::VmDriver;

    pub const PROVIDERS: &[&str] = &["applehv", "qemu"];

    pub fn driver(vm_type: &str, helper: &[std::ffi::OsString]) -> Option<Box<dyn VmDriver>> {
        match vm_type {
            "applehv" => Some(Box::new(crate::vz::VzDriver::new(helper.to_vec()))),
            "qemu" => Some(Box::new(crate::qemu::QemuDriver::new())),
            _ => None,
        }
    }
}

#[cfg(not(target_os = "macos"))]
mod platform {
    use super::VmDriver;

    pub const PROVIDERS: &[&str] = &["qemu"];

    pub fn driver(vm_type: &str, _helper: &[std::ffi::OsString]) -> Option<Box<dyn VmDriver>> {
        (vm_type == "qemu").then(|| Box::new(crate::qemu::QemuDriver::new()) as Box<dyn VmDriver>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_by_provider() {
        assert_eq!(
            for_provider("qemu", &[]).unwrap().capabilities().vm_type,
            "qemu"
        );
        assert!(providers().contains(&"qemu"));
        let e = for_provider("hyperv", &[]).err().unwrap().to_string();
        assert!(
            e.contains("\"hyperv\" backend") && e.contains("qemu"),
            "{e}"
        );
    }
}
