//! Host core: the machine store, VM drivers (QEMU; Virtualization.framework on macOS),
//! host↔guest transports, port and socket forwarding, and the remote engine that speaks
//! the protocol of `capsa-proto`. It owns nothing about images or containers themselves:
//! those are the engine's (`capsa-engine`).

pub mod transport;

pub use capsa_proto::PROTOCOL_VERSION;
