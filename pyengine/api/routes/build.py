"""Build routes: ``POST /build`` (the legacy builder protocol of the docker CLI without
buildx: a tar context as the body, a JSON stream of ``{"stream": ...}`` lines back) and
``POST /build/prune``.

The builder is ``pyengine.build.executor``; until it is part of the engine these answer 501.
"""

from __future__ import annotations

import importlib.util

from aiohttp import web

from pyengine.api.http import ApiError

routes = web.RouteTableDef()


def _builder_available() -> bool:
    return importlib.util.find_spec("pyengine.build.executor") is not None


@routes.post("/build")
async def build(request: web.Request) -> web.StreamResponse:
    if not _builder_available():
        raise ApiError(501, "the builder is not available yet")
    raise ApiError(501, "the builder is not wired to the API yet")


@routes.post("/build/prune")
async def build_prune(request: web.Request) -> web.Response:
    if not _builder_available():
        raise ApiError(501, "the builder is not available yet")
    raise ApiError(501, "the builder is not wired to the API yet")
