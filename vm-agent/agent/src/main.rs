//! `capsa-agent`: runs inside the guest VM, serves the host over one framed stream
//! (virtio-serial, vsock or SSH) and dispatches requests to the engine. It arrives with
//! the machines issue; until then it only reports the protocol version it speaks.

fn main() {
    println!("capsa-agent protocol {}", capsa_proto::PROTOCOL_VERSION);
}
