//! The agent over SSH, for guests whose hypervisor offers neither vsock nor a serial port
//! the host can reach: log in with the machine's key and run `capsa-agent --listen stdio`;
//! the session channel's stdin and stdout are the stream.

use super::{BoxStream, ConnectFuture, Transport};
use crate::ssh::{Session, SshTarget};
use std::io;

/// What the guest runs for each connection: one agent session on its stdin and stdout.
pub const AGENT_COMMAND: &str = "capsa-agent --listen stdio";

#[derive(Clone, Debug)]
pub struct SshTransport {
    pub target: SshTarget,
    /// The remote command that serves the protocol on its stdio.
    pub command: String,
}

impl SshTransport {
    pub fn new(target: SshTarget) -> SshTransport {
        SshTransport {
            target,
            command: AGENT_COMMAND.into(),
        }
    }
}

impl Transport for SshTransport {
    fn describe(&self) -> String {
        format!("ssh {}@{}", self.target.user, self.target.addr())
    }

    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let session = Session::connect(&self.target).await.map_err(into_io)?;
            let stream = session.into_stream(&self.command).await.map_err(into_io)?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// Keeps the message and its hint: the caller only sees an io::Error.
fn into_io(e: crate::ssh::SshError) -> io::Error {
    let kind = match &e {
        crate::ssh::SshError::Connect { source, .. } => source.kind(),
        crate::ssh::SshError::Timeout { .. } => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{e} (hint: {})", e.hint()))
}
