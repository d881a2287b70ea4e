//! The capsa engine: image names and registries, the content-addressed store of blobs,
//! layers and images, pulling, pushing, saving and loading images. Containers, volumes,
//! networks and pods join it in later issues. It keeps all state on disk under file
//! locks so several `capsa` processes (and the in-guest agent) can share one store; no
//! long-lived process owns anything.
//!
//! It does not know about VMs, transports or the CLI's output formats.

pub mod digest;
pub mod image;
pub mod layer;
pub mod store;
