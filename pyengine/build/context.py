"""The build context: a directory (or a tar extracted safely into a temp one), the
``.dockerignore`` rules, and COPY/ADD source resolution that never leaves the context.

Sources resolve inside the context root only: ``..`` cannot climb out, a symlink in the middle
of a source path resolves as if the context were ``/``, and a symlink that is itself a source
or inside a copied directory is kept as a symlink, never followed. ``checksum`` hashes what a
COPY would copy (paths, contents, modes, owners, link targets; not mtimes) for the build cache.
Knows nothing of storage, images or containers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContextEntry:
    """One path in the context: ``relpath`` (slash-separated), ``path`` on disk, ``kind``
    ``file`` | ``dir`` | ``symlink`` | ``other``."""

    relpath: str
    path: str
    kind: str


@dataclass(frozen=True)
class ResolvedSource:
    """One COPY/ADD source word and the top-level entries it matched (a wildcard: several)."""

    source: str
    entries: list[ContextEntry]


class BuildContext:
    """A build context rooted at ``root``, with the ignore rules in force."""

    @classmethod
    def from_directory(cls, path, dockerfile: str | None = None) -> BuildContext:
        """The context of directory ``path``; ``dockerfile`` its Dockerfile's path relative to
        it (selects ``<Dockerfile>.dockerignore``)."""
        raise NotImplementedError

    @classmethod
    def from_tar(cls, fileobj, dockerfile: str | None = None, tmpdir=None) -> BuildContext:
        """Extract a tar stream (plain, gzip, bzip2, xz) safely into a temp dir and use it;
        ``close()`` removes the dir. Raises InvalidArchive for any member that would land
        outside, a hard link out, or a device node."""
        raise NotImplementedError

    def close(self) -> None:
        """Remove the temp dir of a tar context (nothing for a directory context)."""
        raise NotImplementedError

    def read_dockerfile(self, name: str = "Dockerfile") -> str:
        """The Dockerfile's text from inside the context."""
        raise NotImplementedError

    def walk(self, relpath: str = ""):
        """Every non-excluded entry under ``relpath`` (itself not included), sorted, no symlink
        followed."""
        raise NotImplementedError

    def resolve(self, sources) -> list[ResolvedSource]:
        """Each source word's entries (Go filepath.Match wildcards); raises DockerfileError (no
        line) for a source outside the context, or one that matches nothing."""
        raise NotImplementedError

    def checksum(self, sources) -> str:
        """``sha256:<hex>`` over the sources' paths, contents, modes, uid/gid, link targets."""
        raise NotImplementedError
