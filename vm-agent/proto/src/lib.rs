//! Wire protocol spoken between the host (CLI, desktop) and `capsa-agent` in the guest:
//! framing over one byte stream, the version handshake, requests, responses, events and
//! multiplexed stdio streams with credit-based flow control. No I/O and no tokio live
//! here: the transports and the tasks that drive them belong to `capsa-core` (host) and
//! `capsa-agent` (guest). docs/protocol.md describes the whole protocol.
//!
//! The protocol is append-only: kinds, variants and fields are added, never repurposed.

mod frame;
mod message;

pub use frame::{
    Decoder, Frame, FrameError, HEADER_LEN, INITIAL_WINDOW, Kind, MAX_DATA_CHUNK, MAX_PAYLOAD,
    decode, encode,
};
pub use message::*;

/// The highest protocol version this build speaks; bumped when kinds, variants or fields
/// are added. 2: `connect` (and the `connection_refused` error code).
pub const PROTOCOL_VERSION: u32 = 2;
/// The lowest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Name of the virtio-serial port the agent serves on QEMU (`virtserialport,name=…`).
pub const VIRTIO_SERIAL_NAME: &str = "org.capsa.agent.0";
/// The vsock port the agent listens on when the hypervisor offers vsock.
pub const VSOCK_PORT: u32 = 1024;
