"""HTTP to a Docker-API daemon over unix:// or tcp:// (TLS with ``--tlsverify``): the API version
negotiated from ``/_ping``, Docker's error bodies turned into the errors the local engine raises,
JSON-stream readers, and hijacked connections for attach and exec.

Built on the standard library's ``http.client`` (a unix-socket subclass) so that the CLI does
not import an HTTP stack it does not need.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote, urlencode

from pyengine.client import STDERR, STDIN, STDOUT
from pyengine.errors import Conflict, NotFound, PyEngineError, UsageError

#: the newest API version this client speaks, and the oldest it accepts from a daemon
CLIENT_API_VERSION = "1.45"
MIN_API_VERSION = "1.24"

__all__ = ["STDERR", "STDIN", "STDOUT", "DaemonUnreachable", "Hijacked", "StreamError", "TlsOptions", "Transport"]


class DaemonUnreachable(PyEngineError):
    """No daemon answers at the given address."""

    exit_code = 1


class StreamError(PyEngineError):
    """An error line in a daemon's JSON stream (``{"error", "errorDetail": {"code"}}``): the
    work failed after the answer had begun."""

    def __init__(self, message: str, code: Any = None) -> None:
        super().__init__(message)
        self.code = code if isinstance(code, int) else None


@dataclass(frozen=True)
class TlsOptions:
    """The client's TLS: verify the daemon against ``ca`` and present ``cert``/``key``."""

    verify: bool = True
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def context(self) -> ssl.SSLContext:
        try:
            if self.verify:
                context = ssl.create_default_context(cafile=self.ca)
            else:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if self.cert:
                context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load the TLS files: {exc}") from None
        return context


@dataclass(frozen=True)
class Address:
    """Where the daemon listens: a unix socket path, or a TCP host and port."""

    url: str
    socket_path: str | None = None
    host: str = "localhost"
    port: int = 0


def parse_host(url: str, tls: bool) -> Address:
    """``unix:///path`` or ``tcp://HOST[:PORT]`` (2376 with TLS, else 2375), as Docker reads them."""
    if url.startswith("unix://"):
        path = url[len("unix://"):]
        if not path.startswith("/"):
            raise UsageError(f"invalid host {url!r}: a unix socket needs an absolute path (unix:///path)")
        return Address(url, socket_path=path)
    if url.startswith(("tcp://", "http://", "https://")):
        rest = url.split("://", 1)[1].rstrip("/")
        if not rest:
            raise UsageError(f"invalid host {url!r}: no address")
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            port_text = tail[1:] if tail.startswith(":") else ""
        else:
            host, _, port_text = rest.partition(":")
        if port_text and not port_text.isdigit():
            raise UsageError(f"invalid host {url!r}: bad port {port_text!r}")
        port = int(port_text) if port_text else (2376 if tls else 2375)
        return Address(url, host=host or "localhost", port=port)
    raise UsageError(f"invalid host {url!r}: use unix:///path or tcp://HOST:PORT")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _encode_query(query: dict[str, Any] | None) -> str:
    if not query:
        return ""
    pairs = []
    for key, value in query.items():
        if value is None:
            continue
        for one in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(one, bool):
                one = "1" if one else "0"
            elif isinstance(one, dict):
                one = json.dumps(one)
            pairs.append((key, str(one)))
    return "?" + urlencode(pairs) if pairs else ""


def error_message(status: int, body: bytes) -> str:
    """The ``message`` of a Docker error body, or what the body says when it is not one."""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return data["message"]
    except ValueError:
        pass
    text = body.decode(errors="replace").strip()
    return text or f"the daemon answered {status} {http.client.responses.get(status, '')}".rstrip()


def raise_for_status(status: int, body: bytes) -> None:
    """The local engine's error for a daemon's error answer (404, 403 and 409, 400, else any)."""
    if status < 400:
        return
    message = error_message(status, body)
    if status == 404:
        raise NotFound(message)
    if status in (403, 409):
        # dockerd's 403 is an operation refused by its rules (a predefined network, an
        # authorization plugin), as this engine refuses it with a Conflict
        raise Conflict(message)
    if status == 400:
        raise UsageError(message)
    raise PyEngineError(message)


class Hijacked:
    """A connection the daemon took over (attach, exec start): raw bytes both ways."""

    def __init__(self, sock: socket.socket, leftover: bytes, tls: bool) -> None:
        self.sock = sock
        self._leftover = leftover
        self._tls = tls

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, size: int = 65536) -> bytes:
        if self._leftover:
            data, self._leftover = self._leftover, b""
            return data
        try:
            return self.sock.recv(size)
        except ConnectionResetError:
            return b""

    @property
    def pending(self) -> bool:
        """Bytes already read from the socket but not yet returned (select() cannot see them)."""
        return bool(self._leftover) or (self._tls and self.sock.pending() > 0)  # type: ignore[attr-defined]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close_write(self) -> None:
        """Stdin's end: half-close, so the daemon sees EOF and keeps sending output."""
        if self._tls:
            return  # a TLS half-close would end the session; the daemon ends it with the process
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


class Transport:
    """One daemon: requests on a kept-alive connection, streams and hijacks on their own."""

    def __init__(self, url: str, tls: TlsOptions | None = None, timeout: float | None = None) -> None:
        self.address = parse_host(url, tls is not None)
        self.tls = tls
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = tls.context() if tls else None
        self._conn: http.client.HTTPConnection | None = None
        self._version: str | None = None
        self.ping_headers: dict[str, str] = {}

    # -- connections ---------------------------------------------------------------------------
    def _new_connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        timeout = self.timeout if timeout is None else timeout
        if self.address.socket_path:
            return _UnixConnection(self.address.socket_path, timeout)
        if self._ssl is not None:
            return http.client.HTTPSConnection(self.address.host, self.address.port, timeout=timeout,
                                               context=self._ssl)
        return http.client.HTTPConnection(self.address.host, self.address.port, timeout=timeout)

    def _unreachable(self, exc: BaseException) -> DaemonUnreachable:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return DaemonUnreachable(f"cannot connect to the daemon at {self.address.url}: {reason}; "
                                 "is the daemon running?")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- version -------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """The API version both sides speak: ours, or the daemon's if older (from ``/_ping``)."""
        if self._version is None:
            status, headers, body = self._exchange("GET", "/_ping")
            self.ping_headers = headers
            if status >= 400:
                raise_for_status(status, body)
            theirs = headers.get("api-version") or MIN_API_VERSION
            if _vt(theirs) < _vt(MIN_API_VERSION):
                raise PyEngineError(f"the daemon at {self.address.url} speaks API {theirs}; "
                                    f"this client needs {MIN_API_VERSION} or newer")
            self._version = min(theirs, CLIENT_API_VERSION, key=_vt)
        return self._version

    def path(self, path: str, query: dict[str, Any] | None = None) -> str:
        return f"/v{self.version}{path}{_encode_query(query)}"

    # -- plain requests ------------------------------------------------------------------------
    def _exchange(self, method: str, url: str, body: Any = None,
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on the kept-alive connection (retried once on a connection the daemon
        closed while idle); status, lower-cased headers, body."""
        payload, headers = _payload(body, headers)
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._new_connection()
            try:
                self._conn.request(method, url, body=payload, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if attempt == 2 or not _replayable(payload):
                    raise self._unreachable(exc) from None
                continue
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._unreachable(exc) from None
            if response.will_close:
                self.close()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        raise AssertionError("unreachable")  # pragma: no cover

    def request(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        status, response_headers, data = self._exchange(method, self.path(path, query), body, headers)
        raise_for_status(status, data)
        return status, response_headers, data

    def json(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
             headers: dict[str, str] | None = None) -> Any:
        """The decoded JSON answer (None for an empty one, as a 204's)."""
        _, _, data = self.request(method, path, query, body, headers)
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise PyEngineError(f"the daemon sent a body that is not JSON: {data[:200]!r}") from None

    # -- streams -------------------------------------------------------------------------------
    def stream(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
               headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        """A response to read as it comes (logs, pull, events, save), on a connection of its own;
        closing the response closes the connection."""
        payload, headers = _payload(body, headers)
        conn = self._new_connection(timeout=None)
        try:
            conn.request(method, self.path(path, query), body=payload, headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._unreachable(exc) from None
        if response.status >= 400:
            data = response.read()
            conn.close()
            raise_for_status(response.status, data)
        return response

    def json_stream(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
                    headers: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Each JSON object of a progress stream (pull, push, load, build, events); an object
        with ``error`` ends it with that error, as the docker CLI does."""
        response = self.stream(method, path, query, body, headers)
        try:
            yield from read_json_lines(response)
        finally:
            response.close()

    def hijack(self, path: str, query: dict[str, Any] | None = None, body: Any = None) -> tuple[Hijacked, str]:
        """POST and take over the connection (``Upgrade: tcp``); the raw connection and its
        Content-Type (raw with a tty, multiplexed without)."""
        conn = self._new_connection(timeout=None)
        try:
            conn.connect()
        except OSError as exc:
            raise self._unreachable(exc) from None
        sock = conn.sock
        data = b"" if body is None else json.dumps(body).encode()
        host = "localhost" if self.address.socket_path else f"{self.address.host}:{self.address.port}"
        head = (f"POST {self.path(path, query)} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pyengine\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n").encode()
        try:
            sock.sendall(head + data)
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError("the daemon closed the connection")
                buffer += chunk
        except OSError as exc:
            sock.close()
            raise self._unreachable(exc) from None
        raw_head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            sock.close()
            raise PyEngineError(f"the daemon sent a bad answer: {lines[0]!r}") from None
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if status >= 400:
            rest += _read_rest(sock, headers, rest)
            sock.close()
            raise_for_status(status, _dechunk(rest) if "chunked" in headers.get("transfer-encoding", "") else rest)
        return Hijacked(sock, rest, self._ssl is not None), headers.get("content-type", "")


def _vt(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def _payload(body: Any, headers: dict[str, str] | None) -> tuple[Any, dict[str, str]]:
    out = {"User-Agent": f"pyengine/{_version()}"}
    out.update(headers or {})
    if body is None:
        return None, out
    if isinstance(body, (dict, list)):
        out.setdefault("Content-Type", "application/json")
        return json.dumps(body).encode(), out
    if isinstance(body, bytes):
        out.setdefault("Content-Type", "application/octet-stream")
        return body, out
    # A file: http.client sends it chunked unless a Content-Length is given.
    out.setdefault("Content-Type", "application/x-tar")
    return body, out


def _replayable(payload: Any) -> bool:
    return payload is None or isinstance(payload, bytes)


def _version() -> str:
    from pyengine import __version__

    return __version__


def _read_rest(sock: socket.socket, headers: dict[str, str], have: bytes) -> bytes:
    """The rest of an error body after its headers (bounded: error bodies are small)."""
    length = headers.get("content-length")
    want = int(length) - len(have) if length and length.isdigit() else 1 << 16
    out = b""
    sock.settimeout(10)
    try:
        while len(out) < want:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
            if "chunked" in headers.get("transfer-encoding", "") and (have + out).endswith(b"0\r\n\r\n"):
                break
    except OSError:
        pass
    return out


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return out


def read_json_lines(stream: IO[bytes]) -> Iterator[dict[str, Any]]:
    """JSON objects one after another (newline-separated, or concatenated as some daemons send)."""
    decoder = json.JSONDecoder()
    buffer = ""
    while True:
        chunk = stream.readline()
        if not chunk:
            break
        buffer += chunk.decode(errors="replace")
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                break
            try:
                obj, end = decoder.raw_decode(buffer)
            except ValueError:
                break  # an object split across reads: wait for the rest
            buffer = buffer[end:]
            if isinstance(obj, dict) and obj.get("error"):
                detail = obj.get("errorDetail") or {}
                raise StreamError(str(detail.get("message") or obj["error"]), detail.get("code"))
            if isinstance(obj, dict):
                yield obj
    if buffer.strip():
        raise PyEngineError(f"the daemon's stream ended in the middle of an object: {buffer[:200]!r}")


def read_frames(stream: Any) -> Iterator[tuple[int, bytes]]:
    """Docker's multiplexed stream (8-byte header: stream, 0, 0, 0, big-endian length) from a
    response or any object with ``read(n)``."""
    while True:
        header = _read_exact(stream, 8)
        if len(header) < 8:
            return
        kind, length = struct.unpack(">BxxxI", header)
        payload = _read_exact(stream, length)
        yield kind, payload
        if len(payload) < length:
            return


def _read_exact(stream: Any, size: int) -> bytes:
    out = b""
    while len(out) < size:
        chunk = stream.read(size - len(out))
        if not chunk:
            break
        out += chunk
    return out


class FrameDecoder:
    """Incremental stdcopy decoding for bytes that arrive in pieces (a hijacked socket)."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        out = []
        while len(self.buffer) >= 8:
            kind, length = struct.unpack(">BxxxI", self.buffer[:8])
            if len(self.buffer) < 8 + length:
                break
            out.append((kind, self.buffer[8:8 + length]))
            self.buffer = self.buffer[8 + length:]
        return out


def quote_ref(ref: str) -> str:
    """A name for a path segment (image names hold slashes and colons, which stay as they are)."""
    return quote(ref, safe="/:@")
