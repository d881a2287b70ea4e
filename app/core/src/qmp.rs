//! QEMU's machine protocol, through the `qapi` crate behind this small interface: connect
//! and negotiate, ask the run state, press the power button, quit, and wait for the
//! events that say the guest went down. `qapi` is passively maintained, so nothing else
//! in capsa sees its types.

use std::collections::VecDeque;
use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use qapi::qmp;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("connecting to QMP socket {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("QMP handshake on {path}: {reason}")]
    Handshake { path: String, reason: String },
    #[error("QMP command {command}: {reason}")]
    Command {
        command: &'static str,
        reason: String,
    },
}

/// An event QEMU sent, reduced to what capsa acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QmpEvent {
    /// The guest or the host ended the machine; `reason` is QEMU's ShutdownCause.
    Shutdown {
        guest: bool,
        reason: String,
    },
    /// The ACPI power button was pressed (`system_powerdown`).
    Powerdown,
    Other(String),
}

/// `query-status`: whether vCPUs run and QEMU's run state (`running`, `paused`,
/// `shutdown`, `internal-error`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStatus {
    pub running: bool,
    pub status: String,
}

type Conn = qapi::Qmp<qapi::Stream<BufReader<UnixStream>, UnixStream>>;

pub struct Qmp {
    conn: Conn,
    events: VecDeque<QmpEvent>,
}

/// How long one command may take before QEMU counts as stuck.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl Qmp {
    /// Connects to `path`, retrying until `timeout` while QEMU is still creating the
    /// socket, and leaves capabilities negotiation done.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let end = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e)
                    if Instant::now() < end
                        && matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                        ) =>
                {
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(source) => {
                    return Err(QmpError::Connect {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        };
        let hs = |reason: String| QmpError::Handshake {
            path: path.display().to_string(),
            reason,
        };
        stream
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(COMMAND_TIMEOUT)))
            .map_err(|e| hs(e.to_string()))?;
        let writer = stream.try_clone().map_err(|e| hs(e.to_string()))?;
        let mut conn = qapi::Qmp::new(qapi::Stream::new(BufReader::new(stream), writer));
        conn.handshake().map_err(|e| hs(describe(e)))?;
        let mut q = Qmp {
            conn,
            events: VecDeque::new(),
        };
        q.drain();
        Ok(q)
    }

    pub fn query_status(&mut self) -> Result<RunStatus, QmpError> {
        let r = self.exec("query-status", &qmp::query_status {})?;
        let status = serde_json::to_value(r.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        Ok(RunStatus {
            running: r.running,
            status,
        })
    }

    /// Pauses the VM's CPUs (what a host's sleep does to a guest).
    pub fn stop(&mut self) -> Result<(), QmpError> {
        self.exec("stop", &qmp::stop {}).map(drop)
    }

    /// Resumes a paused VM.
    pub fn cont(&mut self) -> Result<(), QmpError> {
        self.exec("cont", &qmp::cont {}).map(drop)
    }

    /// Presses the ACPI power button; the guest decides what to do about it.
    pub fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.exec("system_powerdown", &qmp::system_powerdown {})
            .map(drop)
    }

    /// Ends QEMU at once. QEMU may close the socket before or after answering: both
    /// count as done.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        match self.conn.execute(&qmp::quit {}) {
            Ok(_) => Ok(()),
            Err(qapi::ExecuteError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(QmpError::Command {
                command: "quit",
                reason: describe(e),
            }),
        }
    }

    /// Waits up to `timeout` for an event that `want` accepts (events that came earlier
    /// count). `None` on timeout or when QEMU closed the connection first.
    pub fn wait_event(
        &mut self,
        want: impl Fn(&QmpEvent) -> bool,
        timeout: Duration,
    ) -> Option<QmpEvent> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(&want) {
                return self.events.remove(i);
            }
            if Instant::now() >= end {
                return None;
            }
            // qapi's synchronous client reads events while it waits for a reply, so a
            // cheap command is the way to collect them.
            if self.conn.nop().is_err() {
                self.drain();
                return self
                    .events
                    .iter()
                    .position(&want)
                    .and_then(|i| self.events.remove(i));
            }
            self.drain();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Events received so far and not yet consumed by `wait_event`.
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        self.drain();
        self.events.drain(..).collect()
    }

    fn exec<C: qapi::Command>(&mut self, name: &'static str, c: &C) -> Result<C::Ok, QmpError> {
        let r = self.conn.execute(c).map_err(|e| QmpError::Command {
            command: name,
            reason: describe(e),
        });
        self.drain();
        r
    }

    fn drain(&mut self) {
        let new: Vec<_> = self.conn.events().map(convert).collect();
        self.events.extend(new);
    }
}

fn convert(e: qmp::Event) -> QmpEvent {
    match e {
        qmp::Event::SHUTDOWN { data, .. } => QmpEvent::Shutdown {
            guest: data.guest,
            reason: serde_json::to_value(data.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        },
        qmp::Event::POWERDOWN { .. } => QmpEvent::Powerdown,
        other => QmpEvent::Other(
            serde_json::to_value(&other)
                .ok()
                .and_then(|v| v.get("event").and_then(|e| e.as_str().map(str::to_string)))
                .unwrap_or_default(),
        ),
    }
}

fn describe(e: qapi::ExecuteError) -> String {
    match e {
        qapi::ExecuteError::Qapi(q) => q.to_string(),
        qapi::ExecuteError::Io(io) => io.to_string(),
    }
}
