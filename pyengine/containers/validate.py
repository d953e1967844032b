"""Checks of what a container is created with, before anything of it is made.

``Containers.create`` calls ``check_create`` for the CLI's ``run``/``create`` and the daemon's
``POST /containers/create`` alike, so a value Docker refuses is refused here in dockerd's words,
whichever way it came: InvalidContainerConfig, a UsageError (the API's 400) with Docker's exit
status 125. Knows the Docker ``Config``/``HostConfig`` vocabulary; calls nothing but parsers.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pyengine.errors import UsageError

#: Docker's smallest memory limit and reservation (daemon/daemon_unix.go linuxMinMemory)
MIN_MEMORY = 6 * 1024 * 1024

#: json-file log options this engine applies (the monitor's log writer)
LOG_OPTS = ("max-size", "max-file")
#: json-file log options Docker has and this engine does not apply
_LOG_OPTS_UNSUPPORTED = ("compress", "labels", "labels-regex", "env", "env-regex", "tag")

_RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")
_IMAGE_ID = re.compile(r"(sha256:)?[0-9a-f]{1,64}")
_LOG_SIZE = re.compile(r"\d+(\.\d+)?[kmg]?", re.IGNORECASE)


class InvalidContainerConfig(UsageError):
    """A container's config or host config holds a value Docker refuses (exit status 125)."""

    exit_code = 125


def check_create(image_ref: str, config: dict[str, Any], host_config: dict[str, Any]) -> None:
    """Refuse what dockerd refuses at create, before the image is even looked up.

    :raises InvalidContainerConfig: the first value that is wrong, in one line
    """
    _check_image_ref(image_ref)
    _check_config(config)
    _check_mounts(host_config)
    _check_resources(host_config)
    _check_restart_policy(host_config.get("RestartPolicy") or {})
    _check_log_config(host_config.get("LogConfig") or {})
    _check_ulimits(host_config.get("Ulimits") or [])
    _check_port_bindings(host_config.get("PortBindings") or {})


def _check_image_ref(image_ref: str) -> None:
    from pyengine.images.reference import parse_reference

    if _IMAGE_ID.fullmatch(image_ref):
        return  # an image ID or its prefix
    try:
        parse_reference(image_ref)
    except UsageError as exc:
        raise InvalidContainerConfig(str(exc)) from None


def _check_config(config: dict[str, Any]) -> None:
    from pyengine.containers.engine import parse_signal

    workdir = config.get("WorkingDir") or ""
    if workdir and not workdir.startswith("/"):
        raise InvalidContainerConfig(f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
    signal = config.get("StopSignal") or ""
    if signal:
        try:
            parse_signal(signal)
        except UsageError:
            raise InvalidContainerConfig(f"Invalid signal: {signal}") from None


def _mount_target_problem(target: str) -> str | None:
    if not target.startswith("/"):
        return f"invalid mount path: '{target}' mount path must be absolute"
    if os.path.normpath(target) == "/":
        return "invalid specification: destination can't be '/'"
    return None


def _check_mounts(host: dict[str, Any]) -> None:
    for target in host.get("Tmpfs") or {}:
        problem = _mount_target_problem(str(target))
        if problem:
            raise InvalidContainerConfig(problem)
    for bind in host.get("Binds") or []:
        parts = str(bind).split(":")
        source, target = ("", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        problem = _mount_target_problem(target)
        if problem:
            kind = "bind" if source.startswith("/") else "volume"
            raise InvalidContainerConfig(f"invalid volume specification: '{bind}': invalid mount config for type "
                                         f"\"{kind}\": {problem}")


def _number(host: dict[str, Any], key: str) -> int:
    value = host.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidContainerConfig(f"invalid {key}: {value!r} is not an integer")
    return value


def _check_resources(host: dict[str, Any]) -> None:
    memory, swap = _number(host, "Memory"), _number(host, "MemorySwap")
    reservation = _number(host, "MemoryReservation")
    if 0 < memory < MIN_MEMORY:
        raise InvalidContainerConfig("Minimum memory limit allowed is 6MB")
    if 0 < reservation < MIN_MEMORY:
        raise InvalidContainerConfig("Minimum memory reservation allowed is 6MB")
    if swap > 0 and not memory:
        raise InvalidContainerConfig("You should always set the Memory limit when using Memoryswap limit, see usage")
    if swap > 0 and swap < memory:
        raise InvalidContainerConfig("Minimum memoryswap limit should be larger than memory limit, see usage")
    if memory and reservation > memory:
        raise InvalidContainerConfig("Minimum memory limit can not be less than memory reservation limit, see usage")
    nano, period, quota = _number(host, "NanoCpus"), _number(host, "CpuPeriod"), _number(host, "CpuQuota")
    if nano and (period or quota):
        raise InvalidContainerConfig("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    cpus = os.cpu_count() or 1
    if nano < 0 or nano > cpus * 10 ** 9:
        raise InvalidContainerConfig(f"Range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs "
                                     "available")
    if period and not 1000 <= period <= 1_000_000:
        raise InvalidContainerConfig("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s "
                                     "(i.e. 1000000)")
    if quota and 0 < quota < 1000:
        raise InvalidContainerConfig("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    weight = _number(host, "BlkioWeight")
    if weight and not 10 <= weight <= 1000:
        raise InvalidContainerConfig("Range of blkio weight is from 10 to 1000")


def _check_restart_policy(policy: dict[str, Any]) -> None:
    name = policy.get("Name") or "no"
    count = policy.get("MaximumRetryCount") or 0
    if name not in _RESTART_POLICIES:
        raise InvalidContainerConfig(f"invalid restart policy: unknown policy '{name}'; use one of 'no', 'always', "
                                     "'on-failure', or 'unless-stopped'")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidContainerConfig("invalid restart policy: maximum retry count cannot be negative")
    if count and name != "on-failure":
        raise InvalidContainerConfig("invalid restart policy: maximum retry count can only be used with "
                                     "'on-failure'")


def _check_log_config(log_config: dict[str, Any]) -> None:
    kind = log_config.get("Type") or "json-file"
    if kind != "json-file":
        raise InvalidContainerConfig(f"log driver '{kind}' is not supported by pyengine: it writes json-file logs "
                                     "only")
    for key, value in (log_config.get("Config") or {}).items():
        if key in _LOG_OPTS_UNSUPPORTED:
            raise InvalidContainerConfig(f"log opt '{key}' of the json-file log driver is not supported by pyengine "
                                         f"(it applies {', '.join(LOG_OPTS)})")
        if key not in LOG_OPTS:
            raise InvalidContainerConfig(f"unknown log opt '{key}' for json-file log driver")
        text = str(value).strip()
        if key == "max-size" and not _LOG_SIZE.fullmatch(text):
            raise InvalidContainerConfig(f"invalid log opt 'max-size={value}' for json-file log driver: invalid "
                                         f"size: '{value}' (a number with an optional unit k, m, g: 10m)")
        if key == "max-file" and (not text.isdigit() or int(text) < 1):
            raise InvalidContainerConfig(f"invalid log opt 'max-file={value}' for json-file log driver: max-file "
                                         "must be a whole number of 1 or more")


def _check_ulimits(ulimits: list[Any]) -> None:
    import resource

    for entry in ulimits:
        if not isinstance(entry, dict):
            raise InvalidContainerConfig(f"invalid ulimit {entry!r}: expected Name, Soft and Hard")
        name, soft, hard = entry.get("Name"), entry.get("Soft"), entry.get("Hard")
        if not isinstance(name, str) or getattr(resource, "RLIMIT_" + name.upper(), None) is None:
            raise InvalidContainerConfig(f"invalid ulimit type: {name}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (soft, hard)):
            raise InvalidContainerConfig(f"invalid ulimit {name}: Soft and Hard must be integers")
        if soft > hard:  # type: ignore[operator]
            raise InvalidContainerConfig(f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")


def _check_port_bindings(bindings: dict[str, Any]) -> None:
    for key, hosts in bindings.items():
        port, _, protocol = str(key).partition("/")
        if not port.isdigit() or not 0 < int(port) < 65536 or protocol not in ("", "tcp", "udp"):
            raise InvalidContainerConfig(f"invalid port specification: \"{key}\"")
        for host in hosts or []:
            host_port = str((host or {}).get("HostPort") or "") if isinstance(host, dict) else None
            if host_port is None or (host_port and (not host_port.isdigit() or not 0 < int(host_port) < 65536)):
                raise InvalidContainerConfig(f"invalid port specification: \"{host_port}\"")
