"""Container routes of the Docker Engine API: create, list, inspect, the lifecycle verbs, wait,
delete, top, stats, logs, changes, export, archive (``docker cp``), prune, resize and attach.

Each handler decodes the request, calls one engine verb (``pyengine.containers``) through
``backend.run`` and encodes dockerd's answer. Attach takes the connection over and relays it to
the container's monitor (``pyengine.containers.attach`` frames): for a created container the
socket waits here until ``start`` hands it to the new monitor, so no output is lost.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from pyengine.api.http import (
    ApiError,
    json_response,
    no_content,
    qbool,
    qfilters,
    qint,
    read_json,
    stdcopy_frame,
    take_over,
    typed,
)
from pyengine.containers.engine import NotModified
from pyengine.errors import NotFound, UsageError

routes = web.RouteTableDef()

RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"

#: attach requests of created containers, waiting for ``start``: container ID -> the monitor's
#: ends of their socketpairs (this daemon's only; the engine hands them to the new monitor)
_pending_attach: dict[str, list[socket.socket]] = {}
_pending_lock = threading.Lock()
#: our end of each such socketpair -> the monitor's end
_theirs_of: dict[socket.socket, socket.socket] = {}


def _backend(request: web.Request) -> Any:
    return request.app["backend"]


async def _call(request: web.Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One engine call off the event loop; the engine's "no such container" in dockerd's words."""
    try:
        return await _backend(request).run(fn, *args, **kwargs)
    except NotFound as exc:
        text = str(exc)
        if text.startswith("no such container: "):
            raise ApiError(404, "No such container: " + text[len("no such container: "):]) from None
        raise


async def _containers(request: web.Request) -> Any:
    return _backend(request).containers()


async def _record(request: web.Request) -> Any:
    containers = await _containers(request)
    return containers, await _call(request, containers.get, request.match_info["id"])


# -- create ------------------------------------------------------------------------------------
#: Config keys the engine honours, with the JSON types it takes
_CONFIG_TYPES: dict[str, Any] = {
    "Hostname": str, "Domainname": str, "User": str, "AttachStdin": bool, "AttachStdout": bool,
    "AttachStderr": bool, "ExposedPorts": dict, "Tty": bool, "OpenStdin": bool, "StdinOnce": bool,
    "Env": list, "Cmd": (list, str), "Image": str, "Volumes": dict, "WorkingDir": str,
    "Entrypoint": (list, str), "Labels": dict, "StopSignal": str, "StopTimeout": int, "OnBuild": list,
    "NetworkDisabled": bool, "MacAddress": str, "Healthcheck": dict, "ArgsEscaped": bool, "Shell": list,
}

#: HostConfig keys the engine honours, with their JSON types
_HOST_TYPES: dict[str, Any] = {
    "Binds": list, "LogConfig": dict, "NetworkMode": str, "PortBindings": dict, "RestartPolicy": dict,
    "AutoRemove": bool, "CapAdd": list, "CapDrop": list, "Dns": list, "DnsOptions": list, "DnsSearch": list,
    "ExtraHosts": list, "Privileged": bool, "PublishAllPorts": bool, "ReadonlyRootfs": bool,
    "SecurityOpt": list, "Tmpfs": dict, "Ulimits": list, "Init": bool, "StorageOpt": dict, "Memory": int,
    "MemorySwap": int, "MemoryReservation": int, "NanoCpus": int, "CpuPeriod": int, "CpuQuota": int,
    "CpuShares": int, "CpusetCpus": str, "CpusetMems": str, "PidsLimit": int, "BlkioWeight": int,
    "OomKillDisable": bool, "Mounts": list, "ConsoleSize": list, "CgroupnsMode": str, "IpcMode": str,
    "PidMode": str, "UTSMode": str, "UsernsMode": str, "Runtime": str, "Isolation": str, "ShmSize": int,
    "Devices": list, "Links": list, "VolumesFrom": list, "DeviceRequests": list, "GroupAdd": list,
    "OomScoreAdj": int, "CgroupParent": str, "VolumeDriver": str, "ContainerIDFile": str,
    "MemorySwappiness": int, "DeviceCgroupRules": list, "Sysctls": dict, "CpuCount": int,
    "CpuPercent": int, "Cgroup": str, "KernelMemory": int, "KernelMemoryTCP": int,
}

#: HostConfig values the engine cannot give, refused rather than silently dropped:
#: key -> the values that mean "nothing asked"
_HOST_DEFAULTS_ONLY: dict[str, tuple[Any, ...]] = {
    "CgroupnsMode": ("", "private"), "IpcMode": ("", "private", "shareable"), "PidMode": ("",),
    "UTSMode": ("",), "UsernsMode": ("",), "Runtime": ("", "runc"), "Isolation": ("", "default"),
    "Devices": ((), []), "Links": ((), []), "VolumesFrom": ((), []), "DeviceRequests": ((), []),
    "GroupAdd": ((), []), "OomScoreAdj": (0,), "CgroupParent": ("",), "VolumeDriver": ("", "local"),
    "DeviceCgroupRules": ((), []), "Sysctls": ({},), "CpuCount": (0,), "CpuPercent": (0,),
    "Cgroup": ("",), "KernelMemory": (0,), "KernelMemoryTCP": (0,),
}


def _check_types(section: dict[str, Any], types: dict[str, Any]) -> None:
    for key, kind in types.items():
        if key in section:
            typed(section, key, kind)


def _mounts_to_binds(host: dict[str, Any]) -> None:
    """``HostConfig.Mounts`` (``--mount``) as the Binds and Tmpfs the engine takes."""
    for mount in host.pop("Mounts", None) or []:
        if not isinstance(mount, dict):
            raise ApiError(400, "invalid mount: expected an object")
        kind, target = mount.get("Type") or "volume", mount.get("Target") or ""
        if not target.startswith("/"):
            raise ApiError(400, f"invalid mount config: mount path must be absolute: {target!r}")
        if kind in ("bind", "volume"):
            source = mount.get("Source") or (os.urandom(32).hex() if kind == "volume" else "")
            if kind == "bind" and not source.startswith("/"):
                raise ApiError(400, "invalid mount config for type \"bind\": field Source must not be empty")
            mode = "ro" if mount.get("ReadOnly") else "rw"
            host.setdefault("Binds", []).append(f"{source}:{target}:{mode}")
        elif kind == "tmpfs":
            options = mount.get("TmpfsOptions") or {}
            opts = [f"size={options['SizeBytes']}"] if options.get("SizeBytes") else []
            if options.get("Mode"):
                opts.append(f"mode={int(options['Mode']):o}")
            host.setdefault("Tmpfs", {})[target] = ",".join(opts)
        else:
            raise ApiError(400, f"invalid mount config: mount type {kind!r} is not supported by pyengine")


def _create_arguments(body: dict[str, Any], name: str | None) -> tuple[str, dict[str, Any], dict[str, Any], dict]:
    """Docker's create body as the engine's (image_ref, config, host_config, endpoint)."""
    host = dict(typed(body, "HostConfig", dict, {}) or {})
    networking = typed(body, "NetworkingConfig", dict, {}) or {}
    config = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
    _check_types(config, _CONFIG_TYPES)
    _check_types(host, _HOST_TYPES)
    image = config.get("Image") or ""
    if not image:
        raise ApiError(400, "Config cannot be empty in order to create a container")
    for key in ("Cmd", "Entrypoint"):
        if isinstance(config.get(key), str):
            config[key] = [config[key]]
    mode = host.get("NetworkMode") or "default"
    if host.get("Links") and mode not in ("default", "bridge", "host") and not mode.startswith("container:"):
        # dockerd's legacy links reach a container only on the default bridge (hosts entries and
        # env); on none they give nothing, on a user-defined network dockerd ignores them (its
        # names resolve there). Compose's run names the service's containers in them.
        for link in host.pop("Links"):
            if not isinstance(link, str) or not link.split(":")[0]:
                raise ApiError(400, f"invalid link: {json.dumps(link)}")
    for key, allowed in _HOST_DEFAULTS_ONLY.items():
        if key in host and host[key] not in allowed and host[key] is not None:
            raise ApiError(400, f"HostConfig.{key} {json.dumps(host[key])} is not supported by pyengine")
    _mounts_to_binds(host)
    # targets a bind, a named volume or a tmpfs already covers (Compose sends each of its volumes
    # both in Binds and in Volumes) get no anonymous volume, as in dockerd
    covered = {b.split(":")[1].rstrip("/") or "/" for b in host.get("Binds") or []
               if isinstance(b, str) and b.count(":") >= 1}
    covered.update(str(t).rstrip("/") or "/" for t in host.get("Tmpfs") or {})
    for path in config.pop("Volumes", None) or {}:
        # an anonymous volume, as dockerd makes one for VOLUME and -v /path
        if (path.rstrip("/") or "/") not in covered:
            host.setdefault("Binds", []).append(f"{os.urandom(32).hex()}:{path}")
    for bind in host.get("Binds") or []:
        if not isinstance(bind, str):
            raise ApiError(400, "json: cannot unmarshal into field Binds of type string")
    if host.get("AutoRemove") and (host.get("RestartPolicy") or {}).get("Name") not in (None, "", "no"):
        raise ApiError(400, "can't create 'AutoRemove' container with restart policy")
    config["Tty"] = bool(config.get("Tty"))
    config["OpenStdin"] = bool(config.get("OpenStdin"))
    endpoint: dict[str, Any] = {}
    endpoints = (networking.get("EndpointsConfig") or {}) if isinstance(networking, dict) else {}
    if endpoints:
        if not isinstance(endpoints, dict):
            raise ApiError(400, "json: cannot unmarshal into field EndpointsConfig of type map")
        net_name, first = next(iter(endpoints.items()))
        first = first or {}
        if not host.get("NetworkMode") or host.get("NetworkMode") == "default":
            host["NetworkMode"] = net_name
        ipam = first.get("IPAMConfig") or {}
        aliases = [a for a in first.get("Aliases") or [] if a != name]
        endpoint = {"Aliases": aliases, "IPAddress": ipam.get("IPv4Address") or ""}
    return image, config, host, endpoint


def _check_platform(platform: str) -> None:
    if not platform:
        return
    os_name, _, rest = platform.partition("/")
    if os_name != "linux":
        raise ApiError(400, f"\"{platform}\": unknown operating system or architecture: pyengine runs linux "
                            "containers only")


def _image_not_found(image: str) -> str:
    from pyengine.images.reference import parse_reference

    try:
        return f"No such image: {parse_reference(image).familiar}"
    except UsageError:
        return f"No such image: {image}"


@routes.post("/containers/create")
async def create(request: web.Request) -> web.Response:
    body = await read_json(request, required=True)
    name = request.query.get("name") or None
    if name is not None:
        name = name.lstrip("/")
    _check_platform(request.query.get("platform", ""))
    image, config, host, endpoint = _create_arguments(body, name)
    containers = await _containers(request)
    try:
        record = await _call(request, containers.create, image, config, host, name=name, endpoint=endpoint)
    except NotFound as exc:
        if str(exc).startswith("No such image"):
            raise ApiError(404, _image_not_found(image)) from None
        raise
    return json_response({"Id": record.id, "Warnings": []}, status=201)


# -- list, inspect -----------------------------------------------------------------------------
def _summaries(containers: Any, filters: dict[str, list[str]], all_: bool, limit: int | None,
               size: bool) -> list[dict[str, Any]]:
    from pyengine.containers.filters import select
    from pyengine.containers.inspect import summary
    from pyengine.network.store import read_snapshot

    out = []
    with read_snapshot():  # each summary reads the networks: read them once
        for record in select(containers, filters, all_=all_, limit=limit):
            sizes = None
            if size:
                rw = containers.size_rw(record)
                try:
                    base = containers.engine.images.resolve_image(record.image_id).size
                except Exception:  # noqa: BLE001 - an image removed under its container: size unknown
                    base = 0
                sizes = (rw, rw + base)
            out.append(summary(containers, record, size=sizes, shared=True))  # select's records are shared
    return out


@routes.get("/containers/json")
async def list_containers(request: web.Request) -> web.Response:
    containers = await _containers(request)
    docs = await _call(request, _summaries, containers, qfilters(request), qbool(request, "all"),
                       qint(request, "limit"), qbool(request, "size"))
    return json_response(docs)


@routes.get("/containers/{id}/json")
async def inspect(request: web.Request) -> web.Response:
    containers = await _containers(request)
    doc = await _call(request, containers.inspect, request.match_info["id"])
    if qbool(request, "size"):
        record = await _call(request, containers.get, doc["Id"])
        rw = await _call(request, containers.size_rw, record)
        doc["SizeRw"], doc["SizeRootFs"] = rw, rw
    return json_response(doc)


# -- lifecycle ---------------------------------------------------------------------------------
def _take_pending(container_id: str) -> list[socket.socket]:
    with _pending_lock:
        return _pending_attach.pop(container_id, [])


@routes.post("/containers/{id}/start")
async def start(request: web.Request) -> web.Response:
    containers = await _containers(request)
    container_id = await _call(request, containers.store.resolve, request.match_info["id"])
    waiting = _take_pending(container_id)
    try:
        await _call(request, containers.start, container_id, client=waiting[0] if waiting else None,
                    clients=waiting[1:])
    except NotModified:
        return web.Response(status=304)
    finally:
        for sock in waiting:  # the monitor has its own copies now (or the start failed: EOF)
            sock.close()
    return no_content()


@routes.post("/containers/{id}/stop")
async def stop(request: web.Request) -> web.Response:
    containers = await _containers(request)
    try:
        await _call(request, containers.stop, request.match_info["id"], qint(request, "t"), not_running_ok=False)
    except NotModified:
        return web.Response(status=304)
    return no_content()


@routes.post("/containers/{id}/restart")
async def restart(request: web.Request) -> web.Response:
    containers = await _containers(request)
    await _call(request, containers.restart, request.match_info["id"], qint(request, "t"))
    return no_content()


@routes.post("/containers/{id}/kill")
async def kill(request: web.Request) -> web.Response:
    containers = await _containers(request)
    await _call(request, containers.kill, request.match_info["id"], request.query.get("signal") or "KILL")
    return no_content()


@routes.post("/containers/{id}/pause")
async def pause(request: web.Request) -> web.Response:
    containers = await _containers(request)
    await _call(request, containers.pause, request.match_info["id"])
    return no_content()


@routes.post("/containers/{id}/unpause")
async def unpause(request: web.Request) -> web.Response:
    containers = await _containers(request)
    await _call(request, containers.unpause, request.match_info["id"])
    return no_content()


@routes.post("/containers/{id}/rename")
async def rename(request: web.Request) -> web.Response:
    new_name = (request.query.get("name") or "").lstrip("/")
    if not new_name:
        raise ApiError(400, "Neither old nor new names may be empty")
    containers = await _containers(request)
    await _call(request, containers.rename, request.match_info["id"], new_name)
    return no_content()


@routes.post("/containers/{id}/update")
async def update(request: web.Request) -> web.Response:
    body = await read_json(request)
    for key, kind in _HOST_TYPES.items():
        if key in body:
            typed(body, key, kind)
    if "RestartPolicy" in body:
        typed(body, "RestartPolicy", dict)
    containers = await _containers(request)
    warnings = await _call(request, containers.update, request.match_info["id"], body)
    return json_response({"Warnings": warnings})


@routes.post("/containers/{id}/wait")
async def wait(request: web.Request) -> web.StreamResponse:
    condition = request.query.get("condition") or "not-running"
    containers, record = await _record(request)
    # dockerd answers the headers at once: the docker CLI waits for them before it starts the
    # container, so the exit it waits for cannot happen before the wait is in place.
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    if condition not in ("not-running", "next-exit", "removed"):
        raise ApiError(400, f"invalid condition: {condition!r}")
    await response.prepare(request)
    try:
        code = await _backend(request).run(containers.wait, record.id, condition, baseline=record.state)
        body = {"StatusCode": code, "Error": None}
    except Exception as exc:  # noqa: BLE001 - the status is sent: the error goes in the body
        body = {"StatusCode": -1, "Error": {"Message": str(exc)}}
    try:
        await response.write(json.dumps(body).encode() + b"\n")
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client stopped waiting
    return response


@routes.delete("/containers/{id}")
async def delete(request: web.Request) -> web.Response:
    containers = await _containers(request)
    await _call(request, containers.remove, request.match_info["id"], force=qbool(request, "force"),
                volumes=qbool(request, "v"))
    return no_content()


@routes.post("/containers/prune")
async def prune(request: web.Request) -> web.Response:
    containers = await _containers(request)
    deleted, reclaimed = await _call(request, containers.prune, qfilters(request))
    return json_response({"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed})


@routes.post("/containers/{id}/resize")
async def resize(request: web.Request) -> web.Response:
    height, width = qint(request, "h", 0), qint(request, "w", 0)
    containers = await _containers(request)
    await _call(request, containers.resize, request.match_info["id"], height, width)
    return web.Response(status=200, text="", content_type="text/plain")


# -- top, stats --------------------------------------------------------------------------------
@routes.get("/containers/{id}/top")
async def top(request: web.Request) -> web.Response:
    from pyengine.containers.stats import top as top_of

    containers = await _containers(request)
    return json_response(await _call(request, top_of, containers, request.match_info["id"],
                                     request.query.get("ps_args") or "-ef"))


def _stats_sample(containers: Any, container_id: str) -> tuple[Any, dict[str, Any]]:
    from pyengine.containers.stats import raw_sample

    record = containers.get(container_id)
    if not record.state.running:
        return record, {"read": __import__("time").time()}
    return record, raw_sample(containers, record)


@routes.get("/containers/{id}/stats")
async def stats(request: web.Request) -> web.StreamResponse:
    from pyengine.containers.stats import docker_stats

    stream = qbool(request, "stream", True)
    one_shot = qbool(request, "one-shot")
    containers, record = await _record(request)
    record, previous = await _call(request, _stats_sample, containers, record.id)
    if not stream:
        if one_shot or not record.state.running:
            return json_response(docker_stats(record, previous, None))
        await asyncio.sleep(1)  # as dockerd: two samples a second apart, for a cpu percentage
        record, sample = await _call(request, _stats_sample, containers, record.id)
        return json_response(docker_stats(record, sample, previous))
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(json.dumps(docker_stats(record, previous, None)).encode() + b"\n")
    while record.state.running:
        await asyncio.sleep(1)
        try:
            record, sample = await _call(request, _stats_sample, containers, record.id)
        except ApiError:  # removed meanwhile
            break
        try:
            await response.write(json.dumps(docker_stats(record, sample, previous)).encode() + b"\n")
        except (ConnectionError, RuntimeError):
            return response
        previous = sample
    await response.write_eof()
    return response


# -- logs --------------------------------------------------------------------------------------
async def _pump_thread(request: web.Request, produce: Callable[[Callable[[], bool]], Iterator[Any]],
                       consume: Callable[[Any], Any]) -> None:
    """Run the blocking iterator ``produce(cancelled)`` in the pool and ``await consume(item)``
    for each item on the loop; stop the producer when the consumer fails (client gone)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=256)
    done = object()
    stop = threading.Event()

    def run() -> None:
        try:
            for item in produce(stop.is_set):
                if stop.is_set():
                    break
                asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()
        finally:
            asyncio.run_coroutine_threadsafe(queue.put(done), loop)

    worker = _backend(request).run(run)
    task = asyncio.ensure_future(worker)
    try:
        while True:
            item = await queue.get()
            if item is done:
                break
            await consume(item)
    finally:
        stop.set()
        while not task.done():  # let the producer's last put through
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                await asyncio.sleep(0.01)
        await task


@routes.get("/containers/{id}/logs")
async def logs(request: web.Request) -> web.StreamResponse:
    from pyengine.containers.logs import LogOptions, log_entries, parse_tail, parse_time

    stdout, stderr = qbool(request, "stdout"), qbool(request, "stderr")
    if not stdout and not stderr:
        raise ApiError(400, "Bad parameters: you must choose at least one stream")
    try:
        options = LogOptions(follow=qbool(request, "follow"), stdout=stdout, stderr=stderr,
                             since=parse_time(request.query.get("since")),
                             until=parse_time(request.query.get("until")),
                             tail=parse_tail(request.query.get("tail")))
    except UsageError as exc:
        raise ApiError(400, str(exc)) from None
    timestamps = qbool(request, "timestamps")
    containers, record = await _record(request)
    tty = bool(record.config.get("Tty"))
    response = web.StreamResponse(status=200, headers={"Content-Type": RAW_STREAM if tty else MULTIPLEXED_STREAM})
    response.enable_chunked_encoding()
    await response.prepare(request)

    def produce(cancelled: Callable[[], bool]) -> Iterator[dict]:
        return log_entries(containers, record.id, options, cancelled=cancelled)

    async def consume(entry: dict) -> None:
        data = entry.get("log", "").encode()
        if timestamps:
            data = entry.get("time", "").encode() + b" " + data
        stream = 2 if entry.get("stream") == "stderr" else 1
        await response.write(data if tty else stdcopy_frame(stream, data))

    try:
        await _pump_thread(request, produce, consume)
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass
    return response


# -- filesystem: changes, export, archive ------------------------------------------------------
def _changes_module() -> Any:
    try:
        from pyengine.containers import changes
    except ImportError as exc:
        raise ApiError(501, f"not implemented in this pyengine: {exc}") from None
    return changes


_KINDS = {"C": 0, "A": 1, "D": 2}


@routes.get("/containers/{id}/changes")
async def changes(request: web.Request) -> web.Response:
    module = _changes_module()
    containers = await _containers(request)
    found = await _call(request, module.diff, containers, request.match_info["id"])
    return json_response([{"Path": path, "Kind": _KINDS[kind]} for kind, path in found] or None)


async def _send_file(request: web.Request, fileobj: Any, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/x-tar", **headers})
    response.enable_chunked_encoding()
    await response.prepare(request)
    backend = _backend(request)
    try:
        while True:
            chunk = await backend.run(fileobj.read, 1 << 20)
            if not chunk:
                break
            await response.write(chunk)
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass
    finally:
        fileobj.close()
    return response


def _export_to_file(module: Any, containers: Any, ref: str) -> Any:
    out = tempfile.SpooledTemporaryFile(max_size=32 << 20)
    try:
        module.export(containers, ref, out)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


@routes.get("/containers/{id}/export")
async def export(request: web.Request) -> web.StreamResponse:
    module = _changes_module()
    containers = await _containers(request)
    out = await _call(request, _export_to_file, module, containers, request.match_info["id"])
    return await _send_file(request, out, {})


def _stat_header(info: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(info).encode()).decode()


def _archive_path(request: web.Request) -> str:
    path = request.query.get("path")
    if not path:
        raise ApiError(400, "bad parameter: path cannot be empty")
    return path


async def _archive_call(request: web.Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return await _call(request, fn, *args, **kwargs)
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None


@routes.head("/containers/{id}/archive")
async def archive_head(request: web.Request) -> web.Response:
    module = _changes_module()
    containers = await _containers(request)
    info = await _archive_call(request, module.stat_path, containers, request.match_info["id"],
                               _archive_path(request))
    return web.Response(status=200, headers={"X-Docker-Container-Path-Stat": _stat_header(info),
                                             "Content-Type": "application/json"})


@routes.get("/containers/{id}/archive")
async def archive_get(request: web.Request) -> web.StreamResponse:
    module = _changes_module()
    containers = await _containers(request)
    out, info = await _archive_call(request, module.copy_from, containers, request.match_info["id"],
                                    _archive_path(request))
    return await _send_file(request, out, {"X-Docker-Container-Path-Stat": _stat_header(info)})


@routes.put("/containers/{id}/archive")
async def archive_put(request: web.Request) -> web.Response:
    module = _changes_module()
    path = _archive_path(request)
    containers = await _containers(request)
    await _call(request, containers.get, request.match_info["id"])  # 404 before the upload is read
    upload = tempfile.SpooledTemporaryFile(max_size=32 << 20)
    try:
        backend = _backend(request)
        while True:
            chunk = await request.content.read(1 << 20)
            if not chunk:
                break
            await backend.run(upload.write, chunk)
        upload.seek(0)
        await _archive_call(request, module.copy_to, containers, request.match_info["id"], path, upload,
                            copy_uid_gid=qbool(request, "copyUIDGID"),
                            no_overwrite_dir_non_dir=qbool(request, "noOverwriteDirNonDir"))
    finally:
        upload.close()
    return web.Response(status=200)


# -- attach ------------------------------------------------------------------------------------
def parse_detach_keys(text: str | None) -> bytes:
    """Docker's ``--detach-keys``: ``ctrl-p,ctrl-q`` (the default) -> b"\\x10\\x11"."""
    if text is None or text == "":
        text = "ctrl-p,ctrl-q"
    out = bytearray()
    specials = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}
    for part in text.split(","):
        if len(part) == 1:
            out.append(ord(part))
        elif part.startswith("ctrl-") and len(part) == 6:
            char = part[5].lower()
            if "a" <= char <= "z":
                out.append(ord(char) - ord("a") + 1)
            elif char in specials:
                out.append(specials[char])
            else:
                raise ApiError(400, f"Invalid detach keys ({text}) provided")
        else:
            raise ApiError(400, f"Invalid detach keys ({text}) provided")
    return bytes(out)


def _pending_socket(container_id: str) -> socket.socket:
    """A socketpair for an attach to a created container: ours, and the monitor's end kept
    for ``start``."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with _pending_lock:
        _pending_attach.setdefault(container_id, []).append(theirs)
        _theirs_of[ours] = theirs
    return ours


def _still_pending(ours: socket.socket, container_id: str) -> bool:
    with _pending_lock:
        theirs = _theirs_of.get(ours)
        waiting = _pending_attach.get(container_id, [])
        if theirs in waiting:
            waiting.remove(theirs)
            if not waiting:
                _pending_attach.pop(container_id, None)
            theirs.close()
            return True
    return False


async def _monitor_socket(request: web.Request, containers: Any, record: Any) -> socket.socket:
    """A connection to the running container's monitor, or a socket its next start feeds."""
    if not record.state.running:
        return _pending_socket(record.id)
    return await _call(request, containers.attach, record.id)


@routes.post("/containers/{id}/attach")
async def attach(request: web.Request) -> web.StreamResponse:
    from pyengine.containers import attach as frames

    containers, record = await _record(request)
    keys = parse_detach_keys(request.query.get("detachKeys"))
    want_stdin, want_stdout, want_stderr = (qbool(request, "stdin"), qbool(request, "stdout"),
                                            qbool(request, "stderr"))
    tty = bool(record.config.get("Tty"))
    sock = await _monitor_socket(request, containers, record)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    conn = await take_over(request, RAW_STREAM if tty else MULTIPLEXED_STREAM)
    if qbool(request, "logs"):
        from pyengine.containers.logs import LogOptions, log_entries

        backlog = await _call(request, lambda: list(log_entries(containers, record.id, LogOptions())))
        for entry in backlog:
            data = entry.get("log", "").encode()
            stream = 2 if entry.get("stream") == "stderr" else 1
            if (stream == 1 and want_stdout) or (stream == 2 and want_stderr):
                await conn.write(data if tty else stdcopy_frame(stream, data))

    async def from_monitor() -> None:
        reader = frames.FrameReader()
        while True:
            try:
                data = await loop.sock_recv(sock, 65536)
            except OSError:
                return
            if not data:
                return
            for stream, payload in reader.feed(data):
                if stream == frames.EXIT:
                    return
                if (stream == frames.STDOUT and want_stdout) or (stream == frames.STDERR and want_stderr):
                    if not await conn.write(payload if tty else stdcopy_frame(stream, payload)):
                        return

    async def from_client() -> None:
        scanner = frames.DetachScanner(keys)
        while True:
            data = await conn.read()
            if not data:
                if want_stdin:
                    await loop.sock_sendall(sock, _frame(frames.STDIN_EOF, b""))
                return
            if not want_stdin:
                continue
            data, detached = scanner.feed(data)
            if data:
                await loop.sock_sendall(sock, _frame(frames.STDIN, data))
            if detached:
                raise _Detached

    switched = False

    async def adopt_if_started_elsewhere() -> None:
        """A pending attach whose container another client (the daemonless CLI) started:
        switch to the running monitor's listener."""
        nonlocal sock, switched
        while True:
            await asyncio.sleep(0.5)
            with _pending_lock:
                theirs = _theirs_of.get(sock)
                if theirs not in _pending_attach.get(record.id, []):
                    return  # handed to a monitor by start
            try:
                current = await _call(request, containers.get, record.id)
            except ApiError:
                return
            if current.state.running and _still_pending(sock, record.id):
                try:
                    fresh = await _call(request, containers.attach, record.id)
                except Exception:  # noqa: BLE001 - it ended meanwhile: the attach ends
                    output.cancel()
                    return
                fresh.setblocking(False)
                old, sock, switched = sock, fresh, True
                with _pending_lock:
                    _theirs_of.pop(old, None)
                output.cancel()
                await asyncio.sleep(0)
                old.close()
                return

    output = asyncio.ensure_future(from_monitor())
    feeding: asyncio.Future[Any] = asyncio.ensure_future(from_client())
    watcher = asyncio.ensure_future(adopt_if_started_elsewhere()) if sock in _theirs_of else None
    try:
        while True:
            done, _ = await asyncio.wait({output, feeding}, return_when=asyncio.FIRST_COMPLETED)
            if output in done:
                if output.cancelled() and switched:
                    switched = False
                    output = asyncio.ensure_future(from_monitor())  # re-attached to a started monitor
                    continue
                break
            if feeding in done:
                if isinstance(feeding.exception(), _Detached):
                    break
                feeding = asyncio.ensure_future(asyncio.Event().wait())  # stdin closed: output goes on
    finally:
        for task in (output, feeding, watcher):
            if task is not None and not task.done():
                task.cancel()
        _still_pending(sock, record.id)
        with _pending_lock:
            _theirs_of.pop(sock, None)
        sock.close()
        await conn.close()
    return conn.response


class _Detached(Exception):
    """The client typed the detach keys."""


def _frame(stream: int, payload: bytes) -> bytes:
    import struct

    return struct.pack(">BI", stream, len(payload)) + payload


@routes.get("/containers/{id}/attach/ws")
async def attach_ws(request: web.Request) -> web.Response:
    raise ApiError(501, "attach over a websocket is not implemented by pyengine: use POST /containers/{id}/attach")
