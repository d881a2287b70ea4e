use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use super::cmdline::{Arch, QemuCmdline};
use crate::accel::Accel;
use crate::driver::{Capabilities, DriverError, StopOutcome, VmDriver, VmSpec, VmStatus};
use crate::process::{self, Daemon};
use crate::qmp::Qmp;

/// How long QEMU may take to open its QMP socket.
const QMP_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `quit` may take before the process is killed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct QemuDriver {
    caps: Capabilities,
}

impl Default for QemuDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl QemuDriver {
    pub fn new() -> QemuDriver {
        let mut accelerators: Vec<Accel> = Accel::native().into_iter().collect();
        accelerators.push(Accel::Tcg);
        QemuDriver {
            caps: Capabilities {
                vm_type: "qemu",
                // QEMU has vhost-vsock on Linux, but not every host has the device;
                // the agent channel is virtio-serial everywhere.
                vsock: false,
                virtio_serial: true,
                virtiofs: false,
                ninep: true,
                serial_log: true,
                detached: true,
                accelerators,
            },
        }
    }

    pub fn cmdline(vm: &VmSpec) -> Result<QemuCmdline, DriverError> {
        let arch = Arch::parse(&vm.arch).ok_or_else(|| {
            DriverError::Other(format!("unsupported guest architecture {:?}", vm.arch))
        })?;
        Ok(QemuCmdline {
            name: vm.name.clone(),
            arch,
            accel: vm.accel,
            cpus: vm.cpus,
            memory_mib: vm.memory_mib,
            kernel: vm.kernel.clone(),
            initrd: vm.initrd.clone(),
            append: vm.cmdline.clone(),
            rootfs: vm.rootfs.clone(),
            data_disk: vm.data_disk.clone(),
            serial_log: vm.serial_log.clone(),
            qmp_socket: vm.qmp_socket.clone(),
            agent_socket: vm.agent_socket.clone(),
            ssh_port: vm.ssh_port,
            shares: vm.shares.clone(),
        })
    }

    /// Connects to the machine's QMP socket (for callers that want status or events).
    pub fn qmp(vm: &VmSpec, timeout: Duration) -> Result<Qmp, DriverError> {
        Ok(Qmp::connect(&vm.qmp_socket, timeout)?)
    }
}

/// Whether `program` resolves on PATH (or is a path that exists).
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        return Path::new(program).exists().then(|| program.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The last `max` bytes of a log file, for error messages.
pub fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_string()
}

impl VmDriver for QemuDriver {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn start(&self, vm: &VmSpec) -> Result<(), DriverError> {
        let mut argv = Self::cmdline(vm)?.argv();
        // CAPSA_QEMU names another binary (a wrapper, a build of QEMU elsewhere).
        if let Some(p) = std::env::var_os("CAPSA_QEMU").filter(|p| !p.is_empty()) {
            argv[0] = p.to_string_lossy().into_owned();
        }
        let program = find_program(&argv[0]).ok_or_else(|| DriverError::NotInstalled {
            program: argv[0].clone(),
        })?;
        argv[0] = program.display().to_string();
        let _ = std::fs::remove_file(&vm.vmm_log);
        let daemon = process::spawn_daemon(&argv, &vm.vmm_log, &vm.pid_file)?;
        let end = Instant::now() + QMP_READY_TIMEOUT;
        loop {
            if !daemon.alive() {
                let _ = std::fs::remove_file(&vm.pid_file);
                return Err(DriverError::EarlyExit {
                    what: "QEMU".into(),
                    log: tail(&vm.vmm_log, 2000),
                });
            }
            match Qmp::connect(&vm.qmp_socket, Duration::from_millis(200)) {
                Ok(mut q) => {
                    q.query_status()?;
                    return Ok(());
                }
                Err(e) if Instant::now() >= end => {
                    let _ = daemon.signal(libc::SIGKILL);
                    return Err(e.into());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn status(&self, vm: &VmSpec) -> VmStatus {
        if process::live(&vm.pid_file).is_some() {
            VmStatus::Running
        } else {
            VmStatus::Stopped
        }
    }

    fn stop(&self, vm: &VmSpec, timeout: Duration) -> Result<StopOutcome, DriverError> {
        let Some(daemon) = process::live(&vm.pid_file) else {
            return Ok(StopOutcome::AlreadyStopped);
        };
        let outcome = match Qmp::connect(&vm.qmp_socket, Duration::from_secs(2)) {
            Ok(mut q) => {
                if q.system_powerdown().is_ok() && daemon.wait_gone(timeout) {
                    StopOutcome::Powerdown
                } else if q.quit().is_ok() && daemon.wait_gone(QUIT_TIMEOUT) {
                    StopOutcome::Quit
                } else {
                    kill_hard(&daemon)?;
                    StopOutcome::Killed
                }
            }
            Err(e) => {
                tracing::warn!("{e}: killing QEMU (pid {})", daemon.pid);
                kill_hard(&daemon)?;
                StopOutcome::Killed
            }
        };
        cleanup(vm);
        Ok(outcome)
    }

    fn kill(&self, vm: &VmSpec) -> Result<(), DriverError> {
        if let Some(d) = process::live(&vm.pid_file) {
            kill_hard(&d)?;
        }
        cleanup(vm);
        Ok(())
    }
}

fn kill_hard(d: &Daemon) -> Result<(), DriverError> {
    d.signal(libc::SIGKILL)
        .map_err(|e| DriverError::Other(format!("killing QEMU (pid {}): {e}", d.pid)))?;
    if !d.wait_gone(Duration::from_secs(10)) {
        return Err(DriverError::Other(format!(
            "QEMU (pid {}) is still there 10 s after SIGKILL",
            d.pid
        )));
    }
    Ok(())
}

/// QEMU unlinks its sockets when it exits normally, not when killed.
fn cleanup(vm: &VmSpec) {
    let _ = std::fs::remove_file(&vm.pid_file);
    let _ = std::fs::remove_file(&vm.qmp_socket);
    let _ = std::fs::remove_file(&vm.agent_socket);
}
