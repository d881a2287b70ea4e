//! `capsa-agent`: runs inside the guest VM and serves the host over one framed stream
//! (virtio-serial, vsock; a unix socket in tests). docs/protocol.md has the protocol.
//!
//! ```text
//! capsa-agent [--pid1] [--listen SPEC]... [--sysroot DIR]
//! ```
//! Without `--listen` it serves the virtio-serial port `org.capsa.agent.0`, and vsock
//! port 1024 when /dev/vsock exists. `--pid1` is for the guest's init, which execs us.
//! `--listen stdio` serves one session on stdin/stdout and exits when it ends: the host's
//! SSH transport runs it that way.

mod exec;
mod fdio;
mod power;
mod reaper;
mod session;
mod sys;
mod timesync;
mod transport;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use transport::{Listener, Spec};

const USAGE: &str = "usage: capsa-agent [--pid1] [--listen serial[:NAME]|vsock[:PORT]|unix:PATH|fd:N|stdio]... [--sysroot DIR]";

/// Why the agent stops serving.
#[derive(Debug)]
pub enum Stop {
    Shutdown,
    PowerButton,
    /// The only connection (`--listen fd:N` with a connected socket, or `stdio`) ended.
    Done,
}

/// What every session shares.
pub struct Agent {
    pub software: String,
    pub pid1: bool,
    /// The guest's `/` for files the agent writes for the host (authorized_keys).
    pub sysroot: PathBuf,
    pub stop: mpsc::UnboundedSender<Stop>,
    ready: AtomicBool,
}

impl Agent {
    /// `capsa-agent: ready` on the console, once, for humans reading the serial log (the
    /// host's readiness signal is the Hello frame).
    pub fn announce_ready(&self) {
        if self.pid1 && !self.ready.swap(true, Ordering::SeqCst) {
            console("capsa-agent: ready");
        }
    }
}

/// A line on /dev/console when there is one (the serial log), else on stderr.
pub fn console(line: &str) {
    match std::fs::OpenOptions::new().write(true).open("/dev/console") {
        Ok(mut console) => {
            let _ = writeln!(console, "{line}");
        }
        Err(_) => eprintln!("{line}"),
    }
}

struct Args {
    pid1: bool,
    listen: Vec<Spec>,
    sysroot: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        pid1: false,
        listen: Vec::new(),
        sysroot: PathBuf::from("/"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--pid1" => args.pid1 = true,
            "--listen" => args.listen.push(Spec::parse(&value("--listen")?)?),
            "--sysroot" => args.sysroot = PathBuf::from(value("--sysroot")?),
            "--version" => {
                println!(
                    "capsa-agent {} (protocol {})",
                    env!("CARGO_PKG_VERSION"),
                    capsa_proto::PROTOCOL_VERSION
                );
                std::process::exit(0);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.listen.is_empty() {
        args.listen
            .push(Spec::Serial(capsa_proto::VIRTIO_SERIAL_NAME.into()));
        if Path::new("/dev/vsock").exists() {
            args.listen.push(Spec::Vsock(capsa_proto::VSOCK_PORT));
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("capsa-agent: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // One thread: the agent's work is I/O, and the reaper relies on spawns and its own
    // waitpid never running at the same time.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("capsa-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    if let Err(e) = reaper::start() {
        eprintln!("capsa-agent: cannot watch child processes: {e}");
        return ExitCode::FAILURE;
    }
    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel();
    let agent = Arc::new(Agent {
        software: format!("capsa-agent {}", env!("CARGO_PKG_VERSION")),
        pid1: args.pid1,
        sysroot: args.sysroot,
        stop: stop_tx.clone(),
        ready: AtomicBool::new(false),
    });
    let mut bound = 0;
    for spec in &args.listen {
        match Listener::bind(spec) {
            Ok(listener) => {
                bound += 1;
                tokio::spawn(accept_loop(agent.clone(), listener));
            }
            Err(e) => eprintln!("capsa-agent: cannot listen on {spec:?}: {e}"),
        }
    }
    if bound == 0 && !args.pid1 {
        return ExitCode::FAILURE;
    }
    if args.pid1 {
        power::watch_power_button(stop_tx.clone());
        timesync::start();
    }
    drop(stop_tx);
    let stop = stop_rx.recv().await;
    if args.pid1 {
        // PID 1 must never exit (the kernel would panic): it powers the guest off.
        console(&format!("capsa-agent: {stop:?}: shutting down"));
        power::power_off(Duration::from_secs(10)).await;
    }
    ExitCode::SUCCESS
}

async fn accept_loop(agent: Arc<Agent>, mut listener: Listener) {
    loop {
        match listener.accept().await {
            Ok(Some(conn)) if listener.sequential() => session::serve(agent.clone(), conn).await,
            Ok(Some(conn)) => {
                tokio::spawn(session::serve(agent.clone(), conn));
            }
            Ok(None) => {
                let _ = agent.stop.send(Stop::Done);
                return;
            }
            Err(e) => {
                eprintln!("capsa-agent: accept: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
