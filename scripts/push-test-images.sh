#!/usr/bin/env bash
# Push the test images built by scripts/build-test-images.sh to a registry.
#
#   scripts/push-test-images.sh OUTDIR REGISTRY [--creds USER:PASS]
#       [--only NAME[,NAME...]]... [--with-debian]
#
# REGISTRY is host:port (plain HTTP is fine: --dest-tls-verify=false).
# NAME is one of: busybox layers multiarch compress debian.
#   busybox    -> busybox:latest (OCI), busybox:v2s2 (Docker schema 2),
#                 public/busybox:latest (for anonymous pulls in token mode)
#   layers     -> layers:latest
#   multiarch  -> multiarch:latest (OCI index, pushed with --all)
#   compress   -> compress:gzip, compress:zstd, compress:none
#   debian     -> debian:bookworm (only with --with-debian or --only debian;
#                 needs `build-test-images.sh OUTDIR --with-debian` first)
# OCI images are pushed with --preserve-digests, so the manifest digests in
# the registry are the ones in OUTDIR/<name>/index.json (checked after push).
set -euo pipefail
{ # parse the whole script before running it (safe if edited while running)

msg() { printf 'push-test-images: %s\n' "$*" >&2; }
die() { msg "error: $*"; exit 1; }
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }

OUT=
REG=
CREDS=
ONLY=()
WITH_DEBIAN=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --creds) [[ $# -ge 2 ]] || usage; CREDS=$2; shift ;;
    --creds=*) CREDS=${1#--creds=} ;;
    --only) [[ $# -ge 2 ]] || usage; IFS=, read -r -a names <<<"$2"; ONLY+=("${names[@]}"); shift ;;
    --only=*) IFS=, read -r -a names <<<"${1#--only=}"; ONLY+=("${names[@]}") ;;
    --with-debian) WITH_DEBIAN=1 ;;
    -h | --help) usage ;;
    -*) die "unknown option $1" ;;
    *)
      if [[ -z $OUT ]]; then OUT=$1
      elif [[ -z $REG ]]; then REG=$1
      else usage
      fi
      ;;
  esac
  shift
done
[[ -n $OUT && -n $REG ]] || usage
[[ -d $OUT ]] || die "$OUT does not exist (run scripts/build-test-images.sh $OUT first)"
command -v skopeo >/dev/null || die "skopeo not found"
REG=${REG#http://}
REG=${REG%/}

if [[ ${#ONLY[@]} -eq 0 ]]; then
  ONLY=(busybox layers multiarch compress)
  ((WITH_DEBIAN)) && ONLY+=(debian)
fi

DEST_AUTH=()
SRC_AUTH=()
if [[ -n $CREDS ]]; then
  DEST_AUTH=(--dest-creds "$CREDS")
  SRC_AUTH=(--creds "$CREDS")
fi

layout_digest() { # layout ref
  /usr/bin/python3 - "$1" "$2" <<'EOF'
import json, sys
idx = json.load(open(sys.argv[1] + "/index.json"))
for m in idx["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]:
        print(m["digest"])
        break
else:
    sys.exit("no ref %s in %s" % (sys.argv[2], sys.argv[1]))
EOF
}

remote_raw() { # repo:tag
  skopeo --insecure-policy inspect --raw --tls-verify=false "${SRC_AUTH[@]}" \
    --retry-times 3 "docker://$REG/$1"
}

# copy LAYOUT REF DEST [extra skopeo args...]
copy() {
  local name=$1 layout=$OUT/$1 ref=$2 dest=$3 want got
  shift 3
  [[ -f $layout/index.json ]] || die "$layout missing (run scripts/build-test-images.sh $OUT)"
  msg "pushing $name:$ref -> $REG/$dest${*:+ ($*)}"
  skopeo --insecure-policy copy --quiet --retry-times 3 --dest-tls-verify=false \
    "${DEST_AUTH[@]}" "$@" "oci:$layout:$ref" "docker://$REG/$dest" >&2
  if [[ " $* " == *" --preserve-digests "* ]]; then
    want=$(layout_digest "$layout" "$ref")
    got=sha256:$(remote_raw "$dest" | sha256sum | cut -d' ' -f1)
    [[ $want == "$got" ]] || die "$REG/$dest has manifest $got, expected $want"
  fi
}

start=$(date +%s)
for name in "${ONLY[@]}"; do
  case $name in
    busybox)
      copy busybox latest busybox:latest --preserve-digests
      copy busybox latest public/busybox:latest --preserve-digests
      copy busybox latest busybox:v2s2 --format v2s2
      mt=$(remote_raw busybox:v2s2 | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["mediaType"])')
      [[ $mt == application/vnd.docker.distribution.manifest.v2+json ]] ||
        die "busybox:v2s2 has media type $mt"
      ;;
    layers) copy layers latest layers:latest --preserve-digests ;;
    multiarch) copy multiarch latest multiarch:latest --all --preserve-digests ;;
    compress)
      for t in gzip zstd none; do
        copy compress "$t" "compress:$t" --preserve-digests
      done
      ;;
    debian)
      [[ -f $OUT/debian/index.json ]] ||
        die "no debian layout: run scripts/build-test-images.sh $OUT --with-debian"
      copy debian bookworm debian:bookworm --preserve-digests
      ;;
    *) die "unknown image name '$name' (busybox layers multiarch compress debian)" ;;
  esac
done
msg "pushed ${ONLY[*]} to $REG in $(($(date +%s) - start))s"
exit
}
