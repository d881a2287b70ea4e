//! One module per command noun; each turns parsed arguments into engine calls and
//! prints the result.

pub mod attach;
pub mod container;
pub mod container_fs;
pub mod container_ops;
pub mod generate;
mod image;
mod login;
pub mod volume;

use std::path::PathBuf;

use anyhow::Result;
use capsa_engine::store::{Driver, StoreOptions};
use capsa_engine::{Engine, EngineOptions, userns};

use crate::cli::{Cli, Command, ContainerCommand, Global, ImageCommand};

/// An error with a specific exit code (Podman's: 1 for "no such image" in rmi, …).
#[derive(Debug)]
pub struct CodedError {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for CodedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for CodedError {}

pub async fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    match cli.command {
        Command::Version => {
            println!("Version:      {}", env!("CARGO_PKG_VERSION"));
            println!("API Version:  {}", capsa_engine::API_VERSION);
            println!(
                "OS/Arch:      {}/{}",
                std::env::consts::OS,
                std::env::consts::ARCH
            );
            Ok(())
        }
        Command::Login(a) => login::login(&g, a).await,
        Command::Logout(a) => login::logout(a),
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => {
            image::pull(&open_with_auth(&g, a.auth.authfile.clone())?, a).await
        }
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => {
            image::push(&open_with_auth(&g, a.auth.authfile.clone())?, a).await
        }
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => image::list(&open(&g)?, a),
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => image::remove(&open(&g)?, a),
        Command::Tag(a) | Command::Image(ImageCommand::Tag(a)) => image::tag(&open(&g)?, a),
        Command::Untag(a) | Command::Image(ImageCommand::Untag(a)) => image::untag(&open(&g)?, a),
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => {
            image::save(&open(&g)?, a).await
        }
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => {
            image::load(&open(&g)?, a).await
        }
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => {
            image::import(&open(&g)?, a).await
        }
        Command::History(a) | Command::Image(ImageCommand::History(a)) => {
            image::history(&open(&g)?, a)
        }
        Command::Image(ImageCommand::Inspect(a)) => image::inspect(&open(&g)?, a),
        Command::Inspect(a) => container::inspect(&open(&g)?, a, "all"),
        Command::Container(ContainerCommand::Inspect(a)) => {
            container::inspect(&open(&g)?, a, "container")
        }
        Command::Image(ImageCommand::Prune(a)) => image::prune(&open(&g)?, a),
        Command::Image(ImageCommand::Exists(a)) => image::exists(&open(&g)?, a),
        Command::Run(a) | Command::Container(ContainerCommand::Run(a)) => {
            container::run(&open(&g)?, a).await
        }
        Command::Create(a) | Command::Container(ContainerCommand::Create(a)) => {
            container::create(&open(&g)?, a).await
        }
        Command::Start(a) | Command::Container(ContainerCommand::Start(a)) => {
            container::start(&open(&g)?, a).await
        }
        Command::Stop(a) | Command::Container(ContainerCommand::Stop(a)) => {
            container::stop(&open(&g)?, a)
        }
        Command::Kill(a) | Command::Container(ContainerCommand::Kill(a)) => {
            container::kill(&open(&g)?, a)
        }
        Command::Rm(a) | Command::Container(ContainerCommand::Rm(a)) => {
            container::rm(&open(&g)?, a)
        }
        Command::Ps(a) | Command::Container(ContainerCommand::Ps(a)) => {
            container::ps(&open(&g)?, a)
        }
        Command::Wait(a) | Command::Container(ContainerCommand::Wait(a)) => {
            container::wait(&open(&g)?, a)
        }
        Command::Exec(a) | Command::Container(ContainerCommand::Exec(a)) => {
            container::exec(&open(&g)?, a)
        }
        Command::Cp(a) | Command::Container(ContainerCommand::Cp(a)) => {
            container_fs::cp(&open(&g)?, a)
        }
        Command::Diff(a) => container_fs::diff(&open(&g)?, a, false),
        Command::Container(ContainerCommand::Diff(a)) => container_fs::diff(&open(&g)?, a, true),
        Command::Export(a) | Command::Container(ContainerCommand::Export(a)) => {
            container_fs::export(&open(&g)?, a)
        }
        Command::Commit(a) | Command::Container(ContainerCommand::Commit(a)) => {
            container_fs::commit(&open(&g)?, a)
        }
        Command::Logs(a) | Command::Container(ContainerCommand::Logs(a)) => {
            container_ops::logs(&open(&g)?, a)
        }
        Command::Attach(a) | Command::Container(ContainerCommand::Attach(a)) => {
            container_ops::attach(&open(&g)?, a).await
        }
        Command::Restart(a) | Command::Container(ContainerCommand::Restart(a)) => {
            container_ops::restart(&open(&g)?, a)
        }
        Command::Top(a) | Command::Container(ContainerCommand::Top(a)) => {
            container_ops::top(&open(&g)?, a)
        }
        Command::Port(a) | Command::Container(ContainerCommand::Port(a)) => {
            container_ops::port(&open(&g)?, a)
        }
        Command::Rename(a) | Command::Container(ContainerCommand::Rename(a)) => {
            container_ops::rename(&open(&g)?, a)
        }
        Command::Pause(a) | Command::Container(ContainerCommand::Pause(a)) => {
            container_ops::pause(&open(&g)?, a)
        }
        Command::Unpause(a) | Command::Container(ContainerCommand::Unpause(a)) => {
            container_ops::unpause(&open(&g)?, a)
        }
        Command::Stats(a) | Command::Container(ContainerCommand::Stats(a)) => {
            container_ops::stats(&open(&g)?, a)
        }
        Command::Container(ContainerCommand::Prune(a)) => container_ops::prune(&open(&g)?, a),
        Command::Container(ContainerCommand::Exists(a)) => container_ops::exists(&open(&g)?, a),
        Command::Volume(c) => volume::run(&open(&g)?, c),
        Command::Generate(c) => generate::run(&open(&g)?, &g, c),
        Command::Container(ContainerCommand::Cleanup(a)) => container::cleanup(&open(&g)?, a),
    }
}

/// Default store locations, like Podman's but under `capsa/`.
pub fn store_options(g: &Global) -> Result<StoreOptions> {
    let rootless = userns::is_rootless();
    let (root, runroot) = if rootless {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".local/share")))
            .ok_or_else(|| anyhow::anyhow!("neither XDG_DATA_HOME nor HOME is set: pass --root"))?;
        let run = userns::runtime_dir();
        (data.join("capsa/storage"), run)
    } else {
        (
            PathBuf::from("/var/lib/capsa/storage"),
            PathBuf::from("/run/capsa"),
        )
    };
    let driver = g
        .storage_driver
        .as_deref()
        .map(str::parse::<Driver>)
        .transpose()?;
    Ok(StoreOptions {
        root: g.root.clone().unwrap_or(root),
        runroot: g.runroot.clone().unwrap_or(runroot),
        driver,
        rootless,
    })
}

fn open(g: &Global) -> Result<Engine> {
    open_with_auth(g, None)
}

/// `auth_file`: the command's `--authfile` (clap also fills it from REGISTRY_AUTH_FILE).
fn open_with_auth(g: &Global, auth_file: Option<PathBuf>) -> Result<Engine> {
    Ok(Engine::open(EngineOptions {
        store: store_options(g)?,
        auth_file,
    })?)
}
