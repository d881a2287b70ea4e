//! Measures the agent over one transport: Ping round trips, exec start-to-exit, stdout
//! throughput, and the agent's resident memory (from its Info reply).
//!
//! ```text
//! cargo run --release -p capsa-core --example agent_bench -- SOCKET [PINGS]
//! ```
//! SOCKET is a unix socket: `capsa-agent --listen unix:PATH`, or a machine's agent.sock
//! (QEMU's virtio-serial chardev). scripts/bench-agent.sh runs it against a local agent.

use capsa_core::transport::{Client, ClientOptions, ExecOptions, UnixTransport};
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = args.next().ok_or("usage: agent_bench SOCKET [PINGS]")?;
    let pings: usize = args.next().map_or(Ok(1000), |n| n.parse())?;

    let started = Instant::now();
    let client = Client::connect(&UnixTransport::new(&socket), ClientOptions::default()).await?;
    println!(
        "handshake: {:.3} ms ({}, protocol {})",
        ms(started.elapsed()),
        client.agent_hello().software,
        client.negotiated().version
    );

    for _ in 0..50 {
        client.ping().await?;
    }
    let mut rtts = Vec::with_capacity(pings);
    for _ in 0..pings {
        rtts.push(client.ping().await?);
    }
    rtts.sort();
    println!(
        "ping round trip over {pings}: median {:.3} ms, p99 {:.3} ms, min {:.3} ms",
        ms(percentile(&rtts, 0.5)),
        ms(percentile(&rtts, 0.99)),
        ms(rtts[0])
    );

    let mut execs = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let mut exec = client.exec(ExecOptions::new(["true"])).await?;
        exec.wait().await?;
        execs.push(started.elapsed());
    }
    execs.sort();
    println!(
        "exec `true` start to exit: median {:.3} ms",
        ms(percentile(&execs, 0.5))
    );

    let bytes = 256 * 1024 * 1024;
    let started = Instant::now();
    let count = format!("count={}", bytes / (64 * 1024));
    let mut exec = client
        .exec(ExecOptions::new([
            "dd",
            "if=/dev/zero",
            "bs=64k",
            count.as_str(),
        ]))
        .await?;
    let mut stdout = exec.stdout.take().ok_or("no stdout")?;
    let mut received = 0usize;
    while let Some(chunk) = stdout.recv().await? {
        received += chunk.len();
    }
    exec.wait().await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "exec stdout throughput: {} MiB in {:.2} s = {:.0} MiB/s",
        received / (1024 * 1024),
        secs,
        received as f64 / (1024.0 * 1024.0) / secs
    );

    let info = client.info().await?;
    println!(
        "agent RSS: {:.1} MiB (guest memory {:.0} MiB total, {:.0} MiB available)",
        info.agent_rss_bytes as f64 / (1024.0 * 1024.0),
        info.memory_total_bytes as f64 / (1024.0 * 1024.0),
        info.memory_available_bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
