use super::{BoxStream, ConnectFuture, Transport};
use std::path::Path;
use tokio_vsock::{VsockAddr, VsockStream};

/// The agent on a vsock port of a guest (vhost-vsock on a Linux host).
#[derive(Clone, Debug)]
pub struct VsockTransport {
    pub cid: u32,
    pub port: u32,
}

impl VsockTransport {
    pub fn new(cid: u32) -> VsockTransport {
        VsockTransport {
            cid,
            port: capsa_proto::VSOCK_PORT,
        }
    }

    /// Whether this host can give a QEMU guest vsock: the vhost-vsock device exists and
    /// the kernel has AF_VSOCK sockets. Probed, not assumed: many hosts (and CI) lack it.
    pub fn available() -> bool {
        if !Path::new("/dev/vhost-vsock").exists() {
            return false;
        }
        // SAFETY: socket returns a new descriptor or -1; we close it at once.
        let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return false;
        }
        // SAFETY: closing the descriptor we just opened.
        unsafe { libc::close(fd) };
        true
    }
}

impl Transport for VsockTransport {
    fn describe(&self) -> String {
        format!("vsock {}:{}", self.cid, self.port)
    }

    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let stream = VsockStream::connect(VsockAddr::new(self.cid, self.port)).await?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}
