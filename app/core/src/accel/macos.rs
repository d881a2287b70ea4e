//! HVF probe: the `kern.hv_support` sysctl says whether Hypervisor.framework can run
//! guests on this Mac (it is 0 inside most VMs and on old hardware).

use super::Accel;

pub(super) const NATIVE: Option<Accel> = Some(Accel::Hvf);

pub(super) fn probe() -> Result<Accel, String> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>();
    // SAFETY: the name is NUL-terminated; `value` and `len` describe a c_int buffer.
    let r = unsafe {
        libc::sysctlbyname(
            c"kern.hv_support".as_ptr(),
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if r != 0 {
        return Err(format!(
            "HVF is not available: sysctl kern.hv_support: {}",
            std::io::Error::last_os_error()
        ));
    }
    if value == 1 {
        Ok(Accel::Hvf)
    } else {
        Err("HVF is not available: kern.hv_support is 0 (no hardware virtualization)".into())
    }
}

pub(super) fn boot_id() -> Option<String> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>();
    // SAFETY: the name is NUL-terminated; `tv` and `len` describe a timeval buffer.
    let r = unsafe {
        libc::sysctlbyname(
            c"kern.boottime".as_ptr(),
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    (r == 0).then(|| format!("{}.{}", tv.tv_sec, tv.tv_usec))
}
