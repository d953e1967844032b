"""Test helper: Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1, with its config
and storage under a temp dir, in three setups: anonymous plain HTTP, htpasswd basic auth over
TLS with a CA made here (openssl), and bearer tokens from a small token server written here
(RS256 JWTs signed with this module's key via openssl, whose certificate is the registry's
rootcertbundle). Plus an HTTP proxy that flips one byte of, or cuts, one blob download and
counts the bytes it forwarded.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

SERVICE = "pyengine-test-registry"
ISSUER = "pyengine-test-token-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)}: {result.stderr}")


def make_ca(work: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    # Keys live apart from the certificates: tools that take a cert dir (skopeo) read *.key as
    # client keys.
    private = work / "private"
    private.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = private / "ca.key", work / "ca.crt"
    key, csr, crt = private / "server.key", private / "server.csr", private / "server.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_crt),
             "-days", "2", "-subj", "/CN=pyengine test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = work / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return {"ca": ca_crt, "cert": crt, "key": key}


def make_htpasswd(path: Path, users: dict[str, str]) -> Path:
    for i, (user, password) in enumerate(users.items()):
        flags = "-Bbc" if i == 0 else "-Bb"
        subprocess.run(["htpasswd", flags, str(path), user, password], check=True, capture_output=True)
    return path


@dataclass
class Registry:
    """One running docker-registry."""

    port: int
    root: Path
    proc: subprocess.Popen
    scheme: str = "http"
    ca: Path | None = None
    extra: list = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for item in self.extra:
            item.stop()


def start_registry(work: Path, auth: str | None = None, users: dict[str, str] | None = None,
                   token_server: TokenServer | None = None) -> Registry:
    """auth None: anonymous plain HTTP; "htpasswd": basic auth over TLS; "token": bearer over HTTP."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = ["version: 0.1", "log:", "  level: warn", "storage:", "  filesystem:",
             f"    rootdirectory: {work / 'storage'}", "  delete:", "    enabled: true",
             "http:", f"  addr: 127.0.0.1:{port}", f"  secret: {os.urandom(8).hex()}"]
    ca = None
    scheme = "http"
    if auth == "htpasswd":
        tls = make_ca(work / "tls")
        ca, scheme = tls["ca"], "https"
        lines += ["  tls:", f"    certificate: {tls['cert']}", f"    key: {tls['key']}"]
        htpasswd = make_htpasswd(work / "htpasswd", users or {})
        lines += ["auth:", "  htpasswd:", "    realm: pyengine-test", f"    path: {htpasswd}"]
    elif auth == "token":
        assert token_server is not None
        lines += ["auth:", "  token:", f"    realm: {token_server.realm}", f"    service: {SERVICE}",
                  f"    issuer: {ISSUER}", f"    rootcertbundle: {token_server.cert}"]
    config = work / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    log = open(work / "registry.log", "wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        _wait_port(port, proc)
    except AssertionError:
        proc.kill()
        proc.wait()
        raise AssertionError(f"docker-registry did not start: {(work / 'registry.log').read_text()[-2000:]}") from None
    return Registry(port, work, proc, scheme, ca)


# -- token server ----------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry JWTs: users with the right password get pull+push on every repository;
    anonymous callers get pull on ``public/*`` only. ``lifetime`` (seconds, may be negative:
    the registry allows 60 s of clock skew past ``exp``) lets a test make tokens expire mid-pull.
    ``issued`` counts tokens handed out."""

    def __init__(self, work: Path, users: dict[str, str], lifetime: int = 300) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = work / "token.key", work / "token.crt"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key), "-out", str(self.cert),
                 "-days", "2", "-subj", "/CN=pyengine test token signer")
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], capture_output=True,
                             check=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.users, self.lifetime, self.issued = users, lifetime, 0
        self.port = free_port()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if server.users.get(name) != password:
                        self.send_response(401)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    user = name
                access = []
                for scope in " ".join(query.get("scope", [])).split():
                    kind, _, rest = scope.partition(":")
                    name, _, actions = rest.rpartition(":")
                    wanted = actions.split(",")
                    granted = wanted if user else [a for a in wanted if a == "pull" and name.startswith("public/")]
                    if kind == "registry" and user:
                        granted = wanted
                    if granted:
                        access.append({"type": kind, "name": name, "actions": granted})
                body = json.dumps({"token": server.sign(user or "", access), "expires_in": server.lifetime}).encode()
                server.issued += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def sign(self, subject: str, access: list) -> str:
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "iat": now, "nbf": now - 5,
                  "exp": now + self.lifetime, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), capture_output=True, check=True).stdout
        return f"{signing_input}.{_b64(signature)}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- a misbehaving proxy -----------------------------------------------------------------------
class BlobProxy:
    """Forwards HTTP to a registry; for the blob ``target`` it can flip one byte (``corrupt``)
    or close the connection after ``cut_after`` body bytes, on its first download only, or hold
    its GET until ``release`` is set (``hold``; ``held`` is set once one waits); it can hold
    each blob's first GET for ``delay_first`` seconds.
    ``sent[digest]`` counts the body bytes forwarded per blob."""

    def __init__(self, upstream_port: int, target: str | None = None, mode: str | None = None,
                 cut_after: int = 0, delay_first: float = 0) -> None:
        self.upstream_port, self.target, self.mode, self.cut_after = upstream_port, target, mode, cut_after
        # seconds to hold the first GET of each blob before forwarding it (lets a token expire)
        self.delay_first, self.delayed = delay_first, set()
        self.sent: dict[str, int] = {}
        self.ranges: list[str | None] = []
        self.statuses: list[tuple[str, int]] = []
        self.tripped = False
        self.held, self.release = threading.Event(), threading.Event()
        self.port = free_port()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                if proxy.delay_first and self.command == "GET" and "/blobs/sha256:" in self.path \
                        and self.path not in proxy.delayed:
                    proxy.delayed.add(self.path)
                    time.sleep(proxy.delay_first)
                if proxy.mode == "hold" and self.command == "GET" and self.path.endswith(f"/blobs/{proxy.target}"):
                    proxy.held.set()
                    proxy.release.wait(60)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                digest = self.path.rsplit("/", 1)[-1] if "/blobs/sha256:" in self.path else None
                hit = (digest == proxy.target and self.command == "GET" and not proxy.tripped
                       and resp.status in (200, 206))
                if digest and self.command == "GET":
                    proxy.ranges.append(self.headers.get("Range"))
                    proxy.statuses.append((digest, resp.status))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command == "HEAD":
                    conn.close()
                    return
                done = 0
                while chunk := resp.read(65536):
                    if hit and proxy.mode == "cut" and done + len(chunk) > proxy.cut_after:
                        chunk = chunk[:proxy.cut_after - done]
                        self.wfile.write(chunk)
                        done += len(chunk)
                        proxy.sent[digest] = proxy.sent.get(digest, 0) + len(chunk)
                        proxy.tripped = True
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        conn.close()
                        return
                    if hit and proxy.mode == "corrupt" and done <= 100 < done + len(chunk):
                        flipped = bytearray(chunk)
                        flipped[100 - done] ^= 0xFF
                        chunk = bytes(flipped)
                        proxy.tripped = True
                    self.wfile.write(chunk)
                    done += len(chunk)
                    if digest:
                        proxy.sent[digest] = proxy.sent.get(digest, 0) + len(chunk)
                conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
