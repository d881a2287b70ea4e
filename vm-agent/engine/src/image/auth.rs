//! Registry credentials where Podman and Docker keep them: containers-auth.json(5),
//! `~/.docker/config.json`, the legacy `~/.dockercfg`, and Docker credential helpers.
//!
//! Reading follows Podman. An auth file given explicitly (`--authfile`, or
//! `REGISTRY_AUTH_FILE`) is the only file consulted; otherwise the default auth file
//! (`$XDG_RUNTIME_DIR/containers/auth.json`, else `/run/containers/$UID/auth.json`),
//! `$XDG_CONFIG_HOME/containers/auth.json` (or `~/.config/…`), `$DOCKER_CONFIG/config.json`
//! (or `~/.docker/config.json`) and `~/.dockercfg` are tried in that order and the first
//! with credentials wins. Within a file a `credHelpers` entry for the host comes first,
//! then the most specific `auths` key (`host/ns/repo`, `host/ns`, `host`; legacy keys
//! such as `https://index.docker.io/v1/` match their host), then `credsStore`.
//!
//! Writing changes one file only, atomically, with mode 0600, and keeps the content it
//! does not understand.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{DirBuilder, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The username credential helpers and auth files use for an identity (refresh) token.
pub const IDENTITY_TOKEN_USERNAME: &str = "<token>";
/// The server name Docker gives Docker Hub in `credsStore` helpers.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";
/// What helpers and old config files use as Docker Hub's host name.
const DOCKER_HUB_INDEX: &str = "index.docker.io";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("cannot read auth file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse auth file {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid auth file {}: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("cannot write auth file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid credential helper name {helper:?}")]
    InvalidHelperName { helper: String },
    #[error("credential helper {program} not found in PATH")]
    HelperNotFound { program: String },
    #[error("cannot run credential helper {}", program.display())]
    HelperSpawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("credential helper {program} {action} for {server} failed: {message}")]
    HelperFailed {
        program: String,
        action: &'static str,
        server: String,
        message: String,
    },
    #[error("credential helper {program} returned invalid credentials for {server}")]
    HelperOutput {
        program: String,
        server: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "credential helper {helper} cannot keep credentials for the namespaced key {key:?}: use the registry host alone"
    )]
    NamespacedHelperKey { helper: String, key: String },
}

/// A username and password, or an identity token as username [`IDENTITY_TOKEN_USERNAME`]
/// with the token as password (the credential helpers' convention).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// An OAuth2 identity token, sent as a refresh token rather than as basic auth.
    pub fn identity_token(token: impl Into<String>) -> Self {
        Credentials::new(IDENTITY_TOKEN_USERNAME, token)
    }

    /// The token when these credentials are an identity token.
    pub fn as_identity_token(&self) -> Option<&str> {
        (self.username == IDENTITY_TOKEN_USERNAME).then_some(self.password.as_str())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The auth file `login` writes to and `logout` edits: `REGISTRY_AUTH_FILE`, else
/// `$XDG_RUNTIME_DIR/containers/auth.json`, else `/run/containers/$UID/auth.json`
/// (Linux; other systems use `~/.config/containers/auth.json`).
pub fn default_auth_file() -> PathBuf {
    AuthEnv::from_process().default_auth_file()
}

/// Credentials for `key` (`host[:port]`, optionally followed by `/namespace…/repo`),
/// searching `auth_file` alone when given, else the usual files (see the module docs).
pub fn lookup(auth_file: Option<&Path>, key: &str) -> Result<Option<Credentials>, AuthError> {
    lookup_with(&AuthEnv::from_process(), auth_file, key)
}

/// Records `creds` for `key` in `auth_file` (or in the credential helper the file
/// names for that host).
pub fn store(auth_file: &Path, key: &str, creds: &Credentials) -> Result<(), AuthError> {
    store_with(&AuthEnv::from_process(), auth_file, key, creds)
}

/// Forgets the credentials for exactly `key`; false when there were none.
pub fn remove(auth_file: &Path, key: &str) -> Result<bool, AuthError> {
    remove_with(&AuthEnv::from_process(), auth_file, key)
}

/// Forgets every credential `auth_file` holds or points to (its `credHelpers`).
pub fn remove_all(auth_file: &Path) -> Result<(), AuthError> {
    remove_all_with(&AuthEnv::from_process(), auth_file)
}

/// Everything read from the environment, so tests can supply their own.
#[derive(Debug, Clone, Default)]
struct AuthEnv {
    registry_auth_file: Option<PathBuf>,
    xdg_runtime_dir: Option<PathBuf>,
    xdg_config_home: Option<PathBuf>,
    docker_config: Option<PathBuf>,
    home: Option<PathBuf>,
    uid: u32,
    /// Where `docker-credential-*` helpers are looked for.
    path: Option<OsString>,
}

impl AuthEnv {
    fn from_process() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let home = var("HOME")
            .map(PathBuf::from)
            .or_else(|| directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf()));
        AuthEnv {
            registry_auth_file: var("REGISTRY_AUTH_FILE").map(PathBuf::from),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR").map(PathBuf::from),
            xdg_config_home: var("XDG_CONFIG_HOME").map(PathBuf::from),
            docker_config: var("DOCKER_CONFIG").map(PathBuf::from),
            home,
            uid: platform::current_uid(),
            path: var("PATH"),
        }
    }

    fn default_auth_file(&self) -> PathBuf {
        match &self.registry_auth_file {
            Some(p) => p.clone(),
            None => platform::default_auth_file(self),
        }
    }

    /// The files to search, best first.
    fn auth_files(&self, explicit: Option<&Path>) -> Vec<AuthPath> {
        if let Some(path) = explicit
            .map(Path::to_path_buf)
            .or_else(|| self.registry_auth_file.clone())
        {
            return vec![AuthPath::new(path)];
        }
        let mut files = Vec::new();
        if let Some(p) = platform::default_auth_file_for_reading(self) {
            files.push(AuthPath::new(p));
        }
        let config_home = self
            .xdg_config_home
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".config")));
        if let Some(dir) = config_home {
            files.push(AuthPath::new(dir.join("containers/auth.json")));
        }
        match (&self.docker_config, &self.home) {
            (Some(dir), _) => files.push(AuthPath::new(dir.join("config.json"))),
            (None, Some(home)) => files.push(AuthPath::new(home.join(".docker/config.json"))),
            (None, None) => {}
        }
        if let Some(home) = &self.home {
            files.push(AuthPath {
                path: home.join(".dockercfg"),
                legacy: true,
            });
        }
        let mut seen = Vec::new();
        files.retain(|f| {
            let new = !seen.contains(&f.path);
            seen.push(f.path.clone());
            new
        });
        files
    }
}

#[cfg(target_os = "linux")]
mod platform {
    use std::path::PathBuf;

    use super::AuthEnv;

    pub(super) fn current_uid() -> u32 {
        rustix::process::getuid().as_raw()
    }

    pub(super) fn default_auth_file(env: &AuthEnv) -> PathBuf {
        match &env.xdg_runtime_dir {
            Some(dir) => dir.join("containers/auth.json"),
            None => PathBuf::from(format!("/run/containers/{}/auth.json", env.uid)),
        }
    }

    /// As Podman: a mistyped XDG_RUNTIME_DIR is reported and skipped, so public images
    /// still pull.
    pub(super) fn default_auth_file_for_reading(env: &AuthEnv) -> Option<PathBuf> {
        if let Some(dir) = &env.xdg_runtime_dir
            && !dir.exists()
        {
            tracing::warn!(
                "{} set by $XDG_RUNTIME_DIR does not exist; create it or unset $XDG_RUNTIME_DIR",
                dir.display()
            );
            return None;
        }
        Some(default_auth_file(env))
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    use std::path::PathBuf;

    use super::AuthEnv;

    pub(super) fn current_uid() -> u32 {
        rustix::process::getuid().as_raw()
    }

    pub(super) fn default_auth_file(env: &AuthEnv) -> PathBuf {
        env.home
            .clone()
            .unwrap_or_default()
            .join(".config/containers/auth.json")
    }

    pub(super) fn default_auth_file_for_reading(env: &AuthEnv) -> Option<PathBuf> {
        Some(default_auth_file(env))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AuthPath {
    path: PathBuf,
    /// `~/.dockercfg`: the `auths` map is the whole file and keys are registry hosts.
    legacy: bool,
}

impl AuthPath {
    fn new(path: PathBuf) -> Self {
        AuthPath {
            path,
            legacy: false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: String,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    identitytoken: String,
}

/// The helpers' JSON, in their field order.
#[derive(Debug, Default, Serialize, Deserialize)]
struct HelperCredentials {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

fn lookup_with(
    env: &AuthEnv,
    auth_file: Option<&Path>,
    key: &str,
) -> Result<Option<Credentials>, AuthError> {
    validate_key(key)?;
    let registry = registry_of(key);
    for file in env.auth_files(auth_file) {
        if let Some(creds) = find_in_file(env, &file, key, registry)? {
            tracing::debug!("found credentials for {key} in {}", file.path.display());
            return Ok(Some(creds));
        }
    }
    tracing::debug!("no credentials for {key}");
    Ok(None)
}

fn find_in_file(
    env: &AuthEnv,
    file: &AuthPath,
    key: &str,
    registry: &str,
) -> Result<Option<Credentials>, AuthError> {
    let Some(contents) = read_auth_file(file)? else {
        return Ok(None);
    };
    let wanted = normalize_registry(registry);
    // Helpers are per host: namespaced credentials live only in the file.
    let helper = contents.cred_helpers.get(registry).or_else(|| {
        contents
            .cred_helpers
            .iter()
            .find(|(k, _)| normalize_auth_key(k, false) == wanted)
            .map(|(_, h)| h)
    });
    if let Some(helper) = helper {
        return helper_get(env, helper, registry);
    }

    let exact: Vec<&str> = if file.legacy {
        vec![registry]
    } else {
        key_and_parents(key)
    };
    let entry = exact
        .iter()
        .find_map(|k| contents.auths.get_key_value(*k))
        .or_else(|| {
            contents
                .auths
                .iter()
                .find(|(k, _)| normalize_auth_key(k, file.legacy) == wanted)
        });
    if let Some((entry_key, entry)) = entry
        && let Some(creds) = decode_entry(&file.path, entry_key, entry)?
    {
        return Ok(Some(creds));
    }
    if !contents.creds_store.is_empty() {
        return helper_get(env, &contents.creds_store, registry);
    }
    Ok(None)
}

/// `host/ns/repo`, `host/ns`, `host`.
fn key_and_parents(key: &str) -> Vec<&str> {
    let mut keys = vec![key];
    let mut rest = key;
    while let Some(i) = rest.rfind('/') {
        rest = &rest[..i];
        keys.push(rest);
    }
    keys
}

/// A key as Docker wrote it (`https://host/v1/`) reduced to the host, Docker Hub's
/// names made one.
fn normalize_auth_key(key: &str, legacy: bool) -> &str {
    let stripped = key
        .strip_prefix("http://")
        .or_else(|| key.strip_prefix("https://"));
    let host = match stripped {
        Some(s) => s.split('/').next().unwrap_or(s),
        None if legacy => key.split('/').next().unwrap_or(key),
        None => key,
    };
    normalize_registry(host)
}

fn normalize_registry(host: &str) -> &str {
    match host {
        "docker.io" | "registry-1.docker.io" => DOCKER_HUB_INDEX,
        other => other,
    }
}

fn decode_entry(
    path: &Path,
    key: &str,
    entry: &AuthEntry,
) -> Result<Option<Credentials>, AuthError> {
    if !entry.identitytoken.is_empty() {
        return Ok(Some(Credentials::identity_token(&entry.identitytoken)));
    }
    let malformed = || AuthError::Malformed {
        path: path.to_path_buf(),
        reason: format!("the \"auth\" field of {key:?} is not base64 of \"user:password\""),
    };
    let decoded = BASE64.decode(entry.auth.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    match decoded.split_once(':') {
        Some((user, password)) => {
            let password = password.trim_matches('\0');
            if user.is_empty() && password.is_empty() {
                return Ok(None);
            }
            Ok(Some(Credentials::new(user, password)))
        }
        None => {
            // Docker writes `{}` entries when a credential store holds the secret.
            if !decoded.is_empty() {
                tracing::warn!(
                    "ignoring the \"auth\" field of {key:?} in {}: no ':' between user and password",
                    path.display()
                );
            }
            Ok(None)
        }
    }
}

/// Validates a key and tells whether it names more than a registry.
fn validate_key(key: &str) -> Result<bool, AuthError> {
    let invalid = |reason| {
        Err(AuthError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("it is empty");
    }
    if key.starts_with("http://") || key.starts_with("https://") {
        return invalid("it must be host[:port][/path], without http:// or https://");
    }
    if key.contains('@') {
        return invalid("it must not contain a digest");
    }
    match key.split_once('/') {
        Some((_, path)) if path.contains(':') => invalid("it must not contain a tag"),
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

fn read_auth_file(file: &AuthPath) -> Result<Option<AuthFile>, AuthError> {
    let text = match std::fs::read_to_string(&file.path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuthError::Read {
                path: file.path.clone(),
                source,
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(Some(AuthFile::default()));
    }
    let parse_err = |source| AuthError::Parse {
        path: file.path.clone(),
        source,
    };
    if file.legacy {
        let auths = serde_json::from_str(&text).map_err(parse_err)?;
        return Ok(Some(AuthFile {
            auths,
            ..Default::default()
        }));
    }
    serde_json::from_str(&text).map(Some).map_err(parse_err)
}

/// The server names to ask a helper for `registry`, best first.
fn helper_servers(registry: &str) -> Vec<&str> {
    if normalize_registry(registry) == DOCKER_HUB_INDEX {
        vec![registry, DOCKER_HUB_SERVER]
    } else {
        vec![registry]
    }
}

fn helper_get(
    env: &AuthEnv,
    helper: &str,
    registry: &str,
) -> Result<Option<Credentials>, AuthError> {
    for server in helper_servers(registry) {
        match helper_get_one(env, helper, server) {
            Ok(Some(creds)) => return Ok(Some(creds)),
            Ok(None) => {}
            // A config copied from another machine (say credsStore "desktop") must not
            // stop pulls of public images.
            Err(AuthError::HelperNotFound { program }) => {
                tracing::warn!(
                    "credential helper {program} is not installed; no credentials for {registry}"
                );
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn helper_get_one(
    env: &AuthEnv,
    helper: &str,
    server: &str,
) -> Result<Option<Credentials>, AuthError> {
    let out = run_helper(env, helper, "get", server.as_bytes())?;
    if !out.success {
        if is_not_found(&out.message) {
            return Ok(None);
        }
        return Err(out.failed("get", server));
    }
    if out.stdout.trim().is_empty() {
        return Ok(None);
    }
    let creds: HelperCredentials =
        serde_json::from_str(out.stdout.trim()).map_err(|source| AuthError::HelperOutput {
            program: out.program.clone(),
            server: server.to_owned(),
            source,
        })?;
    if creds.username.is_empty() && creds.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::new(creds.username, creds.secret)))
}

fn helper_store(
    env: &AuthEnv,
    helper: &str,
    server: &str,
    creds: &Credentials,
) -> Result<(), AuthError> {
    let input = serde_json::to_vec(&HelperCredentials {
        server_url: server.to_owned(),
        username: creds.username.clone(),
        secret: creds.password.clone(),
    })
    .expect("helper credentials serialize");
    let out = run_helper(env, helper, "store", &input)?;
    if !out.success {
        return Err(out.failed("store", server));
    }
    Ok(())
}

/// True when the helper held credentials for `server` and erased them.
fn helper_erase(env: &AuthEnv, helper: &str, server: &str) -> Result<bool, AuthError> {
    let out = match run_helper(env, helper, "erase", server.as_bytes()) {
        Ok(out) => out,
        Err(AuthError::HelperNotFound { program }) => {
            tracing::warn!(
                "credential helper {program} is not installed; cannot erase credentials for {server}"
            );
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    if out.success {
        return Ok(true);
    }
    if is_not_found(&out.message) {
        return Ok(false);
    }
    Err(out.failed("erase", server))
}

fn is_not_found(message: &str) -> bool {
    message
        .to_ascii_lowercase()
        .contains("credentials not found")
}

struct HelperRun {
    program: String,
    success: bool,
    stdout: String,
    /// What the helper said about a failure: stdout (the protocol's place), else stderr.
    message: String,
}

impl HelperRun {
    fn failed(&self, action: &'static str, server: &str) -> AuthError {
        AuthError::HelperFailed {
            program: self.program.clone(),
            action,
            server: server.to_owned(),
            message: if self.message.is_empty() {
                "no message".to_owned()
            } else {
                self.message.clone()
            },
        }
    }
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin.
fn run_helper(
    env: &AuthEnv,
    helper: &str,
    action: &'static str,
    input: &[u8],
) -> Result<HelperRun, AuthError> {
    if helper.is_empty() || helper.contains(['/', '\\']) || helper.starts_with('.') {
        return Err(AuthError::InvalidHelperName {
            helper: helper.to_owned(),
        });
    }
    let program = format!("docker-credential-{helper}");
    let Some(path) = find_program(&program, env.path.as_deref()) else {
        return Err(AuthError::HelperNotFound { program });
    };
    let spawn_err = |source| AuthError::HelperSpawn {
        program: path.clone(),
        source,
    };
    let mut child = Command::new(&path)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper may exit without reading; its exit status tells what happened.
        let _ = stdin.write_all(input);
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = match stdout.trim() {
        "" => stderr.trim().to_owned(),
        s => s.to_owned(),
    };
    Ok(HelperRun {
        program,
        success: out.status.success(),
        stdout,
        message,
    })
}

/// The first executable `name` in the directories of `path`.
fn find_program(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn store_with(
    env: &AuthEnv,
    auth_file: &Path,
    key: &str,
    creds: &Credentials,
) -> Result<(), AuthError> {
    let namespaced = validate_key(key)?;
    let mut doc = read_document(auth_file)?.unwrap_or_default();
    // Lookups ask the host's helper first, so a namespaced entry in the file would
    // never be read.
    if let Some(helper) = cred_helper_for(&doc, registry_of(key)) {
        if namespaced {
            return Err(AuthError::NamespacedHelperKey {
                helper,
                key: key.to_owned(),
            });
        }
        return helper_store(env, &helper, key, creds);
    }
    if let Some(store) = creds_store(&doc).filter(|_| !namespaced) {
        let server = helper_servers(key).last().copied().unwrap_or(key);
        helper_store(env, &store, server, creds)?;
        // As Docker does: an empty entry records the login, the store keeps the secret.
        auths_mut(&mut doc, auth_file)?.insert(key.to_owned(), Value::Object(Map::new()));
        return write_document(auth_file, &doc);
    }
    let entry = match creds.as_identity_token() {
        // Podman reads the token from "identitytoken"; "auth" keeps Docker happy.
        Some(token) => serde_json::json!({
            "auth": BASE64.encode(format!("{IDENTITY_TOKEN_USERNAME}:")),
            "identitytoken": token,
        }),
        None => serde_json::json!({
            "auth": BASE64.encode(format!("{}:{}", creds.username, creds.password)),
        }),
    };
    auths_mut(&mut doc, auth_file)?.insert(key.to_owned(), entry);
    write_document(auth_file, &doc)
}

fn remove_with(env: &AuthEnv, auth_file: &Path, key: &str) -> Result<bool, AuthError> {
    let namespaced = validate_key(key)?;
    let Some(mut doc) = read_document(auth_file)? else {
        return Ok(false);
    };
    let mut removed = false;
    if !namespaced {
        if let Some(helper) = cred_helper_for(&doc, key) {
            removed |= helper_erase(env, &helper, key)?;
        } else if let Some(store) = creds_store(&doc) {
            for server in helper_servers(key) {
                removed |= helper_erase(env, &store, server)?;
            }
        }
    }
    let had_entry = match doc.get_mut("auths") {
        Some(Value::Object(auths)) => auths.remove(key).is_some(),
        _ => false,
    };
    if had_entry {
        write_document(auth_file, &doc)?;
    }
    Ok(removed || had_entry)
}

fn remove_all_with(env: &AuthEnv, auth_file: &Path) -> Result<(), AuthError> {
    let Some(mut doc) = read_document(auth_file)? else {
        return Ok(());
    };
    if let Some(Value::Object(helpers)) = doc.get("credHelpers") {
        for (registry, helper) in helpers {
            if let Some(helper) = helper.as_str() {
                helper_erase(env, helper, registry)?;
            }
        }
    }
    if let Some(store) = creds_store(&doc)
        && let Some(Value::Object(auths)) = doc.get("auths")
    {
        for key in auths
            .keys()
            .filter(|k| !k.contains('/') || k.contains("://"))
        {
            helper_erase(env, &store, key)?;
        }
    }
    doc.remove("credHelpers");
    doc.insert("auths".to_owned(), Value::Object(Map::new()));
    write_document(auth_file, &doc)
}

fn cred_helper_for(doc: &Map<String, Value>, registry: &str) -> Option<String> {
    doc.get("credHelpers")?
        .get(registry)?
        .as_str()
        .map(str::to_owned)
}

fn registry_of(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

fn creds_store(doc: &Map<String, Value>) -> Option<String> {
    doc.get("credsStore")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn auths_mut<'a>(
    doc: &'a mut Map<String, Value>,
    path: &Path,
) -> Result<&'a mut Map<String, Value>, AuthError> {
    let auths = doc
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if auths.is_null() {
        *auths = Value::Object(Map::new());
    }
    auths.as_object_mut().ok_or_else(|| AuthError::Malformed {
        path: path.to_path_buf(),
        reason: "\"auths\" is not an object".to_owned(),
    })
}

/// The file as a JSON object; None when it does not exist.
fn read_document(path: &Path) -> Result<Option<Map<String, Value>>, AuthError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuthError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(AuthError::Malformed {
            path: path.to_path_buf(),
            reason: "the file is not a JSON object".to_owned(),
        }),
        Err(source) => Err(AuthError::Parse {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replaces `path` atomically with `doc`, mode 0600, creating its directory 0700.
fn write_document(path: &Path, doc: &Map<String, Value>) -> Result<(), AuthError> {
    let write_err = |source| AuthError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(write_err)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".auth.json.")
        .tempfile_in(dir)
        .map_err(write_err)?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(0o600))
        .map_err(write_err)?;
    let mut text = serde_json::to_vec_pretty(doc).map_err(|e| write_err(e.into()))?;
    text.push(b'\n');
    tmp.write_all(&text).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        tmp: tempfile::TempDir,
        env: AuthEnv,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            for dir in ["run", "home", "bin"] {
                std::fs::create_dir_all(root.join(dir)).unwrap();
            }
            let env = AuthEnv {
                registry_auth_file: None,
                xdg_runtime_dir: Some(root.join("run")),
                xdg_config_home: None,
                docker_config: None,
                home: Some(root.join("home")),
                uid: 1000,
                path: Some(root.join("bin").into_os_string()),
            };
            Fixture { tmp, env }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.tmp.path().join(rel)
        }

        fn write(&self, rel: &str, json: &str) -> PathBuf {
            let path = self.path(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, json).unwrap();
            path
        }

        fn lookup(&self, key: &str) -> Option<Credentials> {
            lookup_with(&self.env, None, key).unwrap()
        }

        /// Installs `docker-credential-test`, which logs "<action> <stdin>" lines to
        /// `helper.log`.
        fn install_helper(&self) {
            let log = self.path("helper.log");
            let script = format!(
                r#"#!/bin/sh
input=$(cat)
printf '%s %s\n' "$1" "$input" >> '{log}'
case "$1" in
get)
    case "$input" in
    reg.example.com) printf '{{"ServerURL":"%s","Username":"alice","Secret":"s3cret"}}\n' "$input" ;;
    token.example.com) printf '{{"ServerURL":"%s","Username":"<token>","Secret":"idtok"}}\n' "$input" ;;
    https://index.docker.io/v1/) printf '{{"ServerURL":"%s","Username":"hub","Secret":"hubpw"}}\n' "$input" ;;
    broken.example.com) echo "the keychain is locked"; exit 1 ;;
    garbage.example.com) echo "not json" ;;
    *) echo "credentials not found in native keychain"; exit 1 ;;
    esac ;;
erase)
    case "$input" in
    gone.example.com) echo "credentials not found in native keychain"; exit 1 ;;
    esac ;;
esac
"#,
                log = log.display()
            );
            // Written by a child process so that no fd of ours open for writing can leak
            // into a concurrently forked child and make exec fail with ETXTBSY.
            let target = self.path("bin/docker-credential-test");
            let mut child = Command::new("sh")
                .args(["-c", r#"cat > "$1" && chmod 755 "$1""#, "sh"])
                .arg(&target)
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success());
        }

        fn helper_log(&self) -> Vec<String> {
            std::fs::read_to_string(self.path("helper.log"))
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn basic(user: &str, password: &str) -> Option<Credentials> {
        Some(Credentials::new(user, password))
    }

    fn auth(user_password: &str) -> String {
        BASE64.encode(user_password)
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn default_auth_file_follows_podman() {
        let mut env = AuthEnv {
            uid: 1234,
            ..Default::default()
        };
        assert_eq!(
            env.default_auth_file(),
            PathBuf::from("/run/containers/1234/auth.json")
        );
        env.xdg_runtime_dir = Some("/run/user/1234".into());
        assert_eq!(
            env.default_auth_file(),
            PathBuf::from("/run/user/1234/containers/auth.json")
        );
        env.registry_auth_file = Some("/tmp/auth.json".into());
        assert_eq!(env.default_auth_file(), PathBuf::from("/tmp/auth.json"));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn search_order() {
        let f = Fixture::new();
        let root = f.tmp.path();
        let files = f.env.auth_files(None);
        assert_eq!(
            files,
            [
                AuthPath::new(root.join("run/containers/auth.json")),
                AuthPath::new(root.join("home/.config/containers/auth.json")),
                AuthPath::new(root.join("home/.docker/config.json")),
                AuthPath {
                    path: root.join("home/.dockercfg"),
                    legacy: true
                },
            ]
        );

        let mut env = f.env.clone();
        env.xdg_config_home = Some(root.join("cfg"));
        env.docker_config = Some(root.join("dockercfg"));
        env.xdg_runtime_dir = Some(root.join("missing"));
        let paths: Vec<PathBuf> = env.auth_files(None).into_iter().map(|a| a.path).collect();
        assert_eq!(
            paths,
            [
                root.join("cfg/containers/auth.json"),
                root.join("dockercfg/config.json"),
                root.join("home/.dockercfg"),
            ]
        );

        // An explicit file, or REGISTRY_AUTH_FILE, is the only one searched.
        assert_eq!(
            env.auth_files(Some(Path::new("/x/auth.json"))),
            [AuthPath::new("/x/auth.json".into())]
        );
        env.registry_auth_file = Some("/y/auth.json".into());
        assert_eq!(env.auth_files(None), [AuthPath::new("/y/auth.json".into())]);
        assert_eq!(
            env.auth_files(Some(Path::new("/x/auth.json"))),
            [AuthPath::new("/x/auth.json".into())]
        );
    }

    #[test]
    fn most_specific_key_wins() {
        let f = Fixture::new();
        f.write(
            "run/containers/auth.json",
            &format!(
                r#"{{"auths": {{
                    "quay.io": {{"auth": "{}"}},
                    "quay.io/ns": {{"auth": "{}"}},
                    "quay.io/ns/repo": {{"auth": "{}"}}
                }}}}"#,
                auth("host:1"),
                auth("ns:2"),
                auth("repo:3")
            ),
        );
        assert_eq!(f.lookup("quay.io/ns/repo"), basic("repo", "3"));
        assert_eq!(f.lookup("quay.io/ns/other"), basic("ns", "2"));
        assert_eq!(f.lookup("quay.io/ns"), basic("ns", "2"));
        assert_eq!(f.lookup("quay.io/x/y"), basic("host", "1"));
        assert_eq!(f.lookup("quay.io"), basic("host", "1"));
        assert_eq!(f.lookup("ghcr.io/ns/repo"), None);
    }

    #[test]
    fn docker_style_keys_match_their_host() {
        let f = Fixture::new();
        f.write(
            "home/.docker/config.json",
            &format!(
                r#"{{"auths": {{
                    "https://index.docker.io/v1/": {{"auth": "{}"}},
                    "https://registry.example.com/v1/": {{"auth": "{}", "email": "x@y"}},
                    "localhost:5000": {{"auth": "{}"}}
                }}, "HttpHeaders": {{"User-Agent": "x"}}}}"#,
                auth("hub:pw"),
                auth("reg:pw\u{0}"),
                auth("local:pw")
            ),
        );
        assert_eq!(f.lookup("docker.io/library/alpine"), basic("hub", "pw"));
        assert_eq!(f.lookup("docker.io"), basic("hub", "pw"));
        assert_eq!(f.lookup("registry.example.com/a/b"), basic("reg", "pw"));
        assert_eq!(f.lookup("localhost:5000/app"), basic("local", "pw"));
    }

    #[test]
    fn first_file_with_credentials_wins() {
        let f = Fixture::new();
        f.write(
            "run/containers/auth.json",
            &format!(
                r#"{{"auths": {{"quay.io": {{"auth": "{}"}}}}}}"#,
                auth("run:1")
            ),
        );
        f.write(
            "home/.config/containers/auth.json",
            &format!(
                r#"{{"auths": {{"quay.io": {{"auth": "{}"}}, "ghcr.io": {{"auth": "{}"}}}}}}"#,
                auth("config:2"),
                auth("config:3")
            ),
        );
        f.write(
            "home/.dockercfg",
            &format!(
                r#"{{"https://old.example.com/v1/": {{"auth": "{}", "email": "e"}}}}"#,
                auth("old:4")
            ),
        );
        assert_eq!(f.lookup("quay.io/a/b"), basic("run", "1"));
        assert_eq!(f.lookup("ghcr.io/a/b"), basic("config", "3"));
        assert_eq!(f.lookup("old.example.com/a"), basic("old", "4"));

        // An explicit file hides the others.
        let explicit = f.write("explicit.json", r#"{"auths": {}}"#);
        assert_eq!(
            lookup_with(&f.env, Some(&explicit), "quay.io/a/b").unwrap(),
            None
        );
        let missing = f.path("missing.json");
        assert_eq!(
            lookup_with(&f.env, Some(&missing), "quay.io").unwrap(),
            None
        );
    }

    #[test]
    fn identity_tokens_and_odd_entries() {
        let f = Fixture::new();
        f.write(
            "run/containers/auth.json",
            &format!(
                r#"{{"auths": {{
                    "token.io": {{"auth": "{}", "identitytoken": "tok"}},
                    "empty.io": {{}},
                    "nocolon.io": {{"auth": "{}"}},
                    "bad.io": {{"auth": "%%%"}}
                }}}}"#,
                auth("<token>:"),
                auth("justuser")
            ),
        );
        let token = f.lookup("token.io/x").unwrap();
        assert_eq!(token.as_identity_token(), Some("tok"));
        assert_eq!(token, Credentials::identity_token("tok"));
        assert_eq!(f.lookup("empty.io"), None);
        assert_eq!(f.lookup("nocolon.io"), None);
        let err = lookup_with(&f.env, None, "bad.io").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid auth file ")
                && err
                    .to_string()
                    .contains(r#"the "auth" field of "bad.io" is not base64"#),
            "{err}"
        );
    }

    #[test]
    fn unreadable_files_are_errors_naming_them() {
        let f = Fixture::new();
        let path = f.write("run/containers/auth.json", "{not json");
        let err = lookup_with(&f.env, None, "quay.io").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot parse auth file {}", path.display())
        );
        f.write("run/containers/auth.json", "  \n");
        assert_eq!(f.lookup("quay.io"), None);
    }

    #[test]
    fn keys_are_validated() {
        let f = Fixture::new();
        for (key, reason) in [
            ("", "empty"),
            ("https://quay.io", "http://"),
            ("quay.io/a@sha256:abc", "digest"),
            ("quay.io/a:latest", "tag"),
        ] {
            let err = lookup_with(&f.env, None, key).unwrap_err();
            assert!(matches!(err, AuthError::InvalidKey { .. }), "{key}");
            assert!(err.to_string().contains(reason), "{key}: {err}");
        }
        assert!(!validate_key("localhost:5000").unwrap());
        assert!(validate_key("localhost:5000/a/b").unwrap());
    }

    #[test]
    fn credential_helpers() {
        let f = Fixture::new();
        f.install_helper();
        f.write(
            "run/containers/auth.json",
            &format!(
                r#"{{"credHelpers": {{
                    "reg.example.com": "test",
                    "token.example.com": "test",
                    "other.example.com": "test",
                    "broken.example.com": "test",
                    "garbage.example.com": "test",
                    "missing.example.com": "not-installed",
                    "bad.example.com": "../x"
                }}, "auths": {{"other.example.com": {{"auth": "{}"}}}}}}"#,
                auth("file:pw")
            ),
        );
        assert_eq!(f.lookup("reg.example.com/ns/app"), basic("alice", "s3cret"));
        let token = f.lookup("token.example.com").unwrap();
        assert_eq!(token.as_identity_token(), Some("idtok"));
        // The helper has the host; "not found" means no credentials, not the file's.
        assert_eq!(f.lookup("other.example.com/a"), None);
        assert_eq!(f.lookup("missing.example.com"), None);

        let err = lookup_with(&f.env, None, "broken.example.com").unwrap_err();
        assert_eq!(
            err.to_string(),
            "credential helper docker-credential-test get for broken.example.com failed: the keychain is locked"
        );
        let err = lookup_with(&f.env, None, "garbage.example.com").unwrap_err();
        assert!(matches!(err, AuthError::HelperOutput { .. }), "{err}");
        let err = lookup_with(&f.env, None, "bad.example.com").unwrap_err();
        assert!(matches!(err, AuthError::InvalidHelperName { .. }), "{err}");
        assert_eq!(
            f.helper_log()[..2],
            [
                "get reg.example.com".to_owned(),
                "get token.example.com".to_owned()
            ]
        );
    }

    #[test]
    fn creds_store_after_file_entries() {
        let f = Fixture::new();
        f.install_helper();
        f.write(
            "home/.docker/config.json",
            &format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{}}, "plain.example.com": {{"auth": "{}"}}}},
                    "credsStore": "test"}}"#,
                auth("plain:pw")
            ),
        );
        assert_eq!(f.lookup("plain.example.com/x"), basic("plain", "pw"));
        assert_eq!(f.lookup("reg.example.com/x"), basic("alice", "s3cret"));
        // Docker keeps Hub credentials under its v1 URL.
        assert_eq!(f.lookup("docker.io/library/alpine"), basic("hub", "hubpw"));
        assert_eq!(f.lookup("nothing.example.com"), None);
        assert!(
            f.helper_log()
                .contains(&"get https://index.docker.io/v1/".to_owned())
        );
    }

    #[test]
    fn store_writes_atomically_and_keeps_other_content() {
        let f = Fixture::new();
        let path = f.path("new/dir/auth.json");
        store_with(&f.env, &path, "quay.io", &Credentials::new("u", "p:w")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["auths"]["quay.io"]["auth"], auth("u:p:w"));
        assert_eq!(
            lookup_with(&f.env, Some(&path), "quay.io/a").unwrap(),
            basic("u", "p:w")
        );

        std::fs::write(
            &path,
            r#"{"auths": {"ghcr.io": {"auth": "eDp5"}}, "HttpHeaders": {"X": "1"}, "credsStore": ""}"#,
        )
        .unwrap();
        store_with(&f.env, &path, "quay.io/ns", &Credentials::new("ns", "pw")).unwrap();
        store_with(&f.env, &path, "quay.io/ns", &Credentials::new("ns", "pw2")).unwrap();
        store_with(
            &f.env,
            &path,
            "token.io",
            &Credentials::identity_token("tok"),
        )
        .unwrap();
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["HttpHeaders"]["X"], "1");
        assert_eq!(doc["auths"]["ghcr.io"]["auth"], "eDp5");
        assert_eq!(doc["auths"]["quay.io/ns"]["auth"], auth("ns:pw2"));
        assert_eq!(doc["auths"]["token.io"]["identitytoken"], "tok");
        assert_eq!(
            lookup_with(&f.env, Some(&path), "token.io").unwrap(),
            Some(Credentials::identity_token("tok"))
        );
        assert_eq!(mode(&path), 0o600);
        // No temporary files left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );

        std::fs::write(&path, "[1, 2]").unwrap();
        let err = store_with(&f.env, &path, "quay.io", &Credentials::new("u", "p")).unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
        let err = store_with(
            &f.env,
            &path,
            "https://quay.io",
            &Credentials::new("u", "p"),
        )
        .unwrap_err();
        assert!(matches!(err, AuthError::InvalidKey { .. }));
    }

    #[test]
    fn store_and_remove_through_helpers() {
        let f = Fixture::new();
        f.install_helper();
        let path = f.write(
            "auth.json",
            r#"{"credHelpers": {"reg.example.com": "test", "gone.example.com": "test"}}"#,
        );
        store_with(
            &f.env,
            &path,
            "reg.example.com",
            &Credentials::new("bob", "pw"),
        )
        .unwrap();
        let err = store_with(
            &f.env,
            &path,
            "reg.example.com/ns",
            &Credentials::new("b", "p"),
        )
        .unwrap_err();
        assert!(
            matches!(err, AuthError::NamespacedHelperKey { .. }),
            "{err}"
        );
        // The secret went to the helper, not the file.
        assert!(!std::fs::read_to_string(&path).unwrap().contains("auths"));
        let log = f.helper_log();
        let stored = log[0].strip_prefix("store ").unwrap();
        let stored: Value = serde_json::from_str(stored).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({"ServerURL": "reg.example.com", "Username": "bob", "Secret": "pw"})
        );

        assert!(remove_with(&f.env, &path, "reg.example.com").unwrap());
        assert!(!remove_with(&f.env, &path, "gone.example.com").unwrap());
        assert_eq!(
            f.helper_log()[1..],
            [
                "erase reg.example.com".to_owned(),
                "erase gone.example.com".to_owned()
            ]
        );

        remove_all_with(&f.env, &path).unwrap();
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc, serde_json::json!({"auths": {}}));
        assert_eq!(f.helper_log().len(), 5);
    }

    #[test]
    fn store_with_creds_store_keeps_an_empty_entry() {
        let f = Fixture::new();
        f.install_helper();
        let path = f.write("config.json", r#"{"credsStore": "test"}"#);
        store_with(&f.env, &path, "docker.io", &Credentials::new("hub", "pw")).unwrap();
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["auths"]["docker.io"], serde_json::json!({}));
        assert_eq!(doc["credsStore"], "test");
        let stored: Value =
            serde_json::from_str(f.helper_log()[0].strip_prefix("store ").unwrap()).unwrap();
        assert_eq!(stored["ServerURL"], DOCKER_HUB_SERVER);
    }

    #[test]
    fn remove_entries() {
        let f = Fixture::new();
        let path = f.path("auth.json");
        assert!(!remove_with(&f.env, &path, "quay.io").unwrap());
        assert!(!path.exists());
        store_with(&f.env, &path, "quay.io", &Credentials::new("a", "1")).unwrap();
        store_with(&f.env, &path, "quay.io/ns", &Credentials::new("b", "2")).unwrap();
        assert!(remove_with(&f.env, &path, "quay.io").unwrap());
        assert!(!remove_with(&f.env, &path, "quay.io").unwrap());
        assert_eq!(
            lookup_with(&f.env, Some(&path), "quay.io/ns/x").unwrap(),
            basic("b", "2")
        );
        assert_eq!(lookup_with(&f.env, Some(&path), "quay.io/x").unwrap(), None);

        remove_all_with(&f.env, &path).unwrap();
        assert_eq!(
            lookup_with(&f.env, Some(&path), "quay.io/ns").unwrap(),
            None
        );
        remove_all_with(&f.env, &f.path("missing.json")).unwrap();
        assert!(!f.path("missing.json").exists());
    }

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", Credentials::new("user", "hunter2"));
        assert!(
            shown.contains("user") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn programs_are_found_on_the_given_path() {
        let f = Fixture::new();
        let bin = f.path("bin");
        let path = std::env::join_paths([f.path("nowhere"), bin.clone()]).unwrap();
        assert_eq!(find_program("docker-credential-test", Some(&path)), None);
        f.install_helper();
        assert_eq!(
            find_program("docker-credential-test", Some(&path)),
            Some(bin.join("docker-credential-test"))
        );
        f.write("bin/docker-credential-noexec", "#!/bin/sh\n");
        assert_eq!(find_program("docker-credential-noexec", Some(&path)), None);
        assert_eq!(find_program("docker-credential-test", None), None);
    }
}
