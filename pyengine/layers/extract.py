"""Applying a layer tar to a root filesystem directory, safely.

Owns decompression (gzip, zstd, plain, detected by magic bytes), with an optional limit on the
uncompressed size (a decompression bomb stops there), and extraction: whiteouts, hard and
symbolic links, ownership, modes (setuid included), mtimes, xattrs, device nodes and fifos.
Every path the extractor writes through is resolved *inside* the root, the way a process
chrooted there would see it: an absolute symlink in the image (``/lib -> usr/lib``)
is followed within the root, and nothing outside the root is ever created, changed or read.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import IO, BinaryIO

from pyengine.errors import InvalidArchive


class LayerTooLarge(InvalidArchive):
    """A layer decompresses to more than the configured limit (``[images] max-layer-size``)."""

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
_MAX_SYMLINKS = 40
_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


# -- decompression ---------------------------------------------------------------------------
class _ProcessStream:
    """The stdout of a decompressor process fed from a Python stream by a thread."""

    def __init__(self, argv: list[str], source: BinaryIO, head: bytes) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._feed, args=(source, head), daemon=True)
        self.thread.start()

    def _feed(self, source: BinaryIO, head: bytes) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(head)
            while True:
                chunk = source.read(1 << 20)
                if not chunk:
                    break
                self.proc.stdin.write(chunk)
        except BrokenPipeError:
            pass
        except BaseException as exc:  # reported by read()
            self.error = exc
        finally:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass

    def read(self, n: int = -1) -> bytes:
        assert self.proc.stdout is not None
        data = self.proc.stdout.read(n) if n >= 0 else self.proc.stdout.read()
        if not data:
            self.close()
        return data

    def readable(self) -> bool:
        return True

    def abort(self) -> None:
        """Stop decompressing now: the rest is not wanted (a size limit was passed)."""
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        self.thread.join()

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdout is not None:
            self.proc.stdout.read()
        self.thread.join()
        code = self.proc.wait()
        if self.error is not None:
            raise self.error
        if code != 0:
            err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace").strip()
            raise InvalidArchive(f"the layer does not decompress: {err.splitlines()[-1] if err else code}")


class _Prefixed:
    """A stream with a few bytes put back in front of it."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head = head
        self.rest = rest

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0:
                data, self.head = self.head + self.rest.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            if len(data) < n:
                data += self.rest.read(n - len(data))
            return data
        return self.rest.read(n)

    def readable(self) -> bool:
        return True


class _SizeLimit:
    """The uncompressed stream of a layer, refused as soon as it passes ``limit`` bytes."""

    def __init__(self, stream: BinaryIO, limit: int, name: str) -> None:
        self.stream = stream
        self.limit = limit
        self.name = name
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        # Never more than one byte past the limit is asked for: a bomb is not inflated further.
        wanted = self.limit + 1 - self.count if n < 0 else min(n, self.limit + 1 - self.count)
        data = self.stream.read(max(wanted, 0))
        self.count += len(data)
        if self.count > self.limit:
            abort = getattr(self.stream, "abort", None)
            if abort is not None:
                abort()
            raise LayerTooLarge(f"layer {self.name} is larger than {format_size(self.limit)} uncompressed, "
                                f"the limit of [images] max-layer-size")
        return data

    def readable(self) -> bool:
        return True


def format_size(size: int) -> str:
    """Bytes for a person: 67108864 -> "64 MiB" (binary units, as the limit's)."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def open_layer(fileobj: BinaryIO, *, max_size: int | None = None, name: str = "") -> BinaryIO:
    """The uncompressed tar stream of a layer that is gzip, zstd or plain tar.

    Decompression runs in a separate process (``gzip -dc``/``zstd -dc``) so that it uses the
    second core while this process parses the tar.

    :param max_size: refuse the layer (LayerTooLarge, naming ``name`` and the limit) once more
        than this many uncompressed bytes came out; None: no limit
    """
    stream = _open_layer(fileobj)
    return stream if max_size is None else _SizeLimit(stream, max_size, name or "of the image")  # type: ignore[return-value]


def _open_layer(fileobj: BinaryIO) -> BinaryIO:
    head = b""
    while len(head) < 4:
        chunk = fileobj.read(4 - len(head))
        if not chunk:
            break
        head += chunk
    if head.startswith(_GZIP):
        return _ProcessStream(["gzip", "-dc"], fileobj, head)  # type: ignore[return-value]
    if head.startswith(_ZSTD):
        if shutil.which("zstd") is None:
            raise InvalidArchive("the layer is zstd-compressed and the zstd program is not installed")
        return _ProcessStream(["zstd", "-dcq"], fileobj, head)  # type: ignore[return-value]
    return _Prefixed(head, fileobj)  # type: ignore[return-value]


class _Counter:
    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.count += len(data)
        return data


# -- path resolution -------------------------------------------------------------------------
def clean_name(name: str) -> str:
    """A member name as a relative path without ``.`` parts; ``..`` is refused."""
    parts = []
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise InvalidArchive(f"layer entry {name!r} climbs out of the root with '..'")
        parts.append(part)
    return "/".join(parts)


def resolve_in_root(root: str, relpath: str, follow_last: bool = True) -> str:
    """The host path of ``relpath`` as seen from inside ``root``: symlinks are followed with
    ``root`` as ``/`` and ``..`` stops at it, so the result is always inside ``root``."""
    todo = [p for p in relpath.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        if (todo or follow_last) and os.path.islink(candidate):
            links += 1
            if links > _MAX_SYMLINKS:
                raise InvalidArchive(f"too many levels of symbolic links resolving {relpath!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        done.append(part)
    return os.path.join(root, *done)


# -- extraction ------------------------------------------------------------------------------
def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


class _Applier:
    def __init__(self, root: Path, whiteouts: str) -> None:
        if whiteouts not in ("delete", "overlay"):
            raise ValueError(f"whiteouts must be 'delete' or 'overlay', not {whiteouts!r}")
        self.root = os.path.realpath(root)
        self.overlay = whiteouts == "overlay"
        self.dir_times: list[tuple[str, int]] = []
        self.written: set[str] = set()
        self.opaque: list[str] = []
        self.parents: dict[str, str] = {}

    def parent_of(self, rel: str) -> str:
        parent = posixpath.dirname(rel)
        if parent in self.parents:
            return self.parents[parent]
        host = resolve_in_root(self.root, parent) if parent else self.root
        if not os.path.isdir(host):
            if os.path.lexists(host):
                raise InvalidArchive(f"layer entry {rel!r}: its parent is not a directory")
            os.makedirs(host, mode=0o755, exist_ok=True)
        self.parents[parent] = host
        return host

    def apply(self, tar: tarfile.TarFile) -> None:
        for member in tar:
            try:
                self.member(tar, member)
            except InvalidArchive:
                raise
            except OSError as exc:
                if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
                                 errno.EINVAL):
                    raise InvalidArchive(f"layer entry {member.name[:200]!r}: {exc.strerror}") from None
                raise
        self.finish()

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = clean_name(member.name)
        if not rel:
            if member.isdir():
                self.attributes(self.root, member)
            return
        base = posixpath.basename(rel)
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(rel, base)
            return
        parent = self.parent_of(rel)
        path = os.path.join(parent, base)
        self.written.add(path)
        if member.isdir():
            if not os.path.isdir(path) or os.path.islink(path):
                _remove(path)
                os.mkdir(path, 0o700)
            self.attributes(path, member)
            self.dir_times.append((path, int(member.mtime * 1e9)))
            return
        _remove(path)
        if member.islnk():
            target_rel = clean_name(member.linkname)
            if not target_rel:
                raise InvalidArchive(f"layer entry {member.name!r}: hard link to the root")
            target = resolve_in_root(self.root, target_rel, follow_last=False)
            if not os.path.lexists(target):
                raise InvalidArchive(f"layer entry {member.name!r}: hard link target {member.linkname!r} "
                                     "does not exist")
            if os.path.isdir(target) and not os.path.islink(target):
                raise InvalidArchive(f"layer entry {member.name!r}: hard link to a directory")
            os.link(target, path, follow_symlinks=False)
            return
        if member.issym():
            os.symlink(member.linkname, path)
            self.parents.clear()
        elif member.isreg():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                source = tar.extractfile(member)
                if source is not None:
                    remaining = member.size
                    while remaining:
                        chunk = source.read(min(remaining, 1 << 20))
                        if not chunk:
                            raise InvalidArchive(f"layer entry {member.name!r} is truncated")
                        os.write(fd, chunk)
                        remaining -= len(chunk)
            finally:
                os.close(fd)
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        else:
            raise InvalidArchive(f"layer entry {member.name!r} has an unsupported type {member.type!r}")
        self.attributes(path, member)

    def attributes(self, path: str, member: tarfile.TarInfo) -> None:
        is_link = member.issym()
        try:
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
        except PermissionError:
            pass  # an unprivileged run keeps the caller's ownership
        for key, value in (member.pax_headers or {}).items():
            if key.startswith("SCHILY.xattr."):
                name = key[len("SCHILY.xattr."):]
                raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
                try:
                    os.setxattr(path, name, raw, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                        raise
        if not is_link:
            os.chmod(path, stat.S_IMODE(member.mode))  # after chown, which clears setuid
        if not member.isdir():
            ns = int(member.mtime * 1e9)
            os.utime(path, ns=(ns, ns), follow_symlinks=False)

    def whiteout(self, rel: str, base: str) -> None:
        parent = self.parent_of(rel)
        if base == OPAQUE:
            if self.overlay:
                os.setxattr(parent, "trusted.overlay.opaque", b"y")
            else:
                self.opaque.append(parent)
            return
        name = base[len(WHITEOUT_PREFIX):]
        if name in ("", ".", "..") or "/" in name:
            raise InvalidArchive(f"layer entry {rel!r} is a whiteout of an invalid name")
        target = os.path.join(parent, name)
        if self.overlay:
            _remove(target)
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        else:
            _remove(target)
        self.parents.clear()

    def finish(self) -> None:
        for directory in self.opaque:
            # An opaque directory hides what lower layers put there, not this layer's own
            # entries, whatever their order in the tar.
            for entry in os.listdir(directory):
                path = os.path.join(directory, entry)
                if path not in self.written and not any(w.startswith(path + "/") for w in self.written):
                    _remove(path)
        for path, ns in reversed(self.dir_times):
            if os.path.isdir(path) and not os.path.islink(path):
                os.utime(path, ns=(ns, ns), follow_symlinks=False)


def apply_layer(root: Path, tar_stream: IO[bytes], *, whiteouts: str = "delete") -> int:
    """Apply an uncompressed layer tar to ``root``; return the bytes of tar read.

    :param whiteouts: ``delete`` removes what ``.wh.`` entries name (full-copy drivers);
        ``overlay`` writes overlayfs whiteouts and opaque xattrs (overlay's upper dirs)
    :raises InvalidArchive: a malformed or malicious entry, named in the message
    """
    counter = _Counter(tar_stream)
    try:
        with tarfile.open(fileobj=counter, mode="r|", errorlevel=2) as tar:  # type: ignore[call-overload]
            _Applier(Path(root), whiteouts).apply(tar)
        # Read to the end: the caller's digest covers the whole stream, padding included.
        while counter.read(1 << 20):
            pass
    except tarfile.TarError as exc:
        raise InvalidArchive(f"the layer is not a valid tar archive: {exc}") from None
    return counter.count
