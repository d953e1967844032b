"""From a container's Docker-style config to the OCI runtime spec the launcher takes.

Owns the translation of user-facing options (env, user, workdir, volumes, tmpfs, ulimits,
resources, capabilities) into the OCI vocabulary; the runtime's defaults (Docker's default
capabilities, masked paths, /dev) come from ``pyengine.runtime.spec``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyengine.containers.volumes import VolumeStore, is_named_volume
from pyengine.errors import UsageError

if TYPE_CHECKING:
    from pyengine.containers.store import ContainerRecord

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024 ** 2, "mb": 1024 ** 2,
          "g": 1024 ** 3, "gb": 1024 ** 3, "t": 1024 ** 4, "tb": 1024 ** 4}


def parse_bytes(value: str | int) -> int:
    """``64m`` -> 67108864, as Docker's RAMInBytes."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise UsageError(f"invalid size: {value!r} (use a number with an optional unit b, k, m, g)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def merge_image_config(image_config: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The container config: the user's values over the image's, as Docker merges them."""
    merged = dict(config)
    image_config = image_config or {}
    if config.get("Entrypoint") is not None:
        # A new entrypoint drops the image's Cmd, as in Docker.
        merged["Cmd"] = config.get("Cmd") or []
    else:
        merged["Entrypoint"] = image_config.get("Entrypoint") or []
        merged["Cmd"] = config.get("Cmd") or image_config.get("Cmd") or []
    env = {}
    for item in (image_config.get("Env") or []) + (config.get("Env") or []):
        key, _, value = item.partition("=")
        env[key] = value
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    merged["Env"] = [f"{k}={v}" for k, v in env.items()]
    merged["WorkingDir"] = config.get("WorkingDir") or image_config.get("WorkingDir") or "/"
    merged["User"] = config.get("User") or image_config.get("User") or ""
    merged["Labels"] = {**(image_config.get("Labels") or {}), **(config.get("Labels") or {})}
    merged["ExposedPorts"] = {**(image_config.get("ExposedPorts") or {}), **(config.get("ExposedPorts") or {})}
    if not merged.get("StopSignal") and image_config.get("StopSignal"):
        merged["StopSignal"] = image_config["StopSignal"]
    from pyengine.containers.health import check_config, merge_healthcheck

    check_config(config.get("Healthcheck"))
    healthcheck = merge_healthcheck(image_config.get("Healthcheck"), config.get("Healthcheck"))
    if healthcheck:
        merged["Healthcheck"] = healthcheck
    return merged


def resolve_user(rootfs: Path, user: str) -> tuple[int, int, list[int]]:
    """``name``, ``uid``, ``name:group`` or ``uid:gid`` through the image's /etc/passwd and
    /etc/group; (uid, gid, additional gids)."""
    if not user:
        return 0, 0, []
    name, _, group = user.partition(":")

    def table(path: str) -> list[list[str]]:
        try:
            text = (rootfs / path).read_text(errors="replace")
        except OSError:
            return []
        return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]

    passwd, groups = table("etc/passwd"), table("etc/group")
    uid = gid = None
    user_name = None
    for entry in passwd:
        if len(entry) >= 4 and (entry[0] == name or (name.isdigit() and entry[2] == name)):
            uid, gid, user_name = int(entry[2]), int(entry[3]), entry[0]
            break
    if uid is None:
        if not name.isdigit():
            raise UsageError(f"unable to find user {name}: no matching entries in passwd file")
        uid, gid = int(name), 0
    if group:
        for entry in groups:
            if len(entry) >= 3 and (entry[0] == group or (group.isdigit() and entry[2] == group)):
                gid = int(entry[2])
                break
        else:
            if not group.isdigit():
                raise UsageError(f"unable to find group {group}: no matching entries in group file")
            gid = int(group)
    extra = sorted({int(e[2]) for e in groups if len(e) >= 4 and user_name and user_name in e[3].split(",")
                    and e[2].isdigit()} - {gid})
    return uid, gid or 0, extra


@dataclass
class SecurityOptions:
    """What ``--security-opt`` asked for, checked as dockerd checks it."""

    #: None: the engine's default (the config key ``no-new-privileges``)
    no_new_privileges: bool | None = None
    seccomp_unconfined: bool = False
    #: ``systempaths=unconfined``: no masked and no read-only paths under /proc and /sys
    systempaths_unconfined: bool = False
    mask: list[str] = field(default_factory=list)
    #: paths taken off the masked and read-only lists; ``ALL`` for all of them
    unmask: list[str] = field(default_factory=list)


_BOOLS = {"1": True, "t": True, "T": True, "true": True, "TRUE": True, "True": True,
          "0": False, "f": False, "F": False, "false": False, "FALSE": False, "False": False}


def _security_opt_error(number: int, opt: str) -> UsageError:
    # dockerd's words (daemon/daemon_unix.go): 1 when there is no KEY=VALUE, 2 for a key or a
    # value it does not know; Go's %q quoting is JSON's for what a command line holds.
    error = UsageError(f"invalid --security-opt {number}: {json.dumps(opt)}")
    error.exit_code = 125
    return error


def parse_security_opts(values: list[str] | None) -> SecurityOptions:
    """``--security-opt`` values, as dockerd reads them: ``no-new-privileges`` alone or with
    ``=``/``:`` and a boolean, ``seccomp=unconfined``, ``systempaths=unconfined``,
    ``mask=PATHS`` and ``unmask=PATHS|ALL`` (colon-separated, as podman's), ``apparmor=unconfined``
    and ``label=disable`` (no-ops: the engine applies no LSM profile). ``KEY:VALUE`` is the old
    spelling of ``KEY=VALUE``.

    :raises UsageError: (exit status 125) for anything else, in dockerd's words, and for what
        Docker would accept but this engine cannot apply (a seccomp profile file, an AppArmor
        profile, an SELinux label): a confinement asked for and silently not given is worse
        than a refusal
    """
    options = SecurityOptions()
    for opt in values or []:
        if opt == "no-new-privileges":
            options.no_new_privileges = True
            continue
        if "=" in opt:
            key, _, value = opt.partition("=")
        elif ":" in opt:
            key, _, value = opt.partition(":")
        else:
            raise _security_opt_error(1, opt)
        if key == "no-new-privileges":
            if value not in _BOOLS:
                raise _security_opt_error(2, opt)
            options.no_new_privileges = _BOOLS[value]
        elif key == "seccomp":
            if value != "unconfined":
                raise _unsupported(opt, "a seccomp profile other than Docker's default; "
                                        "only seccomp=unconfined can replace it")
            options.seccomp_unconfined = True
        elif key == "systempaths":
            if value != "unconfined":
                raise _security_opt_error(2, opt)
            options.systempaths_unconfined = True
        elif key in ("mask", "unmask"):
            paths = [p for p in value.split(":") if p]
            if not paths or any(p != "ALL" and not p.startswith("/") for p in paths) or \
                    (key == "mask" and "ALL" in paths):
                raise _security_opt_error(2, opt)
            getattr(options, key).extend(paths)
        elif key == "apparmor":
            if value != "unconfined":
                raise _unsupported(opt, "AppArmor profiles (this engine applies none; apparmor=unconfined is "
                                        "accepted)")
        elif key == "label":
            if value != "disable":
                raise _unsupported(opt, "SELinux labels (this engine applies none; label=disable is accepted)")
        else:
            raise _security_opt_error(2, opt)
    return options


def _unsupported(opt: str, what: str) -> UsageError:
    error = UsageError(f"invalid --security-opt {json.dumps(opt)}: pyengine does not support {what}")
    error.exit_code = 125
    return error


def _apply_security_opts(spec: dict[str, Any], options: SecurityOptions, no_new_privileges_default: bool) -> None:
    """The parsed ``--security-opt`` values on a spec: seccomp, no_new_privs, masked paths."""
    linux = spec["linux"]
    if options.seccomp_unconfined:
        linux.pop("seccomp", None)
    nnp = options.no_new_privileges
    spec["process"]["noNewPrivileges"] = no_new_privileges_default if nnp is None else nnp
    if options.systempaths_unconfined:
        linux["maskedPaths"], linux["readonlyPaths"] = [], []
    for path in options.mask:
        if path not in linux.setdefault("maskedPaths", []):
            linux["maskedPaths"].append(path)
    if "ALL" in options.unmask:
        linux["maskedPaths"], linux["readonlyPaths"] = [], []
    elif options.unmask:
        for key in ("maskedPaths", "readonlyPaths"):
            linux[key] = [p for p in linux.get(key) or [] if p not in options.unmask]


def resources(host_config: dict[str, Any]) -> dict[str, Any]:
    """Docker's HostConfig limits as OCI ``linux.resources``."""
    res: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    if host_config.get("Memory"):
        memory["limit"] = int(host_config["Memory"])
    if host_config.get("MemorySwap"):
        memory["swap"] = int(host_config["MemorySwap"])
    if host_config.get("MemoryReservation"):
        memory["reservation"] = int(host_config["MemoryReservation"])
    if host_config.get("OomKillDisable"):
        memory["disableOOMKiller"] = True
    if memory:
        res["memory"] = memory
    cpu: dict[str, Any] = {}
    if host_config.get("NanoCpus"):
        cpu["period"] = 100000
        cpu["quota"] = int(host_config["NanoCpus"] * 100000 // 1_000_000_000)
    if host_config.get("CpuPeriod"):
        cpu["period"] = int(host_config["CpuPeriod"])
    if host_config.get("CpuQuota"):
        cpu["quota"] = int(host_config["CpuQuota"])
    if host_config.get("CpuShares"):
        cpu["shares"] = int(host_config["CpuShares"])
    if host_config.get("CpusetCpus"):
        cpu["cpus"] = host_config["CpusetCpus"]
    if host_config.get("CpusetMems"):
        cpu["mems"] = host_config["CpusetMems"]
    if cpu:
        res["cpu"] = cpu
    if host_config.get("PidsLimit"):
        res["pids"] = {"limit": int(host_config["PidsLimit"])}
    if host_config.get("BlkioWeight"):
        res["blockIO"] = {"weight": int(host_config["BlkioWeight"])}
    return res


def build_spec(record: ContainerRecord, rootfs: Path, container_dir: Path,
               shared_network: tuple[str, Path] | None = None, *,
               no_new_privileges: bool = False) -> dict[str, Any]:
    """The OCI runtime spec for one start of the container.

    :param shared_network: with ``--network container:X``, X's network namespace path and its
        directory (whose hosts and resolv.conf the container shares, as in Docker)
    :param no_new_privileges: the engine's default (dockerd's ``no-new-privileges``), for a
        container whose ``--security-opt`` does not say
    """
    from pyengine.runtime.spec import default_spec

    config, host = record.config, record.host_config
    args = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    spec = default_spec(args, str(rootfs), terminal=bool(config.get("Tty")),
                        privileged=bool(host.get("Privileged")))
    process = spec["process"]
    process["env"] = list(config.get("Env") or [])
    if config.get("Tty") and not any(e.startswith("TERM=") for e in process["env"]):
        process["env"].append("TERM=xterm")
    size = host.get("ConsoleSize") or []
    if config.get("Tty") and len(size) == 2 and all(isinstance(n, int) and n > 0 for n in size):
        # Docker's [height, width] at create: the pty has it before the command starts
        process["consoleSize"] = {"height": size[0], "width": size[1]}
    process["cwd"] = config.get("WorkingDir") or "/"
    uid, gid, extra = resolve_user(rootfs, config.get("User") or "")
    process["user"] = {"uid": uid, "gid": gid, "additionalGids": extra}
    spec["hostname"] = config.get("Hostname") or record.id[:12]
    spec["root"]["readonly"] = bool(host.get("ReadonlyRootfs"))
    _capabilities(spec, host)
    if host.get("Ulimits"):
        by_type = {r["type"]: r for r in process.get("rlimits", [])}
        for ulimit in host["Ulimits"]:
            by_type["RLIMIT_" + ulimit["Name"].upper()] = {
                "type": "RLIMIT_" + ulimit["Name"].upper(), "soft": int(ulimit["Soft"]), "hard": int(ulimit["Hard"])}
        process["rlimits"] = list(by_type.values())
    _apply_security_opts(spec, parse_security_opts(host.get("SecurityOpt")), no_new_privileges)
    spec["linux"]["resources"].update(resources(host))  # beside the device rules
    mounts = spec.setdefault("mounts", [])
    for target, options in (host.get("Tmpfs") or {}).items():
        mounts.append({"destination": target, "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev"] + [o for o in options.split(",") if o]})
    data_root = container_dir.parent.parent
    for bind in host.get("Binds") or []:
        source, target, mode = _split_bind(bind)
        if is_named_volume(source):
            source = VolumeStore(data_root).create(source)["Mountpoint"]
        mounts.append({"destination": target, "type": "bind", "source": source,
                       "options": ["rbind", "ro" if mode == "ro" else "rw"]})
    network_mode = host.get("NetworkMode") or "none"
    mounts.extend(_etc_files(record, container_dir, spec["hostname"], network_mode,
                             shared_network[1] if shared_network else None,
                             read_only=spec["root"]["readonly"]))
    if host.get("Init"):
        spec.setdefault("annotations", {})["pyengine.init"] = "true"
    if network_mode == "host":
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
    elif shared_network:
        for entry in spec["linux"]["namespaces"]:
            if entry["type"] == "network":
                entry["path"] = shared_network[0]
    return spec


def _etc_files(record: ContainerRecord, container_dir: Path, hostname: str, network_mode: str,
               shared_dir: Path | None = None, *, read_only: bool = False) -> list[dict[str, Any]]:
    """/etc/hostname, /etc/hosts and /etc/resolv.conf for the container, bind-mounted from its
    directory as Docker does (copies of the host's own files with the host network, the other
    container's with ``container:``), read-only with ``--read-only`` as Docker's. On a bridge
    network the network side rewrites hosts and resolv.conf once the container has its
    addresses."""
    if network_mode == "host":
        # Copies, as Docker makes them: a bind of the host's own files would let the container
        # rewrite the host's name resolution.
        sources = {}
        for name in ("hosts", "resolv.conf"):
            try:
                content = Path("/etc", name).read_bytes()
            except OSError:
                continue
            (container_dir / name).write_bytes(content)
            sources[name] = container_dir / name
    elif shared_dir is not None:
        sources = {"hosts": shared_dir / "hosts", "resolv.conf": shared_dir / "resolv.conf"}
    else:
        hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 f"127.0.1.1\t{hostname}"]
        for entry in record.host_config.get("ExtraHosts") or []:
            name, _, address = entry.partition(":")
            hosts.append(f"{address}\t{name}")
        (container_dir / "hosts").write_text("\n".join(hosts) + "\n")
        dns = record.host_config.get("Dns") or []
        search = record.host_config.get("DnsSearch") or []
        resolv = [f"nameserver {d}" for d in dns] + ([f"search {' '.join(search)}"] if search else [])
        (container_dir / "resolv.conf").write_text("\n".join(resolv) + ("\n" if resolv else ""))
        sources = {"hosts": container_dir / "hosts", "resolv.conf": container_dir / "resolv.conf"}
    (container_dir / "hostname").write_text(hostname + "\n")
    sources["hostname"] = container_dir / "hostname"
    mode = "ro" if read_only else "rw"
    return [{"destination": f"/etc/{name}", "type": "bind", "source": str(path), "options": ["rbind", mode]}
            for name, path in sources.items() if path.exists()]


def _split_bind(bind: str) -> tuple[str, str, str]:
    parts = bind.split(":")
    if len(parts) == 2:
        return parts[0], parts[1], "rw"
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise UsageError(f"invalid volume specification: {bind!r}")


def _capabilities(spec: dict[str, Any], host: dict[str, Any]) -> None:
    """--cap-add/--cap-drop on the process's sets; the seccomp profile follows the result
    (Docker allows, e.g., mount and unshare to a container with CAP_SYS_ADMIN)."""
    process = spec["process"]
    caps = process.get("capabilities")
    if caps is None or host.get("Privileged"):
        return
    current = list(caps.get("bounding", []))
    for cap in host.get("CapAdd") or []:
        name = cap.upper() if cap.upper().startswith("CAP_") else "CAP_" + cap.upper()
        if name == "CAP_ALL":
            from pyengine.runtime.spec import ALL_CAPABILITIES

            current = list(ALL_CAPABILITIES)
        elif name not in current:
            current.append(name)
    for cap in host.get("CapDrop") or []:
        name = cap.upper() if cap.upper().startswith("CAP_") else "CAP_" + cap.upper()
        current = [] if name == "CAP_ALL" else [c for c in current if c != name]
    changed = current != caps.get("bounding")
    for key in ("bounding", "effective", "permitted"):
        caps[key] = list(current)
    if changed and spec.get("linux", {}).get("seccomp"):
        from pyengine.runtime.spec import default_seccomp

        spec["linux"]["seccomp"] = default_seccomp(current)


def exec_spec(record: ContainerRecord, args: list[str], *, user: str | None, env: list[str],
              workdir: str | None, tty: bool, privileged: bool) -> dict[str, Any]:
    """The spec of a process started in a running container by ``exec``: the container's
    environment, user and confinement, with the exec's own overrides."""
    from pyengine.runtime.spec import default_spec

    config, host = record.config, record.host_config
    spec = default_spec(args, "/", terminal=tty, privileged=privileged or bool(host.get("Privileged")))
    process = spec["process"]
    merged = {}
    for item in list(config.get("Env") or []) + env:
        key, _, value = item.partition("=")
        merged[key] = value
    process["env"] = [f"{k}={v}" for k, v in merged.items()]
    process["cwd"] = workdir or config.get("WorkingDir") or "/"
    rootfs = Path(f"/proc/{record.state.pid}/root")
    uid, gid, extra = resolve_user(rootfs, user if user is not None else (config.get("User") or ""))
    process["user"] = {"uid": uid, "gid": gid, "additionalGids": extra}
    if not privileged:
        _capabilities(spec, host)
    # As Docker's exec: the container's no_new_privs, whether its --security-opt or the
    # engine's default at its start set it; the running PID 1 says which.
    _apply_security_opts(spec, parse_security_opts(host.get("SecurityOpt")),
                         _no_new_privs_of(record.state.pid))
    return spec


def _no_new_privs_of(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.split() == ["NoNewPrivs:", "1"] for line in f)
    except OSError:
        return False
