//! `save` and `load`: docker-archive, oci-archive and oci-dir.
//!
//! Archives are read through the same hardened unpacker as layers (so an archive cannot
//! write outside its scratch directory), every blob is checked against its digest, and
//! an image is only added to the index once all of it is stored.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::{Descriptor, ImageConfig, Index, Manifest};
use super::platform::Platform;
use super::progress::Progress;
use super::reference::{self, Reference};
use crate::digest::{self, HashingWriter};
use crate::engine::{Engine, EngineError};
use crate::layer::compression::{Compression, sniffing_decoder};
use crate::layer::unpack::{self, UnpackOptions, WhiteoutMode};
use crate::registry::media;
use crate::store::{ImageRecord, split_name};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    DockerArchive,
    OciArchive,
    OciDir,
}

impl std::str::FromStr for ArchiveFormat {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, EngineError> {
        match s {
            "docker-archive" => Ok(Self::DockerArchive),
            "oci-archive" => Ok(Self::OciArchive),
            "oci-dir" => Ok(Self::OciDir),
            other => Err(EngineError::invalid(
                format!("--format {other}"),
                "supported formats are docker-archive, oci-archive and oci-dir",
            )),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

impl Engine {
    /// Writes `images` to `dest` in `format`.
    pub async fn save(
        &self,
        images: &[String],
        format: ArchiveFormat,
        dest: &Path,
    ) -> Result<(), EngineError> {
        let mut recs = Vec::new();
        for i in images {
            let img = self.lookup_image(i)?;
            // The name the user asked for goes first.
            let wanted: Vec<String> = img
                .names
                .iter()
                .filter(|n| {
                    crate::engine::find_image(std::slice::from_ref(&img), i).is_some()
                        && split_name(n).1.is_some()
                })
                .cloned()
                .collect();
            recs.push((img, wanted, i.clone()));
        }
        let engine = self;
        let scratch = tempfile::Builder::new()
            .prefix("save-")
            .tempdir_in(engine.store.root().join("tmp"))
            .map_err(EngineError::io("creating a scratch directory"))?;
        let layout = match format {
            ArchiveFormat::OciDir => dest.to_path_buf(),
            _ => scratch.path().join("content"),
        };
        fs::create_dir_all(&layout)
            .map_err(EngineError::io(format!("creating {}", layout.display())))?;
        match format {
            ArchiveFormat::DockerArchive => self.write_docker(&recs, &layout)?,
            ArchiveFormat::OciArchive | ArchiveFormat::OciDir => self.write_oci(&recs, &layout)?,
        }
        if format != ArchiveFormat::OciDir {
            let tmp_out = dest.with_extension("capsa-partial");
            let f = fs::File::create(&tmp_out)
                .map_err(EngineError::io(format!("creating {}", tmp_out.display())))?;
            let mut b = tar::Builder::new(io::BufWriter::new(f));
            b.mode(tar::HeaderMode::Deterministic);
            b.follow_symlinks(false);
            b.append_dir_all(".", &layout)
                .map_err(EngineError::io(format!("writing {}", dest.display())))?;
            b.into_inner()
                .and_then(|mut w| w.flush())
                .map_err(EngineError::io(format!("writing {}", dest.display())))?;
            fs::rename(&tmp_out, dest).map_err(EngineError::io(format!(
                "moving the archive to {}",
                dest.display()
            )))?;
        }
        Ok(())
    }

    fn write_docker(
        &self,
        recs: &[(ImageRecord, Vec<String>, String)],
        dir: &Path,
    ) -> Result<(), EngineError> {
        let mut entries = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (img, names, _) in recs {
            let cfg_bytes = self.store.read_blob(&img.config_digest)?;
            let cfg: ImageConfig = serde_json::from_slice(&cfg_bytes)
                .map_err(|e| EngineError::invalid("image config", e.to_string()))?;
            let cfg_name = format!("{}.json", img.id);
            fs::write(dir.join(&cfg_name), &cfg_bytes)
                .map_err(EngineError::io("writing the config"))?;
            let (manifest, _) = self.image_manifest(img)?;
            let mut layers = Vec::new();
            for (l, diff_id) in manifest.layers.iter().zip(&cfg.rootfs.diff_ids) {
                let hex = digest::sha256_hex(diff_id)
                    .map_err(|e| EngineError::invalid("diff ID", e.to_string()))?;
                let name = format!("{hex}.tar");
                let path = dir.join(&name);
                if !path.exists() {
                    // docker-archive layers are uncompressed tarballs named by diff ID.
                    let src = fs::File::open(self.store.blob_path(&l.digest)?)
                        .map_err(EngineError::io(format!("opening blob {}", l.digest)))?;
                    let mut dec = Compression::from_media_type(&l.media_type)
                        .map_err(|e| EngineError::invalid("layer", e.to_string()))?
                        .decoder(io::BufReader::new(src))
                        .map_err(EngineError::io("decompressing a layer"))?;
                    let out = fs::File::create(&path)
                        .map_err(EngineError::io(format!("writing {}", path.display())))?;
                    let mut w = HashingWriter::new(io::BufWriter::new(out));
                    io::copy(&mut dec, &mut w)
                        .map_err(EngineError::io(format!("decompressing layer {}", l.digest)))?;
                    let (d, _, mut inner) = w.finish();
                    inner.flush().map_err(EngineError::io("writing a layer"))?;
                    if &d != diff_id {
                        return Err(EngineError::invalid(
                            format!("layer {}", l.digest),
                            format!("uncompressed digest {d} does not match diff ID {diff_id}"),
                        ));
                    }
                }
                layers.push(name);
            }
            let tags: Vec<String> = names.iter().map(|n| docker_short(n)).collect();
            for t in &tags {
                let (repo, tag, _) = split_name(t);
                repositories
                    .entry(repo.to_string())
                    .or_default()
                    .insert(tag.unwrap_or("latest").to_string(), img.id.clone());
            }
            entries.push(DockerEntry {
                config: cfg_name,
                repo_tags: Some(tags),
                layers,
            });
        }
        fs::write(
            dir.join("manifest.json"),
            serde_json::to_vec(&entries).expect("serialisable"),
        )
        .map_err(EngineError::io("writing manifest.json"))?;
        fs::write(
            dir.join("repositories"),
            serde_json::to_vec(&repositories).expect("serialisable"),
        )
        .map_err(EngineError::io("writing repositories"))?;
        Ok(())
    }

    fn write_oci(
        &self,
        recs: &[(ImageRecord, Vec<String>, String)],
        dir: &Path,
    ) -> Result<(), EngineError> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs)
            .map_err(EngineError::io(format!("creating {}", blobs.display())))?;
        let mut index = match fs::read(dir.join("index.json")) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| EngineError::invalid("existing index.json", e.to_string()))?,
            Err(_) => Index {
                schema_version: 2,
                media_type: Some(media::OCI_INDEX.into()),
                manifests: Vec::new(),
                annotations: None,
            },
        };
        for (img, names, _) in recs {
            let (manifest, mt) = self.image_manifest(img)?;
            let mut all = vec![img.manifest_digest.clone(), manifest.config.digest.clone()];
            all.extend(manifest.layers.iter().map(|l| l.digest.clone()));
            for d in &all {
                let to = blobs.join(
                    digest::sha256_hex(d)
                        .map_err(|e| EngineError::invalid("digest", e.to_string()))?,
                );
                if !to.exists() {
                    let from = self.store.blob_path(d)?;
                    if fs::hard_link(&from, &to).is_err() {
                        fs::copy(&from, &to)
                            .map_err(EngineError::io(format!("copying blob {d}")))?;
                    }
                }
            }
            let size = fs::metadata(self.store.blob_path(&img.manifest_digest)?)
                .map(|m| m.len())
                .unwrap_or(0);
            let ref_names: Vec<Option<String>> = if names.is_empty() {
                vec![None]
            } else {
                names.iter().cloned().map(Some).collect()
            };
            for n in ref_names {
                index.manifests.retain(|d| {
                    n.is_none()
                        || d.annotations.as_ref().and_then(|a| a.get(REF_NAME)) != n.as_ref()
                });
                index.manifests.push(Descriptor {
                    media_type: mt.clone(),
                    digest: img.manifest_digest.clone(),
                    size,
                    platform: None,
                    annotations: n.map(|n| BTreeMap::from([(REF_NAME.to_string(), n)])),
                    urls: None,
                });
            }
        }
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(EngineError::io("writing oci-layout"))?;
        fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&index).expect("serialisable"),
        )
        .map_err(EngineError::io("writing index.json"))?;
        Ok(())
    }

    /// Loads every image in an archive or OCI layout directory; returns their names (or
    /// IDs for unnamed images).
    pub async fn load(
        &self,
        input: &Path,
        progress: &dyn Progress,
    ) -> Result<Vec<String>, EngineError> {
        let _content = self.store.content_lock()?;
        let scratch = tempfile::Builder::new()
            .prefix("load-")
            .tempdir_in(self.store.root().join("tmp"))
            .map_err(EngineError::io("creating a scratch directory"))?;
        let dir: PathBuf = if input.is_dir() {
            input.to_path_buf()
        } else {
            let f = fs::File::open(input)
                .map_err(EngineError::io(format!("opening {}", input.display())))?;
            let dec = sniffing_decoder(f)
                .map_err(EngineError::io(format!("reading {}", input.display())))?;
            let opts = UnpackOptions {
                whiteouts: WhiteoutMode::Apply,
                rootless: true,
            };
            unpack::unpack(dec, scratch.path(), opts).map_err(|e| {
                EngineError::invalid(
                    format!("archive {}", input.display()),
                    crate::registry::client::error_chain(&e),
                )
            })?;
            scratch.path().to_path_buf()
        };
        if dir.join("manifest.json").exists() {
            self.load_docker(&dir, progress)
        } else if dir.join("index.json").exists() {
            self.load_oci(&dir, progress)
        } else {
            Err(EngineError::invalid(
                format!("archive {}", input.display()),
                "neither a docker-archive (manifest.json) nor an OCI layout (index.json)",
            ))
        }
    }

    fn load_docker(&self, dir: &Path, progress: &dyn Progress) -> Result<Vec<String>, EngineError> {
        let what = "docker-archive manifest.json";
        let bytes = fs::read(dir.join("manifest.json"))
            .map_err(EngineError::io(format!("reading {what}")))?;
        let entries: Vec<DockerEntry> = serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::invalid(what, e.to_string()))?;
        let mut out = Vec::new();
        for e in entries {
            let cfg_bytes = read_member(dir, &e.config)?;
            let config: ImageConfig = serde_json::from_slice(&cfg_bytes)
                .map_err(|x| EngineError::invalid(format!("config {}", e.config), x.to_string()))?;
            if config.rootfs.diff_ids.len() != e.layers.len() {
                return Err(EngineError::invalid(
                    format!("config {}", e.config),
                    "its diff IDs do not match the archive's layers",
                ));
            }
            let config_digest = self.store.put_blob(&cfg_bytes, None)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let path = member_path(dir, l)?;
                let mut head = [0u8; 4];
                let n = fs::File::open(&path)
                    .and_then(|mut f| f.read(&mut head))
                    .map_err(EngineError::io(format!("reading layer {l}")))?;
                let mt = match Compression::sniff(&head[..n]) {
                    Compression::Gzip => media::DOCKER_LAYER_GZIP,
                    Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
                    Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
                };
                let (d, size) = self.store_file_blob(&path)?;
                progress.blob_done(&d, false);
                layers.push(Descriptor {
                    media_type: mt.into(),
                    digest: d,
                    size,
                    platform: None,
                    annotations: None,
                    urls: None,
                });
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(media::DOCKER_MANIFEST.into()),
                config: Descriptor {
                    media_type: media::DOCKER_CONFIG.into(),
                    digest: config_digest.clone(),
                    size: cfg_bytes.len() as u64,
                    platform: None,
                    annotations: None,
                    urls: None,
                },
                layers,
                annotations: None,
            };
            let names = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| normalize_loaded(t))
                .collect::<Result<Vec<_>, _>>()?;
            let manifest_bytes = serde_json::to_vec(&manifest).expect("serialisable");
            let rec = self.commit_image(&manifest_bytes, &manifest, &config, names, None)?;
            out.extend(if rec.names.is_empty() {
                vec![format!("sha256:{}", rec.id)]
            } else {
                rec.names.clone()
            });
        }
        Ok(out)
    }

    fn load_oci(&self, dir: &Path, progress: &dyn Progress) -> Result<Vec<String>, EngineError> {
        let idx_bytes =
            fs::read(dir.join("index.json")).map_err(EngineError::io("reading index.json"))?;
        let index: Index = serde_json::from_slice(&idx_bytes)
            .map_err(|e| EngineError::invalid("OCI layout index.json", e.to_string()))?;
        let mut out = Vec::new();
        for desc in &index.manifests {
            let mut bytes = read_blob_checked(dir, desc)?;
            let mut mt = media::detect(&bytes, Some(&desc.media_type));
            let mut index_digest = None;
            if media::is_index(&mt) {
                let inner: Index = serde_json::from_slice(&bytes).map_err(|e| {
                    EngineError::invalid(format!("index {}", desc.digest), e.to_string())
                })?;
                let host = Platform::host();
                let chosen = inner
                    .manifests
                    .iter()
                    .find(|d| {
                        d.platform.as_ref().is_some_and(|p| {
                            host.matches(&p.os, &p.architecture, p.variant.as_deref())
                        })
                    })
                    .ok_or_else(|| {
                        EngineError::invalid(
                            format!("index {}", desc.digest),
                            format!("no image for {host}"),
                        )
                    })?;
                self.store.put_blob(&bytes, Some(&desc.digest))?;
                index_digest = Some(desc.digest.clone());
                bytes = read_blob_checked(dir, chosen)?;
                mt = media::detect(&bytes, Some(&chosen.media_type));
            }
            if !media::is_manifest(&mt) {
                return Err(EngineError::invalid(
                    format!("manifest {}", desc.digest),
                    format!("unknown media type {mt:?}"),
                ));
            }
            let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                EngineError::invalid(format!("manifest {}", desc.digest), e.to_string())
            })?;
            let cfg_bytes = read_blob_checked(dir, &manifest.config)?;
            let config: ImageConfig = serde_json::from_slice(&cfg_bytes).map_err(|e| {
                EngineError::invalid(format!("config {}", manifest.config.digest), e.to_string())
            })?;
            self.store
                .put_blob(&cfg_bytes, Some(&manifest.config.digest))?;
            for l in &manifest.layers {
                Compression::from_media_type(&l.media_type).map_err(|e| {
                    EngineError::invalid(format!("layer {}", l.digest), e.to_string())
                })?;
                let path = member_path(
                    dir,
                    &format!(
                        "blobs/sha256/{}",
                        digest::sha256_hex(&l.digest)
                            .map_err(|e| EngineError::invalid("layer digest", e.to_string()))?
                    ),
                )?;
                let (d, _) = self.store_file_blob(&path)?;
                if d != l.digest {
                    return Err(digest::DigestError::Mismatch {
                        what: format!("blob {}", l.digest),
                        expected: l.digest.clone(),
                        actual: d,
                    }
                    .into());
                }
                progress.blob_done(&d, false);
            }
            let name = desc
                .annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .cloned();
            let names = match name {
                Some(n)
                    if reference::parse_name(&n).is_ok()
                        && !n.chars().all(|c| {
                            c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'
                        }) =>
                {
                    vec![normalize_loaded(&n)?]
                }
                _ => Vec::new(),
            };
            let rec = self.commit_image(&bytes, &manifest, &config, names, index_digest)?;
            out.extend(if rec.names.is_empty() {
                vec![format!("sha256:{}", rec.id)]
            } else {
                rec.names.clone()
            });
        }
        Ok(out)
    }

    /// Copies a file into the blob store; returns its digest and size.
    pub(crate) fn store_file_blob(&self, path: &Path) -> Result<(String, u64), EngineError> {
        let mut f =
            fs::File::open(path).map_err(EngineError::io(format!("opening {}", path.display())))?;
        let mut w = self.store.blob_writer()?;
        let n = io::copy(&mut f, &mut w)
            .map_err(EngineError::io(format!("storing {}", path.display())))?;
        Ok((w.commit(None)?, n))
    }
}

/// docker-archive tags are written the short Docker way (`busybox:latest`).
fn docker_short(name: &str) -> String {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
        .to_string()
}

/// Names found in archives follow Docker's normalisation (`busybox` is Docker Hub's).
fn normalize_loaded(tag: &str) -> Result<String, EngineError> {
    let name = reference::parse_name(tag)?;
    let r = match name.domain {
        Some(_) => Reference::parse(tag)?,
        None => Reference::from_name(&name, "docker.io"),
    };
    Ok(r.tag_or_latest().to_string())
}

/// A path inside an extracted archive, refusing names that leave it.
fn member_path(dir: &Path, name: &str) -> Result<PathBuf, EngineError> {
    let p = Path::new(name);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(EngineError::invalid(
            format!("archive member {name:?}"),
            "path leads out of the archive",
        ));
    }
    let full = dir.join(p);
    let meta = fs::symlink_metadata(&full).map_err(|_| {
        EngineError::invalid(
            format!("archive member {name:?}"),
            "missing from the archive",
        )
    })?;
    if !meta.is_file() {
        return Err(EngineError::invalid(
            format!("archive member {name:?}"),
            "not a regular file",
        ));
    }
    Ok(full)
}

fn read_member(dir: &Path, name: &str) -> Result<Vec<u8>, EngineError> {
    let p = member_path(dir, name)?;
    let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    if len > crate::registry::client::MAX_CONFIG_SIZE {
        return Err(EngineError::invalid(
            format!("archive member {name:?}"),
            "too large",
        ));
    }
    fs::read(&p).map_err(EngineError::io(format!("reading {name}")))
}

/// Reads a small blob of an OCI layout and checks its digest.
fn read_blob_checked(dir: &Path, desc: &Descriptor) -> Result<Vec<u8>, EngineError> {
    let hex = digest::sha256_hex(&desc.digest)
        .map_err(|e| EngineError::invalid("OCI layout", e.to_string()))?;
    let p = member_path(dir, &format!("blobs/sha256/{hex}"))?;
    let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    if len
        > crate::registry::client::MAX_MANIFEST_SIZE.max(crate::registry::client::MAX_CONFIG_SIZE)
    {
        return Err(EngineError::invalid(
            format!("blob {}", desc.digest),
            format!("{len} bytes is too large for a manifest or config"),
        ));
    }
    let b = fs::read(&p).map_err(EngineError::io(format!("reading blob {}", desc.digest)))?;
    digest::verify(&format!("blob {}", desc.digest), &b, &desc.digest)?;
    Ok(b)
}
