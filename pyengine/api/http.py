"""What every route needs: Docker's error bodies and status codes, query and body parsing,
JSON streams, and taking over a connection for attach and exec (``Upgrade: tcp``).

Imports aiohttp; imported only by the daemon.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any, overload

from aiohttp import web

from pyengine.errors import ConfigError, Conflict, InvalidArchive, NotFound, PyEngineError, UsageError

#: the API version this daemon speaks, and the oldest it accepts
API_VERSION = "1.45"
MIN_API_VERSION = "1.24"


class ApiError(Exception):
    """An error answered as ``{"message": ...}`` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def status_of(exc: BaseException) -> int:
    """The HTTP status dockerd answers for an engine error of this kind."""
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, (UsageError, ConfigError, InvalidArchive)):
        return 400
    return 500


def error_response(status: int, message: str) -> web.Response:
    # "application/json" exactly, no charset: the docker CLI reads the message only then
    return web.Response(body=json.dumps({"message": message}).encode(), status=status,
                        content_type="application/json")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Compact, as dockerd's Go encoder writes it: a `ps` of many containers is ~10% smaller
    return web.Response(body=json.dumps(data, separators=(",", ":")).encode(), status=status,
                        content_type="application/json", headers=headers)


def no_content() -> web.Response:
    return web.Response(status=204)


def version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        raise ApiError(400, f"invalid API version {text!r}") from None


def api_version(request: web.Request) -> tuple[int, ...]:
    """The version the client asked for in the path (``/v1.41/...``), else ours."""
    return version_tuple(request.match_info.get("version") or API_VERSION)


# -- query and body ------------------------------------------------------------------------------
def qbool(request: web.Request, name: str, default: bool = False) -> bool:
    """Docker's boolean query values: 1/true/True/yes are true, 0/false/empty are false."""
    value = request.query.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no")


@overload
def qint(request: web.Request, name: str, default: int) -> int: ...


@overload
def qint(request: web.Request, name: str, default: None = None) -> int | None: ...


def qint(request: web.Request, name: str, default: int | None = None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"invalid value for {name}: {value!r} is not an integer") from None


def qfilters(request: web.Request) -> dict[str, list[str]]:
    """The ``filters`` query: ``{"label": ["a=b"]}`` or the older ``{"label": {"a=b": true}}``."""
    raw = request.query.get("filters")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiError(400, f"invalid filter: {raw!r} is not JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid filter: expected a JSON object")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = [k for k, on in value.items() if on]
        elif isinstance(value, list):
            out[key] = [str(v) for v in value]
        elif isinstance(value, str):
            out[key] = [value]
        else:
            raise ApiError(400, f"invalid filter {key!r}")
    return out


async def read_json(request: web.Request, *, required: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; ``{}`` for an empty body unless ``required``."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ApiError(400, "a JSON body is required")
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ApiError(400, "invalid JSON: expected an object")
    return data


def typed(body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """``body[key]`` checked against ``kind``; a wrong type is Docker's 400, not a traceback."""
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and kind in (int, float):
        raise ApiError(400, f"json: cannot unmarshal bool into field {key} of type {kind.__name__}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ApiError(400, f"json: cannot unmarshal {type(value).__name__} into field {key} of type {names}")
    return value


# -- streams -------------------------------------------------------------------------------------
async def json_stream(request: web.Request, status: int = 200) -> web.StreamResponse:
    """A response that sends one JSON object per line (pull, push, load, build, events)."""
    response = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


async def send_json_line(response: web.StreamResponse, obj: Any) -> None:
    await response.write(json.dumps(obj).encode() + b"\r\n")


STDIN, STDOUT, STDERR, SYSTEM = 0, 1, 2, 3


def stdcopy_frame(stream: int, data: bytes) -> bytes:
    """Docker's multiplexed stream frame: stream byte, three zero bytes, big-endian length."""
    return struct.pack(">BxxxI", stream, len(data)) + data


class _RawResponse(web.StreamResponse):
    """A response whose body is the raw connection: no chunking, no length (as a websocket's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._length_check = False


class _TakenOver(asyncio.Protocol):
    """The connection's protocol once attach or exec start owns it: bytes from the client are
    queued, its half-close is an end of input that keeps our side open, and writes follow
    the transport's flow control."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = False

    def data_received(self, data: bytes) -> None:
        if data:
            self.incoming.put_nowait(data)

    def eof_received(self) -> bool:
        self.incoming.put_nowait(b"")
        return True  # keep the transport open: the client still reads

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.incoming.put_nowait(b"")
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class _TailFeed:
    """Takes what aiohttp buffered after the upgrade (``set_parser`` hands it over)."""

    def __init__(self, protocol: _TakenOver) -> None:
        self.protocol = protocol

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.protocol.data_received(data)
        return False, b""

    def feed_eof(self) -> None:
        self.protocol.eof_received()


class RawConnection:
    """A connection taken over for attach or exec: bytes in from the client (stdin), bytes
    out to it; the client may half-close its side (stdin EOF) and keep reading."""

    def __init__(self, request: web.Request, response: web.StreamResponse, transport: Any,
                 protocol: _TakenOver) -> None:
        self.request = request
        self.response = response
        self.transport = transport
        self.protocol = protocol
        self.closed = False
        self.eof = False

    async def read(self, size: int = 65536) -> bytes:
        """The next bytes the client sent; b"" once it closed its side."""
        if self.eof:
            return b""
        data = await self.protocol.incoming.get()
        if not data:
            self.eof = True
        return data

    async def write(self, data: bytes) -> bool:
        """Send bytes; False once the client is gone."""
        if self.closed or self.protocol.lost or self.transport.is_closing():
            self.closed = True
            return False
        self.transport.write(data)
        await self.protocol.writable.wait()
        return not self.protocol.lost

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            if not self.transport.is_closing():
                self.transport.close()


async def take_over(request: web.Request, content_type: str) -> RawConnection:
    """Answer 101 Upgrade (or the old 200 form) and return the raw connection, for attach and
    exec start; the handler owns the connection from here on and returns ``conn.response``.

    ``content_type`` is ``application/vnd.docker.raw-stream`` (tty) or
    ``application/vnd.docker.multiplexed-stream``.
    """
    upgrade = request.headers.get("Upgrade", "").lower() == "tcp" and \
        "upgrade" in request.headers.get("Connection", "").lower()
    if upgrade:
        response = _RawResponse(status=101, reason="UPGRADED", headers={
            "Content-Type": content_type, "Connection": "Upgrade", "Upgrade": "tcp"})
    else:
        response = _RawResponse(status=200, headers={"Content-Type": content_type})
    response.force_close()
    await response.prepare(request)
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client went away")
    protocol = _TakenOver()
    # What the client sent after its request is buffered by aiohttp until a parser claims
    # it; from here on the transport talks to our protocol (a half-close must not close it).
    request.protocol.set_parser(_TailFeed(protocol))  # type: ignore[arg-type]
    transport.set_protocol(protocol)
    return RawConnection(request, response, transport, protocol)


__all__ = [
    "API_VERSION", "MIN_API_VERSION", "ApiError", "PyEngineError", "api_version", "error_response",
    "json_response", "json_stream", "no_content", "qbool", "qfilters", "qint", "read_json",
    "send_json_line", "status_of", "stdcopy_frame", "take_over", "typed", "RawConnection",
]
