"""The static checks are part of the suite, so a lint or type error fails CI like a test.

ruff and mypy come with the ``test`` extra; their settings live in pyproject.toml.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool(module: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "MYPY_CACHE_DIR": str(tmp_path / "mypy"),
                               "RUFF_CACHE_DIR": str(tmp_path / "ruff")})


def test_ruff_finds_nothing(tmp_path: Path) -> None:
    result = _tool("ruff", "check", "pyengine", "plugins", "tests", "bench", "docs", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing(tmp_path: Path) -> None:
    result = _tool("mypy", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
