//! The Virtualization.framework backend (macOS): Linux boot loader, virtio block disks
//! (vda the read-only root image, vdb the data disk), NAT networking, a vsock device for
//! the agent, virtiofs for volumes, and the console on a virtio serial port written to
//! serial.log.
//!
//! A Virtualization.framework VM lives only as long as the process that created it, so
//! [`VzDriver`] runs each VM in a helper process of its own ([`run`], reached through the
//! command the caller hands the driver: `capsa machine vz-run SPEC`), recorded in the
//! machine's pid file like QEMU. The helper bridges the machine's `agent.sock` to the
//! agent's vsock port (the host core then reaches every backend through a unix socket),
//! turns SIGTERM into a guest power-button press, and exits when the guest stops.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

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
    VZVirtioSocketConnection, VZVirtioSocketDevice, VZVirtioSocketDeviceConfiguration,
    VZVirtualMachine, VZVirtualMachineConfiguration, VZVirtualMachineState,
};

use crate::accel::Accel;
use crate::driver::{Capabilities, DriverError, StopOutcome, VmDriver, VmSpec, VmStatus};
use crate::process;

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

/// How long the helper may take to bring the VM up and open `agent.sock`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The Virtualization.framework backend as seen from the CLI or the desktop app: it
/// starts [`run`] as a detached helper and talks to it through its pid and signals.
pub struct VzDriver {
    caps: Capabilities,
    helper: Vec<OsString>,
}

impl VzDriver {
    /// `helper`: the program and leading arguments that end up calling [`run`] with
    /// the spec file appended (the CLI: `capsa machine vz-run`).
    pub fn new(helper: Vec<OsString>) -> VzDriver {
        VzDriver {
            caps: Capabilities {
                vm_type: "applehv",
                vsock: true,
                virtio_serial: false,
                virtiofs: true,
                ninep: false,
                serial_log: true,
                detached: true,
                accelerators: vec![Accel::Hvf],
            },
            helper,
        }
    }
}

/// Where the helper finds its spec: next to the pid file.
fn spec_path(vm: &VmSpec) -> PathBuf {
    vm.pid_file.with_file_name("vz-spec.json")
}

impl VmDriver for VzDriver {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn start(&self, vm: &VmSpec) -> Result<(), DriverError> {
        if self.helper.is_empty() {
            return Err(DriverError::Other(
                "no helper command to run the VM in".into(),
            ));
        }
        let spec = spec_path(vm);
        let json = serde_json::to_vec_pretty(vm).map_err(|e| DriverError::Other(e.to_string()))?;
        std::fs::write(&spec, json)
            .map_err(|e| DriverError::Other(format!("writing {}: {e}", spec.display())))?;
        let _ = std::fs::remove_file(&vm.agent_socket);
        let mut argv: Vec<String> = self
            .helper
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        argv.push(spec.display().to_string());
        let daemon = process::spawn_daemon(&argv, &vm.vmm_log, &vm.pid_file)?;
        let end = Instant::now() + START_TIMEOUT;
        loop {
            if vm.agent_socket.exists() {
                return Ok(());
            }
            if !daemon.alive() {
                return Err(DriverError::EarlyExit {
                    what: "the Virtualization.framework helper".into(),
                    log: crate::qemu::tail(&vm.vmm_log, 20),
                });
            }
            if Instant::now() >= end {
                let _ = daemon.signal(libc::SIGKILL);
                return Err(DriverError::Other(format!(
                    "the Virtualization.framework helper did not open {} in {} s",
                    vm.agent_socket.display(),
                    START_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn status(&self, vm: &VmSpec) -> VmStatus {
        match process::live(&vm.pid_file) {
            Some(_) => VmStatus::Running,
            None => VmStatus::Stopped,
        }
    }

    fn stop(&self, vm: &VmSpec, timeout: Duration) -> Result<StopOutcome, DriverError> {
        let Some(d) = process::live(&vm.pid_file) else {
            return Ok(StopOutcome::AlreadyStopped);
        };
        // The helper presses the guest's power button and exits once the guest is off.
        let _ = d.signal(libc::SIGTERM);
        if d.wait_gone(timeout) {
            return Ok(StopOutcome::Powerdown);
        }
        let _ = d.signal(libc::SIGKILL);
        d.wait_gone(Duration::from_secs(5));
        Ok(StopOutcome::Killed)
    }

    fn kill(&self, vm: &VmSpec) -> Result<(), DriverError> {
        if let Some(d) = process::live(&vm.pid_file) {
            let _ = d.signal(libc::SIGKILL);
            d.wait_gone(Duration::from_secs(5));
        }
        let _ = std::fs::remove_file(&vm.agent_socket);
        Ok(())
    }
}

/// The VM and the serial queue every call on it must use.
struct Vm {
    vm: Retained<VZVirtualMachine>,
    queue: DispatchRetained<DispatchQueue>,
}

// SAFETY: the VM is only touched on its own serial queue (`on_queue`).
unsafe impl Send for Vm {}
unsafe impl Sync for Vm {}

struct SendPtr<T>(T);
// SAFETY: only dereferenced on the VM's serial queue.
unsafe impl<T> Send for SendPtr<T> {}

impl Vm {
    /// Runs `f` on the VM's queue and waits for its answer.
    fn on_queue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&VZVirtualMachine) -> T + Send + 'static,
    ) -> T {
        let vm = SendPtr(self.vm.clone());
        let (tx, rx) = mpsc::channel();
        self.queue.exec_sync(move || {
            let vm = vm;
            let _ = tx.send(f(&vm.0));
        });
        rx.recv().expect("the VM queue answers")
    }

    fn state(&self) -> VZVirtualMachineState {
        // SAFETY: called on the VM's queue.
        self.on_queue(|vm| unsafe { vm.state() })
    }

    /// Calls one of the framework's `…WithCompletionHandler:` methods and waits.
    fn complete(
        &self,
        what: &str,
        timeout: Duration,
        call: impl FnOnce(&VZVirtualMachine, &block2::DynBlock<dyn Fn(*mut NSError)>) + Send + 'static,
    ) -> Result<(), DriverError> {
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        self.on_queue(move |vm| {
            let handler = RcBlock::new(move |err: *mut NSError| {
                // SAFETY: the framework passes null or a valid NSError.
                let r = match unsafe { err.as_ref() } {
                    None => Ok(()),
                    Some(e) => Err(e.localizedDescription().to_string()),
                };
                let _ = tx.send(r);
            });
            call(vm, &handler);
        });
        match rx.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DriverError::Other(format!("{what}: {e}"))),
            Err(_) => Err(DriverError::Other(format!(
                "{what}: no answer in {} s",
                timeout.as_secs()
            ))),
        }
    }

    /// A new connection to `port` in the guest, as a file descriptor we own.
    fn connect_vsock(&self, port: u32) -> Result<OwnedFd, String> {
        let (tx, rx) = mpsc::channel::<Result<OwnedFd, String>>();
        self.on_queue(move |vm| {
            // SAFETY: on the VM's queue; the configuration has exactly one virtio socket
            // device, so the first socket device is a VZVirtioSocketDevice.
            let devices = unsafe { vm.socketDevices() };
            let Some(dev) = devices.firstObject() else {
                let _ = tx.send(Err("the VM has no vsock device".into()));
                return;
            };
            let dev: Retained<VZVirtioSocketDevice> =
                unsafe { Retained::cast_unchecked::<VZVirtioSocketDevice>(dev) };
            let handler = RcBlock::new(
                move |conn: *mut VZVirtioSocketConnection, err: *mut NSError| {
                    // SAFETY: the framework passes a valid connection or a valid error.
                    let r = match (unsafe { conn.as_ref() }, unsafe { err.as_ref() }) {
                        (Some(c), None) => {
                            // The connection owns its descriptor and closes it on
                            // `close`/dealloc: keep a duplicate of our own.
                            let fd = unsafe { libc::dup(c.fileDescriptor()) };
                            unsafe { c.close() };
                            if fd < 0 {
                                Err(std::io::Error::last_os_error().to_string())
                            } else {
                                // SAFETY: a fresh descriptor nobody else owns.
                                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
                            }
                        }
                        (_, Some(e)) => Err(e.localizedDescription().to_string()),
                        _ => Err("no connection and no error".into()),
                    };
                    let _ = tx.send(r);
                },
            );
            // SAFETY: on the VM's queue; the block is copied by the framework.
            unsafe { dev.connectToPort_completionHandler(port, &handler) };
        });
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| format!("vsock port {port}: no answer in 10 s"))?
    }
}

/// Copies both ways between the host client and the guest until either side ends.
fn splice(client: UnixStream, guest: OwnedFd) {
    let guest = UnixStream::from(guest);
    let (Ok(mut c2), Ok(mut g2)) = (client.try_clone(), guest.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let mut c = client;
        let mut g = guest;
        let _ = std::io::copy(&mut c, &mut g);
        let _ = g.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut g2, &mut c2);
    let _ = c2.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

/// Accepts host connections on `agent.sock` and joins each to the agent's vsock port.
fn serve_agent(vm: Arc<Vm>, listener: UnixListener) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let vm = vm.clone();
        std::thread::spawn(move || match vm.connect_vsock(AGENT_VSOCK_PORT) {
            Ok(fd) => splice(conn, fd),
            // Dropping the connection is what the client sees before the agent listens.
            Err(e) => eprintln!("capsa vz-run: connecting to the agent: {e}"),
        });
    }
}

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// The helper process: runs the VM described by the spec file until the guest stops.
/// SIGTERM presses the power button once; the caller kills the helper (and with it the
/// VM) when the guest does not stop in time.
pub fn run(spec_file: &Path) -> Result<(), DriverError> {
    let text = std::fs::read(spec_file)
        .map_err(|e| DriverError::Other(format!("reading {}: {e}", spec_file.display())))?;
    let spec: VmSpec = serde_json::from_slice(&text)
        .map_err(|e| DriverError::Other(format!("reading {}: {e}", spec_file.display())))?;
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
    }
    let config = configuration(&spec)?;
    let queue = DispatchQueue::new(&format!("capsa.vz.{}", spec.name), None);
    // SAFETY: the VM is created for `queue` and only used on it from here on.
    let machine = unsafe {
        VZVirtualMachine::initWithConfiguration_queue(VZVirtualMachine::alloc(), &config, &queue)
    };
    let vm = Arc::new(Vm { vm: machine, queue });
    // SAFETY: on the VM's queue; the block lives until the handler ran.
    vm.complete("starting the VM", START_TIMEOUT, |vm, h| unsafe {
        vm.startWithCompletionHandler(h)
    })?;
    let _ = std::fs::remove_file(&spec.agent_socket);
    let listener = UnixListener::bind(&spec.agent_socket).map_err(|e| {
        DriverError::Other(format!("listening on {}: {e}", spec.agent_socket.display()))
    })?;
    let v = vm.clone();
    std::thread::spawn(move || serve_agent(v, listener));
    eprintln!("capsa vz-run: machine {:?} running", spec.name);

    let mut asked = false;
    loop {
        match vm.state() {
            VZVirtualMachineState::Stopped | VZVirtualMachineState::Error => break,
            _ => {}
        }
        if STOP_REQUESTED.load(Ordering::SeqCst) && !asked {
            asked = true;
            // The guest sees a power button press, like QMP system_powerdown.
            // SAFETY: on the VM's queue.
            let ok = vm.on_queue(|vm| unsafe { vm.requestStopWithError().is_ok() });
            if !ok {
                // SAFETY: on the VM's queue; the block lives until the handler ran.
                vm.complete("stopping the VM", Duration::from_secs(10), |vm, h| unsafe {
                    vm.stopWithCompletionHandler(h)
                })?;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(&spec.agent_socket);
    eprintln!("capsa vz-run: machine {:?} stopped", spec.name);
    Ok(())
}
