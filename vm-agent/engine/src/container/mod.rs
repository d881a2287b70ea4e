//! Containers: the OCI runtime bundle (config.json), the root filesystem, the runtime's
//! command line, records on disk, the monitor's log and attach socket as seen from the
//! engine.

pub mod attach;
pub mod fsops;
pub mod idmap;
pub mod inspect;
pub mod lifecycle;
pub mod logs;
pub mod ops;
pub mod options;
pub mod rootfs;
pub mod runtime;
pub mod spec;
pub mod state;
pub mod systemd;
