#!/usr/bin/env python3
"""Bearer-token issuer for obd-testkit (tests only; Python stdlib + the openssl CLI).

Usage: token_server.py CONFIG.json

CONFIG keys: openssl, key, cert (RS256 signer), port_file (the bound port is written there once
listening), counter (one line appended per token issued: "push" for the testkit's own push
helper, identified by its User-Agent, otherwise "client"), user, password, ttl (seconds, may be
fractional), service, issuer, verbose.

GET  /token?service=..&scope=..   docker style: optional Basic credentials; anonymous callers get
                                  a token without any actions; bad credentials get 401.
POST /token (form)                OAuth2 grant_type=password (what containerd sends).

docker/distribution accepts a token up to 60 s after its "exp" claim (a fixed clock-skew
leeway). To make a short ttl observable, "exp" is set to issue time + ttl - 60, so the registry
stops accepting the token `ttl` seconds after it was issued; "expires_in" is the ttl.
"""
import base64
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

with open(sys.argv[1], encoding="utf-8") as cfg_file:
    CFG = json.load(cfg_file)
REGISTRY_LEEWAY = 60
COUNTER_LOCK = threading.Lock()


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def openssl(args, data=None):
    done = subprocess.run([CFG["openssl"]] + args, input=data, capture_output=True, check=True)
    return done.stdout


CERT_DER = openssl(["x509", "-in", CFG["cert"], "-outform", "DER"])
JWT_HEADER = b64url(json.dumps({
    "typ": "JWT",
    "alg": "RS256",
    "x5c": [base64.b64encode(CERT_DER).decode("ascii")],
}).encode())


def make_jwt(claims):
    signing_input = JWT_HEADER + "." + b64url(json.dumps(claims).encode())
    signature = openssl(["dgst", "-sha256", "-sign", CFG["key"]], signing_input.encode())
    return signing_input + "." + b64url(signature)


def record(kind):
    with COUNTER_LOCK:
        with open(CFG["counter"], "a", encoding="utf-8") as counter:
            counter.write(kind + "\n")


def parse_scope(scope):
    """'repository:a/b:pull,push' -> (type, name, [actions]); names may contain ':'."""
    parts = scope.split(":")
    if len(parts) < 3:
        return None
    return parts[0], ":".join(parts[1:-1]), [a for a in parts[-1].split(",") if a]


class TokenHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # request lines only, never headers or bodies
        if CFG.get("verbose"):
            sys.stderr.write("token-server: %s\n" % (fmt % args))

    def answer(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if code == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="obd-testkit-token"')
        self.end_headers()
        self.wfile.write(body)

    def valid(self, user, password):
        return user == CFG["user"] and password == CFG["password"]

    def do_GET(self):
        query = parse_qs(urlsplit(self.path).query)
        user = ""
        auth = self.headers.get("Authorization", "")
        if auth:
            if not auth.lower().startswith("basic "):
                return self.answer(401)
            try:
                name, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return self.answer(401)
            if not self.valid(name, password):
                return self.answer(401)
            user = name
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        self.issue(user, query.get("service", [""])[0], scopes)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or "0")
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        first = lambda key: form.get(key, [""])[0]
        if first("grant_type") != "password":
            return self.answer(400, b'{"error":"unsupported_grant_type"}')
        if not self.valid(first("username"), first("password")):
            return self.answer(401)
        scopes = [s for value in form.get("scope", []) for s in value.split(" ") if s]
        self.issue(first("username"), first("service"), scopes)

    def issue(self, user, service, scopes):
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed:
                kind, name, actions = parsed
                access.append({"type": kind, "name": name, "actions": actions if user else []})
        ttl = float(CFG["ttl"])
        now = time.time()
        claims = {
            "iss": CFG["issuer"],
            "sub": user,
            "aud": service or CFG["service"],
            "exp": math.ceil(now + ttl) - REGISTRY_LEEWAY,
            "nbf": int(now) - 10,
            "iat": int(now),
            "jti": str(uuid.uuid4()),
            "access": access,
        }
        try:
            token = make_jwt(claims)
        except subprocess.CalledProcessError as err:
            sys.stderr.write("token-server: signing failed: %s\n" % err.stderr.decode(errors="replace"))
            return self.answer(500)
        agent = self.headers.get("User-Agent", "")
        record("push" if "obd-testkit-push" in agent else "client")
        issued = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = json.dumps({
            "token": token,
            "access_token": token,
            "expires_in": max(1, math.ceil(ttl)),
            "issued_at": issued,
        }).encode()
        self.answer(200, body)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenHandler)
    server.daemon_threads = True
    tmp = CFG["port_file"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as port_file:
        port_file.write(str(server.server_address[1]))
    os.replace(tmp, CFG["port_file"])
    server.serve_forever()


if __name__ == "__main__":
    main()
