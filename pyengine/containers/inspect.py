"""What a container looks like from outside: Docker's inspect document, its ``ps`` summary and
the human status text (``Up 3 seconds``, ``Exited (0) 2 seconds ago``).

Owns the Docker shapes and their defaults (HostConfig keys dockerd always sends, RFC 3339
times); reads the container record, the network store and the storage driver's name. Used by
``pyengine inspect``/``ps`` and the daemon's container routes alike.
"""

from __future__ import annotations

import calendar
import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyengine.containers.engine import Containers
    from pyengine.containers.store import ContainerRecord

#: Go's zero time, which dockerd prints for a time that never happened
ZERO_TIME = "0001-01-01T00:00:00Z"
#: the whole seconds of a store time (``now_iso``)
_ISO_SECONDS = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)")

#: HostConfig as dockerd sends it for a container created with no options (API 1.45)
HOST_CONFIG_DEFAULTS: dict[str, Any] = {
    "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "none", "PortBindings": {}, "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
    "AutoRemove": False, "VolumeDriver": "", "VolumesFrom": None, "ConsoleSize": [0, 0], "CapAdd": None,
    "CapDrop": None, "CgroupnsMode": "private", "Dns": [], "DnsOptions": [], "DnsSearch": [],
    "ExtraHosts": None, "GroupAdd": None, "IpcMode": "private", "Cgroup": "", "Links": None,
    "OomScoreAdj": 0, "PidMode": "", "Privileged": False, "PublishAllPorts": False, "ReadonlyRootfs": False,
    "SecurityOpt": None, "UTSMode": "", "UsernsMode": "", "ShmSize": 67108864, "Runtime": "runc",
    "Isolation": "", "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
    "BlkioWeightDevice": [], "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [], "BlkioDeviceReadIOps": [],
    "BlkioDeviceWriteIOps": [], "CpuPeriod": 0, "CpuQuota": 0, "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0,
    "CpusetCpus": "", "CpusetMems": "", "Devices": [], "DeviceCgroupRules": None, "DeviceRequests": None,
    "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": None, "OomKillDisable": False,
    "PidsLimit": None, "Ulimits": [], "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0,
    "IOMaximumBandwidth": 0, "Init": None, "Tmpfs": None, "StorageOpt": None,
}


# -- times ---------------------------------------------------------------------------------------
def rfc3339(iso: str) -> str:
    """A store time as Go's RFC3339Nano (trailing zeros of the fraction dropped); the zero time
    for an empty one."""
    if not iso:
        return ZERO_TIME
    head, dot, frac = iso.rstrip("Z").partition(".")
    frac = frac.rstrip("0")
    return f"{head}.{frac}Z" if dot and frac else f"{head}Z"


def unix_seconds(iso: str) -> float:
    """A store time as seconds since the epoch (0.0 for an empty or unreadable one)."""
    if not iso:
        return 0.0
    # The engine's own times (now_iso) by a regex and timegm: ps reads one or two per container
    # and logs one per line, and strptime costs ~20 us a call; anything else goes to strptime
    match = _ISO_SECONDS.match(iso)
    year, month, day, hour, minute, second = map(int, match.groups()) if match else (0, 0, 0, 0, 0, 0)
    if year and 1 <= month <= 12 and 1 <= day and (day <= 28 or day <= calendar.monthrange(year, month)[1]) \
            and hour <= 23 and minute <= 59 and second <= 59:
        whole = calendar.timegm((year, month, day, hour, minute, second))
    else:
        try:
            whole = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            return 0.0
    _, dot, frac = iso.rstrip("Z").partition(".")
    return whole + (float("0." + frac) if dot and frac.isdigit() else 0.0)


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration: ``Less than a second``, ``3 seconds``, ``About a minute``,
    ``5 minutes``, ``About an hour``, ``3 hours``, ``2 days``, ``3 weeks``, ``4 months``, ``2 years``."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def ago(iso: str, now: float | None = None) -> str:
    """``3 seconds ago`` for a store time (empty for none)."""
    if not iso:
        return ""
    now = time.time() if now is None else now
    return human_duration(max(0.0, now - unix_seconds(iso))) + " ago"


def status_text(record: ContainerRecord, now: float | None = None) -> str:
    """Docker's STATUS column: ``Up 3 seconds``, ``Up 2 minutes (Paused)``, ``Restarting (1) 2
    seconds ago``, ``Exited (0) 2 seconds ago``, ``Created``, ``Dead``."""
    s = record.state
    now = time.time() if now is None else now
    if s.status in ("running", "paused"):
        up = "Up " + human_duration(max(0.0, now - unix_seconds(s.started_at)))
        if s.status == "paused":
            return up + " (Paused)"
        from pyengine.containers.health import status_suffix

        return up + status_suffix(s.health)
    if s.status == "restarting":
        return f"Restarting ({s.exit_code}) {ago(s.finished_at, now)}"
    if s.status == "exited":
        if not s.started_at:
            return "Created"
        return f"Exited ({s.exit_code}) {ago(s.finished_at, now)}"
    if s.status == "dead":
        return "Dead"
    return s.status.capitalize()


# -- documents -----------------------------------------------------------------------------------
def command_line(record: ContainerRecord) -> list[str]:
    return list(record.config.get("Entrypoint") or []) + list(record.config.get("Cmd") or [])


def host_config(record: ContainerRecord) -> dict[str, Any]:
    """The container's HostConfig with every key dockerd sends, its defaults where unset."""
    out = dict(HOST_CONFIG_DEFAULTS)
    for key, value in record.host_config.items():
        if value is not None:
            out[key] = value
    log_config = dict(out.get("LogConfig") or {})
    log_config["Type"] = log_config.get("Type") or "json-file"
    log_config["Config"] = log_config.get("Config") or {}
    out["LogConfig"] = log_config
    policy = dict(out.get("RestartPolicy") or {})
    policy["Name"] = policy.get("Name") or "no"
    policy.setdefault("MaximumRetryCount", 0)
    out["RestartPolicy"] = policy
    out["CgroupnsMode"] = out.get("CgroupnsMode") or "private"
    out["IpcMode"] = out.get("IpcMode") or "private"
    out["Runtime"] = out.get("Runtime") or "runc"
    return out


def config(record: ContainerRecord) -> dict[str, Any]:
    """``Config``: what the container runs, ``Image`` as the user named it."""
    c = record.config
    doc = {
        "Hostname": c.get("Hostname") or record.id[:12], "Domainname": c.get("Domainname") or "",
        "User": c.get("User") or "", "AttachStdin": bool(c.get("AttachStdin")),
        "AttachStdout": bool(c.get("AttachStdout", not c.get("AttachStdin"))),
        "AttachStderr": bool(c.get("AttachStderr", not c.get("AttachStdin"))),
        "Tty": bool(c.get("Tty")), "OpenStdin": bool(c.get("OpenStdin")), "StdinOnce": bool(c.get("StdinOnce")),
        "Env": list(c.get("Env") or []), "Cmd": list(c.get("Cmd") or []) or None, "Image": record.image,
        "Volumes": c.get("Volumes") or None, "WorkingDir": c.get("WorkingDir") or "",
        "Entrypoint": list(c.get("Entrypoint") or []) or None, "OnBuild": c.get("OnBuild") or None,
        "Labels": dict(c.get("Labels") or {}),
    }
    if c.get("ExposedPorts"):
        doc["ExposedPorts"] = dict(c["ExposedPorts"])
    if c.get("StopSignal"):
        doc["StopSignal"] = c["StopSignal"]
    if c.get("StopTimeout") is not None:
        doc["StopTimeout"] = c["StopTimeout"]
    if c.get("Healthcheck"):
        doc["Healthcheck"] = c["Healthcheck"]
    return doc


def mounts(containers: Containers, record: ContainerRecord) -> list[dict[str, Any]]:
    """``Mounts``: each bind and named volume of ``HostConfig.Binds``, as dockerd lists them."""
    from pyengine.containers.volumes import is_named_volume

    out = []
    for bind in record.host_config.get("Binds") or []:
        parts = bind.split(":")
        if len(parts) < 2:
            continue
        source, target = parts[0], parts[1]
        mode = parts[2] if len(parts) > 2 else ""
        rw = "ro" not in mode.split(",")
        if is_named_volume(source):
            path = containers.engine.config.data_root / "volumes" / source / "_data"
            out.append({"Type": "volume", "Name": source, "Source": str(path), "Destination": target,
                        "Driver": "local", "Mode": mode or "z", "RW": rw, "Propagation": ""})
        else:
            out.append({"Type": "bind", "Source": source, "Destination": target, "Mode": mode, "RW": rw,
                        "Propagation": "rprivate"})
    return out


def network_settings(containers: Containers, record: ContainerRecord) -> dict[str, Any]:
    """``NetworkSettings``, with each network's entry in dockerd's full shape."""
    from pyengine.containers.networking import joins_networks
    from pyengine.containers.networking import network_settings as settings_of

    manager = None
    mode = record.host_config.get("NetworkMode") or "none"
    if joins_networks(mode):
        from pyengine.network.manager import NetworkManager

        manager = NetworkManager(containers.engine)
    doc = settings_of(manager, record)
    networks = {}
    for name, entry in doc["Networks"].items():
        networks[name] = {"IPAMConfig": None, "Links": None, "Aliases": entry.get("Aliases") or None,
                          "MacAddress": entry.get("MacAddress", ""), "DriverOpts": None,
                          "NetworkID": entry.get("NetworkID", ""), "EndpointID": entry.get("EndpointID", ""),
                          "Gateway": entry.get("Gateway", ""), "IPAddress": entry.get("IPAddress", ""),
                          "IPPrefixLen": entry.get("IPPrefixLen", 0), "IPv6Gateway": "", "GlobalIPv6Address": "",
                          "GlobalIPv6PrefixLen": 0, "DNSNames": entry.get("DNSNames")}
    if not networks and mode in ("none", "host"):
        # dockerd lists the special network a container is on, with empty addresses
        networks[mode] = {"IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "",
                          "DriverOpts": None, "NetworkID": "", "EndpointID": "", "Gateway": "",
                          "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
                          "GlobalIPv6PrefixLen": 0, "DNSNames": None}
    return {"Bridge": "", "SandboxID": "", "SandboxKey": doc.get("SandboxKey", ""), "Ports": doc["Ports"],
            "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
            "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None, "EndpointID": "",
            "Gateway": doc.get("Gateway", ""), "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "IPAddress": doc.get("IPAddress", ""), "IPPrefixLen": doc.get("IPPrefixLen", 0), "IPv6Gateway": "",
            "MacAddress": "", "Networks": networks}


def state(record: ContainerRecord) -> dict[str, Any]:
    s = record.state
    doc = {"Status": s.status, "Running": s.status in ("running", "paused"), "Paused": s.status == "paused",
           "Restarting": s.status == "restarting", "OOMKilled": s.oom_killed, "Dead": s.status == "dead",
           "Pid": s.pid, "ExitCode": s.exit_code, "Error": s.error, "StartedAt": rfc3339(s.started_at),
           "FinishedAt": rfc3339(s.finished_at)}
    health = getattr(s, "health", None)
    if health:
        doc["Health"] = health
    return doc


def inspect_document(containers: Containers, record: ContainerRecord,
                     exec_ids: list[str] | None = None) -> dict[str, Any]:
    """Docker's ``GET /containers/{id}/json`` body for ``record``."""
    args = command_line(record)
    directory = containers.store.dir(record.id)
    driver = containers.engine.storage_spec().name
    etc_dir = directory
    return {
        "Id": record.id, "Created": rfc3339(record.created), "Path": args[0] if args else "",
        "Args": args[1:], "State": state(record), "Image": _image_id(record.image_id),
        "ResolvConfPath": str(etc_dir / "resolv.conf"), "HostnamePath": str(etc_dir / "hostname"),
        "HostsPath": str(etc_dir / "hosts"), "LogPath": str(containers.store.log_path(record.id)),
        "Name": "/" + record.name, "RestartCount": record.state.restart_count, "Driver": driver,
        "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": exec_ids or None, "HostConfig": host_config(record),
        "GraphDriver": {"Name": driver, "Data": {"LayerId": record.layer_id}},
        "Mounts": mounts(containers, record), "Config": config(record),
        "NetworkSettings": network_settings(containers, record),
    }


#: the clock-free part of the summaries of shared records (``ContainerStore.load(shared=True)``
#: gives back the same record object while the container's files are unchanged), by id()
_shared_summaries: dict[int, tuple[ContainerRecord, dict[str, Any]]] = {}
_SHARED_SUMMARIES_MAX = 4096


def summary(containers: Containers, record: ContainerRecord, ports: list[dict[str, Any]] | None = None,
            size: tuple[int, int] | None = None, now: float | None = None, shared: bool = False) -> dict[str, Any]:
    """Docker's ``GET /containers/json`` entry for ``record``.

    :param ports: published ports (``[{"IP", "PrivatePort", "PublicPort", "Type"}]``)
    :param size: (SizeRw, SizeRootFs) when asked for
    :param shared: ``record`` is a shared, read-only one: the part of its summary that does not
        move with the clock is made once (not for a container on networks: its addresses live
        in the network store); the entry returned shares it, for reading only
    """
    from pyengine.containers.networking import joins_networks

    if shared and ports is None and not joins_networks(record.host_config.get("NetworkMode") or "none"):
        seen = _shared_summaries.get(id(record))
        if seen is None or seen[0] is not record:
            if len(_shared_summaries) >= _SHARED_SUMMARIES_MAX:
                _shared_summaries.clear()
            seen = (record, _summary_doc(containers, record, None))
            _shared_summaries[id(record)] = seen
        doc = {**seen[1], "Status": status_text(record, now)}
    else:
        doc = {**_summary_doc(containers, record, ports), "Status": status_text(record, now)}
    if size is not None:
        doc["SizeRw"], doc["SizeRootFs"] = size
    return doc


def _summary_doc(containers: Containers, record: ContainerRecord,
                 ports: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A summary but for its ``Status`` (the clock's)."""
    net = network_settings(containers, record)
    return {
        "Id": record.id, "Names": ["/" + record.name], "Image": record.image,
        "ImageID": _image_id(record.image_id), "Command": " ".join(command_line(record)),
        "Created": int(unix_seconds(record.created)), "Ports": ports if ports is not None else _ports(net),
        "Labels": dict(record.config.get("Labels") or {}), "State": record.state.status, "Status": "",
        "HostConfig": {"NetworkMode": record.host_config.get("NetworkMode") or "none"},
        "NetworkSettings": {"Networks": net["Networks"]}, "Mounts": mounts(containers, record),
    }


def _ports(net: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key, bindings in (net.get("Ports") or {}).items():
        port, _, protocol = key.partition("/")
        if not port.isdigit():
            continue
        if not bindings:
            out.append({"PrivatePort": int(port), "Type": protocol or "tcp"})
            continue
        for binding in bindings:
            out.append({"IP": binding.get("HostIp") or "0.0.0.0", "PrivatePort": int(port),
                        "PublicPort": int(binding.get("HostPort") or 0), "Type": protocol or "tcp"})
    return out


def _image_id(image_id: str) -> str:
    return image_id if not image_id or image_id.startswith("sha256:") else f"sha256:{image_id}"
