//! `capsa-monitor`: one small process per container that starts the OCI runtime, holds
//! the container's stdio, writes its log and records its exit code. It stays synchronous
//! and small on purpose; the container lifecycle arrives with the containers issue.

fn main() {
    eprintln!("capsa-monitor: not started by capsa; it is spawned by `capsa run`/`capsa create`");
    std::process::exit(125);
}
