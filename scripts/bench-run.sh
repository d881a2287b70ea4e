#!/usr/bin/env bash
# Container benchmark: capsa against Debian's podman (with crun and conmon), same image,
# same machine, same run, as root and rootless. Medians of:
#   run --rm busybox true | create | start | exec CTR true | ps (0 running) | ps (20 running)
# and the resident memory of capsa-monitor against conmon's (mean over 20 containers).
#   sudo scripts/bench-run.sh [RUNS]          (default 15 runs of each)
# BENCH_ONLY=run measures only `run --rm` (network changes); BENCH_BIN_DIR=DIR takes
# capsa and capsa-monitor from DIR instead of building them (to compare two builds);
# CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

# The measuring half, run once as root and once as the rootless user.
if [[ ${1:-} == --inner ]]; then
  mode=$2 runs=$3 work=$4 image=$5 capsa=$6
  cs=(--root "$work/$mode/capsa/root" --runroot "$work/$mode/capsa/run")
  ps_=(--root "$work/$mode/podman/root" --runroot "$work/$mode/podman/run" --storage-driver overlay)
  # Podman's default limits ask for more processes than the caller may have here
  # (MACHINE-NOTES); pass limits crun can set.
  pl=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
  now() { echo "${EPOCHREALTIME/./}"; }
  # t CMD...: prints milliseconds taken
  t() { local a b; a=$(now); "$@" >/dev/null 2>&1 || { echo "bench: failed: $*" >&2; return 1; }; b=$(now); echo $(((b - a) / 1000)); }
  median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
  c() { "$capsa" "${cs[@]}" "$@"; }
  p() { podman "${ps_[@]}" "$@"; }
  c pull -q "$image" >/dev/null
  p pull -q --tls-verify=false "$image" >/dev/null
  row() { # name capsa_ms_file podman_ms_file
    local cm pm; cm=$(median <"$2"); pm=$(median <"$3")
    awk -v m="$mode" -v n="$1" -v c="$cm" -v p="$pm" \
      'BEGIN { printf "%-9s %-22s %10.1f %10.1f %8.2f\n", m, n, c, p, (p > 0 ? c/p : 0) }'
  }
  d=$(mktemp -d)
  for _ in $(seq "$runs"); do
    t c run --rm "$image" true >>"$d/run.c"
    t p run --rm "${pl[@]}" "$image" true >>"$d/run.p"
  done
  row "run --rm true" "$d/run.c" "$d/run.p"
  if [[ ${BENCH_ONLY:-} == run ]]; then
    rm -rf "$d"
    exit 0
  fi
  for i in $(seq "$runs"); do
    t c create --name "cs$i" "$image" true >>"$d/create.c"
    t p create "${pl[@]}" --name "ps$i" "$image" true >>"$d/create.p"
    t c start "cs$i" >>"$d/start.c"
    t p start "ps$i" >>"$d/start.p"
  done
  row "create" "$d/create.c" "$d/create.p"
  row "start" "$d/start.c" "$d/start.p"
  c rm -af >/dev/null; p rm -af >/dev/null
  for _ in $(seq "$runs"); do
    t c ps >>"$d/ps0.c"; t p ps >>"$d/ps0.p"
  done
  row "ps (0 running)" "$d/ps0.c" "$d/ps0.p"
  for i in $(seq 20); do
    c run -d --name "cs$i" "$image" sleep 1000 >/dev/null
    p run -d "${pl[@]}" --name "ps$i" "$image" sleep 1000 >/dev/null
  done
  for _ in $(seq "$runs"); do
    t c ps >>"$d/ps20.c"; t p ps >>"$d/ps20.p"
  done
  row "ps (20 running)" "$d/ps20.c" "$d/ps20.p"
  for _ in $(seq "$runs"); do
    t c exec cs1 true >>"$d/exec.c"; t p exec ps1 true >>"$d/exec.p"
  done
  row "exec CTR true" "$d/exec.c" "$d/exec.p"
  rss() { # mean VmRSS in kB of the processes named $1 owned by us
    local total=0 n=0 pid kb
    for pid in $(pgrep -u "$(id -u)" -x "$1"); do
      kb=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
      total=$((total + kb)); n=$((n + 1))
    done
    awk -v t="$total" -v n="$n" 'BEGIN { printf "%.0f", (n ? t/n : 0) }'
  }
  cr=$(rss capsa-monitor); pr=$(rss conmon)
  awk -v m="$mode" -v c="$cr" -v p="$pr" \
    'BEGIN { printf "%-9s %-22s %10.0f %10.0f %8.2f   (kB, mean of 20)\n", m, "monitor RSS vs conmon", c, p, (p > 0 ? c/p : 0) }'
  c rm -af -t 0 >/dev/null; p rm -af -t 0 >/dev/null
  rm -rf "$d"
  exit 0
fi

runs=${1:-15}
msg() { printf 'bench: %s\n' "$*" >&2; }
export PATH=$HOME/.cargo/bin:$PATH
scripts/setup.sh --test >/dev/null
bin=${BENCH_BIN_DIR:-}
if [[ -z $bin ]]; then
  cargo build --release -q --bin capsa --bin capsa-monitor
  bin=${CARGO_TARGET_DIR:-target}/release
fi
work=$(mktemp -d /tmp/capsa-bench-run.XXXXXX)
chmod 0755 "$work"
cp "$bin/capsa" "$bin/capsa-monitor" "$work/"
trap 'scripts/test-registry.sh stop "$work/reg" >/dev/null 2>&1 || true' EXIT
scripts/test-registry.sh start anon "$work/reg" >/dev/null
# shellcheck disable=SC1091
. "$work/reg/env"
scripts/build-test-images.sh "$work/images" >/dev/null
scripts/push-test-images.sh "$work/images" "$REGISTRY" --only busybox >/dev/null
cat >"$work/registries.conf" <<CONF
[[registry]]
location = "$REGISTRY"
insecure = true
CONF
chmod 0644 "$work/registries.conf"
export CONTAINERS_REGISTRIES_CONF=$work/registries.conf
user=capsa-test
printf '%-9s %-22s %10s %10s %8s\n' mode command capsa_ms podman_ms ratio
mkdir -p "$work/root" "$work/rootless"
chown "$user:" "$work/rootless"
self=$PWD/scripts/bench-run.sh
"$self" --inner root "$runs" "$work" "$REGISTRY/busybox:latest" "$work/capsa"
uid=$(id -u "$user")
runuser -u "$user" -- env HOME="$work/rootless" XDG_RUNTIME_DIR="/run/user/$uid" \
  CONTAINERS_REGISTRIES_CONF="$CONTAINERS_REGISTRIES_CONF" PATH="$PATH" BENCH_ONLY="${BENCH_ONLY:-}" \
  "$self" --inner rootless "$runs" "$work" "$REGISTRY/busybox:latest" "$work/capsa"
rm -rf "$work/root" 2>/dev/null || true
