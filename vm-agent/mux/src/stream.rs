//! The two ends of a stream as the code that uses it sees them.

use crate::{Chunk, Closed, Mux, Window};
use capsa_proto::{Frame, Kind, MAX_DATA_CHUNK};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// A stream the peer sends on. Dropping it returns the credit of whatever was buffered
/// and unread, and from then on credit goes back as data arrives: the peer runs to the
/// end with its data discarded.
pub struct Inbound {
    id: u32,
    rx: mpsc::UnboundedReceiver<Chunk>,
    mux: Arc<Mux>,
}

impl Inbound {
    pub(crate) fn new(id: u32, rx: mpsc::UnboundedReceiver<Chunk>, mux: Arc<Mux>) -> Inbound {
        Inbound { id, rx, mux }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// The next chunk; `Ok(None)` once the peer closed the stream. No credit goes back
    /// here: call [`Inbound::credit`] once the chunk is consumed, so that a consumer
    /// that stops stalls only this stream.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, Closed> {
        match self.rx.recv().await {
            Some(Chunk::Data(data)) => Ok(Some(data)),
            Some(Chunk::Lost(reason)) => Err(Closed::new(reason)),
            None => Ok(None),
        }
    }

    /// Grants the peer `bytes` more.
    pub fn credit(&self, bytes: usize) {
        self.mux.credit(self.id, bytes);
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        // Closed first: from here on the frame handler cannot deliver and credits data
        // itself, so every byte is credited exactly once.
        self.rx.close();
        let mut unread = 0usize;
        while let Ok(chunk) = self.rx.try_recv() {
            if let Chunk::Data(data) = chunk {
                unread += data.len();
            }
        }
        self.credit(unread);
        let mut tables = self.mux.tables();
        // Only our own entry: after the peer's close the id may already be reopened.
        if tables
            .inbound
            .get(&self.id)
            .is_some_and(|tx| tx.is_closed())
        {
            tables.inbound.remove(&self.id);
        }
    }
}

/// A stream this side sends on, never more than the peer granted. Dropping it forgets
/// the stream without telling the peer (for a stream the peer never learned of);
/// [`Outbound::close`] ends it.
pub struct Outbound {
    id: u32,
    window: Arc<Window>,
    mux: Arc<Mux>,
    closed: bool,
}

impl Outbound {
    pub(crate) fn new(id: u32, window: Arc<Window>, mux: Arc<Mux>) -> Outbound {
        Outbound {
            id,
            window,
            mux,
            closed: false,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    fn closed(&self) -> Closed {
        Closed::new(
            self.mux
                .dead()
                .unwrap_or_else(|| format!("stream {} is closed", self.id)),
        )
    }

    /// Sends all of `data`, waiting for credit when the peer consumes slowly.
    pub async fn write_all(&mut self, mut data: &[u8]) -> Result<(), Closed> {
        while !data.is_empty() {
            let Some(n) = self.window.take(data.len().min(MAX_DATA_CHUNK)).await else {
                return Err(self.closed());
            };
            self.mux
                .send(Frame::new(Kind::Data, self.id, data[..n].to_vec()))?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Sends what `reader` yields until its end, then closes the stream. A read error
    /// ends the stream as end of file does; a lost connection ends the pump.
    pub async fn pump(mut self, mut reader: impl AsyncRead + Unpin) {
        let mut buf = vec![0u8; MAX_DATA_CHUNK];
        while let Some(n) = self.window.take(MAX_DATA_CHUNK).await {
            match reader.read(&mut buf[..n]).await {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    self.window.give_back(n - read);
                    let frame = Frame::new(Kind::Data, self.id, buf[..read].to_vec());
                    if self.mux.send(frame).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = self.close();
    }

    /// Ends the stream: the peer sees `close`. Later writes fail; closing again does
    /// nothing.
    pub fn close(&mut self) -> Result<(), Closed> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.forget();
        self.mux.send(Frame::new(Kind::Close, self.id, Vec::new()))
    }

    fn forget(&self) {
        self.window.close();
        let mut tables = self.mux.tables();
        if tables
            .outbound
            .get(&self.id)
            .is_some_and(|window| Arc::ptr_eq(window, &self.window))
        {
            tables.outbound.remove(&self.id);
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.forget();
    }
}
