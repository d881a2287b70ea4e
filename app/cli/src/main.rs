//! `capsa`: the command-line interface. Parses arguments, sets up logging, enters the
//! rootless user namespace when needed, calls the engine and maps errors to Podman's
//! exit codes (125 for engine errors).

mod cli;
mod commands;
mod gotemplate;
mod output;
mod progress;
mod tabwriter;

use clap::Parser;

/// An error that carries its own exit code (e.g. `image exists` answers 1).
#[derive(Debug)]
pub struct Exit(pub i32);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}
impl std::error::Error for Exit {}

fn main() {
    capsa_engine::userns::run_pause_if_asked();
    // Before any thread: systemd's variables leave the environment (docs/systemd.md).
    capsa_engine::container::systemd::SystemdEnv::capture();
    // Usage errors exit 125 like Podman's; --help and --version exit 0.
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 125 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    init_logging(&cli.global.log_level);
    if cli.command.needs_store()
        && let Err(e) = capsa_engine::userns::enter()
    {
        eprintln!("Error: {e}");
        eprintln!(
            "hint: rootless capsa needs the uidmap package (newuidmap, newgidmap) and ranges for your user in /etc/subuid and /etc/subgid"
        );
        std::process::exit(125);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = rt.block_on(commands::run(cli));
    std::process::exit(match result {
        Ok(()) => 0,
        Err(e) => report(&e),
    });
}

/// Prints the error chain and its hint; returns the exit code.
pub(crate) fn report(e: &anyhow::Error) -> i32 {
    if let Some(Exit(code)) = e.downcast_ref::<Exit>() {
        return *code;
    }
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    eprintln!("Error: {msg}");
    let hint = e
        .chain()
        .find_map(|c| c.downcast_ref::<capsa_engine::EngineError>())
        .and_then(|e| e.hint())
        .or_else(|| {
            e.chain()
                .find_map(|c| c.downcast_ref::<capsa_core::machine::MachineError>())
                .and_then(|m| m.hint())
        })
        .or_else(|| {
            e.chain()
                .find_map(|c| c.downcast_ref::<capsa_core::connection::ConnectionError>())
                .and_then(|c| c.hint())
        })
        .or_else(|| {
            e.chain()
                .find_map(|c| c.downcast_ref::<capsa_core::ssh::SshError>())
                .map(|s| s.hint())
        })
        .or_else(|| {
            e.chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .any(|io| io.raw_os_error() == Some(libc::ENOSPC))
                .then(|| {
                    "the disk holding the store is full: free space, or use another --root"
                        .to_string()
                })
        });
    if let Some(h) = hint {
        eprintln!("hint: {h}");
    }
    e.chain()
        .find_map(|c| {
            c.downcast_ref::<commands::CodedError>()
                .map(|c| c.code)
                .or_else(|| match c.downcast_ref::<capsa_engine::EngineError>() {
                    Some(capsa_engine::EngineError::Container(ce)) => Some(ce.exit_code()),
                    // Podman's "in use" (image used by a container): 2.
                    Some(capsa_engine::EngineError::UsedByContainer { .. }) => Some(2),
                    _ => None,
                })
                // ssh(1)'s status for a connection that failed.
                .or_else(|| {
                    c.downcast_ref::<capsa_core::ssh::SshError>()
                        .map(|_| capsa_core::ssh::EXIT_CONNECTION)
                })
        })
        .unwrap_or(125)
}

fn init_logging(level: &str) {
    let filter = match level {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "error" | "fatal" | "panic" => "error",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAPSA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
}
