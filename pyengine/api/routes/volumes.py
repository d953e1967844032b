"""Volume routes: list, create, inspect, delete, prune.

Each handler decodes the request, calls one verb of ``pyengine.containers.volume_verbs`` in
the pool, and encodes dockerd's JSON.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pyengine.api.http import ApiError, json_response, qbool, qfilters, read_json, typed

routes = web.RouteTableDef()


def _backend(request: web.Request) -> Any:
    return request.app["backend"]


@routes.get("/volumes")
async def list_volumes(request: web.Request) -> web.Response:
    from pyengine.containers import volume_verbs

    backend = _backend(request)
    found = await backend.run(volume_verbs.list_volumes, backend.engine, qfilters(request))
    return json_response({"Volumes": found, "Warnings": []})


@routes.post("/volumes/create")
async def create_volume(request: web.Request) -> web.Response:
    from pyengine.containers import volume_verbs

    backend = _backend(request)
    body = await read_json(request)
    labels = typed(body, "Labels", dict, {}) or {}
    options = typed(body, "DriverOpts", dict, {}) or {}
    if any(not isinstance(v, str) for v in [*labels.values(), *options.values()]):
        raise ApiError(400, "json: cannot unmarshal into field Labels/DriverOpts of type map[string]string")
    record = await backend.run(volume_verbs.create_volume, backend.engine, typed(body, "Name", str, ""),
                               typed(body, "Driver", str, ""), options, labels)
    return json_response(record, status=201)


@routes.get("/volumes/{name}")
async def inspect_volume(request: web.Request) -> web.Response:
    from pyengine.containers import volume_verbs

    backend = _backend(request)
    return json_response(await backend.run(volume_verbs.get_volume, backend.engine, request.match_info["name"]))


@routes.delete("/volumes/{name}")
async def delete_volume(request: web.Request) -> web.Response:
    from pyengine.containers import volume_verbs

    backend = _backend(request)
    await backend.run(volume_verbs.remove_volume, backend.engine, request.match_info["name"], qbool(request, "force"))
    return web.Response(status=204)


@routes.post("/volumes/prune")
async def prune_volumes(request: web.Request) -> web.Response:
    from pyengine.containers import volume_verbs

    backend = _backend(request)
    removed, reclaimed = await backend.run(volume_verbs.prune_volumes, backend.engine, qfilters(request))
    return json_response({"VolumesDeleted": removed, "SpaceReclaimed": reclaimed})
