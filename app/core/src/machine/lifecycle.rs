//! Starting and stopping a machine as named steps, each with a timeout that fails with
//! a hint and the tail of serial.log: a boot never hangs silently.

use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::{Event, Machine, MachineError};
use crate::accel::{self, Accel};
use crate::driver::{StopOutcome, VmDriver, VmSpec, VmStatus};
use crate::qemu::driver_support::tail;
use crate::transport::{Client, ClientOptions, UnixTransport};

/// What the guest prints on its console when the agent is up (contract, point 4).
pub const READY_MARKER: &str = "capsa-agent: ready";

/// Seconds the boot may take, overriding the defaults below.
pub const ENV_BOOT_TIMEOUT: &str = "CAPSA_MACHINE_BOOT_TIMEOUT";
/// Seconds the guest gets to power off after the agent's Shutdown or the power button.
pub const ENV_STOP_TIMEOUT: &str = "CAPSA_MACHINE_STOP_TIMEOUT";

/// A named step of start or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    pub timeout: Duration,
    pub hint: &'static str,
}

/// Receives steps as they happen (the CLI prints them on stderr).
pub trait StepReporter {
    fn begin(&mut self, step: &Step);
    fn done(&mut self, step: &Step, took: Duration);
    fn warn(&mut self, message: &str);
}

#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Overrides the boot timeout (else `CAPSA_MACHINE_BOOT_TIMEOUT`, else by accelerator).
    pub boot_timeout: Option<Duration>,
}

fn env_secs(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn serial_tail(m: &Machine) -> String {
    let t = tail(&m.serial_log(), 1500);
    if t.is_empty() {
        "\nserial.log is empty".into()
    } else {
        format!("\nlast lines of {}:\n{t}", m.serial_log().display())
    }
}

impl Machine {
    /// Clears what a dead hypervisor left (pid file, sockets) and records the crash.
    /// Returns true when there was something to recover from.
    fn recover_stale(&self) -> bool {
        let stale = self.pid_file().exists();
        if stale {
            let last = self
                .events()
                .into_iter()
                .rev()
                .find(|e| e.event != "step")
                .map(|e| e.event);
            if !matches!(last.as_deref(), Some("stopped" | "failed" | "crashed")) {
                self.event(Event::with(
                    "crashed",
                    "the hypervisor process was gone (killed or crashed)",
                ));
            }
            let _ = std::fs::remove_file(self.pid_file());
        }
        stale
    }

    /// Port and sockets are free, or a clear error says which is not.
    fn check_resources(&self) -> Result<(), MachineError> {
        let port = self.config.ssh_port;
        TcpListener::bind(("127.0.0.1", port))
            .map_err(|source| MachineError::PortInUse { port, source })?;
        for s in [self.qmp_socket(), self.agent_socket()] {
            if s.exists() {
                if UnixStream::connect(&s).is_ok() {
                    return Err(MachineError::SocketInUse {
                        path: s.display().to_string(),
                    });
                }
                let _ = std::fs::remove_file(&s);
            }
        }
        Ok(())
    }

    /// `machine start`: lock, recover from a crash, check resources, start the VM, wait
    /// for the agent's Hello, install the SSH key.
    pub async fn start(
        &mut self,
        driver: &dyn VmDriver,
        opts: &StartOptions,
        rep: &mut dyn StepReporter,
    ) -> Result<Accel, MachineError> {
        let _lock = self.lock()?;
        if self.status() == VmStatus::Running {
            return Err(MachineError::AlreadyRunning(self.name().into()));
        }
        if self.recover_stale() {
            rep.warn(&format!(
                "machine {:?} was not stopped cleanly last time: recovering",
                self.name()
            ));
        }
        self.check_resources()?;
        let sd = self.socket_dir();
        std::fs::create_dir_all(&sd).map_err(super::io_err("creating", &sd))?;
        let cache = std::env::var_os("CAPSA_ACCEL_CACHE_DIR")
            .map(Into::into)
            .unwrap_or_else(|| self.runtime.join("capsa"));
        let choice = accel::choose(&self.config.image.arch, Some(&cache))?;
        if let Some(why) = &choice.fallback_reason {
            rep.warn(&format!("{why}; using TCG (slow: software emulation)"));
        }
        let spec = self.vm_spec(choice.accel)?;
        // Each boot gets a fresh console log; the previous one stays as serial.log.old.
        let _ = std::fs::rename(self.serial_log(), self.dir.join("serial.log.old"));
        self.event(Event::with("starting", format!("accel={}", choice.accel)));

        let step = Step {
            name: "Starting QEMU",
            timeout: Duration::from_secs(30),
            hint: "see qemu.log in the machine folder for QEMU's own messages",
        };
        self.run_step(&step, rep, || {
            driver.start(&spec).map_err(MachineError::from)
        })?;

        let boot_timeout = opts
            .boot_timeout
            .or_else(|| env_secs(ENV_BOOT_TIMEOUT))
            .unwrap_or(match choice.accel {
                // Software emulation on a busy 2-core host boots in minutes, not seconds.
                Accel::Tcg => Duration::from_secs(600),
                _ => Duration::from_secs(120),
            });
        let step = Step {
            name: "Waiting for the agent",
            timeout: boot_timeout,
            hint: "the guest did not come up: read its console above; a longer wait is CAPSA_MACHINE_BOOT_TIMEOUT=SECONDS",
        };
        rep.begin(&step);
        self.event(Event::with("step", step.name));
        let t = Instant::now();
        let client = match self.wait_ready(&spec, boot_timeout).await {
            Ok(c) => c,
            Err(e) => {
                let _ = driver.kill(&spec);
                self.event(Event::with("failed", e.to_string()));
                return Err(e);
            }
        };
        rep.done(&step, t.elapsed());

        if let Some(client) = client {
            let step = Step {
                name: "Installing the SSH key",
                timeout: Duration::from_secs(30),
                hint: "the agent did not answer",
            };
            rep.begin(&step);
            let t = Instant::now();
            let key = std::fs::read_to_string(self.ssh_public_key()).unwrap_or_default();
            // Both at once: the client multiplexes requests, and this is on the path of
            // every start.
            let r = async {
                let (time, keys) = tokio::join!(
                    client.set_time(std::time::SystemTime::now()),
                    client.set_authorized_keys(vec![key.trim().to_string()])
                );
                time.and(keys)
            };
            match tokio::time::timeout(step.timeout, r).await {
                Ok(Ok(())) => rep.done(&step, t.elapsed()),
                Ok(Err(e)) => rep.warn(&format!("installing the SSH key: {e}")),
                Err(_) => rep.warn("installing the SSH key: the agent did not answer in 30 s"),
            }
        }
        self.config.last_up = Some(Utc::now());
        self.save()?;
        self.event(Event::new("ready"));
        Ok(choice.accel)
    }

    fn run_step(
        &self,
        step: &Step,
        rep: &mut dyn StepReporter,
        f: impl FnOnce() -> Result<(), MachineError>,
    ) -> Result<(), MachineError> {
        rep.begin(step);
        self.event(Event::with("step", step.name));
        let t = Instant::now();
        match f() {
            Ok(()) => {
                rep.done(step, t.elapsed());
                Ok(())
            }
            Err(e) => {
                self.event(Event::with("failed", e.to_string()));
                Err(MachineError::StepFailed {
                    step: step.name.into(),
                    reason: e.to_string(),
                    log: String::new(),
                })
                .map_err(|se| match e {
                    // Keep errors that carry their own hint as they are.
                    MachineError::Driver(_) => e,
                    _ => se,
                })
            }
        }
    }

    /// Ready is the agent's Hello on agent.sock. A guest without the agent (an older
    /// image, the bench's floor) counts as ready when its console says `READY_MARKER`.
    async fn wait_ready(
        &self,
        spec: &VmSpec,
        timeout: Duration,
    ) -> Result<Option<Client>, MachineError> {
        let end = tokio::time::Instant::now() + timeout;
        let transport = UnixTransport::new(spec.agent_socket.clone());
        let options = ClientOptions {
            hello_timeout: timeout,
            ..ClientOptions::default()
        };
        let hello = async {
            loop {
                match Client::connect(&transport, options.clone()).await {
                    Ok(c) => return c,
                    Err(e) => {
                        tracing::debug!("agent not ready: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        };
        tokio::pin!(hello);
        let serial = self.serial_log();
        let pid_file = spec.pid_file.clone();
        loop {
            tokio::select! {
                c = &mut hello => return Ok(Some(c)),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if console_says_ready(&serial) {
                // The agent prints the marker just before its Hello: give it a moment.
                return Ok(
                    tokio::time::timeout(Duration::from_millis(1500), &mut hello)
                        .await
                        .ok(),
                );
            }
            if crate::process::live(&pid_file).is_none() {
                let vmm = tail(&spec.vmm_log, 1000);
                return Err(MachineError::StepFailed {
                    step: "Waiting for the agent".into(),
                    reason: format!(
                        "QEMU exited{}",
                        if vmm.is_empty() {
                            String::new()
                        } else {
                            format!(": {vmm}")
                        }
                    ),
                    log: serial_tail(self),
                });
            }
            if tokio::time::Instant::now() >= end {
                return Err(MachineError::StepTimeout {
                    step: "Waiting for the agent".into(),
                    secs: timeout.as_secs(),
                    hint: "the guest did not come up: read its console above; a longer wait is CAPSA_MACHINE_BOOT_TIMEOUT=SECONDS".into(),
                    log: serial_tail(self),
                });
            }
        }
    }

    /// `machine stop`: the agent's Shutdown, then the power button, then quit, then
    /// kill. Returns which one brought the VM down.
    pub async fn stop(
        &self,
        driver: &dyn VmDriver,
        rep: &mut dyn StepReporter,
    ) -> Result<StopOutcome, MachineError> {
        let _lock = self.lock()?;
        self.stop_locked(driver, rep).await
    }

    pub(crate) async fn stop_locked(
        &self,
        driver: &dyn VmDriver,
        rep: &mut dyn StepReporter,
    ) -> Result<StopOutcome, MachineError> {
        if self.status() != VmStatus::Running {
            self.recover_stale();
            return Ok(StopOutcome::AlreadyStopped);
        }
        let timeout = env_secs(ENV_STOP_TIMEOUT).unwrap_or(Duration::from_secs(30));
        let spec = self.vm_spec(Accel::Tcg)?;
        self.event(Event::new("stopping"));
        let step = Step {
            name: "Asking the agent to shut down",
            timeout,
            hint: "",
        };
        rep.begin(&step);
        let t = Instant::now();
        let transport = UnixTransport::new(spec.agent_socket.clone());
        let options = ClientOptions {
            hello_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        };
        let mut outcome = None;
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_secs(5), Client::connect(&transport, options)).await
            && c.shutdown().await.is_ok()
            && let Some(d) = crate::process::live(&spec.pid_file)
        {
            let gone = tokio::task::spawn_blocking(move || d.wait_gone(timeout))
                .await
                .unwrap_or(false);
            if gone {
                outcome = Some(StopOutcome::Powerdown);
            }
        }
        let outcome = match outcome {
            Some(o) => {
                let _ = driver.kill(&spec); // removes what QEMU left
                o
            }
            None => {
                rep.warn("the agent did not shut the guest down: pressing the power button");
                driver.stop(&spec, timeout)?
            }
        };
        rep.done(&step, t.elapsed());
        self.event(Event::with(
            "stopped",
            format!("{outcome:?}").to_lowercase(),
        ));
        Ok(outcome)
    }

    /// `machine rm`: refuses a running machine unless `force`.
    pub fn remove(&self, driver: &dyn VmDriver, force: bool) -> Result<(), MachineError> {
        let _lock = self.lock()?;
        if self.status() == VmStatus::Running {
            if !force {
                return Err(MachineError::Running(self.name().into()));
            }
            driver.kill(&self.vm_spec(Accel::Tcg)?)?;
        }
        self.remove_files()
    }

    /// `machine set`: only while stopped; the disk only grows.
    pub fn set(
        &mut self,
        cpus: Option<u32>,
        memory_mib: Option<u64>,
        disk_size_gib: Option<u64>,
        rootful: Option<bool>,
    ) -> Result<(), MachineError> {
        let _lock = self.lock()?;
        if self.status() == VmStatus::Running {
            return Err(MachineError::Running(self.name().into()));
        }
        if let Some(d) = disk_size_gib {
            if d < self.config.disk_size_gib {
                return Err(MachineError::Invalid(format!(
                    "--disk-size {d} is smaller than the current {} GiB: a disk can only grow",
                    self.config.disk_size_gib
                )));
            }
            self.resize_data_disk(d)?;
            self.config.disk_size_gib = d;
        }
        if let Some(c) = cpus {
            if c == 0 {
                return Err(MachineError::Invalid("--cpus must be at least 1".into()));
            }
            self.config.cpus = c;
        }
        if let Some(m) = memory_mib {
            if m < 128 {
                return Err(MachineError::Invalid(
                    "--memory must be at least 128 MiB".into(),
                ));
            }
            self.config.memory_mib = m;
        }
        if let Some(r) = rootful {
            self.config.rootful = r;
            // The connection logs in as the engine's user: root or capsa.
            self.record_connection()?;
        }
        self.save()?;
        self.event(Event::with(
            "set",
            format!(
                "cpus={} memory={}MiB disk={}GiB rootful={}",
                self.config.cpus,
                self.config.memory_mib,
                self.config.disk_size_gib,
                self.config.rootful
            ),
        ));
        Ok(())
    }
}

fn console_says_ready(serial: &Path) -> bool {
    std::fs::read(serial)
        .map(|b| {
            b.windows(READY_MARKER.len())
                .any(|w| w == READY_MARKER.as_bytes())
        })
        .unwrap_or(false)
}
