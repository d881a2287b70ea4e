//! KVM probe: creates a VM with one vCPU and 4 KiB of memory, runs real-mode code that
//! counts a register down from 2^20, writes one byte to port 0x3f8 and halts, and
//! expects exactly those two exits within a short timeout. Hardware virtualization runs
//! the 2 million instructions in about a millisecond. Where `/dev/kvm` opens but has no
//! hardware behind it (this project's CI hosts serve it with `kvm_pvm`, which emulates
//! such code at a few µs an instruction, so a real guest's firmware and kernel start
//! seem to hang), the loop takes seconds and the probe says so.

use std::ffi::c_void;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::time::Duration;

use super::Accel;

pub(super) const NATIVE: Option<Accel> = Some(Accel::Kvm);

/// How long the test guest may take: about a millisecond where KVM works, seconds
/// where it is emulated.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_GET_VCPU_MMAP_SIZE: libc::c_ulong = 0xAE04;
const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = 0x4020_AE46;
const KVM_RUN: libc::c_ulong = 0xAE80;
const KVM_GET_REGS: libc::c_ulong = 0x8090_AE81;
const KVM_SET_REGS: libc::c_ulong = 0x4090_AE82;
const KVM_GET_SREGS: libc::c_ulong = 0x8138_AE83;
const KVM_SET_SREGS: libc::c_ulong = 0x4138_AE84;

const KVM_EXIT_IO: u32 = 2;
const KVM_EXIT_HLT: u32 = 5;

const CODE_ADDR: u64 = 0x1000;
/// `mov ecx, 0x100000; l: dec ecx; jnz l; mov dx, 0x3f8; mov al, 'K'; out dx, al; hlt`
const CODE: [u8; 17] = [
    0x66, 0xb9, 0x00, 0x00, 0x10, 0x00, // mov ecx, 0x100000
    0x66, 0x49, // dec ecx
    0x75, 0xfc, // jnz -4
    0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, b'K', // mov al, 'K'
    0xee, // out dx, al
    0xf4, // hlt
];

/// What the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmProbe {
    /// The test guest wrote its byte and halted.
    Works,
    /// `/dev/kvm` is missing or cannot be opened (the reason).
    Unavailable(String),
    /// The KVM API failed or the guest misbehaved (the reason).
    Broken(String),
    /// `KVM_RUN` did not come back within the timeout.
    Hangs(Duration),
}

impl KvmProbe {
    pub fn reason(&self) -> Option<String> {
        match self {
            KvmProbe::Works => None,
            KvmProbe::Unavailable(r) => Some(format!("KVM is not available: {r}")),
            KvmProbe::Broken(r) => Some(format!("KVM does not run guests here: {r}")),
            KvmProbe::Hangs(t) => Some(format!(
                "KVM does not run guests here: a test guest of 2 million instructions did not finish in {} ms (hardware virtualization takes about 1 ms){}",
                t.as_millis(),
                backend_note()
            )),
        }
    }
}

/// Names the module behind /dev/kvm when it is not a hardware one.
fn backend_note() -> String {
    let loaded = |m: &str| std::path::Path::new("/sys/module").join(m).exists();
    if loaded("kvm_intel") || loaded("kvm_amd") {
        String::new()
    } else if loaded("kvm_pvm") {
        "; /dev/kvm is served by kvm_pvm (no hardware virtualization)".into()
    } else {
        String::new()
    }
}

pub(super) fn probe() -> Result<Accel, String> {
    match probe_kvm(PROBE_TIMEOUT) {
        KvmProbe::Works => Ok(Accel::Kvm),
        other => Err(other.reason().unwrap_or_default()),
    }
}

pub(super) fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Runs the test guest on a thread and waits at most `timeout` for it. A vCPU stuck
/// in `KVM_RUN` cannot be taken back; its thread is left behind and ends with the
/// process.
pub fn probe_kvm(timeout: Duration) -> KvmProbe {
    let kvm = match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(f) => f,
        Err(e) => return KvmProbe::Unavailable(format!("opening /dev/kvm: {e}")),
    };
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("kvm-probe".into())
        .spawn(move || {
            let _ = tx.send(run_test_guest(kvm.as_raw_fd(), &CODE, 1));
            drop(kvm);
        });
    if let Err(e) = spawned {
        return KvmProbe::Broken(format!("starting the probe thread: {e}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(_)) => KvmProbe::Works,
        Ok(Err(e)) => KvmProbe::Broken(e),
        Err(_) => KvmProbe::Hangs(timeout),
    }
}

fn ioctl(fd: RawFd, req: libc::c_ulong, arg: libc::c_ulong) -> Result<i32, std::io::Error> {
    // SAFETY: each call site passes a request whose argument is either an integer or a
    // pointer to a live buffer of the size the request encodes.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful ioctl that creates a descriptor.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

struct Mapping {
    ptr: *mut c_void,
    len: usize,
}

impl Mapping {
    fn new(len: usize, fd: Option<RawFd>) -> Result<Mapping, String> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED, fd),
            None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a fresh mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `Mapping::new` with this length.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

#[repr(C)]
struct UserMemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

fn run_test_guest(kvm: RawFd, code: &[u8], exits: u32) -> Result<std::time::Duration, String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: std::io::Error| format!("{what}: {err}")
    };
    let api = ioctl(kvm, KVM_GET_API_VERSION, 0).map_err(e("KVM_GET_API_VERSION"))?;
    if api != 12 {
        return Err(format!("unexpected KVM API version {api}"));
    }
    let vm = owned(ioctl(kvm, KVM_CREATE_VM, 0).map_err(e("KVM_CREATE_VM"))?);
    let mem = Mapping::new(0x1000, None)?;
    // SAFETY: `mem` is a writable mapping of 4096 bytes; CODE is 7 bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(code.as_ptr(), mem.ptr.cast::<u8>(), code.len().min(0x1000))
    };
    let region = UserMemoryRegion {
        slot: 0,
        flags: 0,
        guest_phys_addr: CODE_ADDR,
        memory_size: 0x1000,
        userspace_addr: mem.ptr as u64,
    };
    ioctl(
        vm.as_raw_fd(),
        KVM_SET_USER_MEMORY_REGION,
        &region as *const _ as libc::c_ulong,
    )
    .map_err(e("KVM_SET_USER_MEMORY_REGION"))?;
    let vcpu = owned(ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, 0).map_err(e("KVM_CREATE_VCPU"))?);
    let run_size =
        ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0).map_err(e("KVM_GET_VCPU_MMAP_SIZE"))? as usize;
    let run = Mapping::new(run_size, Some(vcpu.as_raw_fd()))?;

    // struct kvm_sregs: 312 bytes; cs is the first kvm_segment (base at 0, selector at 12).
    let mut sregs = [0u8; 312];
    ioctl(
        vcpu.as_raw_fd(),
        KVM_GET_SREGS,
        sregs.as_mut_ptr() as libc::c_ulong,
    )
    .map_err(e("KVM_GET_SREGS"))?;
    sregs[0..8].copy_from_slice(&0u64.to_ne_bytes());
    sregs[12..14].copy_from_slice(&0u16.to_ne_bytes());
    ioctl(
        vcpu.as_raw_fd(),
        KVM_SET_SREGS,
        sregs.as_ptr() as libc::c_ulong,
    )
    .map_err(e("KVM_SET_SREGS"))?;
    // struct kvm_regs: 18 u64; rip is the 17th, rflags the 18th (bit 1 is always set).
    let mut regs = [0u64; 18];
    ioctl(
        vcpu.as_raw_fd(),
        KVM_GET_REGS,
        regs.as_mut_ptr() as libc::c_ulong,
    )
    .map_err(e("KVM_GET_REGS"))?;
    regs.fill(0);
    regs[16] = CODE_ADDR;
    regs[17] = 0x2;
    ioctl(
        vcpu.as_raw_fd(),
        KVM_SET_REGS,
        regs.as_ptr() as libc::c_ulong,
    )
    .map_err(e("KVM_SET_REGS"))?;

    let run_ptr = run.ptr.cast::<u8>();
    let mut seen = 0;
    let t = std::time::Instant::now();
    for _ in 0..exits + 2 {
        ioctl(vcpu.as_raw_fd(), KVM_RUN, 0).map_err(e("KVM_RUN"))?;
        // SAFETY: struct kvm_run: exit_reason is a u32 at offset 8; for KVM_EXIT_IO the
        // union at offset 32 holds direction u8, size u8, port u16, count u32,
        // data_offset u64 — all inside the `run_size` bytes mapped.
        let (reason, port, data) = unsafe {
            let reason = run_ptr.add(8).cast::<u32>().read();
            let port = run_ptr.add(34).cast::<u16>().read();
            let off = run_ptr.add(40).cast::<u64>().read() as usize;
            let data = if off < run_size { *run_ptr.add(off) } else { 0 };
            (reason, port, data)
        };
        match reason {
            KVM_EXIT_IO if port == 0x3f8 && data == b'K' => seen += 1,
            KVM_EXIT_HLT if seen == exits => return Ok(t.elapsed()),
            r => {
                return Err(format!(
                    "the test guest exited with KVM exit reason {r} after {seen} port writes"
                ));
            }
        }
    }
    Err("the test guest did not halt".into())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// On this project's CI hosts `/dev/kvm` opens and guests hang (kvm_pvm): the probe
    /// must say so within its timeout, and the choice must fall back to TCG naming the
    /// reason. Where KVM works, it must say that in milliseconds.
    #[test]
    fn probe_answers_in_time_and_choice_follows() {
        if !std::path::Path::new("/dev/kvm").exists() {
            println!("SKIP probe_answers_in_time_and_choice_follows: no /dev/kvm");
            return;
        }
        let t = Instant::now();
        let verdict = probe_kvm(PROBE_TIMEOUT);
        let took = t.elapsed();
        println!("kvm probe: {verdict:?} in {took:?}");
        if std::path::Path::new("/sys/module/kvm_pvm").exists()
            && !std::path::Path::new("/sys/module/kvm_intel").exists()
            && !std::path::Path::new("/sys/module/kvm_amd").exists()
        {
            assert_eq!(
                verdict,
                KvmProbe::Hangs(PROBE_TIMEOUT),
                "kvm_pvm must be caught"
            );
            assert!(verdict.reason().unwrap().contains("kvm_pvm"));
        }
        assert!(
            took < PROBE_TIMEOUT + Duration::from_millis(500),
            "{took:?}"
        );
        if std::env::var_os(super::super::ENV_ACCEL).is_some() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let choice = super::super::choose(std::env::consts::ARCH, Some(dir.path())).unwrap();
        match verdict {
            KvmProbe::Works => assert_eq!(choice.accel, Accel::Kvm),
            other => {
                assert_eq!(choice.accel, Accel::Tcg);
                assert_eq!(choice.fallback_reason, other.reason());
            }
        }
        // The answer is cached for this boot: a second choice does not probe again.
        let t = Instant::now();
        let again = super::super::choose(std::env::consts::ARCH, Some(dir.path())).unwrap();
        assert_eq!(again, choice);
        assert!(t.elapsed() < Duration::from_millis(200));
    }
}
