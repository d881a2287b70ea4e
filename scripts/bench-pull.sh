#!/usr/bin/env bash
# Pull benchmark: capsa against Debian's podman, same registry, same images, alternating,
# into empty stores. Prints medians of wall time and peak RSS, and the capsa/podman ratio.
#   sudo scripts/bench-pull.sh [RUNS]      (default 5 runs; stores on /tmp and on tmpfs)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
msg() { printf 'bench: %s\n' "$*" >&2; }
export PATH=$HOME/.cargo/bin:$PATH

scripts/setup.sh --test >/dev/null
cargo build --release --bin capsa -q
capsa=$PWD/target/release/capsa
work=$(mktemp -d /tmp/capsa-bench.XXXXXX)
trap 'scripts/test-registry.sh stop "$work/reg" >/dev/null 2>&1 || true; umount "$work/tmpfs" 2>/dev/null || true' EXIT
scripts/test-registry.sh start anon "$work/reg" >/dev/null
# shellcheck disable=SC1091
. "$work/reg/env"
scripts/build-test-images.sh "$work/images" --with-debian >/dev/null
scripts/push-test-images.sh "$work/images" "$REGISTRY" --only busybox,debian --with-debian >/dev/null
mkdir -p "$work/tmpfs" && mount -t tmpfs -o size=2g tmpfs "$work/tmpfs"
cat > "$work/registries.conf" <<CONF
[[registry]]
location = "$REGISTRY"
insecure = true
CONF
export CONTAINERS_REGISTRIES_CONF=$work/registries.conf

# time_one TOOL IMAGE BASE: prints "seconds maxrss_kb"
time_one() {
  local tool=$1 image=$2 base=$3 dir
  dir=$(mktemp -d "$base/store.XXXXXX")
  # Start each run from a quiet disk: earlier runs' writeback and discards settle first.
  sync; sleep 1
  local out
  if [[ $tool == capsa ]]; then
    out=$( { /usr/bin/time -f '%e %M' "$capsa" --root "$dir/root" --runroot "$dir/run" pull -q "$REGISTRY/$image" >/dev/null; } 2>&1 | tail -1)
  else
    out=$( { /usr/bin/time -f '%e %M' podman --root "$dir/root" --runroot "$dir/run" --storage-driver overlay pull -q --tls-verify=false "$REGISTRY/$image" >/dev/null; } 2>&1 | tail -1)
  fi
  rm -rf "$dir"; sync
  echo "$out"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

command -v /usr/bin/time >/dev/null || { apt-get install -y -qq time >/dev/null; }
printf '%-22s %-8s %10s %10s %12s %12s %8s\n' image fs capsa_s podman_s capsa_rss_MB podman_rss_MB ratio
for image in debian:bookworm busybox:latest; do
  for fs in disk tmpfs; do
    base=$work; [[ $fs == tmpfs ]] && base=$work/tmpfs
    : >"$work/c" ; : >"$work/p"
    for _ in $(seq "$runs"); do
      time_one capsa "$image" "$base" >>"$work/c"
      time_one podman "$image" "$base" >>"$work/p"
    done
    ct=$(cut -d' ' -f1 "$work/c" | median); pt=$(cut -d' ' -f1 "$work/p" | median)
    cm=$(cut -d' ' -f2 "$work/c" | median); pm=$(cut -d' ' -f2 "$work/p" | median)
    awk -v i="$image" -v f="$fs" -v ct="$ct" -v pt="$pt" -v cm="$cm" -v pm="$pm" \
      'BEGIN { printf "%-22s %-8s %10.2f %10.2f %12.1f %12.1f %8.2f\n", i, f, ct, pt, cm/1024, pm/1024, (pt > 0 ? ct/pt : 0) }'
  done
done
