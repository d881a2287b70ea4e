//! Which registry a name comes from and where it is pulled from, as
//! containers-registries.conf(5) (version 2, and the old version 1 tables) says.
//!
//! Files: `CONTAINERS_REGISTRIES_CONF` alone when set; else the user's
//! `registries.conf` (under `$XDG_CONFIG_HOME/containers` or `~/.config/containers`) with
//! the drop-ins next to it; else `/etc/containers/registries.conf` with
//! `/etc/containers/registries.conf.d/*.conf` and then the user's drop-ins. Drop-ins are
//! read in name order and later files win: `unqualified-search-registries` and
//! `short-name-mode` are replaced when set, `[[registry]]` tables are replaced by
//! prefix, aliases are merged (an empty value erases one). With no file at all the
//! built-in default searches docker.io, so short names work as they do with Docker.
//!
//! Not supported: the machine-written `short-name-aliases.conf` cache,
//! `credential-helpers` (auth files and their `credHelpers` are used instead) and
//! per-registry `proxy`; they are accepted and ignored.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reference::{self, DOCKER_HUB, ImageName, Reference, ReferenceError};

const CONF_FILE: &str = "registries.conf";
const DROP_IN_DIR: &str = "registries.conf.d";
const SYSTEM_DIR: &str = "/etc/containers";

#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    #[error("cannot read registries configuration {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list registries drop-in directory {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse registries configuration {}", path.display())]
    Parse {
        path: PathBuf,
        // Boxed, as below, to keep this error (and the engine's) small.
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid registries configuration {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error(
        "short-name {name:?} did not resolve to an alias and no unqualified-search registries are defined in {sources}"
    )]
    NoSearchRegistries { name: String, sources: String },
    #[error("short-name {name:?} resolution enforced but cannot prompt without a TTY")]
    CannotPrompt { name: String },
    #[error("registry {prefix:?} is blocked in {sources}: cannot pull {reference}")]
    Blocked {
        reference: String,
        prefix: String,
        sources: String,
    },
    #[error("short-name alias {name:?} = {value:?} is not a valid image name")]
    InvalidAlias {
        name: String,
        value: String,
        #[source]
        source: Box<ReferenceError>,
    },
    #[error("cannot rewrite {reference} to location {location:?}")]
    Rewrite {
        reference: String,
        location: String,
        #[source]
        source: Box<ReferenceError>,
    },
}

/// The merged configuration of all files read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    /// `host[:port]` entries tried in order for short names.
    pub unqualified_search_registries: Vec<String>,
    pub short_name_mode: ShortNameMode,
    /// Sorted by prefix, one table per prefix.
    pub registries: Vec<Registry>,
    /// Short name (no tag or digest) → fully qualified repository (no tag or digest).
    pub aliases: BTreeMap<String, String>,
    /// Files read, in order.
    pub sources: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ShortNameMode {
    /// Prompt on a TTY when several search registries could match; fail without one.
    Enforcing,
    /// Prompt on a TTY; without one, try every search registry in order.
    #[default]
    Permissive,
    /// Try every search registry in order, never prompt.
    Disabled,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// `host[:port][/namespace…][/repo][:tag|@digest]`, or `*.example.com`.
    pub prefix: String,
    /// Where the prefix is really served; empty only for a wildcard prefix.
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    pub mirror_by_digest_only: bool,
    pub mirrors: Vec<Mirror>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub location: String,
    pub insecure: bool,
    pub pull_from_mirror: PullFromMirror,
}

/// `pull-from-mirror`: which pulls may use a mirror.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullFromMirror {
    #[default]
    All,
    DigestOnly,
    TagOnly,
}

/// A fully qualified name a user's input may mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub reference: Reference,
    /// Resolved through `[aliases]`, so there is nothing to choose.
    pub from_alias: bool,
}

/// One place to try when pulling, in order: mirrors first, then the primary location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    /// The reference rewritten to this source's location.
    pub reference: Reference,
    pub insecure: bool,
    pub is_mirror: bool,
}

impl RegistriesConf {
    /// Reads the configuration files from their usual places (see the module docs).
    pub fn load() -> Result<Self, RegistriesError> {
        Self::load_plan(&ConfigSearch::from_env().plan())
    }

    /// What applies when no registries.conf exists: search docker.io.
    pub fn builtin() -> Self {
        RegistriesConf {
            unqualified_search_registries: vec![DOCKER_HUB.to_owned()],
            ..Default::default()
        }
    }

    /// Parses one file; `source` names it in errors and in `sources`.
    pub fn from_toml(s: &str, source: &Path) -> Result<Self, RegistriesError> {
        let mut conf = RegistriesConf::default();
        conf.apply(parse_layer(s, source, true)?, source);
        Ok(conf)
    }

    /// The fully qualified names `name` may mean, in the order to try them, each with
    /// "latest" when no tag or digest is given. A qualified name is itself; an aliased
    /// short name is its alias; other short names get one candidate per search
    /// registry. Several candidates on a TTY in enforcing or permissive mode mean the
    /// caller should let the user choose (see [`RegistriesConf::should_prompt`]).
    pub fn resolve(&self, name: &ImageName, tty: bool) -> Result<Vec<Candidate>, RegistriesError> {
        if let Some(domain) = &name.domain {
            return Ok(vec![Candidate {
                reference: Reference::from_name(name, domain).tag_or_latest(),
                from_alias: false,
            }]);
        }
        if let Some(value) = self.aliases.get(&name.path) {
            let alias =
                Reference::parse(value).map_err(|source| RegistriesError::InvalidAlias {
                    name: name.path.clone(),
                    value: value.clone(),
                    source: Box::new(source),
                })?;
            let reference = Reference {
                tag: name.tag.clone(),
                digest: name.digest.clone(),
                ..alias
            };
            return Ok(vec![Candidate {
                reference: reference.tag_or_latest(),
                from_alias: true,
            }]);
        }
        if self.unqualified_search_registries.is_empty() {
            return Err(RegistriesError::NoSearchRegistries {
                name: name.to_string(),
                sources: self.describe_sources(),
            });
        }
        let candidates: Vec<Candidate> = self
            .unqualified_search_registries
            .iter()
            .map(|registry| Candidate {
                reference: Reference::from_name(name, registry).tag_or_latest(),
                from_alias: false,
            })
            .collect();
        if candidates.len() > 1 && !tty && self.short_name_mode == ShortNameMode::Enforcing {
            return Err(RegistriesError::CannotPrompt {
                name: name.to_string(),
            });
        }
        Ok(candidates)
    }

    /// True when the user should pick one of `candidates` (as Podman prompts).
    pub fn should_prompt(&self, candidates: &[Candidate], tty: bool) -> bool {
        tty && self.short_name_mode != ShortNameMode::Disabled
            && candidates.len() > 1
            && !candidates.iter().any(|c| c.from_alias)
    }

    /// The `[[registry]]` table with the longest prefix matching `reference` (a host, a
    /// repository name or a full reference).
    pub fn find_registry(&self, reference: &str) -> Option<&Registry> {
        self.find_match(reference).map(|(r, _)| r)
    }

    /// Where to pull `r` from, in order: the mirrors that apply, then the primary
    /// location, each with the prefix rewritten to its location.
    pub fn pull_sources(&self, r: &Reference) -> Result<Vec<PullSource>, RegistriesError> {
        let full = r.to_string();
        let Some((registry, end)) = self.find_match(&full) else {
            return Ok(vec![PullSource {
                reference: r.clone(),
                insecure: false,
                is_mirror: false,
            }]);
        };
        if registry.blocked {
            return Err(RegistriesError::Blocked {
                reference: full,
                prefix: registry.prefix.clone(),
                sources: self.describe_sources(),
            });
        }
        let digested = r.digest.is_some();
        let mut sources = Vec::new();
        for mirror in &registry.mirrors {
            let wanted = if registry.mirror_by_digest_only {
                digested
            } else {
                match mirror.pull_from_mirror {
                    PullFromMirror::All => true,
                    PullFromMirror::DigestOnly => digested,
                    PullFromMirror::TagOnly => !digested,
                }
            };
            if wanted {
                sources.push(PullSource {
                    reference: rewrite(r, &full, end, &mirror.location)?,
                    insecure: mirror.insecure,
                    is_mirror: true,
                });
            }
        }
        sources.push(PullSource {
            reference: rewrite(r, &full, end, &registry.location)?,
            insecure: registry.insecure,
            is_mirror: false,
        });
        Ok(sources)
    }

    /// True when the registry table matching `host` allows HTTP and unverified TLS.
    pub fn is_insecure(&self, host: &str) -> bool {
        self.find_registry(host).is_some_and(|r| r.insecure)
    }

    fn find_match(&self, reference: &str) -> Option<(&Registry, usize)> {
        let mut best: Option<(&Registry, usize)> = None;
        for registry in &self.registries {
            if let Some(end) = prefix_match(reference, &registry.prefix)
                && best.is_none_or(|(b, _)| registry.prefix.len() > b.prefix.len())
            {
                best = Some((registry, end));
            }
        }
        best
    }

    fn apply(&mut self, layer: Layer, source: &Path) {
        if let Some(search) = layer.search {
            self.unqualified_search_registries = search;
        }
        if let Some(mode) = layer.mode {
            self.short_name_mode = mode;
        }
        let mut by_prefix: BTreeMap<String, Registry> = std::mem::take(&mut self.registries)
            .into_iter()
            .map(|r| (r.prefix.clone(), r))
            .collect();
        for r in layer.registries {
            by_prefix.insert(r.prefix.clone(), r);
        }
        self.registries = by_prefix.into_values().collect();
        for (name, value) in layer.aliases {
            match value {
                Some(v) => self.aliases.insert(name, v),
                None => self.aliases.remove(&name),
            };
        }
        self.sources.push(source.to_path_buf());
    }

    fn load_plan(plan: &Plan) -> Result<Self, RegistriesError> {
        let mut conf = match std::fs::read_to_string(&plan.main) {
            Ok(s) => Self::from_toml(&s, &plan.main)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !plan.main_required => Self::builtin(),
            Err(source) => {
                return Err(RegistriesError::Read {
                    path: plan.main.clone(),
                    source,
                });
            }
        };
        for dir in &plan.drop_in_dirs {
            for file in drop_in_files(dir)? {
                let s = match std::fs::read_to_string(&file) {
                    Ok(s) => s,
                    // Removed since the directory was listed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(RegistriesError::Read { path: file, source }),
                };
                conf.apply(parse_layer(&s, &file, false)?, &file);
            }
        }
        Ok(conf)
    }

    fn describe_sources(&self) -> String {
        if self.sources.is_empty() {
            return "no containers-registries.conf(5) file (none was found)".to_owned();
        }
        let names: Vec<String> = self
            .sources
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect();
        names.join(", ")
    }
}

/// The end of the matched part of `reference` when `prefix` matches it: the prefix
/// followed by the end or by ':', '/' or '@'; `*.example.com` matches hosts under
/// example.com.
fn prefix_match(reference: &str, prefix: &str) -> Option<usize> {
    let end = if let Some(suffix) = prefix.strip_prefix('*') {
        let host_end = reference.find([':', '/', '@']).unwrap_or(reference.len());
        let host = &reference[..host_end];
        if host.len() <= suffix.len() || !host.ends_with(suffix) {
            return None;
        }
        host_end
    } else {
        if !reference.starts_with(prefix) {
            return None;
        }
        prefix.len()
    };
    match reference.as_bytes().get(end) {
        None | Some(b':' | b'/' | b'@') => Some(end),
        Some(_) => None,
    }
}

fn rewrite(
    r: &Reference,
    full: &str,
    end: usize,
    location: &str,
) -> Result<Reference, RegistriesError> {
    if location.is_empty() {
        return Ok(r.clone());
    }
    Reference::parse(&format!("{location}{}", &full[end..])).map_err(|source| {
        RegistriesError::Rewrite {
            reference: full.to_owned(),
            location: location.to_owned(),
            source: Box::new(source),
        }
    })
}

/// Where the files are, from the environment.
#[derive(Debug, Clone)]
struct ConfigSearch {
    /// `CONTAINERS_REGISTRIES_CONF`.
    env_override: Option<PathBuf>,
    /// The user's `containers` config directories, preferred first.
    user_dirs: Vec<PathBuf>,
    system_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    main: PathBuf,
    main_required: bool,
    drop_in_dirs: Vec<PathBuf>,
}

impl ConfigSearch {
    fn from_env() -> Self {
        let nonempty = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let mut user_dirs = Vec::new();
        if let Some(xdg) = nonempty("XDG_CONFIG_HOME").filter(|p| p.is_absolute()) {
            user_dirs.push(xdg.join("containers"));
        }
        let home = nonempty("HOME")
            .or_else(|| directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf()));
        if let Some(home) = home {
            let dir = home.join(".config").join("containers");
            if !user_dirs.contains(&dir) {
                user_dirs.push(dir);
            }
        }
        ConfigSearch {
            env_override: nonempty("CONTAINERS_REGISTRIES_CONF"),
            user_dirs,
            system_dir: PathBuf::from(SYSTEM_DIR),
        }
    }

    fn plan(&self) -> Plan {
        if let Some(path) = &self.env_override {
            return Plan {
                main: path.clone(),
                main_required: true,
                drop_in_dirs: Vec::new(),
            };
        }
        if let Some(dir) = self.user_dirs.iter().find(|d| d.join(CONF_FILE).exists()) {
            return Plan {
                main: dir.join(CONF_FILE),
                main_required: false,
                drop_in_dirs: vec![dir.join(DROP_IN_DIR)],
            };
        }
        let mut drop_in_dirs = vec![self.system_dir.join(DROP_IN_DIR)];
        if let Some(dir) = self.user_dirs.first() {
            drop_in_dirs.push(dir.join(DROP_IN_DIR));
        }
        Plan {
            main: self.system_dir.join(CONF_FILE),
            main_required: false,
            drop_in_dirs,
        }
    }
}

/// The `*.conf` files directly in `dir`, by name; none when it does not exist.
fn drop_in_files(dir: &Path) -> Result<Vec<PathBuf>, RegistriesError> {
    let read_dir_err = |source| RegistriesError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_dir_err(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(read_dir_err)?.path();
        if path.extension().is_some_and(|e| e == "conf") && !path.is_dir() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// One file's settings before merging; `None` means not set in this file.
#[derive(Debug, Default)]
struct Layer {
    search: Option<Vec<String>>,
    mode: Option<ShortNameMode>,
    registries: Vec<Registry>,
    /// `None` erases the alias.
    aliases: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawFile {
    unqualified_search_registries: Option<Vec<String>>,
    short_name_mode: Option<String>,
    registry: Option<Vec<RawRegistry>>,
    aliases: Option<BTreeMap<String, String>>,
    credential_helpers: Option<Vec<String>>,
    additional_layer_store_auth_helper: Option<String>,
    /// Version 1: `[registries.search]`, `[registries.insecure]`, `[registries.block]`.
    registries: Option<RawV1>,
}

const KNOWN_KEYS: [&str; 7] = [
    "unqualified-search-registries",
    "short-name-mode",
    "registry",
    "aliases",
    "credential-helpers",
    "additional-layer-store-auth-helper",
    "registries",
];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
struct RawRegistry {
    prefix: String,
    location: String,
    insecure: bool,
    blocked: bool,
    mirror_by_digest_only: bool,
    mirror: Vec<RawMirror>,
    pull_from_mirror: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
struct RawMirror {
    location: String,
    insecure: bool,
    pull_from_mirror: String,
}

#[derive(Debug, Deserialize)]
struct RawV1 {
    search: Option<RawV1List>,
    insecure: Option<RawV1List>,
    block: Option<RawV1List>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawV1List {
    registries: Vec<String>,
}

fn parse_layer(s: &str, path: &Path, allow_v1: bool) -> Result<Layer, RegistriesError> {
    let invalid = |message: String| RegistriesError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let raw: RawFile = toml::from_str(s).map_err(|source| RegistriesError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    if let Ok(table) = s.parse::<toml::Table>() {
        for key in table.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            tracing::debug!("ignoring unknown key {key:?} in {}", path.display());
        }
    }
    if let Some(helpers) = &raw.credential_helpers
        && helpers.iter().any(|h| h != "containers-auth.json")
    {
        tracing::warn!(
            "credential-helpers in {} are not supported and are ignored; credHelpers in auth files are",
            path.display()
        );
    }

    let v2_set = raw.unqualified_search_registries.is_some()
        || raw.short_name_mode.is_some()
        || raw.registry.is_some()
        || raw.aliases.is_some()
        || raw.credential_helpers.is_some()
        || raw.additional_layer_store_auth_helper.is_some();
    let (search, raw_registries) = match raw.registries {
        Some(v1) => {
            if !allow_v1 {
                return Err(invalid(
                    "drop-in files must use the version 2 format, not [registries.search], [registries.insecure] or [registries.block]".into(),
                ));
            }
            if v2_set {
                return Err(invalid(
                    "mixing version 1 tables ([registries.search], [registries.insecure], [registries.block]) with version 2 settings is not supported".into(),
                ));
            }
            convert_v1(v1)
        }
        None => (
            raw.unqualified_search_registries,
            raw.registry.unwrap_or_default(),
        ),
    };

    let search = match search {
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for entry in list {
                let host = parse_location(&entry).map_err(&invalid)?;
                if !reference::is_valid_domain(&host) {
                    return Err(invalid(format!(
                        "invalid unqualified-search-registries entry {entry:?}: expected host[:port]"
                    )));
                }
                out.push(host);
            }
            Some(out)
        }
        None => None,
    };

    let mode = match raw.short_name_mode.as_deref() {
        None | Some("") => None,
        Some("enforcing") => Some(ShortNameMode::Enforcing),
        Some("permissive") => Some(ShortNameMode::Permissive),
        Some("disabled") => Some(ShortNameMode::Disabled),
        Some(other) => {
            return Err(invalid(format!(
                "invalid short-name-mode {other:?}: expected \"enforcing\", \"permissive\" or \"disabled\""
            )));
        }
    };

    let registries = validate_registries(raw_registries).map_err(invalid)?;

    let mut aliases = BTreeMap::new();
    for (name, value) in raw.aliases.unwrap_or_default() {
        let short = reference::parse_name(&name).ok();
        if !short.is_some_and(|n| n.is_short() && n.tag.is_none() && n.digest.is_none()) {
            return Err(invalid(format!(
                "invalid short-name alias {name:?}: it must be a short name without registry, tag or digest"
            )));
        }
        if value.is_empty() {
            aliases.insert(name, None);
            continue;
        }
        let target = Reference::parse(&value).map_err(|e| {
            invalid(format!(
                "invalid short-name alias {name:?} = {value:?}: {e}"
            ))
        })?;
        if target.tag.is_some() || target.digest.is_some() {
            return Err(invalid(format!(
                "invalid short-name alias {name:?} = {value:?}: the value must not have a tag or digest"
            )));
        }
        aliases.insert(name, Some(target.repo_name()));
    }

    Ok(Layer {
        search,
        mode,
        registries,
        aliases,
    })
}

/// Version 1 lists as version 2 settings: search registries and one table per host.
fn convert_v1(v1: RawV1) -> (Option<Vec<String>>, Vec<RawRegistry>) {
    let mut tables: Vec<RawRegistry> = Vec::new();
    let mut table_for = |host: String| -> usize {
        let host = host.trim_end_matches('/').to_owned();
        match tables.iter().position(|t| t.location == host) {
            Some(i) => i,
            None => {
                tables.push(RawRegistry {
                    location: host,
                    ..Default::default()
                });
                tables.len() - 1
            }
        }
    };
    let mut blocked = Vec::new();
    for host in v1.block.unwrap_or_default().registries {
        blocked.push(table_for(host));
    }
    let mut insecure = Vec::new();
    for host in v1.insecure.unwrap_or_default().registries {
        insecure.push(table_for(host));
    }
    for i in blocked {
        tables[i].blocked = true;
    }
    for i in insecure {
        tables[i].insecure = true;
    }
    (v1.search.map(|s| s.registries), tables)
}

/// A prefix or location without trailing '/'; URI schemes are rejected.
fn parse_location(input: &str) -> Result<String, String> {
    if input.starts_with("http://") || input.starts_with("https://") {
        return Err(format!(
            "location {input:?} must not include a URI scheme; write host[:port][/path]"
        ));
    }
    Ok(input.trim_end_matches('/').to_owned())
}

fn validate_registries(raw: Vec<RawRegistry>) -> Result<Vec<Registry>, String> {
    let mut out: Vec<Registry> = Vec::new();
    for r in raw {
        let location = parse_location(&r.location)?;
        let prefix = if r.prefix.is_empty() {
            if location.is_empty() {
                return Err("a [[registry]] table sets neither prefix nor location".into());
            }
            location.clone()
        } else {
            let prefix = parse_location(&r.prefix)?;
            if prefix.contains('*') {
                let valid = prefix.starts_with("*.")
                    && !prefix[1..].contains(['*', '/', '@', ':'])
                    && prefix.len() > 2;
                if !valid {
                    return Err(format!(
                        "wildcard prefix {prefix:?} must have the form \"*.example.com\", without port, path, tag or digest"
                    ));
                }
            } else if location.is_empty() {
                return Err(format!(
                    "[[registry]] with prefix {prefix:?} has no location; only a wildcard prefix (\"*.example.com\") may omit it"
                ));
            }
            prefix
        };
        if !r.pull_from_mirror.is_empty() {
            return Err(format!(
                "pull-from-mirror is set on registry {prefix:?}; it belongs in its [[registry.mirror]] tables"
            ));
        }
        let mut mirrors = Vec::with_capacity(r.mirror.len());
        for m in r.mirror {
            let location = parse_location(&m.location)?;
            if location.is_empty() {
                return Err(format!("a mirror of registry {prefix:?} has no location"));
            }
            let pull_from_mirror = match m.pull_from_mirror.as_str() {
                _ if r.mirror_by_digest_only && !m.pull_from_mirror.is_empty() => {
                    return Err(format!(
                        "registry {prefix:?} sets mirror-by-digest-only and its mirror {location:?} sets pull-from-mirror; use one of them"
                    ));
                }
                "" | "all" => PullFromMirror::All,
                "digest-only" => PullFromMirror::DigestOnly,
                "tag-only" => PullFromMirror::TagOnly,
                other => {
                    return Err(format!(
                        "invalid pull-from-mirror {other:?} for mirror {location:?}: expected \"all\", \"digest-only\" or \"tag-only\""
                    ));
                }
            };
            mirrors.push(Mirror {
                location,
                insecure: m.insecure,
                pull_from_mirror,
            });
        }
        let new = Registry {
            prefix,
            location,
            insecure: r.insecure,
            blocked: r.blocked,
            mirror_by_digest_only: r.mirror_by_digest_only,
            mirrors,
        };
        // One host may back several prefixes, but it is either secure or not, blocked or not.
        let host_of = |r: &Registry| {
            if r.location.is_empty() {
                r.prefix.clone()
            } else {
                r.location.clone()
            }
        };
        for other in out.iter().filter(|o| host_of(o) == host_of(&new)) {
            for (setting, differs) in [
                ("insecure", other.insecure != new.insecure),
                ("blocked", other.blocked != new.blocked),
            ] {
                if differs {
                    return Err(format!(
                        "registry {:?} is defined multiple times with conflicting '{setting}' settings",
                        host_of(&new)
                    ));
                }
            }
        }
        // Within one file the first table for a prefix wins, as in Podman.
        if !out.iter().any(|o| o.prefix == new.prefix) {
            out.push(new);
        }
    }
    out.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reference::parse_name;

    const D256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn conf(s: &str) -> RegistriesConf {
        RegistriesConf::from_toml(s, Path::new("/test/registries.conf"))
            .unwrap_or_else(|e| panic!("{e}: {:?}", std::error::Error::source(&e)))
    }

    fn invalid(s: &str) -> String {
        match RegistriesConf::from_toml(s, Path::new("/test/registries.conf")) {
            Err(e @ RegistriesError::Invalid { .. }) => e.to_string(),
            other => panic!("expected an invalid configuration, got {other:?}"),
        }
    }

    fn refs(c: &[Candidate]) -> Vec<String> {
        c.iter().map(|c| c.reference.to_string()).collect()
    }

    fn sources(c: &RegistriesConf, r: &str) -> Vec<(String, bool, bool)> {
        c.pull_sources(&Reference::parse(r).unwrap())
            .unwrap()
            .into_iter()
            .map(|s| (s.reference.to_string(), s.insecure, s.is_mirror))
            .collect()
    }

    #[test]
    fn parses_version_2() {
        let c = conf(
            r#"
unqualified-search-registries = ["registry.fedoraproject.org", "quay.io/", "docker.io"]
short-name-mode = "enforcing"

[[registry]]
prefix = "example.com/foo"
insecure = false
blocked = false
location = "internal-registry-for-example.com/bar/"

[[registry.mirror]]
location = "example-mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "example-mirror-1.local/mirrors/foo"
insecure = true
pull-from-mirror = "digest-only"

[[registry]]
location = "localhost:5000"
insecure = true

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"alpine" = "docker.io/alpine"
"#,
        );
        assert_eq!(
            c.unqualified_search_registries,
            ["registry.fedoraproject.org", "quay.io", "docker.io"]
        );
        assert_eq!(c.short_name_mode, ShortNameMode::Enforcing);
        assert_eq!(c.registries.len(), 2);
        let foo = &c.registries[0];
        assert_eq!(foo.prefix, "example.com/foo");
        assert_eq!(foo.location, "internal-registry-for-example.com/bar");
        assert_eq!(foo.mirrors.len(), 2);
        assert_eq!(foo.mirrors[1].pull_from_mirror, PullFromMirror::DigestOnly);
        assert!(foo.mirrors[1].insecure);
        let local = &c.registries[1];
        assert_eq!(local.prefix, "localhost:5000");
        assert!(local.insecure);
        assert_eq!(c.aliases["fedora"], "registry.fedoraproject.org/fedora");
        assert_eq!(c.aliases["alpine"], "docker.io/library/alpine");
        assert_eq!(c.sources, [PathBuf::from("/test/registries.conf")]);
    }

    #[test]
    fn empty_file_is_empty_configuration() {
        let c = conf("");
        assert!(c.unqualified_search_registries.is_empty());
        assert_eq!(c.short_name_mode, ShortNameMode::Permissive);
        assert!(c.registries.is_empty());
        let c = conf("short-name-mode = \"\"\nunknown-key = 1\n");
        assert_eq!(c.short_name_mode, ShortNameMode::Permissive);
    }

    #[test]
    fn parses_version_1() {
        let c = conf(
            r#"
[registries.search]
registries = ['registry1.com', 'registry2.com']

[registries.insecure]
registries = ['registry3.com', 'registry1.com']

[registries.block]
registries = ['registry.untrusted.com', 'registry.unsafe.com']
"#,
        );
        assert_eq!(
            c.unqualified_search_registries,
            ["registry1.com", "registry2.com"]
        );
        let flags: Vec<(&str, bool, bool)> = c
            .registries
            .iter()
            .map(|r| (r.prefix.as_str(), r.insecure, r.blocked))
            .collect();
        assert_eq!(
            flags,
            [
                ("registry.unsafe.com", false, true),
                ("registry.untrusted.com", false, true),
                ("registry1.com", true, false),
                ("registry3.com", true, false),
            ]
        );
        assert!(c.is_insecure("registry3.com"));
        assert!(
            c.pull_sources(&Reference::parse("registry.unsafe.com/x").unwrap())
                .is_err()
        );
    }

    #[test]
    fn mixing_versions_is_an_error() {
        let msg = invalid(
            "unqualified-search-registries = [\"quay.io\"]\n[registries.search]\nregistries = [\"docker.io\"]\n",
        );
        assert!(msg.contains("/test/registries.conf"), "{msg}");
        assert!(msg.contains("mixing version 1"), "{msg}");
    }

    #[test]
    fn invalid_configurations() {
        for (toml, wanted) in [
            (
                "[[registry]]\nlocation = \"https://quay.io\"\n",
                "URI scheme",
            ),
            (
                "[[registry]]\ninsecure = true\n",
                "neither prefix nor location",
            ),
            ("[[registry]]\nprefix = \"quay.io\"\n", "has no location"),
            (
                "[[registry]]\nlocation = \"quay.io\"\npull-from-mirror = \"all\"\n",
                "belongs in its [[registry.mirror]]",
            ),
            (
                "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\ninsecure = true\n",
                "has no location",
            ),
            (
                "[[registry]]\nlocation = \"quay.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.local\"\npull-from-mirror = \"all\"\n",
                "use one of them",
            ),
            (
                "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"m.local\"\npull-from-mirror = \"sometimes\"\n",
                "invalid pull-from-mirror \"sometimes\"",
            ),
            (
                "[[registry]]\nprefix = \"a.quay.io\"\nlocation = \"quay.io\"\ninsecure = true\n[[registry]]\nprefix = \"b.quay.io\"\nlocation = \"quay.io\"\n",
                "conflicting 'insecure'",
            ),
            (
                "[[registry]]\nprefix = \"*.example.com/ns\"\n",
                "wildcard prefix",
            ),
            (
                "[[registry]]\nprefix = \"foo.*.com\"\nlocation = \"x.com\"\n",
                "wildcard prefix",
            ),
            (
                "short-name-mode = \"strict\"\n",
                "invalid short-name-mode \"strict\"",
            ),
            (
                "unqualified-search-registries = [\"quay.io/ns\"]\n",
                "invalid unqualified-search-registries entry",
            ),
            (
                "[aliases]\n\"quay.io/x\" = \"quay.io/x\"\n",
                "must be a short name",
            ),
            (
                "[aliases]\n\"x:1\" = \"quay.io/x\"\n",
                "must be a short name",
            ),
            ("[aliases]\n\"x\" = \"x\"\n", "not fully qualified"),
            (
                "[aliases]\n\"x\" = \"quay.io/x:1\"\n",
                "must not have a tag",
            ),
        ] {
            let msg = invalid(toml);
            assert!(msg.contains(wanted), "{toml}: {msg}");
            assert!(msg.starts_with("invalid registries configuration /test/registries.conf: "));
        }
    }

    #[test]
    fn toml_syntax_errors_name_the_file() {
        let err = RegistriesConf::from_toml("[[registry]\n", Path::new("/x/r.conf")).unwrap_err();
        assert!(matches!(err, RegistriesError::Parse { .. }));
        assert_eq!(
            err.to_string(),
            "cannot parse registries configuration /x/r.conf"
        );
        let err =
            RegistriesConf::from_toml("short-name-mode = 3\n", Path::new("/x/r.conf")).unwrap_err();
        assert!(matches!(err, RegistriesError::Parse { .. }));
    }

    #[test]
    fn first_table_for_a_prefix_wins_within_a_file() {
        let c = conf(
            "[[registry]]\nprefix = \"quay.io\"\nlocation = \"one.local\"\n[[registry]]\nprefix = \"quay.io\"\nlocation = \"two.local\"\n",
        );
        assert_eq!(c.registries.len(), 1);
        assert_eq!(c.registries[0].location, "one.local");
    }

    #[test]
    fn resolve_qualified_names() {
        let c = conf(
            "unqualified-search-registries = [\"quay.io\", \"docker.io\"]\nshort-name-mode = \"enforcing\"\n",
        );
        let got = c
            .resolve(&parse_name("docker.io/alpine").unwrap(), false)
            .unwrap();
        assert_eq!(refs(&got), ["docker.io/library/alpine:latest"]);
        assert!(!got[0].from_alias);
        let got = c
            .resolve(&parse_name(&format!("quay.io/a/b@{D256}")).unwrap(), false)
            .unwrap();
        assert_eq!(refs(&got), [format!("quay.io/a/b@{D256}")]);
    }

    #[test]
    fn resolve_aliases_carry_tag_and_digest() {
        let c = conf(
            "unqualified-search-registries = [\"quay.io\", \"docker.io\"]\nshort-name-mode = \"enforcing\"\n[aliases]\n\"fedora\" = \"registry.fedoraproject.org/fedora\"\n\"library/alpine\" = \"docker.io/library/alpine\"\n",
        );
        let got = c.resolve(&parse_name("fedora").unwrap(), false).unwrap();
        assert_eq!(refs(&got), ["registry.fedoraproject.org/fedora:latest"]);
        assert!(got[0].from_alias);
        let got = c.resolve(&parse_name("fedora:40").unwrap(), false).unwrap();
        assert_eq!(refs(&got), ["registry.fedoraproject.org/fedora:40"]);
        let got = c
            .resolve(&parse_name(&format!("fedora@{D256}")).unwrap(), false)
            .unwrap();
        assert_eq!(
            refs(&got),
            [format!("registry.fedoraproject.org/fedora@{D256}")]
        );
        let got = c
            .resolve(&parse_name("library/alpine:3").unwrap(), false)
            .unwrap();
        assert_eq!(refs(&got), ["docker.io/library/alpine:3"]);
        assert!(!c.should_prompt(&got, true));
        // Aliases match the whole short name, not a prefix of it.
        let got = c
            .resolve(&parse_name("fedora/toolbox").unwrap(), true)
            .unwrap();
        assert_eq!(
            refs(&got),
            [
                "quay.io/fedora/toolbox:latest",
                "docker.io/fedora/toolbox:latest"
            ]
        );
        assert!(!got[0].from_alias);
    }

    #[test]
    fn resolve_with_search_registries() {
        let mut c = conf("unqualified-search-registries = [\"quay.io\", \"docker.io\"]\n");
        for mode in [ShortNameMode::Permissive, ShortNameMode::Disabled] {
            c.short_name_mode = mode;
            let got = c.resolve(&parse_name("alpine").unwrap(), false).unwrap();
            assert_eq!(
                refs(&got),
                ["quay.io/alpine:latest", "docker.io/library/alpine:latest"]
            );
            let got = c.resolve(&parse_name("user/app:1").unwrap(), true).unwrap();
            assert_eq!(refs(&got), ["quay.io/user/app:1", "docker.io/user/app:1"]);
            assert_eq!(
                c.should_prompt(&got, true),
                mode == ShortNameMode::Permissive
            );
            assert!(!c.should_prompt(&got, false));
        }

        c.short_name_mode = ShortNameMode::Enforcing;
        let err = c
            .resolve(&parse_name("alpine:3").unwrap(), false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"short-name "alpine:3" resolution enforced but cannot prompt without a TTY"#
        );
        let got = c.resolve(&parse_name("alpine").unwrap(), true).unwrap();
        assert_eq!(got.len(), 2);
        assert!(c.should_prompt(&got, true));

        // One search registry is no ambiguity, even when enforcing.
        c.unqualified_search_registries = vec!["docker.io".into()];
        let got = c.resolve(&parse_name("alpine").unwrap(), false).unwrap();
        assert_eq!(refs(&got), ["docker.io/library/alpine:latest"]);
        assert!(!c.should_prompt(&got, true));
    }

    #[test]
    fn resolve_without_search_registries() {
        let c = conf("short-name-mode = \"permissive\"\n");
        let err = c.resolve(&parse_name("alpine").unwrap(), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"short-name "alpine" did not resolve to an alias and no unqualified-search registries are defined in "/test/registries.conf""#
        );
        let err = RegistriesConf::default()
            .resolve(&parse_name("alpine").unwrap(), true)
            .unwrap_err();
        assert!(err.to_string().contains("none was found"), "{err}");
        let got = RegistriesConf::builtin()
            .resolve(&parse_name("alpine").unwrap(), false)
            .unwrap();
        assert_eq!(refs(&got), ["docker.io/library/alpine:latest"]);
    }

    #[test]
    fn pull_sources_without_a_table() {
        let c = conf("[[registry]]\nlocation = \"example.com/foo\"\ninsecure = true\n");
        assert_eq!(
            sources(&c, "quay.io/a/b:1"),
            [("quay.io/a/b:1".to_owned(), false, false)]
        );
        // "example.com/foo" is not a prefix of "example.com/foobar".
        assert_eq!(
            sources(&c, "example.com/foobar:1"),
            [("example.com/foobar:1".to_owned(), false, false)]
        );
        assert_eq!(
            sources(&c, "example.com/foo:1"),
            [("example.com/foo:1".to_owned(), true, false)]
        );
    }

    #[test]
    fn pull_sources_man_page_example() {
        let c = conf(
            r#"
[[registry]]
prefix = "example.com/foo"
location = "internal-registry-for-example.net/bar"

[[registry.mirror]]
location = "example-mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "example-mirror-1.local/mirrors/foo"
insecure = true
"#,
        );
        assert_eq!(
            sources(&c, "example.com/foo/image:latest"),
            [
                (
                    "example-mirror-0.local/mirror-for-foo/image:latest".to_owned(),
                    false,
                    true
                ),
                (
                    "example-mirror-1.local/mirrors/foo/image:latest".to_owned(),
                    true,
                    true
                ),
                (
                    "internal-registry-for-example.net/bar/image:latest".to_owned(),
                    false,
                    false
                ),
            ]
        );
    }

    #[test]
    fn pull_sources_longest_prefix_wins() {
        let c = conf(
            r#"
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.gcr.io"

[[registry]]
prefix = "docker.io/library/alpine"
location = "alpine-cache.local/alpine"
insecure = true

[[registry]]
prefix = "docker.io/library/alpine:edge"
location = "edge.local/alpine"
"#,
        );
        assert_eq!(
            sources(&c, "docker.io/library/busybox:1"),
            [
                ("mirror.gcr.io/library/busybox:1".to_owned(), false, true),
                ("docker.io/library/busybox:1".to_owned(), false, false),
            ]
        );
        assert_eq!(
            sources(&c, "docker.io/library/alpine:3"),
            [("alpine-cache.local/alpine:3".to_owned(), true, false)]
        );
        assert_eq!(
            sources(&c, "docker.io/library/alpine:edge"),
            [("edge.local/alpine".to_owned(), false, false)]
        );
        assert_eq!(
            c.find_registry("docker.io/library/alpine")
                .map(|r| r.prefix.as_str()),
            Some("docker.io/library/alpine")
        );
        assert!(c.is_insecure("docker.io/library/alpine"));
        assert!(!c.is_insecure("docker.io"));
    }

    #[test]
    fn pull_sources_respect_digest_and_tag_restrictions() {
        let c = conf(
            r#"
[[registry]]
location = "quay.io"
[[registry.mirror]]
location = "all.local"
[[registry.mirror]]
location = "digest.local"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tag.local"
pull-from-mirror = "tag-only"

[[registry]]
location = "ghcr.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "ghcr-mirror.local"
"#,
        );
        let names = |r: &str| -> Vec<String> { sources(&c, r).into_iter().map(|s| s.0).collect() };
        assert_eq!(
            names("quay.io/a:1"),
            ["all.local/a:1", "tag.local/a:1", "quay.io/a:1"]
        );
        assert_eq!(
            names(&format!("quay.io/a@{D256}")),
            [
                format!("all.local/a@{D256}"),
                format!("digest.local/a@{D256}"),
                format!("quay.io/a@{D256}")
            ]
        );
        assert_eq!(names("ghcr.io/a:1"), ["ghcr.io/a:1"]);
        assert_eq!(
            names(&format!("ghcr.io/a@{D256}")),
            [
                format!("ghcr-mirror.local/a@{D256}"),
                format!("ghcr.io/a@{D256}")
            ]
        );
    }

    #[test]
    fn blocked_registries() {
        let c = conf(
            "[[registry]]\nlocation = \"evil.io\"\nblocked = true\n[[registry]]\nprefix = \"evil.io/ok\"\nlocation = \"evil.io/ok\"\nblocked = false\n",
        );
        let err = c
            .pull_sources(&Reference::parse("evil.io/x:1").unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"registry "evil.io" is blocked in "/test/registries.conf": cannot pull evil.io/x:1"#
        );
        assert_eq!(sources(&c, "evil.io/ok/x:1").len(), 1);
    }

    #[test]
    fn wildcard_prefixes() {
        let c = conf(
            r#"
[[registry]]
prefix = "*.example.com"
insecure = true

[[registry]]
prefix = "*.corp.example"
location = "proxy.corp.example"
"#,
        );
        assert_eq!(
            sources(&c, "a.example.com/x:1"),
            [("a.example.com/x:1".to_owned(), true, false)]
        );
        assert_eq!(
            sources(&c, "a.b.example.com:5000/x:1"),
            [("a.b.example.com:5000/x:1".to_owned(), true, false)]
        );
        assert_eq!(
            sources(&c, "example.com/x:1"),
            [("example.com/x:1".to_owned(), false, false)]
        );
        assert_eq!(
            sources(&c, "notexample.com/x:1"),
            [("notexample.com/x:1".to_owned(), false, false)]
        );
        assert_eq!(
            sources(&c, "git.corp.example/team/app:2"),
            [("proxy.corp.example/team/app:2".to_owned(), false, false)]
        );
        assert!(c.is_insecure("registry.example.com"));
        assert!(!c.is_insecure("example.com"));
    }

    #[test]
    fn prefix_matching_rules() {
        assert_eq!(prefix_match("quay.io/a", "quay.io"), Some(7));
        assert_eq!(prefix_match("quay.io", "quay.io"), Some(7));
        assert_eq!(prefix_match("quay.io:443/a", "quay.io"), Some(7));
        assert_eq!(prefix_match("quay.io/a@sha256:x", "quay.io/a"), Some(9));
        assert_eq!(prefix_match("quay.iox/a", "quay.io"), None);
        assert_eq!(prefix_match("quay.i", "quay.io"), None);
        assert_eq!(prefix_match("a.b.c/x", "*.b.c"), Some(5));
        assert_eq!(prefix_match("x/a.b.c", "*.b.c"), None);
        assert_eq!(prefix_match("b.c/x", "*.b.c"), None);
    }

    /// A home and a system directory laid out on disk.
    struct Tree {
        _tmp: tempfile::TempDir,
        user: PathBuf,
        system: PathBuf,
    }

    impl Tree {
        fn new() -> Tree {
            let tmp = tempfile::tempdir().unwrap();
            let user = tmp.path().join("home/.config/containers");
            let system = tmp.path().join("etc/containers");
            std::fs::create_dir_all(&user).unwrap();
            std::fs::create_dir_all(&system).unwrap();
            Tree {
                _tmp: tmp,
                user,
                system,
            }
        }

        fn write(&self, path: &Path, s: &str) {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, s).unwrap();
        }

        fn search(&self, env_override: Option<PathBuf>) -> ConfigSearch {
            ConfigSearch {
                env_override,
                user_dirs: vec![self.user.clone()],
                system_dir: self.system.clone(),
            }
        }

        fn load(&self, env_override: Option<PathBuf>) -> Result<RegistriesConf, RegistriesError> {
            RegistriesConf::load_plan(&self.search(env_override).plan())
        }
    }

    #[test]
    fn load_without_any_file_uses_builtin_defaults() {
        let t = Tree::new();
        let c = t.load(None).unwrap();
        assert_eq!(c, RegistriesConf::builtin());
        assert_eq!(c.unqualified_search_registries, ["docker.io"]);
    }

    #[test]
    fn load_system_file_then_system_and_user_drop_ins() {
        let t = Tree::new();
        t.write(
            &t.system.join("registries.conf"),
            r#"
unqualified-search-registries = ["registry.fedoraproject.org", "docker.io"]
short-name-mode = "enforcing"
[[registry]]
location = "quay.io"
insecure = true
[[registry]]
location = "ghcr.io"
[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"ubi" = "registry.access.redhat.com/ubi9"
"#,
        );
        let d = t.system.join("registries.conf.d");
        t.write(
            &d.join("10-search.conf"),
            "unqualified-search-registries = [\"quay.io\"]\n[aliases]\n\"ubi\" = \"\"\n\"busybox\" = \"docker.io/busybox\"\n",
        );
        t.write(
            &d.join("20-quay.conf"),
            "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"quay-mirror.local\"\n",
        );
        t.write(&d.join("30-ignored.txt"), "this is not toml");
        std::fs::create_dir_all(d.join("40-dir.conf")).unwrap();
        t.write(
            &t.user.join("registries.conf.d/50-user.conf"),
            "short-name-mode = \"disabled\"\n",
        );

        let c = t.load(None).unwrap();
        assert_eq!(c.unqualified_search_registries, ["quay.io"]);
        assert_eq!(c.short_name_mode, ShortNameMode::Disabled);
        let quay = c.find_registry("quay.io").unwrap();
        assert!(!quay.insecure, "the drop-in replaced the whole table");
        assert_eq!(quay.mirrors.len(), 1);
        assert!(c.find_registry("ghcr.io").is_some());
        assert_eq!(
            c.aliases.keys().map(String::as_str).collect::<Vec<_>>(),
            ["busybox", "fedora"]
        );
        assert_eq!(c.aliases["busybox"], "docker.io/library/busybox");
        assert_eq!(
            c.sources,
            [
                t.system.join("registries.conf"),
                d.join("10-search.conf"),
                d.join("20-quay.conf"),
                t.user.join("registries.conf.d/50-user.conf"),
            ]
        );
    }

    #[test]
    fn load_user_file_skips_system_configuration() {
        let t = Tree::new();
        t.write(
            &t.system.join("registries.conf"),
            "unqualified-search-registries = [\"system.io\"]\n",
        );
        t.write(
            &t.system.join("registries.conf.d/a.conf"),
            "unqualified-search-registries = [\"system-dropin.io\"]\n",
        );
        t.write(
            &t.user.join("registries.conf"),
            "unqualified-search-registries = [\"user.io\"]\n",
        );
        t.write(
            &t.user.join("registries.conf.d/a.conf"),
            "[[registry]]\nlocation = \"user.io\"\ninsecure = true\n",
        );
        let c = t.load(None).unwrap();
        assert_eq!(c.unqualified_search_registries, ["user.io"]);
        assert!(c.is_insecure("user.io"));
        assert_eq!(c.sources.len(), 2);
    }

    #[test]
    fn load_env_override_reads_that_file_only() {
        let t = Tree::new();
        let custom = t.user.join("../../custom.conf");
        t.write(&custom, "unqualified-search-registries = [\"custom.io\"]\n");
        t.write(
            &t.user.join("registries.conf"),
            "unqualified-search-registries = [\"user.io\"]\n",
        );
        t.write(
            &t.system.join("registries.conf.d/a.conf"),
            "short-name-mode = \"disabled\"\n",
        );
        let c = t.load(Some(custom.clone())).unwrap();
        assert_eq!(c.unqualified_search_registries, ["custom.io"]);
        assert_eq!(c.short_name_mode, ShortNameMode::Permissive);
        assert_eq!(c.sources, [custom]);

        let missing = t.system.join("missing.conf");
        let err = t.load(Some(missing.clone())).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read registries configuration {}", missing.display())
        );
    }

    #[test]
    fn load_drop_ins_without_main_file_extend_builtin_defaults() {
        let t = Tree::new();
        t.write(
            &t.system.join("registries.conf.d/mirror.conf"),
            "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"mirror.local\"\n",
        );
        let c = t.load(None).unwrap();
        assert_eq!(c.unqualified_search_registries, ["docker.io"]);
        assert_eq!(
            sources(&c, "docker.io/library/alpine:3")[0].0,
            "mirror.local/library/alpine:3"
        );
    }

    #[test]
    fn drop_ins_must_use_version_2() {
        let t = Tree::new();
        t.write(
            &t.system.join("registries.conf"),
            "[registries.search]\nregistries = [\"quay.io\"]\n",
        );
        assert_eq!(
            t.load(None).unwrap().unqualified_search_registries,
            ["quay.io"]
        );
        let dropin = t.system.join("registries.conf.d/old.conf");
        t.write(
            &dropin,
            "[registries.insecure]\nregistries = [\"quay.io\"]\n",
        );
        let err = t.load(None).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "invalid registries configuration {}: drop-in files must use the version 2 format",
                dropin.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn plan_prefers_env_then_user_then_system() {
        let t = Tree::new();
        let plan = t.search(None).plan();
        assert_eq!(plan.main, t.system.join("registries.conf"));
        assert_eq!(
            plan.drop_in_dirs,
            [
                t.system.join("registries.conf.d"),
                t.user.join("registries.conf.d")
            ]
        );
        t.write(&t.user.join("registries.conf"), "");
        let plan = t.search(None).plan();
        assert_eq!(plan.main, t.user.join("registries.conf"));
        assert_eq!(plan.drop_in_dirs, [t.user.join("registries.conf.d")]);
        let plan = t.search(Some("/x.conf".into())).plan();
        assert_eq!(
            plan,
            Plan {
                main: "/x.conf".into(),
                main_required: true,
                drop_in_dirs: vec![]
            }
        );
    }
}
