//! Guest images (machine contract, point 1): a directory `capsa-guest-<version>-<arch>/`
//! with vmlinuz, initrd.img, rootfs.img and manifest.json, or an uncompressed tar of it.
//! Every file is checked against the manifest's sha256 before a machine uses it; the
//! machine then keeps its own copy (a hard link when the file system allows).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Files every image has.
pub const REQUIRED: [&str; 3] = ["vmlinuz", "initrd.img", "rootfs.img"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub arch: String,
    #[serde(default)]
    pub cmdline: String,
    /// File name → `sha256:<hex>`.
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("guest image {0} does not exist")]
    Missing(String),
    #[error("guest image {path} has no manifest.json")]
    NoManifest { path: String },
    #[error("guest image manifest {path} is invalid: {reason}")]
    BadManifest { path: String, reason: String },
    #[error("guest image {image}: {file} is missing")]
    MissingFile { image: String, file: String },
    #[error("guest image {image}: {file} is corrupt: sha256 {actual}, manifest says {expected}")]
    Corrupt {
        image: String,
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ImageError::Missing(_) => Some(
                "give --image a guest image directory, its .tar, or an http(s) URL (scripts/build-guest-image.sh builds one)".into(),
            ),
            ImageError::Corrupt { .. } | ImageError::MissingFile { .. } => {
                Some("fetch or build the image again".into())
            }
            _ => None,
        }
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

pub fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut f = fs::File::open(path).map_err(io_err("reading", path))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(io_err("reading", path))?;
    Ok(hex::encode(h.finalize()))
}

pub fn read_manifest(dir: &Path) -> Result<Manifest, ImageError> {
    let path = dir.join("manifest.json");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ImageError::NoManifest {
                path: dir.display().to_string(),
            });
        }
        Err(e) => return Err(io_err("reading", &path)(e)),
    };
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| ImageError::BadManifest {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    for f in REQUIRED {
        if !m.files.contains_key(f) {
            return Err(ImageError::BadManifest {
                path: path.display().to_string(),
                reason: format!("files has no {f}"),
            });
        }
    }
    for name in m.files.keys() {
        if name.contains('/') || name.starts_with('.') {
            return Err(ImageError::BadManifest {
                path: path.display().to_string(),
                reason: format!("file name {name:?} is not a plain name"),
            });
        }
    }
    Ok(m)
}

/// Checks every file of the image in `dir` against its manifest.
pub fn verify_dir(dir: &Path) -> Result<Manifest, ImageError> {
    let m = read_manifest(dir)?;
    for (name, digest) in &m.files {
        let p = dir.join(name);
        if !p.is_file() {
            return Err(ImageError::MissingFile {
                image: dir.display().to_string(),
                file: name.clone(),
            });
        }
        let expected = digest
            .strip_prefix("sha256:")
            .unwrap_or(digest)
            .to_ascii_lowercase();
        let actual = sha256_file(&p)?;
        if actual != expected {
            return Err(ImageError::Corrupt {
                image: dir.display().to_string(),
                file: name.clone(),
                expected,
                actual,
            });
        }
    }
    Ok(m)
}

/// Installs the image at `source` (directory or tar) as `dest`, verified.
pub fn install(source: &Path, dest: &Path, _cache: &Path) -> Result<Manifest, ImageError> {
    let meta =
        fs::metadata(source).map_err(|_| ImageError::Missing(source.display().to_string()))?;
    if meta.is_dir() {
        let m = verify_dir(source)?;
        fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
        let mut names: Vec<&String> = m.files.keys().collect();
        let manifest = "manifest.json".to_string();
        names.push(&manifest);
        for name in names {
            link_or_copy(&source.join(name), &dest.join(name))?;
        }
        return Ok(m);
    }
    let tmp = dest.with_extension("unpack");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
    let r = (|| {
        let f = fs::File::open(source).map_err(io_err("reading", source))?;
        let mut ar = tar::Archive::new(f);
        for entry in ar.entries().map_err(io_err("reading tar", source))? {
            let mut entry = entry.map_err(io_err("reading tar", source))?;
            entry.unpack_in(&tmp).map_err(io_err("unpacking", source))?;
        }
        let root = image_root(&tmp).ok_or_else(|| ImageError::NoManifest {
            path: source.display().to_string(),
        })?;
        let m = verify_dir(&root)?;
        fs::rename(&root, dest).map_err(io_err("moving", dest))?;
        Ok(m)
    })();
    let _ = fs::remove_dir_all(&tmp);
    r
}

/// The directory holding manifest.json: the tar's root or its single top folder.
fn image_root(dir: &Path) -> Option<PathBuf> {
    if dir.join("manifest.json").is_file() {
        return Some(dir.to_path_buf());
    }
    let subs: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    match subs.as_slice() {
        [one] if one.join("manifest.json").is_file() => Some(one.clone()),
        _ => None,
    }
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), ImageError> {
    let _ = fs::remove_file(to);
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to)
        .map(drop)
        .map_err(io_err("copying", from))
}

/// Writes an image directory from files in memory: for tests, here and in the CLI.
pub fn write_test_image(
    dir: &Path,
    version: &str,
    arch: &str,
    cmdline: &str,
    files: &[(&str, &[u8])],
) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut map = BTreeMap::new();
    for (name, data) in files {
        fs::write(dir.join(name), data)?;
        map.insert(
            name.to_string(),
            format!("sha256:{}", hex::encode(Sha256::digest(data))),
        );
    }
    let m = Manifest {
        name: "capsa-guest".into(),
        version: version.into(),
        arch: arch.into(),
        cmdline: cmdline.into(),
        files: map,
    };
    fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&m).expect("manifest serializes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) {
        write_test_image(
            dir,
            "0.1.0",
            "x86_64",
            "quiet",
            &[
                ("vmlinuz", b"kernel"),
                ("initrd.img", b"initrd"),
                ("rootfs.img", b"root"),
            ],
        )
        .unwrap();
    }

    #[test]
    fn installs_a_directory_and_a_tar() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("capsa-guest-0.1.0-x86_64");
        sample(&src);
        let m = install(&src, &d.path().join("m1/image"), d.path()).unwrap();
        assert_eq!((m.version.as_str(), m.arch.as_str()), ("0.1.0", "x86_64"));
        assert_eq!(
            fs::read(d.path().join("m1/image/rootfs.img")).unwrap(),
            b"root"
        );

        let tar_path = d.path().join("img.tar");
        let mut b = tar::Builder::new(fs::File::create(&tar_path).unwrap());
        b.append_dir_all("capsa-guest-0.1.0-x86_64", &src).unwrap();
        b.finish().unwrap();
        drop(b);
        fs::create_dir_all(d.path().join("m2")).unwrap();
        let m2 = install(&tar_path, &d.path().join("m2/image"), d.path()).unwrap();
        assert_eq!(m2, m);
        assert!(d.path().join("m2/image/manifest.json").is_file());
        assert!(!d.path().join("m2/image.unpack").exists());
    }

    #[test]
    fn corrupt_and_missing_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("img");
        sample(&src);
        fs::write(src.join("initrd.img"), b"tampered").unwrap();
        let e = install(&src, &d.path().join("out"), d.path()).unwrap_err();
        assert!(
            matches!(&e, ImageError::Corrupt { file, .. } if file == "initrd.img"),
            "{e}"
        );
        assert!(e.to_string().contains("initrd.img is corrupt"), "{e}");
        fs::remove_file(src.join("initrd.img")).unwrap();
        let e = install(&src, &d.path().join("out"), d.path()).unwrap_err();
        assert!(e.to_string().ends_with("initrd.img is missing"), "{e}");
        let e = install(&d.path().join("nope"), &d.path().join("out"), d.path()).unwrap_err();
        assert!(matches!(e, ImageError::Missing(_)));
        assert!(e.hint().is_some());
    }
}
