//! Wire types spoken between the host (CLI, desktop) and `capsa-agent` in the guest:
//! requests, responses, events, errors and the version handshake. No I/O and no tokio
//! live here; transports and framing belong to `capsa-core` and `capsa-agent`.
//!
//! The protocol is append-only: variants and fields are added, never repurposed.

/// The protocol version this build speaks; bumped when variants or fields are added.
pub const PROTOCOL_VERSION: u32 = 1;
