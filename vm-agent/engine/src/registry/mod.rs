//! A client for the OCI distribution API (registries such as Docker Hub, GHCR, Quay and
//! Debian's `docker-registry`): manifests and blobs, token and basic authentication,
//! retries of throttled and failing requests, and blob uploads.

pub mod client;
pub mod media;

pub use client::{RegistryClient, RegistryError, Repo};
