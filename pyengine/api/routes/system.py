"""System routes: /_ping, /version, /info, and the swarm endpoints a non-swarm dockerd answers."""

from __future__ import annotations

import platform

from aiohttp import web

from pyengine.api.http import API_VERSION, MIN_API_VERSION, error_response, json_response

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

