#!/usr/bin/env bash
# `cargo check --target aarch64-apple-darwin -p capsa-core` from Linux: the macOS code
# (the Virtualization.framework driver) at least compiles. ring, which russh and rustls
# use, compiles C for the target; there is no macOS SDK here, so clang gets a freestanding
# build and a shim of the three headers ring's C includes. Needs clang and
# `rustup target add aarch64-apple-darwin` (scripts/setup.sh --test does both).
set -euo pipefail
cd "$(dirname "$0")/.."
msg() { printf 'check-macos: %s\n' "$*" >&2; }
export PATH=$HOME/.cargo/bin:$PATH

command -v clang >/dev/null || { msg "error: clang not found (Debian: apt-get install clang)"; exit 1; }
target_dir=${CARGO_TARGET_DIR:-target}
shim=$(realpath -m "$target_dir/macos-shim")
mkdir -p "$shim"
cat >"$shim/TargetConditionals.h" <<'H'
#pragma once
#define TARGET_OS_OSX 1
#define TARGET_OS_IPHONE 0
#define TARGET_OS_MAC 1
H
cat >"$shim/assert.h" <<'H'
#pragma once
#define assert(x) ((void)0)
H
cat >"$shim/string.h" <<'H'
#pragma once
#include <stddef.h>
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
H
msg "cargo check --target aarch64-apple-darwin -p capsa-core"
CC_aarch64_apple_darwin=clang \
CFLAGS_aarch64_apple_darwin="-ffreestanding -nostdlibinc -I$shim" \
  cargo check --quiet --target aarch64-apple-darwin -p capsa-core
