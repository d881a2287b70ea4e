//! A deliberately misbehaving registry on loopback: each path answers whatever the test
//! wants (bad digests, huge manifests, errors, stalls), which no real registry would.
// (shared test helper)

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sent before the body (and between halves of it with `stall_midway`).
    pub delay: Duration,
    pub stall_midway: bool,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            stall_midway: false,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

pub struct Fake {
    pub addr: String,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
}

pub fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

impl Fake {
    pub fn start() -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let r2 = routes.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut s) = conn else { continue };
                let routes = r2.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(s.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let method = line.split_whitespace().next().unwrap_or("GET").to_string();
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut sink = vec![0; len];
                    let _ = reader.read_exact(&mut sink);
                    let reply = routes
                        .lock()
                        .unwrap()
                        .get(path.split('?').next().unwrap())
                        .cloned()
                        .unwrap_or_else(|| Reply::new(if path == "/v2/" { 200 } else { 404 }, "{\"errors\":[{\"code\":\"NAME_UNKNOWN\",\"message\":\"not here\"}]}"));
                    std::thread::sleep(reply.delay);
                    let mut head = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    for (k, v) in &reply.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = s.write_all(head.as_bytes());
                    if method == "HEAD" {
                        return;
                    }
                    if reply.stall_midway {
                        let half = reply.body.len() / 2;
                        let _ = s.write_all(&reply.body[..half]);
                        let _ = s.flush();
                        std::thread::sleep(reply.delay * 20);
                        let _ = s.write_all(&reply.body[half..]);
                    } else {
                        let _ = s.write_all(&reply.body);
                    }
                });
            }
        });
        Fake { addr, routes }
    }

    pub fn route(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }

    /// Serves image `repo:tag` made of `layer_blob` (served as `served_layer`) with media
    /// type `layer_mt`; `diff_id` is what the config claims. Returns the layer digest.
    pub fn image(
        &self,
        repo: &str,
        tag: &str,
        layer_blob: &[u8],
        served_layer: &[u8],
        layer_mt: &str,
        diff_id: &str,
    ) -> String {
        let layer_digest = sha(layer_blob);
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let config = serde_json::to_vec(&config).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
            "layers": [{"mediaType": layer_mt, "digest": layer_digest, "size": layer_blob.len()}],
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        self.route(
            &format!("/v2/{repo}/manifests/{tag}"),
            Reply::new(200, manifest)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
        );
        self.route(
            &format!("/v2/{repo}/blobs/{}", sha(&config)),
            Reply::new(200, config),
        );
        self.route(
            &format!("/v2/{repo}/blobs/{layer_digest}"),
            Reply::new(200, served_layer.to_vec()),
        );
        layer_digest
    }
}

/// A gzip-compressed tarball of (name, content) regular files.
pub fn gz_tar(files: &[(&str, &[u8])]) -> (Vec<u8>, String) {
    let tar = tar_of(files);
    let diff = sha(&tar);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&tar).unwrap();
    (enc.finish().unwrap(), diff)
}

pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path(name).unwrap();
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}
