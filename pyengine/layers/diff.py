"""The naive diff: a layer's changes computed by comparing its tree with its parent's.

For storage drivers without a native diff (vfs, devicemapper). Changes are Docker's kinds:
``A`` added, ``C`` changed, ``D`` deleted; the exported tar marks deletions with ``.wh.``
whiteouts. The overlay driver's native diff reads overlay whiteouts instead
(:func:`export_overlay_upper`).
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from pyengine.layers.extract import WHITEOUT_PREFIX


def _walk(root: str) -> dict[str, os.stat_result]:
    entries: dict[str, os.stat_result] = {}
    if not root or not os.path.isdir(root):
        return entries
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for entry in it:
                path = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                entries[path] = st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(path)
    return entries


def _differs(layer_root: str, parent_root: str, path: str, new: os.stat_result, old: os.stat_result) -> bool:
    if stat.S_IFMT(new.st_mode) != stat.S_IFMT(old.st_mode):
        return True
    if (new.st_mode, new.st_uid, new.st_gid) != (old.st_mode, old.st_uid, old.st_gid):
        return True
    if stat.S_ISDIR(new.st_mode):
        return False
    if stat.S_ISLNK(new.st_mode):
        return os.readlink(os.path.join(layer_root, path)) != os.readlink(os.path.join(parent_root, path))
    if stat.S_ISCHR(new.st_mode) or stat.S_ISBLK(new.st_mode):
        return new.st_rdev != old.st_rdev
    return new.st_size != old.st_size or new.st_mtime_ns != old.st_mtime_ns


def changes(layer_dir: Path | str, parent_dir: Path | str | None) -> list[tuple[str, str]]:
    """(kind, "/path") for every path added, changed or deleted against the parent, sorted."""
    layer_root, parent_root = str(layer_dir), str(parent_dir) if parent_dir else ""
    new, old = _walk(layer_root), _walk(parent_root)
    out = []
    for path, st in new.items():
        if path not in old:
            out.append(("A", "/" + path))
        elif _differs(layer_root, parent_root, path, st, old[path]):
            out.append(("C", "/" + path))
    for path in old:
        if path not in new:
            out.append(("D", "/" + path))
    return sorted(out, key=lambda c: c[1])


def _top_deletions(deleted: list[str]) -> list[str]:
    """Deleted paths whose parent still exists: a whiteout of a directory covers its tree."""
    gone = set(deleted)
    return [p for p in deleted if os.path.dirname(p) not in gone]


def _add(tar: tarfile.TarFile, root: str, rel: str, links: dict[tuple[int, int], str]) -> None:
    full = os.path.join(root, rel)
    info = tar.gettarinfo(full, arcname=rel)
    info.uname = info.gname = ""
    st = os.lstat(full)
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        key = (st.st_dev, st.st_ino)
        if key in links:
            info.type, info.linkname, info.size = tarfile.LNKTYPE, links[key], 0
            tar.addfile(info)
            return
        links[key] = rel
    try:
        names = os.listxattr(full, follow_symlinks=False)
    except OSError:
        names = []
    headers = dict(info.pax_headers)
    for name in names:
        if name.startswith("trusted.overlay."):
            continue
        value = os.getxattr(full, name, follow_symlinks=False)
        headers["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    info.pax_headers = headers
    if info.isreg():
        with open(full, "rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)


def _spool() -> BinaryIO:
    return tempfile.SpooledTemporaryFile(max_size=16 << 20)  # type: ignore[return-value]


def export_diff(layer_dir: Path | str, parent_dir: Path | str | None) -> BinaryIO:
    """A tar (rewound, readable) of the layer's changes against its parent, with whiteouts."""
    layer_root = str(layer_dir)
    out = _spool()
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        found = changes(layer_dir, parent_dir)
        for kind, path in found:
            rel = path.lstrip("/")
            if kind == "D":
                continue
            _add(tar, layer_root, rel, links)
        for path in _top_deletions([p.lstrip("/") for k, p in found if k == "D"]):
            directory, name = os.path.split(path)
            info = tarfile.TarInfo(os.path.join(directory, WHITEOUT_PREFIX + name))
            tar.addfile(info)
    out.seek(0)
    return out


def diff_size(layer_dir: Path | str, parent_dir: Path | str | None) -> int:
    """Bytes of regular-file content the layer adds or changes against its parent."""
    root = str(layer_dir)
    total = 0
    for kind, path in changes(layer_dir, parent_dir):
        if kind != "D":
            st = os.lstat(os.path.join(root, path.lstrip("/")))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def export_overlay_upper(upper_dir: Path | str) -> BinaryIO:
    """A tar of an overlay upper dir, its whiteouts (char 0:0) and opaque dirs translated to
    ``.wh.`` entries."""
    root = str(upper_dir)
    out = _spool()
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, st in sorted(_walk(root).items()):
            full = os.path.join(root, rel)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                directory, name = os.path.split(rel)
                tar.addfile(tarfile.TarInfo(os.path.join(directory, WHITEOUT_PREFIX + name)))
                continue
            _add(tar, root, rel, links)
            if stat.S_ISDIR(st.st_mode):
                try:
                    opaque = os.getxattr(full, "trusted.overlay.opaque", follow_symlinks=False)
                except OSError:
                    opaque = b""
                if opaque == b"y":
                    tar.addfile(tarfile.TarInfo(os.path.join(rel, ".wh..wh..opq")))
    out.seek(0)
    return out
