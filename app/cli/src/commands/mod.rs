//! One module per command noun; each turns parsed arguments into engine calls and
//! prints the result.

pub mod attach;
pub mod container;
pub mod container_fs;
pub mod container_ops;
pub mod generate;
mod image;
mod login;
pub mod machine;
pub mod system;
pub mod volume;

use std::path::PathBuf;

use anyhow::Result;
use capsa_engine::store::{Driver, StoreOptions};
use capsa_engine::{Engine, EngineOptions, userns};

use crate::cli::{Cli, Command, ContainerCommand, Global, ImageCommand, SharedContainerCommand};

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
        Command::Machine(c) => machine::run(c).await,
        Command::System(c) => system::run(c),
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
        Command::Shared(c) => shared(&g, *c, false).await,
        Command::Container(ContainerCommand::Shared(c)) => shared(&g, *c, true).await,
        Command::Ps(a) | Command::Container(ContainerCommand::Ps(a)) => {
            container::ps(&open(&g)?, a)
        }
        Command::Container(ContainerCommand::Prune(a)) => container_ops::prune(&open(&g)?, a),
        Command::Container(ContainerCommand::Exists(a)) => container_ops::exists(&open(&g)?, a),
        Command::Volume(c) => volume::run(&open(&g)?, c),
        Command::Generate(c) => generate::run(&open(&g)?, &g, c),
        Command::Container(ContainerCommand::Cleanup(a)) => container::cleanup(&open(&g)?, a),
    }
}

/// The container commands of both levels; `under_container` tells `container diff`
/// (containers only) from `diff`.
async fn shared(g: &Global, c: SharedContainerCommand, under_container: bool) -> Result<()> {
    use SharedContainerCommand as C;
    let e = open(g)?;
    match c {
        C::Run(a) => container::run(&e, a).await,
        C::Create(a) => container::create(&e, a).await,
        C::Start(a) => container::start(&e, a).await,
        C::Stop(a) => container::stop(&e, a),
        C::Kill(a) => container::kill(&e, a),
        C::Rm(a) => container::rm(&e, a),
        C::Wait(a) => container::wait(&e, a),
        C::Exec(a) => container::exec(&e, a),
        C::Cp(a) => container_fs::cp(&e, a),
        C::Diff(a) => container_fs::diff(&e, a, under_container),
        C::Export(a) => container_fs::export(&e, a),
        C::Commit(a) => container_fs::commit(&e, a),
        C::Logs(a) => container_ops::logs(&e, a),
        C::Attach(a) => container_ops::attach(&e, a).await,
        C::Restart(a) => container_ops::restart(&e, a),
        C::Top(a) => container_ops::top(&e, a),
        C::Port(a) => container_ops::port(&e, a),
        C::Rename(a) => container_ops::rename(&e, a),
        C::Pause(a) => container_ops::pause(&e, a),
        C::Unpause(a) => container_ops::unpause(&e, a),
        C::Stats(a) => container_ops::stats(&e, a),
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
