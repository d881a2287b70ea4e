//! Host core: the machine store, VM drivers (QEMU; Virtualization.framework on macOS),
//! host↔guest transports, port and socket forwarding, and the remote engine that speaks
//! the protocol of `capsa-proto`. It owns nothing about images or containers themselves:
//! those are the engine's (`capsa-engine`).
//!
//! Machines (docs/machines.md, docs/internals.md "Machines"): [`machine`] keeps one
//! folder per machine; [`driver`] is the small interface every hypervisor backend
//! implements, with its capabilities as data; [`qemu`] and (macOS) `vz` are the
//! backends; [`accel`] probes which accelerator actually runs guests; [`ssh`] is the
//! client behind `machine ssh` and the SSH transport.

pub use capsa_proto::PROTOCOL_VERSION;

pub mod accel;
pub mod connection;
pub mod driver;
pub mod forward;
pub mod machine;
#[cfg(unix)]
pub mod process;
pub mod qemu;
#[cfg(unix)]
pub mod qmp;
pub mod ssh;
pub mod transport;
#[cfg(target_os = "macos")]
pub mod vz;
