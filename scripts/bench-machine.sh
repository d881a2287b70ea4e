#!/usr/bin/env bash
# Machine benchmark (issue 4, "Tests and speed"), everything in one run:
#   floor    the image's own kernel booting a busybox initramfs that powers off at once,
#            under QEMU with the accelerator capsa chooses: the least a boot costs here
#   start    `capsa machine start` until it returns: the agent's Hello (or, for a guest
#            without the agent, the console's `capsa-agent: ready`) plus the SSH key
#   The two alternate, RUNS times each, so that the load of a shared machine hits both
#   alike; the medians and their ratio are reported (target: at most 1.5x).
# Then, on the last started machine after IDLE seconds doing nothing, through its agent
# over virtio-serial (app/core/examples/agent_bench.rs, also used by bench-agent.sh):
#   idle guest memory (MemTotal - MemAvailable) and the agent's resident memory (its
#   VmRSS: it is PID 1), both from the agent's Info reply before any other request
#   (target: agent under 15 MB); the Ping round trip (target: under 2 ms); QEMU's
#   resident memory on the host.
#
# Usage: CAPSA_MACHINE_IMAGE=DIR scripts/bench-machine.sh [RUNS]     (default RUNS=5)
#   CAPSA_MACHINE_IMAGE  a guest image directory (scripts/build-guest-image.sh); without
#                        it the floor guest is the machine, which measures what capsa's
#                        host side adds, and there is no agent to measure
#   IDLE=10 PINGS=2000   seconds of idle before the memory figures; pings to time
#                        (agent_bench's exec and throughput figures come along, on
#                        16 MiB: TCG moves a few MiB/s)
#   KEEP=1               keep the work directory (serial logs) and print its path
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
idle=${IDLE:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
msg() { printf 'bench-machine: %s\n' "$*" >&2; }
command -v qemu-system-x86_64 >/dev/null || { msg "SKIP: qemu-system-x86_64 is not installed"; exit 0; }

cargo build -q -p capsa-cli
cargo build -q -p capsa-core --example floor-image
# Release: the client's own overhead must not inflate the round trip.
cargo build -q --release -p capsa-core --example agent_bench
capsa=$CARGO_TARGET_DIR/debug/capsa
work=$(mktemp -d)
export CAPSA_MACHINE_DIR=$work/machines
cleanup() {
  "$capsa" machine rm -f bench >/dev/null 2>&1 || true
  if [[ ${KEEP:-0} == 1 ]]; then msg "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
"$CARGO_TARGET_DIR"/debug/examples/floor-image "$work/floor"

accel=$("$capsa" machine info --format '{{.Host.Accelerator}}')
note=$("$capsa" machine info --format '{{.Host.AcceleratorNote}}')
msg "accelerator: $accel${note:+ ($note)}"
# The machine gets the accelerator the bench measured the floor with.
export CAPSA_MACHINE_ACCEL=$accel
image=${CAPSA_MACHINE_IMAGE:-$work/floor}
kernel=$image/vmlinuz
[[ -f $kernel ]] || { msg "error: no vmlinuz in $image (give an image directory)"; exit 1; }

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f", m}'; }

cpu=max; [[ $accel == kvm || $accel == hvf ]] && cpu=host
floor_run() {
  local log=$work/floor-$1.log t0
  t0=$(now)
  # The machine's size; no devices: the floor needs none to reach userspace.
  qemu-system-x86_64 -machine q35 -accel "$accel" -cpu "$cpu" -smp 2 -m 2048M \
    -nodefaults -no-user-config -display none -no-reboot \
    -kernel "$kernel" -initrd "$work/floor/initrd.img" \
    -append "console=ttyS0 quiet panic=-1 capsa.floor=poweroff" \
    -chardev "file,id=serial,path=$log" -serial chardev:serial
  since "$t0"
  grep -q "capsa-init: powering off" "$log" || { msg "floor run $1 did not reach userspace:"; tail -5 "$log" >&2; exit 1; }
}
start_run() {
  local t0
  t0=$(now)
  "$capsa" machine start bench 2>"$work/start-$1.log" || { msg "machine start failed:"; cat "$work/start-$1.log" >&2; exit 1; }
  since "$t0"
  cp "$CAPSA_MACHINE_DIR/bench/serial.log" "$work/serial-$1.log"
}

"$capsa" machine init bench --image "$image" --cpus 2 --memory 2048 --disk-size 10 >/dev/null 2>&1
# The first start formats the data disk: reported apart, not in the medians.
first=$(start_run 0)
msg "first start (formats the data disk): ${first}s"
"$capsa" machine stop bench >/dev/null 2>&1
floor_times=() start_times=()
for i in $(seq "$runs"); do
  floor_times+=("$(floor_run "$i")")
  start_times+=("$(start_run "$i")")
  msg "run $i/$runs: floor ${floor_times[-1]}s, start ${start_times[-1]}s"
  # The last machine stays up for the figures below.
  ((i == runs)) || "$capsa" machine stop bench >/dev/null 2>&1
done

msg "machine idle for ${idle}s"
sleep "$idle"
pid=$(cut -d' ' -f1 "$CAPSA_MACHINE_DIR/bench/qemu.pid")
qemu_rss=$(awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status")
agent_out=
if [[ -n ${CAPSA_MACHINE_IMAGE:-} ]]; then
  agent_out=$("$CARGO_TARGET_DIR"/release/examples/agent_bench "$CAPSA_MACHINE_DIR/bench/agent.sock" "${PINGS:-2000}" 16 2>&1) ||
    { msg "agent_bench failed: $agent_out"; exit 1; }
  printf '%s\n' "$agent_out" | sed 's/^/bench-machine: agent_bench: /' >&2
fi
"$capsa" machine stop bench >/dev/null 2>&1

f=$(printf '%s\n' "${floor_times[@]}" | median)
s=$(printf '%s\n' "${start_times[@]}" | median)
ratio=$(awk -v s="$s" -v f="$f" 'BEGIN {printf "%.2f", s / f}')
# Each start against the floor run just before it: the load changes less within a pair.
pairs=$(for i in "${!floor_times[@]}"; do awk -v s="${start_times[i]}" -v f="${floor_times[i]}" 'BEGIN {printf "%.2f\n", s / f}'; done)
pair_ratio=$(printf '%s\n' "$pairs" | median)
field() { printf '%s\n' "$agent_out" | sed -n "$1" | head -1; }
ping_ms=$(field 's/^ping round trip.*median \([0-9.]*\) ms.*/\1/p')
agent_mib=$(field 's/^idle: agent RSS \([0-9.]*\) MiB.*/\1/p')
guest_mib=$(field 's/^idle: .*guest memory in use \([0-9.]*\) MiB of \([0-9.]*\) MiB.*/\1 of \2/p')
verdict() { awk -v v="$1" -v t="$2" 'BEGIN {print (v != "" && v + 0 <= t + 0) ? "met" : "NOT met"}'; }

row() { printf '%-50s %12s  %s\n' "$@"; }
echo "machine benchmark: $(basename "$image"), accel $accel, $runs runs each, alternating, medians"
echo "(host load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
row "what" "median" "runs"
row "floor: same kernel + busybox, QEMU start to exit" "${f} s" "${floor_times[*]}"
row "capsa machine start until ready" "${s} s" "${start_times[*]}"
row "ratio of the medians (target <= 1.5)" "${ratio}x" ""
row "ratio in each pair (floor, then start)" "${pair_ratio}x" "$(echo $pairs)"
row "first start (formats the data disk)" "${first} s" ""
row "QEMU resident memory on the host, idle" "${qemu_rss} MB" ""
if [[ -n $agent_out ]]; then
  # 1 MiB = 1.048576 MB: the 15 MB target is 14.3 MiB.
  row "idle guest memory in use (MemTotal-MemAvailable)" "${guest_mib%% of*} MiB" "of ${guest_mib##*of } MiB"
  row "agent resident memory, idle (VmRSS of PID 1)" "${agent_mib} MiB" ""
  row "Ping round trip over virtio-serial" "${ping_ms} ms" ""
fi
echo "verdict: start ${s} s vs floor ${f} s = ${ratio}x (pairs: median ${pair_ratio}x), target <= 1.5x: $(verdict "$ratio" 1.5)"
if [[ -n $agent_out ]]; then
  echo "verdict: agent RSS ${agent_mib} MiB, target < 15 MB (14.3 MiB): $(verdict "$agent_mib" 14.3)"
  echo "verdict: Ping round trip ${ping_ms} ms, target < 2 ms: $(verdict "$ping_ms" 2)"
else
  echo "verdict: agent RSS and Ping: not measured (the floor guest has no agent; set CAPSA_MACHINE_IMAGE)"
fi
