//! The engine interface the CLI (and later the agent and the desktop) use: one value
//! holding the store, the registries configuration and a registry client. Image
//! operations live in `image::*` modules as `impl Engine` blocks.

use std::path::PathBuf;

use crate::image::auth::{self, AuthError, Credentials};
use crate::image::reference::{self, ReferenceError};
use crate::image::registries::{RegistriesConf, RegistriesError};
use crate::layer::compression::CompressionError;
use crate::layer::unpack::UnpackError;
use crate::registry::{RegistryClient, RegistryError};
use crate::store::{ImageRecord, Store, StoreError, StoreOptions, split_name};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Registries(#[from] RegistriesError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("layer {layer}")]
    Layer {
        layer: String,
        #[source]
        source: LayerError,
    },
    #[error(transparent)]
    Digest(#[from] crate::digest::DigestError),
    #[error("{0}: image not known")]
    ImageNotKnown(String),
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Multiple(String),
    #[error(transparent)]
    Container(#[from] crate::container::lifecycle::ContainerError),
    #[error("image used by {container}: image is in use by a container")]
    UsedByContainer { container: String },
    #[error("image {id} is in use: {detail}")]
    InUse { id: String, detail: String },
}

/// What went wrong while fetching or applying one layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error(transparent)]
    Compression(#[from] CompressionError),
    #[error(transparent)]
    Digest(#[from] crate::digest::DigestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("decompressing: {0}")]
    Decompress(#[source] std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl EngineError {
    pub fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Self {
        EngineError::Invalid {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| EngineError::Io { what, source }
    }

    /// A line telling the user what to do about this error, where there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            EngineError::Registry(e) => e.hint(),
            EngineError::Store(e) => e.hint(),
            EngineError::Layer {
                source: LayerError::Registry(e),
                ..
            } => e.hint(),
            EngineError::Layer {
                source: LayerError::Store(e),
                ..
            } => e.hint(),
            EngineError::Container(e) => e.hint(),
            EngineError::ImageNotKnown(_) => {
                Some("`capsa images` lists the images in this store".into())
            }
            EngineError::InUse { .. } => Some("pass --force to remove it anyway".into()),
            EngineError::UsedByContainer { .. } => Some(
                "remove the container first, or pass --force to remove it with the image".into(),
            ),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub store: StoreOptions,
    /// `--authfile`; else `REGISTRY_AUTH_FILE` and the default places.
    pub auth_file: Option<PathBuf>,
}

pub struct Engine {
    pub(crate) store: Store,
    pub(crate) registries: RegistriesConf,
    pub(crate) client: RegistryClient,
    /// `--authfile` of the command, if any.
    pub auth_file: Option<PathBuf>,
}

impl Engine {
    pub fn open(opts: EngineOptions) -> Result<Engine, EngineError> {
        let store = Store::open(opts.store)?;
        let registries = RegistriesConf::load()?;
        let auth_file = opts.auth_file.clone();
        let lookup_file = auth_file.clone();
        let client = RegistryClient::new(Box::new(move |key: &str| {
            match auth::lookup(lookup_file.as_deref(), key) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("reading credentials for {key}: {e}");
                    None
                }
            }
        }));
        Ok(Engine {
            store,
            registries,
            client,
            auth_file,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn registries(&self) -> &RegistriesConf {
        &self.registries
    }

    /// Credentials given for one command (`--creds`).
    pub fn set_credentials(&self, registry: &str, creds: Credentials) {
        self.client.set_credentials(registry, creds);
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, EngineError> {
        Ok(self.store.images()?)
    }

    /// Finds a local image as Podman does: by ID or ID prefix, by full name, or by a
    /// short name matched against the repositories in the store.
    pub fn lookup_image(&self, input: &str) -> Result<ImageRecord, EngineError> {
        let images = self.store.images()?;
        find_image(&images, input)
            .cloned()
            .ok_or_else(|| EngineError::ImageNotKnown(input.to_string()))
    }
}

/// Candidate full names (`repo:tag` or `repo@digest`) a user's input may mean.
pub(crate) fn local_candidates(input: &str) -> Vec<String> {
    let Ok(name) = reference::parse_name(input) else {
        return Vec::new();
    };
    let suffix = match (&name.tag, &name.digest) {
        (_, Some(d)) => format!("@{d}"),
        (Some(t), None) => format!(":{t}"),
        (None, None) => ":latest".to_string(),
    };
    let mut out = Vec::new();
    match &name.domain {
        Some(_) => {
            if let Ok(r) = reference::Reference::parse(input) {
                out.push(format!("{}{suffix}", r.repo_name()));
            }
        }
        None => {
            out.push(format!("localhost/{}{suffix}", name.path));
            // Any repository whose path ends with the short name, on a component boundary.
            out.push(format!("*/{}{suffix}", name.path));
            if !name.path.contains('/') {
                out.push(format!("*/library/{}{suffix}", name.path));
            }
        }
    }
    out
}

pub fn find_image<'a>(images: &'a [ImageRecord], input: &str) -> Option<&'a ImageRecord> {
    let id = input.strip_prefix("sha256:").unwrap_or(input);
    if reference::is_image_id_prefix(input) {
        let hits: Vec<&ImageRecord> = images.iter().filter(|i| i.id.starts_with(id)).collect();
        if hits.len() == 1 {
            return Some(hits[0]);
        }
        if id.len() == 64 {
            return hits.first().copied();
        }
    }
    for cand in local_candidates(input) {
        let (c_repo, c_tag, c_digest) = split_name(&cand);
        for img in images {
            for n in &img.names {
                let (repo, tag, _) = split_name(n);
                if !repo_matches(c_repo, repo) {
                    continue;
                }
                match c_digest {
                    Some(d) if img.digests.iter().any(|x| x == d) => return Some(img),
                    Some(_) => {}
                    None if tag == c_tag => return Some(img),
                    None => {}
                }
            }
        }
    }
    None
}

/// A candidate's repository (`*/tail` stands for any repository ending in `/tail`)
/// against a stored one.
fn repo_matches(candidate: &str, repo: &str) -> bool {
    match candidate.strip_prefix("*/") {
        Some(tail) => repo.ends_with(&format!("/{tail}")),
        None => repo == candidate,
    }
}

/// The stored name among `names` that the user's `input` refers to (by tag).
pub(crate) fn name_for<'a>(names: &'a [String], input: &str) -> Option<&'a String> {
    local_candidates(input).iter().find_map(|c| {
        let (c_repo, c_tag, _) = split_name(c);
        names.iter().find(|n| {
            let (repo, tag, _) = split_name(n);
            repo_matches(c_repo, repo) && tag == c_tag
        })
    })
}
