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

from dataclasses import dataclass, field

from pyengine.build.instructions import Arg, From, Instruction


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


def heredoc_markers(word: str) -> tuple[int | None, bool, str, bool] | None:
    """If ``word`` opens a heredoc (``<<EOF``, ``<<-EOF``, ``<<"EOF"``, ``3<<EOF``):
    (fd, strip_tabs, name, expand_content); else None."""
    raise NotImplementedError


def parse(text: str, filename: str = "Dockerfile") -> Dockerfile:
    """Parse a whole Dockerfile.

    Raises DockerfileError ``FILENAME:LINE: WHAT`` for an unknown instruction, a missing
    FROM, an instruction before the first FROM other than ARG, a bad flag or argument, an
    unterminated heredoc, and the like.
    """
    raise NotImplementedError


def parse_instruction(text: str, line: int = 1, escape: str = "\\",
                      filename: str = "Dockerfile") -> Instruction:
    """Parse one instruction written on one logical line (an ONBUILD trigger in a base image)."""
    raise NotImplementedError
