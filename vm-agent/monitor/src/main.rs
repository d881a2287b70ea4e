//! `capsa-monitor`: see the library for what it owns and docs/internals.md for its
//! contract with the engine.

fn main() {
    std::process::exit(capsa_monitor::main());
}
