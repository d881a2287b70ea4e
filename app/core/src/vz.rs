//! The Virtualization.framework backend (macOS): Linux boot loader, virtio block disks
//! (vda the read-only root image, vdb the data disk), NAT networking, a vsock device for
//! the agent, virtiofs for volumes, and the console on a virtio serial port written to
//! serial.log. The VM lives in the process that started it, on its own serial dispatch
//! queue ([`Capabilities::detached`] is false): a long-lived host process (the desktop
//! app, or a helper the CLI detaches) owns it.

use std::sync::mpsc;
use std::time::Duration;

use block2::RcBlock;
use dispatch2::{DispatchQueue, DispatchRetained};
use objc2::AllocAnyThread;
use objc2::rc::Retained;
use objc2_foundation::{NSArray, NSError, NSString, NSURL};
use objc2_virtualization::{
    VZDirectorySharingDeviceConfiguration, VZDiskImageStorageDeviceAttachment,
    VZEntropyDeviceConfiguration, VZFileSerialPortAttachment, VZGenericPlatformConfiguration,
    VZLinuxBootLoader, VZNATNetworkDeviceAttachment, VZNetworkDeviceConfiguration,
    VZSerialPortConfiguration, VZSharedDirectory, VZSingleDirectoryShare,
    VZSocketDeviceConfiguration, VZStorageDeviceConfiguration, VZVirtioBlockDeviceConfiguration,
    VZVirtioConsoleDeviceSerialPortConfiguration, VZVirtioEntropyDeviceConfiguration,
    VZVirtioFileSystemDeviceConfiguration, VZVirtioNetworkDeviceConfiguration,
    VZVirtioSocketDeviceConfiguration, VZVirtualMachine, VZVirtualMachineConfiguration,
    VZVirtualMachineState,
};

use crate::accel::Accel;
use crate::driver::{Capabilities, DriverError, StopOutcome, VmDriver, VmSpec, VmStatus};

/// The vsock port the agent listens on in the guest.
pub const AGENT_VSOCK_PORT: u32 = 1024;

fn ns_err(what: &str, e: &NSError) -> DriverError {
    DriverError::Other(format!("{what}: {}", e.localizedDescription()))
}

fn file_url(p: &std::path::Path) -> Retained<NSURL> {
    NSURL::from_file_path(p)
        .unwrap_or_else(|| NSURL::fileURLWithPath(&NSString::from_str(&p.display().to_string())))
}

/// Builds and validates the VM configuration for `vm`.
pub fn configuration(vm: &VmSpec) -> Result<Retained<VZVirtualMachineConfiguration>, DriverError> {
    // SAFETY: plain Objective-C object construction and setters on objects we own; all
    // arguments are live, correctly typed objects.
    unsafe {
        let boot =
            VZLinuxBootLoader::initWithKernelURL(VZLinuxBootLoader::alloc(), &file_url(&vm.kernel));
        boot.setInitialRamdiskURL(Some(&file_url(&vm.initrd)));
        // Virtualization.framework's console is a virtio console: hvc0 (contract, 3).
        let cmdline = vm.cmdline.replace("console=ttyS0", "console=hvc0");
        boot.setCommandLine(&NSString::from_str(&cmdline));

        let disk = |path: &std::path::Path,
                    ro: bool|
         -> Result<Retained<VZStorageDeviceConfiguration>, DriverError> {
            let att = VZDiskImageStorageDeviceAttachment::initWithURL_readOnly_error(
                VZDiskImageStorageDeviceAttachment::alloc(),
                &file_url(path),
                ro,
            )
            .map_err(|e| ns_err(&format!("attaching {}", path.display()), &e))?;
            let dev = VZVirtioBlockDeviceConfiguration::initWithAttachment(
                VZVirtioBlockDeviceConfiguration::alloc(),
                &att,
            );
            Ok(Retained::into_super(dev))
        };
        let disks = [disk(&vm.rootfs, true)?, disk(&vm.data_disk, false)?];

        let net = VZVirtioNetworkDeviceConfiguration::new();
        net.setAttachment(Some(&VZNATNetworkDeviceAttachment::new()));

        let serial_att = VZFileSerialPortAttachment::initWithURL_append_error(
            VZFileSerialPortAttachment::alloc(),
            &file_url(&vm.serial_log),
            false,
        )
        .map_err(|e| ns_err(&format!("opening {}", vm.serial_log.display()), &e))?;
        let serial = VZVirtioConsoleDeviceSerialPortConfiguration::new();
        serial.setAttachment(Some(&serial_att));

        let mut shares: Vec<Retained<VZDirectorySharingDeviceConfiguration>> = vec![];
        for s in &vm.shares {
            let dir = VZSharedDirectory::initWithURL_readOnly(
                VZSharedDirectory::alloc(),
                &file_url(&s.host_path),
                s.read_only,
            );
            let share =
                VZSingleDirectoryShare::initWithDirectory(VZSingleDirectoryShare::alloc(), &dir);
            let fs = VZVirtioFileSystemDeviceConfiguration::initWithTag(
                VZVirtioFileSystemDeviceConfiguration::alloc(),
                &NSString::from_str(&s.tag),
            );
            fs.setShare(Some(&share));
            shares.push(Retained::into_super(fs));
        }

        let config = VZVirtualMachineConfiguration::new();
        config.setPlatform(&VZGenericPlatformConfiguration::new());
        config.setBootLoader(Some(&boot));
        config.setCPUCount(vm.cpus as usize);
        config.setMemorySize(vm.memory_mib << 20);
        config.setStorageDevices(&NSArray::from_retained_slice(&disks));
        let nets: [Retained<VZNetworkDeviceConfiguration>; 1] = [Retained::into_super(net)];
        config.setNetworkDevices(&NSArray::from_retained_slice(&nets));
        let serials: [Retained<VZSerialPortConfiguration>; 1] = [Retained::into_super(serial)];
        config.setSerialPorts(&NSArray::from_retained_slice(&serials));
        let socks: [Retained<VZSocketDeviceConfiguration>; 1] = [Retained::into_super(
            VZVirtioSocketDeviceConfiguration::new(),
        )];
        config.setSocketDevices(&NSArray::from_retained_slice(&socks));
        let rngs: [Retained<VZEntropyDeviceConfiguration>; 1] = [Retained::into_super(
            VZVirtioEntropyDeviceConfiguration::new(),
        )];
        config.setEntropyDevices(&NSArray::from_retained_slice(&rngs));
        config.setDirectorySharingDevices(&NSArray::from_retained_slice(&shares));
        config
            .validateWithError()
            .map_err(|e| ns_err("invalid virtual machine configuration", &e))?;
        Ok(config)
    }
}

/// One running VM and the serial queue every call on it must use.
struct Running {
    vm: Retained<VZVirtualMachine>,
    queue: DispatchRetained<DispatchQueue>,
}

// SAFETY: the VM is only touched on its own serial queue (`exec_sync` below).
unsafe impl Send for Running {}

pub struct VzDriver {
    caps: Capabilities,
    running: std::sync::Mutex<std::collections::HashMap<String, Running>>,
}

impl Default for VzDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl VzDriver {
    pub fn new() -> VzDriver {
        VzDriver {
            caps: Capabilities {
                vm_type: "applehv",
                vsock: true,
                virtio_serial: false,
                virtiofs: true,
                ninep: false,
                serial_log: true,
                detached: false,
                accelerators: vec![Accel::Hvf],
            },
            running: Default::default(),
        }
    }

    /// Runs `f` on the VM's queue and waits for its answer.
    fn on_queue<T: Send + 'static>(
        r: &Running,
        f: impl FnOnce(&VZVirtualMachine) -> T + Send + 'static,
    ) -> T {
        let vm = r.vm.clone();
        let vm = SendPtr(vm);
        let (tx, rx) = mpsc::channel();
        r.queue.exec_sync(move || {
            let vm = vm;
            let _ = tx.send(f(&vm.0));
        });
        rx.recv().expect("the VM queue answers")
    }

    fn state(r: &Running) -> VZVirtualMachineState {
        // SAFETY: called on the VM's queue.
        Self::on_queue(r, |vm| unsafe { vm.state() })
    }
}

struct SendPtr(Retained<VZVirtualMachine>);
// SAFETY: only dereferenced on the VM's serial queue.
unsafe impl Send for SendPtr {}

impl VmDriver for VzDriver {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn start(&self, vm: &VmSpec) -> Result<(), DriverError> {
        let config = configuration(vm)?;
        let queue = DispatchQueue::new(&format!("capsa.vz.{}", vm.name), None);
        // SAFETY: the VM is created for `queue` and only used on it from here on.
        let machine = unsafe {
            VZVirtualMachine::initWithConfiguration_queue(
                VZVirtualMachine::alloc(),
                &config,
                &queue,
            )
        };
        let r = Running { vm: machine, queue };
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        Self::on_queue(&r, move |vm| {
            let tx = tx.clone();
            let handler = RcBlock::new(move |err: *mut NSError| {
                // SAFETY: the framework passes null or a valid NSError.
                let r = match unsafe { err.as_ref() } {
                    None => Ok(()),
                    Some(e) => Err(e.localizedDescription().to_string()),
                };
                let _ = tx.send(r);
            });
            // SAFETY: on the VM's queue; the block lives until the handler ran.
            unsafe { vm.startWithCompletionHandler(&handler) };
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(DriverError::Other(format!("starting the VM: {e}"))),
            Err(_) => {
                return Err(DriverError::Other(
                    "starting the VM: no answer in 30 s".into(),
                ));
            }
        }
        self.running
            .lock()
            .expect("lock")
            .insert(vm.name.clone(), r);
        Ok(())
    }

    fn status(&self, vm: &VmSpec) -> VmStatus {
        let map = self.running.lock().expect("lock");
        match map.get(&vm.name) {
            Some(r) if Self::state(r) == VZVirtualMachineState::Running => VmStatus::Running,
            _ => VmStatus::Stopped,
        }
    }

    fn stop(&self, vm: &VmSpec, timeout: Duration) -> Result<StopOutcome, DriverError> {
        let Some(r) = self.running.lock().expect("lock").remove(&vm.name) else {
            return Ok(StopOutcome::AlreadyStopped);
        };
        // The guest sees a power button press (requestStop), like QMP system_powerdown.
        // SAFETY: on the VM's queue.
        let asked = Self::on_queue(&r, |vm| unsafe { vm.requestStopWithError().is_ok() });
        if asked {
            let end = std::time::Instant::now() + timeout;
            while std::time::Instant::now() < end {
                if Self::state(&r) == VZVirtualMachineState::Stopped {
                    return Ok(StopOutcome::Powerdown);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        hard_stop(&r)?;
        Ok(StopOutcome::Killed)
    }

    fn kill(&self, vm: &VmSpec) -> Result<(), DriverError> {
        if let Some(r) = self.running.lock().expect("lock").remove(&vm.name) {
            hard_stop(&r)?;
        }
        Ok(())
    }
}

fn hard_stop(r: &Running) -> Result<(), DriverError> {
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    VzDriver::on_queue(r, move |vm| {
        let handler = RcBlock::new(move |err: *mut NSError| {
            // SAFETY: the framework passes null or a valid NSError.
            let r = match unsafe { err.as_ref() } {
                None => Ok(()),
                Some(e) => Err(e.localizedDescription().to_string()),
            };
            let _ = tx.send(r);
        });
        // SAFETY: on the VM's queue; the block lives until the handler ran.
        unsafe { vm.stopWithCompletionHandler(&handler) };
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(DriverError::Other(format!("stopping the VM: {e}"))),
        Err(_) => Err(DriverError::Other(
            "stopping the VM: no answer in 10 s".into(),
        )),
    }
}
