//! The QEMU backend: the command line as data ([`cmdline`]), a detached QEMU process
//! per machine, and control through QMP ([`crate::qmp`]).

pub mod cmdline;

#[cfg(unix)]
pub(crate) mod driver;
#[cfg(unix)]
pub(crate) use driver as driver_support;
#[cfg(unix)]
pub use driver::{QemuDriver, find_program, tail};
