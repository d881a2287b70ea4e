//! The on-disk store under `--root`: content-addressed blobs, unpacked layers keyed by
//! chain ID (each unpacked once and shared by every image that uses it), and the image
//! index keyed by config digest. The layout is documented in docs/internals.md.
//!
//! Concurrency: every process that adds content holds `content.lock` shared for as long
//! as it works; garbage collection takes it exclusively and simply skips when it cannot
//! (the next removal collects). `images.lock` serialises read-modify-write of
//! `images.json`, which is always replaced by an atomic rename, so readers never lock.
//! New blobs and layers are built under `tmp/` and renamed into place, so a process
//! killed at any point leaves nothing half-visible.

pub(crate) mod copy;
pub mod lock;

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{self, DigestError, HashingWriter};
use crate::layer::unpack::WhiteoutMode;
use lock::FileLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Overlay,
    Vfs,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlay",
            Driver::Vfs => "vfs",
        }
    }
}

impl std::str::FromStr for Driver {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        match s {
            "overlay" | "overlay2" => Ok(Driver::Overlay),
            "vfs" => Ok(Driver::Vfs),
            other => Err(StoreError::UnknownDriver(other.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unknown storage driver {0:?} (known: overlay, vfs)")]
    UnknownDriver(String),
    #[error("store {root} was created with storage driver {stored:?}, not {asked:?}")]
    DriverMismatch {
        root: PathBuf,
        stored: String,
        asked: String,
    },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt store file {path}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("blob {0} is not in the store")]
    MissingBlob(String),
}

impl StoreError {
    pub fn hint(&self) -> Option<String> {
        match self {
            StoreError::DriverMismatch { stored, .. } => Some(format!(
                "pass --storage-driver {stored}, or use another --root for the other driver"
            )),
            _ => None,
        }
    }
}

pub(crate) fn io_at(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// One image in the index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest's hex: the image ID.
    pub id: String,
    /// Fully qualified names: `registry/repo:tag` (or `registry/repo@digest`).
    #[serde(default)]
    pub names: Vec<String>,
    /// The digest of the manifest the image was pulled or loaded by (an index's when it
    /// came through one).
    pub digest: String,
    /// Every manifest digest known to describe this image.
    #[serde(default)]
    pub digests: Vec<String>,
    pub manifest_digest: String,
    pub config_digest: String,
    /// Layer chain IDs, bottom first.
    #[serde(default)]
    pub layers: Vec<String>,
    /// Every blob the image keeps alive (manifests, config, compressed layers).
    #[serde(default)]
    pub blobs: Vec<String>,
    /// Uncompressed size of all layers in bytes.
    pub size: u64,
    pub created: Option<String>,
    /// When the image entered this store (RFC 3339).
    pub added: String,
}

impl ImageRecord {
    /// `repo@digest` for every repository the image is named in.
    pub fn repo_digests(&self) -> Vec<String> {
        let mut repos: Vec<String> = Vec::new();
        for n in &self.names {
            let repo = split_name(n).0.to_string();
            if !repos.contains(&repo) {
                repos.push(repo);
            }
        }
        let mut out = Vec::new();
        for r in &repos {
            for d in &self.digests {
                let s = format!("{r}@{d}");
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Names carrying a tag (not a digest).
    pub fn repo_tags(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|n| split_name(n).1.is_some())
            .cloned()
            .collect()
    }
}

/// Splits a stored name into repository, tag and digest.
pub fn split_name(name: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

/// A layer's metadata, next to its unpacked tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub chain_id: String,
    pub diff_id: String,
    pub parent: Option<String>,
    /// Bytes of the uncompressed layer tarball (what Podman reports as its size).
    pub size: u64,
    pub compressed_digest: Option<String>,
    pub media_type: Option<String>,
}

/// Chain IDs from diff IDs, as the OCI image spec defines them.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => digest::sha256_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub driver: Option<Driver>,
    pub rootless: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoreMeta {
    driver: Driver,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    runroot: PathBuf,
    driver: Driver,
    rootless: bool,
}

impl Store {
    /// Opens (creating when new) the store at `opts.root`.
    pub fn open(opts: StoreOptions) -> Result<Store, StoreError> {
        for d in [
            opts.root.clone(),
            opts.root.join("blobs/sha256"),
            opts.root.join("tmp"),
            opts.runroot.clone(),
        ] {
            fs::create_dir_all(&d).map_err(io_at("creating", &d))?;
        }
        let meta_path = opts.root.join("storage.json");
        let stored = match fs::read(&meta_path) {
            Ok(b) => Some(
                serde_json::from_slice::<StoreMeta>(&b)
                    .map_err(|source| StoreError::Corrupt {
                        path: meta_path.clone(),
                        source,
                    })?
                    .driver,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_at("reading", &meta_path)(e)),
        };
        let driver = match (stored, opts.driver) {
            (Some(s), Some(a)) if s != a => {
                return Err(StoreError::DriverMismatch {
                    root: opts.root,
                    stored: s.name().into(),
                    asked: a.name().into(),
                });
            }
            (Some(s), _) => s,
            (None, asked) => {
                let d = asked.unwrap_or(Driver::Overlay);
                let store_meta = StoreMeta { driver: d };
                write_atomic(
                    &opts.root,
                    &meta_path,
                    &serde_json::to_vec_pretty(&store_meta).expect("serialisable"),
                )?;
                d
            }
        };
        let layers = opts.root.join("layers").join(driver.name());
        fs::create_dir_all(&layers).map_err(io_at("creating", &layers))?;
        Ok(Store {
            root: opts.root,
            runroot: opts.runroot,
            driver,
            rootless: opts.rootless,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn runroot(&self) -> &Path {
        &self.runroot
    }
    pub fn driver(&self) -> Driver {
        self.driver
    }
    pub fn rootless(&self) -> bool {
        self.rootless
    }

    /// How layer whiteouts are stored for this store's driver.
    pub fn whiteout_mode(&self) -> WhiteoutMode {
        match (self.driver, self.rootless) {
            (Driver::Vfs, _) => WhiteoutMode::Apply,
            (Driver::Overlay, false) => WhiteoutMode::Overlay {
                xattr_prefix: "trusted.",
            },
            (Driver::Overlay, true) => WhiteoutMode::Overlay {
                xattr_prefix: "user.",
            },
        }
    }

    /// Held (shared) by every process adding content; see the module comment.
    pub fn content_lock(&self) -> Result<FileLock, StoreError> {
        let p = self.root.join("content.lock");
        FileLock::shared(&p).map_err(io_at("locking", &p))
    }

    // ---- blobs ----

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self
            .root
            .join("blobs/sha256")
            .join(digest::sha256_hex(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.exists()).unwrap_or(false)
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(digest)?;
        match fs::read(&p) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::MissingBlob(digest.to_string()))
            }
            Err(e) => Err(io_at("reading", &p)(e)),
        }
    }

    /// Stores `bytes`, checking them against `expected` when given; returns the digest.
    pub fn put_blob(&self, bytes: &[u8], expected: Option<&str>) -> Result<String, StoreError> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(io_at("writing", &w.path))?;
        w.commit(expected)
    }

    /// A writer into `tmp/` that becomes a blob on `commit`.
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let tmp = self.tmp_dir();
        let f = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp)
            .map_err(io_at("creating a file in", &tmp))?;
        let path = f.path().to_path_buf();
        Ok(BlobWriter {
            inner: HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, f)),
            path,
            blobs: self.root.join("blobs/sha256"),
        })
    }

    // ---- layers ----

    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers").join(self.driver.name())
    }

    pub fn layer_dir(&self, chain_id: &str) -> Result<PathBuf, StoreError> {
        Ok(self.layers_dir().join(digest::sha256_hex(chain_id)?))
    }

    /// The unpacked tree of a layer.
    pub fn layer_diff(&self, chain_id: &str) -> Result<PathBuf, StoreError> {
        Ok(self.layer_dir(chain_id)?.join("diff"))
    }

    pub fn has_layer(&self, chain_id: &str) -> bool {
        self.layer_dir(chain_id)
            .map(|d| d.join("layer.json").exists())
            .unwrap_or(false)
    }

    pub fn layer_record(&self, chain_id: &str) -> Result<LayerRecord, StoreError> {
        let p = self.layer_dir(chain_id)?.join("layer.json");
        let b = fs::read(&p).map_err(io_at("reading", &p))?;
        serde_json::from_slice(&b).map_err(|source| StoreError::Corrupt { path: p, source })
    }

    /// A fresh directory under `tmp/` to unpack a layer into; its `diff/` exists.
    pub fn new_layer_tmp(&self) -> Result<tempfile::TempDir, StoreError> {
        let tmp = self.tmp_dir();
        let t = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(&tmp)
            .map_err(io_at("creating a directory in", &tmp))?;
        let diff = t.path().join("diff");
        fs::create_dir(&diff).map_err(io_at("creating", &diff))?;
        Ok(t)
    }

    /// Moves an unpacked layer into place. Another process may have committed the same
    /// layer first; then ours is dropped and theirs kept.
    pub fn commit_layer(
        &self,
        tmp: tempfile::TempDir,
        rec: &LayerRecord,
    ) -> Result<(), StoreError> {
        let meta = tmp.path().join("layer.json");
        fs::write(&meta, serde_json::to_vec_pretty(rec).expect("serialisable"))
            .map_err(io_at("writing", &meta))?;
        let dest = self.layer_dir(&rec.chain_id)?;
        let path = tmp.keep();
        match fs::rename(&path, &dest) {
            Ok(()) => Ok(()),
            Err(e) if dest.join("layer.json").exists() => {
                tracing::debug!("layer {} committed concurrently ({e})", rec.chain_id);
                remove_tree(&path);
                Ok(())
            }
            Err(e) => {
                remove_tree(&path);
                Err(io_at("moving a layer to", &dest)(e))
            }
        }
    }

    // ---- images ----

    fn images_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    /// The image index as last written.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let p = self.images_path();
        match fs::read(&p) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|source| StoreError::Corrupt { path: p, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_at("reading", &p)(e)),
        }
    }

    /// Read-modify-write of the index under `images.lock`; `f`'s error leaves it as it was.
    pub fn update_images<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Vec<ImageRecord>) -> Result<T, E>,
    ) -> Result<T, E> {
        let lp = self.root.join("images.lock");
        let _lock = FileLock::exclusive(&lp).map_err(io_at("locking", &lp))?;
        let mut images = self.images()?;
        let out = f(&mut images)?;
        let bytes = serde_json::to_vec_pretty(&images).expect("serialisable");
        write_atomic(&self.tmp_dir(), &self.images_path(), &bytes)?;
        Ok(out)
    }

    /// Adds or updates an image and moves its names away from any other image.
    pub fn add_image(&self, mut rec: ImageRecord) -> Result<ImageRecord, StoreError> {
        self.update_images(|images| {
            for other in images.iter_mut() {
                if other.id != rec.id {
                    other.names.retain(|n| !rec.names.contains(n));
                }
            }
            if let Some(existing) = images.iter_mut().find(|i| i.id == rec.id) {
                for n in rec.names.drain(..) {
                    if !existing.names.contains(&n) {
                        existing.names.insert(0, n);
                    }
                }
                for d in &rec.digests {
                    if !existing.digests.contains(d) {
                        existing.digests.push(d.clone());
                    }
                }
                for b in &rec.blobs {
                    if !existing.blobs.contains(b) {
                        existing.blobs.push(b.clone());
                    }
                }
                existing.digest = rec.digest.clone();
                Ok::<_, StoreError>(existing.clone())
            } else {
                images.push(rec.clone());
                Ok(rec)
            }
        })
    }

    // ---- garbage ----

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Removes layers and blobs no image refers to, and leftovers of killed processes.
    /// Skips (returning false) when another process is adding content.
    pub fn gc(&self) -> Result<bool, StoreError> {
        let lp = self.root.join("content.lock");
        let Some(_lock) = FileLock::try_exclusive(&lp).map_err(io_at("locking", &lp))? else {
            tracing::debug!("store busy: garbage collection skipped");
            return Ok(false);
        };
        let images = self.images()?;
        let mut live_layers: HashSet<String> = HashSet::new();
        let mut live_blobs: HashSet<String> = HashSet::new();
        for i in &images {
            for l in &i.layers {
                live_layers.insert(digest::sha256_hex(l)?.to_string());
            }
            for b in &i.blobs {
                live_blobs.insert(digest::sha256_hex(b)?.to_string());
            }
        }
        let tmp = self.tmp_dir();
        for e in fs::read_dir(&tmp)
            .map_err(io_at("reading", &tmp))?
            .flatten()
        {
            remove_tree(&e.path());
        }
        let layers = self.layers_dir();
        for e in fs::read_dir(&layers)
            .map_err(io_at("reading", &layers))?
            .flatten()
        {
            if !live_layers.contains(&*e.file_name().to_string_lossy()) {
                // Rename first so a half-deleted layer is never seen as present.
                let doomed = tmp.join(format!("gc-{}", e.file_name().to_string_lossy()));
                if fs::rename(e.path(), &doomed).is_ok() {
                    remove_tree(&doomed);
                }
            }
        }
        let blobs = self.root.join("blobs/sha256");
        for e in fs::read_dir(&blobs)
            .map_err(io_at("reading", &blobs))?
            .flatten()
        {
            if !live_blobs.contains(&*e.file_name().to_string_lossy()) {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(true)
    }
}

/// A blob being written; dropped without `commit`, it leaves nothing behind.
pub struct BlobWriter {
    inner: HashingWriter<io::BufWriter<tempfile::NamedTempFile>>,
    path: PathBuf,
    blobs: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl BlobWriter {
    /// Checks the digest and moves the blob into place; returns its digest.
    pub fn commit(self, expected: Option<&str>) -> Result<String, StoreError> {
        let (actual, _len, buf) = self.inner.finish();
        if let Some(exp) = expected {
            digest::sha256_hex(exp)?;
            if exp != actual {
                return Err(DigestError::Mismatch {
                    what: format!("blob {exp}"),
                    expected: exp.to_string(),
                    actual,
                }
                .into());
            }
        }
        let file = buf
            .into_inner()
            .map_err(|e| io_at("writing", &self.path)(e.into_error()))?;
        let dest = self.blobs.join(digest::sha256_hex(&actual)?);
        file.persist(&dest)
            .map_err(|e| io_at("storing blob", &dest)(e.error))?;
        Ok(actual)
    }
}

/// Writes `bytes` to `dest` through a temporary file in `tmp_dir` and a rename.
pub fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(tmp_dir)
        .map_err(io_at("creating a file in", tmp_dir))?;
    f.write_all(bytes).map_err(io_at("writing", f.path()))?;
    f.persist(dest)
        .map_err(|e| io_at("replacing", dest)(e.error))?;
    Ok(())
}

/// Best-effort removal, making read-only directories writable first.
pub fn remove_tree(path: &Path) {
    match fs::symlink_metadata(path) {
        Err(_) => return,
        Ok(m) if !m.is_dir() => {
            let _ = fs::remove_file(path);
            return;
        }
        Ok(_) => {}
    }
    if fs::remove_dir_all(path).is_ok() {
        return;
    }
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+rwx"])
        .arg(path)
        .status();
    let _ = fs::remove_dir_all(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(t: &tempfile::TempDir, driver: Option<Driver>) -> Result<Store, StoreError> {
        Store::open(StoreOptions {
            root: t.path().join("root"),
            runroot: t.path().join("run"),
            driver,
            rootless: false,
        })
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = digest::sha256_of(b"a");
        let b = digest::sha256_of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], digest::sha256_of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn split_names() {
        assert_eq!(
            split_name("localhost:5000/a/b:v1"),
            ("localhost:5000/a/b", Some("v1"), None)
        );
        assert_eq!(
            split_name("localhost:5000/a/b"),
            ("localhost:5000/a/b", None, None)
        );
        assert_eq!(
            split_name("docker.io/library/x@sha256:ab"),
            ("docker.io/library/x", None, Some("sha256:ab"))
        );
    }

    #[test]
    fn blob_digest_mismatch_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let s = store(&t, None).unwrap();
        let wrong = digest::sha256_of(b"other");
        let err = s.put_blob(b"content", Some(&wrong)).unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        assert!(!s.has_blob(&wrong));
        assert_eq!(fs::read_dir(t.path().join("root/tmp")).unwrap().count(), 0);
        let d = s.put_blob(b"content", None).unwrap();
        assert_eq!(s.read_blob(&d).unwrap(), b"content");
    }

    #[test]
    fn driver_is_recorded_and_checked() {
        let t = tempfile::tempdir().unwrap();
        store(&t, Some(Driver::Vfs)).unwrap();
        assert_eq!(store(&t, None).unwrap().driver(), Driver::Vfs);
        let err = store(&t, Some(Driver::Overlay)).unwrap_err();
        assert!(err.hint().unwrap().contains("--storage-driver vfs"));
    }

    #[test]
    fn names_move_between_images_and_gc_collects() {
        let t = tempfile::tempdir().unwrap();
        let s = store(&t, Some(Driver::Vfs)).unwrap();
        let blob = s.put_blob(b"cfg1", None).unwrap();
        let a = ImageRecord {
            id: "a".into(),
            names: vec!["localhost/x:1".into()],
            blobs: vec![blob.clone()],
            ..Default::default()
        };
        s.add_image(a).unwrap();
        let b = ImageRecord {
            id: "b".into(),
            names: vec!["localhost/x:1".into()],
            ..Default::default()
        };
        s.add_image(b).unwrap();
        let imgs = s.images().unwrap();
        assert!(imgs.iter().find(|i| i.id == "a").unwrap().names.is_empty());
        s.update_images(|imgs| {
            imgs.retain(|i| i.id != "a");
            Ok::<_, StoreError>(())
        })
        .unwrap();
        assert!(s.has_blob(&blob));
        assert!(s.gc().unwrap());
        assert!(!s.has_blob(&blob));
    }

    #[test]
    fn gc_skips_while_content_is_added() {
        let t = tempfile::tempdir().unwrap();
        let s = store(&t, None).unwrap();
        let blob = s.put_blob(b"orphan", None).unwrap();
        let held = s.content_lock().unwrap();
        assert!(!s.gc().unwrap());
        assert!(s.has_blob(&blob));
        drop(held);
        assert!(s.gc().unwrap());
    }
}
