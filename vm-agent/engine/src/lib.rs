//! The capsa engine: image names and registries, the content-addressed store of blobs,
//! layers and images, pulling, pushing, saving and loading images. Containers, volumes,
//! networks and pods join it in later issues. It keeps all state on disk under file
//! locks so several `capsa` processes (and the in-guest agent) can share one store; no
//! long-lived process owns anything.
//!
//! It does not know about VMs, transports or the CLI's output formats.

#![recursion_limit = "512"]

pub mod container;
pub mod digest;
pub mod engine;
pub mod image;
pub mod layer;
pub mod network;
pub mod registry;
pub mod store;
pub mod userns;
pub mod volume;

pub use engine::{Engine, EngineError, EngineOptions};

/// The version of the engine interface that `capsa version` reports.
pub const API_VERSION: &str = "0.1.0";
