#!/usr/bin/python3
"""Minimal Docker registry token server (test fixture for capsa).

Implements the token endpoint of the Docker Registry v2 token authentication
spec ("Docker Hub / GHCR flow"):

    GET  /token?service=SVC&scope=repository:NAME:pull,push[&scope=...][&account=USER]
         optional "Authorization: Basic ..." header
    POST /token   (OAuth2 form: grant_type=password|refresh_token, username,
                   password, refresh_token, service, scope="s1 s2", client_id)

Tokens are JWTs signed RS256 by shelling out to `openssl dgst -sha256 -sign`.
At start-up an RSA key and a self-signed certificate are generated in
--dir (token.key / token.crt) unless they already exist; the certificate is
placed in the JWT header `x5c`, so docker-registry verifies it against its
`auth.token.rootcertbundle` (point that at DIR/token.crt).

Grant rules (so that scoped tokens are really exercised):
  * user `capsa` with password `capsa-secret`: every action asked for
  * anonymous (no Authorization): only `pull` on repositories under `public/`
  * any other credentials: HTTP 401

Python 3 stdlib only.  Usage:
    token-server.py --dir DIR [--port 0] [--host 127.0.0.1]
        [--issuer capsa-test-issuer] [--service capsa-test-registry]
The chosen port is written to DIR/token-server.port once it listens.
"""

import argparse
import base64
import binascii
import datetime
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

USERS = {"capsa": "capsa-secret"}
PUBLIC_PREFIX = "public/"
EXPIRES_IN = 300


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def log(msg: str) -> None:
    sys.stderr.write("token-server: %s\n" % msg)
    sys.stderr.flush()


def ensure_key_and_cert(directory: str, issuer: str) -> None:
    key = os.path.join(directory, "token.key")
    crt = os.path.join(directory, "token.crt")
    if os.path.exists(key) and os.path.exists(crt):
        return
    log("generating RSA key and self-signed certificate in %s" % directory)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", key + ".tmp", "-out", crt + ".tmp",
         "-days", "3650", "-sha256", "-subj", "/CN=%s" % issuer],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.chmod(key + ".tmp", 0o600)
    os.replace(key + ".tmp", key)
    os.replace(crt + ".tmp", crt)


def cert_der_b64(crt_path: str) -> str:
    der = subprocess.run(
        ["openssl", "x509", "-in", crt_path, "-outform", "DER"],
        check=True, stdout=subprocess.PIPE).stdout
    return base64.b64encode(der).decode("ascii")


def parse_scope(scope: str):
    """'repository:name:pull,push' -> ('repository', 'name', ['pull','push']).

    The type may carry a class ('repository(plugin)'); the name may not contain
    ':' except for a registry host with port, so split on the first and last
    colon."""
    first = scope.find(":")
    last = scope.rfind(":")
    if first < 0 or last == first:
        return None
    typ = scope[:first]
    name = scope[first + 1:last]
    actions = [a for a in scope[last + 1:].split(",") if a]
    if not typ or not name:
        return None
    return typ, name, actions


def grant(user, typ, name, actions):
    """Return the list of actions granted to `user` (None = anonymous)."""
    if user is not None:
        return list(dict.fromkeys(actions))  # everything asked, de-duplicated
    base_type = typ.split("(", 1)[0]
    if base_type == "repository" and name.startswith(PUBLIC_PREFIX):
        return ["pull"] if "pull" in actions else []
    return []


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, opts):
        super().__init__(addr, handler)
        self.opts = opts
        self.key_path = os.path.join(opts.dir, "token.key")
        self.x5c = [cert_der_b64(os.path.join(opts.dir, "token.crt"))]
        self.sign_lock = threading.Lock()

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode())
                         + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key_path],
            input=signing_input.encode("ascii"), check=True,
            stdout=subprocess.PIPE).stdout
        return signing_input + "." + b64url(sig)


class Handler(BaseHTTPRequestHandler):
    server_version = "capsa-test-token-server/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # noqa: N802 (stdlib API)
        log("%s %s" % (self.address_string(), fmt % args))

    # -- helpers ---------------------------------------------------------
    def send_json(self, code: int, obj: dict, extra_headers=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def unauthorized(self, msg: str):
        self.send_json(401, {"errors": [{"code": "UNAUTHORIZED", "message": msg}]},
                       {"WWW-Authenticate": 'Basic realm="capsa-test-token-server"'})

    def basic_user(self):
        """Return (ok, user). ok=False means bad credentials were presented."""
        auth = self.headers.get("Authorization")
        if not auth:
            return True, None
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        user, sep, password = decoded.partition(":")
        if not sep or USERS.get(user) != password:
            return False, None
        return True, user

    def issue(self, user, service, scopes, refresh=False):
        opts = self.server.opts
        if service and service != opts.service:
            self.send_json(400, {"errors": [{"code": "DENIED",
                                             "message": "unknown service %r" % service}]})
            return
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                self.send_json(400, {"errors": [{"code": "DENIED",
                                                 "message": "bad scope %r" % scope}]})
                return
            typ, name, actions = parsed
            granted = grant(user, typ, name, actions)
            if granted:
                access.append({"type": typ, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": opts.issuer,
            "sub": user or "",
            "aud": opts.service,
            "exp": now + EXPIRES_IN,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        with self.server.sign_lock:
            token = self.server.sign(claims)
        issued = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        body = {
            "token": token,
            "access_token": token,
            "expires_in": EXPIRES_IN,
            "issued_at": issued.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if refresh and user is not None:
            # Stateless refresh token: the user name, only honoured for known users.
            body["refresh_token"] = "capsa-refresh:" + user
        log("issued token sub=%r access=%s" % (user, json.dumps(access)))
        self.send_json(200, body)

    # -- endpoints -------------------------------------------------------
    def do_GET(self):  # noqa: N802
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self.send_json(200, {"ok": True})
            return
        if url.path != "/token":
            self.send_json(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
            return
        q = parse_qs(url.query, keep_blank_values=True)
        ok, user = self.basic_user()
        if not ok:
            self.unauthorized("invalid credentials")
            return
        account = (q.get("account") or [""])[0]
        if account and user is not None and account != user:
            self.unauthorized("account does not match credentials")
            return
        scopes = []
        for s in q.get("scope", []):
            scopes.extend(x for x in s.split(" ") if x)
        offline = (q.get("offline_token") or [""])[0] == "true"
        self.issue(user, (q.get("service") or [""])[0], scopes, refresh=offline)

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        url = urlsplit(self.path)
        if url.path != "/token":
            self.send_json(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
            return
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode("utf-8"), keep_blank_values=True)

        def f(key):
            return (form.get(key) or [""])[0]

        grant_type = f("grant_type")
        if grant_type == "password":
            user = f("username")
            if USERS.get(user) != f("password"):
                self.unauthorized("invalid credentials")
                return
        elif grant_type == "refresh_token":
            rt = f("refresh_token")
            user = rt.partition(":")[2] if rt.startswith("capsa-refresh:") else ""
            if user not in USERS:
                self.unauthorized("invalid refresh token")
                return
        else:
            self.send_json(400, {"error": "unsupported_grant_type"})
            return
        scopes = [x for s in form.get("scope", []) for x in s.split(" ") if x]
        self.issue(user, f("service"), scopes, refresh=f("access_type") == "offline")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="directory for key, cert, port file")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--issuer", default="capsa-test-issuer")
    ap.add_argument("--service", default="capsa-test-registry")
    opts = ap.parse_args()
    os.makedirs(opts.dir, exist_ok=True)
    ensure_key_and_cert(opts.dir, opts.issuer)
    srv = Server((opts.host, opts.port), Handler, opts)
    port = srv.server_address[1]
    port_file = os.path.join(opts.dir, "token-server.port")
    with open(port_file + ".tmp", "w") as fh:
        fh.write("%d\n" % port)
    os.replace(port_file + ".tmp", port_file)
    log("listening on http://%s:%d/token" % (opts.host, port))
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
