//! Command-line syntax: Podman's global flags, commands and their flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::commands::container::{
    CleanupArgs, CreateArgs, ExecArgs, KillArgs, ObjectInspectArgs, PsArgs, RmArgs, RunArgs,
    StartArgs, StopArgs, WaitArgs,
};

#[derive(Parser, Debug)]
#[command(
    name = "capsa",
    version,
    about = "Daemonless, rootless containers, and Linux machines to run them in",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Path to the root directory in which data (images, layers) is stored
    #[arg(long, global = true, value_name = "PATH")]
    pub root: Option<PathBuf>,
    /// Path to the directory in which runtime state is stored
    #[arg(long, global = true, value_name = "PATH")]
    pub runroot: Option<PathBuf>,
    /// Storage driver: overlay or vfs
    #[arg(long, global = true, value_name = "DRIVER", env = "STORAGE_DRIVER")]
    pub storage_driver: Option<String>,
    /// Log messages at and above this level: debug, info, warn, error
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,
}

/// `--tls-verify` as Podman takes it: bare means true, `--tls-verify=false` turns it off.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Require HTTPS and verify certificates when contacting registries
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub tls_verify: Option<bool>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct AuthArgs {
    /// Path of the authentication file (default: ${XDG_RUNTIME_DIR}/containers/auth.json)
    #[arg(long, env = "REGISTRY_AUTH_FILE", value_name = "PATH")]
    pub authfile: Option<PathBuf>,
    /// Credentials (USERNAME[:PASSWORD]) for accessing the registry
    #[arg(long, value_name = "USER[:PASS]")]
    pub creds: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    // Boxed: the run/create flags dwarf every other variant.
    #[command(flatten)]
    Shared(Box<SharedContainerCommand>),
    /// List containers
    Ps(PsArgs),
    /// Manage containers
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manage volumes
    #[command(subcommand)]
    Volume(crate::commands::volume::VolumeCommand),
    /// Generate structured data (systemd units) for containers
    #[command(subcommand)]
    Generate(crate::commands::generate::GenerateCommand),
    /// Pull an image from a registry
    Pull(PullArgs),
    /// Push an image to a registry
    Push(PushArgs),
    /// List images in local storage
    #[command(alias = "list")]
    Images(ImagesArgs),
    /// Remove one or more images from local storage
    Rmi(RmiArgs),
    /// Add an additional name to a local image
    Tag(TagArgs),
    /// Remove a name from a local image
    Untag(UntagArgs),
    /// Save image(s) to an archive
    Save(SaveArgs),
    /// Load image(s) from a tar archive
    Load(LoadArgs),
    /// Import a tarball to create a filesystem image
    Import(ImportArgs),
    /// Show history of a specified image
    History(HistoryArgs),
    /// Display the configuration of containers or images
    Inspect(ObjectInspectArgs),
    /// Log in to a container registry
    Login(LoginArgs),
    /// Log out of a container registry
    Logout(LogoutArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage Linux virtual machines to run containers in
    #[command(subcommand)]
    Machine(crate::commands::machine::MachineCommand),
    /// Manage capsa: connections to remote engines
    #[command(subcommand)]
    System(crate::commands::system::SystemCommand),
    /// Display the capsa version information
    Version,
}

/// The container commands Podman offers both at the top level and under `container`
/// (`capsa run` is `capsa container run`), defined once and flattened into both.
#[derive(Subcommand, Debug)]
pub enum SharedContainerCommand {
    /// Run a command in a new container
    Run(RunArgs),
    /// Create but do not start a container
    Create(CreateArgs),
    /// Start one or more containers
    Start(StartArgs),
    /// Stop one or more containers
    Stop(StopArgs),
    /// Kill one or more running containers with a specific signal
    Kill(KillArgs),
    /// Remove one or more containers
    Rm(RmArgs),
    /// Block on one or more containers
    Wait(WaitArgs),
    /// Run a process in a running container
    Exec(ExecArgs),
    /// Fetch the logs of one or more containers
    Logs(crate::commands::container_ops::LogsArgs),
    /// Attach to a running container
    Attach(crate::commands::container_ops::AttachArgs),
    /// Restart one or more containers
    Restart(crate::commands::container_ops::RestartArgs),
    /// Display the running processes of a container
    Top(crate::commands::container_ops::TopArgs),
    /// List port mappings or a specific mapping for the container
    Port(crate::commands::container_ops::PortArgs),
    /// Rename an existing container
    Rename(crate::commands::container_ops::RenameArgs),
    /// Pause all the processes in one or more containers
    Pause(crate::commands::container_ops::PauseArgs),
    /// Unpause the processes in one or more containers
    Unpause(crate::commands::container_ops::PauseArgs),
    /// Display a live stream of container resource usage statistics
    Stats(crate::commands::container_ops::StatsArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(crate::commands::container_fs::CpArgs),
    /// Inspect changes to the container's file system
    Diff(crate::commands::container_fs::DiffArgs),
    /// Export a container's filesystem contents as a tar archive
    Export(crate::commands::container_fs::ExportArgs),
    /// Create new image based on the changed container
    Commit(crate::commands::container_fs::CommitArgs),
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Pull an image from a registry
    Pull(PullArgs),
    /// Push an image to a registry
    Push(PushArgs),
    /// List images in local storage
    #[command(visible_alias = "list")]
    Ls(ImagesArgs),
    /// Remove one or more images from local storage
    Rm(RmiArgs),
    /// Add an additional name to a local image
    Tag(TagArgs),
    /// Remove a name from a local image
    Untag(UntagArgs),
    /// Save image(s) to an archive
    Save(SaveArgs),
    /// Load image(s) from a tar archive
    Load(LoadArgs),
    /// Import a tarball to create a filesystem image
    Import(ImportArgs),
    /// Show history of a specified image
    History(HistoryArgs),
    /// Display the configuration of an image
    Inspect(InspectArgs),
    /// Remove unused images
    Prune(PruneArgs),
    /// Check if an image exists in local storage
    Exists(ExistsArgs),
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    // Boxed: the run/create flags dwarf every other variant here.
    #[command(flatten)]
    Shared(Box<SharedContainerCommand>),
    /// List containers
    #[command(visible_aliases = ["ls", "list"])]
    Ps(PsArgs),
    /// Display the configuration of a container
    Inspect(ObjectInspectArgs),
    /// Remove all stopped containers
    Prune(crate::commands::container_ops::ContainerPruneArgs),
    /// Check if a container exists in local storage
    Exists(crate::commands::container_ops::ContainerExistsArgs),
    /// Clean up a container's run (run by capsa-monitor when the container exits)
    #[command(hide = true)]
    Cleanup(CleanupArgs),
}

impl Command {
    /// Commands that read or write the store run inside the rootless user namespace.
    pub fn needs_store(&self) -> bool {
        !matches!(
            self,
            Command::Version
                | Command::Login(_)
                | Command::Logout(_)
                | Command::Machine(_)
                | Command::System(_)
        )
    }
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Image to pull
    pub name: String,
    /// Pull all tagged images in the repository
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Specify the platform for selecting the image (OS/ARCH[/VARIANT])
    #[arg(long)]
    pub platform: Option<String>,
    /// Use ARCH instead of the architecture of the machine for choosing images
    #[arg(long)]
    pub arch: Option<String>,
    /// Use OS instead of the running OS for choosing images
    #[arg(long)]
    pub os: Option<String>,
    /// Use VARIANT instead of the running architecture variant for choosing images
    #[arg(long)]
    pub variant: Option<String>,
    /// Suppress output information when pulling images
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Image to push
    pub image: String,
    /// Destination (default: the image's name)
    pub destination: Option<String>,
    /// Manifest type to push: oci or v2s2 (default: as the image was stored)
    #[arg(short, long)]
    pub format: Option<String>,
    /// Write the digest of the pushed image to this file
    #[arg(long)]
    pub digestfile: Option<PathBuf>,
    /// Suppress output information when pushing images
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Show images whose repository matches
    pub repository: Option<String>,
    /// Show all images (default hides intermediate images)
    #[arg(short, long)]
    pub all: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Filter output based on conditions provided (dangling=, reference=, label=, before=, since=)
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Change the output format to JSON or a Go template
    #[arg(long)]
    pub format: Option<String>,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Do not print column headings
    #[arg(short = 'n', long)]
    pub noheading: bool,
    /// Display only image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Sort by created, id, repository, size or tag
    #[arg(long, default_value = "created")]
    pub sort: String,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Images to remove
    pub images: Vec<String>,
    /// Remove all images
    #[arg(short, long)]
    pub all: bool,
    /// Force removal of the image and any containers using it
    #[arg(short, long)]
    pub force: bool,
    /// Ignore errors if a specified image does not exist
    #[arg(short, long)]
    pub ignore: bool,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    pub image: String,
    #[arg(required = true)]
    pub targets: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UntagArgs {
    pub image: String,
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to a specified file (default: stdout, which must be redirected)
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Save image to oci-archive, oci-dir (directory with oci manifest type), docker-archive
    #[arg(long, default_value = "docker-archive")]
    pub format: String,
    /// Interpret additional arguments as images not tags and create a multi-image-archive (only for docker-archive)
    #[arg(short = 'm', long)]
    pub multi_image_archive: bool,
    /// Suppress the output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from specified archive file (default: stdin)
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Suppress the output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A tarball path, an http(s) URL, or - for stdin
    pub source: String,
    /// Name of the new image
    pub reference: Option<String>,
    /// Apply the following possible instructions to the created image: CMD | ENTRYPOINT | ENV | EXPOSE | LABEL | STOPSIGNAL | USER | VOLUME | WORKDIR
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Set commit message for imported image
    #[arg(short, long)]
    pub message: Option<String>,
    /// Suppress the output
    #[arg(short, long)]
    pub quiet: bool,
    /// Set the OS of the imported image
    #[arg(long)]
    pub os: Option<String>,
    /// Set the architecture of the imported image
    #[arg(long)]
    pub arch: Option<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    pub image: String,
    /// Display sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub human: bool,
    /// Do not truncate the output
    #[arg(long)]
    pub no_trunc: bool,
    /// Display the numeric IDs only
    #[arg(short, long)]
    pub quiet: bool,
    /// Change the output to JSON or a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Format the output using the given Go template
    #[arg(short, long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all images not in use by containers, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ExistsArgs {
    pub image: String,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry to log in to (default: the first unqualified-search registry)
    pub registry: Option<String>,
    #[arg(short, long)]
    pub username: Option<String>,
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// Return the current login user for the registry
    #[arg(long)]
    pub get_login: bool,
    #[arg(long, env = "REGISTRY_AUTH_FILE", value_name = "PATH")]
    pub authfile: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    pub registry: Option<String>,
    /// Remove the cached credentials for all registries in the auth file
    #[arg(short, long)]
    pub all: bool,
    #[arg(long, env = "REGISTRY_AUTH_FILE", value_name = "PATH")]
    pub authfile: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// clap's own consistency checks over every command (duplicate short flags such as
    /// `-h`, which is `--hostname` for run/create, would only panic at run time).
    #[test]
    fn every_command_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_the_image_verbatim() {
        let cli = Cli::try_parse_from([
            "capsa", "run", "--rm", "-h", "box", "img", "ls", "-l", "--rm",
        ])
        .unwrap();
        let Command::Shared(shared) = cli.command else {
            panic!("not run")
        };
        let SharedContainerCommand::Run(a) = *shared else {
            panic!("not run")
        };
        assert!(a.create.rm);
        assert_eq!(a.create.hostname.as_deref(), Some("box"));
        assert_eq!(a.create.image, "img");
        assert_eq!(a.create.command, ["ls", "-l", "--rm"]);
    }

    /// One definition serves `capsa X` and `capsa container X`; `ps` keeps its `ls`
    /// and `list` aliases under `container` only, as in Podman.
    #[test]
    fn container_commands_at_both_levels() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["capsa"], args].concat());
        for (top, nested) in [
            (
                vec!["stop", "-t", "3", "web"],
                vec!["container", "stop", "-t", "3", "web"],
            ),
            (
                vec!["commit", "-s", "web"],
                vec!["container", "commit", "-s", "web"],
            ),
            (
                vec!["cp", "web:/a", "/b"],
                vec!["container", "cp", "web:/a", "/b"],
            ),
        ] {
            let Command::Shared(a) = parse(&top).unwrap().command else {
                panic!("{top:?}: not a container command")
            };
            let Command::Container(ContainerCommand::Shared(b)) = parse(&nested).unwrap().command
            else {
                panic!("{nested:?}: not a container command")
            };
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
        for ps in [
            &["ps", "-a"][..],
            &["container", "ps", "-a"],
            &["container", "ls", "-a"],
        ] {
            let cmd = parse(ps).unwrap().command;
            assert!(
                matches!(
                    cmd,
                    Command::Ps(_) | Command::Container(ContainerCommand::Ps(_))
                ),
                "{ps:?}"
            );
        }
        assert!(parse(&["ls"]).is_err());
        // Both help texts list the shared commands.
        let mut cli = Cli::command();
        let top = cli.render_help().to_string();
        let nested = cli
            .find_subcommand_mut("container")
            .unwrap()
            .render_help()
            .to_string();
        for help in [&top, &nested] {
            for name in ["run", "exec", "commit", "stats", "ps"] {
                assert!(
                    help.lines()
                        .any(|l| l.trim_start().starts_with(&format!("{name} "))),
                    "{name} missing from\n{help}"
                );
            }
        }
        assert!(nested.contains("[aliases: ls, list]"), "{nested}");
        assert!(!top.contains("cleanup"), "{top}");
    }
}
