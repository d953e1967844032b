"""The plugin manager seen through the CLI: discovery by entry point, states, disabling, and
broken plugins that must not take the engine down."""

from __future__ import annotations

import tomllib

import pytest
from core_helpers import REPO_ROOT, auto_storage_driver, info_json, make_plugin, one_line_error, plugins_json

EXAMPLE_HINT = ("the example plugin is not installed: "
                "pip install --no-deps -e docs/examples/pyengine-example-driver")


def bundled_entry_points() -> dict[str, str]:
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return data["project"]["entry-points"]["pyengine"]


def test_plugins_json_lists_every_bundled_plugin_and_the_example(engine_env):
    listed = plugins_json(engine_env)
    bundled = bundled_entry_points()
    assert bundled, "pyproject.toml declares no bundled plugin"
    for name, module in bundled.items():
        plugin = listed[name]
        assert plugin["module"] == module
        assert plugin["distribution"] == "pyengine"
        assert plugin["version"]
        assert plugin["state"] == "ok", plugin
        assert plugin["hooks"] and all(h.startswith("pyengine_") for h in plugin["hooks"])
        for driver in plugin["drivers"]:
            assert set(driver) >= {"kind", "name", "state", "reason"}
            assert driver["state"] in ("ok", "skip", "error"), driver
    assert "example" in listed, EXAMPLE_HINT
    example = listed["example"]
    assert example["distribution"] == "pyengine-example-driver"
    assert example["version"] == "0.1.0"
    assert example["module"] == "pyengine_example_driver"
    assert example["state"] == "ok"
    assert example["hooks"] == ["pyengine_register_storage_drivers"]
    assert example["drivers"] == [{"kind": "storage", "name": "example", "state": "ok", "reason": ""}]


def test_plugins_table_names_plugin_version_distribution_and_state(engine_env):
    result = engine_env.run("plugins", check=True)
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:] if line and line[0] != " "
            and ":" not in line.split()[0]}
    assert rows["example"][1:4] == ["0.1.0", "pyengine-example-driver", "ok"], EXAMPLE_HINT
    assert rows["vfs"][2:4] == ["pyengine", "ok"]


def test_example_driver_selected_with_storage_driver_flag(engine_env):
    data = info_json(engine_env, "--storage-driver", "example")
    assert data["config"]["storage-driver"] == {"value": "example", "source": "flag"}
    assert data["storage"]["driver"] == "example"
    assert data["storage"]["plugin"] == "example"
    assert ["Root Dir", str(engine_env.data_root / "storage" / "example")] in data["storage"]["status"]


@pytest.mark.parametrize("how", ["env", "config"])
def test_disabled_example_plugin_shows_disabled_and_refuses_its_driver(engine_env, how):
    env = {}
    if how == "env":
        env["PYENGINE_DISABLE_PLUGINS"] = "nosuch,example"
    else:
        engine_env.write_config('[plugins]\ndisabled = ["example"]\n')
    auto = auto_storage_driver(engine_env)
    listed = plugins_json(engine_env, **env)
    assert listed["example"]["state"] == "disabled", EXAMPLE_HINT
    assert listed["example"]["drivers"] == []
    assert listed["vfs"]["state"] == "ok"

    result = engine_env.run("--storage-driver", "example", "info", env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    line = one_line_error(result)
    assert "'example'" in line and "disabled" in line
    assert ("PYENGINE_DISABLE_PLUGINS" if how == "env" else str(engine_env.config_path)) in line

    # Nothing else is refused: automatic selection still works without the plugin.
    data = info_json(engine_env, **env)
    assert data["storage"]["driver"] == auto
    rows = [d for d in data["drivers"] if d["name"] == "example"]
    assert rows == [{"kind": "plugin", "name": "example", "plugin": "example", "state": "disabled",
                     "reason": rows[0]["reason"]}]


BROKEN_IMPORT = """
raise RuntimeError("this plugin is broken on purpose")
"""

BROKEN_REGISTER = """
from pyengine.plugin import hookimpl

@hookimpl
def pyengine_register_storage_drivers(register):
    raise OSError("cannot find my pool")
"""

UNKNOWN_HOOK = """
from pyengine.plugin import hookimpl

@hookimpl
def pyengine_register_flux_capacitors(register):
    pass
"""

# A misspelt hook without the decorator would be ignored by pluggy: refused all the same.
MISSPELT_UNDECORATED = """
def pyengine_register_storage_driver(register):
    pass
"""


@pytest.mark.parametrize(("source", "reason"), [
    (BROKEN_IMPORT, "error: RuntimeError: this plugin is broken on purpose"),
    (BROKEN_REGISTER, "error: OSError: cannot find my pool"),
    (UNKNOWN_HOOK, "error: ValueError: unknown hook pyengine_register_flux_capacitors"),
    (MISSPELT_UNDECORATED, "error: ValueError: unknown hook pyengine_register_storage_driver"),
], ids=["import-raises", "register-hook-raises", "unknown-hook", "misspelt-undecorated"])
def test_broken_plugin_shows_error_and_other_commands_still_work(engine_env, tmp_path, source, reason):
    auto = auto_storage_driver(engine_env)
    env = make_plugin(tmp_path / "site", "broken", source)
    listed = plugins_json(engine_env, **env)
    assert listed["broken"]["state"] == reason
    assert listed["broken"]["distribution"] == "pe-test-broken"
    assert listed["broken"]["drivers"] == []
    assert listed["vfs"]["state"] == "ok" and listed["example"]["state"] == "ok"

    data = info_json(engine_env, **env)
    assert data["storage"]["driver"] == auto
    assert {"kind": "plugin", "name": "broken", "plugin": "broken", "state": "error",
            "reason": reason[len("error: "):]} in data["drivers"]
    assert info_json(engine_env, "-s", "example", **env)["storage"]["driver"] == "example"

    # Asked for by name, it is one line naming the plugin and the cause, exit status 2.
    result = engine_env.run("--storage-driver", "broken", "info", env=env)
    assert result.returncode == 2
    line = one_line_error(result, warnings=True)
    assert line.startswith("pyengine: error: ")
    assert "plugin 'broken'" in line and reason[len("error: "):] in line


def test_driver_states_ok_skip_error_with_reasons(engine_env, tmp_path):
    auto = auto_storage_driver(engine_env)
    env = make_plugin(tmp_path / "site", "moody", """
        from pyengine.drivers import DriverSpec
        from pyengine.errors import DriverNotSupported
        from pyengine.plugin import hookimpl

        def needs_quantum(ctx):
            raise DriverNotSupported("this host has no quantum storage")

        def crashes(ctx):
            raise KeyError("boom")

        def start(ctx):
            raise AssertionError("never started: its probe refuses")

        @hookimpl
        def pyengine_register_storage_drivers(register):
            register(DriverSpec(name="quantum", factory=start, probe=needs_quantum, priority=1))
            register(DriverSpec(name="crashy", factory=start, probe=crashes, priority=2))
    """)
    listed = plugins_json(engine_env, **env)
    assert listed["moody"]["state"] == "ok"
    assert listed["moody"]["drivers"] == [
        {"kind": "storage", "name": "quantum", "state": "skip", "reason": "this host has no quantum storage"},
        {"kind": "storage", "name": "crashy", "state": "error", "reason": "KeyError: 'boom'"},
    ]
    # Automatic selection passes over both, though they rank before vfs.
    assert info_json(engine_env, **env)["storage"]["driver"] == auto
    for name, word in (("quantum", "cannot run on this host: this host has no quantum storage"),
                       ("crashy", "KeyError: 'boom'")):
        result = engine_env.run("-s", name, "info", env=env)
        assert result.returncode == 2
        assert word in one_line_error(result)


def test_unknown_storage_driver_is_one_line_listing_the_known_ones(engine_env):
    result = engine_env.run("--storage-driver", "nosuch", "info")
    assert result.returncode == 2
    line = one_line_error(result)
    assert "'nosuch'" in line and "vfs" in line and "example" in line


@pytest.mark.parametrize("name", ["aaa-copycat", "zzz-copycat"])
def test_third_party_cannot_shadow_a_bundled_driver_name(engine_env, tmp_path, name):
    env = make_plugin(tmp_path / "site", name, """
        from pyengine.drivers import DriverSpec
        from pyengine.plugin import hookimpl

        @hookimpl
        def pyengine_register_storage_drivers(register):
            register(DriverSpec(name="vfs", factory=lambda ctx: None))
    """)
    listed = plugins_json(engine_env, **env)
    assert listed[name]["state"].startswith("error: ")
    assert "'vfs' is already registered by plugin 'vfs'" in listed[name]["state"]
    assert listed["vfs"]["state"] == "ok"
    assert info_json(engine_env, "-s", "vfs", **env)["storage"]["plugin"] == "vfs"


def test_entry_point_cache_spares_the_scan_and_sees_a_new_install(engine_env, tmp_path):
    """The second command reads the entry points from <run-root>/plugins.json without importing
    importlib.metadata; installing a distribution (a new dist-info changes its directory's
    mtime) makes the next command scan again and find it."""
    import subprocess
    import sys

    site = tmp_path / "site"
    site.mkdir()
    env = {**engine_env.env, "PYTHONPATH": str(site)}
    probe = ("import sys; from pathlib import Path; from pyengine.plugin.discovery import discover; "
             f"names = sorted(e.name for e in discover(Path({str(engine_env.run_root)!r}))); "
             "print('importlib.metadata' in sys.modules, ','.join(names))")

    def run() -> tuple[str, str]:
        out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True,
                             text=True, check=True).stdout.split()
        return out[0], out[1]

    scanned, first = run()
    cached, second = run()
    assert (scanned, cached) == ("True", "False") and first == second and "vfs" in first
    assert (engine_env.run_root / "plugins.json").exists()
    make_plugin(site, "fresh", "from pyengine.plugin import hookimpl\n")
    rescanned, third = run()
    assert rescanned == "True" and "fresh" in third.split(",")
    assert plugins_json(engine_env, PYTHONPATH=str(site))["fresh"]["distribution"] == "pe-test-fresh"
