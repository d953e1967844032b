"""The build cache: one record per step result, keyed by what determines it, kept under the
data root so it survives restarts; and the cache mounts of ``RUN --mount=type=cache``.

A step's key is the sha256 of its parent's key, the instruction after expansion, the ARG
values it sees (a RUN's environment) and, for COPY and ADD, a checksum of its sources
(contents, modes, owners; not mtimes). A record holds the step's whole image config, its
layer descriptors and the image that holds those layers in the image store (the last
committed step); a record whose image is gone is a miss. Owns ``<data-root>/builder`` (0700).
Calls the image store only to check and remove the images it holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyengine.fsutil import write_json_atomic
from pyengine.log import get_logger

log = get_logger("pyengine.build.cache")


def step_key(parent_key: str, *parts: Any) -> str:
    """The key of a step on ``parent_key``: the sha256 of the parent and the step's parts."""
    text = json.dumps([parent_key, *parts], sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class CachedStep:
    """A step's result as the cache keeps it."""

    config: dict[str, Any]          # the whole image config after the step
    layers: list[dict[str, Any]]    # manifest layer descriptors, bottom first
    oci: bool                       # whether the manifest is OCI (else Docker schema 2)
    image: str | None               # the image that holds the layers (None: no layers yet)
    committed: bool = False         # whether ``image`` *is* this step's result

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.config, "layers": self.layers, "oci": self.oci, "image": self.image,
                "committed": self.committed}


def image_exists(store: Any, image_id: str) -> bool:
    """Whether the store holds the image with this full ID: one stat, where resolving an ID
    reads every image record (a cache hit must cost next to nothing)."""
    return (store.image_dir / f"{image_id.removeprefix('sha256:')}.json").is_file()


class BuildCache:
    """The cache of one data root."""

    def __init__(self, data_root: Path) -> None:
        self.root = Path(data_root) / "builder"
        self.steps = self.root / "steps"
        self.mounts = self.root / "mounts"

    def _ensure(self) -> None:
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
        self.steps.mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.steps / f"{key.removeprefix('sha256:')}.json"

    def lookup(self, key: str, store: Any) -> CachedStep | None:
        """The cached result of ``key``, or None (also when the image holding it is gone)."""
        try:
            data = json.loads(self._path(key).read_text())
        except (FileNotFoundError, ValueError):
            return None
        step = CachedStep(config=data["config"], layers=data["layers"], oci=data["oci"], image=data["image"],
                          committed=data.get("committed", False))
        if step.image is not None:
            if not image_exists(store, step.image):
                return None
        elif step.layers:
            return None
        return step

    def record(self, key: str, step: CachedStep) -> None:
        """Remember a step's result. A cache may lose a record in a crash, so no fsync."""
        self._ensure()
        write_json_atomic(self._path(key), step.as_dict(), indent=None, fsync=False)

    def held_images(self) -> set[str]:
        """Every image the cache holds (intermediate images of builds)."""
        held: set[str] = set()
        if not self.steps.is_dir():
            return held
        for path in self.steps.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                image = json.loads(path.read_text()).get("image")
                if image:
                    held.add(image)
        return held

    # -- cache mounts --------------------------------------------------------------------------
    def mount_dir(self, mount_id: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Path:
        """The directory of cache mount ``mount_id``, made on first use with the given owner."""
        self._ensure()
        self.mounts.mkdir(exist_ok=True)
        path = self.mounts / hashlib.sha256(mount_id.encode()).hexdigest()[:32]
        if not path.is_dir():
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            os.chown(tmp, uid, gid)
            os.chmod(tmp, mode)
            try:
                os.rename(tmp, path)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)  # made meanwhile by a concurrent step
        return path

    # -- prune -------------------------------------------------------------------------------
    def disk_usage(self) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.root) if self.root.is_dir() else []:
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_size
        return total

    def prune(self, store: Any) -> tuple[list[str], int]:
        """Forget every step and cache mount; remove the intermediate images only the cache
        held (untagged, no container on them). Returns (removed image IDs, bytes freed)."""
        from pyengine.errors import PyEngineError

        held = self.held_images()
        freed = self.disk_usage()
        before = store.disk_usage()["images_size"] if held else 0
        shutil.rmtree(self.steps, ignore_errors=True)
        shutil.rmtree(self.mounts, ignore_errors=True)
        removed = []
        used = store.images_in_use()
        for image_id in sorted(held):
            with contextlib.suppress(PyEngineError):
                image = store.resolve_image(image_id)
                if image.tags or image.id in used:
                    continue
                # the store's verb for an untagged image (older stores: remove by ID)
                delete = getattr(store, "delete_untagged", None)
                if delete is not None:
                    delete(image)
                else:
                    store.remove(image.id)
                removed.append(image.id)
        if held:
            freed += max(0, before - store.disk_usage()["images_size"])
        log.info("builder.pruned", images=len(removed), bytes=freed)
        return removed, freed
