"""Exec routes of the Docker Engine API: create an exec record, start it (the connection is
taken over and relayed to the process's pipes or pty, which the engine owns), resize its pty,
inspect it.

The engine side is ``pyengine.containers.exec`` (ExecStore, start_exec -> ExecSession,
inspect_exec); this module only moves bytes between the session's descriptors and the
client, in the stdcopy framing without a tty and raw with one.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import web

from pyengine.api.http import ApiError, json_response, qint, read_json, stdcopy_frame, take_over, typed
from pyengine.api.routes.containers import MULTIPLEXED_STREAM, RAW_STREAM, _call, parse_detach_keys
from pyengine.containers.attach import DetachScanner
from pyengine.errors import Conflict, NotFound

routes = web.RouteTableDef()

#: exec sessions this daemon runs, for resize: exec ID -> ExecSession
_sessions: dict[str, Any] = {}

#: after the process exited, how long quiet output is waited for (its background children
#: may hold the pipes open), as the engine's own relay does
_DRAIN_AFTER_EXIT = 0.2


def _store(request: web.Request) -> Any:
    from pyengine.containers.exec import ExecStore

    return ExecStore(request.app["backend"].engine.config.run_root)


async def _exec_call(request: web.Request, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """An engine call; a missing exec record in dockerd's words."""
    try:
        return await _call(request, fn, *args, **kwargs)
    except NotFound as exc:
        text = str(exc)
        if text.startswith("no such exec instance: "):
            raise ApiError(404, "No such exec instance: " + text[len("no such exec instance: "):]) from None
        raise


def _create(containers: Any, store: Any, ref: str, config: dict[str, Any]) -> str:
    record = containers.get(ref)
    if record.state.status == "paused":
        raise Conflict(f"Container {record.id} is paused, unpause the container before exec")
    if record.state.status != "running" or not record.state.pid:
        raise Conflict(f"Container {record.id} is not running")
    return store.create(record.id, config)


@routes.post("/containers/{id}/exec")
async def create(request: web.Request) -> web.Response:
    from pyengine.containers.exec import EXEC_CONFIG_KEYS

    body = await read_json(request, required=True)
    for key, kind in (("Cmd", (list, str)), ("Env", list), ("User", str), ("WorkingDir", str), ("Tty", bool),
                      ("Privileged", bool), ("AttachStdin", bool), ("AttachStdout", bool),
                      ("AttachStderr", bool), ("DetachKeys", str), ("ConsoleSize", list)):
        typed(body, key, kind)
    config = {k: body[k] for k in EXEC_CONFIG_KEYS if body.get(k) is not None}  # dockerd ignores the rest
    if body.get("DetachKeys"):
        parse_detach_keys(body["DetachKeys"])
    containers = request.app["backend"].containers()
    exec_id = await _call(request, _create, containers, _store(request), request.match_info["id"], config)
    return json_response({"Id": exec_id}, status=201)


@routes.get("/exec/{id}/json")
async def inspect(request: web.Request) -> web.Response:
    from pyengine.containers.exec import inspect_exec

    record = await _exec_call(request, _store(request).load, request.match_info["id"])
    return json_response(inspect_exec(record))


@routes.post("/exec/{id}/resize")
async def resize(request: web.Request) -> web.Response:
    height, width = qint(request, "h", 0), qint(request, "w", 0)
    exec_id = request.match_info["id"]
    await _exec_call(request, _store(request).load, exec_id)
    session = _sessions.get(exec_id)
    if session is None:
        raise ApiError(409, f"Exec {exec_id} is not running")
    if not (0 < height < 65536 and 0 < width < 65536):
        raise ApiError(400, f"invalid terminal size {height}x{width}")
    if session.tty_master is not None:
        await _call(request, session.resize, height, width)
    return web.Response(status=200, text="", content_type="text/plain")


@routes.post("/exec/{id}/start")
async def start(request: web.Request) -> web.StreamResponse:
    from pyengine.containers.exec import start_exec

    body = await read_json(request)
    detach = bool(typed(body, "Detach", bool, False))
    size = typed(body, "ConsoleSize", list)
    exec_id = request.match_info["id"]
    store = _store(request)
    record = await _exec_call(request, store.load, exec_id)
    config = record["Config"]
    containers = request.app["backend"].containers()
    console = (int(size[0]), int(size[1])) if size and len(size) == 2 else None
    if detach:
        session = await _exec_call(request, start_exec, containers, exec_id, detach=True, console_size=console)
        asyncio.ensure_future(_reap(request, session))
        return web.Response(status=200)
    await _call(request, _check_startable, containers, record)
    # As dockerd: the connection is taken over before the process starts, so its first
    # output never shares a read with the 101's headers (docker-py would lose it).
    tty = bool(config.get("Tty"))
    conn = await take_over(request, RAW_STREAM if tty else MULTIPLEXED_STREAM)
    try:
        session = await _exec_call(request, start_exec, containers, exec_id, detach=False, console_size=console)
    except Exception as exc:  # noqa: BLE001 - the status is sent: the error goes in the stream, as dockerd's
        await conn.write(str(exc).encode() + b"\n" if tty else stdcopy_frame(2, str(exc).encode() + b"\n"))
        await conn.close()
        return conn.response
    _sessions[exec_id] = session
    try:
        await _relay(request, session, conn, session.tty_master is not None,
                     parse_detach_keys(config.get("DetachKeys") or None),
                     want_stdout=config.get("AttachStdout", True), want_stderr=config.get("AttachStderr", True))
        await conn.close()
        return conn.response
    finally:
        _sessions.pop(exec_id, None)


def _check_startable(containers: Any, record: dict[str, Any]) -> None:
    """Refuse, before the connection is taken over, an exec that ran or whose container stopped."""
    if record["Running"] or record["ExitCode"] is not None or record["Pid"]:
        raise Conflict(f"Exec {record['ID']} has already been started")
    container = containers.get(record["ContainerID"])
    if container.state.status != "running" or not container.state.pid:
        raise Conflict(f"Container {container.id} is not running")


async def _reap(request: web.Request, session: Any) -> None:
    """A detached exec: reap it when it ends (its exit code goes to the record)."""
    try:
        await request.app["backend"].run(session.wait)
    finally:
        session.close()


async def _relay(request: web.Request, session: Any, conn: Any, tty: bool, keys: bytes, *,
                 want_stdout: bool, want_stderr: bool) -> None:
    """Client bytes to the session's stdin (or pty), its output to the client, until the
    output ended (or stayed quiet a moment after the process exited); then reap it."""
    loop = asyncio.get_running_loop()
    outputs: dict[int, int] = {}
    if session.tty_master is not None:
        outputs[session.tty_master] = 1
    else:
        for fd, stream in ((session.stdout_r, 1), (session.stderr_r, 2)):
            if fd is not None:
                outputs[fd] = stream
    feed = session.tty_master if session.tty_master is not None else session.stdin_w
    for fd in {*outputs, *([feed] if feed is not None else [])}:
        os.set_blocking(fd, False)
    chunks: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    pidfd = os.pidfd_open(session.pid)
    exited = asyncio.Event()
    detached = False

    def readable(fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: a pty whose other side is gone
            data = b""
        if not data:
            loop.remove_reader(fd)
        chunks.put_nowait((fd, data))

    for fd in outputs:
        loop.add_reader(fd, readable, fd)
    def on_exit() -> None:
        loop.remove_reader(pidfd)
        exited.set()

    loop.add_reader(pidfd, on_exit)

    async def from_client() -> None:
        nonlocal detached, feed
        scanner = DetachScanner(keys)
        while True:
            data = await conn.read()
            if not data:
                if feed is not None:
                    if feed == session.tty_master:
                        await _write_fd(feed, b"\x04")
                    else:
                        os.close(feed)
                        session.stdin_w = None
                    feed = None
                return
            data, detached = scanner.feed(data)
            if data and feed is not None:
                try:
                    await _write_fd(feed, data)
                except OSError:  # it closed its stdin
                    feed = None
            if detached:
                return

    feeding = asyncio.ensure_future(from_client())
    open_outputs = set(outputs)
    try:
        while open_outputs and not detached:
            timeout = None
            if exited.is_set():
                timeout = _DRAIN_AFTER_EXIT
            getter = asyncio.ensure_future(chunks.get())
            waiters: set[asyncio.Future[Any]] = {getter, feeding} if not feeding.done() else {getter}
            exit_wait = None
            if not exited.is_set():
                exit_wait = asyncio.ensure_future(exited.wait())
                waiters.add(exit_wait)
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if exit_wait is not None and not exit_wait.done():
                exit_wait.cancel()
            if getter not in done:
                getter.cancel()
                if not done:
                    break  # exited, and the output stayed quiet
                continue
            fd, data = getter.result()
            if not data:
                open_outputs.discard(fd)
                continue
            stream = outputs[fd]
            if (stream == 1 and want_stdout) or (stream == 2 and want_stderr):
                if not await conn.write(data if tty else stdcopy_frame(stream, data)):
                    break
    finally:
        for fd in outputs:
            loop.remove_reader(fd)
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not feeding.done():
            feeding.cancel()
    if detached:
        asyncio.ensure_future(_reap(request, session))
        return
    session.close()
    await request.app["backend"].run(session.wait)


async def _write_fd(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _set_done, ready)
            try:
                await ready
            finally:
                loop.remove_writer(fd)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
