#!/usr/bin/env bash
# Installs what capsa needs on a fresh Debian 12 machine and applies the host fixes of
# shared/MACHINE-NOTES.md. Idempotent; run as root. With --test it also installs the
# test fixtures' packages and creates the unprivileged test user (capsa-test) with
# subordinate uid/gid ranges.
set -euo pipefail
msg() { printf 'setup: %s\n' "$*" >&2; }

[[ $(id -u) -eq 0 ]] || { msg "error: run as root (apt-get, users, /dev permissions)"; exit 1; }
with_tests=0
[[ ${1:-} == --test ]] && with_tests=1

pkgs=(ca-certificates uidmap crun passt slirp4netns fuse-overlayfs catatonit busybox-static
      docker-registry skopeo apache2-utils jq zstd openssl curl python3 gcc libc6-dev bsdutils time)
(( with_tests )) && pkgs+=(podman mmdebstrap systemd linux-image-amd64)
# The guest image: build (scripts/build-guest-image.sh), boot test, aarch64 build and boot.
(( with_tests )) && pkgs+=(erofs-utils cpio musl-tools qemu-system-x86 gcc-aarch64-linux-gnu qemu-user-static qemu-system-arm)
# The SSH tests' server (app/core/tests/ssh.rs); clang for the macOS cross-check
# (scripts/check-macos.sh: ring compiles C for the target).
(( with_tests )) && pkgs+=(dropbear-bin clang)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if (( ${#missing[@]} )); then
  msg "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  if [[ -x $HOME/.cargo/bin/cargo ]]; then :; else
    msg "error: no Rust toolchain (cargo) found: install one with rustup"; exit 1
  fi
fi
if (( with_tests )); then
  PATH=$HOME/.cargo/bin:$PATH rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl >/dev/null 2>&1 ||
    msg "warning: rustup target add of the musl targets failed (the guest image build needs them)"
  PATH=$HOME/.cargo/bin:$PATH rustup target add aarch64-apple-darwin >/dev/null 2>&1 ||
    msg "warning: rustup target add aarch64-apple-darwin failed (scripts/check-macos.sh needs it)"
fi

# Host fixes measured in shared/MACHINE-NOTES.md (needed by crun on this kind of host).
if [[ -f /sys/fs/cgroup/unified/cgroup.controllers ]]; then
  for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
    if ! mountpoint -q "/sys/fs/cgroup/$c"; then
      mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || msg "warning: could not mount cgroup $c"
    fi
  done
fi
[[ -e /dev/net/tun ]] && chmod 0666 /dev/net/tun
[[ -e /dev/fuse ]] && chmod 0666 /dev/fuse

if (( with_tests )); then
  if ! id capsa-test >/dev/null 2>&1; then
    msg "creating user capsa-test"
    useradd --create-home --shell /bin/bash capsa-test
  fi
  grep -q '^capsa-test:' /etc/subuid || usermod --add-subuids 200000-265535 capsa-test
  grep -q '^capsa-test:' /etc/subgid || usermod --add-subgids 200000-265535 capsa-test
  # Root's --userns auto takes its ranges from the user "containers", as Podman does.
  grep -q '^containers:' /etc/subuid || echo 'containers:2147483647:2147483648' >> /etc/subuid
  grep -q '^containers:' /etc/subgid || echo 'containers:2147483647:2147483648' >> /etc/subgid
  uid=$(id -u capsa-test)
  mkdir -p "/run/user/$uid" && chown capsa-test: "/run/user/$uid" && chmod 0700 "/run/user/$uid"
fi
msg "done"
