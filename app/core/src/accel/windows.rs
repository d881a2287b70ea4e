//! WHPX probe: the Windows Hypervisor Platform is an optional feature; its DLL is only
//! present when the feature is enabled.

use super::Accel;

pub(super) const NATIVE: Option<Accel> = Some(Accel::Whpx);

pub(super) fn probe() -> Result<Accel, String> {
    let root = std::env::var_os("SystemRoot").unwrap_or_else(|| "C:\\Windows".into());
    let dll = std::path::Path::new(&root).join("System32\\WinHvPlatform.dll");
    if dll.exists() {
        Ok(Accel::Whpx)
    } else {
        Err(format!(
            "WHPX is not available: {} is missing (enable the Windows Hypervisor Platform feature)",
            dll.display()
        ))
    }
}

pub(super) fn boot_id() -> Option<String> {
    None
}
