//! Containers: the OCI runtime bundle (config.json) a container runs from. The
//! lifecycle (monitor, state, commands) is built on this in the containers issue.

pub mod rootfs;
pub mod runtime;
pub mod spec;
pub mod state;
