"""The CLI skeleton: a cheap ``--version``, global options, structlog output, one-line errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from core_helpers import one_line_error

import pyengine

# Modules that must not be imported on the path of `pyengine --version` / `--help`.
HEAVY = ("pyroute2", "aiohttp", "rich", "requests", "docker", "structlog", "pluggy", "tarsafe",
         "pyengine.engine", "pyengine.config", "pyengine.plugin", "pyengine_plugins", "tomllib")


def imported_modules(code_or_args: list[str], env: dict[str, str], expect: str = "pyengine.cli") -> list[str]:
    """The modules ``python -X importtime ARGS`` imports in-process (the fork server off, so
    this is the path of a command nobody serves), parsed from its stderr."""
    if expect == "pyengine.cli":
        env = {**env, "PYENGINE_FORK_SERVER": "0"}
    result = subprocess.run([sys.executable, "-X", "importtime", *code_or_args], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    names = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        names.append(line.rsplit("|", 1)[1].strip())
    assert expect in names, "importtime output not understood"
    return names


def heavy_among(names: list[str]) -> list[str]:
    """The denied modules among ``names``. importtime also lists imports that failed (structlog
    tries ``rich`` and ``colorama``); a module that is not installed here costs nothing, so only
    installed ones count."""
    return sorted({n for n in names for h in HEAVY if (n == h or n.startswith(h + "."))
                   and importlib.util.find_spec(n.split(".")[0]) is not None})


def test_import_pyengine_cli_pulls_in_no_heavy_module(engine_env):
    names = imported_modules(["-c", "import pyengine.cli"], engine_env.env)
    assert heavy_among(names) == []


@pytest.mark.parametrize("args", [["--version"], ["-v"]])
def test_version_pulls_in_no_heavy_module(engine_env, args):
    names = imported_modules(["-m", "pyengine", *args], engine_env.env)
    assert heavy_among(names) == []


def test_a_served_command_imports_only_the_client(engine_env):
    # With the fork server answering, the command process imports neither click nor the CLI:
    # the fork that runs it has them already.
    info = json.loads(engine_env.run("info", "--format", "json", check=True).stdout)["fork_server"]
    assert info["served"], info
    names = imported_modules(["-m", "pyengine", "--version"], engine_env.env, expect="pyengine.forkserver.client")
    assert not [n for n in names if n == "click" or n.startswith(("click.", "pyengine.cli"))], names
    assert heavy_among(names) == []


def test_help_loads_plugins_but_no_driver_dependency(engine_env):
    # --help lists plugin commands, so it loads the plugin manager and the plugins' modules;
    # those modules must keep their drivers' dependencies for when a driver starts.
    names = imported_modules(["-m", "pyengine", "--help"], engine_env.env)
    assert "pluggy" in names
    assert [n for n in heavy_among(names) if n.split(".")[0] in ("pyroute2", "aiohttp", "rich", "requests",
                                                                  "docker", "tarsafe")] == []


def test_the_denylist_would_catch_a_heavy_import(engine_env):
    # The parser really sees a module imported indirectly (guards the test above). structlog
    # is imported explicitly: the engine's loggers are lazy and no longer import it.
    names = imported_modules(["-c", "import pyengine.cli, pyengine.engine, structlog"], engine_env.env)
    assert {"pluggy", "structlog", "pyengine.engine"} <= set(heavy_among(names))


def test_version_prints_the_package_version(engine_env):
    result = engine_env.run("--version", check=True)
    assert result.stdout == f"pyengine version {pyengine.__version__}\n"


def test_console_script_is_installed(engine_env):
    script = Path(sys.executable).parent / "pyengine"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=engine_env.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"pyengine version {pyengine.__version__}\n"


def test_help_lists_global_options_and_builtin_commands(engine_env):
    result = engine_env.run("--help", check=True)
    for option in ("--storage-driver", "-s,", "--config", "--data-root", "--run-root", "--log-level",
                   "--log-format", "--host", "--version"):
        assert option in result.stdout
    for command in ("info", "plugins"):
        assert f"\n  {command} " in result.stdout


def test_log_format_json_gives_json_lines_on_stderr(engine_env):
    result = engine_env.run("--log-format", "json", "--log-level", "debug", "info", "--format", "json")
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # stdout stays the command's output only
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert events, "no log events at debug level"
    for event in events:
        assert {"event", "level", "timestamp"} <= set(event)
    by_name = {e["event"]: e for e in events}
    assert by_name["plugins.loaded"]["level"] == "debug"
    assert "vfs" in by_name["plugins.loaded"]["plugins"]
    selected = by_name["storage.selected"]
    assert (selected["driver"], selected["source"], selected["level"]) == (
        json.loads(result.stdout)["storage"]["driver"], "auto", "info")


def test_log_format_from_env_and_level_filters(engine_env):
    env = {"PYENGINE_LOG_FORMAT": "json", "PYENGINE_LOG_LEVEL": "info"}
    result = engine_env.run("info", env=env, check=True)
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [e["event"] for e in events] == ["storage.selected"]  # the debug event is filtered


def test_log_format_console_is_for_people(engine_env):
    result = engine_env.run("--log-level", "debug", "info", check=True)
    lines = result.stderr.splitlines()
    assert any("storage.selected" in line and "source=auto" in line for line in lines)
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


def test_default_log_level_is_quiet(engine_env):
    result = engine_env.run("info", check=True)
    assert result.stderr == ""


def test_unknown_command_is_a_usage_error(engine_env):
    result = engine_env.run("no-such-command")
    assert result.returncode == 2
    assert "No such command 'no-such-command'" in result.stderr


def test_info_text_shows_settings_sources_drivers_and_storage_status(engine_env):
    result = engine_env.run("-s", "vfs", "info", check=True)
    out = result.stdout
    assert f"Config file: {engine_env.config_path}" in out
    assert any(line.split() == ["storage-driver", "vfs", "flag"] for line in out.splitlines())
    assert any(line.split()[:4] == ["storage", "vfs", "vfs", "ok"] for line in out.splitlines())
    assert "Storage driver: vfs" in out
    assert f"Root Dir: {engine_env.data_root / 'storage' / 'vfs'}" in out


def test_engine_error_is_one_line_with_exit_status(engine_env):
    result = engine_env.run("--storage-driver", "nosuch", "plugins")
    # `plugins` does not need a storage driver: it lists, it does not select.
    assert result.returncode == 0
    result = engine_env.run("--storage-driver", "nosuch", "info")
    assert result.returncode == 2
    assert one_line_error(result).startswith("pyengine: error: unknown storage driver 'nosuch' (--storage-driver)")


def test_every_command_is_documented_in_docs_cli() -> None:
    """docs/cli.md shows a usage line for every built-in command and every subcommand."""
    import click

    from pyengine.cli import BUILTIN_COMMANDS, cli

    text = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    ctx = click.Context(cli)
    missing = []
    for name in sorted(BUILTIN_COMMANDS):
        command = cli.get_command(ctx, name)
        if f"pyengine {name}" not in text:
            missing.append(name)
        if isinstance(command, click.Group) and name != "container":
            for sub in command.commands:
                if f"pyengine {name} {sub}" not in text and not any(
                        line.startswith(f"    pyengine {name} ") and sub in line for line in text.splitlines()):
                    missing.append(f"{name} {sub}")
    assert not missing, f"commands missing from docs/cli.md: {missing}"
