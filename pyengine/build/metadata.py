"""Metadata instructions applied to an image's container config (the ``config`` object of an
image config): CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, VOLUME, STOPSIGNAL,
HEALTHCHECK, SHELL, ONBUILD, MAINTAINER, and the ``docker commit --change`` lines that name them.

Owns what each instruction does to the config and how ``docker history`` names it
(BuildKit's ``created_by`` wording). Pure functions on dicts; calls nothing else.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from pyengine.errors import UsageError

DEFAULT_SHELL = ["/bin/sh", "-c"]

#: instructions ``commit --change`` accepts (Docker's list)
COMMIT_CHANGES = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER", "VOLUME",
                  "WORKDIR")

#: the keys of an image's container config, in Docker's order
CONFIG_KEYS = ("Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts",
               "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes",
               "WorkingDir", "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild", "Labels",
               "StopSignal", "StopTimeout", "Shell")


def image_config_from_container(container_config: dict[str, Any]) -> dict[str, Any]:
    """The part of a container's config that an image keeps (what ``commit`` writes)."""
    keep = ("User", "ExposedPorts", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Volumes", "WorkingDir",
            "Entrypoint", "OnBuild", "Labels", "StopSignal", "Shell")
    out = {}
    for key in keep:
        value = container_config.get(key)
        if value not in (None, "", [], {}):
            out[key] = value
    return out


def env_get(config: dict[str, Any], key: str) -> str | None:
    for item in config.get("Env") or []:
        name, _, value = item.partition("=")
        if name == key:
            return value
    return None


def env_set(config: dict[str, Any], pairs: list[tuple[str, str]]) -> None:
    env = list(config.get("Env") or [])
    for key, value in pairs:
        env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={value}"]
    config["Env"] = env


def env_dict(config: dict[str, Any]) -> dict[str, str]:
    out = {}
    for item in config.get("Env") or []:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def shell_or_exec(config: dict[str, Any], value: list[str] | str) -> list[str]:
    """An instruction's argv: exec form as given, shell form through the stage's SHELL."""
    if isinstance(value, list):
        return list(value)
    return list(config.get("Shell") or DEFAULT_SHELL) + [value]


def normalize_port(port: str) -> list[str]:
    """``80``, ``80/TCP``, ``8000-8002/udp`` -> Docker's ``80/tcp`` keys (ranges expanded)."""
    number, _, protocol = port.partition("/")
    protocol = (protocol or "tcp").lower()
    if protocol not in ("tcp", "udp", "sctp"):
        raise UsageError(f"invalid proto: {protocol}")
    low, sep, high = number.partition("-")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise UsageError(f"invalid containerPort: {number}")
    first, last = int(low), int(high) if sep else int(low)
    if not 0 < first <= last <= 65535:
        raise UsageError(f"invalid port range: {number}")
    return [f"{p}/{protocol}" for p in range(first, last + 1)]


def apply(config: dict[str, Any], name: str, value: Any, *, cmd_set_in_stage: bool = True) -> None:
    """Apply one metadata instruction to ``config`` (a container config dict), in place.

    ``value`` is the instruction's parsed argument: an argv list or a shell-form string for
    CMD/ENTRYPOINT/SHELL, ``[(key, value)]`` for ENV and LABEL, a list of strings for EXPOSE
    and VOLUME, a dict for HEALTHCHECK (Docker's Healthcheck object), a string otherwise.
    ``cmd_set_in_stage``: for ENTRYPOINT, whether this stage set CMD itself (if not, the
    inherited CMD is reset, as Docker does).
    """
    name = name.upper()
    if name == "CMD":
        config["Cmd"] = shell_or_exec(config, value)
    elif name == "ENTRYPOINT":
        config["Entrypoint"] = shell_or_exec(config, value) if value not in ([], "") else None
        if not cmd_set_in_stage:
            config["Cmd"] = None
    elif name == "ENV":
        env_set(config, list(value))
    elif name == "LABEL":
        labels = dict(config.get("Labels") or {})
        for key, val in value:
            labels[key] = val
        config["Labels"] = labels
    elif name == "EXPOSE":
        ports = dict(config.get("ExposedPorts") or {})
        for port in value:
            for key in normalize_port(port):
                ports[key] = {}
        config["ExposedPorts"] = ports
    elif name == "VOLUME":
        volumes = dict(config.get("Volumes") or {})
        for path in value:
            if not path:
                raise UsageError("VOLUME specified can not be an empty string")
            volumes[path] = {}
        config["Volumes"] = volumes
    elif name == "USER":
        config["User"] = value
    elif name == "WORKDIR":
        config["WorkingDir"] = join_workdir(config.get("WorkingDir") or "/", value)
    elif name == "STOPSIGNAL":
        from pyengine.containers.engine import parse_signal

        parse_signal(value)
        config["StopSignal"] = value
    elif name == "HEALTHCHECK":
        config["Healthcheck"] = value
    elif name == "SHELL":
        if not isinstance(value, list) or not value:
            raise UsageError("SHELL requires the arguments to be in JSON form")
        config["Shell"] = list(value)
    elif name == "ONBUILD":
        config["OnBuild"] = list(config.get("OnBuild") or []) + [value]
    elif name == "MAINTAINER":
        pass  # the image config's author field, set by the caller
    else:
        raise UsageError(f"{name} is not a metadata instruction")


def join_workdir(current: str, path: str) -> str:
    import posixpath

    joined = path if path.startswith("/") else posixpath.join(current or "/", path)
    return posixpath.normpath(joined) if joined != "/" else "/"


# -- commit --change -------------------------------------------------------------------------
def parse_change(line: str) -> tuple[str, Any]:
    """One ``commit --change`` line (``CMD ["sh"]``, ``ENV A=b``, ``EXPOSE 80``) -> (name, value)."""
    match = re.match(r"\s*([A-Za-z]+)\s*(.*)", line, re.S)
    if not match:
        raise UsageError(f"invalid change {line!r}: use a Dockerfile instruction such as 'CMD [\"sh\"]'")
    name, rest = match.group(1).upper(), match.group(2).strip()
    if name not in COMMIT_CHANGES:
        raise UsageError(f"{name} is not a valid change command")
    if name in ("CMD", "ENTRYPOINT"):
        return name, _json_or_shell(rest)
    if name in ("ENV", "LABEL"):
        return name, _pairs(name, rest)
    if name in ("EXPOSE",):
        return name, _words(rest)
    if name == "VOLUME":
        parsed = _json_list(rest)
        return name, parsed if parsed is not None else _words(rest)
    if not rest:
        raise UsageError(f"{name} requires exactly one argument")
    return name, rest


def _json_list(text: str) -> list[str] | None:
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _json_or_shell(text: str) -> list[str] | str:
    parsed = _json_list(text)
    return parsed if parsed is not None else text


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"invalid change argument {text!r}: {exc}") from None


def _pairs(name: str, text: str) -> list[tuple[str, str]]:
    words = _words(text)
    if not words:
        raise UsageError(f"{name} requires at least one argument")
    if "=" not in words[0]:
        # the old form: ENV KEY the rest of the line
        key, _, value = text.partition(" ")
        return [(key, value.strip())]
    out = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(f"{name} names must have the form KEY=VALUE, not {word!r}")
        out.append((key, value))
    return out


# -- history wording (BuildKit's) ------------------------------------------------------------
def created_by(name: str, text: str) -> str:
    """``docker history``'s CREATED BY of a step: BuildKit's wording (``ENV A=b``,
    ``RUN /bin/sh -c echo hi # buildkit``, ``COPY f /f # buildkit``)."""
    name = name.upper()
    if name in ("RUN", "COPY", "ADD"):
        return f"{text} # buildkit"
    return text
