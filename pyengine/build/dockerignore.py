"""``.dockerignore``: patterns with Go's filepath.Match rules, ``**``, and ``!`` exceptions.

The last pattern that matches a path decides; a pattern that matches a directory excludes
everything under it unless a later ``!`` pattern re-includes it. Pure string matching on
slash-separated paths relative to the context root.
"""

from __future__ import annotations


def read_patterns(text: str) -> list[str]:
    """The patterns of a ``.dockerignore`` file: comments and blank lines dropped, each cleaned
    (``./`` and a leading ``/`` removed), ``!`` kept as the first character."""
    raise NotImplementedError


class IgnoreMatcher:
    """Answers "is this context path excluded?" for a list of patterns."""

    def __init__(self, patterns) -> None:
        raise NotImplementedError

    def excluded(self, relpath: str) -> bool:
        """Whether ``relpath`` (slash-separated, relative to the context) is left out."""
        raise NotImplementedError

    def may_include_under(self, dirpath: str) -> bool:
        """Whether an excluded directory might hold re-included paths (walk into it)."""
        raise NotImplementedError


def find_dockerignore(context_root, dockerfile_relpath: str | None):
    """The ignore file to use: ``<Dockerfile>.dockerignore`` beside the Dockerfile first,
    then ``<context>/.dockerignore``; None when neither exists."""
    raise NotImplementedError
