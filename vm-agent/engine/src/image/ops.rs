//! Local image operations: configs, inspect documents, tags, removal, prune, history.

use serde_json::{Value, json};

use super::manifest::{ImageConfig, Manifest};
use super::reference::{self, Reference};
use crate::engine::{Engine, EngineError, find_image};
use crate::store::ImageRecord;

/// What `rmi` did.
#[derive(Debug, Default)]
pub struct RemoveReport {
    pub untagged: Vec<String>,
    pub deleted: Vec<String>,
    pub not_found: Vec<String>,
}

/// One row of `history`.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub id: String,
    pub created: Option<String>,
    pub created_by: String,
    pub size: u64,
    pub comment: String,
    pub tags: Vec<String>,
}

/// Full name for a new tag: short names live under `localhost/`, `:latest` is implied.
pub fn normalize_tag(input: &str) -> Result<String, EngineError> {
    let name = reference::parse_name(input)?;
    if name.digest.is_some() {
        return Err(EngineError::invalid(
            format!("tag {input}"),
            "a tag cannot contain a digest",
        ));
    }
    let r = match &name.domain {
        Some(_) => Reference::parse(input)?,
        None => Reference::from_name(&name, "localhost"),
    };
    Ok(format!(
        "{}:{}",
        r.repo_name(),
        r.tag.as_deref().unwrap_or("latest")
    ))
}

impl Engine {
    /// The registry a name (local or remote) refers to, for `--creds`.
    pub fn registry_of(&self, input: &str) -> Result<String, EngineError> {
        if let Ok(img) = self.lookup_image(input)
            && let Some(n) = img.names.first()
        {
            return Ok(n.split('/').next().unwrap_or_default().to_string());
        }
        let name = reference::parse_name(input)?;
        Ok(match name.domain {
            Some(_) => Reference::parse(input)?.registry,
            None => self
                .registries
                .unqualified_search_registries
                .first()
                .cloned()
                .unwrap_or_else(|| "docker.io".into()),
        })
    }

    pub fn image_config(&self, img: &ImageRecord) -> Result<ImageConfig, EngineError> {
        let b = self.store.read_blob(&img.config_digest)?;
        serde_json::from_slice(&b)
            .map_err(|e| EngineError::invalid(format!("config of image {}", img.id), e.to_string()))
    }

    pub fn image_manifest(&self, img: &ImageRecord) -> Result<(Manifest, String), EngineError> {
        let b = self.store.read_blob(&img.manifest_digest)?;
        let mt = crate::registry::media::detect(&b, None);
        let m = serde_json::from_slice(&b).map_err(|e| {
            EngineError::invalid(format!("manifest of image {}", img.id), e.to_string())
        })?;
        Ok((m, mt))
    }

    /// `podman image inspect`'s document.
    pub fn inspect_image(&self, img: &ImageRecord) -> Result<Value, EngineError> {
        let cfg = self.image_config(img)?;
        let (_, manifest_type) = self.image_manifest(img)?;
        let labels = cfg.labels();
        let diff = |c: &String| {
            self.store
                .layer_diff(c)
                .ok()
                .map(|p| p.display().to_string())
        };
        let mut graph = serde_json::Map::new();
        if let Some(top) = img.layers.last() {
            let lowers: Vec<String> = img.layers.iter().rev().skip(1).filter_map(diff).collect();
            graph.insert("UpperDir".into(), json!(diff(top)));
            if !lowers.is_empty() {
                graph.insert("LowerDir".into(), json!(lowers.join(":")));
            }
        }
        Ok(json!({
            "Id": img.id,
            "Digest": img.digest,
            "RepoTags": img.repo_tags(),
            "RepoDigests": img.repo_digests(),
            "Parent": "",
            "Comment": cfg
                .extra
                .get("comment")
                .cloned()
                .or_else(|| cfg.history.last().and_then(|h| h.comment.clone()).map(Value::from))
                .unwrap_or(json!("")),
            "Created": cfg.created,
            "Config": cfg.config.clone().unwrap_or(json!({})),
            "Version": cfg.extra.get("docker_version").cloned().unwrap_or(json!("")),
            "Author": cfg.author.clone().unwrap_or_default(),
            "Architecture": cfg.architecture,
            "Os": cfg.os,
            "Size": img.size,
            "VirtualSize": img.size,
            "GraphDriver": {"Name": self.store.driver().name(), "Data": graph},
            "RootFS": {"Type": cfg.rootfs.kind, "Layers": cfg.rootfs.diff_ids},
            "Labels": if labels.is_empty() { Value::Null } else { json!(labels) },
            "Annotations": {},
            "ManifestType": manifest_type,
            "User": cfg.config_field("User").cloned().unwrap_or(json!("")),
            "History": cfg.history,
            "NamesHistory": img.names,
        }))
    }

    pub fn tag(&self, image: &str, targets: &[String]) -> Result<(), EngineError> {
        let names = targets
            .iter()
            .map(|t| normalize_tag(t))
            .collect::<Result<Vec<_>, _>>()?;
        let img = self.lookup_image(image)?;
        self.store.update_images(|images| {
            for other in images.iter_mut() {
                if other.id != img.id {
                    other.names.retain(|n| !names.contains(n));
                }
            }
            let Some(target) = images.iter_mut().find(|i| i.id == img.id) else {
                return Err(EngineError::ImageNotKnown(image.to_string()));
            };
            for n in &names {
                if !target.names.contains(n) {
                    target.names.push(n.clone());
                }
            }
            Ok(())
        })
    }

    pub fn untag(&self, image: &str, names: &[String]) -> Result<(), EngineError> {
        let img = self.lookup_image(image)?;
        let drop: Vec<String> = names
            .iter()
            .map(|n| normalize_tag(n))
            .collect::<Result<_, _>>()?;
        self.store.update_images(|images| {
            let Some(target) = images.iter_mut().find(|i| i.id == img.id) else {
                return Err(EngineError::ImageNotKnown(image.to_string()));
            };
            if drop.is_empty() {
                target.names.clear();
                return Ok(());
            }
            for (given, full) in names.iter().zip(&drop) {
                // A short name may also have been stored under a search registry.
                let before = target.names.len();
                target.names.retain(|n| n != full);
                if target.names.len() == before {
                    let hit = find_image(std::slice::from_ref(target), given).is_some();
                    if hit {
                        let suffix = full.split_once('/').map(|(_, s)| s).unwrap_or(full);
                        target.names.retain(|n| !n.ends_with(&format!("/{suffix}")));
                    }
                    if target.names.len() == before {
                        return Err(EngineError::invalid(
                            format!("untag {given}"),
                            format!("{given}: tag not known"),
                        ));
                    }
                }
            }
            Ok(())
        })
    }

    /// `rmi`: a name removes that name, and the image once it has none left (or with
    /// `force`, all its names); an ID removes the image.
    pub fn remove_images(
        &self,
        inputs: &[String],
        all: bool,
        force: bool,
    ) -> Result<RemoveReport, EngineError> {
        let mut report = RemoveReport::default();
        // Images that containers use: refused, or (with force) their containers go first.
        let containers = self
            .containers()
            .and_then(|c| Ok(c.list()?))
            .unwrap_or_default();
        let current = self.store.images()?;
        let wanted: Vec<String> = if all {
            current.iter().map(|i| i.id.clone()).collect()
        } else {
            inputs.to_vec()
        };
        for input in &wanted {
            let Some(img) = find_image(&current, input) else {
                continue;
            };
            let by_id = all || img.id.starts_with(input.trim_start_matches("sha256:"));
            if !by_id && img.repo_tags().len() > 1 {
                continue; // only a name goes
            }
            for c in containers.iter().filter(|c| c.image_id == img.id) {
                if !force {
                    return Err(EngineError::UsedByContainer {
                        container: c.id.clone(),
                    });
                }
                self.remove_container(&c.id, true)?;
            }
        }
        self.store.update_images(|images| {
            let targets: Vec<String> = if all {
                images.iter().map(|i| i.id.clone()).collect()
            } else {
                inputs.to_vec()
            };
            for input in &targets {
                let Some(img) = find_image(images, input).cloned() else {
                    report.not_found.push(input.clone());
                    continue;
                };
                let by_id = all || img.id.starts_with(input.trim_start_matches("sha256:"));
                let multiple_names = img.repo_tags().len() > 1;
                if !by_id && multiple_names && !force {
                    // Remove just the name the user gave.
                    let full = crate::engine::name_for(&img.names, input).cloned();
                    if let Some(full) = full
                        && let Some(i) = images.iter_mut().find(|i| i.id == img.id)
                    {
                        i.names.retain(|n| n != &full);
                        report.untagged.push(full);
                        continue;
                    }
                }
                if by_id && multiple_names && !force && !all {
                    return Err(EngineError::InUse {
                        id: img.id.clone(),
                        detail: "it has more than one name; remove them by name, or pass --force"
                            .into(),
                    });
                }
                images.retain(|i| i.id != img.id);
                report.untagged.extend(img.repo_tags());
                report.deleted.push(img.id.clone());
            }
            Ok::<_, EngineError>(())
        })?;
        self.store.gc()?;
        Ok(report)
    }

    /// Removes dangling images (all images with `all`); returns their IDs.
    pub fn prune_images(&self, all: bool) -> Result<Vec<String>, EngineError> {
        let removed = self.store.update_images(|images| {
            let (gone, keep): (Vec<_>, Vec<_>) =
                images.drain(..).partition(|i| all || i.names.is_empty());
            *images = keep;
            Ok::<_, EngineError>(gone.into_iter().map(|i| i.id).collect::<Vec<_>>())
        })?;
        self.store.gc()?;
        Ok(removed)
    }

    /// History, newest first, with the layer each non-empty step made.
    pub fn history(&self, img: &ImageRecord) -> Result<Vec<HistoryEntry>, EngineError> {
        let cfg = self.image_config(img)?;
        let mut layer_idx = 0;
        let mut out = Vec::new();
        let n = cfg.history.len();
        let steps: Vec<_> = if cfg.history.is_empty() {
            img.layers.iter().map(|_| Default::default()).collect()
        } else {
            cfg.history.clone()
        };
        for (i, h) in steps.iter().enumerate() {
            let super::manifest::History {
                created,
                created_by,
                comment,
                empty_layer,
                ..
            } = h.clone();
            let mut size = 0;
            let mut id = "<missing>".to_string();
            if !empty_layer {
                if let Some(chain) = img.layers.get(layer_idx)
                    && let Ok(rec) = self.store.layer_record(chain)
                {
                    size = rec.size;
                }
                layer_idx += 1;
            }
            if i + 1 == n.max(steps.len()) {
                id = img.id.clone();
            }
            out.push(HistoryEntry {
                id,
                created: created.or(cfg.created.clone()),
                created_by: created_by.unwrap_or_default(),
                size,
                comment: comment.unwrap_or_default(),
                tags: if i + 1 == steps.len() {
                    img.repo_tags()
                } else {
                    Vec::new()
                },
            });
        }
        out.reverse();
        Ok(out)
    }
}
