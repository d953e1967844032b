"""The OCI distribution HTTP client: one registry host, its TLS, its auth, its API calls.

Owns the ping / ``WWW-Authenticate`` dance (anonymous, Basic, Bearer tokens per scope,
fetched again when the registry answers 401 mid-transfer), manifest and blob GET/HEAD/PUT,
upload sessions (monolithic, chunked, cross-repository mount), ``_catalog`` and tag lists.
Standard library only (http.client + ssl); connections are kept per thread so parallel blob
downloads each reuse their own.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from typing import IO, Any

from pyengine.drivers.registry import Credentials
from pyengine.errors import PyEngineError
from pyengine.log import get_logger
from pyengine.registry.options import RegistryOptions

log = get_logger(__name__)

USER_AGENT = "pyengine"
CHUNK = 1 << 20


class RegistryError(PyEngineError):
    """The registry refused or failed a request; the message says which and why."""

    exit_code = 1
    #: the registry's HTTP status, when it answered one
    http_status: int | None = None


class RegistryAuthError(RegistryError):
    """The registry wants credentials we do not have, or refused the ones we sent."""


class TransferInterrupted(RegistryError):
    """The connection broke mid-body; what arrived is kept so a retry resumes."""


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ("bearer", {realm: x, service: y})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lstrip(",").strip()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            end = rest.find('"', i + 1)
            end = len(rest) if end < 0 else end
            params[key.lower()] = rest[i + 1:end]
            i = end + 1
        else:
            end = rest.find(",", i)
            end = len(rest) if end < 0 else end
            params[key.lower()] = rest[i:end].strip()
            i = end
        while i < len(rest) and rest[i] in ", ":
            i += 1
    return scheme.lower(), params


class Response:
    """A status, headers and a body that is either read whole or streamed."""

    def __init__(self, resp: http.client.HTTPResponse, conn_owner: RegistryClient) -> None:
        self.raw = resp
        self.status = resp.status
        self.headers = resp.headers
        self._owner = conn_owner

    def read(self) -> bytes:
        return self.raw.read()

    def iter_chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        while True:
            try:
                chunk = self.raw.read1(size) if hasattr(self.raw, "read1") else self.raw.read(size)
            except (OSError, http.client.HTTPException) as exc:
                self._owner._drop_connection()
                raise TransferInterrupted(f"connection to {self._owner.host} broke: {exc}") from None
            if not chunk:
                # read1 never marks a response read to its Content-Length as done, and the
                # next request on this kept-alive connection would fail ("Request-sent").
                self.raw.close()
                return
            yield chunk


class RegistryClient:
    """A client of one registry host (``127.0.0.1:5000``, ``docker.io``)."""

    def __init__(self, host: str, options: RegistryOptions | None = None,
                 credentials: Credentials | None = None, endpoint: str | None = None) -> None:
        self.host = host
        self.options = options or RegistryOptions()
        self.credentials = credentials
        # docker.io the name is not docker.io the API endpoint
        self.endpoint = endpoint or ("registry-1.docker.io" if host == "docker.io" else host)
        self.scheme = "http" if self.options.insecure else "https"
        # Docker's rule: a registry on 127.0.0.0/8 (or ::1) may speak plain HTTP without being
        # listed as insecure. Here TLS is still tried first and, when the registry answers it,
        # its certificate is verified as for any other host; only a registry that does not
        # speak TLS at all is reached over HTTP.
        self._probe_plain_http = not self.options.insecure and is_loopback_host(self.endpoint)
        self._probe_lock = threading.Lock()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[str, str] = {}
        self._ssl: ssl.SSLContext | None = None

    # -- connections -----------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context()
            if self.options.ca_file:
                ctx.load_verify_locations(self.options.ca_file)
            self._ssl = ctx
        return self._ssl

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        key = (scheme, netloc)
        conn = conns.get(key)
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(netloc, timeout=60, context=self._ssl_context())
            else:
                conn = http.client.HTTPConnection(netloc, timeout=60)
            conns[key] = conn
        return conn

    def _drop_connection(self) -> None:
        for conn in (getattr(self._local, "conns", None) or {}).values():
            conn.close()
        self._local.conns = {}

    def close(self) -> None:
        self._drop_connection()

    def _settle_scheme(self) -> None:
        """On a loopback registry, fall back to plain HTTP when its port does not speak TLS."""
        if not self._probe_plain_http:
            return
        with self._probe_lock:  # parallel blob transfers wait for the one probe
            if self._probe_plain_http:
                self._probe()
                self._probe_plain_http = False

    def _probe(self) -> None:
        where = urllib.parse.urlsplit(f"//{self.endpoint}")
        host = where.hostname or self.endpoint
        try:
            with socket.create_connection((host, where.port or 443), timeout=10) as raw:
                with ssl.create_default_context().wrap_socket(raw, server_hostname=host):
                    return
        except ssl.SSLCertVerificationError:
            return  # it speaks TLS: the certificate error is reported by the request itself
        except ssl.SSLError:
            log.info("registry.plain_http", host=self.host, reason="loopback registry does not speak TLS")
            self.scheme = "http"
        except OSError:
            return

    def _raw(self, method: str, url: str, headers: dict[str, str], body: bytes | IO[bytes] | None) -> Response:
        parsed = urllib.parse.urlsplit(url)
        target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        headers = {"User-Agent": USER_AGENT, **headers}
        for attempt in (1, 2):
            conn = self._connection(parsed.scheme, parsed.netloc)
            try:
                conn.request(method, target, body=body, headers=headers)
                return Response(conn.getresponse(), self)
            except ssl.SSLCertVerificationError as exc:
                self._drop_connection()
                raise RegistryError(f"TLS certificate of {parsed.netloc} not trusted: {exc.verify_message}; "
                                    f"set ca-file in [registries.\"{self.host}\"]") from None
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as exc:
                self._drop_connection()
                # A kept-alive connection the server closed: retry once on a fresh one.
                if attempt == 2 or (body is not None and not isinstance(body, bytes)):
                    raise RegistryError(f"cannot reach registry {parsed.netloc}: {exc}") from None
            except OSError as exc:
                self._drop_connection()
                raise RegistryError(f"cannot reach registry {parsed.netloc}: {exc}") from None
        raise AssertionError("unreachable")

    # -- auth ------------------------------------------------------------------------------
    def _basic(self) -> str:
        assert self.credentials is not None
        raw = f"{self.credentials.username}:{self.credentials.secret}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _auth_header(self, scope: str | None) -> dict[str, str]:
        if self._challenge is None:
            return {}
        scheme, _ = self._challenge
        if scheme == "basic" and self.credentials:
            return {"Authorization": self._basic()}
        if scheme == "bearer":
            token = self._tokens.get(scope or "")
            if token:
                return {"Authorization": f"Bearer {token}"}
        return {}

    def _fetch_token(self, params: dict[str, str], scope: str | None) -> None:
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.host} sent a Bearer challenge without a realm")
        query = {"service": params.get("service", "")}
        if scope:
            query["scope"] = scope
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {"Authorization": self._basic()} if self.credentials else {}
        resp = self._raw("GET", url, headers, None)
        body = resp.read()
        if resp.status in (401, 403):
            raise RegistryAuthError(f"{self.host}: the token server refused the credentials"
                                    if self.credentials else f"{self.host}: anonymous token refused; "
                                    f"run `pyengine login {self.host}`")
        if resp.status != 200:
            raise RegistryError(f"token server {realm} answered {resp.status}")
        try:
            data = json.loads(body)
        except ValueError:
            raise RegistryError(f"token server {realm} sent no JSON") from None
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError(f"token server {realm} sent no token")
        self._tokens[scope or ""] = token
        log.debug("registry.token", host=self.host, scope=scope)

    def _handle_401(self, resp: Response, scope: str | None) -> None:
        header = resp.headers.get("WWW-Authenticate") or ""
        scheme, params = parse_challenge(header) if header else ("", {})
        with self._lock:
            self._challenge = (scheme, params)
            if scheme == "bearer":
                # The registry's scope names what this request needs; prefer it over our guess.
                self._fetch_token(params, scope)
            elif scheme == "basic" and not self.credentials:
                raise RegistryAuthError(f"{self.host} requires authentication: run `pyengine login {self.host}`")
            elif scheme not in ("basic", "bearer"):
                raise RegistryAuthError(f"{self.host} wants unsupported authentication {header!r}")

    def request(self, method: str, path_or_url: str, *, scope: str | None = None,
                headers: dict[str, str] | None = None, body: bytes | IO[bytes] | None = None,
                ok: tuple[int, ...] = (200,)) -> Response:
        """One API call with auth; retried once after a 401 (a new or refreshed token)."""
        self._settle_scheme()
        url = path_or_url if "://" in path_or_url else f"{self.scheme}://{self.endpoint}{path_or_url}"
        for attempt in (1, 2):
            hdrs = {**(headers or {}), **self._auth_header(scope)}
            resp = self._raw(method, url, hdrs, body)
            if resp.status == 401 and attempt == 1:
                resp.read()
                self._tokens.pop(scope or "", None)
                self._handle_401(resp, scope)
                if hasattr(body, "seek"):
                    body.seek(0)  # type: ignore[union-attr]
                continue
            if resp.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                resp.read()
                location = urllib.parse.urljoin(url, resp.headers["Location"])
                # A redirect to blob storage carries its own authorization in the URL.
                resp = self._raw(method, location, dict(headers or {}), None)
            if resp.status not in ok:
                self._fail(method, url, resp, scope)
            return resp
        raise AssertionError("unreachable")

    def _fail(self, method: str, url: str, resp: Response, scope: str | None) -> None:
        body = resp.read() if method != "HEAD" else b""
        detail = ""
        try:
            errors = json.loads(body).get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except (ValueError, AttributeError):
            detail = body[:200].decode(errors="replace").strip()
        path = urllib.parse.urlsplit(url).path
        if resp.status == 401:
            if self.credentials:
                raise RegistryAuthError(f"{self.host}: access denied to {path} with the stored credentials"
                                        + (f" ({detail})" if detail else ""))
            raise RegistryAuthError(f"{self.host}: authentication required for {path}; "
                                    f"run `pyengine login {self.host}`")
        if resp.status == 403:
            raise RegistryAuthError(f"{self.host}: access to {path} forbidden" + (f" ({detail})" if detail else ""))
        error = RegistryError(f"{self.host}: {method} {path} answered {resp.status}"
                              + (f": {detail}" if detail else ""))
        error.http_status = resp.status
        raise error

    # -- API -------------------------------------------------------------------------------
    def ping(self) -> None:
        """GET /v2/: learn the auth scheme; with credentials, check them (login)."""
        self._settle_scheme()
        resp = self._raw("GET", f"{self.scheme}://{self.endpoint}/v2/", {}, None)
        resp.read()
        if resp.status == 200:
            self._challenge = ("", {})
            return
        if resp.status != 401:
            raise RegistryError(f"{self.endpoint} does not speak the distribution API (GET /v2/ answered "
                                f"{resp.status})")
        header = resp.headers.get("WWW-Authenticate") or ""
        scheme, params = parse_challenge(header)
        self._challenge = (scheme, params)
        if scheme == "bearer":
            self._fetch_token(params, None)
        if scheme == "basic" and not self.credentials:
            raise RegistryAuthError(f"{self.host} requires authentication: run `pyengine login {self.host}`")
        resp = self.request("GET", "/v2/")
        resp.read()

    def login(self) -> None:
        """Check the credentials against the registry; raises RegistryAuthError when refused."""
        self._settle_scheme()
        resp = self._raw("GET", f"{self.scheme}://{self.endpoint}/v2/", {}, None)
        resp.read()
        if resp.status == 200:
            return  # an open registry accepts anything
        scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate") or "")
        self._challenge = (scheme, params)
        try:
            if scheme == "bearer":
                self._fetch_token(params, None)
            resp = self._raw("GET", f"{self.scheme}://{self.endpoint}/v2/", self._auth_header(None), None)
            resp.read()
        except RegistryAuthError:
            raise RegistryAuthError(f"login to {self.host} failed: wrong user name or password") from None
        if resp.status in (401, 403):
            raise RegistryAuthError(f"login to {self.host} failed: wrong user name or password")
        if resp.status != 200:
            raise RegistryError(f"login to {self.host} failed: GET /v2/ answered {resp.status}")

    @staticmethod
    def scope(repo: str, push: bool = False) -> str:
        return f"repository:{repo}:{'pull,push' if push else 'pull'}"

    def get_manifest(self, repo: str, reference: str, accept: list[str]) -> tuple[str, bytes, str | None]:
        """(media type, bytes, Docker-Content-Digest header) of a manifest or index."""
        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}", scope=self.scope(repo),
                            headers={"Accept": ", ".join(accept)})
        data = resp.read()
        media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        return media_type, data, resp.headers.get("Docker-Content-Digest")

    def blob_stream(self, repo: str, digest: str, offset: int = 0) -> tuple[Response, int]:
        """An open blob response from ``offset`` on, and the offset the server actually honoured."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=self.scope(repo), headers=headers,
                            ok=(200, 206))
        return resp, offset if resp.status == 206 else 0

    def has_blob(self, repo: str, digest: str, push: bool = True) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=self.scope(repo, push), ok=(200, 404))
        resp.read()
        return resp.status == 200

    def mount_blob(self, repo: str, digest: str, source_repo: str) -> bool:
        """Cross-repository mount; True when the registry mounted it (201)."""
        scope = f"{self.scope(repo, True)} repository:{source_repo}:pull"
        query = urllib.parse.urlencode({"mount": digest, "from": source_repo})
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/?{query}", scope=scope, ok=(201, 202),
                            headers={"Content-Length": "0"}, body=b"")
        resp.read()
        if resp.status == 202:
            # The registry opened an ordinary upload instead; cancel it.
            location = resp.headers.get("Location")
            if location:
                with _quiet():
                    self.request("DELETE", self._abs(location), scope=self.scope(repo, True),
                                 ok=(204, 404, 405)).read()
        return resp.status == 201

    def _abs(self, location: str) -> str:
        return urllib.parse.urljoin(f"{self.scheme}://{self.endpoint}/", location)

    def upload_blob(self, repo: str, digest: str, size: int, open_data: Any, chunk_size: int | None = None) -> None:
        """Upload one blob: monolithic (POST then one PUT) or chunked (PATCHes then PUT)."""
        scope = self.scope(repo, True)
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,),
                            headers={"Content-Length": "0"}, body=b"")
        resp.read()
        location = self._abs(resp.headers["Location"])
        if chunk_size is None or size <= chunk_size:
            with open_data() as f:
                resp = self.request("PUT", _with_query(location, digest=digest), scope=scope, ok=(201,),
                                    headers={"Content-Type": "application/octet-stream",
                                             "Content-Length": str(size)}, body=f)
                resp.read()
            return
        with open_data() as f:
            offset = 0
            while offset < size:
                chunk = f.read(chunk_size)
                end = offset + len(chunk) - 1
                resp = self.request("PATCH", location, scope=scope, ok=(202,), body=chunk,
                                    headers={"Content-Type": "application/octet-stream",
                                             "Content-Length": str(len(chunk)),
                                             "Content-Range": f"{offset}-{end}"})
                resp.read()
                location = self._abs(resp.headers["Location"])
                offset += len(chunk)
        resp = self.request("PUT", _with_query(location, digest=digest), scope=scope, ok=(201,),
                            headers={"Content-Length": "0"}, body=b"")
        resp.read()

    def put_manifest(self, repo: str, reference: str, media_type: str, data: bytes) -> str | None:
        resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}", scope=self.scope(repo, True),
                            ok=(201,), body=data,
                            headers={"Content-Type": media_type, "Content-Length": str(len(data))})
        resp.read()
        return resp.headers.get("Docker-Content-Digest")

    def catalog(self) -> list[str]:
        repos: list[str] = []
        path: str | None = "/v2/_catalog?n=1000"
        while path:
            resp = self.request("GET", path, scope="registry:catalog:*")
            repos += json.loads(resp.read()).get("repositories") or []
            path = _next_link(resp.headers.get("Link"))
        return repos

    def tags(self, repo: str) -> list[str]:
        resp = self.request("GET", f"/v2/{repo}/tags/list", scope=self.scope(repo), ok=(200, 404))
        body = resp.read()
        return (json.loads(body).get("tags") or []) if resp.status == 200 else []


def is_loopback_host(endpoint: str) -> bool:
    """``127.0.0.1:5000``, ``[::1]:5000``, ``localhost:5000``: Docker's implicitly insecure registries."""
    host = urllib.parse.urlsplit(f"//{endpoint}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _with_query(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)


def _next_link(header: str | None) -> str | None:
    # Link: </v2/_catalog?last=x&n=1000>; rel="next"
    if not header or 'rel="next"' not in header:
        return None
    return header[header.find("<") + 1:header.find(">")]


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], PyEngineError)
