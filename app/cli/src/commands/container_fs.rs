//! A container's filesystem: `cp`, `diff`, `export` and `commit`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Result, bail};
use capsa_engine::Engine;
use capsa_engine::container::fsops::{self, Change, ChangeKind, CommitOptions, CpOptions, FsError};
use capsa_engine::container::lifecycle::ContainerError;
use capsa_engine::container::state::StateError;
use clap::Args;
use serde::Serialize;

use crate::Exit;
use crate::progress::StderrProgress;

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Chown copied files to the primary uid/gid of the destination container
    #[arg(short = 'a', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub archive: bool,
    /// Always follow a symlink given as SRC_PATH (what Podman does anyway)
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// Allow to overwrite directories with non-directories and vice versa
    #[arg(long)]
    pub overwrite: bool,
    /// [CONTAINER:]SRC_PATH, or - for a tar archive on stdin
    #[arg(value_name = "[CONTAINER:]SRC_PATH")]
    pub src: String,
    /// [CONTAINER:]DEST_PATH, or - for a tar archive on stdout
    #[arg(value_name = "[CONTAINER:]DEST_PATH")]
    pub dest: String,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Change the output format (json)
    #[arg(long)]
    pub format: Option<String>,
    /// The container (or, for `capsa diff`, image) to compare with its image
    pub name: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a specified file (default: stdout, which must be redirected)
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Set the author for the image committed
    #[arg(short, long)]
    pub author: Option<String>,
    /// Set commit message for imported image (docker format only)
    #[arg(short, long)]
    pub message: Option<String>,
    /// Apply the following possible instructions to the created image: CMD | ENTRYPOINT | ENV | EXPOSE | LABEL | ONBUILD | STOPSIGNAL | USER | VOLUME | WORKDIR
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Pause container during commit
    #[arg(short, long)]
    pub pause: bool,
    /// Format of the image manifest and metadata: oci or docker
    #[arg(short, long, default_value = "oci")]
    pub format: String,
    /// Suppress output
    #[arg(short, long)]
    pub quiet: bool,
    /// File to write the image ID to
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Include container volumes as image volumes
    #[arg(long)]
    pub include_volumes: bool,
    /// Squash the image's layers and the container's changes into one new layer
    #[arg(short, long)]
    pub squash: bool,
    pub container: String,
    /// Name of the new image
    pub image: Option<String>,
}

/// Engine errors keep their hints and exit codes; ours print their hint here.
fn fs_err(e: FsError) -> anyhow::Error {
    match e {
        FsError::Engine(e) => e.into(),
        FsError::Container(e) => crate::commands::container::container_err(e),
        other => {
            let hint = other.hint();
            let err = anyhow::Error::from(other);
            match hint {
                Some(h) => {
                    crate::report(&err);
                    eprintln!("hint: {h}");
                    Exit(125).into()
                }
                None => err,
            }
        }
    }
}

pub fn cp(engine: &Engine, a: CpArgs) -> Result<()> {
    let src = fsops::parse_cp_location(&a.src);
    let dest = fsops::parse_cp_location(&a.dest);
    let opts = CpOptions {
        archive: a.archive,
        follow_link: a.follow_link,
        overwrite: a.overwrite,
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    engine
        .copy(&src, &dest, &opts, &mut stdin.lock(), &mut stdout.lock())
        .map_err(fs_err)
}

#[derive(Serialize)]
struct DiffJson {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    changed: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    deleted: Vec<String>,
}

/// `diff` (a container, else an image) and `container diff` (`containers_only`).
pub fn diff(engine: &Engine, a: DiffArgs, containers_only: bool) -> Result<()> {
    if let Some(f) = a.format.as_deref()
        && f != "json"
    {
        bail!("invalid --format {f:?}: the only valid format for diff is json");
    }
    let changes: Vec<Change> = match engine.container_changes(&a.name) {
        Ok(c) => c,
        Err(FsError::Container(ContainerError::State(StateError::NotFound(_))))
            if !containers_only =>
        {
            match engine.image_changes(&a.name) {
                Ok(c) => c,
                Err(FsError::Engine(capsa_engine::EngineError::ImageNotKnown(_))) => {
                    bail!("no container or image with name or ID {:?} found", a.name)
                }
                Err(e) => return Err(fs_err(e)),
            }
        }
        Err(e) => return Err(fs_err(e)),
    };
    let mut out = std::io::stdout().lock();
    if a.format.is_some() {
        let pick = |k: ChangeKind| -> Vec<String> {
            changes
                .iter()
                .filter(|c| c.kind == k)
                .map(|c| c.path.clone())
                .collect()
        };
        let doc = DiffJson {
            changed: pick(ChangeKind::Modified),
            added: pick(ChangeKind::Added),
            deleted: pick(ChangeKind::Deleted),
        };
        // Podman indents its JSON with five spaces.
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"     ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        doc.serialize(&mut ser)?;
        writeln!(out)?;
    } else {
        for c in &changes {
            writeln!(out, "{} {}", c.kind.letter(), c.path)?;
        }
    }
    Ok(())
}

pub fn export(engine: &Engine, a: ExportArgs) -> Result<()> {
    match &a.output {
        Some(path) => {
            let mut f = std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
            if let Err(e) = engine.export_container(&a.container, &mut f) {
                drop(f);
                let _ = std::fs::remove_file(path);
                return Err(fs_err(e));
            }
            f.sync_all()?;
            Ok(())
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to export to terminal. Use -o flag or redirect");
            }
            engine
                .export_container(&a.container, &mut std::io::stdout().lock())
                .map_err(fs_err)
        }
    }
}

pub fn commit(engine: &Engine, a: CommitArgs) -> Result<()> {
    let progress = StderrProgress::new(a.quiet);
    let opts = CommitOptions {
        reference: a.image.clone(),
        author: a.author.clone(),
        message: a.message.clone(),
        changes: a.change.clone(),
        pause: a.pause,
        format: a.format.clone(),
        include_volumes: a.include_volumes,
        squash: a.squash,
    };
    let img = engine
        .commit_container(&a.container, &opts, &progress)
        .map_err(fs_err)?;
    if let Some(p) = &a.iidfile {
        std::fs::write(p, &img.id).map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display()))?;
    }
    println!("{}", img.id);
    Ok(())
}
