//! The HTTP side of the distribution API.

use std::collections::HashMap;
use std::sync::{Mutex, Once};
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};

use super::media;
use crate::digest;
use crate::image::auth::Credentials;

/// Manifests larger than this are refused (as containers/image does).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;
/// Config blobs larger than this are refused.
pub const MAX_CONFIG_SIZE: u64 = 8 * 1024 * 1024;
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("pinging registry {registry}: {detail}")]
    Unreachable { registry: String, detail: String },
    #[error("{what}: authentication required ({registry} answered 401 Unauthorized{detail})")]
    Unauthorized {
        registry: String,
        what: String,
        detail: String,
    },
    #[error("{what}: access denied ({registry} answered 403 Forbidden{detail})")]
    Denied {
        registry: String,
        what: String,
        detail: String,
    },
    #[error("{what}: not found ({registry} answered 404 Not Found{detail})")]
    NotFound {
        registry: String,
        what: String,
        detail: String,
    },
    #[error("{what}: too many requests ({registry} answered 429 Too Many Requests{detail})")]
    TooManyRequests {
        registry: String,
        what: String,
        detail: String,
    },
    #[error("{what}: {registry} answered {status}{detail}")]
    Status {
        registry: String,
        what: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{what}: {detail}")]
    Transfer { what: String, detail: String },
    #[error("{what}: manifest is {size} bytes, larger than the {max} byte limit")]
    TooLarge { what: String, size: u64, max: u64 },
    #[error("fetching a token from {realm}: {detail}")]
    Token { realm: String, detail: String },
    #[error(transparent)]
    Digest(#[from] digest::DigestError),
}

impl RegistryError {
    pub fn hint(&self) -> Option<String> {
        match self {
            RegistryError::Unreachable { registry, detail } => Some(
                if detail.contains("certificate")
                    || detail.contains("tls")
                    || detail.contains("TLS")
                {
                    format!(
                        "if {registry} serves plain HTTP or a self-signed certificate, pass --tls-verify=false or mark it insecure in registries.conf"
                    )
                } else {
                    format!(
                        "check that {registry} is the right address and that the registry is running"
                    )
                },
            ),
            RegistryError::Unauthorized { registry, .. } => Some(format!(
                "log in with `capsa login {registry}` or pass --creds USER:PASSWORD"
            )),
            RegistryError::Denied { .. } => {
                Some("check that your account may access this repository".into())
            }
            RegistryError::NotFound { .. } => Some("check the image name and tag".into()),
            RegistryError::TooManyRequests { .. } => {
                Some("the registry is rate-limiting you: wait and try again, or log in".into())
            }
            _ => None,
        }
    }
}

/// Finds stored credentials for a `registry/repository` key.
pub type CredentialLookup = Box<dyn Fn(&str) -> Option<Credentials> + Send + Sync>;

/// One repository on one registry, as requests are addressed.
#[derive(Debug, Clone)]
pub struct Repo {
    pub registry: String,
    pub repository: String,
    /// Plain HTTP or unverified TLS is allowed.
    pub insecure: bool,
}

impl Repo {
    fn scope(&self, push: bool) -> String {
        let actions = if push { "pull,push" } else { "pull" };
        format!("repository:{}:{actions}", self.repository)
    }
}

/// Shared by all requests of one command: connection pools, tokens and the scheme each
/// registry answered on.
pub struct RegistryClient {
    secure: reqwest::Client,
    insecure: reqwest::Client,
    creds: Mutex<HashMap<String, Option<Credentials>>>,
    lookup: CredentialLookup,
    tokens: Mutex<HashMap<(String, String), String>>,
    bases: Mutex<HashMap<String, String>>,
}

fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn read_timeout() -> Duration {
    std::env::var("CAPSA_REGISTRY_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(60))
}

impl RegistryClient {
    /// `lookup` finds credentials for a `registry/repository` key (auth files, helpers).
    pub fn new(lookup: CredentialLookup) -> Self {
        install_crypto();
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .user_agent(concat!("capsa/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(read_timeout())
                .tls_danger_accept_invalid_certs(insecure)
                .build()
                .expect("a reqwest client with static settings")
        };
        Self {
            secure: build(false),
            insecure: build(true),
            creds: Mutex::new(HashMap::new()),
            lookup,
            tokens: Mutex::new(HashMap::new()),
            bases: Mutex::new(HashMap::new()),
        }
    }

    /// Credentials given on the command line win over any file for this registry.
    pub fn set_credentials(&self, registry: &str, creds: Credentials) {
        self.creds
            .lock()
            .expect("not poisoned")
            .insert(registry.to_string(), Some(creds));
    }

    fn credentials(&self, repo: &Repo) -> Option<Credentials> {
        if let Some(c) = self.creds.lock().expect("not poisoned").get(&repo.registry) {
            return c.clone();
        }
        (self.lookup)(&format!("{}/{}", repo.registry, repo.repository))
    }

    fn http(&self, repo: &Repo) -> &reqwest::Client {
        if repo.insecure {
            &self.insecure
        } else {
            &self.secure
        }
    }

    /// `https://host` or, for insecure registries that do not speak TLS, `http://host`.
    async fn base(&self, repo: &Repo) -> Result<String, RegistryError> {
        if let Some(b) = self.bases.lock().expect("not poisoned").get(&repo.registry) {
            return Ok(b.clone());
        }
        let host = registry_host(&repo.registry);
        let https = format!("https://{host}");
        let probe = self.http(repo).get(format!("{https}/v2/")).send().await;
        let base = match probe {
            Ok(_) => https,
            Err(e) if repo.insecure => {
                tracing::debug!("{host} over https failed ({e}); trying http");
                let http = format!("http://{host}");
                match self.http(repo).get(format!("{http}/v2/")).send().await {
                    Ok(_) => http,
                    Err(e2) => {
                        return Err(RegistryError::Unreachable {
                            registry: repo.registry.clone(),
                            detail: error_chain(&e2),
                        });
                    }
                }
            }
            Err(e) => {
                return Err(RegistryError::Unreachable {
                    registry: repo.registry.clone(),
                    detail: error_chain(&e),
                });
            }
        };
        self.bases
            .lock()
            .expect("not poisoned")
            .insert(repo.registry.clone(), base.clone());
        Ok(base)
    }

    /// Sends a request, authenticating on 401 and retrying 429 and 5xx answers.
    async fn send(
        &self,
        repo: &Repo,
        req: Req,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let Req {
            method,
            path: url_path,
            headers,
            body,
            push,
        } = req;
        let url_path = url_path.as_str();
        let base = self.base(repo).await?;
        let url = if url_path.starts_with("http://") || url_path.starts_with("https://") {
            url_path.to_string()
        } else {
            format!("{base}{url_path}")
        };
        let scope = repo.scope(push);
        let mut authed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .http(repo)
                .request(method.clone(), &url)
                .headers(headers.clone());
            let token = self
                .tokens
                .lock()
                .expect("not poisoned")
                .get(&(repo.registry.clone(), scope.clone()))
                .cloned();
            if let Some(t) = token {
                req = req.header(AUTHORIZATION, t);
            }
            if let Some(b) = &body {
                req = req.body(b.to_body().await.map_err(|e| RegistryError::Transfer {
                    what: what.to_string(),
                    detail: e.to_string(),
                })?);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| transfer_error(repo, what, &e))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !authed {
                authed = true;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if self.authenticate(repo, &scope, &challenge).await? {
                    attempt -= 1;
                    continue;
                }
            }
            if (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
                && attempt < ATTEMPTS
            {
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(10)))
                    .unwrap_or(Duration::from_millis(250 << attempt));
                tracing::info!("{what}: {status}, retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_success() || status.is_redirection() {
                return Ok(resp);
            }
            return Err(status_error(repo, what, resp).await);
        }
    }

    /// Answers a 401 challenge; false when there is nothing to answer it with.
    async fn authenticate(
        &self,
        repo: &Repo,
        scope: &str,
        challenge: &str,
    ) -> Result<bool, RegistryError> {
        let (scheme, params) = parse_challenge(challenge);
        let creds = self.credentials(repo);
        let key = (repo.registry.clone(), scope.to_string());
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let Some(Credentials { username, password }) = creds else {
                    return Ok(false);
                };
                let v = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"))
                );
                self.tokens.lock().expect("not poisoned").insert(key, v);
                Ok(true)
            }
            "bearer" => {
                let realm = params.get("realm").cloned().unwrap_or_default();
                if realm.is_empty() {
                    return Ok(false);
                }
                let service = params.get("service").cloned();
                let req = match creds.as_ref().and_then(|c| c.as_identity_token()) {
                    // An identity token is an OAuth2 refresh token (Docker's flow).
                    Some(refresh) => {
                        let mut form = url::form_urlencoded::Serializer::new(String::new());
                        form.append_pair("grant_type", "refresh_token")
                            .append_pair("refresh_token", refresh)
                            .append_pair("client_id", "capsa")
                            .append_pair("scope", scope);
                        if let Some(s) = &service {
                            form.append_pair("service", s);
                        }
                        self.http(repo)
                            .post(&realm)
                            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                            .body(form.finish())
                    }
                    None => {
                        let mut q: Vec<(&str, String)> = Vec::new();
                        if let Some(s) = &service {
                            q.push(("service", s.clone()));
                        }
                        if !scope.is_empty() {
                            q.push(("scope", scope.to_string()));
                        }
                        if let Some(c) = &creds {
                            q.push(("account", c.username.clone()));
                        }
                        let req = self.http(repo).get(&realm).query(&q);
                        match &creds {
                            Some(c) => req.basic_auth(&c.username, Some(&c.password)),
                            None => req,
                        }
                    }
                };
                let resp = req.send().await.map_err(|e| RegistryError::Token {
                    realm: realm.clone(),
                    detail: error_chain(&e),
                })?;
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    return Err(RegistryError::Unauthorized {
                        registry: repo.registry.clone(),
                        what: format!("token for {scope}"),
                        detail: if creds.is_some() {
                            ": invalid username or password".into()
                        } else {
                            String::new()
                        },
                    });
                }
                if !status.is_success() {
                    return Err(RegistryError::Token {
                        realm,
                        detail: format!("answered {status}"),
                    });
                }
                #[derive(serde::Deserialize)]
                struct Tok {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let t: Tok = resp.json().await.map_err(|e| RegistryError::Token {
                    realm: realm.clone(),
                    detail: error_chain(&e),
                })?;
                let Some(tok) = t.token.or(t.access_token) else {
                    return Err(RegistryError::Token {
                        realm,
                        detail: "the answer holds no token".into(),
                    });
                };
                self.tokens
                    .lock()
                    .expect("not poisoned")
                    .insert(key, format!("Bearer {tok}"));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Checks that the registry accepts `creds` (for `login`).
    pub async fn check_login(&self, repo: &Repo, creds: Credentials) -> Result<(), RegistryError> {
        self.set_credentials(&repo.registry, creds);
        let base = self.base(repo).await?;
        let what = format!("logging in to {}", repo.registry);
        let resp = self
            .http(repo)
            .get(format!("{base}/v2/"))
            .send()
            .await
            .map_err(|e| transfer_error(repo, &what, &e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return if resp.status().is_success() {
                Ok(())
            } else {
                Err(status_error(repo, &what, resp).await)
            };
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let scope = String::new();
        self.authenticate(repo, &scope, &challenge).await?;
        let token = self
            .tokens
            .lock()
            .expect("not poisoned")
            .get(&(repo.registry.clone(), scope))
            .cloned();
        let mut req = self.http(repo).get(format!("{base}/v2/"));
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transfer_error(repo, &what, &e))?;
        if resp.status().is_success() {
            Ok(())
        } else if resp.status() == StatusCode::UNAUTHORIZED {
            Err(RegistryError::Unauthorized {
                registry: repo.registry.clone(),
                what,
                detail: ": invalid username or password".into(),
            })
        } else {
            Err(status_error(repo, &what, resp).await)
        }
    }

    /// Fetches a manifest by tag or digest; returns bytes, media type and digest. A
    /// digest reference is verified against the bytes.
    pub async fn get_manifest(
        &self,
        repo: &Repo,
        reference: &str,
    ) -> Result<(Vec<u8>, String, String), RegistryError> {
        let what = format!(
            "reading manifest {reference} in {}/{}",
            repo.registry, repo.repository
        );
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(media::MANIFEST_ACCEPT));
        let resp = self
            .send(
                repo,
                Req::new(
                    Method::GET,
                    format!("/v2/{}/manifests/{reference}", repo.repository),
                )
                .headers(h),
                &what,
            )
            .await?;
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_limited(resp, MAX_MANIFEST_SIZE, &what).await?;
        let actual = digest::sha256_of(&bytes);
        if reference.contains(':') {
            digest::verify(&format!("manifest {reference}"), &bytes, reference)?;
        } else if let Some(h) = header_digest
            && h.starts_with("sha256:")
            && h != actual
        {
            return Err(digest::DigestError::Mismatch {
                what: format!("manifest {reference}"),
                expected: h,
                actual,
            }
            .into());
        }
        let mt = media::detect(&bytes, content_type.as_deref());
        Ok((bytes, mt, actual))
    }

    /// Fetches a small blob (a config) whole, verified.
    pub async fn get_blob_bytes(
        &self,
        repo: &Repo,
        digest_s: &str,
        max: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let what = format!("reading blob {digest_s}");
        let resp = self.get_blob(repo, digest_s).await?;
        let bytes = read_limited(resp, max, &what).await?;
        digest::verify(&what, &bytes, digest_s)?;
        Ok(bytes)
    }

    /// Starts a blob download; the caller streams and verifies the body.
    pub async fn get_blob(
        &self,
        repo: &Repo,
        digest_s: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        digest::sha256_hex(digest_s)?;
        let what = format!("fetching blob {digest_s}");
        self.send(
            repo,
            Req::new(
                Method::GET,
                format!("/v2/{}/blobs/{digest_s}", repo.repository),
            ),
            &what,
        )
        .await
    }

    pub async fn blob_exists(&self, repo: &Repo, digest_s: &str) -> Result<bool, RegistryError> {
        let what = format!("checking blob {digest_s}");
        match self
            .send(
                repo,
                Req::new(
                    Method::HEAD,
                    format!("/v2/{}/blobs/{digest_s}", repo.repository),
                )
                .push(),
                &what,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads a blob in one PUT (the monolithic upload of the distribution spec).
    pub async fn upload_blob(
        &self,
        repo: &Repo,
        digest_s: &str,
        body: Body,
    ) -> Result<(), RegistryError> {
        let what = format!("uploading blob {digest_s}");
        let resp = self
            .send(
                repo,
                Req::new(
                    Method::POST,
                    format!("/v2/{}/blobs/uploads/", repo.repository),
                )
                .push(),
                &what,
            )
            .await?;
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Transfer {
                what: what.clone(),
                detail: "the registry gave no upload location".into(),
            })?
            .to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest_s}");
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        self.send(
            repo,
            Req::new(Method::PUT, url).headers(h).body(body).push(),
            &what,
        )
        .await?;
        Ok(())
    }

    pub async fn put_manifest(
        &self,
        repo: &Repo,
        reference: &str,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let what = format!(
            "writing manifest {reference} to {}/{}",
            repo.registry, repo.repository
        );
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|_| RegistryError::Transfer {
                what: what.clone(),
                detail: format!("bad media type {media_type:?}"),
            })?,
        );
        self.send(
            repo,
            Req::new(
                Method::PUT,
                format!("/v2/{}/manifests/{reference}", repo.repository),
            )
            .headers(h)
            .body(Body::Bytes(bytes))
            .push(),
            &what,
        )
        .await?;
        Ok(())
    }

    pub async fn list_tags(&self, repo: &Repo) -> Result<Vec<String>, RegistryError> {
        let what = format!("listing tags of {}/{}", repo.registry, repo.repository);
        let resp = self
            .send(
                repo,
                Req::new(Method::GET, format!("/v2/{}/tags/list", repo.repository)),
                &what,
            )
            .await?;
        let bytes = read_limited(resp, MAX_MANIFEST_SIZE, &what).await?;
        #[derive(serde::Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let t: Tags = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Transfer {
            what,
            detail: e.to_string(),
        })?;
        Ok(t.tags.unwrap_or_default())
    }
}

/// One request to a registry; `push` asks for a token with push scope.
struct Req {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Option<Body>,
    push: bool,
}

impl Req {
    fn new(method: Method, path: String) -> Req {
        Req {
            method,
            path,
            headers: HeaderMap::new(),
            body: None,
            push: false,
        }
    }
    fn headers(mut self, h: HeaderMap) -> Req {
        self.headers = h;
        self
    }
    fn body(mut self, b: Body) -> Req {
        self.body = Some(b);
        self
    }
    fn push(mut self) -> Req {
        self.push = true;
        self
    }
}

/// A request body that can be sent again (after a 401 or a retry).
#[derive(Debug, Clone)]
pub enum Body {
    Bytes(Vec<u8>),
    File(std::path::PathBuf),
}

impl Body {
    async fn to_body(&self) -> std::io::Result<reqwest::Body> {
        Ok(match self {
            Body::Bytes(b) => reqwest::Body::from(b.clone()),
            Body::File(p) => reqwest::Body::from(tokio::fs::File::open(p).await?),
        })
    }
}

/// Docker Hub is addressed as `docker.io` but served from `registry-1.docker.io`.
fn registry_host(registry: &str) -> &str {
    if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

async fn read_limited(
    resp: reqwest::Response,
    max: u64,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    if let Some(len) = resp.content_length()
        && len > max
    {
        return Err(RegistryError::TooLarge {
            what: what.to_string(),
            size: len,
            max,
        });
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Transfer {
            what: what.to_string(),
            detail: error_chain(&e),
        })?;
        out.extend_from_slice(&chunk);
        if out.len() as u64 > max {
            return Err(RegistryError::TooLarge {
                what: what.to_string(),
                size: out.len() as u64,
                max,
            });
        }
    }
    Ok(out)
}

fn transfer_error(repo: &Repo, what: &str, e: &reqwest::Error) -> RegistryError {
    if e.is_connect() {
        RegistryError::Unreachable {
            registry: repo.registry.clone(),
            detail: error_chain(e),
        }
    } else {
        RegistryError::Transfer {
            what: what.to_string(),
            detail: error_chain(e),
        }
    }
}

/// The whole chain of a reqwest error, which hides the useful part in its sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

async fn status_error(repo: &Repo, what: &str, resp: reqwest::Response) -> RegistryError {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errs {
        errors: Vec<Err1>,
    }
    #[derive(serde::Deserialize)]
    struct Err1 {
        code: Option<String>,
        message: Option<String>,
    }
    let detail = match serde_json::from_slice::<Errs>(&body) {
        Ok(e) if !e.errors.is_empty() => {
            let parts: Vec<String> = e
                .errors
                .iter()
                .map(|x| {
                    format!(
                        "{}: {}",
                        x.code.as_deref().unwrap_or("UNKNOWN"),
                        x.message.as_deref().unwrap_or("")
                    )
                })
                .collect();
            format!(": {}", parts.join("; "))
        }
        _ => String::new(),
    };
    let registry = repo.registry.clone();
    let what = what.to_string();
    match status {
        StatusCode::UNAUTHORIZED => RegistryError::Unauthorized {
            registry,
            what,
            detail,
        },
        StatusCode::FORBIDDEN => RegistryError::Denied {
            registry,
            what,
            detail,
        },
        StatusCode::NOT_FOUND => RegistryError::NotFound {
            registry,
            what,
            detail,
        },
        StatusCode::TOO_MANY_REQUESTS => RegistryError::TooManyRequests {
            registry,
            what,
            detail,
        },
        status => RegistryError::Status {
            registry,
            what,
            status,
            detail,
        },
    }
}

/// Splits `Bearer realm="…",service="…"` into its scheme and parameters.
pub fn parse_challenge(header: &str) -> (String, HashMap<String, String>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(p["realm"], "https://auth.example.com/token");
        assert_eq!(p["service"], "registry.example.com");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "Basic");
        assert_eq!(p["realm"], "Registry Realm");
    }
}
