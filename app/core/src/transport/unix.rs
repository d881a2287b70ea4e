use super::{BoxStream, ConnectFuture, Transport};
use std::path::PathBuf;
use tokio::net::UnixStream;

/// The agent behind a unix socket: QEMU's `-chardev socket,server=on` of the
/// virtio-serial port, or `capsa-agent --listen unix:PATH` in tests.
#[derive(Clone, Debug)]
pub struct UnixTransport {
    pub path: PathBuf,
}

impl UnixTransport {
    pub fn new(path: impl Into<PathBuf>) -> UnixTransport {
        UnixTransport { path: path.into() }
    }
}

impl Transport for UnixTransport {
    fn describe(&self) -> String {
        format!("unix socket {}", self.path.display())
    }

    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let stream = UnixStream::connect(&self.path).await?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}
