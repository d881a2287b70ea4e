#!/usr/bin/env bash
# Build capsa's test images as OCI image layouts under OUTDIR (cached).
#
#   scripts/build-test-images.sh OUTDIR [--with-debian] [--force]
#
# Writes OUTDIR/{busybox,layers,multiarch,compress}[,debian] (one OCI image
# layout per repository, tags as org.opencontainers.image.ref.name) and
# OUTDIR/layers.expected.  Inputs are cached in OUTDIR/cache:
#   busybox-amd64      /bin/busybox of the installed busybox-static package
#                      (or extracted from `apt-get download busybox-static`)
#   busybox-arm64      from Debian's busybox-static arm64 .deb, fetched with a
#                      private apt state dir (the system's apt config and
#                      dpkg architectures are not touched); if that fails the
#                      arm64 variant of multiarch:latest is a placeholder
#                      layer holding only /etc/arch
#   debian-bookworm-minbase.tar   `mmdebstrap --variant=minbase bookworm`
#                      (only with --with-debian; slow, for benchmarks)
# Set CAPSA_FIXTURE_CACHE=DIR to keep these inputs in a shared directory
# instead.  Re-running with unchanged inputs does nothing.  Push with
# scripts/push-test-images.sh.
set -euo pipefail
{ # parse the whole script before running it (safe if edited while running)

readonly PY=/usr/bin/python3
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
readonly SOURCE_DATE_EPOCH=1704067200
export SOURCE_DATE_EPOCH

msg() { printf 'build-test-images: %s\n' "$*" >&2; }
die() { msg "error: $*"; exit 1; }
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }

OUT=
WITH_DEBIAN=0
FORCE=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --with-debian) WITH_DEBIAN=1 ;;
    --force) FORCE=(--force) ;;
    -h | --help) usage ;;
    -*) die "unknown option $1" ;;
    *) [[ -z $OUT ]] || usage; OUT=$1 ;;
  esac
  shift
done
[[ -n $OUT ]] || usage
for tool in zstd dpkg-deb apt-get; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CACHE=${CAPSA_FIXTURE_CACHE:-$OUT/cache}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

# Extract bin/busybox from a busybox-static .deb to $2.
extract_busybox() { # deb dest
  local tmp
  tmp=$(mktemp -d)
  dpkg-deb -x "$1" "$tmp"
  [[ -x $tmp/bin/busybox ]] || { rm -rf "$tmp"; die "no bin/busybox in $1"; }
  cp "$tmp/bin/busybox" "$2.tmp"
  mv "$2.tmp" "$2"
  rm -rf "$tmp"
}

# Private apt: own lists/cache/status, only Debian's sources, extra arch.
private_apt() { # arch args...
  local arch=$1 dir=$CACHE/apt-$1
  shift
  mkdir -p "$dir/lists/partial" "$dir/archives/partial"
  : >"$dir/status"
  apt-get -q \
    -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch" \
    -o "Dir::State::Lists=$dir/lists" -o "Dir::State::status=$dir/status" \
    -o "Dir::Cache=$dir" -o "Dir::Cache::archives=$dir/archives" \
    -o Dir::Etc::SourceList=/etc/apt/sources.list \
    -o Dir::Etc::SourceParts=/etc/apt/sources.list.d \
    -o Acquire::Languages=none -o Debug::NoLocking=1 \
    -o APT::Sandbox::User=root \
    "$@"
}

fetch_deb() { # arch package -> prints path of .deb in $CACHE
  local arch=$1 pkg=$2 deb
  deb=$(find "$CACHE" -maxdepth 1 -name "${pkg}_*_${arch}.deb" | head -n1)
  if [[ -n $deb ]]; then
    echo "$deb"
    return 0
  fi
  msg "downloading $pkg:$arch with a private apt state dir"
  private_apt "$arch" update >&2 || return 1
  (cd "$CACHE" && private_apt "$arch" download "$pkg:$arch" >&2) || return 1
  rm -rf "$CACHE/apt-$arch"
  deb=$(find "$CACHE" -maxdepth 1 -name "${pkg}_*_${arch}.deb" | head -n1)
  [[ -n $deb ]] && echo "$deb"
}

# --- busybox amd64 ---------------------------------------------------------
BB_VERSION=$(dpkg-query -W -f='${Version}' busybox-static:amd64 2>/dev/null || true)
if [[ ! -s $CACHE/busybox-amd64 ]]; then
  if [[ -n $BB_VERSION && -x /bin/busybox ]]; then
    msg "using /bin/busybox from installed busybox-static $BB_VERSION"
    cp /bin/busybox "$CACHE/busybox-amd64.tmp"
    mv "$CACHE/busybox-amd64.tmp" "$CACHE/busybox-amd64"
  else
    deb=$(fetch_deb amd64 busybox-static) || die "cannot get busybox-static amd64"
    extract_busybox "$deb" "$CACHE/busybox-amd64"
  fi
fi
if [[ -z $BB_VERSION ]]; then
  BB_VERSION=$(find "$CACHE" -maxdepth 1 -name 'busybox-static_*_amd64.deb' -printf '%f\n' |
    sed -n 's/^busybox-static_\(.*\)_amd64\.deb$/\1/p' | sed 's/%3a/:/' | head -n1)
fi

# --- busybox arm64 ---------------------------------------------------------
ARM_ARGS=()
if [[ ! -s $CACHE/busybox-arm64 ]]; then
  if deb=$(fetch_deb arm64 busybox-static); then
    extract_busybox "$deb" "$CACHE/busybox-arm64"
  else
    msg "warning: could not fetch busybox-static:arm64; multiarch arm64 variant will only hold /etc/arch"
  fi
fi
if [[ -s $CACHE/busybox-arm64 ]]; then
  ARM_ARGS=(--busybox-arm64 "$CACHE/busybox-arm64")
fi

# --- debian:bookworm rootfs ------------------------------------------------
DEB_ARGS=()
if ((WITH_DEBIAN)); then
  tarball=$CACHE/debian-bookworm-minbase.tar
  if [[ ! -s $tarball ]]; then
    command -v mmdebstrap >/dev/null || die "mmdebstrap not found"
    msg "running mmdebstrap --variant=minbase bookworm (slow)"
    # Like Docker's debian:bookworm-slim: no docs, man/info pages, locales.
    mmdebstrap --quiet --variant=minbase --architectures=amd64 --format=tar \
      --aptopt='Acquire::Languages "none"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      bookworm "$tarball.part" >&2
    mv "$tarball.part" "$tarball"
  fi
  DEB_ARGS=(--debian-tar "$tarball")
fi

"$PY" "$SCRIPT_DIR/build-test-images.py" --out "$OUT" \
  --busybox-amd64 "$CACHE/busybox-amd64" --busybox-version "${BB_VERSION:-unknown}" \
  "${ARM_ARGS[@]}" "${DEB_ARGS[@]}" "${FORCE[@]}"
msg "images ready in $OUT"
exit
}
