//! Platforms without a known hardware accelerator: TCG only.

use super::Accel;

pub(super) const NATIVE: Option<Accel> = None;

pub(super) fn probe() -> Result<Accel, String> {
    Err(format!(
        "no hardware accelerator is known on {}",
        std::env::consts::OS
    ))
}

pub(super) fn boot_id() -> Option<String> {
    None
}
