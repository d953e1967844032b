"""Builds pyengine's one native program, the container monitor's idle half (pyengine-shim),
beside the Python package. Everything else is declared in pyproject.toml.

A compiled program rather than Python: a Python process costs ~10 MB per idle container, the
shim ~150 KiB (see pyengine/shim/shim.c and docs/architecture.md). Without a C compiler the
install still succeeds and the monitor stays in Python for the container's whole life.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

SOURCE = Path("pyengine") / "shim" / "shim.c"
PROGRAM = "pyengine-shim"


class build_py_with_shim(build_py):  # noqa: N801 - setuptools' command naming
    def run(self) -> None:
        super().run()
        # An editable install runs the sources in place: the program goes beside shim.c.
        out_dir = SOURCE.parent if self.editable_mode else Path(self.build_lib) / SOURCE.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
        command = [*cc, "-O2", "-Wall", "-o", str(out_dir / PROGRAM), str(SOURCE)]
        # Static: as a container's init (run --init) it runs inside the container's root
        # filesystem, which need not have this host's libc (busybox has none).
        try:
            subprocess.run([*command, "-static"], check=True)
            return
        except (OSError, subprocess.CalledProcessError) as exc:
            self.warn(f"could not link {PROGRAM} statically ({exc}): run --init keeps its Python init")
        try:
            subprocess.run(command, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            self.warn(f"could not build {PROGRAM} ({exc}): container monitors will stay in Python")


class NativeDistribution(Distribution):
    """The wheel carries a native program: tag it for this platform, not py3-none-any."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": build_py_with_shim}, distclass=NativeDistribution)
