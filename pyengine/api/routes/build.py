"""Build routes: ``POST /build`` (the legacy builder protocol of the docker CLI without buildx
and of docker-py: a tar context as the body, a JSON stream of ``{"stream": ...}`` lines back,
``{"aux": {"ID": ...}}`` for the image) and ``POST /build/prune``.

The handler decodes the query into the builder's options, spools the context to a temp file,
runs ``pyengine.build.executor.build`` in the pool and sends its events as dockerd does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Any

from aiohttp import web

from pyengine.api.http import ApiError, json_response, qbool, qfilters
from pyengine.api.streams import spool_body, stream_events

routes = web.RouteTableDef()

_NON_ZERO = re.compile(r"returned a non-zero code: (\d+)")


def _json_query(request: web.Request, name: str, kind: type) -> Any:
    raw = request.query.get(name)
    if not raw:
        return kind()
    try:
        value = json.loads(raw)
    except ValueError:
        raise ApiError(400, f"invalid {name}: {raw!r} is not JSON") from None
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise ApiError(400, f"invalid {name}: expected a JSON {'object' if kind is dict else 'list'}")
    return value


def _options(request: web.Request) -> Any:
    from pyengine.build.executor import BuildOptions
    from pyengine.errors import UsageError
    from pyengine.images.reference import parse_reference

    if request.query.get("remote"):
        raise ApiError(400, "a remote build context (remote=) is not supported: send the context as the body")
    tags = request.query.getall("t", [])
    for tag in tags:
        try:
            if parse_reference(tag).digest:
                raise ApiError(400, f"invalid tag {tag!r}: a tag cannot carry a digest")
        except UsageError as exc:
            raise ApiError(400, str(exc)) from None
    build_args = _json_query(request, "buildargs", dict)
    labels = _json_query(request, "labels", dict)
    for what, mapping in (("buildargs", build_args), ("labels", labels)):
        if any(v is not None and not isinstance(v, str) for v in mapping.values()):
            raise ApiError(400, f"invalid {what}: values must be strings")
    _json_query(request, "cachefrom", list)  # accepted; the step cache is local
    hosts = [h for value in request.query.getall("extrahosts", []) for h in value.split(",") if h]
    for entry in hosts:
        name, sep, address = entry.partition(":")
        if not name or not sep or not address:
            raise ApiError(400, f"invalid extrahosts entry {entry!r}: use HOST:IP")
    platform = request.query.get("platform")
    if platform:
        from pyengine.registry.transfer import host_platform, parse_platform

        try:
            wanted, host = parse_platform(platform), host_platform()
        except UsageError as exc:
            raise ApiError(400, str(exc)) from None
        if (wanted.os, wanted.architecture) != (host.os, host.architecture):
            raise ApiError(400, f"cannot build for platform {platform}: this engine builds for {host}")
    network = request.query.get("networkmode") or ""
    return BuildOptions(tags=tags, build_args=build_args, target=request.query.get("target") or None,
                        no_cache=qbool(request, "nocache"), pull=qbool(request, "pull"), labels=labels,
                        network="" if network == "default" else network, extra_hosts=hosts)


def _error_code(exc: BaseException) -> int | None:
    match = _NON_ZERO.search(str(exc))
    return int(match.group(1)) if match else None


@routes.post("/build")
async def build(request: web.Request) -> web.StreamResponse:
    from pyengine.build.context import BuildContext
    from pyengine.build.dockerfile import parse
    from pyengine.build.executor import build as run_build

    backend = _backend(request)
    options = _options(request)
    quiet = qbool(request, "q")
    dockerfile = request.query.get("dockerfile") or "Dockerfile"
    if "://" in dockerfile:
        raise ApiError(400, "a remote Dockerfile is not supported: put it in the context")
    engine = backend.engine
    path = await spool_body(request, backend)

    def work(emit: Any) -> None:
        at_line_start = [True]

        def on_event(kind: str, text: str) -> None:
            if kind == "aux":
                emit({"aux": {"ID": text}})
                return
            if quiet:
                return
            if kind == "progress":  # a base image's pull, dockerd's events as they are
                emit(text)
                return
            if kind == "output":
                emit({"stream": text})
                at_line_start[0] = text.endswith("\n")
                return
            prefix = "" if at_line_start[0] else "\n"
            at_line_start[0] = True
            emit({"stream": f"{prefix}{'[Warning] ' if kind == 'warning' else ''}{text}\n"})

        try:
            with open(path, "rb") as body:
                context = BuildContext.from_tar(body, dockerfile)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        try:
            text = context.read_dockerfile(dockerfile)
            image = run_build(engine, parse(text, os.path.basename(dockerfile)), context, options, on_event)
        finally:
            context.close()
        if quiet:
            emit({"stream": f"{image.id}\n"})

    return await stream_events(request, backend, work, error_code=_error_code)


def _backend(request: web.Request) -> Any:
    return request.app["backend"]


@routes.post("/build/prune")
async def build_prune(request: web.Request) -> web.Response:
    from pyengine.build.cache import BuildCache

    backend = _backend(request)
    for key in qfilters(request):
        if key not in ("until", "id", "parent", "type", "description", "inuse", "shared", "private"):
            raise ApiError(400, f"invalid filter '{key}'")
    engine = backend.engine
    removed, freed = await backend.run(lambda: BuildCache(engine.config.data_root).prune(engine.images))
    return json_response({"CachesDeleted": removed, "SpaceReclaimed": freed})
