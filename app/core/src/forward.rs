//! Host ports that lead into the guest: a listener on the host whose every connection
//! becomes a `connect` over the agent's protocol (docs/protocol.md), so a container's
//! published port in the guest answers on the host. It works over whatever transport
//! the [`Client`] uses (virtio-serial, vsock, SSH); nothing is exposed on the guest's
//! network for it.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::transport::{Client, StreamReader, StreamWriter};

/// A forwarded TCP port; dropping it closes the host listener (connections already
/// carried finish on their own).
pub struct TcpForward {
    local: SocketAddr,
    accept: JoinHandle<()>,
}

impl TcpForward {
    /// Listens on `bind` (port 0: any free one) and carries each connection to
    /// `guest_host:guest_port` as the guest resolves it.
    pub async fn start(
        client: Client,
        bind: SocketAddr,
        guest_host: String,
        guest_port: u16,
    ) -> io::Result<TcpForward> {
        let listener = TcpListener::bind(bind).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("listening on {bind} for the guest's port {guest_port}: {e}"),
            )
        })?;
        let local = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let client = client.clone();
                let host = guest_host.clone();
                tokio::spawn(async move {
                    match client.connect_tcp(&host, guest_port).await {
                        Ok((w, r)) => splice(conn, w, r).await,
                        // The host client sees its connection closed at once, as it
                        // would see a refused one; the reason goes to the log.
                        Err(e) => tracing::debug!("forwarding to {host}:{guest_port}: {e}"),
                    }
                });
            }
        });
        Ok(TcpForward { local, accept })
    }

    /// Where the host listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for TcpForward {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies both ways until both directions reached end of file.
async fn splice(conn: TcpStream, mut to_guest: StreamWriter, mut from_guest: StreamReader) {
    let _ = conn.set_nodelay(true);
    let (mut rd, mut wr) = conn.into_split();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_guest.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = to_guest.close();
    };
    let down = async move {
        while let Ok(Some(chunk)) = from_guest.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(up, down);
}
