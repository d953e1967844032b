"""What the engine says about itself, in Docker's shapes: the system information of
``GET /info`` (``docker info``) and the disk usage of ``GET /system/df`` (``docker system df``).

Reads the stores, the drivers' status and the host (/proc, /sys, /etc/os-release); calls the
container and image verbs for their list entries. Used by the daemon's system routes.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
import uuid
from pathlib import Path
from typing import Any

from pyengine.errors import UsageError
from pyengine.fsutil import write_json_atomic

#: the parts ``GET /system/df?type=`` may ask for
DF_TYPES = ("container", "image", "volume", "build-cache")


def engine_id(data_root: Path) -> str:
    """The engine's lasting identity (dockerd's ID), made on first use in the data root."""
    path = Path(data_root) / "engine-id.json"
    try:
        import json

        return str(json.loads(path.read_text())["ID"])
    except (OSError, ValueError, KeyError, TypeError):
        ident = str(uuid.uuid4())
        write_json_atomic(path, {"ID": ident})
        return ident


def _os_release() -> dict[str, str]:
    out = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                out[key] = value.strip().strip('"')
    except OSError:
        pass
    return out


def _mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cgroup_version() -> str:
    """"2" on a pure cgroup v2 host, else "1" (hybrid hosts run containers on v1)."""
    return "2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "1"


def _controllers() -> set[str]:
    if cgroup_version() == "2":
        try:
            return set(Path("/sys/fs/cgroup/cgroup.controllers").read_text().split())
        except OSError:
            return set()
    found = set()
    try:
        with open("/proc/cgroups") as f:
            for line in f:
                fields = line.split()
                if fields and not line.startswith("#") and fields[-1] == "1":
                    found.add(fields[0])
    except OSError:
        pass
    return found


def _ip_forward() -> bool:
    try:
        return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    except OSError:
        return False


def _counts(engine: Any) -> dict[str, int]:
    from pyengine.containers.engine import Containers

    records = Containers(engine).list(all_=True)
    running = sum(1 for r in records if r.state.status == "running")
    paused = sum(1 for r in records if r.state.status == "paused")
    return {"Containers": len(records), "ContainersRunning": running, "ContainersPaused": paused,
            "ContainersStopped": len(records) - running - paused}


def security_options(engine: Any) -> list[str]:
    """As dockerd lists them: the seccomp profile, and no-new-privileges when it is the default."""
    options = ["name=seccomp,profile=builtin"]
    if engine.config.values.get("no-new-privileges") is not None and engine.config["no-new-privileges"]:
        options.append("name=no-new-privileges")
    if cgroup_version() == "2":
        options.append("name=cgroupns")
    return options


def system_info(engine: Any) -> dict[str, Any]:
    """Docker's SystemInfo for this engine: what ``docker info`` prints."""
    from pyengine import __version__

    storage_spec = engine.storage_spec()
    try:
        driver_status = [[str(k), str(v)] for k, v in engine.storage.status()]
    except Exception as exc:  # noqa: BLE001 - a driver that cannot say is shown, not fatal
        driver_status = [["Error", str(exc)]]
    network_drivers = sorted({d.name for d in engine.driver_states() if d.kind == "network" and d.state == "ok"})
    authorizers = [r.name for r in engine.plugins.records.values() if "pyengine_authorize_request" in r.hooks]
    controllers = _controllers()
    release = _os_release()
    machine = platform.machine()
    warnings = []
    if "memory" not in controllers:
        warnings.append("WARNING: No memory limit support")
    return {
        "ID": engine_id(engine.config.data_root),
        **_counts(engine),
        "Images": len(engine.images.images()),
        "Driver": storage_spec.name,
        "DriverStatus": driver_status,
        "Plugins": {"Volume": ["local"], "Network": network_drivers, "Authorization": authorizers or None,
                    "Log": ["json-file"]},
        "MemoryLimit": "memory" in controllers, "SwapLimit": "memory" in controllers,
        "KernelMemory": False, "KernelMemoryTCP": False,
        "CpuCfsPeriod": "cpu" in controllers, "CpuCfsQuota": "cpu" in controllers,
        "CPUShares": "cpu" in controllers, "CPUSet": "cpuset" in controllers, "PidsLimit": "pids" in controllers,
        "IPv4Forwarding": _ip_forward(), "BridgeNfIptables": False, "BridgeNfIp6tables": False,
        "Debug": engine.config["log-level"] == "debug", "NFd": len(os.listdir("/proc/self/fd")),
        "OomKillDisable": cgroup_version() == "1" and "memory" in controllers,
        "NGoroutines": 0,
        "SystemTime": datetime.datetime.now(datetime.UTC).astimezone().isoformat(timespec="microseconds"),
        "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs", "CgroupVersion": cgroup_version(),
        "NEventsListener": 0,
        "KernelVersion": platform.release(),
        "OperatingSystem": release.get("PRETTY_NAME", "Linux"), "OSVersion": release.get("VERSION_ID", ""),
        "OSType": "linux", "Architecture": machine,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": None,
                           "AllowNondistributableArtifactsHostnames": None,
                           "InsecureRegistryCIDRs": ["127.0.0.0/8"],
                           "IndexConfigs": {"docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": True,
                                                          "Official": True}},
                           "Mirrors": None},
        "NCPU": len(os.sched_getaffinity(0)), "MemTotal": _mem_total(),
        "GenericResources": None,
        "DockerRootDir": str(engine.config.data_root),
        "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
        "Name": socket.gethostname(), "Labels": [], "ExperimentalBuild": False,
        "ServerVersion": __version__,
        "Runtimes": {"runc": {"path": "pyengine"}}, "DefaultRuntime": "runc",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                  "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": True,  # containers outlive the daemon: their monitors are their own
        "Isolation": "", "InitBinary": "pyengine-shim",
        "ContainerdCommit": {"ID": "", "Expected": ""}, "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": security_options(engine),
        "CDISpecDirs": [],
        "Warnings": warnings,
    }


def _dir_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def disk_usage(engine: Any, types: list[str] | None = None) -> dict[str, Any]:
    """Docker's ``GET /system/df`` body: images, containers and volumes with their sizes.

    :param types: the parts to compute (``DF_TYPES``); all when None
    """
    from pyengine.containers.engine import Containers
    from pyengine.containers.volumes import VolumeStore, volumes_used

    for kind in types or ():
        if kind not in DF_TYPES:
            raise UsageError(f"invalid type {kind!r}: use {', '.join(DF_TYPES)}")
    wanted = set(types or DF_TYPES)
    store = engine.images
    containers = Containers(engine)
    records = containers.list(all_=True) if wanted & {"container", "volume", "image"} else []
    out: dict[str, Any] = {"LayersSize": store.disk_usage()["images_size"] if "image" in wanted else 0}
    if "image" in wanted:
        from pyengine.images import verbs as image_verbs

        users: dict[str, int] = {}
        for record in records:
            users[record.image_id] = users.get(record.image_id, 0) + 1
        layers = store.layer_records()
        images = []
        for image in store.images():
            doc = image_verbs.summary(store, image, users.get(image.id, 0))
            # Shared: the bytes of this image's layers that another image uses too.
            doc["SharedSize"] = sum(layers[c].get("size", 0) for c in image.layers
                                    if c in layers and len(layers[c].get("images", [])) > 1)
            images.append(doc)
        out["Images"] = images
    if "container" in wanted:
        from pyengine.containers.inspect import summary

        docs = []
        for record in records:
            size_rw = containers.size_rw(record)
            try:
                image_size = store.resolve_image(record.image_id).size
            except Exception:  # noqa: BLE001 - the image may be gone (rmi -f)
                image_size = 0
            docs.append(summary(containers, record, size=(size_rw, image_size + size_rw)))
        out["Containers"] = docs
    if "volume" in wanted:
        ref_counts: dict[str, int] = {}
        for record in records:
            for name in volumes_used(record.host_config):
                ref_counts[name] = ref_counts.get(name, 0) + 1
        volumes = []
        for volume in VolumeStore(engine.config.data_root).list():
            volumes.append({**volume, "UsageData": {"Size": _dir_size(Path(volume["Mountpoint"])),
                                                    "RefCount": ref_counts.get(volume["Name"], 0)}})
        out["Volumes"] = volumes
    if "build-cache" in wanted:
        out["BuildCache"] = []
    return out
