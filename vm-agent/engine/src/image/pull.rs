//! `pull`: name resolution, manifest and platform selection, and layers fetched in
//! parallel, each verified and unpacked while it downloads.

use std::io::{self, Read, Write};

use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::manifest::{Descriptor, ImageConfig, Index, Manifest};
use super::platform::Platform;
use super::progress::Progress;
use super::reference::{self, Reference};
use crate::digest::{self, DigestError, Hasher, HashingReader};
use crate::engine::{Engine, EngineError, LayerError};
use crate::layer::compression::Compression;
use crate::layer::unpack::{self, UnpackOptions};
use crate::registry::client::{MAX_CONFIG_SIZE, RegistryError};
use crate::registry::{Repo, media};
use crate::store::{BlobWriter, ImageRecord, LayerRecord, Store, chain_ids};

/// Layers fetched at once.
const PARALLEL_LAYERS: usize = 4;

/// Asks the user which of several fully qualified names a short name means; `None`
/// cancels.
pub type Chooser = std::sync::Arc<dyn Fn(&str, &[Reference]) -> Option<usize> + Send + Sync>;

#[derive(Clone, Default)]
pub struct PullOptions {
    pub platform: Option<Platform>,
    /// `Some(false)`: plain HTTP and unverified TLS allowed (`--tls-verify=false`).
    pub tls_verify: Option<bool>,
    pub all_tags: bool,
    /// Prompts on a terminal when registries.conf asks for it (short-name mode).
    pub chooser: Option<Chooser>,
}

impl Engine {
    /// Pulls `name` and returns the stored image (all tags' images with `all_tags`).
    pub async fn pull(
        &self,
        name: &str,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<Vec<ImageRecord>, EngineError> {
        let parsed = reference::parse_name(name)?;
        if opts.all_tags && (parsed.tag.is_some() || parsed.digest.is_some()) {
            return Err(EngineError::invalid(
                format!("pull {name}"),
                "a tag or digest can't be used with --all-tags",
            ));
        }
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
        let mut candidates = self.registries.resolve(&parsed, tty)?;
        if let Some(choose) = &opts.chooser
            && self.registries.should_prompt(&candidates, tty)
        {
            let refs: Vec<Reference> = candidates.iter().map(|c| c.reference.clone()).collect();
            let i = choose(name, &refs).ok_or_else(|| {
                EngineError::invalid(format!("pull {name}"), "no image was selected")
            })?;
            candidates = vec![candidates.swap_remove(i.min(refs.len() - 1))];
        }
        let mut errors: Vec<(String, EngineError)> = Vec::new();
        for cand in &candidates {
            let refs = if opts.all_tags {
                let repo = self.repo_for(&cand.reference, opts, false)?;
                let tags = self.client.list_tags(&repo).await?;
                tags.into_iter()
                    .map(|t| cand.reference.with_tag(&t))
                    .collect()
            } else {
                vec![cand.reference.clone()]
            };
            let mut pulled = Vec::new();
            let mut failed = None;
            for r in refs {
                match self.pull_reference(&r, opts, progress).await {
                    Ok(img) => pulled.push(img),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => {
                    // Collect what killed or failed commands left behind.
                    self.store.gc()?;
                    return Ok(pulled);
                }
                Some(e) => errors.push((cand.reference.to_string(), e)),
            }
        }
        if errors.len() == 1 {
            return Err(errors.pop().expect("one").1);
        }
        let joined: Vec<String> = errors
            .iter()
            .map(|(r, e)| format!("\n  * {r}: {}", crate::registry::client::error_chain(e)))
            .collect();
        Err(EngineError::Multiple(format!(
            "pulling {name} failed on every registry tried:{}",
            joined.concat()
        )))
    }

    pub(crate) fn repo_for(
        &self,
        r: &Reference,
        opts: &PullOptions,
        mirror_insecure: bool,
    ) -> Result<Repo, EngineError> {
        let insecure = match opts.tls_verify {
            Some(v) => !v,
            None => mirror_insecure || self.registries.is_insecure(&r.registry),
        };
        Ok(Repo {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            insecure,
        })
    }

    /// Pulls one fully qualified reference, trying its mirrors first.
    async fn pull_reference(
        &self,
        name: &Reference,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<ImageRecord, EngineError> {
        let sources = self.registries.pull_sources(name)?;
        let mut last = None;
        for src in &sources {
            progress.message(&format!("Trying to pull {name}..."));
            let repo = self.repo_for(&src.reference, opts, src.insecure)?;
            match self
                .pull_from(&repo, &src.reference, name, opts, progress)
                .await
            {
                Ok(img) => return Ok(img),
                Err(e) if src.is_mirror => {
                    tracing::info!("mirror {} failed: {e}", src.reference);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last
            .unwrap_or_else(|| EngineError::invalid(name.to_string(), "no source to pull from")))
    }

    async fn pull_from(
        &self,
        repo: &Repo,
        source: &Reference,
        name: &Reference,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<ImageRecord, EngineError> {
        let wanted = source
            .digest
            .clone()
            .or_else(|| source.tag.clone())
            .unwrap_or_else(|| "latest".into());
        let (mut bytes, mut mt, first_digest) = self.client.get_manifest(repo, &wanted).await?;
        let mut index_bytes = None;
        if media::is_index(&mt) {
            let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
                EngineError::invalid(format!("manifest list {wanted} of {name}"), e.to_string())
            })?;
            let platform = opts.platform.clone().unwrap_or_else(Platform::host);
            let chosen = choose(&index, &platform).ok_or_else(|| {
                EngineError::invalid(
                    format!("choosing an image from manifest list {name}"),
                    format!(
                        "no image found in manifest list for architecture {}, variant {:?}, OS {}",
                        platform.arch,
                        platform.variant.clone().unwrap_or_default(),
                        platform.os
                    ),
                )
            })?;
            let (b, m, _) = self.client.get_manifest(repo, &chosen.digest).await?;
            index_bytes = Some(std::mem::replace(&mut bytes, b));
            mt = m;
        }
        if mt == media::DOCKER_SCHEMA1 || mt == media::DOCKER_SCHEMA1_SIGNED {
            return Err(EngineError::invalid(
                format!("manifest of {name}"),
                "Docker schema 1 manifests are not supported (deprecated since 2017)",
            ));
        }
        if !media::is_manifest(&mt) {
            return Err(EngineError::invalid(
                format!("manifest of {name}"),
                format!("unknown media type {mt:?}"),
            ));
        }
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::invalid(format!("manifest of {name}"), e.to_string()))?;
        check_config_type(&manifest, name)?;
        for l in &manifest.layers {
            Compression::from_media_type(&l.media_type).map_err(|e| EngineError::Layer {
                layer: l.digest.clone(),
                source: e.into(),
            })?;
            digest::sha256_hex(&l.digest).map_err(|e| EngineError::Layer {
                layer: l.digest.clone(),
                source: e.into(),
            })?;
        }
        progress.message("Getting image source signatures");
        let config_bytes = self
            .client
            .get_blob_bytes(repo, &manifest.config.digest, MAX_CONFIG_SIZE)
            .await?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| EngineError::invalid(format!("config of {name}"), e.to_string()))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(EngineError::invalid(
                format!("image {name}"),
                format!(
                    "the manifest has {} layers but the config lists {} diff IDs",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }

        let _content = self.store.content_lock()?;
        let chains = chain_ids(&config.rootfs.diff_ids);
        let jobs: Vec<LayerJob> = manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, desc)| LayerJob {
                desc: desc.clone(),
                diff_id: config.rootfs.diff_ids[i].clone(),
                chain_id: chains[i].clone(),
                parent: (i > 0).then(|| chains[i - 1].clone()),
            })
            .collect();
        self.fetch_layers(repo, &jobs, progress).await?;

        self.store
            .put_blob(&config_bytes, Some(&manifest.config.digest))?;
        progress.message(&format!(
            "Copying config {} done",
            &digest::sha256_hex(&manifest.config.digest)?[..10]
        ));
        progress.message("Writing manifest to image destination");
        let index_digest = match &index_bytes {
            Some(ib) => Some(self.store.put_blob(ib, Some(&first_digest))?),
            None => None,
        };
        let stored_name = match (&name.digest, &name.tag) {
            (Some(d), _) => format!("{}@{d}", name.repo_name()),
            (None, Some(t)) => format!("{}:{t}", name.repo_name()),
            (None, None) => format!("{}:latest", name.repo_name()),
        };
        self.commit_image(&bytes, &manifest, &config, vec![stored_name], index_digest)
    }

    /// Fetches and unpacks what the store lacks. Overlay layers are independent, so they
    /// stream straight into place in parallel; vfs layers build on their parent, so their
    /// blobs download in parallel and are applied in order afterwards.
    async fn fetch_layers(
        &self,
        repo: &Repo,
        jobs: &[LayerJob],
        progress: &dyn Progress,
    ) -> Result<(), EngineError> {
        let store = &self.store;
        let stream_unpack = store.whiteout_mode() != unpack::WhiteoutMode::Apply;
        futures_util::stream::iter(jobs.iter().map(Ok::<_, EngineError>))
            .try_for_each_concurrent(PARALLEL_LAYERS, |job| async move {
                let need_layer = !store.has_layer(&job.chain_id);
                let need_blob = !store.has_blob(&job.desc.digest);
                if !need_layer && !need_blob {
                    progress.blob_done(&job.desc.digest, true);
                    return Ok(());
                }
                let unpack_here = need_layer && stream_unpack;
                self.download_layer(repo, job, need_blob, unpack_here, progress)
                    .await
                    .map_err(|source| EngineError::Layer {
                        layer: job.desc.digest.clone(),
                        source,
                    })
            })
            .await?;
        if !stream_unpack {
            for job in jobs {
                if store.has_layer(&job.chain_id) {
                    continue;
                }
                let store = store.clone();
                let job2 = job.clone();
                tokio::task::spawn_blocking(move || apply_from_blob(&store, &job2))
                    .await
                    .map_err(|e| EngineError::invalid("unpacking", e.to_string()))?
                    .map_err(|source| EngineError::Layer {
                        layer: job.desc.digest.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    async fn download_layer(
        &self,
        repo: &Repo,
        job: &LayerJob,
        keep_blob: bool,
        unpack_now: bool,
        progress: &dyn Progress,
    ) -> Result<(), LayerError> {
        let resp = self.client.get_blob(repo, &job.desc.digest).await?;
        progress.blob_start(&job.desc.digest, Some(job.desc.size));
        let (tx, rx) = mpsc::channel::<io::Result<bytes_chunk::Chunk>>(32);
        let store = self.store.clone();
        let job2 = job.clone();
        let worker = tokio::task::spawn_blocking(move || {
            let blob = if keep_blob {
                Some(store.blob_writer()?)
            } else {
                None
            };
            let mut src = ChannelSource {
                rx,
                cur: Default::default(),
                pos: 0,
                hasher: Hasher::default(),
                blob,
            };
            if unpack_now {
                let c = Compression::from_media_type(&job2.desc.media_type)?;
                unpack_into_store(&store, &job2, c, &mut src)?;
            }
            io::copy(&mut src, &mut io::sink())
                .map_err(|e| LayerError::Other(format!("reading: {e}")))?;
            src.finish(&job2.desc)
        });
        let mut stream = resp.bytes_stream();
        let mut send_err = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    progress.blob_advance(&job.desc.digest, b.len() as u64);
                    if tx.send(Ok(bytes_chunk::Chunk(b))).await.is_err() {
                        break; // the worker stopped early; its error says why
                    }
                }
                Err(e) => {
                    let msg = crate::registry::client::error_chain(&e);
                    send_err = Some(msg.clone());
                    let _ = tx.send(Err(io::Error::other(msg))).await;
                    break;
                }
            }
        }
        drop(tx);
        let res = worker.await.map_err(|e| LayerError::Other(e.to_string()))?;
        if let (Err(_), Some(msg)) = (&res, send_err) {
            return Err(LayerError::Registry(RegistryError::Transfer {
                what: format!("fetching blob {}", job.desc.digest),
                detail: msg,
            }));
        }
        res?;
        progress.blob_done(&job.desc.digest, false);
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LayerJob {
    pub desc: Descriptor,
    pub diff_id: String,
    pub chain_id: String,
    pub parent: Option<String>,
}

fn check_config_type(m: &Manifest, name: &Reference) -> Result<(), EngineError> {
    let mt = m.config.media_type.as_str();
    if mt == media::OCI_CONFIG || mt == media::DOCKER_CONFIG {
        Ok(())
    } else {
        Err(EngineError::invalid(
            format!("image {name}"),
            format!("unknown config media type {mt:?}: not a container image"),
        ))
    }
}

fn choose<'a>(index: &'a Index, p: &Platform) -> Option<&'a Descriptor> {
    let candidates = index.manifests.iter().filter(|d| {
        d.platform
            .as_ref()
            .is_some_and(|pl| p.matches(&pl.os, &pl.architecture, pl.variant.as_deref()))
    });
    // An exact variant match beats an entry that names none.
    let mut best = None;
    for d in candidates {
        let v = d.platform.as_ref().and_then(|pl| pl.variant.clone());
        if v.is_some() && v == p.variant {
            return Some(d);
        }
        best.get_or_insert(d);
    }
    best
}

/// Unpacks a (compressed) layer stream into a fresh layer directory, checks its diff ID
/// and commits it.
pub(crate) fn unpack_into_store(
    store: &Store,
    job: &LayerJob,
    c: Compression,
    src: &mut dyn Read,
) -> Result<(), LayerError> {
    let tmp = store.new_layer_tmp()?;
    if let Some(parent) = &job.parent
        && store.whiteout_mode() == unpack::WhiteoutMode::Apply
    {
        copy_tree(&store.layer_diff(parent)?, &tmp.path().join("diff"))?;
    }
    let decoder = c.decoder(src).map_err(LayerError::Decompress)?;
    let mut diff = HashingReader::new(decoder);
    let opts = UnpackOptions {
        whiteouts: store.whiteout_mode(),
        rootless: store.rootless(),
    };
    match unpack::unpack(&mut diff, &tmp.path().join("diff"), opts) {
        Ok(_) => {}
        Err(unpack::UnpackError::Tar(e)) => return Err(LayerError::Decompress(e)),
        Err(e) => return Err(e.into()),
    };
    let (diff_id, diff_len, _) = diff.finish().map_err(LayerError::Decompress)?;
    if diff_id != job.diff_id {
        return Err(DigestError::Mismatch {
            what: "uncompressed layer (diff ID)".into(),
            expected: job.diff_id.clone(),
            actual: diff_id,
        }
        .into());
    }
    store.commit_layer(
        tmp,
        &LayerRecord {
            chain_id: job.chain_id.clone(),
            diff_id: job.diff_id.clone(),
            parent: job.parent.clone(),
            size: diff_len,
            compressed_digest: Some(job.desc.digest.clone()),
            media_type: Some(job.desc.media_type.clone()),
        },
    )?;
    Ok(())
}

/// Applies a stored blob as a layer (vfs, load, import).
pub(crate) fn apply_from_blob(store: &Store, job: &LayerJob) -> Result<(), LayerError> {
    let path = store.blob_path(&job.desc.digest)?;
    let f = std::fs::File::open(&path)
        .map_err(|e| LayerError::Other(format!("opening {}: {e}", path.display())))?;
    let c = if job.desc.media_type.is_empty() {
        let mut head = [0u8; 4];
        let n = std::fs::File::open(&path)
            .and_then(|mut f| f.read(&mut head))
            .unwrap_or(0);
        Compression::sniff(&head[..n])
    } else {
        Compression::from_media_type(&job.desc.media_type)?
    };
    unpack_into_store(
        store,
        job,
        c,
        &mut io::BufReader::with_capacity(256 * 1024, f),
    )
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<(), LayerError> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .map_err(|e| LayerError::Other(format!("running cp: {e}")))?;
    if !out.status.success() {
        return Err(LayerError::Other(format!(
            "copying parent layer {}: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

mod bytes_chunk {
    /// A downloaded chunk, passed from the network task to the unpacking thread.
    pub struct Chunk(pub bytes::Bytes);
}

/// The blocking end of a download: hands out the compressed bytes, hashing them and
/// copying them into a blob file on the way.
struct ChannelSource {
    rx: mpsc::Receiver<io::Result<bytes_chunk::Chunk>>,
    cur: bytes::Bytes,
    pos: usize,
    hasher: Hasher,
    blob: Option<BlobWriter>,
}

impl Read for ChannelSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(c)) => {
                    self.hasher.update(&c.0);
                    if let Some(b) = &mut self.blob {
                        b.write_all(&c.0)?;
                    }
                    self.cur = c.0;
                    self.pos = 0;
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ChannelSource {
    fn finish(self, desc: &Descriptor) -> Result<(), LayerError> {
        let len = self.hasher.len();
        let actual = self.hasher.finish();
        if actual != desc.digest {
            return Err(DigestError::Mismatch {
                what: format!("blob {}", desc.digest),
                expected: desc.digest.clone(),
                actual,
            }
            .into());
        }
        if len != desc.size {
            return Err(LayerError::Other(format!(
                "blob {} is {len} bytes, but the manifest says {}",
                desc.digest, desc.size
            )));
        }
        if let Some(b) = self.blob {
            b.commit(Some(&desc.digest))?;
        }
        Ok(())
    }
}
