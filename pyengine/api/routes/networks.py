"""Network routes: list, inspect, create, delete, connect, disconnect, prune.

Each handler decodes the request, calls one verb of ``pyengine.network.verbs`` (or the
container networking verbs for connect and disconnect) in the pool, and encodes dockerd's JSON.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pyengine.api.http import ApiError, json_response, qfilters, read_json, typed

routes = web.RouteTableDef()


def _backend(request: web.Request) -> Any:
    return request.app["backend"]


async def _refusals(call: Any) -> Any:
    from pyengine.network.verbs import NetworkRefused

    try:
        return await call
    except NetworkRefused as exc:
        raise ApiError(403, str(exc)) from None


@routes.get("/networks")
async def list_networks(request: web.Request) -> web.Response:
    from pyengine.network import verbs

    backend = _backend(request)
    return json_response(await backend.run(verbs.list_networks, backend.engine, qfilters(request)))


@routes.get("/networks/{id}")
async def inspect_network(request: web.Request) -> web.Response:
    from pyengine.network import verbs

    backend = _backend(request)
    return json_response(await backend.run(verbs.get_network, backend.engine, request.match_info["id"]))


@routes.post("/networks/create")
async def create_network(request: web.Request) -> web.Response:
    from pyengine.network import verbs

    backend = _backend(request)
    body = await read_json(request, required=True)
    name = typed(body, "Name", str, "")
    ipam = typed(body, "IPAM", dict, {})
    config = typed(ipam, "Config", list, [])
    if any(not isinstance(c, dict) for c in config):
        raise ApiError(400, "json: cannot unmarshal into field IPAM.Config of type []network.IPAMConfig")
    if typed(ipam, "Driver", str, "default") not in ("", "default"):
        raise ApiError(400, f"IPAM driver {ipam['Driver']!r} is not available: only the default one is")
    for key in ("Options", "Labels"):
        if any(not isinstance(v, str) for v in (typed(body, key, dict, {}) or {}).values()):
            raise ApiError(400, f"json: cannot unmarshal into field {key} of type map[string]string")
    record = await _refusals(backend.run(
        verbs.create_network, backend.engine, name, typed(body, "Driver", str, "") or "bridge",
        internal=typed(body, "Internal", bool, False), ipam_config=config,
        options=typed(body, "Options", dict, {}), labels=typed(body, "Labels", dict, {}),
        enable_ipv6=typed(body, "EnableIPv6", bool, False)))
    return json_response({"Id": record.id, "Warning": ""}, status=201)


@routes.delete("/networks/{id}")
async def delete_network(request: web.Request) -> web.Response:
    from pyengine.network import verbs

    backend = _backend(request)
    await _refusals(backend.run(verbs.remove_network, backend.engine, request.match_info["id"]))
    return web.Response(status=204)


def _containers(backend: Any) -> Any:
    from pyengine.containers.engine import Containers

    return Containers(backend.engine)


@routes.post("/networks/{id}/connect")
async def connect(request: web.Request) -> web.Response:
    from pyengine.containers import networking
    from pyengine.network.verbs import reconciled_manager

    backend = _backend(request)
    body = await read_json(request, required=True)
    container = typed(body, "Container", str, "")
    if not container:
        raise ApiError(400, "a container is required (Container)")
    endpoint = typed(body, "EndpointConfig", dict, {}) or {}
    aliases = typed(endpoint, "Aliases", list, []) or []
    ipam = typed(endpoint, "IPAMConfig", dict, {}) or {}
    ip = typed(ipam, "IPv4Address", str, "") or typed(endpoint, "IPAddress", str, "") or None

    def join() -> None:
        reconciled_manager(backend.engine)
        networking.connect(_containers(backend), request.match_info["id"], container,
                           [str(a) for a in aliases], ip)

    await backend.run(join)
    return web.Response(status=200)


@routes.post("/networks/{id}/disconnect")
async def disconnect(request: web.Request) -> web.Response:
    from pyengine.containers import networking
    from pyengine.network.verbs import reconciled_manager

    backend = _backend(request)
    body = await read_json(request, required=True)
    container = typed(body, "Container", str, "")
    if not container:
        raise ApiError(400, "a container is required (Container)")
    typed(body, "Force", bool, False)

    def leave() -> None:
        reconciled_manager(backend.engine)
        networking.disconnect(_containers(backend), request.match_info["id"], container)

    await backend.run(leave)
    return web.Response(status=200)


@routes.post("/networks/prune")
async def prune_networks(request: web.Request) -> web.Response:
    from pyengine.network import verbs

    backend = _backend(request)
    removed = await backend.run(verbs.prune_networks, backend.engine, qfilters(request))
    return json_response({"NetworksDeleted": removed})
