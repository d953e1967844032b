"""The build context: a directory (or a tar extracted safely into a temp one), the
``.dockerignore`` rules, and COPY/ADD source resolution that never leaves the context.

Sources resolve inside the context root only: ``..`` cannot climb out, a symlink in the middle
of a source path resolves as if the context were ``/``, and a symlink that is itself a source
or inside a copied directory is kept as a symlink, never followed. ``checksum`` hashes what a
COPY would copy (paths, contents, modes, owners, link targets; not mtimes) for the build cache.
Knows nothing of storage, images or containers.

The tar extractor is our own rather than tarsafe's: a build context may hold absolute symlinks
(``link -> /etc/passwd``), which tarsafe refuses, and they must arrive as symlinks. Nothing is
ever written through a symlink: each member's parents must be real directories it made.
"""

from __future__ import annotations

import errno
import hashlib
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pyengine.build import dockerignore
from pyengine.build.dockerignore import IgnoreMatcher, has_glob
from pyengine.errors import DockerfileError, InvalidArchive, NotFound

_MAX_SYMLINKS = 40


@dataclass(frozen=True)
class ContextEntry:
    """One path in the context: ``relpath`` (slash-separated, ``""`` for the root), ``path``
    on disk, ``kind`` ``file`` | ``dir`` | ``symlink`` | ``other``."""

    relpath: str
    path: str
    kind: str

    def lstat(self) -> os.stat_result:
        return os.lstat(self.path)


@dataclass(frozen=True)
class ResolvedSource:
    """One COPY/ADD source word and the top-level entries it matched (a wildcard: several).

    A ``dir`` entry stands for its contents (``BuildContext.walk(entry.relpath)``).
    """

    source: str
    entries: list[ContextEntry]


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def _member_name(name: str) -> str | None:
    """A member's path relative to the root, or None if it would land outside it."""
    if name.startswith("/"):
        return None
    normal = posixpath.normpath(name)
    if normal == ".":
        return ""
    if normal == ".." or normal.startswith("../"):
        return None
    return normal


def _safe_parent(root: str, relpath: str) -> str:
    """Make (or check) the parents of ``relpath`` as real directories; the parent's path."""
    current = root
    for part in relpath.split("/")[:-1]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidArchive(f"build context: {relpath} would be written through "
                                 f"{'a symlink' if stat.S_ISLNK(st.st_mode) else 'a file'}")
    return current


def _is_regular_inside(root: str, relpath: str) -> bool:
    """Whether ``relpath`` is a regular file reached through real directories only."""
    current = root
    parts = relpath.split("/")
    for i, part in enumerate(parts):
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return False
        want = stat.S_ISREG if i == len(parts) - 1 else stat.S_ISDIR
        if not want(st.st_mode):
            return False
    return True


def _clear(path: str, keep_dir: bool) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if not keep_dir:
            shutil.rmtree(path)
    else:
        os.unlink(path)


def extract_context_tar(fileobj: IO[bytes], dest: str | Path) -> None:
    """Extract a build-context tar stream (plain, gzip, bzip2 or xz) into directory ``dest``.

    Raises InvalidArchive for a member outside ``dest`` (absolute, ``..``), a member under a
    symlink, a hard link to anything but an earlier regular file, a device node, or a tar that
    is not one. Symlinks are created as they are, whatever they point to.
    """
    root = os.fspath(dest)
    as_root = os.geteuid() == 0
    dir_modes: list[tuple[str, int, float]] = []
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in tar:
                relpath = _member_name(member.name)
                if relpath is None:
                    raise InvalidArchive(f"build context: {member.name} would land outside "
                                         "the context")
                if relpath == "":
                    if member.isdir():
                        dir_modes.append((root, member.mode & 0o7777, member.mtime))
                    continue
                parent = _safe_parent(root, relpath)
                path = os.path.join(parent, relpath.rsplit("/", 1)[-1])
                if member.isdir():
                    _clear(path, keep_dir=True)
                    if not os.path.isdir(path):
                        os.mkdir(path, 0o755)
                    dir_modes.append((path, member.mode & 0o7777, member.mtime))
                elif member.isreg():
                    _clear(path, keep_dir=False)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        source = tar.extractfile(member)
                        if source is not None:
                            shutil.copyfileobj(source, out, 1 << 20)
                    os.chmod(path, member.mode & 0o7777)
                elif member.issym():
                    _clear(path, keep_dir=False)
                    os.symlink(member.linkname, path)
                elif member.islnk():
                    target = _member_name(member.linkname)
                    if not target or not _is_regular_inside(root, target):
                        raise InvalidArchive(f"build context: hard link {member.name} -> "
                                             f"{member.linkname} does not name an earlier file")
                    _clear(path, keep_dir=False)
                    os.link(os.path.join(root, target), path)
                    continue
                elif member.isfifo():
                    _clear(path, keep_dir=False)
                    os.mkfifo(path, member.mode & 0o7777)
                else:
                    raise InvalidArchive(f"build context: {member.name} is a device node")
                if as_root:
                    os.chown(path, member.uid, member.gid, follow_symlinks=False)
                    if member.isreg():  # chown clears set-id bits; put them back
                        os.chmod(path, member.mode & 0o7777)
                os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise InvalidArchive(f"build context: not a valid tar archive ({exc})") from None
    for path, mode, mtime in reversed(dir_modes):
        os.chmod(path, mode)
        os.utime(path, (mtime, mtime))


class BuildContext:
    """A build context rooted at ``root``, with the ignore rules in force."""

    def __init__(self, root: str | Path, ignore: IgnoreMatcher | None = None,
                 temporary: bool = False) -> None:
        self.root = os.path.realpath(root)
        self.ignore = ignore or IgnoreMatcher([])
        self.temporary = temporary
        self._digests: dict[tuple[int, int, int, int, int], str] = {}

    @classmethod
    def from_directory(cls, path: str | Path, dockerfile: str | Path | None = None) -> BuildContext:
        """The context of directory ``path``; ``dockerfile`` its Dockerfile's path (absolute or
        relative to it) selects ``<Dockerfile>.dockerignore``."""
        if not os.path.isdir(path):
            raise NotFound(f'unable to prepare context: path "{path}" not found')
        return cls(path, dockerignore.load(path, dockerfile))

    @classmethod
    def from_tar(cls, fileobj: IO[bytes], dockerfile: str | None = "Dockerfile",
                 tmpdir: str | Path | None = None) -> BuildContext:
        """Extract a tar stream (plain, gzip, bzip2, xz) safely into a temp dir and use it;
        ``close()`` removes the dir. Raises InvalidArchive for any member that would land
        outside, a hard link out, or a device node."""
        root = tempfile.mkdtemp(prefix="pyengine-build-context-", dir=tmpdir)
        try:
            extract_context_tar(fileobj, root)
            os.chmod(root, 0o700)
            return cls(root, dockerignore.load(root, dockerfile), temporary=True)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    def close(self) -> None:
        """Remove the temp dir of a tar context (nothing for a directory context)."""
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)
            self.temporary = False

    def __enter__(self) -> BuildContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths inside the root --------------------------------------------------------------

    def _scoped(self, relpath: str, follow_last: bool) -> str | None:
        """``relpath`` with symlinks resolved as if the root were ``/`` (the last component
        only if ``follow_last``); the resolved relpath, or None if something is missing."""
        todo = [p for p in relpath.split("/") if p and p != "."]
        done: list[str] = []
        links = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = os.path.join(self.root, *done, part)
            try:
                st = os.lstat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if stat.S_ISLNK(st.st_mode) and (todo or follow_last):
                links += 1
                if links > _MAX_SYMLINKS:
                    raise DockerfileError(f"too many levels of symbolic links: {relpath}")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    done = []
                todo = [p for p in target.split("/") if p and p != "."] + todo
                continue
            if todo and not stat.S_ISDIR(st.st_mode):
                return None
            done.append(part)
        return "/".join(done)

    def _entry(self, relpath: str) -> ContextEntry:
        path = os.path.join(self.root, relpath) if relpath else self.root
        return ContextEntry(relpath, path, _kind(os.lstat(path).st_mode))

    def read_dockerfile(self, name: str = "Dockerfile") -> str:
        """The Dockerfile's text from inside the context (a symlink resolved inside it)."""
        relpath = self._inside(name)
        resolved = self._scoped(relpath, follow_last=True) if relpath is not None else None
        if resolved is None or not os.path.isfile(os.path.join(self.root, resolved)):
            raise NotFound(f"Cannot locate specified Dockerfile: {name}")
        with open(os.path.join(self.root, resolved), encoding="utf-8", errors="replace") as f:
            return f.read()

    @staticmethod
    def _inside(word: str) -> str | None:
        """A source word as a relpath of the root (``/x`` is ``x``); None if it climbs out."""
        normal = posixpath.normpath(word) if word else "."
        if normal == ".." or normal.startswith("../"):
            return None
        normal = normal.lstrip("/")
        return "" if normal in (".", "") else normal

    # -- walking and resolving ---------------------------------------------------------------

    def walk(self, relpath: str = "", exclude: Iterable[str] = ()) -> Iterator[ContextEntry]:
        """Every non-excluded entry under directory ``relpath`` (not itself), sorted, no symlink
        followed. An excluded directory is walked only when a ``!`` pattern may re-include
        something in it; its re-included entries come without it (create their parents).
        ``exclude`` are COPY ``--exclude`` patterns, relative to ``relpath``."""
        extra = IgnoreMatcher(exclude)
        base = os.path.join(self.root, relpath) if relpath else self.root
        yield from self._walk(base, relpath, "", extra)

    def _walk(self, path: str, relpath: str, inner: str,
              extra: IgnoreMatcher) -> Iterator[ContextEntry]:
        try:
            names = sorted(os.listdir(path))
        except NotADirectoryError:
            return
        for name in names:
            child_rel = f"{relpath}/{name}" if relpath else name
            child_inner = f"{inner}/{name}" if inner else name
            child = os.path.join(path, name)
            kind = _kind(os.lstat(child).st_mode)
            skipped = self.ignore.excluded(child_rel) or extra.excluded(child_inner)
            if not skipped:
                yield ContextEntry(child_rel, child, kind)
            if kind == "dir" and (not skipped or self.ignore.may_include_under(child_rel)
                                  or extra.may_include_under(child_inner)):
                yield from self._walk(child, child_rel, child_inner, extra)

    def resolve(self, sources: Iterable[str]) -> list[ResolvedSource]:
        """Each source word's entries (Go filepath.Match wildcards per path component); raises
        DockerfileError (no line: the caller places it) for a source outside the context, or
        one that matches nothing (an excluded path counts as missing)."""
        resolved: list[ResolvedSource] = []
        for source in sources:
            relpath = self._inside(source)
            if relpath is None:
                raise DockerfileError(f"forbidden path outside the build context: {source}")
            if has_glob(relpath):
                matches = sorted(set(self._glob(relpath)))
                if not matches:
                    raise DockerfileError(f"no source files were specified: {source} matches "
                                          "nothing in the build context")
            else:
                found = self._scoped(relpath, follow_last=False)
                if found is None or (found and self._excluded(found)):
                    raise DockerfileError("file not found in build context or excluded by "
                                          f".dockerignore: {source}")
                matches = [found]
            resolved.append(ResolvedSource(source, [self._entry(m) for m in matches]))
        return resolved

    def _excluded(self, relpath: str) -> bool:
        """Excluded, and not a directory that may hold re-included entries."""
        if not self.ignore.excluded(relpath):
            return False
        is_dir = os.path.isdir(os.path.join(self.root, relpath)) and not os.path.islink(
            os.path.join(self.root, relpath))
        return not (is_dir and self.ignore.may_include_under(relpath))

    def _glob(self, pattern: str) -> Iterator[str]:
        parts = [p for p in pattern.split("/") if p and p != "."]

        def descend(done: str, rest: list[str]) -> Iterator[str]:
            part, rest = rest[0], rest[1:]
            base = os.path.join(self.root, done) if done else self.root
            if part == "..":
                candidates = [posixpath.dirname(done)] if done else [""]
            elif has_glob(part):
                try:
                    names = sorted(os.listdir(base))
                except (FileNotFoundError, NotADirectoryError):
                    return
                candidates = [f"{done}/{n}" if done else n for n in names
                              if dockerignore.match(part, n)]
            else:
                candidates = [f"{done}/{part}" if done else part]
            for candidate in candidates:
                if rest:
                    inner = self._scoped(candidate, follow_last=True)
                    if inner is not None and os.path.isdir(os.path.join(self.root, inner)):
                        yield from descend(inner, rest)
                elif (os.path.lexists(os.path.join(self.root, candidate))
                      and not self._excluded(candidate)):
                    yield candidate

        if parts:
            yield from descend("", parts)

    # -- the cache's view ---------------------------------------------------------------------

    def _file_digest(self, path: str, st: os.stat_result) -> str:
        # mtime is part of this in-process memo key only, never of the checksum itself
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        digest = self._digests.get(key)
        if digest is None:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            self._digests[key] = digest
        return digest

    def _record(self, entry: ContextEntry) -> bytes:
        try:
            st = entry.lstat()
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return f"{entry.relpath}\0missing\n".encode()
            raise
        kind = _kind(st.st_mode)
        if kind == "file":
            extra = self._file_digest(entry.path, st)
        elif kind == "symlink":
            extra = os.readlink(entry.path)
        elif kind == "other":
            extra = f"{stat.S_IFMT(st.st_mode):o}:{st.st_rdev}"
        else:
            extra = ""
        return (f"{entry.relpath}\0{kind}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_uid}\0"
                f"{st.st_gid}\0{extra}\n").encode()

    def entries(self, resolved: ResolvedSource,
                exclude: Iterable[str] = ()) -> Iterator[ContextEntry]:
        """Everything one resolved source copies: each entry, and a directory's contents."""
        exclude = list(exclude)
        for entry in resolved.entries:
            yield entry
            if entry.kind == "dir":
                yield from self.walk(entry.relpath, exclude)

    def checksum(self, sources: Iterable[str | ResolvedSource],
                 exclude: Iterable[str] = ()) -> str:
        """``sha256:<hex>`` over what the sources select: relative paths, kinds, contents,
        modes, uid/gid and symlink targets (not mtimes). Raises like ``resolve``."""
        words = list(sources)
        unresolved = [s for s in words if isinstance(s, str)]
        looked_up = iter(self.resolve(unresolved))
        hasher = hashlib.sha256()
        for item in words:
            resolved = next(looked_up) if isinstance(item, str) else item
            hasher.update(f"source\0{resolved.source}\n".encode())
            for entry in self.entries(resolved, exclude):
                hasher.update(self._record(entry))
        return "sha256:" + hasher.hexdigest()
