"""The Dockerfile parser: text -> parser directives, global ARGs and stages of typed instructions.

Follows the Dockerfile reference (BuildKit's ``dockerfile:1`` language): directives at the top
(``escape``, ``syntax`` accepted and ignored, ``check``), the escape character (``\\`` or a
backtick), line continuations with comments and blank lines inside them, case-insensitive
keywords, exec form (a JSON array; invalid JSON falls back to shell form) vs shell form,
heredocs for RUN, COPY and ADD, and each instruction's ``--flags``. Errors are one-line
``DockerfileError``\\ s, ``Dockerfile:LINE: WHAT``. Knows nothing of expansion values, the
build context, storage or images.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from pyengine.build.instructions import (
    Add,
    Arg,
    ArgDecl,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Heredoc,
    Instruction,
    Label,
    Maintainer,
    Mount,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from pyengine.errors import DockerfileError


@dataclass(frozen=True)
class Directives:
    """The parser directives found at the top of the file."""

    escape: str = "\\"
    syntax: str | None = None
    check: str | None = None


@dataclass
class Stage:
    """One ``FROM`` and the instructions after it, up to the next ``FROM``.

    ``base`` is the unexpanded image word of the FROM, ``name`` its ``AS`` name lowercased
    (None without one), ``line`` the FROM's line; ``from_instruction`` the FROM itself.
    """

    index: int
    name: str | None
    base: str
    platform: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)
    from_instruction: From | None = None


@dataclass
class Dockerfile:
    """A parsed Dockerfile: directives, ARGs before the first FROM, and the stages in order."""

    directives: Directives
    global_args: list[Arg]
    stages: list[Stage]
    filename: str = "Dockerfile"

    @property
    def escape(self) -> str:
        return self.directives.escape

    def stage_by_name(self, name: str) -> Stage | None:
        """The stage called ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((s for s in self.stages if s.name == wanted), None)


_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_KNOWN_DIRECTIVES = ("escape", "syntax", "check")
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")
# Compiled here, not at first use: the fork server imports this module, so each served build
# starts with them compiled (re's own cache would be empty in every fork).
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_RAM_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?")
_SPACES = re.compile(r"\s+")
_SPACE = re.compile(r"\s")
_ONBUILD_PREFIX = re.compile(r"(?i)^\s*ONBUILD\s*")
_RESERVED_STAGE_NAMES = ("context", "scratch")
_HEREDOC_KEYWORDS = ("RUN", "COPY", "ADD")


class _ParseError(Exception):
    """A reason without a line, raised by the helpers and located by ``parse``."""


def _words(text: str, escape: str) -> list[str]:
    """Split on whitespace outside quotes, keeping quotes and escapes (BuildKit's parseWords)."""
    words: list[str] = []
    word: list[str] = []
    in_word = blank_ok = False
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'" and i + 1 < len(text):
                word.append(ch)
                i += 1
                ch = text[i]
            word.append(ch)
        elif ch.isspace():
            if in_word and (blank_ok or word):
                words.append("".join(word))
            word, in_word, blank_ok = [], False, False
        else:
            in_word = True
            if ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == escape:
                if i + 1 == len(text):
                    break
                word.append(ch)
                i += 1
                ch = text[i]
            word.append(ch)
        i += 1
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


def _unquote(word: str, escape: str) -> str:
    """A word with its quotes and escapes removed, no variables touched."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(word):
        ch = word[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote == '"' and i + 1 < len(word) and word[i + 1] in '"$' + escape:
                i += 1
                out.append(word[i])
            else:
                out.append(ch)
        elif ch in "'\"":
            quote = ch
        elif ch == escape and i + 1 < len(word):
            i += 1
            out.append(word[i])
        elif ch != escape:
            out.append(ch)
        i += 1
    return "".join(out)


def heredoc_markers(word: str, escape: str = "\\") -> tuple[int | None, bool, str, bool] | None:
    """If ``word`` opens a heredoc (``<<EOF``, ``<<-EOF``, ``<<"EOF"``, ``3<<EOF``):
    (fd, strip_tabs, name, expand_content); else None."""
    match = _HEREDOC.match(word)
    if not match or not match.group(3):
        return None
    rest = match.group(3)
    if len(_words(rest, escape)) != 1:
        return None
    name = _unquote(rest, escape)
    if not name:
        return None
    fd = int(match.group(1)) if match.group(1) else None
    return fd, match.group(2) == "-", name, not any(q in rest for q in "'\"")


def _extract_flags(text: str) -> tuple[list[str], str]:
    """The leading ``--flag[=value]`` words (quotes removed) and the rest of the line."""
    flags: list[str] = []
    i = 0
    n = len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if not text.startswith("--", i):
            return flags, text[i:]
        word: list[str] = []
        quote = ""
        while i < n and (quote or not text[i].isspace()):
            ch = text[i]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == "\\" and i + 1 < n:
                    i += 1
                    word.append(text[i])
                else:
                    word.append(ch)
            elif ch in "'\"":
                quote = ch
            elif ch == "\\" and i + 1 < n:
                i += 1
                word.append(text[i])
            else:
                word.append(ch)
            i += 1
        flag = "".join(word)
        if flag == "--":
            return flags, text[i:].lstrip()
        flags.append(flag)


class _Flags:
    """BuildKit's BFlags: each instruction declares its flags; anything else is refused."""

    def __init__(self, words: list[str], spec: dict[str, str]) -> None:
        self.values: dict[str, str | bool | list[str]] = {}
        for word in words:
            name, eq, value = word[2:].partition("=")
            kind = spec.get(name)
            if kind is None:
                raise _ParseError(f"unknown flag: {name}")
            if name in self.values and kind != "list":
                raise _ParseError(f"duplicate flag specified: {name}")
            if kind == "bool":
                if eq and not value:
                    raise _ParseError(f"missing a value on flag: {name}")
                if value.lower() not in ("", "true", "false"):
                    raise _ParseError(f"expecting boolean value for flag {name}, not: {value}")
                self.values[name] = value.lower() != "false"
            elif not eq:
                raise _ParseError(f"missing a value on flag: {name}")
            elif kind == "list":
                self.values.setdefault(name, [])
                self.values[name].append(value)  # type: ignore[union-attr]
            else:
                self.values[name] = value

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if isinstance(value, str) else None

    def flag(self, name: str) -> bool:
        return self.values.get(name) is True

    def many(self, name: str) -> list[str]:
        value = self.values.get(name)
        return list(value) if isinstance(value, list) else []


@dataclass
class _Line:
    """One logical line, split into keyword, flags and the rest, with its heredocs."""

    keyword: str
    flags: list[str]
    rest: str
    line: int
    original: str
    escape: str
    heredocs: list[Heredoc] = field(default_factory=list)


def _json_list(rest: str) -> list[str] | None:
    """``rest`` as a JSON array of strings (exec form), or None (shell form)."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def _go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    units = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
             "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
    body = text
    sign = 1
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    parts = _DURATION_PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise _ParseError(f'time: invalid duration "{text}"')
    total = sum(float(n) * units[u] for n, u in parts)
    return sign * int(round(total))


def _ram_bytes(text: str) -> int:
    """docker/go-units RAMInBytes: ``64m``, ``1.5g``, ``512kb``, ``1024``."""
    match = _RAM_SIZE.fullmatch(text.strip().lower())
    if not match:
        raise _ParseError(f"invalid size: '{text}'")
    power = " kmgtp".index(match.group(2) or " ")
    return int(float(match.group(1)) * 1024 ** power)


def _parse_mount(value: str) -> Mount:
    import csv

    try:
        fields = next(csv.reader([value]))
    except (csv.Error, StopIteration):
        raise _ParseError(f"invalid mount: {value}") from None
    kind = "bind"
    opts: dict = {}
    readonly: bool | None = None
    for item in fields:
        key, eq, val = item.partition("=")
        key = key.strip().lower()
        if not eq:
            if key in ("readonly", "ro"):
                readonly = True
            elif key in ("readwrite", "rw"):
                readonly = False
            elif key == "required":
                opts["required"] = True
            else:
                raise _ParseError(f"unexpected key '{key}' in '{item}'")
            continue
        if key == "type":
            kind = val.lower()
            if kind not in ("bind", "cache", "tmpfs", "secret", "ssh"):
                raise _ParseError(f'unsupported mount type "{val}"')
        elif key == "from":
            opts["from_"] = val
        elif key in ("source", "src"):
            opts["source"] = val
        elif key in ("target", "dst", "destination"):
            opts["target"] = val
        elif key in ("readonly", "ro", "readwrite", "rw", "required"):
            if val.lower() not in ("true", "false", "1", "0"):
                raise _ParseError(f"invalid value for {key}: {val}")
            flag = val.lower() in ("true", "1")
            if key == "required":
                opts["required"] = flag
            else:
                readonly = flag if key in ("readonly", "ro") else not flag
        elif key == "sharing":
            if val.lower() not in ("shared", "private", "locked"):
                raise _ParseError(f'unsupported sharing value "{val}"')
            opts["sharing"] = val.lower()
        elif key == "mode":
            try:
                opts["mode"] = int(val, 8)
            except ValueError:
                raise _ParseError(f"invalid value {val} for mode") from None
        elif key in ("uid", "gid"):
            if not val.isdigit():
                raise _ParseError(f"invalid value {val} for {key}")
            opts[key] = int(val)
        elif key == "id":
            opts["id"] = val
        elif key == "size":
            opts["size"] = _ram_bytes(val)
        elif key == "env":
            opts["env"] = val
        else:
            raise _ParseError(f"unexpected key '{key}' in '{item}'")
    if "size" in opts and kind != "tmpfs":
        raise _ParseError(f"unexpected key 'size' for mount type '{kind}'")
    if "required" in opts and kind not in ("secret", "ssh"):
        raise _ParseError(f"unexpected key 'required' for mount type '{kind}'")
    if "env" in opts and kind != "secret":
        raise _ParseError(f"unexpected key 'env' for mount type '{kind}'")
    if kind not in ("cache", "secret", "ssh"):
        for key in ("mode", "uid", "gid"):
            if key in opts:
                raise _ParseError(f'{key} not allowed for "{kind}" type mounts')
    if "sharing" in opts and kind != "cache":
        raise _ParseError(f"invalid cache sharing set for {kind} mount")
    if kind == "secret":
        if "from_" in opts:
            raise _ParseError("secret mount should not have a from")
        if not (opts.get("id") or opts.get("target") or opts.get("source")):
            raise _ParseError("invalid secret mount. one of source, target required")
        opts.setdefault("id", (opts.get("source") or opts.get("target", "")).rstrip("/")
                        .rsplit("/", 1)[-1])
        opts.setdefault("target", "/run/secrets/" + opts["id"])
        opts.setdefault("mode", 0o400)
    elif kind == "ssh":
        opts.setdefault("id", "default")
        opts.setdefault("target", "/run/buildkit/ssh_agent.0")
        opts.setdefault("mode", 0o600)
    elif not opts.get("target"):
        raise _ParseError(f"mount type {kind} requires a target")
    if kind == "cache":
        opts.setdefault("id", opts["target"])
        opts.setdefault("sharing", "shared")
        opts.setdefault("mode", 0o755)
    if kind in ("cache", "secret", "ssh"):
        opts.setdefault("uid", 0)
        opts.setdefault("gid", 0)
    if readonly is None:
        readonly = kind not in ("cache", "tmpfs")
    return Mount(type=kind, readonly=readonly, **opts)


def _pairs(keyword: str, rest: str, escape: str) -> list[tuple[str, str]]:
    """ENV and LABEL: ``k=v k2=v2`` or the old ``k value`` (the rest of the line)."""
    words = _words(rest, escape)
    if not words:
        raise _ParseError(f"{keyword} requires at least one argument")
    if "=" not in words[0]:
        parts = _SPACES.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise _ParseError(f"{keyword} must have two arguments")
        pairs = [(parts[0], parts[1])]
    else:
        pairs = []
        for word in words:
            if "=" not in word:
                raise _ParseError(f"Syntax error - can't find = in \"{word}\". "
                                  "Must be of the form: name=value")
            key, _, value = word.partition("=")
            pairs.append((key, value))
    if any(not key for key, _ in pairs):
        raise _ParseError(f"{keyword} names can not be blank")
    return pairs


def _one_argument(line: _Line) -> str:
    if not line.rest:
        raise _ParseError(f"{line.keyword} requires exactly one argument")
    return line.rest


def _command(line: _Line) -> tuple[list[str] | str, bool]:
    exec_form = _json_list(line.rest)
    if exec_form is not None:
        return exec_form, True
    if not line.rest:
        raise _ParseError(f"{line.keyword} requires at least one argument")
    return line.rest, False


def _build_from(line: _Line) -> From:
    flags = _Flags(line.flags, {"platform": "str"})
    words = line.rest.split()
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
        raise _ParseError("FROM requires either one or three arguments")
    name = None
    if len(words) == 3:
        name = words[2].lower()
        if not _STAGE_NAME.match(name):
            raise _ParseError(f'invalid name for build stage: "{words[2]}", '
                              "name can't start with a number or contain symbols")
        if name in _RESERVED_STAGE_NAMES:
            raise _ParseError(f"{name} is a reserved stage name")
    return From(line.line, line.original, image=words[0], name=name,
                platform=flags.text("platform"))


def _build_run(line: _Line) -> Run:
    flags = _Flags(line.flags, {"mount": "list", "network": "str", "security": "str"})
    network = flags.text("network")
    if network is not None and network not in ("default", "none", "host"):
        raise _ParseError(f'unsupported network mode "{network}"')
    security = flags.text("security")
    if security is not None and security not in ("sandbox", "insecure"):
        raise _ParseError(f'unsupported security mode "{security}"')
    mounts = [_parse_mount(value) for value in flags.many("mount")]
    command, exec_form = _command(line)
    return Run(line.line, line.original, command=command, exec_form=exec_form,
               heredocs=line.heredocs, mounts=mounts, network=network, security=security)


def _sources_and_dest(line: _Line) -> tuple[list[str], str, list[Heredoc]]:
    words = _json_list(line.rest)
    if words is None:
        words = line.rest.split()
    if len(words) < 2:
        raise _ParseError(f"{line.keyword} requires at least two arguments, but only "
                          f"{len(words)} was provided. Destination could not be determined.")
    *sources, dest = words
    if heredoc_markers(dest, line.escape):
        raise _ParseError(f"{line.keyword} cannot accept a heredoc as a destination")
    paths: list[str] = []
    docs: list[Heredoc] = []
    pending = list(line.heredocs)
    for source in sources:
        if heredoc_markers(source, line.escape) and pending:
            docs.append(pending.pop(0))
        else:
            paths.append(source)
    return paths, dest, docs


def _build_copy(line: _Line) -> Copy:
    flags = _Flags(line.flags, {"from": "str", "chown": "str", "chmod": "str", "link": "bool",
                                "parents": "bool", "exclude": "list"})
    sources, dest, docs = _sources_and_dest(line)
    return Copy(line.line, line.original, sources=sources, dest=dest, from_=flags.text("from"),
                chown=flags.text("chown"), chmod=flags.text("chmod"), link=flags.flag("link"),
                parents=flags.flag("parents"), exclude=flags.many("exclude"), heredocs=docs)


def _build_add(line: _Line) -> Add:
    flags = _Flags(line.flags, {"chown": "str", "chmod": "str", "link": "bool",
                                "parents": "bool", "exclude": "list", "checksum": "str",
                                "keep-git-dir": "bool", "unpack": "bool"})
    sources, dest, docs = _sources_and_dest(line)
    return Add(line.line, line.original, sources=sources, dest=dest, chown=flags.text("chown"),
               chmod=flags.text("chmod"), link=flags.flag("link"), parents=flags.flag("parents"),
               exclude=flags.many("exclude"), heredocs=docs, checksum=flags.text("checksum"),
               keep_git_dir=flags.flag("keep-git-dir"),
               unpack=flags.flag("unpack") if "unpack" in flags.values else None)


def _build_cmd(line: _Line) -> Cmd:
    _Flags(line.flags, {})
    command, exec_form = _command(line)
    return Cmd(line.line, line.original, command=command, exec_form=exec_form)


def _build_entrypoint(line: _Line) -> Entrypoint:
    _Flags(line.flags, {})
    command, exec_form = _command(line)
    return Entrypoint(line.line, line.original, command=command, exec_form=exec_form)


def _build_env(line: _Line) -> Env:
    _Flags(line.flags, {})
    return Env(line.line, line.original, pairs=_pairs("ENV", line.rest, line.escape))


def _build_label(line: _Line) -> Label:
    _Flags(line.flags, {})
    return Label(line.line, line.original, pairs=_pairs("LABEL", line.rest, line.escape))


def _build_arg(line: _Line) -> Arg:
    _Flags(line.flags, {})
    words = _words(line.rest, line.escape)
    if not words:
        raise _ParseError("ARG requires at least one argument")
    decls = []
    for word in words:
        name, eq, default = word.partition("=")
        if not name:
            raise _ParseError("ARG names can not be blank")
        decls.append(ArgDecl(name, default if eq else None))
    return Arg(line.line, line.original, args=decls)


def _build_expose(line: _Line) -> Expose:
    _Flags(line.flags, {})
    ports = line.rest.split()
    if not ports:
        raise _ParseError("EXPOSE requires at least one argument")
    return Expose(line.line, line.original, ports=ports)


def _build_user(line: _Line) -> User:
    _Flags(line.flags, {})
    return User(line.line, line.original, user=_one_argument(line))


def _build_workdir(line: _Line) -> Workdir:
    _Flags(line.flags, {})
    return Workdir(line.line, line.original, path=_one_argument(line))


def _build_volume(line: _Line) -> Volume:
    _Flags(line.flags, {})
    paths = _json_list(line.rest)
    if paths is None:
        paths = line.rest.split()
    if not paths:
        raise _ParseError("VOLUME requires at least one argument")
    if any(not p.strip() for p in paths):
        raise _ParseError("VOLUME specified can not be an empty string")
    return Volume(line.line, line.original, paths=paths)


def _build_stopsignal(line: _Line) -> StopSignal:
    _Flags(line.flags, {})
    return StopSignal(line.line, line.original, signal=_one_argument(line))


def _build_healthcheck(line: _Line) -> Healthcheck:
    flags = _Flags(line.flags, {"interval": "str", "timeout": "str", "start-period": "str",
                                "start-interval": "str", "retries": "str"})
    kind, rest = (line.rest.split(None, 1) + ["", ""])[:2]
    kind = kind.upper()
    rest = rest.strip()
    if not kind:
        raise _ParseError("HEALTHCHECK requires at least one argument")
    if kind == "NONE":
        if rest or flags.values:
            raise _ParseError("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(line.line, line.original, test=["NONE"])
    if kind != "CMD":
        raise _ParseError(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    exec_form = _json_list(rest)
    if exec_form is not None:
        test = ["CMD", *exec_form]
        if not exec_form:
            raise _ParseError("Missing command after HEALTHCHECK CMD")
    elif rest:
        test = ["CMD-SHELL", rest]
    else:
        raise _ParseError("Missing command after HEALTHCHECK CMD")

    def interval(name: str) -> int:
        value = flags.text(name)
        if not value:
            return 0
        nanos = _go_duration(value)
        if nanos != 0 and nanos < 1_000_000:
            raise _ParseError(f'Interval "{name}" cannot be less than 1ms')
        return nanos

    retries = 0
    if flags.text("retries"):
        try:
            retries = int(flags.text("retries") or "0")
        except ValueError:
            raise _ParseError(f"invalid --retries value: {flags.text('retries')}") from None
        if retries < 0:
            raise _ParseError(f"--retries cannot be negative ({retries})")
    return Healthcheck(line.line, line.original, test=test, interval=interval("interval"),
                       timeout=interval("timeout"), start_period=interval("start-period"),
                       start_interval=interval("start-interval"), retries=retries)


def _build_shell(line: _Line) -> Shell:
    _Flags(line.flags, {})
    shell = _json_list(line.rest)
    if shell is None:
        raise _ParseError("SHELL requires the arguments to be in JSON form")
    if not shell:
        raise _ParseError("SHELL requires at least one argument")
    return Shell(line.line, line.original, shell=shell)


def _build_maintainer(line: _Line) -> Maintainer:
    _Flags(line.flags, {})
    return Maintainer(line.line, line.original, name=_one_argument(line))


def _build_onbuild(line: _Line) -> Onbuild:
    _Flags(line.flags, {})
    if not line.rest:
        raise _ParseError("ONBUILD requires at least one argument")
    trigger = line.rest.split(None, 1)[0].upper()
    if trigger == "ONBUILD":
        raise _ParseError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("FROM", "MAINTAINER"):
        raise _ParseError(f"{trigger} isn't allowed as an ONBUILD trigger")
    expression = _ONBUILD_PREFIX.sub("", line.original)
    inner = _instruction(_split_line(expression, line.line, line.escape))
    return Onbuild(line.line, line.original, expression=expression, inner=inner)


_BUILDERS: dict[str, Callable[[_Line], Instruction]] = {
    "FROM": _build_from, "RUN": _build_run, "COPY": _build_copy, "ADD": _build_add,
    "CMD": _build_cmd, "ENTRYPOINT": _build_entrypoint, "ENV": _build_env,
    "LABEL": _build_label, "ARG": _build_arg, "EXPOSE": _build_expose, "USER": _build_user,
    "WORKDIR": _build_workdir, "VOLUME": _build_volume, "STOPSIGNAL": _build_stopsignal,
    "HEALTHCHECK": _build_healthcheck, "SHELL": _build_shell, "MAINTAINER": _build_maintainer,
    "ONBUILD": _build_onbuild,
}


def _split_line(text: str, line: int, escape: str) -> _Line:
    text = text.strip()
    keyword = _SPACE.split(text, maxsplit=1)[0]
    rest = text[len(keyword):]
    upper = keyword.upper()
    if upper not in _BUILDERS:
        raise _ParseError(f"unknown instruction: {upper}")
    flags, rest = _extract_flags(rest)
    return _Line(upper, flags, rest.strip(), line, text, escape)


def _instruction(line: _Line) -> Instruction:
    return _BUILDERS[line.keyword](line)


def parse_instruction(text: str, line: int = 1, escape: str = "\\",
                      filename: str = "Dockerfile") -> Instruction:
    """Parse one instruction written on one logical line (an ONBUILD trigger in a base image)."""
    try:
        return _instruction(_split_line(text, line, escape))
    except (_ParseError, DockerfileError) as exc:
        what = exc.what if isinstance(exc, DockerfileError) else str(exc)
        raise DockerfileError(what, line, filename) from None


def _directives(lines: list[str]) -> tuple[Directives, int]:
    """The directives at the top and the index of the first line after them."""
    found: dict[str, tuple[str, int]] = {}
    index = 0
    for index, text in enumerate(lines):  # noqa: B007 (index is used after the loop)
        match = _DIRECTIVE.match(text)
        if not match or match.group(1).lower() not in _KNOWN_DIRECTIVES:
            break
        name = match.group(1).lower()
        if name in found:
            raise DockerfileError(f"only one {name} parser directive can be used", index + 1)
        found[name] = (match.group(2), index + 1)
    else:
        index = len(lines)
    escape = "\\"
    if "escape" in found:
        escape, line = found["escape"]
        if escape not in ("\\", "`"):
            raise DockerfileError(f"invalid escape token '{escape}' does not match ` or \\", line)
    return Directives(escape=escape, syntax=found.get("syntax", (None,))[0],
                      check=found.get("check", (None,))[0]), index


def _is_comment(text: str) -> bool:
    return text.lstrip().startswith("#")


def _strip_continuation(text: str, escape: str) -> tuple[str, bool]:
    """(the line without a trailing escape, whether it continues)."""
    stripped = text.rstrip(" \t")
    if stripped.endswith(escape):
        return stripped[:-1], True
    return text, False


def parse(text: str, filename: str = "Dockerfile") -> Dockerfile:
    """Parse a whole Dockerfile.

    Raises DockerfileError ``FILENAME:LINE: WHAT`` for an unknown instruction, a missing
    FROM, an instruction before the first FROM other than ARG, a bad flag or argument, an
    unterminated heredoc, and the like.
    """
    lines = text.removeprefix("\ufeff").split("\n")
    lines = [line.removesuffix("\r") for line in lines]
    if lines and lines[-1] == "":
        lines.pop()
    directives, i = _directives(lines)
    escape = directives.escape
    global_args: list[Arg] = []
    stages: list[Stage] = []
    while i < len(lines):
        start = i
        raw = lines[i]
        i += 1
        if _is_comment(raw) or not raw.strip():
            continue
        logical, continues = _strip_continuation(raw.lstrip(), escape)
        while continues and i < len(lines):
            raw = lines[i]
            i += 1
            if _is_comment(raw) or not raw.strip():
                continue
            part, continues = _strip_continuation(raw, escape)
            logical += part
        try:
            if not logical.strip():
                raise _ParseError("line continuation at the end of the file")
            line = _split_line(logical, start + 1, escape)
            if continues and not line.rest:
                raise _ParseError(f"line continuation at the end of the file: {line.keyword} "
                                  "has no arguments")
            if line.keyword in _HEREDOC_KEYWORDS and "<<" in line.rest:
                i = _read_heredocs(line, lines, i)
            instruction = _instruction(line)
        except (_ParseError, DockerfileError) as exc:
            what = exc.what if isinstance(exc, DockerfileError) else str(exc)
            raise DockerfileError(what, start + 1, filename) from None
        if isinstance(instruction, From):
            stages.append(Stage(len(stages), instruction.name, instruction.image,
                                instruction.platform, instruction.line, [], instruction))
        elif stages:
            stages[-1].instructions.append(instruction)
        elif isinstance(instruction, Arg):
            global_args.append(instruction)
        else:
            raise DockerfileError(f"{instruction.keyword} instruction must be preceded by FROM",
                                  instruction.line, filename)
    if not stages:
        raise DockerfileError("no FROM instruction", None, filename)
    names: dict[str, Stage] = {}
    for stage in stages:
        if stage.name is None:
            continue
        if stage.name in names:
            raise DockerfileError(f'duplicate stage name "{stage.name}"', stage.line, filename)
        names[stage.name] = stage
    return Dockerfile(directives, global_args, stages, filename)


def _read_heredocs(line: _Line, lines: list[str], i: int) -> int:
    """Read the bodies of the heredocs ``line`` opens from ``lines[i:]``; the next index."""
    if _json_list(line.rest) is not None:
        return i
    markers = [m for m in (heredoc_markers(w, line.escape) for w in _words(line.rest, line.escape))
               if m]
    for fd, strip_tabs, name, expand_content in markers:
        body: list[str] = []
        while True:
            if i >= len(lines):
                raise _ParseError(f"unterminated heredoc {name}")
            text = lines[i]
            i += 1
            candidate = text.lstrip("\t") if strip_tabs else text
            if candidate == name:
                break
            body.append(candidate + "\n")
        line.heredocs.append(Heredoc(name, "".join(body), expand_content, strip_tabs, fd))
    return i
