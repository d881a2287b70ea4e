#!/usr/bin/env bash
# capsa's main job on a fresh Debian 12 machine: install what is needed, build capsa,
# start a local registry holding a busybox image built from Debian's busybox-static,
# pull it with capsa, run a container from it, and serve a web page from a detached
# container on a published port. Run as root: sudo scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
msg() { printf 'demo: %s\n' "$*" >&2; }
export PATH=$HOME/.cargo/bin:$PATH

scripts/setup.sh
msg "building capsa (release)"
cargo build --release --bin capsa --bin capsa-monitor
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
c() { $capsa --root "$work/storage" --runroot "$work/run" "$@"; }
c images
msg "capsa run --rm busybox echo"
c run --rm "$REGISTRY/busybox:latest" echo "hello from a capsa container"
msg "capsa run -d -p 127.0.0.1:8080:80 busybox httpd"
c run -d --name web -p 127.0.0.1:8080:80 "$REGISTRY/busybox:latest" \
  sh -c 'mkdir -p /www && echo "served by busybox httpd in a capsa container" > /www/index.html && exec httpd -f -p 80 -h /www'
c ps
for _ in $(seq 50); do curl -fsS http://127.0.0.1:8080/ 2>/dev/null && break; sleep 0.1; done
c rm -f web
msg "store left in $work/storage"
