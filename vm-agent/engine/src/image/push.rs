//! `push`: uploads the blobs a registry lacks, then the manifest.

use super::manifest::Manifest;
use super::progress::Progress;
use super::pull::PullOptions;
use super::reference::{self, Reference};
use crate::digest;
use crate::engine::{Engine, EngineError};
use crate::registry::client::Body;
use crate::registry::media;

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub tls_verify: Option<bool>,
    /// `oci` or `v2s2`: convert the manifest's media types before pushing.
    pub format: Option<String>,
}

impl Engine {
    /// Pushes a local image; returns the manifest digest the registry now holds.
    pub async fn push(
        &self,
        source: &str,
        dest: Option<&str>,
        opts: &PushOptions,
        progress: &dyn Progress,
    ) -> Result<String, EngineError> {
        let img = self.lookup_image(source)?;
        let dest_ref = match dest {
            Some(d) => {
                let d = d.strip_prefix("docker://").unwrap_or(d);
                let name = reference::parse_name(d)?;
                if name.domain.is_none() {
                    return Err(EngineError::invalid(
                        format!("push destination {d}"),
                        "the destination must name its registry, for example localhost:5000/app:1",
                    ));
                }
                Reference::parse(d)?
            }
            None => {
                let name = crate::engine::name_for(&img.names, source)
                    .or_else(|| img.names.first())
                    .cloned()
                    .ok_or_else(|| {
                        EngineError::invalid(
                            format!("push {source}"),
                            "the image has no name: give a destination",
                        )
                    })?;
                Reference::parse(&name)?
            }
        }
        .tag_or_latest();
        let popts = PullOptions {
            tls_verify: opts.tls_verify,
            ..Default::default()
        };
        let repo = self.repo_for(&dest_ref, &popts, false)?;
        let (mut manifest, mut mt) = self.image_manifest(&img)?;
        let mut bytes = self.store.read_blob(&img.manifest_digest)?;
        if let Some(f) = &opts.format {
            let want = match f.as_str() {
                "oci" => media::OCI_MANIFEST,
                "v2s2" | "docker" => media::DOCKER_MANIFEST,
                other => {
                    return Err(EngineError::invalid(
                        format!("--format {other}"),
                        "use oci or v2s2",
                    ));
                }
            };
            if want != mt {
                convert(&mut manifest, want)?;
                bytes = serde_json::to_vec(&manifest).expect("serialisable");
                mt = want.to_string();
            }
        }
        progress.message("Getting image source signatures");
        let mut blobs: Vec<(String, u64)> = manifest
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.size))
            .collect();
        blobs.push((manifest.config.digest.clone(), manifest.config.size));
        for (d, size) in blobs {
            if self.client.blob_exists(&repo, &d).await? {
                progress.blob_done(&d, true);
                continue;
            }
            progress.blob_start(&d, Some(size));
            let path = self.store.blob_path(&d)?;
            if !path.exists() {
                return Err(crate::store::StoreError::MissingBlob(d).into());
            }
            self.client.upload_blob(&repo, &d, Body::File(path)).await?;
            progress.blob_advance(&d, size);
            progress.blob_done(&d, false);
        }
        progress.message("Writing manifest to image destination");
        let tag = dest_ref
            .digest
            .clone()
            .or(dest_ref.tag.clone())
            .unwrap_or_else(|| "latest".into());
        let d = digest::sha256_of(&bytes);
        self.client.put_manifest(&repo, &tag, bytes, &mt).await?;
        Ok(d)
    }
}

/// Rewrites media types between OCI and Docker schema 2 (same blobs, new manifest).
fn convert(m: &mut Manifest, to: &str) -> Result<(), EngineError> {
    let oci = to == media::OCI_MANIFEST;
    m.media_type = Some(to.to_string());
    m.config.media_type = if oci {
        media::OCI_CONFIG
    } else {
        media::DOCKER_CONFIG
    }
    .to_string();
    for l in &mut m.layers {
        l.media_type = match (l.media_type.as_str(), oci) {
            (media::DOCKER_LAYER_GZIP | media::OCI_LAYER_GZIP, true) => {
                media::OCI_LAYER_GZIP.into()
            }
            (media::DOCKER_LAYER_GZIP | media::OCI_LAYER_GZIP, false) => {
                media::DOCKER_LAYER_GZIP.into()
            }
            (
                "application/vnd.docker.image.rootfs.diff.tar"
                | "application/vnd.oci.image.layer.v1.tar",
                true,
            ) => "application/vnd.oci.image.layer.v1.tar".into(),
            (
                "application/vnd.docker.image.rootfs.diff.tar"
                | "application/vnd.oci.image.layer.v1.tar",
                false,
            ) => "application/vnd.docker.image.rootfs.diff.tar".into(),
            (other, false) => {
                return Err(EngineError::invalid(
                    "converting to Docker schema 2",
                    format!("layer media type {other} has no Docker schema 2 equivalent"),
                ));
            }
            (other, true) => other.to_string(),
        };
    }
    Ok(())
}
