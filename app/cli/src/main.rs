//! `capsa`: the command-line interface. Parses arguments, sets up logging, calls the
//! engine and maps errors to Podman's exit codes.

fn main() {}
