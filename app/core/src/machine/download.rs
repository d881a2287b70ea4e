//! `machine init --image URL`: the tar is fetched with reqwest into the user's cache,
//! resumed with a Range request when a previous try left a `.part`, and checked against
//! the sha256 published next to it (`<url>.sha256`, sha256sum's format).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("fetching {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: no sha256 in {sum_url}")]
    NoChecksum { url: String, sum_url: String },
    #[error("{url}: downloaded file has sha256 {actual}, {sum_url} says {expected}")]
    Mismatch {
        url: String,
        sum_url: String,
        expected: String,
        actual: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Bytes so far and the total when the server said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
}

fn client() -> Result<reqwest::Client, reqwest::Error> {
    tls::backend(reqwest::Client::builder())
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .build()
}

#[cfg(not(target_os = "macos"))]
mod tls {
    pub fn backend(b: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let _ = rustls::crypto::ring::default_provider().install_default();
        b
    }
}

#[cfg(target_os = "macos")]
mod tls {
    pub fn backend(b: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        b.tls_backend_native()
    }
}

/// Downloads `url` into `cache_dir` (once: a verified copy is reused) and returns the
/// file's path.
pub async fn fetch(
    url: &str,
    cache_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, DownloadError> {
    let http = |e: reqwest::Error| DownloadError::Http {
        url: url.into(),
        reason: error_chain(&e),
    };
    let client = client().map_err(http)?;
    let sum_url = format!("{url}.sha256");
    let expected = {
        let r = client.get(&sum_url).send().await.map_err(http)?;
        if !r.status().is_success() {
            return Err(DownloadError::Status {
                url: sum_url,
                status: r.status().as_u16(),
            });
        }
        let text = r.text().await.map_err(http)?;
        text.split_whitespace()
            .next()
            .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| DownloadError::NoChecksum {
                url: url.into(),
                sum_url: sum_url.clone(),
            })?
    };
    let file_name = url
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("image.tar");
    // The digest in the name keeps two versions published under one URL apart.
    let dest = cache_dir.join(format!("{}-{file_name}", &expected[..12]));
    let io = |what: &'static str, p: &Path| {
        let path = p.display().to_string();
        move |source| DownloadError::Io { what, path, source }
    };
    if dest.is_file() {
        return Ok(dest);
    }
    tokio::fs::create_dir_all(cache_dir)
        .await
        .map_err(io("creating", cache_dir))?;
    let part = dest.with_extension("part");
    let have = tokio::fs::metadata(&part)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let resp = req.send().await.map_err(http)?;
    let status = resp.status().as_u16();
    let resumed = status == 206 && have > 0;
    if !(status == 200 || resumed) {
        return Err(DownloadError::Status {
            url: url.into(),
            status,
        });
    }
    let mut done = if resumed { have } else { 0 };
    let total = resp.content_length().map(|l| l + done);
    let mut out = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(&part)
        .await
        .map_err(io("writing", &part))?;
    let mut body = resp.bytes_stream();
    progress(Progress { done, total });
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(http)?;
        out.write_all(&chunk).await.map_err(io("writing", &part))?;
        done += chunk.len() as u64;
        progress(Progress { done, total });
    }
    out.flush().await.map_err(io("writing", &part))?;
    drop(out);
    let part2 = part.clone();
    let actual = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut h = Sha256::new();
        std::io::copy(&mut std::fs::File::open(&part2)?, &mut h)?;
        Ok(hex::encode(h.finalize()))
    })
    .await
    .expect("hashing task")
    .map_err(io("reading", &part))?;
    if actual != expected {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(DownloadError::Mismatch {
            url: url.into(),
            sum_url,
            expected,
            actual,
        });
    }
    tokio::fs::rename(&part, &dest)
        .await
        .map_err(io("moving", &dest))?;
    Ok(dest)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    /// A small HTTP/1.1 server on loopback that honours `Range: bytes=N-`, serves
    /// `<path>.sha256`, and cuts the first full download off halfway.
    async fn serve(body: Vec<u8>, sum: String) -> (String, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let gets = Arc::new(AtomicUsize::new(0));
        let g = gets.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let body = body.clone();
                let sum = sum.clone();
                let g = g.clone();
                tokio::spawn(async move {
                    let mut r = BufReader::new(s);
                    let mut line = String::new();
                    r.read_line(&mut line).await.unwrap();
                    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                    let mut from = None;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).await.unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                            from = v.trim().trim_end_matches('-').parse::<usize>().ok();
                        }
                    }
                    let mut s = r.into_inner();
                    if path.ends_with(".sha256") {
                        let b = format!("{sum}  img.tar\n");
                        let _ = s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len()).as_bytes()).await;
                        return;
                    }
                    let n = g.fetch_add(1, Ordering::SeqCst);
                    match from {
                        Some(f) => {
                            let rest = &body[f..];
                            let _ = s.write_all(format!("HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {f}-{}/{}\r\nConnection: close\r\n\r\n", rest.len(), body.len() - 1, body.len()).as_bytes()).await;
                            let _ = s.write_all(rest).await;
                        }
                        None => {
                            let _ = s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes()).await;
                            let cut = if n == 0 { body.len() / 2 } else { body.len() };
                            let _ = s.write_all(&body[..cut]).await;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}/img.tar"), gets)
    }

    #[tokio::test]
    async fn resumes_and_verifies() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sum = hex::encode(Sha256::digest(&body));
        let (url, gets) = serve(body.clone(), sum).await;
        let d = tempfile::tempdir().unwrap();
        // The first try is cut off: an error, and a .part left behind.
        let e = fetch(&url, d.path(), &mut |_| {}).await.unwrap_err();
        assert!(matches!(e, DownloadError::Http { .. }), "{e}");
        let mut last = None;
        let p = fetch(&url, d.path(), &mut |pr| last = Some(pr))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), body);
        assert_eq!(
            last,
            Some(Progress {
                done: body.len() as u64,
                total: Some(body.len() as u64)
            })
        );
        assert_eq!(gets.load(Ordering::SeqCst), 2);
        // Cached: no third GET of the body.
        fetch(&url, d.path(), &mut |_| {}).await.unwrap();
        assert_eq!(gets.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn checksum_mismatch_is_refused() {
        let body = vec![7u8; 1000];
        let (url, _) = serve(body, "0".repeat(64)).await;
        let d = tempfile::tempdir().unwrap();
        let _ = fetch(&url, d.path(), &mut |_| {}).await;
        let e = fetch(&url, d.path(), &mut |_| {}).await.unwrap_err();
        assert!(e.to_string().contains("says 0000"), "{e}");
        assert!(std::fs::read_dir(d.path()).unwrap().next().is_none());
    }
}
