#!/usr/bin/env bash
# Agent benchmark on this host: the release capsa-agent (static musl when the target is
# installed, as shipped in the guest image) on a unix socket, driven by the host Client.
# Reports the Ping round trip, exec latency, stdout throughput and the agent's RSS.
# The same figures over virtio-serial, from the agent in a booted guest, come from
# scripts/bench-machine.sh, which runs the same example (app/core/examples/agent_bench.rs)
# against the machine's agent socket.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$HOME/.cargo/bin:$PATH
target_dir=${CARGO_TARGET_DIR:-target}

if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    cargo build --release -q -p capsa-agent --target x86_64-unknown-linux-musl
    agent=$target_dir/x86_64-unknown-linux-musl/release/capsa-agent
else
    cargo build --release -q -p capsa-agent
    agent=$target_dir/release/capsa-agent
fi
cargo build --release -q -p capsa-core --example agent_bench

dir=$(mktemp -d)
"$agent" --listen "unix:$dir/agent.sock" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -S "$dir/agent.sock" ] && break; sleep 0.05; done

echo "capsa-agent: $agent ($(du -h "$agent" | cut -f1) on disk)"
echo "idle agent RSS before any connection: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
"$target_dir/release/examples/agent_bench" "$dir/agent.sock" "${PINGS:-2000}"
echo "agent peak RSS (VmHWM): $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)"
