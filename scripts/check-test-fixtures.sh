#!/usr/bin/env bash
# End-to-end self-test of the test fixtures: builds the images, starts a
# registry in each mode (anon, htpasswd, token), pushes, and checks the
# result with skopeo and curl (media types, platforms, auth behaviour, token
# scopes, forged tokens), then stops everything.
#
#   scripts/check-test-fixtures.sh [OUTDIR]      (default: a temp dir)
#
# Prints one line per check and a closing "N passed, N failed" line; exits
# non-zero if any check failed.
set -euo pipefail
{ # parse the whole script before running it (safe if edited while running)

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
readonly PY=/usr/bin/python3
readonly ACCEPT_ALL='application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.docker.distribution.manifest.v2+json'

msg() { printf 'check-test-fixtures: %s\n' "$*" >&2; }

WORK=$(mktemp -d)
OUT=${1:-$WORK/images}
PASS=0
FAIL=0
REGDIRS=()

# shellcheck disable=SC2317  # invoked via trap
cleanup() {
  local d
  for d in "${REGDIRS[@]}"; do
    "$SCRIPT_DIR/test-registry.sh" stop "$d" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

ok() { PASS=$((PASS + 1)); printf 'ok   %s\n' "$*"; }
bad() { FAIL=$((FAIL + 1)); printf 'FAIL %s\n' "$*"; }
expect_eq() { # description want got
  if [[ $2 == "$3" ]]; then ok "$1"; else bad "$1: want '$2', got '$3'"; fi
}

# curl helpers -------------------------------------------------------------
AUTH=() # extra curl args for the registry
code() { curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$@"; }
get() { curl -sf "${AUTH[@]}" "$@"; }
manifest() { get -H "Accept: $ACCEPT_ALL" "$REGISTRY_URL/v2/$1/manifests/$2"; }
jqr() { jq -r "$1"; }

token_for() { # scope [curl args...]; prints token
  local scope=$1
  shift
  curl -sf "$@" "$TOKEN_REALM?service=$TOKEN_SERVICE&scope=$scope" | jq -r .token
}

# Build a JWT for our registry signed by a key that is not in its bundle.
forged_token() { # scope-repo
  "$PY" - "$WORK/forge" "$1" <<'EOF'
import base64, json, os, subprocess, sys, time
d, repo = sys.argv[1], sys.argv[2]
os.makedirs(d, exist_ok=True)
key, crt = d + "/k.pem", d + "/c.pem"
if not os.path.exists(key):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "2", "-subj",
                    "/CN=capsa-test-issuer"], check=True, capture_output=True)
der = subprocess.run(["openssl", "x509", "-in", crt, "-outform", "DER"],
                     check=True, capture_output=True).stdout
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
hdr = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
cl = {"iss": "capsa-test-issuer", "sub": "capsa", "aud": "capsa-test-registry",
      "exp": now + 300, "nbf": now - 1, "iat": now, "jti": "forged",
      "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}]}
si = b64(json.dumps(hdr).encode()) + "." + b64(json.dumps(cl).encode())
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=si.encode(),
                     check=True, capture_output=True).stdout
print(si + "." + b64(sig))
EOF
}

# Replace the claims of a genuine token (keeping header and signature).
tampered_token() { # token repo
  "$PY" - "$1" "$2" <<'EOF'
import base64, json, sys
h, p, s = sys.argv[1].split(".")
claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
claims["access"] = [{"type": "repository", "name": sys.argv[2], "actions": ["pull", "push"]}]
p2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
print(h + "." + p2 + "." + s)
EOF
}

start_mode() { # mode -> sources env
  local dir=$WORK/reg-$1
  REGDIRS+=("$dir")
  "$SCRIPT_DIR/test-registry.sh" start "$1" "$dir"
  unset REGISTRY REGISTRY_URL REGISTRY_USER REGISTRY_PASS TOKEN_REALM TOKEN_SERVICE
  # shellcheck disable=SC1091
  source "$dir/env"
  expect_eq "$1: env REGISTRY_MODE" "$1" "$REGISTRY_MODE"
}

stop_mode() { # mode
  local dir=$WORK/reg-$1 pid
  pid=$(<"$dir/registry.pid")
  "$SCRIPT_DIR/test-registry.sh" stop "$dir"
  "$SCRIPT_DIR/test-registry.sh" stop "$dir"
  if kill -0 "$pid" 2>/dev/null; then bad "$1: registry still running after stop"; else ok "$1: stop (twice) kills registry"; fi
  expect_eq "$1: port closed after stop" 000 "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$REGISTRY_URL/v2/" || true)"
}

# ---------------------------------------------------------------------------
t0=$(date +%s%3N)
"$SCRIPT_DIR/build-test-images.sh" "$OUT"
msg "build took $(($(date +%s%3N) - t0)) ms"
if [[ -s $OUT/layers.expected ]]; then ok "layers.expected written"; else bad "layers.expected missing"; fi

# --- anon --------------------------------------------------------------------
start_mode anon
expect_eq "anon: GET /v2/" 200 "$(code "$REGISTRY_URL/v2/")"
t0=$(date +%s%3N)
"$SCRIPT_DIR/push-test-images.sh" "$OUT" "$REGISTRY"
msg "push (all but debian) took $(($(date +%s%3N) - t0)) ms"

m=$(manifest busybox latest)
expect_eq "busybox:latest is an OCI manifest" application/vnd.oci.image.manifest.v1+json "$(jqr .mediaType <<<"$m")"
expect_eq "busybox:latest has one gzip layer" "application/vnd.oci.image.layer.v1.tar+gzip" "$(jqr '[.layers[].mediaType]|join(",")' <<<"$m")"
cfg=$(get "$REGISTRY_URL/v2/busybox/blobs/$(jqr .config.digest <<<"$m")")
expect_eq "busybox config Cmd" '["sh"]' "$(jq -c .config.Cmd <<<"$cfg")"
expect_eq "busybox config label" busybox "$(jqr '.config.Labels["org.capsa.test"]' <<<"$cfg")"
expect_eq "busybox config arch/os" amd64/linux "$(jqr '.architecture + "/" + .os' <<<"$cfg")"
expect_eq "busybox history entries = layers" 1 "$(jqr '.history|length' <<<"$cfg")"
layer=$(jqr '.layers[0].digest' <<<"$m")
listing=$(get "$REGISTRY_URL/v2/busybox/blobs/$layer" | tar -tvzf -)
for f in 'bin/sh -> busybox' 'bin/httpd -> busybox' 'etc/passwd' 'etc/group'; do
  if grep -F -- "$f" <<<"$listing" >/dev/null; then ok "busybox layer has $f"; else bad "busybox layer lacks $f"; fi
done
if grep -qE '^drwxrwxrwt .* tmp/$' <<<"$listing"; then ok "busybox /tmp is 1777"; else bad "busybox /tmp mode"; fi
expect_eq "busybox:v2s2 is docker schema 2" application/vnd.docker.distribution.manifest.v2+json "$(manifest busybox v2s2 | jqr .mediaType)"
expect_eq "public/busybox:latest = busybox:latest" "$m" "$(manifest public/busybox latest)"
expect_eq "skopeo inspect busybox:latest" amd64 "$(skopeo --insecure-policy inspect --tls-verify=false "docker://$REGISTRY/busybox:latest" | jqr .Architecture)"

m=$(manifest layers latest)
expect_eq "layers:latest has 3 layers" 3 "$(jqr '.layers|length' <<<"$m")"
l2=$(get "$REGISTRY_URL/v2/layers/blobs/$(jqr '.layers[1].digest' <<<"$m")" | tar -tzf -)
for f in data/.wh.b data/sub/.wh..wh..opq data/sub/new data/c; do
  if grep -qx -- "$f" <<<"$l2"; then ok "layers layer 2 has $f"; else bad "layers layer 2 lacks $f"; fi
done

idx=$(manifest multiarch latest)
expect_eq "multiarch:latest is an OCI index" application/vnd.oci.image.index.v1+json "$(jqr .mediaType <<<"$idx")"
expect_eq "multiarch platforms" "linux/amd64,linux/arm64/v8" "$(jqr '[.manifests[].platform|[.os,.architecture,.variant // empty]|join("/")]|join(",")' <<<"$idx")"
for arch in amd64 arm64; do
  dg=$(jqr ".manifests[]|select(.platform.architecture==\"$arch\")|.digest" <<<"$idx")
  mm=$(manifest multiarch "$dg")
  content=$(get "$REGISTRY_URL/v2/multiarch/blobs/$(jqr '.layers[0].digest' <<<"$mm")" | tar -xzOf - etc/arch)
  expect_eq "multiarch $arch variant /etc/arch" "$arch" "$content"
  expect_eq "skopeo --override-arch $arch picks $arch" "$arch" \
    "$(skopeo --insecure-policy --override-arch "$arch" inspect --tls-verify=false "docker://$REGISTRY/multiarch:latest" | jqr .Architecture)"
done
armm=$(manifest multiarch "$(jqr '.manifests[]|select(.platform.architecture=="arm64")|.digest' <<<"$idx")")
get "$REGISTRY_URL/v2/multiarch/blobs/$(jqr '.layers[0].digest' <<<"$armm")" -o "$WORK/arm64.tgz"
if tar -tzf "$WORK/arm64.tgz" | grep -x bin/busybox >/dev/null; then
  ok "multiarch arm64 variant contains bin/busybox"
else
  msg "note: arm64 variant is the /etc/arch-only placeholder"
fi

declare -A want_mt=([gzip]=application/vnd.oci.image.layer.v1.tar+gzip
  [zstd]=application/vnd.oci.image.layer.v1.tar+zstd
  [none]=application/vnd.oci.image.layer.v1.tar)
for t in gzip zstd none; do
  mm=$(manifest compress "$t")
  expect_eq "compress:$t layer media type" "${want_mt[$t]}" "$(jqr '.layers[0].mediaType' <<<"$mm")"
  get "$REGISTRY_URL/v2/compress/blobs/$(jqr '.layers[0].digest' <<<"$mm")" -o "$WORK/blob"
  blob=$(od -An -tx1 -N4 "$WORK/blob" | tr -d ' \n')
  case $t in
    gzip) expect_eq "compress:gzip blob magic" 1f8b "${blob:0:4}" ;;
    zstd) expect_eq "compress:zstd blob magic" 28b52ffd "$blob" ;;
    none) expect_eq "compress:none blob is a tar (diff_id = digest)" \
      "$(jqr '.layers[0].digest' <<<"$mm")" \
      "$(get "$REGISTRY_URL/v2/compress/blobs/$(jqr .config.digest <<<"$mm")" | jqr '.rootfs.diff_ids[0]')" ;;
  esac
done
if "$SCRIPT_DIR/push-test-images.sh" "$OUT" "$REGISTRY" --only busybox 2>/dev/null; then
  ok "re-push is idempotent"
else
  bad "re-push failed"
fi
stop_mode anon

# --- htpasswd ----------------------------------------------------------------
start_mode htpasswd
expect_eq "htpasswd: GET /v2/ without creds" 401 "$(code "$REGISTRY_URL/v2/")"
expect_eq "htpasswd: GET /v2/ with creds" 200 "$(code -u "$REGISTRY_USER:$REGISTRY_PASS" "$REGISTRY_URL/v2/")"
expect_eq "htpasswd: GET /v2/ wrong password" 401 "$(code -u "$REGISTRY_USER:wrong" "$REGISTRY_URL/v2/")"
if "$SCRIPT_DIR/push-test-images.sh" "$OUT" "$REGISTRY" --only busybox 2>/dev/null; then
  bad "htpasswd: push without creds succeeded"
else
  ok "htpasswd: push without creds fails"
fi
"$SCRIPT_DIR/push-test-images.sh" "$OUT" "$REGISTRY" --creds "$REGISTRY_USER:$REGISTRY_PASS" --only busybox
AUTH=(-u "$REGISTRY_USER:$REGISTRY_PASS")
expect_eq "htpasswd: busybox:latest media type" application/vnd.oci.image.manifest.v1+json "$(manifest busybox latest | jqr .mediaType)"
AUTH=()
expect_eq "htpasswd: skopeo inspect with creds" busybox \
  "$(skopeo --insecure-policy inspect --tls-verify=false --creds "$REGISTRY_USER:$REGISTRY_PASS" "docker://$REGISTRY/busybox:latest" | jqr '.Labels["org.capsa.test"]')"
stop_mode htpasswd

# --- token -------------------------------------------------------------------
start_mode token
www=$(curl -sI "$REGISTRY_URL/v2/busybox/manifests/latest" | tr -d '\r' | grep -i '^www-authenticate:' || true)
expect_eq "token: challenge names realm" "1" "$(grep -c "Bearer realm=\"$TOKEN_REALM\",service=\"$TOKEN_SERVICE\",scope=\"repository:busybox:pull\"" <<<"$www")"
"$SCRIPT_DIR/push-test-images.sh" "$OUT" "$REGISTRY" --creds "$REGISTRY_USER:$REGISTRY_PASS" --only busybox,multiarch
U=(-u "$REGISTRY_USER:$REGISTRY_PASS")
tok=$(token_for "repository:busybox:pull,push" "${U[@]}")
claims=$("$PY" -c 'import base64,json,sys; p=sys.argv[1].split(".")[1]; print(base64.urlsafe_b64decode(p+"="*(-len(p)%4)).decode())' "$tok")
expect_eq "token: capsa granted pull,push" '[{"type":"repository","name":"busybox","actions":["pull","push"]}]' "$(jq -c .access <<<"$claims")"
resp=$(curl -sf "${U[@]}" "$TOKEN_REALM?service=$TOKEN_SERVICE&scope=repository:busybox:pull&account=capsa")
expect_eq "token: response fields" "true true 300 true" "$(jqr '[(.token|length>0), (.access_token==.token), .expires_in, (.issued_at|test("Z$"))]|map(tostring)|join(" ")' <<<"$resp")"
AUTH=(-H "Authorization: Bearer $tok")
expect_eq "token: manifest with capsa token" application/vnd.oci.image.manifest.v1+json "$(manifest busybox latest | jqr .mediaType)"
expect_eq "token: capsa token not valid for other repo" 401 "$(code -H "Accept: $ACCEPT_ALL" "$REGISTRY_URL/v2/multiarch/manifests/latest")"
ptok=$(token_for "repository:busybox:pull" "${U[@]}")
AUTH=(-H "Authorization: Bearer $ptok")
expect_eq "token: pull-only token cannot start upload" 401 "$(code -X POST "$REGISTRY_URL/v2/busybox/blobs/uploads/")"
AUTH=(-H "Authorization: Bearer $tok")
expect_eq "token: pull,push token can start upload" 202 "$(code -X POST "$REGISTRY_URL/v2/busybox/blobs/uploads/")"
atok=$(token_for "repository:public/busybox:pull,push&scope=repository:busybox:pull")
aclaims=$("$PY" -c 'import base64,json,sys; p=sys.argv[1].split(".")[1]; print(base64.urlsafe_b64decode(p+"="*(-len(p)%4)).decode())' "$atok")
expect_eq "token: anonymous granted only pull on public/" '[{"type":"repository","name":"public/busybox","actions":["pull"]}]' "$(jq -c .access <<<"$aclaims")"
AUTH=(-H "Authorization: Bearer $atok")
expect_eq "token: anonymous pull public/busybox" 200 "$(code -H "Accept: $ACCEPT_ALL" "$REGISTRY_URL/v2/public/busybox/manifests/latest")"
expect_eq "token: anonymous pull busybox denied" 401 "$(code -H "Accept: $ACCEPT_ALL" "$REGISTRY_URL/v2/busybox/manifests/latest")"
expect_eq "token: anonymous push public/busybox denied" 401 "$(code -X POST "$REGISTRY_URL/v2/public/busybox/blobs/uploads/")"
AUTH=()
expect_eq "token: wrong password -> 401 from token server" 401 "$(code -u "$REGISTRY_USER:wrong" "$TOKEN_REALM?service=$TOKEN_SERVICE&scope=repository:busybox:pull")"
expect_eq "token: unknown user -> 401 from token server" 401 "$(code -u "nobody:x" "$TOKEN_REALM?service=$TOKEN_SERVICE&scope=repository:busybox:pull")"
ftok=$(forged_token busybox)
AUTH=(-H "Authorization: Bearer $ftok")
expect_eq "token: forged token (foreign key) rejected" 401 "$(code -H "Accept: $ACCEPT_ALL" "$REGISTRY_URL/v2/busybox/manifests/latest")"
ttok=$(tampered_token "$ptok" multiarch)
AUTH=(-H "Authorization: Bearer $ttok")
expect_eq "token: tampered claims rejected" 401 "$(code -H "Accept: $ACCEPT_ALL" "$REGISTRY_URL/v2/multiarch/manifests/latest")"
AUTH=()
post=$(curl -sf -d "grant_type=password&username=$REGISTRY_USER&password=$REGISTRY_PASS&service=$TOKEN_SERVICE&scope=repository:busybox:pull&client_id=capsa" "$TOKEN_REALM" | jqr .access_token)
AUTH=(-H "Authorization: Bearer $post")
expect_eq "token: OAuth2 POST password grant token works" 200 "$(code -H "Accept: $ACCEPT_ALL" "$REGISTRY_URL/v2/busybox/manifests/latest")"
AUTH=()
expect_eq "token: skopeo inspect with creds (multiarch index)" 2 \
  "$(skopeo --insecure-policy inspect --raw --tls-verify=false --creds "$REGISTRY_USER:$REGISTRY_PASS" "docker://$REGISTRY/multiarch:latest" | jqr '.manifests|length')"
expect_eq "token: skopeo anonymous inspect public/busybox" busybox \
  "$(skopeo --insecure-policy inspect --tls-verify=false --no-creds "docker://$REGISTRY/public/busybox:latest" | jqr '.Labels["org.capsa.test"]')"
if skopeo --insecure-policy inspect --tls-verify=false --no-creds "docker://$REGISTRY/busybox:latest" >/dev/null 2>&1; then
  bad "token: skopeo anonymous inspect busybox should fail"
else
  ok "token: skopeo anonymous inspect busybox fails"
fi
tpid=$(<"$WORK/reg-token/token-server.pid")
stop_mode token
if kill -0 "$tpid" 2>/dev/null; then bad "token: token server still running"; else ok "token: token server stopped"; fi

echo "$PASS passed, $FAIL failed"
[[ $FAIL -eq 0 ]]
exit
}
