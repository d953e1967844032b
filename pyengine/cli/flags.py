"""Flags as the docker CLI reads them: the click types of container flags whose values need
parsing, and Docker's shape for a command line that click refused.

A bad flag of ``run``, ``create`` or ``exec`` is one line saying what is wrong (``unknown flag:
--bogus``, ``invalid argument "abc" for "--cpus" flag: ...``), then ``See 'pyengine run
--help'.``, and the docker CLI's exit status 125 (1 for missing arguments, as docker's). Other
commands keep click's usage message and status 2. Values the engine must check whichever way
they come (the daemon's create too) are checked in ``pyengine.containers.validate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

#: commands whose usage errors take Docker's shape (by command name, also under `container`)
DOCKER_SHAPED = ("run", "create", "exec")


@dataclass
class DockerUsage:
    """What to print for a refused command line, and the exit status."""

    text: str
    exit_code: int


def docker_usage_error(exc: click.ClickException, argv: list[str]) -> DockerUsage | None:
    """Docker's message for a usage error of ``run``/``create``/``exec``; None for others."""
    if not isinstance(exc, click.UsageError):
        return None
    ctx = exc.ctx
    if ctx is not None:
        path, name = (ctx.command_path, ctx.command.name) if ctx.parent is not None else ("", None)
    else:  # the option parser's errors (a value missing, a flag given one) carry no context
        path, name = _command_of(argv)
    if name not in DOCKER_SHAPED:
        return None
    hint = f"See '{path} --help'."
    if isinstance(exc, click.BadOptionUsage) and "requires an argument" in exc.message:
        return DockerUsage(f"pyengine: error: flag needs an argument: {exc.option_name}\n{hint}", 125)
    if ctx is None:
        return DockerUsage(f"pyengine: error: {exc.format_message().rstrip('.')}\n{hint}", 125)
    if isinstance(exc, click.NoSuchOption):
        name = exc.option_name
        what = f"unknown shorthand flag: '{name[1:2]}' in {name}" if not name.startswith("--") \
            else f"unknown flag: {name}"
        return DockerUsage(f"pyengine: error: {what}\n{hint}", 125)
    if isinstance(exc, click.MissingParameter) and isinstance(exc.param, click.Argument):
        needed = sum(1 for p in ctx.command.params if isinstance(p, click.Argument) and p.required)
        plural = "argument" if needed == 1 else "arguments"
        return DockerUsage(f"pyengine: error: '{ctx.command_path}' requires at least {needed} {plural}\n{hint}", 1)
    if isinstance(exc, click.BadParameter) and isinstance(exc.param, click.Option):
        return DockerUsage(f"pyengine: error: {_invalid_argument(exc, ctx, argv)}\n{hint}", 125)
    return DockerUsage(f"pyengine: error: {exc.format_message().rstrip('.')}\n{hint}", 125)


def _command_of(argv: list[str]) -> tuple[str, str | None]:
    """(command path, command name) that ``argv`` names, past the global options."""
    from pyengine.cli import cli

    valued = {name for p in cli.params if isinstance(p, click.Option) and not p.is_flag
              for name in (*p.opts, *p.secondary_opts)}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in valued else 1
    words = argv[i:i + 2]
    if not words:
        return "pyengine", None
    if words[0] == "container" and len(words) == 2:
        return f"pyengine container {words[1]}", words[1]
    return f"pyengine {words[0]}", words[0]


def _invalid_argument(exc: click.BadParameter, ctx: click.Context, argv: list[str]) -> str:
    """``invalid argument "VALUE" for "--flag" flag: REASON``: the value is the first one the
    command line gives the flag that its type refuses."""
    param = exc.param
    assert isinstance(param, click.Option)
    flag = max(param.opts, key=len)
    for value in _values_of(param, argv):
        try:
            param.type.convert(value, param, ctx)
        except click.BadParameter as refused:
            return f'invalid argument "{value}" for "{flag}" flag: {refused.message.rstrip(".")}'
    return f'invalid argument for "{flag}" flag: {exc.message.rstrip(".")}'


def _values_of(param: click.Option, argv: list[str]) -> list[str]:
    names = [*param.opts, *param.secondary_opts]
    values = []
    for i, token in enumerate(argv):
        for name in names:
            if token == name and i + 1 < len(argv):
                values.append(argv[i + 1])
            elif name.startswith("--") and token.startswith(name + "="):
                values.append(token[len(name) + 1:])
            elif not name.startswith("--") and token.startswith(name) and len(token) > len(name):
                values.append(token[len(name):].removeprefix("="))
    return values


# -- types -------------------------------------------------------------------------------------
class ByteSize(click.ParamType):
    """A size as Docker's RAMInBytes reads it (``64m``, ``1g``, bytes); the text is kept.

    :param unlimited: ``-1`` is accepted too (``--memory-swap -1``)
    """

    name = "bytes"

    def __init__(self, unlimited: bool = False) -> None:
        self.unlimited = unlimited

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from pyengine.containers.spec import parse_bytes
        from pyengine.errors import UsageError

        if self.unlimited and str(value).strip() == "-1":
            return value
        try:
            parse_bytes(str(value))
        except UsageError:
            self.fail(f"invalid size: '{value}'", param, ctx)
        return value


class RestartPolicy(click.ParamType):
    """``no``, ``always``, ``unless-stopped`` or ``on-failure[:N]``; the text is kept."""

    name = "policy"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        name, sep, count = str(value).partition(":")
        if name not in ("no", "always", "on-failure", "unless-stopped"):
            self.fail(f"unknown policy '{name}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'",
                      param, ctx)
        if sep and (name != "on-failure" or not count.isdigit()):
            self.fail("maximum retry count must be a whole number, and only on-failure takes one", param, ctx)
        return value


class Ulimit(click.ParamType):
    """``NAME=SOFT[:HARD]`` of a limit this host knows; the text is kept (whether the host
    can grant it is checked with the other flags)."""

    name = "ulimit"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import resource

        name, sep, limits = str(value).partition("=")
        soft, _, hard = limits.partition(":")
        hard = hard or soft
        if not sep or not name or not soft.lstrip("-").isdigit() or not hard.lstrip("-").isdigit():
            self.fail(f"invalid ulimit argument: {value}", param, ctx)
        if getattr(resource, "RLIMIT_" + name.upper(), None) is None:
            self.fail(f"invalid ulimit type: {name}", param, ctx)
        if int(soft) > int(hard):
            self.fail(f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}", param, ctx)
        return value


class Publish(click.ParamType):
    """``[IP:][HOSTPORT:]PORT[/tcp|udp]``; the text is kept."""

    name = "port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from pyengine.errors import UsageError
        from pyengine.network.ports import parse_publish

        try:
            parse_publish(str(value))
        except UsageError as exc:
            self.fail(str(exc).split(": ", 1)[-1], param, ctx)
        return value


class Volume(click.ParamType):
    """``HOST:CTR[:ro|rw]`` or ``NAME:CTR[:ro|rw]`` with an absolute CTR; the text is kept
    (whether a host path exists is checked with the other flags)."""

    name = "volume"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        parts = str(value).split(":")
        if len(parts) not in (2, 3) or not parts[0] or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            self.fail(f"invalid volume specification: '{value}': use HOST:CTR[:ro|rw] or NAME:CTR[:ro|rw]",
                      param, ctx)
        if not parts[1].startswith("/"):
            self.fail(f"invalid volume specification: '{value}': invalid mount path: '{parts[1]}' mount path must "
                      "be absolute", param, ctx)
        return value


BYTES = ByteSize()
BYTES_OR_UNLIMITED = ByteSize(unlimited=True)
RESTART_POLICY = RestartPolicy()
ULIMIT = Ulimit()
PUBLISH = Publish()
VOLUME = Volume()
