"""The floor under `pull` and `load` (issue 15): the same image's layer blobs already on local
disk, decompressed and extracted in order by GNU tar into a fresh directory beside the engines'
data roots, so the benches can say how far pyengine is from the bare cost of unpacking.

tar runs as root with ``--same-owner -p --xattrs --xattrs-include=*``: ownership, modes and every
xattr, as both engines restore them. No ``sync -f`` afterwards: neither engine syncs the tree it
extracts (strace of a load: pyengine fsyncs the blobs it stores and its metadata, podman only its
metadata), so a floor that waited for the extracted files to reach the disk would be slower than
what it is compared with. The floor does not hash, store or verify blobs either: that is the
engines' overhead it measures. The layers go one after the other into one directory, as issue 15
defines the floor; pyengine extracts independent layers at once (one directory each, on two
cores), so it can come in under this floor.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

#: tar's decompressor flag per leading magic bytes; a layer with neither is a plain tar.
DECOMPRESSORS = {b"\x1f\x8b": "--gzip", b"\x28\xb5\x2f\xfd": "--zstd"}


def layout_layers(layout: Path) -> list[Path]:
    """The layer blobs of the (only) image in an OCI layout, bottom layer first."""
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":", 1)[1]).read_bytes())
    return [blobs / layer["digest"].split(":", 1)[1] for layer in manifest["layers"]]


def archive_layers(archive: Path, dest: Path) -> list[Path]:
    """The layers of a docker-archive, copied out into the directory ``dest`` (bottom layer
    first), so the floor reads them as files on disk like the layout's blobs."""
    with tarfile.open(archive) as tar:
        names = json.load(tar.extractfile("manifest.json"))[0]["Layers"]  # type: ignore[arg-type]
        layers = [dest / f"{i}.layer" for i in range(len(names))]
        for name, layer in zip(names, layers, strict=True):
            with tar.extractfile(name) as src, open(layer, "wb") as out:  # type: ignore[union-attr]
                shutil.copyfileobj(src, out, 1 << 20)
    return layers


def warm(*paths: Path) -> None:
    """Read every file under ``paths`` once, so the timed runs find them in the page cache (we
    never drop the cache: this machine is shared)."""
    for path in paths:
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            with open(file, "rb") as f:
                while f.read(1 << 20):
                    pass


def decompressor(layer: Path) -> list[str]:
    """tar's flag for the layer's compression, from its magic bytes: gzip, zstd or none."""
    with open(layer, "rb") as f:
        head = f.read(4)
    return [flag for magic, flag in DECOMPRESSORS.items() if head.startswith(magic)]


def time_floor(layers: list[Path], work: Path) -> float:
    """Seconds for ``tar -x`` of every layer, in order, into a fresh directory under ``work``."""
    root = Path(tempfile.mkdtemp(prefix="floor-", dir=work))
    try:
        started = time.perf_counter()
        for layer in layers:
            subprocess.run(["tar", "-x", *decompressor(layer), "--same-owner", "-p", "--xattrs", "--xattrs-include=*",
                            "-f", str(layer), "-C", str(root)], check=True)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(root, ignore_errors=True)
