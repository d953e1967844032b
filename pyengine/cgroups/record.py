"""Where each container's cgroups are, kept under the isolator's state directory: the parent
is derived from the *caller's* own cgroup, which differs between the process that started a
container and one that later asks for its stats or removes it, so later calls use the paths
recorded at ``prepare``. Writes are atomic (temp file, fsync, rename)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pyengine.cgroups import check_container_id
from pyengine.fsutil import make_dirs


class PathRecords:
    """``<state_dir>/<container_id>.json`` holding ``{"paths": {controller: path}}``."""

    def __init__(self, state_dir: Path | None) -> None:
        self.state_dir = state_dir

    def _file(self, container_id: str) -> Path | None:
        if self.state_dir is None:
            return None
        return self.state_dir / f"{check_container_id(container_id)}.json"

    def save(self, container_id: str, paths: dict[str, str]) -> None:
        target = self._file(container_id)
        if target is None:
            return
        make_dirs(target.parent)
        temp = target.with_suffix(".json.tmp")
        with open(temp, "w") as f:
            json.dump({"paths": paths}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)

    def load(self, container_id: str) -> dict[str, str] | None:
        target = self._file(container_id)
        if target is None:
            return None
        try:
            with open(target) as f:
                return dict(json.load(f)["paths"])
        except FileNotFoundError:
            return None

    def forget(self, container_id: str) -> None:
        target = self._file(container_id)
        if target is not None:
            target.unlink(missing_ok=True)
