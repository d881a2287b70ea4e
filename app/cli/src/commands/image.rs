//! Image commands: pull, push, images, inspect, rmi, tag, untag, save, load, import,
//! history, prune, exists.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result, bail};
use capsa_engine::Engine;
use capsa_engine::image::archive::ArchiveFormat;
use capsa_engine::image::auth::Credentials;
use capsa_engine::image::platform::Platform;
use capsa_engine::image::pull::PullOptions;
use capsa_engine::image::push::PushOptions;
use capsa_engine::store::{ImageRecord, split_name};
use serde_json::{Value, json};

use super::CodedError;
use crate::cli::*;
use crate::output::{self, Column, Format};
use crate::progress::StderrProgress;

fn parse_creds(s: &str) -> Result<Credentials> {
    match s.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        }),
        _ => bail!("invalid --creds {s:?}: expected USERNAME:PASSWORD"),
    }
}

fn apply_creds(engine: &Engine, name: &str, creds: &Option<String>) -> Result<()> {
    if let Some(c) = creds {
        let registry = engine.registry_of(name)?;
        engine.set_credentials(&registry, parse_creds(c)?);
    }
    Ok(())
}

pub async fn pull(engine: &Engine, a: PullArgs) -> Result<()> {
    apply_creds(engine, &a.name, &a.auth.creds)?;
    let mut platform = match &a.platform {
        Some(p) => Some(Platform::parse(p).map_err(anyhow::Error::msg)?),
        None => None,
    };
    if a.arch.is_some() || a.os.is_some() || a.variant.is_some() {
        let given = platform.is_some();
        let mut p = platform.unwrap_or_else(Platform::host);
        if let Some(os) = a.os {
            p.os = os;
        }
        if let Some(arch) = a.arch {
            p = Platform::parse(&format!("{}/{arch}", p.os)).map_err(anyhow::Error::msg)?;
        }
        p.variant = a.variant.or(p.variant.filter(|_| given));
        platform = Some(p);
    }
    let opts = PullOptions {
        platform,
        tls_verify: a.tls.tls_verify,
        all_tags: a.all_tags,
        chooser: Some(std::sync::Arc::new(choose_image)),
    };
    let progress = StderrProgress::new(a.quiet);
    let images = engine.pull(&a.name, &opts, &progress).await?;
    for img in images {
        println!("{}", img.id);
    }
    Ok(())
}

/// The short-name prompt: which registry did the user mean?
fn choose_image(name: &str, refs: &[capsa_engine::image::reference::Reference]) -> Option<usize> {
    use std::io::BufRead;
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let _ = writeln!(tty, "? Please select an image for {name}:");
    for (i, r) in refs.iter().enumerate() {
        let _ = writeln!(tty, "  {}) {r}", i + 1);
    }
    let _ = write!(tty, "Enter a number [1-{}]: ", refs.len());
    let _ = tty.flush();
    let mut line = String::new();
    std::io::BufReader::new(&tty).read_line(&mut line).ok()?;
    let n: usize = line.trim().parse().ok()?;
    (1..=refs.len()).contains(&n).then(|| n - 1)
}

pub async fn push(engine: &Engine, a: PushArgs) -> Result<()> {
    let dest = a.destination.clone().unwrap_or_else(|| a.image.clone());
    apply_creds(engine, &dest, &a.auth.creds)?;
    let opts = PushOptions {
        tls_verify: a.tls.tls_verify,
        format: a.format.clone(),
    };
    let progress = StderrProgress::new(a.quiet);
    let digest = engine
        .push(&a.image, a.destination.as_deref(), &opts, &progress)
        .await?;
    if let Some(f) = a.digestfile {
        std::fs::write(&f, &digest).with_context(|| format!("writing {}", f.display()))?;
    }
    Ok(())
}

fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        format!("sha256:{id}")
    } else {
        id[..id.len().min(12)].to_string()
    }
}

/// The rows `images` prints: one per repository:tag, or one `<none>` row.
fn image_rows(engine: &Engine, img: &ImageRecord, no_trunc: bool) -> Vec<Value> {
    let cfg = engine.image_config(img).ok();
    let labels = cfg.as_ref().map(|c| c.labels()).unwrap_or_default();
    let created = img.created.as_deref().and_then(output::parse_time);
    let since = created.map(output::human_since).unwrap_or_default();
    let created_at = created.map(output::go_time).unwrap_or_default();
    let mut names: Vec<(String, String)> = img
        .names
        .iter()
        .filter_map(|n| {
            let (repo, tag, _) = split_name(n);
            tag.map(|t| (repo.to_string(), t.to_string()))
        })
        .collect();
    if names.is_empty() {
        // A name by digest only still names the repository.
        names = img
            .names
            .iter()
            .map(|n| (split_name(n).0.to_string(), "<none>".to_string()))
            .collect();
    }
    if names.is_empty() {
        names.push(("<none>".into(), "<none>".into()));
    }
    names.dedup();
    names
        .into_iter()
        .map(|(repo, tag)| {
            json!({
                "ID": short_id(&img.id, no_trunc),
                "Id": img.id,
                "Repository": repo,
                "Tag": tag,
                "Digest": img.digest,
                "CreatedSince": since,
                "Created": since,
                "CreatedAt": created_at,
                "CreatedTime": created_at,
                "Size": output::human_size(img.size),
                "VirtualSize": output::human_size(img.size),
                "SharedSize": output::human_size(0),
                "Labels": labels,
                "Names": img.names,
                "RepoTags": img.repo_tags(),
                "RepoDigests": img.repo_digests(),
                "ReadOnly": false,
                "Dangling": img.names.is_empty(),
                "Containers": 0,
            })
        })
        .collect()
}

/// `podman images --format json` documents.
fn image_summary(engine: &Engine, img: &ImageRecord) -> Value {
    let cfg = engine.image_config(img).ok();
    let created = img.created.as_deref().and_then(output::parse_time);
    json!({
        "Id": img.id,
        "ParentId": "",
        "RepoTags": img.repo_tags(),
        "RepoDigests": img.repo_digests(),
        "Size": img.size,
        "SharedSize": 0,
        "VirtualSize": img.size,
        "Labels": cfg.as_ref().map(|c| c.labels()).unwrap_or_default(),
        "Containers": 0,
        "Names": img.names,
        "Digest": img.digest,
        "History": img.names,
        "Created": created.map(|t| t.timestamp()).unwrap_or(0),
        "CreatedAt": img.created,
    })
}

/// Applies `--filter` (dangling, reference, label, before, since) and the repository
/// argument.
fn filter_images(
    engine: &Engine,
    images: Vec<ImageRecord>,
    filters: &[String],
    repository: Option<&str>,
) -> Result<Vec<ImageRecord>> {
    let mut out = Vec::new();
    let all = images.clone();
    'img: for img in images {
        if let Some(r) = repository
            && !matches_reference(&img, r)
        {
            continue;
        }
        for f in filters {
            let (key, value) = f
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("invalid filter {f:?}: expected KEY=VALUE"))?;
            let keep = match key {
                "dangling" => {
                    let want = match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => bail!("invalid filter {f:?}: dangling takes true or false"),
                    };
                    img.names.is_empty() == want
                }
                "reference" => matches_reference(&img, value),
                "label" => {
                    let labels = engine
                        .image_config(&img)
                        .map(|c| c.labels())
                        .unwrap_or_default();
                    match value.split_once('=') {
                        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                        None => labels.contains_key(value),
                    }
                }
                "before" | "since" => {
                    let other = capsa_engine::engine::find_image(&all, value).ok_or_else(|| {
                        anyhow::anyhow!("invalid filter {f:?}: {value}: image not known")
                    })?;
                    let (a, b) = (
                        img.created.clone().unwrap_or_default(),
                        other.created.clone().unwrap_or_default(),
                    );
                    if key == "before" { a < b } else { a > b }
                }
                "id" => img.id.starts_with(value),
                _ => bail!(
                    "invalid filter {f:?}: supported filters are dangling, reference, label, before, since, id"
                ),
            };
            if !keep {
                continue 'img;
            }
        }
        out.push(img);
    }
    Ok(out)
}

/// Podman's reference filter: a glob over the name, with or without the registry.
fn matches_reference(img: &ImageRecord, pattern: &str) -> bool {
    img.names.iter().any(|n| {
        let (repo, tag, _) = split_name(n);
        let tagged = format!("{repo}:{}", tag.unwrap_or(""));
        let pat_has_tag = split_name(pattern).1.is_some();
        let subject = if pat_has_tag { tagged.as_str() } else { repo };
        glob(pattern, subject) || {
            // Also match without the registry, and on the last path components.
            let mut rest = subject;
            let mut hit = false;
            while let Some(i) = rest.find('/') {
                rest = &rest[i + 1..];
                if glob(pattern, rest) {
                    hit = true;
                    break;
                }
            }
            hit
        }
    })
}

fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

pub fn list(engine: &Engine, a: ImagesArgs) -> Result<()> {
    let mut images = filter_images(engine, engine.images()?, &a.filter, a.repository.as_deref())?;
    match a.sort.as_str() {
        "created" => images.sort_by(|x, y| y.created.cmp(&x.created)),
        "id" => images.sort_by(|x, y| x.id.cmp(&y.id)),
        "size" => images.sort_by_key(|x| x.size),
        "repository" | "tag" => images.sort_by(|x, y| x.names.first().cmp(&y.names.first())),
        other => bail!("invalid --sort {other:?}: use created, id, repository, size or tag"),
    }
    if a.quiet {
        let mut seen = Vec::new();
        for img in &images {
            let id = short_id(&img.id, a.no_trunc);
            if !seen.contains(&id) {
                println!("{id}");
                seen.push(id);
            }
        }
        return Ok(());
    }
    let mut cols = vec![
        Column {
            header: "REPOSITORY",
            field: "Repository",
        },
        Column {
            header: "TAG",
            field: "Tag",
        },
    ];
    if a.digests {
        cols.push(Column {
            header: "DIGEST",
            field: "Digest",
        });
    }
    cols.extend([
        Column {
            header: "IMAGE ID",
            field: "ID",
        },
        Column {
            header: "CREATED",
            field: "CreatedSince",
        },
        Column {
            header: "SIZE",
            field: "Size",
        },
    ]);
    let format = Format::parse(a.format.as_deref(), cols);
    let rows: Vec<Value> = images
        .iter()
        .flat_map(|i| image_rows(engine, i, a.no_trunc))
        .collect();
    let docs = Value::Array(images.iter().map(|i| image_summary(engine, i)).collect());
    output::print(&format, &rows, &docs, a.noheading)
}

pub fn inspect(engine: &Engine, a: InspectArgs) -> Result<()> {
    let mut docs = Vec::new();
    let mut missing = Vec::new();
    for name in &a.images {
        match engine.lookup_image(name) {
            Ok(img) => docs.push(engine.inspect_image(&img)?),
            Err(capsa_engine::EngineError::ImageNotKnown(_)) => missing.push(name.clone()),
            Err(e) => return Err(e.into()),
        }
    }
    output::print_inspect(docs, a.format.as_deref())?;
    if let Some(m) = missing.first() {
        return Err(CodedError {
            code: 125,
            message: format!("{m}: image not known"),
        }
        .into());
    }
    Ok(())
}

pub fn remove(engine: &Engine, a: RmiArgs) -> Result<()> {
    if a.all && !a.images.is_empty() {
        bail!("when using the --all switch, you may not pass any images names or IDs");
    }
    if !a.all && a.images.is_empty() {
        bail!("image name or ID must be specified");
    }
    let report = engine.remove_images(&a.images, a.all, a.force)?;
    for u in &report.untagged {
        println!("Untagged: {u}");
    }
    for d in &report.deleted {
        println!("Deleted: {d}");
    }
    let missing: Vec<&String> = if a.ignore {
        Vec::new()
    } else {
        report.not_found.iter().collect()
    };
    if let Some(m) = missing.first() {
        return Err(CodedError {
            code: 1,
            message: format!("{m}: image not known"),
        }
        .into());
    }
    Ok(())
}

pub fn tag(engine: &Engine, a: TagArgs) -> Result<()> {
    engine.tag(&a.image, &a.targets)?;
    Ok(())
}

pub fn untag(engine: &Engine, a: UntagArgs) -> Result<()> {
    engine.untag(&a.image, &a.names)?;
    Ok(())
}

pub async fn save(engine: &Engine, a: SaveArgs) -> Result<()> {
    let format: ArchiveFormat = a.format.parse()?;
    match &a.output {
        Some(p) => engine.save(&a.images, format, p).await?,
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to save to terminal. Use -o flag or redirect");
            }
            if format == ArchiveFormat::OciDir {
                bail!("--format oci-dir needs -o DIRECTORY");
            }
            let tmp = tempfile::NamedTempFile::new_in(engine.store().root().join("tmp"))?;
            engine.save(&a.images, format, tmp.path()).await?;
            let mut f = std::fs::File::open(tmp.path())?;
            std::io::copy(&mut f, &mut std::io::stdout().lock())?;
        }
    }
    Ok(())
}

pub async fn load(engine: &Engine, a: LoadArgs) -> Result<()> {
    let progress = StderrProgress::new(a.quiet);
    let names = match &a.input {
        Some(p) => engine.load(p, &progress).await?,
        None => {
            if std::io::stdin().is_terminal() {
                bail!(
                    "cannot read from terminal, use command-line redirection or the --input flag"
                );
            }
            let mut tmp = tempfile::NamedTempFile::new_in(engine.store().root().join("tmp"))?;
            std::io::copy(&mut std::io::stdin().lock(), &mut tmp)
                .context("reading the archive from stdin")?;
            engine.load(tmp.path(), &progress).await?
        }
    };
    println!("Loaded image: {}", names.join("\nLoaded image: "));
    Ok(())
}

pub async fn import(engine: &Engine, a: ImportArgs) -> Result<()> {
    let progress = StderrProgress::new(a.quiet);
    let opts = capsa_engine::image::import::ImportOptions {
        reference: a.reference.clone(),
        changes: a.change.clone(),
        message: a.message.clone(),
        os: a.os.clone(),
        arch: a.arch.clone(),
    };
    let img = engine.import(&a.source, &opts, &progress).await?;
    println!("sha256:{}", img.id);
    Ok(())
}

pub fn history(engine: &Engine, a: HistoryArgs) -> Result<()> {
    let img = engine.lookup_image(&a.image)?;
    let entries = engine.history(&img)?;
    if a.quiet {
        for e in &entries {
            println!(
                "{}",
                if a.no_trunc {
                    e.id.clone()
                } else {
                    e.id.chars().take(12).collect()
                }
            );
        }
        return Ok(());
    }
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            let created = e.created.as_deref().and_then(output::parse_time);
            let mut created_by = e.created_by.clone();
            if !a.no_trunc && created_by.chars().count() > 45 {
                created_by = format!("{}...", created_by.chars().take(42).collect::<String>());
            }
            json!({
                "ID": if a.no_trunc { e.id.clone() } else { e.id.chars().take(12).collect() },
                "Created": if a.human { created.map(output::human_since).unwrap_or_default() } else { e.created.clone().unwrap_or_default() },
                "CreatedSince": created.map(output::human_since).unwrap_or_default(),
                "CreatedAt": e.created.clone().unwrap_or_default(),
                "CreatedBy": created_by,
                "Size": if a.human { output::human_size(e.size) } else { e.size.to_string() },
                "Comment": e.comment,
                "Tags": e.tags,
            })
        })
        .collect();
    let docs = Value::Array(
        entries
            .iter()
            .map(|e| {
                json!({
                    "id": e.id, "created": e.created, "createdBy": e.created_by,
                    "size": e.size, "comment": e.comment, "tags": e.tags,
                })
            })
            .collect(),
    );
    let cols = vec![
        Column {
            header: "ID",
            field: "ID",
        },
        Column {
            header: "CREATED",
            field: "Created",
        },
        Column {
            header: "CREATED BY",
            field: "CreatedBy",
        },
        Column {
            header: "SIZE",
            field: "Size",
        },
        Column {
            header: "COMMENT",
            field: "Comment",
        },
    ];
    output::print(
        &Format::parse(a.format.as_deref(), cols),
        &rows,
        &docs,
        false,
    )
}

pub fn prune(engine: &Engine, a: PruneArgs) -> Result<()> {
    if !a.force && std::io::stdin().is_terminal() {
        eprint!(
            "WARNING! This command removes all {} images.\nAre you sure you want to continue? [y/N] ",
            if a.all {
                "images without at least one container associated with them"
            } else {
                "dangling"
            }
        );
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    for id in engine.prune_images(a.all)? {
        println!("{id}");
    }
    Ok(())
}

pub fn exists(engine: &Engine, a: ExistsArgs) -> Result<()> {
    match engine.lookup_image(&a.image) {
        Ok(_) => Ok(()),
        Err(capsa_engine::EngineError::ImageNotKnown(_)) => Err(crate::Exit(1).into()),
        Err(e) => Err(e.into()),
    }
}
