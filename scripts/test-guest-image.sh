#!/usr/bin/env bash
# Boots a capsa guest image (x86_64, or aarch64 on QEMU's arm `virt` machine, from the
# manifest's arch) twice under QEMU (TCG) with the devices of the machine
# contract (docs/guest-image.md): read-only root disk, a blank sparse data disk,
# the agent's virtio-serial port on a unix socket, the serial console in a file, QMP,
# user networking with the SSH port forwarded, a 9p share. Checks from the serial log
# that the first boot formats and mounts the data disk, that the second boot finds the
# same disk (its marker survives), and times each boot against the floor (the same
# kernel with a busybox initramfs that powers off at once).
#
#   scripts/test-guest-image.sh IMAGE_DIR
#
# Readiness is the agent's `capsa-agent: ready` line once the agent in this workspace
# prints it; before that, the guest init's `capsa-init: starting agent` line.
# CAPSA_GUEST_READY=agent|init forces one. CAPSA_GUEST_BOOT_TIMEOUT (seconds, default
# 240) bounds each boot. Prints SKIP and exits 0 when QEMU is missing.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
msg() { printf 'test-guest-image: %s\n' "$*" >&2; }
image=${1:?usage: scripts/test-guest-image.sh IMAGE_DIR}
image=$(cd "$image" && pwd)
for f in vmlinuz initrd.img rootfs.img manifest.json; do
  [[ -f $image/$f ]] || { msg "error: $image/$f not found (hint: build it with scripts/build-guest-image.sh)"; exit 1; }
done
arch=$(sed -n 's/.*"arch": *"\([^"]*\)".*/\1/p' "$image/manifest.json")
cmdline=$(sed -n 's/.*"cmdline": *"\([^"]*\)".*/\1/p' "$image/manifest.json")
# The machine, CPU and console of app/core/src/qemu/cmdline.rs under TCG. The arm
# `virt` board has no firmware to load for a direct kernel boot; its console is the
# PL011 UART. romfile= skips the PXE ROM that virtio-net-pci would otherwise look for.
case $arch in
  x86_64) qemu=qemu-system-x86_64 qemu_pkg=qemu-system-x86 console=ttyS0
    platform=(-accel tcg) nic_opts= ;;
  aarch64) qemu=qemu-system-aarch64 qemu_pkg=qemu-system-arm console=ttyAMA0
    platform=(-machine virt,gic-version=max -accel tcg,thread=multi -cpu max) nic_opts=,romfile= ;;
  *) msg "error: unknown image architecture '$arch' in $image/manifest.json"; exit 1 ;;
esac
command -v $qemu >/dev/null || { echo "SKIP test-guest-image: $qemu not installed (apt-get install $qemu_pkg)"; exit 0; }
command -v python3 >/dev/null || { echo "SKIP test-guest-image: python3 (for QMP) not installed"; exit 0; }
timeout=${CAPSA_GUEST_BOOT_TIMEOUT:-240}

ready_mode=${CAPSA_GUEST_READY:-}
if [[ -z $ready_mode ]]; then
  if grep -rqs 'capsa-agent: ready' "$repo/vm-agent/agent/src"; then ready_mode=agent; else ready_mode=init; fi
fi
case $ready_mode in
  agent) ready_line='capsa-agent: ready' ;;
  init) ready_line='capsa-init: starting agent' ;;
  *) msg "error: CAPSA_GUEST_READY must be agent or init, not $ready_mode"; exit 2 ;;
esac
msg "readiness line: '$ready_line'"

work=$(mktemp -d /tmp/capsa-guest-test.XXXXXX)
qemu_pid=
cleanup() {
  [[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
truncate -s 4G "$work/data.img"
mkdir -p "$work/share"
echo "from the host" >"$work/share/hello"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
qmp() {
  python3 - "$work/qmp.sock" "$1" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()
for cmd in ("qmp_capabilities", sys.argv[2]):
    f.write(json.dumps({"execute": cmd}) + "\n"); f.flush()
    while "return" not in (r := json.loads(f.readline())) and "error" not in r:
        pass
EOF
}
fail() {
  msg "FAIL: $*"
  if [[ -f ${log:-} ]]; then
    msg "serial log tail ($log):"
    tail -n 40 "$log" | sed 's/^/    /' >&2
  fi
  exit 1
}

# Waits up to $2 seconds for line pattern $1 in the serial log, or for QEMU to exit.
wait_for() {
  local deadline
  deadline=$(awk -v t="$(now)" -v d="$2" 'BEGIN { printf "%d", t + d }')
  while ! grep -qF -- "$1" "$log" 2>/dev/null; do
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
      grep -qF -- "$1" "$log" 2>/dev/null && return 0
      return 1
    fi
    (($(date +%s) < deadline)) || return 2
    sleep 0.05
  done
}

# Waits for QEMU to end by itself within $1 seconds.
wait_exit() {
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    kill -0 "$qemu_pid" 2>/dev/null || { wait "$qemu_pid" 2>/dev/null || true; qemu_pid=; return 0; }
    sleep 0.1
  done
  return 1
}

boot() {
  local n=$1 extra=$2
  log=$work/serial-$n.log
  ssh_port=$(free_port)
  rm -f "$work/agent.sock" "$work/qmp.sock"
  t0=$(now)
  $qemu "${platform[@]}" -m 1024 -smp 2 -nodefaults -display none -no-reboot \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "$cmdline console=$console capsa.net=qemu-user capsa.hostname=capsa-test capsa.rootful=0 $extra" \
    -drive "file=$image/rootfs.img,if=none,format=raw,readonly=on,id=root" -device virtio-blk-pci,drive=root \
    -drive "file=$work/data.img,if=none,format=raw,id=data" -device virtio-blk-pci,drive=data \
    -device virtio-serial-pci \
    -chardev "socket,id=agent,path=$work/agent.sock,server=on,wait=off" \
    -device virtserialport,chardev=agent,name=org.capsa.agent.0 \
    -chardev "file,id=serial,path=$log" -serial chardev:serial \
    -qmp "unix:$work/qmp.sock,server=on,wait=off" \
    -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$ssh_port-:22" -device "virtio-net-pci,netdev=net0$nic_opts" \
    -device virtio-rng-pci \
    -fsdev "local,id=share,path=$work/share,security_model=none,readonly=on" \
    -device virtio-9p-pci,fsdev=share,mount_tag=capsatest \
    >"$work/qemu-$n.out" 2>&1 &
  qemu_pid=$!
  if [[ $ready_mode == agent ]]; then
    # The host's side of the agent channel: the first frame (9-byte header, then
    # JSON) must be the agent's Hello, the host's readiness signal.
    python3 - "$work/agent.sock" "$work/hello-$n.json" "$t0" >"$work/hello-$n.out" 2>&1 <<'EOF2' &
import socket, struct, sys, time
sock_path, out, t0 = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_UNIX)
for _ in range(100):
    try:
        s.connect(sock_path)
        break
    except OSError:
        time.sleep(0.05)
def read(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit("agent channel closed before the Hello frame")
        b += c
    return b
length, channel, kind = struct.unpack(">IIB", read(9))
payload = read(length)
print("hello after %.1fs (kind %d, channel %d)" % (time.time() - t0, kind, channel))
open(out, "wb").write(payload)
while s.recv(65536):
    pass
EOF2
  fi
  local rc=0
  wait_for "$ready_line" "$timeout" || rc=$?
  case $rc in
    1) cat "$work/qemu-$n.out" >&2; fail "boot $n: QEMU ended before '$ready_line'" ;;
    2) fail "boot $n: no '$ready_line' within ${timeout}s" ;;
  esac
  boot_time=$(elapsed "$t0" "$(now)")
  msg "boot $n: '$ready_line' after ${boot_time}s"
  if [[ $ready_mode == agent ]]; then
    local i
    for ((i = 0; i < 300; i++)); do
      [[ -s $work/hello-$n.json ]] && break
      sleep 0.1
    done
    grep -q '"capsa-agent' "$work/hello-$n.json" 2>/dev/null ||
      fail "boot $n: no Hello frame from the agent on its channel ($(cat "$work/hello-$n.out" 2>/dev/null))"
    msg "boot $n: agent channel: $(cat "$work/hello-$n.out")"
  fi
}

# Ends the VM the way the host does: the agent powers off on the ACPI power button;
# the stand-in readiness (no agent yet) ends in the agent's exit, which panics PID 1, and
# panic=1 with -no-reboot stops QEMU.
shutdown() {
  if [[ $ready_mode == agent ]]; then
    qmp system_powerdown || fail "QMP system_powerdown failed"
    wait_exit 60 || { qmp quit || true; fail "the guest did not power off within 60s of system_powerdown"; }
  else
    wait_exit 60 || { qmp quit || true; wait_exit 10 || true; fail "QEMU did not stop after the agent's exit"; }
  fi
}

expect() { grep -qF -- "$1" "$log" || fail "no '$1' in the serial log"; }

# The floor, for the timing figures.
floor_time=
if floor=$("$repo/scripts/build-guest-image.sh" --floor "$image" --out "$work/floor" 2>/dev/null); then
  log=$work/floor.log
  t0=$(now)
  timeout "$timeout" $qemu "${platform[@]}" -m 1024 -smp 2 -nodefaults -display none -no-reboot \
    -kernel "$floor/vmlinuz" -initrd "$floor/initrd.img" -append "$cmdline console=$console" \
    -chardev "file,id=serial,path=$log" -serial chardev:serial >/dev/null 2>&1 || true
  if grep -qF 'capsa-floor: ready' "$log"; then
    floor_time=$(elapsed "$t0" "$(now)")
    msg "floor: boot and power-off in ${floor_time}s"
  else
    msg "warning: the floor did not boot (serial log: $(tail -n 3 "$log" | tr '\n' ' '))"
  fi
fi

# Boot 1: blank data disk.
boot 1 "capsa.insecure_registries=10.0.2.2:5000,10.0.2.2:5001 capsa.mounts=capsatest:/mnt/host"
time1=$boot_time
expect "capsa-init: formatting data disk /dev/vdb"
expect "capsa-init: data disk formatted: "
marker=$(sed -n 's/^capsa-init: data disk formatted: \([0-9a-f-]*\) .*/\1/p' "$log" | head -1)
[[ -n $marker ]] || fail "no disk marker in 'data disk formatted' line"
expect "capsa-init: data disk mounted at /mnt/data: created $marker"
expect "capsa-init: insecure registries: 10.0.2.2:5000,10.0.2.2:5001"
expect "capsa-init: mounted share capsatest at /mnt/host"
if [[ $ready_mode == agent ]]; then
  # dropbear starts once the agent is ready; its banner proves the port forward too.
  banner=
  for _ in $(seq 100); do
    banner=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ssh_port && head -c 20 <&3" 2>/dev/null || true)
    [[ $banner == SSH-2.0-* ]] && break
    sleep 0.3
  done
  [[ $banner == SSH-2.0-* ]] || fail "no SSH banner on the forwarded port $ssh_port"
  msg "boot 1: ssh server answers ($banner)"
fi
shutdown
if grep -q 'capsa-init: warning\|capsa-init: error' "$log"; then
  fail "boot 1 printed warnings or errors: $(grep 'capsa-init: warning\|capsa-init: error' "$log" | head -3)"
fi
msg "boot 1: data disk formatted (marker $marker), mounted; powered off"

# Boot 2: the same data disk must be found, not formatted again.
boot 2 ""
time2=$boot_time
expect "capsa-init: data disk mounted at /mnt/data: created $marker"
grep -qF 'capsa-init: formatting data disk' "$log" && fail "boot 2 formatted the data disk again"
shutdown
msg "boot 2: same data disk (marker $marker); powered off"

echo "$arch guest image boot under TCG: ${time1}s first boot (with format), ${time2}s second boot, floor ${floor_time:-?}s (readiness: '$ready_line')"
msg "ok"
