//! Host ↔ guest transports and the protocol client on top of them.
//!
//! A [`Transport`] only knows how to reach the agent and hand back a byte stream: a unix
//! socket (QEMU's virtio-serial chardev), vsock (vhost-vsock on Linux; the
//! Virtualization.framework driver hands its vsock connection to [`Client::over`]), and
//! SSH, the fallback: a russh channel running `capsa-agent --listen stdio` in the guest
//! ([`SshTransport`]). [`Client`] does the handshake and
//! multiplexes requests, events and stdio streams over that one stream
//! (docs/protocol.md).

mod client;
mod ssh;
mod unix;
#[cfg(target_os = "linux")]
mod vsock;

pub use client::{
    Client, ClientError, ClientOptions, Exec, ExecOptions, StreamReader, StreamWriter,
};
pub use ssh::{AGENT_COMMAND, SshTransport};
pub use unix::UnixTransport;
#[cfg(target_os = "linux")]
pub use vsock::VsockTransport;

use std::future::Future;
use std::io;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

/// A connected byte stream to the agent.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Duplex for T {}

pub type BoxStream = Box<dyn Duplex>;
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxStream>> + Send + 'a>>;

/// One way of reaching a guest's agent.
pub trait Transport: Send + Sync {
    /// For messages: `unix socket /path/agent.sock`, `vsock 3:1024`.
    fn describe(&self) -> String;
    /// Opens a fresh byte stream to the agent.
    fn connect(&self) -> ConnectFuture<'_>;
}
