//! Stream multiplexing of the capsa protocol, shared by the host client (`capsa-core`)
//! and the agent (`capsa-agent`): the streams open on one connection, their credit
//! windows, and the handling of `data`, `credit` and `close` frames
//! (docs/protocol.md, "Flow control").
//!
//! It owns: the table of streams this side sends on ([`Outbound`], each with its
//! [`Window`]) and of streams it receives ([`Inbound`]), credit going back as the
//! consumer takes data (and at once for data nobody will read), and the pump that sends
//! a reader's bytes as `data` frames within the window. A stream that is not read stalls
//! only itself.
//!
//! It does not own: the byte stream, framing and the writer task (frames leave through
//! the sink given to [`Mux::new`]), requests, responses, events and the handshake, or
//! what a stream means (an exec's stdio, later attach, logs, copies). The wire types and
//! the initial window stay in `capsa-proto`, which has no I/O.

mod stream;
mod window;

pub use stream::{Inbound, Outbound};
pub use window::Window;

use capsa_proto::{Frame, FrameError, INITIAL_WINDOW, Kind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The connection is gone (or the stream was closed here); `reason` says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    pub reason: String,
}

impl Closed {
    pub fn new(reason: impl Into<String>) -> Closed {
        Closed {
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection closed: {}", self.reason)
    }
}

impl std::error::Error for Closed {}

/// Why a stream could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The id is already open in either direction.
    InUse(u32),
    Closed(Closed),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::InUse(id) => write!(f, "stream {id} is already open"),
            OpenError::Closed(closed) => closed.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {}

pub(crate) enum Chunk {
    Data(Vec<u8>),
    Lost(String),
}

type SinkFn = dyn Fn(Frame) -> Result<(), Closed> + Send + Sync;

/// The streams of one connection. Shared (`Arc`) by the task that reads frames and by
/// every open stream.
pub struct Mux {
    sink: Box<SinkFn>,
    tables: Mutex<Tables>,
}

#[derive(Default)]
pub(crate) struct Tables {
    dead: Option<String>,
    pub(crate) outbound: HashMap<u32, Arc<Window>>,
    pub(crate) inbound: HashMap<u32, mpsc::UnboundedSender<Chunk>>,
}

impl Mux {
    /// `sink` queues one frame for the peer (the caller's writer task sends it).
    pub fn new(sink: impl Fn(Frame) -> Result<(), Closed> + Send + Sync + 'static) -> Arc<Mux> {
        Arc::new(Mux {
            sink: Box::new(sink),
            tables: Mutex::new(Tables::default()),
        })
    }

    pub(crate) fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap()
    }

    /// Sends a frame unless the connection is known to be gone.
    pub fn send(&self, frame: Frame) -> Result<(), Closed> {
        if let Some(reason) = &self.tables().dead {
            return Err(Closed::new(reason.clone()));
        }
        (self.sink)(frame)
    }

    /// Why the connection is gone, once it is.
    pub fn dead(&self) -> Option<String> {
        self.tables().dead.clone()
    }

    /// Marks the connection gone: readers of inbound streams get [`Closed`] with
    /// `reason`, writers of outbound streams stop waiting for credit, and nothing more is
    /// sent. Returns false when it already was.
    pub fn fail(&self, reason: &str) -> bool {
        let mut tables = self.tables();
        if tables.dead.is_some() {
            return false;
        }
        tables.dead = Some(reason.to_string());
        for (_, tx) in tables.inbound.drain() {
            let _ = tx.send(Chunk::Lost(reason.to_string()));
        }
        for (_, window) in tables.outbound.drain() {
            window.close();
        }
        true
    }

    /// Opens a stream this side sends on, with [`INITIAL_WINDOW`] of credit.
    pub fn open_outbound(self: &Arc<Self>, id: u32) -> Result<Outbound, OpenError> {
        let window = Arc::new(Window::new(INITIAL_WINDOW));
        self.register(id, |tables| {
            tables.outbound.insert(id, window.clone());
        })?;
        Ok(Outbound::new(id, window, self.clone()))
    }

    /// Opens a stream the peer sends on. Data that arrives before anyone reads it is
    /// buffered, up to the window the peer was given.
    pub fn open_inbound(self: &Arc<Self>, id: u32) -> Result<Inbound, OpenError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.register(id, |tables| {
            tables.inbound.insert(id, tx);
        })?;
        Ok(Inbound::new(id, rx, self.clone()))
    }

    fn register(&self, id: u32, insert: impl FnOnce(&mut Tables)) -> Result<(), OpenError> {
        let mut tables = self.tables();
        if let Some(reason) = &tables.dead {
            return Err(OpenError::Closed(Closed::new(reason.clone())));
        }
        if tables.outbound.contains_key(&id) || tables.inbound.contains_key(&id) {
            return Err(OpenError::InUse(id));
        }
        insert(&mut tables);
        Ok(())
    }

    /// Handles a `data`, `credit` or `close` frame from the peer; frames of other kinds
    /// are not the mux's and are ignored. An error is a malformed frame.
    pub fn handle(&self, frame: Frame) -> Result<(), FrameError> {
        match frame.kind {
            Kind::Data => {
                let len = frame.payload.len();
                let delivered = match self.tables().inbound.get(&frame.channel) {
                    Some(tx) => tx.send(Chunk::Data(frame.payload)).is_ok(),
                    None => false,
                };
                // Nobody reads this stream (any more): hand the credit straight back so
                // the peer never blocks on data that is discarded.
                if !delivered {
                    self.credit(frame.channel, len);
                }
            }
            Kind::Close => {
                self.tables().inbound.remove(&frame.channel);
            }
            Kind::Credit => {
                let bytes = frame.credit_bytes()?;
                let window = self.tables().outbound.get(&frame.channel).cloned();
                if let Some(window) = window {
                    window.grant(bytes);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Grants the peer `bytes` more on stream `id`; a lost connection needs no credit.
    pub(crate) fn credit(&self, id: u32, bytes: usize) {
        if bytes > 0 {
            let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
            let _ = self.send(Frame::credit(id, bytes));
        }
    }
}

#[cfg(test)]
mod tests;
