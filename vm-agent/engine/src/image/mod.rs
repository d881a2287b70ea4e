//! Images: names, registries configuration, credentials, manifests, and the image
//! operations of the engine (pull, push, save, load, import, tag, remove).

pub mod archive;
pub mod auth;
pub mod commit;
pub mod import;
pub mod login;
pub mod manifest;
pub mod ops;
pub mod platform;
pub mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registries;
