#!/usr/bin/env bash
# capsa's main job on a fresh Debian 12 machine: install what is needed, build capsa,
# start a local registry holding a busybox image built from Debian's busybox-static,
# pull it with capsa and list it. Run as root: sudo scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
msg() { printf 'demo: %s\n' "$*" >&2; }
export PATH=$HOME/.cargo/bin:$PATH

scripts/setup.sh
msg "building capsa (release)"
cargo build --release --bin capsa
work=$(mktemp -d /tmp/capsa-demo.XXXXXX)
trap 'scripts/test-registry.sh stop "$work/registry" >/dev/null 2>&1 || true' EXIT
scripts/test-registry.sh start anon "$work/registry"
# shellcheck disable=SC1091
. "$work/registry/env"
scripts/build-test-images.sh "$work/images" >/dev/null
scripts/push-test-images.sh "$work/images" "$REGISTRY" --only busybox >/dev/null
capsa=target/release/capsa
msg "capsa pull $REGISTRY/busybox:latest"
$capsa --root "$work/storage" --runroot "$work/run" pull --tls-verify=false "$REGISTRY/busybox:latest"
$capsa --root "$work/storage" --runroot "$work/run" images
msg "store left in $work/storage"
