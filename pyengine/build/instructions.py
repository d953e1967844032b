"""Typed Dockerfile instructions: one frozen dataclass per instruction, as the parser makes them.

Each carries its 1-based ``line`` and ``original`` text (for error messages and the history's
``created_by``) and an ``expand(expand_word)`` that returns a copy with exactly the words
Docker's builder expands replaced (the reference's "Environment replacement" list: ADD, COPY,
ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR, plus ARG defaults and RUN mount
options as BuildKit does). RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER and ONBUILD are
returned unchanged: their variables are the shell's business, or the child build's.
This module knows no parsing and no execution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Self

from pyengine.errors import DockerfileError

#: expands one word (quotes removed, variables replaced); see ``pyengine.build.expand.Expander``
ExpandWord = Callable[[str], str]


def _text_expander(expand_word: ExpandWord) -> ExpandWord:
    """The expander for heredoc bodies: variables only, quotes kept (``Expander.text``)."""
    return getattr(expand_word, "text", expand_word)


@dataclass(frozen=True)
class Heredoc:
    """One here-document: ``<<NAME`` (``<<-NAME`` strips leading tabs, already done in ``content``).

    ``expand_content`` is False when the delimiter was quoted (``<<"EOF"``, ``<<'EOF'``).
    ``fd`` is the file descriptor a RUN redirects it to (``3<<EOF``), None for stdin.
    """

    name: str
    content: str
    expand_content: bool = True
    strip_tabs: bool = False
    fd: int | None = None


@dataclass(frozen=True)
class Mount:
    """A ``RUN --mount=...``; field defaults follow BuildKit (filled in by the parser).

    type: bind | cache | tmpfs | secret | ssh. ``target`` is the path in the RUN container;
    ``source`` the path in ``from_`` (a stage name, index or image; None: the build context).
    ``id`` names a cache, secret or ssh socket; ``sharing`` shared | private | locked (cache);
    ``mode``/``uid``/``gid`` the cache, secret or ssh file's owner and mode; ``size`` in bytes
    (tmpfs); ``env`` the variable a secret is also exposed as.
    """

    type: str = "bind"
    target: str | None = None
    source: str | None = None
    from_: str | None = None
    id: str | None = None
    sharing: str | None = None
    readonly: bool = False
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    size: int | None = None
    env: str | None = None

    def expand(self, expand_word: ExpandWord) -> Self:
        def opt(value: str | None) -> str | None:
            return None if value is None else expand_word(value)
        return dataclasses.replace(self, target=opt(self.target), source=opt(self.source),
                                   from_=opt(self.from_), id=opt(self.id))


@dataclass(frozen=True)
class Instruction:
    """Base of every instruction: where it stands and how it was written."""

    keyword: ClassVar[str] = ""

    line: int
    original: str

    def expand(self, expand_word: ExpandWord) -> Self:
        """A copy with its words expanded; instructions Docker does not expand return ``self``."""
        return self


@dataclass(frozen=True)
class From(Instruction):
    """``FROM [--platform=P] IMAGE [AS NAME]``; ``image`` is the unexpanded word."""

    keyword: ClassVar[str] = "FROM"

    image: str = ""
    name: str | None = None
    platform: str | None = None

    def expand(self, expand_word: ExpandWord) -> Self:
        return dataclasses.replace(
            self, image=expand_word(self.image),
            platform=None if self.platform is None else expand_word(self.platform))


@dataclass(frozen=True)
class Run(Instruction):
    """``RUN``: exec form (``command`` a list) or shell form (``command`` the text for the shell).

    In shell form with heredocs, ``command`` is the instruction's first line (``cat <<EOF >x``)
    and ``heredocs`` their bodies; ``shell_script()`` gives what the shell is to run.
    """

    keyword: ClassVar[str] = "RUN"

    command: list[str] | str = ""
    exec_form: bool = False
    heredocs: list[Heredoc] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    network: str | None = None
    security: str | None = None

    def expand(self, expand_word: ExpandWord) -> Self:
        return dataclasses.replace(self, mounts=[m.expand(expand_word) for m in self.mounts])

    def script_heredoc(self) -> Heredoc | None:
        """The heredoc that *is* the script (``RUN <<EOF`` alone on its line), else None.

        Docker runs such a body as a script: a file executed directly when it starts with
        ``#!``, else the body given to the shell as its command.
        """
        if self.exec_form or len(self.heredocs) != 1 or not isinstance(self.command, str):
            return None
        from pyengine.build.dockerfile import heredoc_markers

        words = self.command.split()
        if len(words) == 1 and heredoc_markers(words[0]):
            return self.heredocs[0]
        return None

    def shell_script(self) -> str:
        """The text a shell-form RUN hands to ``SHELL`` as its one argument.

        Without heredocs, ``command``; with a script heredoc, its body; otherwise the line
        followed by each heredoc body and its delimiter, so the shell reads them itself.
        """
        if not isinstance(self.command, str):
            raise TypeError("shell_script() of an exec-form RUN")
        script = self.script_heredoc()
        if script is not None:
            return script.content
        full = self.command
        for doc in self.heredocs:
            full += "\n" + doc.content + doc.name
        return full


@dataclass(frozen=True)
class _CopyLike(Instruction):
    """What COPY and ADD share. ``sources`` excludes heredocs; ``heredocs`` become files."""

    sources: list[str] = field(default_factory=list)
    dest: str = ""
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    exclude: list[str] = field(default_factory=list)
    heredocs: list[Heredoc] = field(default_factory=list)

    def expand(self, expand_word: ExpandWord) -> Self:
        text = _text_expander(expand_word)

        def opt(value: str | None) -> str | None:
            return None if value is None else expand_word(value)
        docs = [dataclasses.replace(d, content=text(d.content)) if d.expand_content else d
                for d in self.heredocs]
        return dataclasses.replace(
            self, sources=[expand_word(s) for s in self.sources], dest=expand_word(self.dest),
            chown=opt(self.chown), chmod=opt(self.chmod),
            exclude=[expand_word(e) for e in self.exclude], heredocs=docs)


@dataclass(frozen=True)
class Copy(_CopyLike):
    """``COPY [--from=S] [--chown=U:G] [--chmod=M] [--link] [--parents] [--exclude=P] SRC... DEST``.

    ``from_`` is the unexpanded ``--from`` word; the plan resolves it to a stage or an image.
    """

    keyword: ClassVar[str] = "COPY"

    from_: str | None = None


@dataclass(frozen=True)
class Add(_CopyLike):
    """``ADD [--checksum=D] [--keep-git-dir] ... SRC... DEST``: also URLs, git and local tars."""

    keyword: ClassVar[str] = "ADD"

    checksum: str | None = None
    keep_git_dir: bool = False
    unpack: bool | None = None

    def expand(self, expand_word: ExpandWord) -> Self:
        copy = super().expand(expand_word)
        if self.checksum is None:
            return copy
        return dataclasses.replace(copy, checksum=expand_word(self.checksum))


@dataclass(frozen=True)
class Cmd(Instruction):
    """``CMD``: exec form (a list) or shell form (a string run through ``SHELL``)."""

    keyword: ClassVar[str] = "CMD"

    command: list[str] | str = ""
    exec_form: bool = False


@dataclass(frozen=True)
class Entrypoint(Instruction):
    """``ENTRYPOINT``: exec form or shell form; setting it resets an inherited CMD."""

    keyword: ClassVar[str] = "ENTRYPOINT"

    command: list[str] | str = ""
    exec_form: bool = False


@dataclass(frozen=True)
class Env(Instruction):
    """``ENV k=v ...`` or ``ENV k v``: pairs in order, all expanded against the env before it."""

    keyword: ClassVar[str] = "ENV"

    pairs: list[tuple[str, str]] = field(default_factory=list)

    def expand(self, expand_word: ExpandWord) -> Self:
        return dataclasses.replace(
            self, pairs=[(expand_word(k), expand_word(v)) for k, v in self.pairs])


@dataclass(frozen=True)
class ArgDecl:
    """One name of an ARG line and its default (None: declared without a value)."""

    name: str
    default: str | None = None


@dataclass(frozen=True)
class Arg(Instruction):
    """``ARG NAME[=DEFAULT] ...``: several declarations may share a line."""

    keyword: ClassVar[str] = "ARG"

    args: list[ArgDecl] = field(default_factory=list)

    def expand(self, expand_word: ExpandWord) -> Self:
        """Expands the defaults; BuildKit expands each against the scope before the line."""
        return dataclasses.replace(self, args=[
            ArgDecl(a.name, None if a.default is None else expand_word(a.default))
            for a in self.args])


_PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class Expose(Instruction):
    """``EXPOSE PORT[/PROTO] ...``; ``exposed_ports()`` gives Docker's config keys."""

    keyword: ClassVar[str] = "EXPOSE"

    ports: list[str] = field(default_factory=list)

    def expand(self, expand_word: ExpandWord) -> Self:
        """Each word expanded, then split on whitespace (``EXPOSE $PORTS`` may name several)."""
        words: list[str] = []
        for port in self.ports:
            words.extend(expand_word(port).split())
        return dataclasses.replace(self, ports=words)

    def exposed_ports(self) -> list[str]:
        """``80`` -> ``80/tcp``, ``53/UDP`` -> ``53/udp``, ``8000-8002`` -> each port; sorted, unique.

        Raises DockerfileError (at this line) for a word that is not a port, range or protocol.
        """
        result: set[tuple[int, str]] = set()
        for word in self.ports:
            spec, _, proto = word.partition("/")
            proto = (proto or "tcp").lower()
            # Docker accepts ip:hostPort:containerPort here and keeps only the container side.
            spec = spec.rsplit(":", 1)[-1]
            if proto not in _PROTOCOLS:
                raise DockerfileError(f"invalid proto: {proto}", self.line)
            low, sep, high = spec.partition("-")
            try:
                start = int(low)
                end = int(high) if sep else start
            except ValueError:
                raise DockerfileError(f"invalid containerPort: {spec}", self.line) from None
            if not (0 < start <= 65535 and 0 < end <= 65535) or end < start:
                raise DockerfileError(f"invalid range specified for container port: {spec}",
                                      self.line)
            result.update((p, proto) for p in range(start, end + 1))
        return [f"{p}/{proto}" for p, proto in sorted(result)]


@dataclass(frozen=True)
class Label(Instruction):
    """``LABEL k=v ...``: pairs in order; keys and values are expanded."""

    keyword: ClassVar[str] = "LABEL"

    pairs: list[tuple[str, str]] = field(default_factory=list)

    def expand(self, expand_word: ExpandWord) -> Self:
        return dataclasses.replace(
            self, pairs=[(expand_word(k), expand_word(v)) for k, v in self.pairs])


@dataclass(frozen=True)
class User(Instruction):
    """``USER user[:group]`` (names or numbers, resolved in the image by the executor)."""

    keyword: ClassVar[str] = "USER"

    user: str = ""

    def expand(self, expand_word: ExpandWord) -> Self:
        return dataclasses.replace(self, user=expand_word(self.user))


@dataclass(frozen=True)
class Workdir(Instruction):
    """``WORKDIR path``: relative paths are relative to the previous WORKDIR."""

    keyword: ClassVar[str] = "WORKDIR"

    path: str = ""

    def expand(self, expand_word: ExpandWord) -> Self:
        return dataclasses.replace(self, path=expand_word(self.path))


@dataclass(frozen=True)
class Volume(Instruction):
    """``VOLUME ["/a", "/b"]`` or ``VOLUME /a /b``."""

    keyword: ClassVar[str] = "VOLUME"

    paths: list[str] = field(default_factory=list)

    def expand(self, expand_word: ExpandWord) -> Self:
        paths = [expand_word(p) for p in self.paths]
        if any(not p.strip() for p in paths):
            raise DockerfileError("VOLUME specified can not be an empty string", self.line)
        return dataclasses.replace(self, paths=paths)


@dataclass(frozen=True)
class StopSignal(Instruction):
    """``STOPSIGNAL SIGTERM`` or a number."""

    keyword: ClassVar[str] = "STOPSIGNAL"

    signal: str = ""

    def expand(self, expand_word: ExpandWord) -> Self:
        return dataclasses.replace(self, signal=expand_word(self.signal))


@dataclass(frozen=True)
class Healthcheck(Instruction):
    """``HEALTHCHECK NONE`` or ``HEALTHCHECK [opts] CMD ...`` as Docker's config stores it.

    ``test`` is ``["NONE"]``, ``["CMD", arg...]`` (exec form) or ``["CMD-SHELL", "text"]``;
    the durations are nanoseconds, 0 meaning "inherit / Docker's default".
    """

    keyword: ClassVar[str] = "HEALTHCHECK"

    test: list[str] = field(default_factory=list)
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True)
class Shell(Instruction):
    """``SHELL ["executable", "param"...]`` (JSON form only)."""

    keyword: ClassVar[str] = "SHELL"

    shell: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Onbuild(Instruction):
    """``ONBUILD INSTRUCTION``: ``expression`` is stored in the image; ``inner`` is it parsed."""

    keyword: ClassVar[str] = "ONBUILD"

    expression: str = ""
    inner: Instruction | None = None


@dataclass(frozen=True)
class Maintainer(Instruction):
    """``MAINTAINER name`` (deprecated; sets the config's author)."""

    keyword: ClassVar[str] = "MAINTAINER"

    name: str = ""


#: keyword -> class, for every instruction the parser knows
INSTRUCTION_TYPES: dict[str, type[Instruction]] = {
    cls.keyword: cls for cls in (From, Run, Copy, Add, Cmd, Entrypoint, Env, Arg, Expose, Label,
                                 User, Workdir, Volume, StopSignal, Healthcheck, Shell, Onbuild,
                                 Maintainer)
}
