#!/usr/bin/env bash
# Runs every capsa test on a fresh Debian 12 machine: installs packages, creates the
# rootless test user, starts the fixture registries (anonymous, htpasswd, token), builds
# and pushes the test images, then runs the unit and integration tests (as root, and the
# rootless ones as capsa-test). Run as root: sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
msg() { printf 'test: %s\n' "$*" >&2; }
export PATH=$HOME/.cargo/bin:$PATH

scripts/setup.sh --test
work=${CAPSA_TEST_WORK:-$(mktemp -d /tmp/capsa-test.XXXXXX)}
mkdir -p "$work" && chmod 0755 "$work"
cleanup() {
  for m in anon htpasswd token; do scripts/test-registry.sh stop "$work/reg-$m" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

msg "building test images"
scripts/build-test-images.sh "$work/images"
for m in anon htpasswd token; do
  scripts/test-registry.sh start "$m" "$work/reg-$m"
done
# shellcheck disable=SC1091
reg() { (. "$work/reg-$1/env"; echo "$REGISTRY"); }
scripts/push-test-images.sh "$work/images" "$(reg anon)"
scripts/push-test-images.sh "$work/images" "$(reg htpasswd)" --creds capsa:capsa-secret --only busybox
scripts/push-test-images.sh "$work/images" "$(reg token)" --creds capsa:capsa-secret --only busybox
# (push-test-images.sh also pushes public/busybox: the token registry grants
# anonymous pulls under public/ only.)

export CAPSA_TEST_REGISTRY CAPSA_TEST_REGISTRY_BASIC CAPSA_TEST_REGISTRY_TOKEN CAPSA_TEST_FIXTURES CAPSA_TEST_ROOTLESS_USER
CAPSA_TEST_REGISTRY=$(reg anon)
CAPSA_TEST_REGISTRY_BASIC=$(reg htpasswd)
CAPSA_TEST_REGISTRY_TOKEN=$(reg token)
CAPSA_TEST_FIXTURES=$work/images
CAPSA_TEST_ROOTLESS_USER=capsa-test

msg "running tests"
cargo test --workspace --no-fail-fast -- --test-threads=2
msg "guest image: build and boot test"
guest=$(scripts/build-guest-image.sh --out "$work/guest-image")
scripts/test-guest-image.sh "$guest"
CAPSA_TEST_GUEST_IMAGE=$guest cargo test -p capsa-cli --test machine -- real_guest_
scripts/check-macos.sh
msg "cargo fmt --check and clippy"
cargo fmt --all -- --check || { msg "error: cargo fmt --check failed"; exit 1; }
cargo clippy --workspace --all-targets --quiet -- -D warnings
