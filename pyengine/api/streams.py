"""Bridges between blocking engine work in the pool and a streaming HTTP exchange: progress
events sent as JSON lines while a pull, push, load or build runs; a request body spooled to a
file (tar uploads are never held in memory); a response body written by a blocking writer
(``save``'s tar stream).

Used by the image and build routes; imports aiohttp, imported only by the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

from aiohttp import web

from pyengine.api.http import json_stream, send_json_line
from pyengine.errors import PyEngineError
from pyengine.log import get_logger

log = get_logger("pyengine.api")

SPOOL_CHUNK = 1 << 20


def error_event(message: str, code: int | None = None) -> dict[str, Any]:
    """An error inside a JSON progress stream, as dockerd writes it."""
    detail: dict[str, Any] = {"message": message}
    if code is not None:
        detail = {"code": code, "message": message}
    return {"errorDetail": detail, "error": message}


async def stream_events(request: web.Request, backend: Any, work: Callable[[Callable[[dict], None]], Any],
                        error_code: Callable[[BaseException], int | None] | None = None) -> web.StreamResponse:
    """Run ``work(emit)`` in the pool and send every event it emits as a JSON line.

    The response starts with the first event: a failure before it is an ordinary HTTP error
    (a missing image is a 404, as dockerd answers), a failure after it is an error line in
    the stream (the status is already sent).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def emit(event: dict) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("event", event))

    def run() -> None:
        try:
            work(emit)
        except BaseException as exc:  # handed to the event loop, which answers it
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
        else:
            loop.call_soon_threadsafe(queue.put_nowait, ("done", None))

    job = asyncio.ensure_future(backend.run(run))
    response: web.StreamResponse | None = None
    client_gone = False
    try:
        while True:
            kind, value = await queue.get()
            if kind == "done":
                break
            if kind == "error":
                if response is None:
                    raise value
                if isinstance(value, PyEngineError):
                    message = str(value)
                else:
                    log.error("api.stream_failed", path=request.path, error=repr(value))
                    message = f"internal error: {type(value).__name__}: {value}"
                if not client_gone:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await send_json_line(response, error_event(message, error_code(value) if error_code else None))
                break
            if response is None:
                response = await json_stream(request)
            if not client_gone:
                try:
                    await send_json_line(response, value)
                except (ConnectionError, RuntimeError):
                    client_gone = True  # the work finishes anyway, as a pull does in dockerd
    finally:
        await job
    if response is None:
        response = await json_stream(request)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response


async def spool_body(request: web.Request, backend: Any, directory: str | None = None) -> str:
    """The request body written to a temp file (the caller removes it); its path."""
    fd, path = tempfile.mkstemp(prefix="pyengine-upload-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            while True:
                chunk = await request.content.read(SPOOL_CHUNK)
                if not chunk:
                    break
                await backend.run(f.write, chunk)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    return path


class BodyReader(io.RawIOBase):
    """The request body as a blocking binary stream, for engine code running in the pool."""

    def __init__(self, request: web.Request, loop: asyncio.AbstractEventLoop) -> None:
        self.request, self.loop = request, loop

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        future = asyncio.run_coroutine_threadsafe(self.request.content.read(len(buffer)), self.loop)
        data = future.result()
        buffer[:len(data)] = data
        return len(data)


class ResponseWriter(io.RawIOBase):
    """A blocking binary stream whose bytes go to a prepared streaming response."""

    def __init__(self, response: web.StreamResponse, loop: asyncio.AbstractEventLoop) -> None:
        self.response, self.loop = response, loop

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        asyncio.run_coroutine_threadsafe(self.response.write(chunk), self.loop).result()
        return len(chunk)


async def stream_writer(request: web.Request, backend: Any, content_type: str,
                        write: Callable[[IO[bytes]], Any]) -> web.StreamResponse:
    """A 200 response whose body ``write(stream)`` produces in the pool (buffered in 1 MiB)."""
    response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
    response.enable_chunked_encoding()
    await response.prepare(request)
    loop = asyncio.get_running_loop()

    def run() -> None:
        with io.BufferedWriter(ResponseWriter(response, loop), buffer_size=SPOOL_CHUNK) as out:
            write(out)

    try:
        await backend.run(run)
    except (ConnectionError, RuntimeError):
        return response  # the client went away mid-stream
    except Exception as exc:
        # The status is sent: all that is left is to cut the stream, so the client sees a
        # truncated archive rather than a complete-looking one.
        log.error("api.stream_failed", path=request.path, error=repr(exc))
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
