//! The last step of every way an image enters the store (pull, load, import).

use super::manifest::{ImageConfig, Manifest};
use super::pull::{LayerJob, apply_from_blob};
use crate::digest;
use crate::engine::{Engine, EngineError};
use crate::store::{ImageRecord, chain_ids};

impl Engine {
    /// Unpacks the layers the store lacks (their blobs must be stored), stores the
    /// manifest exactly as given (so its digest is kept) and adds the image to the index.
    pub(crate) fn commit_image(
        &self,
        manifest_bytes: &[u8],
        manifest: &Manifest,
        config: &ImageConfig,
        names: Vec<String>,
        index_digest: Option<String>,
    ) -> Result<ImageRecord, EngineError> {
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(EngineError::invalid(
                "image",
                "the manifest's layers and the config's diff IDs differ in number",
            ));
        }
        let chains = chain_ids(&config.rootfs.diff_ids);
        for (i, l) in manifest.layers.iter().enumerate() {
            if self.store.has_layer(&chains[i]) {
                continue;
            }
            let job = LayerJob {
                desc: l.clone(),
                diff_id: config.rootfs.diff_ids[i].clone(),
                chain_id: chains[i].clone(),
                parent: (i > 0).then(|| chains[i - 1].clone()),
            };
            apply_from_blob(&self.store, &job).map_err(|source| EngineError::Layer {
                layer: l.digest.clone(),
                source,
            })?;
        }
        let manifest_digest = self.store.put_blob(manifest_bytes, None)?;
        let mut blobs = vec![manifest_digest.clone(), manifest.config.digest.clone()];
        blobs.extend(index_digest.iter().cloned());
        blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
        // Podman's image size: the uncompressed layers plus the metadata containers/storage
        // keeps with the image (the config once, the manifest twice: by name and by digest).
        let mut size = manifest.config.size + 2 * manifest_bytes.len() as u64;
        for c in &chains {
            size += self.store.layer_record(c)?.size;
        }
        let digest_s = index_digest.clone().unwrap_or(manifest_digest.clone());
        let mut digests = vec![digest_s.clone()];
        if index_digest.is_some() {
            digests.push(manifest_digest.clone());
        }
        let rec = ImageRecord {
            id: digest::sha256_hex(&manifest.config.digest)
                .map_err(|e| EngineError::invalid("config digest", e.to_string()))?
                .to_string(),
            names,
            digest: digest_s,
            digests,
            manifest_digest,
            config_digest: manifest.config.digest.clone(),
            layers: chains,
            blobs,
            size,
            created: config.created.clone(),
            added: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        };
        Ok(self.store.add_image(rec)?)
    }
}
