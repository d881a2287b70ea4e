//! `import`: a root filesystem tarball (file, URL or stdin) becomes a one-layer image,
//! with Dockerfile-style `--change` instructions applied to its config.

use std::io::{self, Read};
use std::path::Path;

use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::manifest::{Descriptor, History, ImageConfig, Manifest, RootFs};
use super::platform::Platform;
use super::progress::Progress;
use crate::digest::HashingReader;
use crate::engine::{Engine, EngineError};
use crate::layer::compression::{Compression, sniffing_decoder};
use crate::registry::media;
use crate::store::ImageRecord;

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub reference: Option<String>,
    pub changes: Vec<String>,
    pub message: Option<String>,
    pub os: Option<String>,
    pub arch: Option<String>,
}

impl Engine {
    pub async fn import(
        &self,
        source: &str,
        opts: &ImportOptions,
        progress: &dyn Progress,
    ) -> Result<ImageRecord, EngineError> {
        let mut config_obj = Map::new();
        for c in &opts.changes {
            apply_change(&mut config_obj, c)?;
        }
        let name = match &opts.reference {
            Some(r) => Some(super::ops::normalize_tag(r)?),
            None => None,
        };
        let _content = self.store.content_lock()?;
        let tmp_dir = self.store.root().join("tmp");
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(EngineError::io("creating a temporary file"))?;
        if source.starts_with("http://") || source.starts_with("https://") {
            progress.message(&format!("Downloading from {source}"));
            let resp = reqwest::get(source).await.map_err(|e| {
                EngineError::invalid(
                    format!("downloading {source}"),
                    crate::registry::client::error_chain(&e),
                )
            })?;
            if !resp.status().is_success() {
                return Err(EngineError::invalid(
                    format!("downloading {source}"),
                    format!("server answered {}", resp.status()),
                ));
            }
            let mut s = resp.bytes_stream();
            while let Some(chunk) = s.next().await {
                let chunk = chunk.map_err(|e| {
                    EngineError::invalid(
                        format!("downloading {source}"),
                        crate::registry::client::error_chain(&e),
                    )
                })?;
                io::Write::write_all(&mut tmp, &chunk)
                    .map_err(EngineError::io("writing the download"))?;
            }
        } else if source == "-" {
            io::copy(&mut io::stdin().lock(), &mut tmp)
                .map_err(EngineError::io("reading stdin"))?;
        } else {
            let mut f = std::fs::File::open(source)
                .map_err(EngineError::io(format!("opening {source}")))?;
            io::copy(&mut f, &mut tmp).map_err(EngineError::io(format!("reading {source}")))?;
        }
        // The diff ID is the digest of the uncompressed tarball; check it is one.
        let path = tmp.path().to_path_buf();
        let (diff_id, compression) = tokio::task::spawn_blocking(move || diff_id_of(&path))
            .await
            .map_err(|e| EngineError::invalid("import", e.to_string()))??;
        let (layer_digest, layer_size) = self.store_file_blob(tmp.path())?;
        progress.blob_done(&layer_digest, false);
        let host = Platform::host();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let config = ImageConfig {
            created: Some(now.clone()),
            author: None,
            architecture: opts.arch.clone().unwrap_or(host.arch),
            os: opts.os.clone().unwrap_or(host.os),
            variant: None,
            config: Some(Value::Object(config_obj)),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![diff_id],
            },
            history: vec![History {
                created: Some(now),
                created_by: Some(format!(
                    "/bin/sh -c #(nop) ADD file:{} in / ",
                    source.rsplit('/').next().unwrap_or(source)
                )),
                comment: opts.message.clone(),
                ..Default::default()
            }],
            extra: Default::default(),
        };
        let cfg_bytes = serde_json::to_vec(&config).expect("serialisable");
        let cfg_digest = self.store.put_blob(&cfg_bytes, None)?;
        let layer_mt = match compression {
            Compression::Gzip => media::OCI_LAYER_GZIP,
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config: Descriptor {
                media_type: media::OCI_CONFIG.into(),
                digest: cfg_digest,
                size: cfg_bytes.len() as u64,
                platform: None,
                annotations: None,
                urls: None,
            },
            layers: vec![Descriptor {
                media_type: layer_mt.into(),
                digest: layer_digest,
                size: layer_size,
                platform: None,
                annotations: None,
                urls: None,
            }],
            annotations: None,
        };
        progress.message("Writing manifest to image destination");
        let manifest_bytes = serde_json::to_vec(&manifest).expect("serialisable");
        self.commit_image(
            &manifest_bytes,
            &manifest,
            &config,
            name.into_iter().collect(),
            None,
        )
    }
}

fn diff_id_of(path: &Path) -> Result<(String, Compression), EngineError> {
    let mut f = std::fs::File::open(path).map_err(EngineError::io("reading the tarball"))?;
    let mut head = [0u8; 4];
    let n = f
        .read(&mut head)
        .map_err(EngineError::io("reading the tarball"))?;
    let compression = Compression::sniff(&head[..n]);
    let f = std::fs::File::open(path).map_err(EngineError::io("reading the tarball"))?;
    let dec = sniffing_decoder(f).map_err(EngineError::io("reading the tarball"))?;
    let mut hr = HashingReader::new(dec);
    // Walk the entries so a file that is not a tarball is refused here.
    {
        let mut ar = tar::Archive::new(&mut hr);
        let entries = ar
            .entries()
            .map_err(|e| EngineError::invalid("import", format!("not a tar archive: {e}")))?;
        let mut count = 0;
        for e in entries {
            e.map_err(|e| EngineError::invalid("import", format!("not a valid tar archive: {e}")))?;
            count += 1;
        }
        if count == 0 {
            return Err(EngineError::invalid(
                "import",
                "the tarball is empty or not a tar archive",
            ));
        }
    }
    let (d, _, _) = hr
        .finish()
        .map_err(EngineError::io("reading the tarball"))?;
    Ok((d, compression))
}

/// Applies one `--change` instruction (`CMD ["sh"]`, `ENV A=b`, `CMD=sh`, …).
pub fn apply_change(cfg: &mut Map<String, Value>, change: &str) -> Result<(), EngineError> {
    let change = change.trim();
    let split = change
        .find([' ', '='])
        .ok_or_else(|| bad(change, "expected INSTRUCTION VALUE"))?;
    let (inst, value) = (
        change[..split].to_ascii_uppercase(),
        change[split + 1..].trim(),
    );
    let list = |v: &str| -> Value {
        match serde_json::from_str::<Vec<String>>(v) {
            Ok(l) => json!(l),
            Err(_) => json!(["/bin/sh", "-c", v]),
        }
    };
    match inst.as_str() {
        "CMD" => {
            cfg.insert("Cmd".into(), list(value));
        }
        "ENTRYPOINT" => {
            cfg.insert("Entrypoint".into(), list(value));
        }
        "ENV" => {
            let (k, v) = value
                .split_once(['=', ' '])
                .ok_or_else(|| bad(change, "ENV needs KEY=VALUE"))?;
            let env = cfg.entry("Env").or_insert_with(|| json!([]));
            let arr = env.as_array_mut().expect("Env is a list");
            arr.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&format!("{k}="))));
            arr.push(json!(format!("{k}={}", v.trim())));
        }
        "LABEL" => {
            let (k, v) = value
                .split_once('=')
                .ok_or_else(|| bad(change, "LABEL needs KEY=VALUE"))?;
            let labels = cfg.entry("Labels").or_insert_with(|| json!({}));
            labels
                .as_object_mut()
                .expect("Labels is a map")
                .insert(k.trim().to_string(), json!(v.trim().trim_matches('"')));
        }
        "EXPOSE" => {
            let ports = cfg.entry("ExposedPorts").or_insert_with(|| json!({}));
            for p in value.split_whitespace() {
                let p = if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                };
                ports.as_object_mut().expect("a map").insert(p, json!({}));
            }
        }
        "VOLUME" => {
            let vols = cfg.entry("Volumes").or_insert_with(|| json!({}));
            let paths: Vec<String> = serde_json::from_str(value)
                .unwrap_or_else(|_| value.split_whitespace().map(str::to_string).collect());
            for p in paths {
                vols.as_object_mut().expect("a map").insert(p, json!({}));
            }
        }
        "USER" => {
            cfg.insert("User".into(), json!(value));
        }
        "WORKDIR" => {
            cfg.insert("WorkingDir".into(), json!(value));
        }
        "STOPSIGNAL" => {
            cfg.insert("StopSignal".into(), json!(value));
        }
        "ONBUILD" => {
            let ob = cfg.entry("OnBuild").or_insert_with(|| json!([]));
            ob.as_array_mut().expect("a list").push(json!(value));
        }
        _ => {
            return Err(bad(
                change,
                "supported instructions are CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR",
            ));
        }
    }
    Ok(())
}

fn bad(change: &str, why: &str) -> EngineError {
    EngineError::invalid(format!("--change {change:?}"), why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply() {
        let mut c = Map::new();
        apply_change(&mut c, r#"CMD ["sh","-c","echo hi"]"#).unwrap();
        apply_change(&mut c, "ENTRYPOINT=/bin/init").unwrap();
        apply_change(&mut c, "ENV A=1").unwrap();
        apply_change(&mut c, "ENV A=2").unwrap();
        apply_change(&mut c, "LABEL x=y").unwrap();
        apply_change(&mut c, "EXPOSE 80 53/udp").unwrap();
        apply_change(&mut c, "WORKDIR /srv").unwrap();
        assert_eq!(c["Cmd"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/bin/init"]));
        assert_eq!(c["Env"], json!(["A=2"]));
        assert_eq!(c["Labels"], json!({"x": "y"}));
        assert!(c["ExposedPorts"].get("53/udp").is_some());
        assert_eq!(c["WorkingDir"], json!("/srv"));
        assert!(apply_change(&mut c, "FROM x").is_err());
        assert!(apply_change(&mut c, "CMD").is_err());
    }
}
