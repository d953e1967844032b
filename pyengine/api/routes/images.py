"""Image and distribution routes: list, inspect, history, create (pull, import), push, tag,
delete, prune, search, get (save), load, commit, and ``/distribution/{name}/json``.

Each handler decodes the request, calls one verb of ``pyengine.images.verbs``,
``pyengine.registry.verbs`` or the archive code through the backend's pool, and encodes
dockerd's JSON. Image names may hold slashes, a tag and a digest, hence ``{name:.+}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
from typing import Any

from aiohttp import web

from pyengine.api.http import ApiError, api_version, json_response, qbool, qfilters, qint
from pyengine.api.streams import BodyReader, spool_body, stream_events, stream_writer
from pyengine.errors import NotFound, UsageError

routes = web.RouteTableDef()


def _backend(request: web.Request) -> Any:
    return request.app["backend"]


def _ingesting_store(backend: Any) -> Any:
    """An image store object of its own for a request that ingests blobs (pull, import, load):
    a failure discards the blobs this object ingested, never a concurrent request's."""
    from pyengine.images.store import ImageStore

    return ImageStore.for_engine(backend.engine)


def _credentials(request: web.Request) -> Any:
    from pyengine.registry.verbs import decode_registry_auth

    return decode_registry_auth(request.headers.get("X-Registry-Auth"))


def _lines(out: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{verb: what} for verb, what in out]


# -- list, inspect, history ------------------------------------------------------------------
@routes.get("/images/json")
async def list_images(request: web.Request) -> web.Response:
    from pyengine.images import verbs

    backend = _backend(request)
    filters = qfilters(request)
    if "filter" in request.query:  # the pre-1.25 form of the reference filter
        filters.setdefault("reference", []).append(request.query["filter"])
    return json_response(await backend.run(verbs.list_images, backend.engine.images, filters, qbool(request, "all")))


@routes.get("/images/{name:.+}/json")
async def inspect_image(request: web.Request) -> web.Response:
    from pyengine.images import verbs

    backend = _backend(request)
    store = backend.engine.images

    def inspect() -> dict[str, Any]:
        return verbs.inspect(store, verbs.find_image(store, request.match_info["name"]), store_details=False)

    doc = await backend.run(inspect)
    if api_version(request) < (1, 45):
        # dropped in API 1.45; before it dockerd sends them, empty for an image no builder
        # container made (Compose 1.29 reads ContainerConfig.Volumes when it recreates)
        doc.setdefault("Container", "")
        doc.setdefault("ContainerConfig", _EMPTY_CONTAINER_CONFIG)
    return json_response(doc)


#: dockerd's zero container.Config, as image inspect below API 1.45 shows it
_EMPTY_CONTAINER_CONFIG: dict[str, Any] = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None, "Cmd": None,
    "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None,
}


@routes.get("/images/{name:.+}/history")
async def image_history(request: web.Request) -> web.Response:
    from pyengine.images import verbs

    backend = _backend(request)
    store = backend.engine.images

    def history() -> list[dict[str, Any]]:
        rows = verbs.history(verbs.find_image(store, request.match_info["name"]))
        for row in rows:
            row.pop("CreatedAt", None)
        return rows

    return json_response(await backend.run(history))


# -- create: pull or import ------------------------------------------------------------------
@routes.post("/images/create")
async def create_image(request: web.Request) -> web.StreamResponse:
    if request.query.get("fromSrc"):
        return await _import(request)
    from_image = request.query.get("fromImage")
    if not from_image:
        raise ApiError(400, "either fromImage or fromSrc is required")
    from pyengine.registry import verbs

    backend = _backend(request)
    engine = backend.engine
    credentials = _credentials(request)
    platform = request.query.get("platform") or None
    tag = request.query.get("tag") or None
    try:
        ref = verbs.pull_reference(from_image, tag)
    except UsageError as exc:
        raise ApiError(400, str(exc)) from None

    store = _ingesting_store(backend)

    def pull(emit: Any) -> None:
        refs = [ref]
        if not ref.tag and not ref.digest:  # no tag at all: every tag, as dockerd pulls them
            refs = [ref.with_tag(t) for t in sorted(verbs.repository_tags(engine, ref, credentials, False))]
            if not refs:
                raise NotFound(f"{ref.familiar()} has no tags")
        for one in refs:
            verbs.pull_image(engine, store, one, platform, credentials=credentials,
                             stored_credentials=False, on_event=emit)

    return await stream_events(request, backend, pull)


async def _import(request: web.Request) -> web.StreamResponse:
    from pyengine.images import verbs

    source = request.query["fromSrc"]
    if source != "-":
        raise ApiError(400, "importing from a URL is not supported: send the tarball as the body (fromSrc=-)")
    backend = _backend(request)
    repo = request.query.get("repo") or None
    tag = request.query.get("tag") or None
    target = None
    if repo:
        target = f"{repo}@{tag}" if tag and tag.startswith("sha256:") else f"{repo}:{tag}" if tag else repo
    changes = request.query.getall("changes", [])
    message = request.query.get("message", "")
    store = _ingesting_store(backend)
    body = io.BufferedReader(BodyReader(request, asyncio.get_running_loop()))  # a binary file (IO[bytes])

    def run(emit: Any) -> None:
        image = verbs.import_image(store, body, target, message, changes)
        emit({"status": image.id})

    return await stream_events(request, backend, run)


# -- push, tag, delete, prune ----------------------------------------------------------------
@routes.post("/images/{name:.+}/push")
async def push_image(request: web.Request) -> web.StreamResponse:
    from pyengine.images.reference import parse_reference
    from pyengine.registry import verbs

    backend = _backend(request)
    engine = backend.engine
    credentials = _credentials(request)
    name = request.match_info["name"]
    tag = request.query.get("tag") or None
    try:
        repo = parse_reference(name, default_tag=False)
    except UsageError as exc:
        raise ApiError(400, str(exc)) from None
    if tag:
        local = [f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"]
    elif repo.tag or repo.digest:
        local = [name]
    else:  # every local tag of the repository, as dockerd pushes them
        local = sorted(parse_reference(t).familiar() for t in engine.images.tags()
                       if parse_reference(t).repository == repo.repository)
        if not local:
            raise NotFound(f"An image does not exist locally with the tag: {name}")

    def push(emit: Any) -> None:
        for one in local:
            verbs.push_image(engine, one, credentials=credentials, stored_credentials=False, on_event=emit)

    return await stream_events(request, backend, push)


@routes.post("/images/{name:.+}/tag")
async def tag_image(request: web.Request) -> web.Response:
    from pyengine.images import verbs

    backend = _backend(request)
    repo = request.query.get("repo")
    if not repo:
        raise ApiError(400, "repository name must have at least one component")
    tag = request.query.get("tag") or ""
    target = f"{repo}:{tag}" if tag else repo
    store = backend.engine.images

    def tag_it() -> None:
        verbs.find_image(store, request.match_info["name"])
        store.tag(request.match_info["name"], target)

    await backend.run(tag_it)
    return web.Response(status=201)


@routes.delete("/images/{name:.+}")
async def delete_image(request: web.Request) -> web.Response:
    from pyengine.images import verbs

    backend = _backend(request)
    name = request.match_info["name"]

    def remove() -> list[tuple[str, str]]:
        verbs.find_image(backend.engine.images, name)
        return verbs.remove(backend.engine, name, force=qbool(request, "force"))

    return json_response(_lines(await backend.run(remove)))


@routes.post("/images/prune")
async def prune_images(request: web.Request) -> web.Response:
    from pyengine.images import verbs

    backend = _backend(request)
    filters = qfilters(request)
    deleted, reclaimed = await backend.run(verbs.prune, backend.engine, False, filters)
    return json_response({"ImagesDeleted": _lines(deleted) or None, "SpaceReclaimed": reclaimed})


# -- search ----------------------------------------------------------------------------------
@routes.get("/images/search")
async def search_images(request: web.Request) -> web.Response:
    from pyengine.registry import verbs

    backend = _backend(request)
    term = request.query.get("term")
    if not term:
        raise ApiError(400, "a search term is required (term=)")
    limit = qint(request, "limit", 25) or 25
    if not 1 <= limit <= 100:
        raise ApiError(400, f"limit {limit} is outside the range of [1, 100]")
    filters = qfilters(request)
    for key in filters:
        if key not in ("is-official", "is-automated", "stars"):
            raise ApiError(400, f"invalid filter '{key}'")
    found = await backend.run(verbs.search, backend.engine, term, limit, False, _credentials(request), False)
    stars = max([int(v) for v in filters.get("stars", []) if v.isdigit()] or [0])
    official = [v.lower() in ("true", "1") for v in filters.get("is-official", [])]
    automated = [v.lower() in ("true", "1") for v in filters.get("is-automated", [])]
    found = [e for e in found if e["star_count"] >= stars and all(e["is_official"] == o for o in official)
             and all(e["is_automated"] == a for a in automated)]
    return json_response(found)


# -- save and load ---------------------------------------------------------------------------
async def _save(request: web.Request, names: list[str]) -> web.StreamResponse:
    from pyengine.images import verbs
    from pyengine.images.archive import save_archive

    backend = _backend(request)
    store = backend.engine.images
    if not names:
        raise ApiError(400, "no image names given (names=)")

    def check() -> None:
        for name in names:
            verbs.find_image(store, name)

    await backend.run(check)  # a missing image is a 404 before the archive starts
    return await stream_writer(request, backend, "application/x-tar",
                               lambda out: save_archive(store, names, out, "docker-archive"))


@routes.get("/images/get")
async def save_images(request: web.Request) -> web.StreamResponse:
    return await _save(request, request.query.getall("names", []))


@routes.get("/images/{name:.+}/get")
async def save_image(request: web.Request) -> web.StreamResponse:
    return await _save(request, [request.match_info["name"]])


@routes.post("/images/load")
async def load_images(request: web.Request) -> web.StreamResponse:
    from pyengine.images.archive import load_archive
    from pyengine.images.reference import parse_reference

    backend = _backend(request)
    store = _ingesting_store(backend)
    path = await spool_body(request, backend, str(store.tmp_dir) if store.tmp_dir.is_dir() else None)
    quiet = qbool(request, "quiet")

    def load(emit: Any) -> None:
        from pyengine.registry.verbs import byte_events

        try:
            # dockerd's per-layer "Loading layer" progress, unless the client asked for quiet
            loaded = load_archive(store, path, None if quiet else byte_events("Loading layer", emit))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for name, image in loaded:
            line = f"Loaded image: {parse_reference(name).familiar()}\n" if name else f"Loaded image ID: {image.id}\n"
            emit({"stream": line})

    return await stream_events(request, backend, load)


# -- commit ----------------------------------------------------------------------------------
@routes.post("/commit")
async def commit(request: web.Request) -> web.Response:
    backend = _backend(request)
    container = request.query.get("container")
    if not container:
        raise ApiError(400, "a container is required (container=)")
    try:
        from pyengine.containers.changes import commit as commit_container
        from pyengine.containers.engine import Containers
    except ImportError:
        raise ApiError(501, "commit is not available in this engine yet") from None
    repo = request.query.get("repo") or None
    tag = request.query.get("tag") or None
    repo_tag = (f"{repo}:{tag}" if tag else repo) if repo else None
    changes = request.query.getall("changes", [])
    # The body may carry a container config to merge in; docker-py sends one (``conf``).
    raw = await request.read()
    if raw.strip() and raw.strip() not in (b"null", b"{}"):
        try:
            json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"invalid JSON: {exc}") from None
    image = await backend.run(commit_container, Containers(backend.engine), container, repo_tag, changes,
                              request.query.get("comment", ""), request.query.get("author", ""),
                              qbool(request, "pause", True))
    return json_response({"Id": image.id}, status=201)


# -- distribution ----------------------------------------------------------------------------
@routes.get("/distribution/{name:.+}/json")
async def distribution_inspect(request: web.Request) -> web.Response:
    from pyengine.registry import verbs

    backend = _backend(request)
    try:
        ref = verbs.pull_reference(request.match_info["name"])
    except UsageError as exc:
        raise ApiError(400, str(exc)) from None
    return json_response(await backend.run(verbs.distribution_inspect, backend.engine, ref, _credentials(request)))
