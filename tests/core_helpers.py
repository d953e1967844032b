"""Helpers for the plugin-core tests: a throw-away plugin distribution found through its entry
point, so the real ``importlib.metadata`` loading path is exercised."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_plugin(where: Path, name: str, source: str, dist: str | None = None,
                version: str = "0.1") -> dict[str, str]:
    """Write ``<module>.py`` and a ``<dist>-<version>.dist-info`` with a ``pyengine`` entry point
    named ``name`` into ``where``; return the env (PYTHONPATH) that makes it visible."""
    module = f"pe_test_{name.replace('-', '_')}"
    dist = dist or f"pe-test-{name}"
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{module}.py").write_text(textwrap.dedent(source))
    info = where / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[pyengine]\n{name} = {module}\n")
    return {"PYTHONPATH": str(where)}


def plugins_json(engine_env, **env: str) -> dict[str, dict]:
    """``pyengine plugins --json`` as a dict keyed by plugin name; asserts exit status 0."""
    result = engine_env.run("plugins", "--json", env=env or None)
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


def info_json(engine_env, *args: str, **env: str) -> dict:
    """``pyengine ARGS info --format json``; asserts exit status 0."""
    result = engine_env.run(*args, "info", "--format", "json", env=env or None)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_line_error(result, warnings: bool = False) -> str:  # noqa: ANN001 - a CompletedProcess
    """The single stderr line of a refused command (no traceback).

    :param warnings: allow log lines at level warning beside it (a broken plugin is logged
        as a warning by every command, besides its state in ``plugins``)
    """
    lines = [line for line in result.stderr.splitlines() if line.strip()
             and not (warnings and "[warning" in line)]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return lines[0]


def auto_storage_driver(engine_env) -> str:
    """The storage driver automatic selection picks on this host with only the installed
    plugins (vfs today; overlay once it is bundled): tests compare against it rather than
    hard-code it."""
    data = info_json(engine_env)
    assert data["config"]["storage-driver"]["source"] == "auto"
    return data["config"]["storage-driver"]["value"]
