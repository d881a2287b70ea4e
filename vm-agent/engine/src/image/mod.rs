//! Images: names, registries configuration, credentials, and the registry client.

pub mod auth;
pub mod reference;
pub mod registries;
