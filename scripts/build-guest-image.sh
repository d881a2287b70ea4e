#!/usr/bin/env bash
# Builds capsa's guest VM image from Debian 12 packages (see guest-image/README.md and
# docs/guest-image.md):
#
#   scripts/build-guest-image.sh [--arch x86_64|aarch64] [--out DIR] [--version V]
#                                [--binaries DIR] [--tar]
#       -> DIR/capsa-guest-<version>-<arch>/{vmlinuz,initrd.img,rootfs.img,manifest.json}
#          (--tar also writes DIR/capsa-guest-<version>-<arch>.tar and .tar.sha256, the
#          release artifact)
#   scripts/build-guest-image.sh --binaries-only [--arch A] [--out DIR]
#       -> DIR/capsa-bin-<version>-<arch>/{capsa,capsa-agent,capsa-monitor}: only the
#          static binaries, smoke-run (under qemu-user for another architecture)
#   scripts/build-guest-image.sh --floor IMAGE_DIR [--out DIR]
#       -> DIR (default IMAGE_DIR/../capsa-floor-<arch>)/{vmlinuz,initrd.img,cmdline}: the
#          same kernel with a busybox initramfs that powers off at once (the boot floor
#          scripts/bench-machine.sh compares against)
#
# The image build runs as root (mmdebstrap in root mode, device nodes in the initrd).
# --binaries DIR takes capsa, capsa-agent and capsa-monitor (static) from DIR instead of
# building them with cargo. CAPSA_DEBIAN_MIRROR overrides the Debian mirror (default:
# the host's apt mirror); downloaded packages are kept in CAPSA_GUEST_CACHE (default
# ~/.cache/capsa-guest-image/debs-<arch>). Progress goes to stderr; the image directory's path is
# printed on stdout.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
recipe=$repo/guest-image
msg() { printf 'build-guest-image: %s\n' "$*" >&2; }
die() { printf 'build-guest-image: error: %s\n' "$1" >&2; [[ -n ${2:-} ]] && printf 'hint: %s\n' "$2" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-0}"; }

arch=x86_64 out= version= binaries= floor= tar=0 binaries_only=0
while (($#)); do
  case $1 in
    --arch) arch=${2:?--arch needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --version) version=${2:?--version needs a value}; shift 2 ;;
    --binaries) binaries=${2:?--binaries needs a directory}; shift 2 ;;
    --floor) floor=${2:?--floor needs the image directory}; shift 2 ;;
    --tar) tar=1; shift ;;
    --binaries-only) binaries_only=1; shift ;;
    -h | --help) usage 0 ;;
    *) msg "unknown argument: $1"; usage 2 ;;
  esac
done

case $arch in
  x86_64) deb_arch=amd64 rust_target=x86_64-unknown-linux-musl ;;
  aarch64) deb_arch=arm64 rust_target=aarch64-unknown-linux-musl ;;
  *) die "unknown architecture: $arch" "use --arch x86_64 or --arch aarch64" ;;
esac
# Kernel arguments the image itself needs; the host adds console=, capsa.net= etc.
# panic=1: a dead PID 1 reboots at once, and the host's -no-reboot turns that into a
# stopped VM instead of a hang. quiet: every console line costs boot time under TCG.
image_cmdline="panic=1 quiet"
start=$(date +%s)
step_start=$start
step() {
  local now; now=$(date +%s)
  msg "[$((now - start))s] $*"
  step_start=$now
}

# A cpio (newc) of directory $1 into file $2, owned by root.
make_cpio() {
  (cd "$1" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$2"
}

# Busybox with its applets linked, /dev/console (the kernel opens it for init's stdio
# before anything is mounted) and the mount points, in initrd staging directory $1.
initrd_base() {
  local dir=$1 busybox=$2 a
  mkdir -p "$dir"/{bin,dev,proc,sys}
  install -m 0755 "$busybox" "$dir/bin/busybox"
  for a in $("$busybox" --list 2>/dev/null || qemu_user "$busybox" --list); do
    [[ $a == busybox ]] || ln -sf busybox "$dir/bin/$a"
  done
  mknod -m 0600 "$dir/dev/console" c 5 1
  mknod -m 0666 "$dir/dev/null" c 1 3
}

qemu_user() {
  case $arch in
    aarch64) qemu-aarch64-static "$@" ;;
    *) "$@" ;;
  esac
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -n $floor ]]; then
  # --- the boot floor ----------------------------------------------------------------
  [[ -f $floor/manifest.json && -f $floor/vmlinuz && -f $floor/initrd.img ]] ||
    die "$floor is not a guest image directory (no manifest.json, vmlinuz or initrd.img)" "build one first: scripts/build-guest-image.sh"
  arch=$(sed -n 's/.*"arch": *"\([^"]*\)".*/\1/p' "$floor/manifest.json")
  out=${out:-$(dirname "$floor")/capsa-floor-$arch}
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # The busybox of the image's own initrd, so the floor needs nothing else.
  mkdir -p "$work/x"
  (cd "$work/x" && cpio -i --quiet --make-directories --no-absolute-filenames '*bin/busybox' <"$floor/initrd.img") ||
    die "cannot extract busybox from $floor/initrd.img"
  mkdir -p "$work/initrd"
  initrd_base "$work/initrd" "$work/x/bin/busybox"
  install -m 0755 "$recipe/floor-init" "$work/initrd/init"
  mkdir -p "$out"
  make_cpio "$work/initrd" "$out/initrd.img"
  cp "$floor/vmlinuz" "$out/vmlinuz"
  sed -n 's/.*"cmdline": *"\([^"]*\)".*/\1/p' "$floor/manifest.json" >"$out/cmdline"
  msg "floor initramfs written to $out"
  echo "$out"
  exit 0
fi

# --- the capsa binaries --------------------------------------------------------------
# Static musl builds from this workspace (or from --binaries DIR) into directory $1,
# checked to be static and smoke-run: natively, or under qemu-user for another
# architecture (the aarch64 binaries are tested that way on an x86_64 host).
build_binaries() {
  local dest=$1 b target_dir
  mkdir -p "$dest"
  if [[ -n $binaries ]]; then
    for b in capsa capsa-agent capsa-monitor; do
      [[ -f $binaries/$b ]] || die "$binaries/$b not found" "build it for $rust_target, or leave --binaries out"
      cp "$binaries/$b" "$dest/"
    done
  else
    step "cargo build --release --target $rust_target (capsa, capsa-monitor, capsa-agent)"
    command -v cargo >/dev/null || die "cargo not found" "install Rust with rustup, or pass --binaries DIR"
    rustup target list --installed 2>/dev/null | grep -qx "$rust_target" ||
      die "the Rust target $rust_target is not installed" "rustup target add $rust_target"
    if [[ $arch == aarch64 && $(uname -m) != aarch64 ]]; then
      # rust-lld links (the musl target brings its own crt and libc); ring's C and
      # assembly need a C cross compiler.
      export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld
      command -v aarch64-linux-gnu-gcc >/dev/null ||
        die "aarch64-linux-gnu-gcc not found (ring's C code needs a cross compiler)" "apt-get install gcc-aarch64-linux-gnu"
      export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
    fi
    # Without debug info in the image (the release profile keeps line tables for the
    # host's backtraces: about 40 MB of the root filesystem); symbols stay.
    (cd "$repo" && CARGO_PROFILE_RELEASE_STRIP=debuginfo \
      cargo build --release --quiet --target "$rust_target" -p capsa-cli -p capsa-monitor -p capsa-agent) ||
      die "cargo build for $rust_target failed" "for x86_64 musl, ring needs musl-gcc: apt-get install musl-tools"
    target_dir=${CARGO_TARGET_DIR:-$repo/target}
    for b in capsa capsa-agent capsa-monitor; do
      cp "$target_dir/$rust_target/release/$b" "$dest/"
    done
  fi
  for b in capsa capsa-agent capsa-monitor; do
    # A dynamic binary would look for a libc the guest does not have where musl wants it.
    if readelf -l "$dest/$b" 2>/dev/null | grep -q 'Requesting program interpreter'; then
      die "$dest/$b is dynamically linked" "build it for $rust_target (static musl)"
    fi
  done
  smoke "$dest"
}

# Runs each binary once: capsa prints its version, capsa-monitor refuses missing
# arguments with its own error, capsa-agent serves a unix socket whose first frame
# must be its Hello (9-byte header, then JSON naming the agent).
smoke() {
  local dir=$1 run=() tmp out agent_pid rc
  if [[ $(uname -m) != "$arch" ]]; then
    command -v "qemu-$arch-static" >/dev/null || {
      msg "warning: not smoke-running the $arch binaries: qemu-$arch-static not found (apt-get install qemu-user-static)"
      return 0
    }
    run=("qemu-$arch-static")
  fi
  step "smoke-running the $arch binaries${run:+ under ${run[0]}}"
  out=$("${run[@]}" "$dir/capsa" --version 2>&1) || die "capsa --version failed: $out"
  [[ $out == capsa* ]] || die "capsa --version printed: $out"
  rc=0; out=$("${run[@]}" "$dir/capsa-monitor" 2>&1) || rc=$?
  [[ $rc == 125 && $out == *"capsa-monitor: error"* ]] || die "capsa-monitor without arguments: exit $rc, $out"
  tmp=$(mktemp -d)
  "${run[@]}" "$dir/capsa-agent" --listen "unix:$tmp/agent.sock" 2>"$tmp/agent.err" &
  agent_pid=$!
  rc=0
  out=$(python3 - "$tmp/agent.sock" <<'EOF2'
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX)
for _ in range(200):
    try:
        s.connect(sys.argv[1])
        break
    except OSError:
        time.sleep(0.05)
s.settimeout(30)
b = b""
while len(b) < 9 or len(b) < 9 + struct.unpack(">I", b[:4])[0]:
    c = s.recv(65536)
    if not c:
        sys.exit("the agent closed the connection before its Hello frame")
    b += c
print(b[9:9 + struct.unpack(">I", b[:4])[0]].decode())
EOF2
  ) || rc=$?
  kill "$agent_pid" 2>/dev/null; wait "$agent_pid" 2>/dev/null || true
  [[ $rc == 0 && $out == *'"capsa-agent'* ]] || die "capsa-agent sent no Hello on its unix socket: $out $(cat "$tmp/agent.err")"
  rm -rf "$tmp"
  msg "smoke: $("${run[@]}" "$dir/capsa" --version 2>&1 | head -1); capsa-monitor runs; capsa-agent Hello: ${out:0:100}"
}

git_rev=$(git -C "$repo" rev-parse --short=8 HEAD 2>/dev/null || echo unknown)
version=${version:-$(date -u +%Y%m%d)-$git_rev}
out=${out:-${CARGO_TARGET_DIR:-$repo/target}/guest-image}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if ((binaries_only)); then
  dest=$out/capsa-bin-$version-$arch
  rm -rf "$dest"
  build_binaries "$dest"
  msg "binaries written to $dest"
  echo "$dest"
  exit 0
fi

# --- the image ---------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (mmdebstrap in root mode, device nodes)" "sudo $0 $*"
for t in mmdebstrap mkfs.erofs cpio depmod; do
  command -v "$t" >/dev/null || die "$t not found" "run scripts/setup.sh --test (or apt-get install mmdebstrap erofs-utils cpio kmod)"
done
# A foreign architecture's package scripts run under qemu-user through binfmt_misc.
# Debian's qemu-user-static ships the registration line; a fresh machine (or CI runner)
# has it installed but not registered, or binfmt_misc not even mounted.
ensure_binfmt() {
  local bm=/proc/sys/fs/binfmt_misc conf=/usr/lib/binfmt.d/qemu-$arch.conf
  local hint="apt-get install qemu-user-static, or build on an $arch host; --binaries-only builds and smoke-tests just the binaries"
  if [[ -e $bm/qemu-$arch ]]; then
    [[ $(head -1 "$bm/qemu-$arch") == enabled ]] || echo 1 >"$bm/qemu-$arch" ||
      die "cannot enable the binfmt_misc entry $bm/qemu-$arch" "$hint"
    return 0
  fi
  [[ -f $conf ]] || die "building the $arch image on $(uname -m) needs qemu-$arch-static registered with binfmt_misc, and $conf is missing" "$hint"
  if [[ ! -e $bm/register ]]; then
    mount -t binfmt_misc binfmt_misc "$bm" 2>/dev/null ||
      die "cannot mount binfmt_misc on $bm (needed to run the $arch packages' scripts under qemu-user)" \
        "in a container, run it privileged or register qemu-$arch on the host (its F flag makes it work inside containers); $hint"
  fi
  # The F flag (in Debian's line) opens the interpreter now, so it also works inside
  # mmdebstrap's chroot, where /usr/libexec/qemu-binfmt does not exist.
  sed -n '/^:/p' "$conf" >"$bm/register" 2>/dev/null ||
    die "cannot register qemu-$arch with binfmt_misc (writing $conf to $bm/register failed)" "$hint"
  [[ -e $bm/qemu-$arch ]] || die "registering qemu-$arch with binfmt_misc had no effect" "$hint"
  msg "registered qemu-$arch with binfmt_misc ($(sed -n 's/^interpreter //p' "$bm/qemu-$arch"))"
}
if [[ $(uname -m) != "$arch" ]]; then
  ensure_binfmt
fi
name=capsa-guest-$version-$arch
dest=$out/$name
msg "building $name in $out"

# Work on a private tmpfs: dpkg unpacks thousands of files, which this kind of machine's
# ext4 makes slow (shared/MACHINE-NOTES.md).
work=$(mktemp -d "${TMPDIR:-/tmp}/capsa-guest.XXXXXX")
cleanup() {
  mountpoint -q "$work" && umount -l "$work"
  rm -rf "$work"
}
trap cleanup EXIT
mount -t tmpfs -o size=4g,mode=0755 tmpfs "$work"
root=$work/root

# 1. The capsa binaries.
bins=$work/bin
build_binaries "$bins"

# 2. The root filesystem, kernel included, in one mmdebstrap run.
mirror=${CAPSA_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  mirror=$(sed -n 's/^URIs: *\(\S*debian\)\/*$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  [[ -n $mirror ]] || mirror=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\(\S*debian\)\/* bookworm .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -1)
  mirror=${mirror:-http://deb.debian.org/debian}
fi
security=${mirror%/debian}/debian-security
packages=$(sed -e 's/#.*//' -e "s/@ARCH@/$deb_arch/" "$recipe/packages.txt" | xargs | tr ' ' ,)
step "mmdebstrap bookworm $deb_arch from $mirror"
dpkgopts=()
for p in /usr/share/doc/\* /usr/share/man/\* /usr/share/info/\* /usr/share/locale/\* \
         /usr/share/lintian/\* /usr/share/linda/\* /usr/share/bug/\* /etc/kernel/postinst.d/\*; do
  dpkgopts+=(--dpkgopt="path-exclude=$p")
done
# Licences stay: the image is redistributed.
dpkgopts+=(--dpkgopt='path-include=/usr/share/doc/*/copyright')
# Downloaded packages are kept between builds (mmdebstrap's documented cache recipe).
# The merged-usr hook lays out /usr itself and installs usr-is-merged, which keeps out
# usrmerge and, with it, the whole of perl (25 MB).
cache=${CAPSA_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/capsa-guest-image/debs-$deb_arch}
mkdir -p "$cache"
mmdebstrap --mode=root --variant=essential --architectures="$deb_arch" --format=directory \
  --include="$packages" "${dpkgopts[@]}" --quiet \
  --skip=download/empty --skip=essential/unlink \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $cache /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives $cache" \
  bookworm "$root" \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main" ||
  die "mmdebstrap failed" "check that apt can reach $mirror (CAPSA_DEBIAN_MIRROR overrides it)"

# 3. Kernel and modules.
step "kernel and modules"
kver=$(basename "$(ls -d "$root"/lib/modules/*/ | head -1)")
[[ -f $root/boot/vmlinuz-$kver ]] || die "no kernel in the root filesystem ($root/boot/vmlinuz-$kver)"
mkdir -p "$work/out"
cp "$root/boot/vmlinuz-$kver" "$work/out/vmlinuz"
moddir=$root/lib/modules/$kver

# Prints the modules named in list files $@, each after its dependencies (modules.dep
# lists every dependency, deepest last), as paths relative to $moddir. Built-in modules
# are skipped; an unknown name fails the build.
declare -A dep_of seen builtin
while IFS=: read -r mod deps; do
  base=${mod##*/}; base=${base%.ko}; dep_of[${base//-/_}]="$mod:$deps"
done <"$moddir/modules.dep"
while read -r mod; do base=${mod##*/}; base=${base%.ko}; builtin[${base//-/_}]=1; done <"$moddir/modules.builtin"
closure() {
  local name entry mod deps d i arr
  while read -r name; do
    name=${name%%#*}; name=${name//[[:space:]]/}; name=${name//-/_}
    [[ -n $name ]] || continue
    entry=${dep_of[$name]:-}
    if [[ -z $entry ]]; then
      [[ -n ${builtin[$name]:-} ]] && continue
      die "module $name (from $(basename -a "$@" | xargs)) is not in kernel $kver"
    fi
    mod=${entry%%:*}; deps=${entry#*:}
    read -ra arr <<<"$deps"
    for ((i = ${#arr[@]} - 1; i >= 0; i--)); do
      d=${arr[i]}
      [[ -n ${seen[$d]:-} ]] || { seen[$d]=1; echo "$d"; }
    done
    [[ -n ${seen[$mod]:-} ]] || { seen[$mod]=1; echo "$mod"; }
  done < <(cat "$@")
}
# Each later list leaves out what an earlier stage has loaded already.
without() { grep -vxF -f <(printf '%s\n' "$@" | sed '/^$/d') || true; }
initrd_mods=$(closure "$recipe/modules-initrd.txt")
# modules-boot-<arch>.txt adds what only one architecture's machine has (the power
# button of QEMU's arm `virt` is a GPIO key, not ACPI's).
boot_lists=("$recipe/modules-boot.txt")
[[ -f $recipe/modules-boot-$arch.txt ]] && boot_lists+=("$recipe/modules-boot-$arch.txt")
boot_mods=$(closure "${boot_lists[@]}" | without $initrd_mods)
mount_mods=$(closure <(printf '9p\n9pnet_virtio\nvirtiofs\n') | without $initrd_mods $boot_mods)
extra_mods=$(closure "$recipe/modules-extra.txt")
keep=$work/keep-modules
printf '%s\n' $initrd_mods $boot_mods $extra_mods | sed '/^$/d' | sort -u >"$keep"
(cd "$moddir" && find kernel -name '*.ko' | LC_ALL=C sort | comm -23 - "$keep" | xargs -r rm -f)
find "$moddir/kernel" -type d -empty -delete
depmod -b "$root" "$kver"
mkdir -p "$root/usr/lib/capsa"
printf '%s\n' $boot_mods >"$root/usr/lib/capsa/modules.boot"
printf '%s\n' $mount_mods >"$root/usr/lib/capsa/modules.mounts"

# 4. Image contents: capsa binaries, init, user, version stamp; trimmed.
step "root filesystem contents"
install -m 0755 "$bins/capsa-agent" "$root/usr/bin/capsa-agent"
install -m 0755 "$bins/capsa" "$root/usr/bin/capsa"
install -D -m 0755 "$bins/capsa-monitor" "$root/usr/libexec/capsa/capsa-monitor"
install -m 0755 "$recipe/init" "$root/usr/sbin/capsa-init"
ln -sfn capsa-init "$root/usr/sbin/init"
install -m 0755 "$recipe/udhcpc.script" "$root/usr/lib/capsa/udhcpc.script"
echo "capsa-guest $version $arch" >"$root/etc/capsa-guest-release"
useradd --root "$root" --uid 1000 --user-group --home-dir /home/capsa --no-create-home \
  --shell /bin/bash --comment "capsa engine" capsa
# '*' (no password) rather than '!' (locked): dropbear refuses key logins to locked
# accounts.
usermod --root "$root" --password '*' capsa
usermod --root "$root" --password '*' root
echo "capsa:100000:65536" >"$root/etc/subuid"
echo "capsa:100000:65536" >"$root/etc/subgid"
mkdir -p "$root"/{etc/dropbear,etc/containers/registries.conf.d,var/lib/capsa,mnt/data,home}
: >"$root/etc/resolv.conf"
echo capsa >"$root/etc/hostname"
rm -rf "$root"/boot/* "$root"/var/cache/* "$root"/var/log/* "$root"/var/lib/apt/lists/* \
  "$root"/usr/lib/*-linux-gnu/tiny-initramfs "$root"/etc/machine-id "$root"/tmp/*
: >"$root/etc/machine-id"

# 5. Root filesystem image: erofs, lz4hc (fast to decompress under TCG).
step "rootfs.img (erofs, lz4hc)"
mkfs.erofs --quiet -zlz4hc -T "${SOURCE_DATE_EPOCH:-$(date -u +%s)}" "$work/out/rootfs.img" "$root" >/dev/null ||
  die "mkfs.erofs failed"

# 6. The initrd: busybox, the root disk's modules, our /init. Uncompressed: it is small
# and the kernel unpacks it without a decompressor.
step "initrd.img"
initrd=$work/initrd
initrd_base "$initrd" "$root/bin/busybox"
mkdir -p "$initrd/lib/modules"
for m in $initrd_mods; do
  install -D -m 0644 "$moddir/$m" "$initrd/lib/modules/$m"
done
printf '%s\n' $initrd_mods >"$initrd/lib/modules/modules.order"
sed 's/@ROOTFS_TYPE@/erofs/' "$recipe/initrd-init" >"$initrd/init"
chmod 0755 "$initrd/init"
make_cpio "$initrd" "$work/out/initrd.img"

# 7. Manifest, then the directory (and the release tar).
step "manifest.json"
cat >"$work/out/manifest.json" <<EOF
{
  "name": "capsa-guest",
  "version": "$version",
  "arch": "$arch",
  "cmdline": "$image_cmdline",
  "kernel": "$kver",
  "files": {
    "vmlinuz": "sha256:$(sha256_of "$work/out/vmlinuz")",
    "initrd.img": "sha256:$(sha256_of "$work/out/initrd.img")",
    "rootfs.img": "sha256:$(sha256_of "$work/out/rootfs.img")"
  }
}
EOF
rm -rf "$dest"
mkdir -p "$dest"
cp "$work/out"/{vmlinuz,initrd.img,rootfs.img,manifest.json} "$dest/"
if ((tar)); then
  tar -C "$out" -cf "$out/$name.tar" --owner=0 --group=0 --numeric-owner --sort=name "$name"
  (cd "$out" && sha256sum "$name.tar" >"$name.tar.sha256")
  msg "release tar: $out/$name.tar"
fi
sizes=$(cd "$dest" && du -h vmlinuz initrd.img rootfs.img | awk '{printf "%s %s, ", $2, $1}')
step "done: $dest (${sizes%, })"
echo "$dest"
