//! The JSON messages carried by control frames.
//!
//! Every enum is internally tagged by `type` (snake_case), every struct tolerates unknown
//! fields, and fields added after version 1 carry `#[serde(default)]`: an older peer
//! reads a newer peer's messages by ignoring what it does not know.

use serde::{Deserialize, Serialize};

/// The value of [`Hello::protocol`]: tells a capsa peer from whatever else might be
/// talking on the channel.
pub const PROTOCOL_NAME: &str = "capsa";

/// First frame each side sends ([`crate::Kind::Hello`]). The agent sends its Hello as soon
/// as the channel opens (that frame is the guest's readiness signal); the host answers with
/// its own, then may send requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`PROTOCOL_NAME`].
    pub protocol: String,
    /// Highest protocol version this side speaks.
    pub version: u32,
    /// Lowest protocol version this side still speaks.
    pub min_version: u32,
    /// Optional capabilities (see [`features`]); names the other side does not know are
    /// ignored.
    #[serde(default)]
    pub features: Vec<String>,
    /// Program and version, e.g. `capsa-agent 0.1.0`.
    pub software: String,
    /// Sent by the agent only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestInfo>,
}

/// Feature names. A feature is only used when both Hellos list it.
pub mod features {
    /// `Exec` with streamed stdio, `Resize`, `Signal` and the `exec_exit` event.
    pub const EXEC: &str = "exec";
    /// `Exec` with `tty: true`.
    pub const PTY: &str = "pty";
    /// `SetTime`.
    pub const SET_TIME: &str = "set_time";
    /// `SetAuthorizedKeys`.
    pub const AUTHORIZED_KEYS: &str = "authorized_keys";
    /// `Shutdown` powers the guest off (the agent runs as PID 1).
    pub const POWER_OFF: &str = "power_off";
    /// `Connect`: TCP connections from the guest, carried on two streams.
    pub const CONNECT: &str = "connect";
}

/// What the guest says about itself in its Hello.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestInfo {
    /// `uname -r`.
    #[serde(default)]
    pub kernel: String,
    /// `uname -m`.
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub hostname: String,
    /// Milliseconds since the guest kernel booted (CLOCK_BOOTTIME).
    #[serde(default)]
    pub uptime_ms: u64,
    #[serde(default)]
    pub memory_total_bytes: u64,
    #[serde(default)]
    pub cpus: u32,
    /// Whether the agent is the guest's PID 1 (`--pid1`).
    #[serde(default)]
    pub pid1: bool,
}

impl Hello {
    pub fn new(software: impl Into<String>, features: &[&str]) -> Hello {
        Hello {
            protocol: PROTOCOL_NAME.to_string(),
            version: crate::PROTOCOL_VERSION,
            min_version: crate::MIN_PROTOCOL_VERSION,
            features: features.iter().map(|f| f.to_string()).collect(),
            software: software.into(),
            guest: None,
        }
    }
}

/// What both sides use after the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// `min(ours, theirs)`.
    pub version: u32,
    /// Features both Hellos list.
    pub features: Vec<String>,
}

impl Negotiated {
    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("peer speaks protocol {0:?}, not {PROTOCOL_NAME:?}")]
    WrongProtocol(String),
    #[error(
        "no common protocol version: we speak {ours_min}..={ours}, the peer {theirs_min}..={theirs}"
    )]
    Incompatible {
        ours_min: u32,
        ours: u32,
        theirs_min: u32,
        theirs: u32,
    },
}

/// The negotiation rule: both speak `min(ours.version, theirs.version)`, which must not be
/// below either side's `min_version`; features are the intersection.
pub fn negotiate(ours: &Hello, theirs: &Hello) -> Result<Negotiated, HandshakeError> {
    if theirs.protocol != PROTOCOL_NAME {
        return Err(HandshakeError::WrongProtocol(theirs.protocol.clone()));
    }
    let version = ours.version.min(theirs.version);
    if version < ours.min_version || version < theirs.min_version {
        return Err(HandshakeError::Incompatible {
            ours_min: ours.min_version,
            ours: ours.version,
            theirs_min: theirs.min_version,
            theirs: theirs.version,
        });
    }
    let features = ours
        .features
        .iter()
        .filter(|f| theirs.features.contains(f))
        .cloned()
        .collect();
    Ok(Negotiated { version, features })
}

/// Host → agent ([`crate::Kind::Request`], channel = request id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Answered by [`Reply::Pong`]; the round trip measures the channel.
    Ping,
    /// Answered by [`Reply::Info`].
    Info,
    /// Starts a process; answered by [`Reply::ExecStarted`] once it runs, then the
    /// [`Event::ExecExit`] event when it has exited and its output streams are closed.
    Exec(ExecRequest),
    /// Sets the terminal size of a tty exec.
    Resize(ResizeRequest),
    /// Sends a signal to an exec's process.
    Signal(SignalRequest),
    /// Sets the guest's CLOCK_REALTIME.
    SetTime(SetTimeRequest),
    /// Replaces root's and the capsa user's `~/.ssh/authorized_keys`.
    SetAuthorizedKeys(SetAuthorizedKeysRequest),
    /// Powers the guest off cleanly (as PID 1); otherwise the agent exits. Answered with
    /// [`Reply::Done`] before it starts.
    Shutdown,
    /// Opens a TCP connection from the guest (a published port, a service in the guest);
    /// answered with [`Reply::Done`] once connected. Each side closes its stream at end
    /// of file; the connection ends when both have.
    Connect(ConnectRequest),
}

impl Request {
    /// The `type` tag, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Info => "info",
            Request::Exec(_) => "exec",
            Request::Resize(_) => "resize",
            Request::Signal(_) => "signal",
            Request::SetTime(_) => "set_time",
            Request::SetAuthorizedKeys(_) => "set_authorized_keys",
            Request::Shutdown => "shutdown",
            Request::Connect(_) => "connect",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// The stdio of an exec is carried by streams whose ids the host picks (unique among the
/// connection's open streams). With `tty`, stdout and stderr are one stream (`stdout`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries added to (and overriding) the base environment the agent
    /// gives the user (HOME, USER, LOGNAME, SHELL, PATH, TERM with a tty).
    #[serde(default)]
    pub env: Vec<String>,
    /// User name or numeric uid; the agent's own user when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Working directory; the user's home when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub tty: bool,
    /// Initial terminal size (tty only).
    #[serde(default)]
    pub size: Option<WinSize>,
    /// Stream the host sends stdin on; /dev/null when absent.
    #[serde(default)]
    pub stdin: Option<u32>,
    /// Stream the agent sends stdout on (and stderr too with a tty); discarded when absent.
    #[serde(default)]
    pub stdout: Option<u32>,
    /// Stream the agent sends stderr on; discarded when absent. Unused with a tty.
    #[serde(default)]
    pub stderr: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// An address as the guest resolves it: `127.0.0.1`, `10.88.0.5`, `localhost`.
    pub host: String,
    pub port: u16,
    /// Stream the host sends the connection's bytes on.
    pub send: u32,
    /// Stream the agent sends what it reads from the connection on.
    pub recv: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResizeRequest {
    /// Request id of the Exec.
    pub exec: u32,
    pub size: WinSize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalRequest {
    /// Request id of the Exec.
    pub exec: u32,
    /// A name (`TERM`, `SIGTERM`) or a Linux signal number (`15`): names because numbers
    /// differ between the host's OS and Linux.
    pub signal: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetTimeRequest {
    /// Nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetAuthorizedKeysRequest {
    /// OpenSSH public key lines.
    pub keys: Vec<String>,
}

/// Agent → host ([`crate::Kind::Response`], channel = the request's id): exactly one per
/// request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Reply),
    Error(ErrorBody),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Pong,
    Info(InfoReply),
    ExecStarted(ExecStarted),
    /// The request was carried out and has nothing to report.
    Done,
    /// A reply this build does not know (from a newer peer).
    #[serde(other)]
    Unknown,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InfoReply {
    /// e.g. `capsa-agent 0.1.0`.
    pub software: String,
    /// Negotiated protocol version.
    pub protocol_version: u32,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub uptime_ms: u64,
    #[serde(default)]
    pub memory_total_bytes: u64,
    #[serde(default)]
    pub memory_available_bytes: u64,
    /// 1, 5 and 15 minute load averages.
    #[serde(default)]
    pub load: [f64; 3],
    #[serde(default)]
    pub cpus: u32,
    /// The agent's resident memory.
    #[serde(default)]
    pub agent_rss_bytes: u64,
    #[serde(default)]
    pub pid1: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecStarted {
    /// The process id in the guest.
    pub pid: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request's `type` is not one this agent knows.
    UnknownRequest,
    /// The request's JSON did not match its type.
    BadRequest,
    /// A frame kind this side does not know.
    UnknownKind,
    /// A request arrived before the host's Hello.
    HandshakeRequired,
    /// No common protocol version, or the peer is not a capsa peer.
    Incompatible,
    /// Exec: the program does not exist (exit code 127 for a CLI).
    NotFound,
    /// Exec: the program exists but cannot be run (126), or the agent lacks a privilege.
    PermissionDenied,
    /// Exec: no such user.
    NoSuchUser,
    /// Resize/Signal: no running exec with that id.
    NoSuchExec,
    /// A stream id that is already in use.
    StreamInUse,
    /// Something else failed in the guest; the message says what.
    Failed,
    /// Connect: nothing listens at that address and port.
    ConnectionRefused,
    /// A code this build does not know (from a newer peer).
    #[serde(other)]
    Other,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownKind => "unknown_kind",
            ErrorCode::HandshakeRequired => "handshake_required",
            ErrorCode::Incompatible => "incompatible",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ConnectionRefused => "connection_refused",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NoSuchUser => "no_such_user",
            ErrorCode::NoSuchExec => "no_such_exec",
            ErrorCode::StreamInUse => "stream_in_use",
            ErrorCode::Failed => "failed",
            ErrorCode::Other => "other",
        }
    }
}

/// Agent → host, unsolicited ([`crate::Kind::Event`], channel 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An exec's process exited and all its output streams have been closed.
    ExecExit(ExecExit),
    /// An event this build does not know (from a newer peer); ignore it.
    #[serde(other)]
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecExit {
    /// Request id of the Exec.
    pub exec: u32,
    /// Exit code when the process exited.
    #[serde(default)]
    pub code: Option<i32>,
    /// Linux signal number when a signal killed it.
    #[serde(default)]
    pub signal: Option<i32>,
}

impl ExecExit {
    /// The shell's convention: the exit code, or 128 + the signal number.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 255,
        }
    }
}

/// How the agent classifies a request frame it could not parse: by its `type` tag alone.
#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: String,
}

/// Parses a request; on failure returns the error body to answer with (unknown type or
/// bad fields), so an agent never has to crash or drop the connection on a bad request.
pub fn parse_request(payload: &[u8]) -> Result<Request, ErrorBody> {
    match serde_json::from_slice::<Request>(payload) {
        Ok(request) => Ok(request),
        Err(err) => match serde_json::from_slice::<TypeOnly>(payload) {
            Ok(TypeOnly { kind }) if !KNOWN_REQUESTS.contains(&kind.as_str()) => {
                Err(ErrorBody::new(
                    ErrorCode::UnknownRequest,
                    format!("unknown request type {kind:?}"),
                ))
            }
            _ => Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!("malformed request: {err}"),
            )),
        },
    }
}

const KNOWN_REQUESTS: &[&str] = &[
    "ping",
    "info",
    "exec",
    "resize",
    "signal",
    "set_time",
    "set_authorized_keys",
    "shutdown",
];
