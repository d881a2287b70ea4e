//! Image names as users type them and as registries know them.
//!
//! The grammar is the distribution reference grammar that Docker and Podman use:
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] component ( "/" component )*
//! domain     := host [ ":" port ]            host: DNS name, or [IPv6]
//! component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := "sha256:" 64 hex | "sha512:" 128 hex   (lowercase hex)
//! ```
//!
//! The first component is a domain only when it contains `.` or `:` or is `localhost`
//! and more components follow, so `user/app` is a short name on no registry while
//! `example.com/app` names one. [`ImageName`] keeps the input as typed; [`Reference`]
//! is fully qualified and normalised the way Podman does it: `index.docker.io` and
//! `registry-1.docker.io` become `docker.io`, and on `docker.io` a one-component path
//! gets `library/`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The Docker Hub registry as names spell it after normalisation.
pub const DOCKER_HUB: &str = "docker.io";
/// Hosts that mean Docker Hub and normalise to [`DOCKER_HUB`].
const DOCKER_HUB_ALIASES: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];
/// The namespace of Docker Hub's official images.
const OFFICIAL_NAMESPACE: &str = "library";
/// Longest name (domain and path, without tag or digest), as in the reference grammar.
pub const NAME_MAX_LEN: usize = 255;
const TAG_MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format {input:?}: {problem}")]
    InvalidFormat {
        input: String,
        problem: FormatProblem,
    },
    #[error("invalid digest {digest:?}: {problem}")]
    InvalidDigest {
        digest: String,
        problem: DigestProblem,
    },
    #[error(
        "image name {input:?} is not fully qualified: it must start with a registry host, as in docker.io/{input}"
    )]
    NotQualified { input: String },
}

/// What is wrong with a reference, for [`ReferenceError::InvalidFormat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatProblem {
    Empty,
    Whitespace,
    Uppercase,
    TooLong {
        len: usize,
    },
    EmptyComponent,
    InvalidComponent(String),
    InvalidHost(String),
    InvalidPort(String),
    EmptyTag,
    InvalidTag(String),
    EmptyDigest,
    Digest(DigestProblem),
    /// A bare 64-hex-digit string is an image ID, never a repository name.
    HexName,
}

impl fmt::Display for FormatProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("repository name must have at least one component"),
            Self::Whitespace => f.write_str("it contains whitespace or control characters"),
            Self::Uppercase => f.write_str("repository name must be lowercase"),
            Self::TooLong { len } => write!(
                f,
                "repository name must not be more than {NAME_MAX_LEN} characters (it has {len})"
            ),
            Self::EmptyComponent => {
                f.write_str("empty path component (a leading, trailing or doubled '/')")
            }
            Self::InvalidComponent(c) => write!(
                f,
                "invalid path component {c:?}: use lowercase letters and digits, separated by single '.', '_', '__' or dashes"
            ),
            Self::InvalidHost(h) => write!(f, "invalid registry host {h:?}"),
            Self::InvalidPort(p) => write!(f, "invalid registry port {p:?}: must be 1 to 65535"),
            Self::EmptyTag => f.write_str("empty tag after ':'"),
            Self::InvalidTag(t) => write!(
                f,
                "invalid tag {t:?}: a tag is 1 to {TAG_MAX_LEN} letters, digits, '_', '.' or '-', not starting with '.' or '-'"
            ),
            Self::EmptyDigest => f.write_str("empty digest after '@'"),
            Self::Digest(p) => write!(f, "invalid digest: {p}"),
            Self::HexName => f.write_str(
                "a 64-character hexadecimal string is an image ID and cannot be a repository name",
            ),
        }
    }
}

/// What is wrong with a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestProblem {
    MissingAlgorithm,
    UnsupportedAlgorithm(String),
    BadLength {
        algorithm: &'static str,
        expected: usize,
        found: usize,
    },
    NotLowercaseHex,
}

impl fmt::Display for DigestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingAlgorithm => {
                f.write_str("expected <algorithm>:<hex>, as in sha256:<64 hex digits>")
            }
            Self::UnsupportedAlgorithm(a) => write!(
                f,
                "unsupported digest algorithm {a:?}: only sha256 and sha512 are supported"
            ),
            Self::BadLength {
                algorithm,
                expected,
                found,
            } => write!(
                f,
                "a {algorithm} digest has {expected} hex digits, this one has {found}"
            ),
            Self::NotLowercaseHex => f.write_str("the digest must be lowercase hexadecimal"),
        }
    }
}

/// A name as the user typed it; `domain` is None for a short name ("alpine",
/// "library/alpine", "user/app:1"). Nothing is normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    pub domain: Option<String>,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageName {
    /// True when no registry is named, so registries.conf decides where it comes from.
    pub fn is_short(&self) -> bool {
        self.domain.is_none()
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.domain {
            write!(f, "{d}/")?;
        }
        f.write_str(&self.path)?;
        write_tag_digest(f, self.tag.as_deref(), self.digest.as_deref())
    }
}

impl FromStr for ImageName {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_name(s)
    }
}

/// Parses `s` by the reference grammar without qualifying or normalising it.
pub fn parse_name(s: &str) -> Result<ImageName, ReferenceError> {
    let fail = |problem| ReferenceError::InvalidFormat {
        input: s.to_owned(),
        problem,
    };
    if s.is_empty() {
        return Err(fail(FormatProblem::Empty));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(fail(FormatProblem::Whitespace));
    }

    let (rest, digest) = match s.split_once('@') {
        Some((_, "")) => return Err(fail(FormatProblem::EmptyDigest)),
        Some((rest, d)) => {
            check_digest(d).map_err(|p| fail(FormatProblem::Digest(p)))?;
            (rest, Some(d))
        }
        None => (s, None),
    };

    // A ':' after the last '/' starts the tag; one before it separates host and port.
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            let tag = &rest[colon + 1..];
            if tag.is_empty() {
                return Err(fail(FormatProblem::EmptyTag));
            }
            if !is_valid_tag(tag) {
                return Err(fail(FormatProblem::InvalidTag(tag.to_owned())));
            }
            (&rest[..colon], Some(tag))
        }
        _ => (rest, None),
    };
    if name.is_empty() {
        return Err(fail(FormatProblem::Empty));
    }

    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if looks_like_domain(first) => (Some(first), rest),
        _ => (None, name),
    };
    if let Some(d) = domain {
        check_domain(d).map_err(fail)?;
    }
    check_path(path).map_err(fail)?;
    if name.len() > NAME_MAX_LEN {
        return Err(fail(FormatProblem::TooLong { len: name.len() }));
    }
    if domain.is_none()
        && tag.is_none()
        && digest.is_none()
        && path.len() == 64
        && is_lower_hex(path)
    {
        return Err(fail(FormatProblem::HexName));
    }

    Ok(ImageName {
        domain: domain.map(str::to_owned),
        path: path.to_owned(),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
    })
}

/// Fully qualified: registry host[:port], repository path, optional tag and digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Parses a name that starts with a registry, normalising Docker Hub names.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let name = parse_name(s)?;
        match &name.domain {
            Some(domain) => Ok(Reference::from_name(&name, domain)),
            None => Err(ReferenceError::NotQualified {
                input: s.to_owned(),
            }),
        }
    }

    /// Qualifies a short name with `registry`; a name that already has a domain keeps it.
    /// Docker Hub names are normalised (`docker.io/alpine` → `docker.io/library/alpine`).
    pub fn from_name(name: &ImageName, registry: &str) -> Reference {
        let registry = normalize_registry(name.domain.as_deref().unwrap_or(registry));
        let repository = if registry == DOCKER_HUB && !name.path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{}", name.path)
        } else {
            name.path.clone()
        };
        Reference {
            registry: registry.to_owned(),
            repository,
            tag: name.tag.clone(),
            digest: name.digest.clone(),
        }
    }

    /// `registry/repository`, as in "docker.io/library/alpine".
    pub fn repo_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with `tag` (a digest is kept).
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_owned()),
            ..self.clone()
        }
    }

    /// The same repository with `digest` (a tag is kept).
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// Adds the tag "latest" when neither tag nor digest is given.
    pub fn tag_or_latest(&self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.with_tag("latest")
        } else {
            self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        write_tag_digest(f, self.tag.as_deref(), self.digest.as_deref())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// 3 to 64 lowercase hex digits, optionally after "sha256:": the input may be an image ID.
pub fn is_image_id_prefix(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (3..=64).contains(&hex.len()) && is_lower_hex(hex)
}

/// Accepts "sha256:<64 hex>" and "sha512:<128 hex>" (lowercase), as the OCI image spec
/// registers them.
pub fn validate_digest(d: &str) -> Result<(), ReferenceError> {
    check_digest(d).map_err(|problem| ReferenceError::InvalidDigest {
        digest: d.to_owned(),
        problem,
    })
}

/// True for `host[:port]` as the grammar's domain allows it (registries.conf entries).
pub fn is_valid_domain(s: &str) -> bool {
    check_domain(s).is_ok()
}

/// Docker Hub's other host names become "docker.io"; other hosts are returned as given.
pub fn normalize_registry(host: &str) -> &str {
    if DOCKER_HUB_ALIASES.contains(&host) {
        DOCKER_HUB
    } else {
        host
    }
}

fn write_tag_digest(
    f: &mut fmt::Formatter<'_>,
    tag: Option<&str>,
    digest: Option<&str>,
) -> fmt::Result {
    if let Some(t) = tag {
        write!(f, ":{t}")?;
    }
    if let Some(d) = digest {
        write!(f, "@{d}")?;
    }
    Ok(())
}

fn looks_like_domain(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost"
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_digest(d: &str) -> Result<(), DigestProblem> {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return Err(DigestProblem::MissingAlgorithm);
    };
    let (algorithm, expected) = match algorithm {
        "sha256" => ("sha256", 64),
        "sha512" => ("sha512", 128),
        "" => return Err(DigestProblem::MissingAlgorithm),
        other => return Err(DigestProblem::UnsupportedAlgorithm(other.to_owned())),
    };
    if !is_lower_hex(hex) {
        return Err(DigestProblem::NotLowercaseHex);
    }
    if hex.len() != expected {
        return Err(DigestProblem::BadLength {
            algorithm,
            expected,
            found: hex.len(),
        });
    }
    Ok(())
}

fn is_valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = t.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= TAG_MAX_LEN
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

fn check_domain(d: &str) -> Result<(), FormatProblem> {
    let (host, port) = if let Some(inner) = d.strip_prefix('[') {
        // [IPv6]: hex digits and colons inside the brackets.
        let Some((addr, after)) = inner.split_once(']') else {
            return Err(FormatProblem::InvalidHost(d.to_owned()));
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(FormatProblem::InvalidHost(d.to_owned()));
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(FormatProblem::InvalidHost(d.to_owned())),
            },
        }
    } else {
        match d.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(d), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err(FormatProblem::InvalidHost(host.to_owned()));
        }
    }
    if let Some(port) = port {
        let numeric = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        if !numeric || !matches!(port.parse::<u16>(), Ok(1..)) {
            return Err(FormatProblem::InvalidPort(port.to_owned()));
        }
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), FormatProblem> {
    let mut first_bad = None;
    for component in path.split('/') {
        if component.is_empty() {
            return Err(FormatProblem::EmptyComponent);
        }
        if first_bad.is_none() && !is_valid_component(component) {
            first_bad = Some(component);
        }
    }
    let Some(bad) = first_bad else {
        return Ok(());
    };
    // Podman's wording when lowercasing would have made the name valid.
    if path.to_ascii_lowercase().split('/').all(is_valid_component) {
        return Err(FormatProblem::Uppercase);
    }
    Err(FormatProblem::InvalidComponent(bad.to_owned()))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> ImageName {
        parse_name(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn problem(s: &str) -> FormatProblem {
        match parse_name(s) {
            Err(ReferenceError::InvalidFormat { input, problem }) => {
                assert_eq!(input, s);
                problem
            }
            other => panic!("{s}: expected an invalid format, got {other:?}"),
        }
    }

    #[test]
    fn short_names_have_no_domain() {
        for (input, path, tag) in [
            ("alpine", "alpine", None),
            ("library/alpine", "library/alpine", None),
            ("user/app:1", "user/app", Some("1")),
            ("a/b/c/d", "a/b/c/d", None),
            ("alpine:3.19", "alpine", Some("3.19")),
            ("localhost", "localhost", None),
            ("localhost:5000", "localhost", Some("5000")),
        ] {
            let n = name(input);
            assert_eq!(n.domain, None, "{input}");
            assert_eq!(n.path, path, "{input}");
            assert_eq!(n.tag.as_deref(), tag, "{input}");
            assert!(n.is_short());
            assert_eq!(n.to_string(), input);
        }
    }

    #[test]
    fn domains_are_recognised() {
        for (input, domain, path) in [
            ("quay.io/podman/hello", "quay.io", "podman/hello"),
            ("localhost/app", "localhost", "app"),
            ("localhost:5000/app", "localhost:5000", "app"),
            ("myhost:5000/a/b", "myhost:5000", "a/b"),
            ("[::1]:5000/app", "[::1]:5000", "app"),
            ("[fe80::1]/app", "[fe80::1]", "app"),
            ("Example.COM/app", "Example.COM", "app"),
            ("192.168.1.10:443/x", "192.168.1.10:443", "x"),
        ] {
            let n = name(input);
            assert_eq!(n.domain.as_deref(), Some(domain), "{input}");
            assert_eq!(n.path, path, "{input}");
            assert_eq!(n.to_string(), input);
        }
    }

    #[test]
    fn tags_and_digests() {
        let n = name(&format!("quay.io/a/b:v1.0_rc-2@{D256}"));
        assert_eq!(n.tag.as_deref(), Some("v1.0_rc-2"));
        assert_eq!(n.digest.as_deref(), Some(D256));

        let n = name(&format!("localhost:5000/app@{D256}"));
        assert_eq!(n.domain.as_deref(), Some("localhost:5000"));
        assert_eq!(n.tag, None);

        let long_tag = "a".repeat(128);
        assert_eq!(
            name(&format!("x:{long_tag}")).tag.as_deref(),
            Some(&*long_tag)
        );
        assert_eq!(name("x:_under").tag.as_deref(), Some("_under"));
        assert_eq!(name("x:UPPER").tag.as_deref(), Some("UPPER"));
    }

    #[test]
    fn separators_in_path_components() {
        for ok in [
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "a.b-c_d__e",
            "0",
            "a1/b2",
        ] {
            name(ok);
        }
        for bad in [
            "a..b", "a___b", "a._b", "a_-b", "-a", "a-", ".a", "a.", "_a", "a+b",
        ] {
            assert!(
                matches!(problem(bad), FormatProblem::InvalidComponent(_)),
                "{bad}"
            );
        }
    }

    #[test]
    fn uppercase_is_reported_as_such() {
        let err = parse_name("Alpine").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid reference format "Alpine": repository name must be lowercase"#
        );
        assert_eq!(
            problem("docker.io/Library/alpine"),
            FormatProblem::Uppercase
        );
        assert_eq!(problem("user/MyApp:1"), FormatProblem::Uppercase);
    }

    #[test]
    fn malformed_inputs() {
        assert_eq!(problem(""), FormatProblem::Empty);
        assert_eq!(problem(":tag"), FormatProblem::Empty);
        assert_eq!(problem("alpine:"), FormatProblem::EmptyTag);
        assert_eq!(problem("alpine@"), FormatProblem::EmptyDigest);
        assert_eq!(problem(" alpine"), FormatProblem::Whitespace);
        assert_eq!(problem("alp ine"), FormatProblem::Whitespace);
        assert_eq!(problem("alpine\n"), FormatProblem::Whitespace);
        assert_eq!(problem("a//b"), FormatProblem::EmptyComponent);
        assert_eq!(problem("/a"), FormatProblem::EmptyComponent);
        assert_eq!(problem("quay.io/"), FormatProblem::EmptyComponent);
        assert_eq!(problem("a/b/"), FormatProblem::EmptyComponent);
        assert!(matches!(problem("x:.bad"), FormatProblem::InvalidTag(_)));
        assert!(matches!(problem("x:-bad"), FormatProblem::InvalidTag(_)));
        assert!(matches!(
            problem(&format!("x:{}", "a".repeat(129))),
            FormatProblem::InvalidTag(_)
        ));
        assert!(matches!(
            problem("x:a:b"),
            FormatProblem::InvalidComponent(_)
        ));
        assert!(matches!(
            problem("host:port/x"),
            FormatProblem::InvalidPort(_)
        ));
        assert!(matches!(problem("host:/x"), FormatProblem::InvalidPort(_)));
        assert!(matches!(
            problem("host:99999/x"),
            FormatProblem::InvalidPort(_)
        ));
        assert!(matches!(
            problem("-bad.com/x"),
            FormatProblem::InvalidHost(_)
        ));
        assert!(matches!(problem("a..com/x"), FormatProblem::InvalidHost(_)));
        assert!(matches!(problem("[zz:1]/x"), FormatProblem::InvalidHost(_)));
        assert!(matches!(
            problem("x@md5:d41d8cd98f00b204e9800998ecf8427e"),
            FormatProblem::Digest(DigestProblem::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            problem("x@sha256:abc"),
            FormatProblem::Digest(DigestProblem::BadLength { .. })
        ));
        assert_eq!(problem(&"a".repeat(64)), FormatProblem::HexName);
        // A tagged 64-hex name is a repository name, as in Podman.
        name(&format!("{}:1", "a".repeat(64)));
    }

    #[test]
    fn name_length_limit_counts_domain_and_path() {
        let path = "a".repeat(NAME_MAX_LEN - "quay.io/".len());
        name(&format!("quay.io/{path}:tag"));
        assert_eq!(
            problem(&format!("quay.io/{path}a")),
            FormatProblem::TooLong {
                len: NAME_MAX_LEN + 1
            }
        );
    }

    #[test]
    fn reference_normalises_docker_hub() {
        for (input, expected) in [
            ("docker.io/alpine", "docker.io/library/alpine"),
            ("docker.io/library/alpine:3", "docker.io/library/alpine:3"),
            ("index.docker.io/alpine", "docker.io/library/alpine"),
            ("registry-1.docker.io/user/app", "docker.io/user/app"),
            ("quay.io/alpine", "quay.io/alpine"),
            ("localhost/app:1", "localhost/app:1"),
            ("localhost:5000/app", "localhost:5000/app"),
        ] {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.to_string(), expected, "{input}");
            assert_eq!(input.parse::<Reference>().unwrap(), r);
        }
        let r = Reference::parse(&format!("quay.io/a/b:1@{D256}")).unwrap();
        assert_eq!(r.registry, "quay.io");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.digest.as_deref(), Some(D256));
        assert_eq!(r.to_string(), format!("quay.io/a/b:1@{D256}"));
    }

    #[test]
    fn reference_requires_a_domain() {
        for input in ["alpine", "library/alpine", "user/app:1"] {
            assert_eq!(
                Reference::parse(input),
                Err(ReferenceError::NotQualified {
                    input: input.into()
                })
            );
        }
        assert!(matches!(
            Reference::parse("Alpine"),
            Err(ReferenceError::InvalidFormat { .. })
        ));
    }

    #[test]
    fn qualify_short_names() {
        let r = Reference::from_name(&name("alpine:3"), "docker.io");
        assert_eq!(r.to_string(), "docker.io/library/alpine:3");
        let r = Reference::from_name(&name("user/app"), "docker.io");
        assert_eq!(r.to_string(), "docker.io/user/app");
        let r = Reference::from_name(&name("alpine"), "quay.io");
        assert_eq!(r.to_string(), "quay.io/alpine");
        let r = Reference::from_name(&name("alpine"), "index.docker.io");
        assert_eq!(r.to_string(), "docker.io/library/alpine");
        // A name with a domain keeps it.
        let r = Reference::from_name(&name("quay.io/x/y"), "docker.io");
        assert_eq!(r.to_string(), "quay.io/x/y");
    }

    #[test]
    fn helpers_on_references() {
        let r = Reference::parse("docker.io/alpine").unwrap();
        assert_eq!(r.repo_name(), "docker.io/library/alpine");
        assert_eq!(
            r.tag_or_latest().to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            r.with_tag("3").tag_or_latest().to_string(),
            "docker.io/library/alpine:3"
        );
        let d = r.with_digest(D256);
        assert_eq!(d.tag_or_latest(), d);
        assert_eq!(
            d.with_tag("x").to_string(),
            format!("docker.io/library/alpine:x@{D256}")
        );
    }

    #[test]
    fn reference_serde_roundtrip() {
        let r = Reference::parse("quay.io/a/b:1").unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Reference>(&json).unwrap(), r);
    }

    #[test]
    fn image_id_prefixes() {
        assert!(is_image_id_prefix("abc"));
        assert!(is_image_id_prefix("0123456789abcdef"));
        assert!(is_image_id_prefix(&"f".repeat(64)));
        assert!(is_image_id_prefix("sha256:abc123"));
        assert!(!is_image_id_prefix("ab"));
        assert!(!is_image_id_prefix(&"f".repeat(65)));
        assert!(!is_image_id_prefix("ABC123"));
        assert!(!is_image_id_prefix("alpine"));
        assert!(!is_image_id_prefix("sha256:"));
        assert!(!is_image_id_prefix("sha512:abc"));
    }

    #[test]
    fn digests() {
        validate_digest(D256).unwrap();
        validate_digest(&format!("sha512:{}", "0".repeat(128))).unwrap();
        let err = validate_digest("md5:d41d8cd98f00b204e9800998ecf8427e").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid digest "md5:d41d8cd98f00b204e9800998ecf8427e": unsupported digest algorithm "md5": only sha256 and sha512 are supported"#
        );
        for (bad, p) in [
            ("sha256", DigestProblem::MissingAlgorithm),
            (":abc", DigestProblem::MissingAlgorithm),
            (
                "sha256:abc",
                DigestProblem::BadLength {
                    algorithm: "sha256",
                    expected: 64,
                    found: 3,
                },
            ),
            (
                &format!("sha256:{}", "A".repeat(64)),
                DigestProblem::NotLowercaseHex,
            ),
            (
                &format!("sha256:{}", "g".repeat(64)),
                DigestProblem::NotLowercaseHex,
            ),
        ] {
            assert_eq!(
                validate_digest(bad),
                Err(ReferenceError::InvalidDigest {
                    digest: bad.to_owned(),
                    problem: p
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn domain_validation() {
        for ok in [
            "docker.io",
            "localhost:5000",
            "[::1]:443",
            "my-reg.example.com",
            "10.0.0.1",
        ] {
            assert!(is_valid_domain(ok), "{ok}");
        }
        for bad in [
            "", "http://x", "a/b", "x:", "x:0", "-x.com", "[::1", "x_y.com",
        ] {
            assert!(!is_valid_domain(bad), "{bad}");
        }
    }
}
