//! Connections: named engines the CLI and the desktop can talk to instead of the local
//! one, as `podman system connection` keeps them. One JSON file, podman 5's
//! `podman-connections.json` shape:
//!
//! ```json
//! {"Connection": {"Default": "capsa-default",
//!                 "Connections": {"capsa-default": {"URI": "ssh://capsa@127.0.0.1:40022",
//!                                                   "Identity": "/…/id_ed25519",
//!                                                   "IsMachine": true}}}}
//! ```
//!
//! `machine init` adds the machine's connection and `machine rm` removes it. Which
//! connection a command uses is [`Connections::resolve`]: `--connection`, then
//! `CAPSA_CONNECTION`, then (where the engine cannot run locally) the default.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Names the connection a command uses (like podman's CONTAINER_CONNECTION).
pub const ENV_CONNECTION: &str = "CAPSA_CONNECTION";
/// Where the connections file lives (tests); otherwise see [`Connections::default_path`].
pub const ENV_CONNECTIONS_FILE: &str = "CAPSA_CONNECTIONS_FILE";

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(
        "{0:?} destination is not defined. See \"capsa system connection add ...\" to create a connection"
    )]
    NotDefined(String),
    #[error("connection {0:?} already exists")]
    Exists(String),
    #[error("invalid destination {dest:?}: {why}")]
    Destination { dest: String, why: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Lock(#[from] crate::machine::LockError),
    #[error("{path} is not a valid connections file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl ConnectionError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ConnectionError::NotDefined(_) => {
                Some("list them with `capsa system connection ls`".into())
            }
            ConnectionError::Parse { path, .. } => Some(format!(
                "fix or remove {} (`capsa machine init` adds machine connections again)",
                path.display()
            )),
            _ => None,
        }
    }
}

/// One engine to talk to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// `ssh://USER@HOST:PORT` (the agent over SSH) or `unix:///PATH` (an agent socket).
    #[serde(rename = "URI")]
    pub uri: String,
    /// The SSH private key, for ssh:// destinations.
    #[serde(rename = "Identity", default, skip_serializing_if = "String::is_empty")]
    pub identity: String,
    /// Made by `machine init`: the machine of the same name is reached directly.
    #[serde(rename = "IsMachine", default)]
    pub is_machine: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connections {
    #[serde(rename = "Default", default)]
    pub default: String,
    #[serde(rename = "Connections", default)]
    pub map: BTreeMap<String, Destination>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileDoc {
    #[serde(rename = "Connection", default)]
    connection: Connections,
}

/// A connection picked for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub name: String,
    pub destination: Destination,
}

/// What `system connection add` parses a DESTINATION into.
pub fn parse_destination(
    dest: &str,
    port: Option<u16>,
    identity: Option<&Path>,
) -> Result<Destination, ConnectionError> {
    let bad = |why: &str| ConnectionError::Destination {
        dest: dest.into(),
        why: why.into(),
    };
    let identity = identity
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if let Some(path) = dest.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(bad("a unix socket path must be absolute (unix:///run/…)"));
        }
        if !identity.is_empty() {
            return Err(bad("--identity is for ssh destinations, not unix ones"));
        }
        return Ok(Destination {
            uri: dest.into(),
            identity,
            is_machine: false,
        });
    }
    if dest.starts_with("tcp://") {
        return Err(bad("unencrypted tcp is not offered: use ssh:// or unix://"));
    }
    let rest = match dest.split_once("://") {
        Some(("ssh", rest)) => rest,
        Some((scheme, _)) => return Err(bad(&format!("unknown scheme {scheme:?}"))),
        None => dest,
    };
    // [user@]host[:port][/path]: the path (a podman socket) means nothing to capsa.
    let hostport = rest.split('/').next().unwrap_or_default();
    let (user, hostport) = match hostport.rsplit_once('@') {
        Some((u, h)) => (u.to_string(), h),
        None => (
            std::env::var("USER").unwrap_or_else(|_| "root".into()),
            hostport,
        ),
    };
    let (host, uri_port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            let p: u16 = p.parse().map_err(|_| bad("the port is not a number"))?;
            (h, Some(p))
        }
        _ => (hostport, None),
    };
    if host.is_empty() || user.is_empty() {
        return Err(bad("expected [ssh://][USER@]HOST[:PORT]"));
    }
    let port = uri_port.or(port).unwrap_or(22);
    Ok(Destination {
        uri: format!("ssh://{user}@{host}:{port}"),
        identity,
        is_machine: false,
    })
}

impl Connections {
    /// `~/.config/capsa/connections.json`; next to the machines when
    /// `CAPSA_MACHINE_DIR` moves them (tests), `CAPSA_CONNECTIONS_FILE` above all.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(ENV_CONNECTIONS_FILE).filter(|v| !v.is_empty()) {
            return Some(p.into());
        }
        if let Some(d) = std::env::var_os(crate::machine::ENV_MACHINE_DIR).filter(|v| !v.is_empty())
        {
            return Some(PathBuf::from(d).join("connections.json"));
        }
        directories::ProjectDirs::from("", "", "capsa")
            .map(|d| d.config_dir().join("connections.json"))
    }

    /// Reads the file; a missing file is no connections.
    pub fn load(path: &Path) -> Result<Connections, ConnectionError> {
        match fs::read(path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Connections::default()),
            Ok(b) => serde_json::from_slice::<FileDoc>(&b)
                .map(|d| d.connection)
                .map_err(|source| ConnectionError::Parse {
                    path: path.into(),
                    source,
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Connections::default()),
            Err(source) => Err(ConnectionError::Io {
                what: "reading",
                path: path.into(),
                source,
            }),
        }
    }

    /// Writes the file atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), ConnectionError> {
        let io = |what, source| ConnectionError::Io {
            what,
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| io("creating the folder of", e))?;
        }
        let doc = FileDoc {
            connection: self.clone(),
        };
        let mut text = serde_json::to_vec_pretty(&doc).expect("plain data serializes");
        text.push(b'\n');
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, text).map_err(|e| io("writing", e))?;
        fs::rename(&tmp, path).map_err(|e| io("writing", e))
    }

    /// Changes the file under an exclusive lock, so two commands racing do not lose
    /// each other's change.
    pub fn update<T>(
        path: &Path,
        f: impl FnOnce(&mut Connections) -> Result<T, ConnectionError>,
    ) -> Result<T, ConnectionError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|source| ConnectionError::Io {
                what: "creating the folder of",
                path: path.into(),
                source,
            })?;
        }
        let _lock =
            crate::machine::Lock::wait(&path.with_extension("lock"), "the connections file")?;
        let mut c = Connections::load(path)?;
        let out = f(&mut c)?;
        c.save(path)?;
        Ok(out)
    }

    /// Adds `name`; the first connection becomes the default, as `default` makes any.
    pub fn add(
        &mut self,
        name: &str,
        d: Destination,
        make_default: bool,
    ) -> Result<(), ConnectionError> {
        if self.map.contains_key(name) {
            return Err(ConnectionError::Exists(name.into()));
        }
        self.map.insert(name.into(), d);
        if make_default || self.default.is_empty() {
            self.default = name.into();
        }
        Ok(())
    }

    /// Removes `name` (an error when unknown); the default moves to the first left.
    pub fn remove(&mut self, name: &str) -> Result<(), ConnectionError> {
        if self.map.remove(name).is_none() {
            return Err(ConnectionError::NotDefined(name.into()));
        }
        if self.default == name {
            self.default = self.map.keys().next().cloned().unwrap_or_default();
        }
        Ok(())
    }

    pub fn set_default(&mut self, name: &str) -> Result<(), ConnectionError> {
        if !self.map.contains_key(name) {
            return Err(ConnectionError::NotDefined(name.into()));
        }
        self.default = name.into();
        Ok(())
    }

    pub fn rename(&mut self, old: &str, new: &str) -> Result<(), ConnectionError> {
        if self.map.contains_key(new) {
            return Err(ConnectionError::Exists(new.into()));
        }
        let d = self
            .map
            .remove(old)
            .ok_or_else(|| ConnectionError::NotDefined(old.into()))?;
        self.map.insert(new.into(), d);
        if self.default == old {
            self.default = new.into();
        }
        Ok(())
    }

    /// The connection a command uses: `flag` (`--connection`), else `CAPSA_CONNECTION`,
    /// else the default when `local_engine` is false (macOS, Windows). `None`: the local
    /// engine. Naming an unknown connection is an error.
    pub fn resolve(
        &self,
        flag: Option<&str>,
        local_engine: bool,
    ) -> Result<Option<Chosen>, ConnectionError> {
        let env = std::env::var(ENV_CONNECTION).ok().filter(|s| !s.is_empty());
        let name = match flag.map(str::to_string).or(env) {
            Some(n) => n,
            None if local_engine || self.default.is_empty() => return Ok(None),
            None => self.default.clone(),
        };
        let destination = self
            .map
            .get(&name)
            .cloned()
            .ok_or_else(|| ConnectionError::NotDefined(name.clone()))?;
        Ok(Some(Chosen { name, destination }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(uri: &str) -> Destination {
        Destination {
            uri: uri.into(),
            identity: String::new(),
            is_machine: false,
        }
    }

    #[test]
    fn destinations_parse_like_podman() {
        let id = Path::new("/k/id");
        assert_eq!(
            parse_destination("root@server.example", Some(2222), Some(id)).unwrap(),
            Destination {
                uri: "ssh://root@server.example:2222".into(),
                identity: "/k/id".into(),
                is_machine: false
            }
        );
        assert_eq!(
            parse_destination("ssh://u@h:40/run/podman/podman.sock", Some(22), None)
                .unwrap()
                .uri,
            "ssh://u@h:40"
        );
        assert_eq!(
            parse_destination("unix:///run/a.sock", None, None)
                .unwrap()
                .uri,
            "unix:///run/a.sock"
        );
        for (bad, why) in [
            ("unix://rel.sock", "absolute"),
            ("tcp://h:1", "tcp"),
            ("http://h", "scheme"),
            ("ssh://u@h:x", "port"),
            ("ssh://u@", "expected"),
        ] {
            let e = parse_destination(bad, None, None).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = parse_destination("unix:///a", None, Some(id)).unwrap_err();
        assert!(e.to_string().contains("--identity"), "{e}");
    }

    #[test]
    fn add_remove_default_rename() {
        let mut c = Connections::default();
        c.add("a", d("unix:///a"), false).unwrap();
        assert_eq!(c.default, "a", "the first one becomes the default");
        c.add("b", d("unix:///b"), false).unwrap();
        assert_eq!(c.default, "a");
        assert!(matches!(
            c.add("b", d("unix:///x"), false),
            Err(ConnectionError::Exists(_))
        ));
        c.set_default("b").unwrap();
        c.rename("b", "c").unwrap();
        assert_eq!(c.default, "c", "the default follows a rename");
        c.remove("c").unwrap();
        assert_eq!(c.default, "a", "the default moves to what is left");
        let e = c.remove("nope").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"nope\" destination is not defined. See \"capsa system connection add ...\" to create a connection"
        );
    }

    #[test]
    fn resolve_order() {
        let mut c = Connections::default();
        assert_eq!(c.resolve(None, false).unwrap(), None, "nothing defined");
        c.add("m", d("unix:///m"), false).unwrap();
        c.add("n", d("unix:///n"), false).unwrap();
        assert_eq!(c.resolve(None, true).unwrap(), None, "Linux: local");
        assert_eq!(c.resolve(None, false).unwrap().unwrap().name, "m");
        assert_eq!(c.resolve(Some("n"), true).unwrap().unwrap().name, "n");
        assert!(c.resolve(Some("zz"), true).is_err());
    }

    #[test]
    fn file_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/connections.json");
        assert_eq!(Connections::load(&p).unwrap(), Connections::default());
        Connections::update(&p, |c| c.add("m", d("unix:///m"), true)).unwrap();
        let text = fs::read_to_string(&p).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["Connection"]["Default"], "m");
        assert_eq!(v["Connection"]["Connections"]["m"]["URI"], "unix:///m");
        fs::write(&p, "{not json").unwrap();
        let e = Connections::update(&p, |c| c.add("x", d("unix:///x"), false)).unwrap_err();
        assert!(matches!(e, ConnectionError::Parse { .. }), "{e}");
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "{not json",
            "a damaged file is left as it was"
        );
    }

    #[test]
    fn racing_updates_keep_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("connections.json");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let p = p.clone();
                std::thread::spawn(move || {
                    Connections::update(&p, |c| c.add(&format!("c{i}"), d("unix:///s"), false))
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(Connections::load(&p).unwrap().map.len(), 8);
    }
}
