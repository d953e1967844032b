"""System routes: /_ping, /version, /info, /system/df, /auth, /events, and the swarm endpoints a
non-swarm dockerd answers."""

from __future__ import annotations

import asyncio
import platform

from aiohttp import web

from pyengine.api.http import (
    API_VERSION,
    MIN_API_VERSION,
    ApiError,
    error_response,
    json_response,
    json_stream,
    qfilters,
    read_json,
    send_json_line,
    typed,
)
from pyengine.errors import UsageError

routes = web.RouteTableDef()

_PING_HEADERS = {"Api-Version": API_VERSION, "Ostype": "linux", "Builder-Version": "1",
                 "Docker-Experimental": "false", "Cache-Control": "no-cache, no-store, must-revalidate",
                 "Pragma": "no-cache"}


@routes.get("/_ping")
async def ping(request: web.Request) -> web.Response:
    return web.Response(text="OK", headers=_PING_HEADERS)


@routes.head("/_ping")
async def ping_head(request: web.Request) -> web.Response:
    return web.Response(headers={**_PING_HEADERS, "Content-Type": "text/plain; charset=utf-8",
                                 "Content-Length": "0"})


def version_document() -> dict:
    from pyengine import __version__

    kernel = platform.release()
    return {
        "Platform": {"Name": "pyengine"},
        "Components": [{"Name": "Engine", "Version": __version__,
                        "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                                    "Os": "linux", "Arch": _arch(), "KernelVersion": kernel,
                                    "GoVersion": f"python{platform.python_version()}"}}],
        "Version": __version__, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "", "GoVersion": f"python{platform.python_version()}", "Os": "linux", "Arch": _arch(),
        "KernelVersion": kernel, "BuildTime": "",
    }


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@routes.get("/version")
async def version(request: web.Request) -> web.Response:
    return json_response(version_document())


@routes.get("/info")
async def info(request: web.Request) -> web.Response:
    from pyengine import sysinfo

    backend = request.app["backend"]
    return json_response(await backend.run(sysinfo.system_info, backend.engine))


@routes.get("/system/df")
async def disk_usage(request: web.Request) -> web.Response:
    from pyengine import sysinfo

    backend = request.app["backend"]
    types = request.query.getall("type", []) or None
    return json_response(await backend.run(sysinfo.disk_usage, backend.engine, types))


@routes.post("/auth")
async def auth(request: web.Request) -> web.Response:
    """Check credentials against a registry (the daemon stores none: the client keeps them)."""
    from pyengine.registry import verbs
    from pyengine.registry.client import RegistryAuthError

    body = await read_json(request, required=True)
    username = typed(body, "username", str, "")
    password = typed(body, "password", str, "")
    server = typed(body, "serveraddress", str, "") or "docker.io"
    backend = request.app["backend"]
    try:
        await backend.run(verbs.check_login, backend.engine, server, username, password)
    except RegistryAuthError as exc:
        raise ApiError(401, f"login attempt to {server} failed with status: 401 Unauthorized ({exc})") from None
    return json_response({"Status": "Login Succeeded", "IdentityToken": ""})


# -- events ----------------------------------------------------------------------------------
def _time_query(request: web.Request, name: str, now_ns: int) -> int | None:
    from pyengine.events import parse_time

    value = request.query.get(name)
    if not value:
        return None
    try:
        return parse_time(value, now_ns)
    except UsageError as exc:
        raise ApiError(400, f"invalid {name}: {exc}") from None


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    """The journal's events from ``since`` to ``until``, then new ones as they come (until
    ``until`` when given, else until the client goes or the daemon stops)."""
    import time

    from pyengine.events import POLL_SECONDS, EventFilter, journal_for

    backend = request.app["backend"]
    now = time.time_ns()
    since_ns = _time_query(request, "since", now)
    until_ns = _time_query(request, "until", now)
    event_filter = EventFilter(qfilters(request))
    journal = journal_for(backend.config.run_root)
    follower = await backend.run(journal.follower) if until_ns is None or until_ns > now else None
    try:
        replay = []
        if since_ns is not None or until_ns is not None:
            replay = await backend.run(journal.read, since_ns, min(until_ns or now, now), event_filter)
        response = await json_stream(request)
        for event in replay:
            await send_json_line(response, event)
        shutdown = request.app["shutdown"]
        while follower is not None and not shutdown.is_set():
            if until_ns is not None and time.time_ns() > until_ns:
                break
            if request.transport is None or request.transport.is_closing():
                return response
            for event in follower.poll():
                if since_ns is not None and event["timeNano"] <= now:
                    continue  # replayed above
                if until_ns is not None and event["timeNano"] > until_ns:
                    break
                if event_filter.match(event):
                    await send_json_line(response, event)
            await asyncio.sleep(POLL_SECONDS)
        await response.write_eof()
        return response
    finally:
        if follower is not None:
            follower.close()


_NOT_SWARM = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect " \
             "this node to swarm and try again."


async def not_swarm(request: web.Request) -> web.Response:
    return error_response(503, _NOT_SWARM)


for _path in ("/swarm", "/swarm/init", "/swarm/join", "/swarm/leave", "/swarm/update", "/swarm/unlockkey",
              "/swarm/unlock", "/nodes", "/nodes/{id}", "/services", "/services/create", "/services/{id}",
              "/services/{id}/update", "/services/{id}/logs", "/tasks", "/tasks/{id}", "/tasks/{id}/logs",
              "/secrets", "/secrets/create", "/secrets/{id}", "/secrets/{id}/update", "/configs",
              "/configs/create", "/configs/{id}", "/configs/{id}/update"):
    routes.route("*", _path)(not_swarm)

