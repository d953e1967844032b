"""``.dockerignore``: patterns with Go's filepath.Match rules, ``**``, and ``!`` exceptions.

The last pattern that matches a path decides; a pattern that matches a directory excludes
everything under it unless a later ``!`` pattern re-includes it (moby's patternmatcher rules).
Pure string matching on slash-separated paths relative to the context root; the only file it
reads is the ignore file ``find_dockerignore`` picks.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from pyengine.errors import DockerfileError

_GLOB_CHARS = re.compile(r"[*?\[\\]")


def clean(path: str) -> str:
    """Go's filepath.Clean for slash paths: ``./a//b/../c/`` -> ``a/c``; ``""`` -> ``.``."""
    return posixpath.normpath(path) if path else "."


def read_patterns(text: str) -> list[str]:
    """The patterns of a ``.dockerignore`` file: comments and blank lines dropped, each cleaned
    (``./`` and a leading ``/`` removed), ``!`` kept as the first character."""
    patterns: list[str] = []
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines()):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
            if not line:
                raise DockerfileError(f'line {number + 1}: illegal exclusion pattern: "!"', None,
                                      ".dockerignore")
        line = clean(line)
        if len(line) > 1 and line.startswith("/"):
            line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


def _component_regex(pattern: str, whole: bool) -> str:
    """Go filepath.Match syntax to a regex; with ``whole``, ``**`` spans directories."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if whole and pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(?:.*/)?")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            i += 1
            out.append(re.escape(pattern[i]) if i < n else "\\\\")
        elif ch == "[":
            end = i + 1
            if end < n and pattern[end] == "^":
                end += 1
            if end < n and pattern[end] == "]":
                end += 1
            while end < n and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            if end >= n:
                raise DockerfileError(f"syntax error in pattern: {pattern}", None, ".dockerignore")
            body = pattern[i + 1:end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            chars = re.sub(r"\\(.)", lambda m: "\\" + m.group(1), body.replace("[", "\\["))
            out.append(("[^/" if negate else "[") + chars + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


@lru_cache(maxsize=512)
def _compiled(pattern: str, whole: bool) -> re.Pattern[str]:
    return re.compile(_component_regex(pattern, whole) + r"\Z", re.DOTALL)


def match(pattern: str, name: str) -> bool:
    """Go's filepath.Match on slash paths: ``*`` and ``?`` never cross a ``/``."""
    return _compiled(pattern, False).match(name) is not None


def has_glob(pattern: str) -> bool:
    """Whether ``pattern`` has any of Go's pattern characters (``* ? [`` or an escape)."""
    return _GLOB_CHARS.search(pattern) is not None


class IgnoreMatcher:
    """Answers "is this context path excluded?" for a list of patterns (``!`` for exceptions)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: list[tuple[bool, str]] = []
        for raw in patterns:
            pattern = raw.strip()
            if not pattern:
                continue
            exception = pattern.startswith("!")
            if exception:
                pattern = pattern[1:]
            self.patterns.append((exception, clean(pattern)))
            _compiled(clean(pattern), True)  # refuse a malformed pattern now, not mid-walk

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def _matches(self, pattern: str, relpath: str) -> bool:
        regex = _compiled(pattern, True)
        if regex.match(relpath):
            return True
        parts = relpath.split("/")
        return any(regex.match("/".join(parts[:i])) for i in range(1, len(parts)))

    def excluded(self, relpath: str) -> bool:
        """Whether ``relpath`` (slash-separated, relative to the context) is left out."""
        relpath = clean(relpath)
        if relpath == ".":
            return False
        excluded = False
        for exception, pattern in self.patterns:
            if exception != excluded:
                continue  # an exception only matters once excluded, and the other way round
            if self._matches(pattern, relpath):
                excluded = not exception
        return excluded

    def may_include_under(self, dirpath: str) -> bool:
        """Whether an excluded directory might hold re-included paths (walk into it)."""
        dirs = clean(dirpath).split("/")
        for exception, pattern in self.patterns:
            if exception and _prefix_may_match(pattern.split("/"), dirs):
                return True
        return False


def _prefix_may_match(pattern: list[str], dirs: list[str]) -> bool:
    for i, part in enumerate(pattern):
        if "**" in part:
            return True
        if i >= len(dirs):
            return True
        if not match(part, dirs[i]):
            return False
    return True


def find_dockerignore(context_root: str | Path, dockerfile: str | Path | None) -> Path | None:
    """The ignore file to use: ``<Dockerfile>.dockerignore`` beside the Dockerfile first,
    then ``<context>/.dockerignore``; None when neither exists.

    ``dockerfile`` is the Dockerfile's path, absolute or relative to the context root.
    """
    root = Path(context_root)
    if dockerfile is not None and str(dockerfile) != "-":
        path = Path(dockerfile)
        if not path.is_absolute():
            path = root / path
        beside = path.with_name(path.name + ".dockerignore")
        if beside.is_file():
            return beside
    default = root / ".dockerignore"
    return default if default.is_file() else None


def load(context_root: str | Path, dockerfile: str | Path | None = None) -> IgnoreMatcher:
    """The IgnoreMatcher of the ignore file ``find_dockerignore`` picks (empty if none)."""
    path = find_dockerignore(context_root, dockerfile)
    if path is None:
        return IgnoreMatcher([])
    return IgnoreMatcher(read_patterns(path.read_text(errors="replace")))
