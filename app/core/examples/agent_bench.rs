//! Measures the agent over one transport: its resident memory and the guest's memory
//! in use while idle (from its Info reply, before any other request), Ping round trips,
//! exec start-to-exit, stdout throughput, and the agent's memory after that work.
//!
//! ```text
//! cargo run --release -p capsa-core --example agent_bench -- SOCKET [PINGS] [STDOUT_MIB]
//! ```
//! STDOUT_MIB (default 256) is what the throughput test reads: a TCG guest moves a few
//! MiB/s, so scripts/bench-machine.sh asks for less.
//! SOCKET is a unix socket: `capsa-agent --listen unix:PATH`, or a machine's agent.sock
//! (QEMU's virtio-serial chardev). scripts/bench-agent.sh runs it against a local agent,
//! scripts/bench-machine.sh against a machine, and both read the lines it prints.

use capsa_core::transport::{Client, ClientOptions, ExecOptions, UnixTransport};
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .ok_or("usage: agent_bench SOCKET [PINGS] [STDOUT_MIB]")?;
    let pings: usize = args.next().map_or(Ok(1000), |n| n.parse())?;
    let stdout_mib: usize = args.next().map_or(Ok(256), |n| n.parse())?;

    let started = Instant::now();
    let client = Client::connect(&UnixTransport::new(&socket), ClientOptions::default()).await?;
    println!(
        "handshake: {:.3} ms ({}, protocol {})",
        ms(started.elapsed()),
        client.agent_hello().software,
        client.negotiated().version
    );

    // First, while nothing has run: the agent's VmRSS (it is PID 1 in a guest) and the
    // guest's memory in use, MemTotal - MemAvailable.
    let idle = client.info().await?;
    println!(
        "idle: agent RSS {:.1} MiB, guest memory in use {:.0} MiB of {:.0} MiB",
        mib(idle.agent_rss_bytes),
        mib(idle
            .memory_total_bytes
            .saturating_sub(idle.memory_available_bytes)),
        mib(idle.memory_total_bytes)
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

    let bytes = stdout_mib.max(1) * 1024 * 1024;
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
        "after the work above: agent RSS {:.1} MiB, guest memory in use {:.0} MiB",
        mib(info.agent_rss_bytes),
        mib(info
            .memory_total_bytes
            .saturating_sub(info.memory_available_bytes))
    );
    Ok(())
}
