"""The aiohttp application: every route table of ``pyengine.api.routes``, each path served with
and without the ``/vX.Y`` prefix, and the middlewares every request passes (API version check,
authorization hook, Docker-style errors).
"""

from __future__ import annotations

import asyncio
import importlib
import pwd
import socket
import struct
from typing import Any

from aiohttp import web

from pyengine.api.http import API_VERSION, MIN_API_VERSION, ApiError, error_response, status_of, version_tuple
from pyengine.errors import PyEngineError
from pyengine.log import get_logger

log = get_logger("pyengine.api")

#: route modules, each exporting ``routes``: an aiohttp ``RouteTableDef``
ROUTE_MODULES = ("system", "containers", "exec", "images", "networks", "volumes", "build")

#: the largest request body read into memory (JSON bodies); tar uploads are streamed
MAX_JSON_BODY = 16 * 1024 * 1024


def _route_tables() -> list[Any]:
    tables = []
    for name in ROUTE_MODULES:
        try:
            module = importlib.import_module(f"pyengine.api.routes.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pyengine.api.routes.{name}":
                raise
            continue
        tables.append(module.routes)
    return tables


def _peer_user(request: web.Request) -> str | None:
    """The authenticated user: the TLS client certificate's subject, or the Unix peer's name."""
    return request.get("peer_user")


_user_names: dict[int, str] = {}


def _user_name(uid: int) -> str:
    name = _user_names.get(uid)
    if name is None:
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        _user_names[uid] = name
    return name


def _subject(cert: dict[str, Any]) -> str:
    """A certificate's subject as ``CN=alice,O=example`` (RFC 4514 order: most specific first)."""
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
             "localityName": "L", "stateOrProvinceName": "ST", "emailAddress": "emailAddress"}
    parts = [f"{short.get(key, key)}={value}" for rdn in cert.get("subject", ()) for key, value in rdn]
    return ",".join(reversed(parts))


def peer_of(transport: Any) -> str | None:
    """Who is at the other end: the Unix peer's user name (SO_PEERCRED), or the subject of the
    client certificate TLS verified; None for plain TCP."""
    if transport is None:
        return None
    cert = transport.get_extra_info("peercert")
    if cert:
        return _subject(cert)
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        return _user_name(uid)
    return None


@web.middleware
async def peer(request: web.Request, handler: Any) -> web.StreamResponse:
    """``request["peer_user"]``: the peer's user, read from the connection (see :func:`peer_of`)."""
    request["peer_user"] = peer_of(request.transport)
    return await handler(request)


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure as dockerd answers it: ``{"message": ...}`` and its status, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404 and request.match_info.route.resource is None:
            return error_response(404, "page not found")
        if exc.status == 413:
            return error_response(413, "request body too large")
        return error_response(exc.status, exc.text or exc.reason)
    except ApiError as exc:
        return error_response(exc.status, exc.message)
    except PyEngineError as exc:
        return error_response(status_of(exc), str(exc))
    except (ConnectionError, TimeoutError):
        raise
    except Exception as exc:  # a bug: logged with its traceback, answered as a 500
        log.exception("api.internal_error", method=request.method, path=request.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


@web.middleware
async def versions(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuse API versions below the minimum and above ours, as dockerd does."""
    asked = request.match_info.get("version")
    if asked:
        wanted = version_tuple(asked)
        if wanted < version_tuple(MIN_API_VERSION):
            raise ApiError(400, f"client version {asked} is too old. Minimum supported API version is "
                                f"{MIN_API_VERSION}, please upgrade your client to a newer version")
        if wanted > version_tuple(API_VERSION):
            raise ApiError(400, f"client version {asked} is too new. Maximum supported API version is "
                                f"{API_VERSION}")
    response = await handler(request)
    return response


@web.middleware
async def authorize(request: web.Request, handler: Any) -> web.StreamResponse:
    """The ``pyengine_authorize_request`` hook, for every request; a refusal is a 403. Without
    a plugin implementing it, the request goes on at once (no hop through the thread pool)."""
    backend = request.app["backend"]
    plugins = backend.engine.plugins
    if not plugins.authorizes():
        return await handler(request)
    path = request.path
    asked = request.match_info.get("version")
    if asked:
        path = path[len(asked) + 2:]
    reason = await backend.run(plugins.authorize_request, request.method, path, _peer_user(request))
    if reason:
        raise ApiError(403, f"authorization denied by plugin: {reason}")
    return await handler(request)


async def _on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Api-Version", API_VERSION)
    response.headers["Server"] = (f"pyengine/{_version()} (linux)")
    response.headers.setdefault("Docker-Experimental", "false")
    response.headers.setdefault("Ostype", "linux")


def _version() -> str:
    from pyengine import __version__

    return __version__


async def _close_backend(app: web.Application) -> None:
    app["backend"].close()


async def _on_shutdown(app: web.Application) -> None:
    # Streams that would otherwise run forever (events, logs -f, stats) watch this and end,
    # so that a SIGTERM waits only for requests that finish by themselves.
    app["shutdown"].set()


def make_app(backend: Any) -> web.Application:
    """The application serving ``backend``'s engine; every route twice (with ``/v{version}``)."""
    app = web.Application(middlewares=[errors, peer, versions, authorize], client_max_size=MAX_JSON_BODY)
    app["backend"] = backend
    #: set when the daemon stops: endless streams end (see _on_shutdown)
    app["shutdown"] = asyncio.Event()
    for table in _route_tables():
        for route in table:
            kwargs = dict(route.kwargs)
            kwargs.pop("name", None)
            app.router.add_route(route.method, route.path, route.handler, **kwargs)
            app.router.add_route(route.method, r"/v{version:[0-9]+(\.[0-9]+)*}" + route.path, route.handler,
                                 **kwargs)
    app.on_response_prepare.append(_on_response_prepare)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_close_backend)
    return app
