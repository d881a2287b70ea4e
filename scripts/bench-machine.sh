#!/usr/bin/env bash
# Machine boot benchmark (issue 4, "Tests and speed"). Side by side in one run:
#   floor    the same kernel booting a busybox initramfs that powers off at once, under
#            QEMU with the accelerator capsa would choose: the least a boot can cost here
#   machine  `capsa machine start` until the guest is ready (the agent's Hello, or the
#            console's `capsa-agent: ready` for a guest without the agent), then QEMU's
#            resident memory (the guest's memory as the host pays for it)
# Target: machine start at most 1.5x the floor.
# Usage: scripts/bench-machine.sh [RUNS]   (CAPSA_MACHINE_IMAGE=PATH benches a real guest
# image; without it the floor guest itself is the machine, which measures what capsa adds)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
msg() { printf 'bench-machine: %s\n' "$*" >&2; }
command -v qemu-system-x86_64 >/dev/null || { msg "SKIP: qemu-system-x86_64 is not installed"; exit 0; }

cargo build -q -p capsa-cli
cargo build -q -p capsa-core --example floor-image
capsa=$CARGO_TARGET_DIR/debug/capsa
work=$(mktemp -d)
trap 'CAPSA_MACHINE_DIR=$work/machines "$capsa" machine reset -f >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"$CARGO_TARGET_DIR"/debug/examples/floor-image "$work/floor"
export CAPSA_MACHINE_DIR=$work/machines

accel=$("$capsa" machine info --format '{{.Host.Accelerator}}')
note=$("$capsa" machine info --format '{{.Host.AcceleratorNote}}')
msg "accelerator: $accel${note:+ ($note)}"
image=${CAPSA_MACHINE_IMAGE:-$work/floor}
kernel=$image/vmlinuz
[[ -f $kernel ]] || { msg "error: no vmlinuz in $image (give an image directory)"; exit 1; }

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f", m}'; }

cpu=max; [[ $accel == kvm || $accel == hvf ]] && cpu=host
floor_times=()
for i in $(seq "$runs"); do
  t0=$(now)
  qemu-system-x86_64 -machine q35 -accel "$accel" -cpu "$cpu" -smp 2 -m 2048M \
    -nodefaults -no-user-config -display none -no-reboot \
    -kernel "$kernel" -initrd "$work/floor/initrd.img" \
    -append "console=ttyS0 quiet panic=-1 capsa.floor=poweroff" \
    -chardev "file,id=serial,path=$work/floor-$i.log" -serial chardev:serial
  t1=$(now)
  grep -q "capsa-init: powering off" "$work/floor-$i.log" || { msg "floor run $i did not reach userspace:"; tail -5 "$work/floor-$i.log" >&2; exit 1; }
  floor_times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')")
done

"$capsa" machine init bench --image "$image" --cpus 2 --memory 2048 --disk-size 10 2>/dev/null
start_times=(); rss=()
for i in $(seq "$runs"); do
  t0=$(now)
  "$capsa" machine start bench 2>"$work/start-$i.log"
  t1=$(now)
  start_times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')")
  pid=$(cut -d' ' -f1 "$CAPSA_MACHINE_DIR/bench/qemu.pid")
  sleep 2
  rss+=("$(awk '/^VmRSS/ {print int($2/1024)}' "/proc/$pid/status")")
  "$capsa" machine stop bench 2>/dev/null
done

f=$(printf '%s\n' "${floor_times[@]}" | median)
s=$(printf '%s\n' "${start_times[@]}" | median)
r=$(printf '%s\n' "${rss[@]}" | median)
printf '%-44s %10s\n' "what (median of $runs, accel $accel)" "value"
printf '%-44s %9ss\n' "floor: kernel + busybox, boot to power-off" "$f"
printf '%-44s %9ss\n' "machine start to ready ($(basename "$image"))" "$s"
printf '%-44s %9sx\n' "ratio (target <= 1.5)" "$(awk -v s="$s" -v f="$f" 'BEGIN {printf "%.2f", s / f}')"
printf '%-44s %8sMB\n' "QEMU resident memory, idle guest" "$r"
msg "agent RSS and request round trip need the agent's exec/ping over agent.sock: not measured here yet"
