"""Per-host configuration: precedence flag > env > file > auto, and a config file that is wrong
in any way refused with exit status 2, one line naming the file, line or key, before anything
else runs."""

from __future__ import annotations

import itertools
import json

import pytest
from core_helpers import auto_storage_driver, info_json, make_plugin, one_line_error

# Three storage drivers, one per source, so the winning value alone tells which source won.
# They are vfs drivers under other names: real drivers that `info` can start.
THREE_DRIVERS = """
from pyengine.drivers import DriverSpec
from pyengine.plugin import hookimpl


def factory(ctx):
    from pyengine_plugins.vfs.driver import VfsDriver

    driver = VfsDriver(ctx)
    driver.name = ctx.name
    return driver


@hookimpl
def pyengine_register_storage_drivers(register):
    for name in ("from-file", "from-env", "from-flag"):
        register(DriverSpec(name=name, factory=factory))
"""


@pytest.mark.parametrize(("in_file", "in_env", "on_flag"), list(itertools.product([False, True], repeat=3)))
def test_storage_driver_value_and_source_in_every_combination(engine_env, tmp_path, in_file, in_env, on_flag):
    auto = auto_storage_driver(engine_env)
    env = make_plugin(tmp_path / "site", "three", THREE_DRIVERS)
    args = []
    if in_file:
        engine_env.write_config('storage-driver = "from-file"\n')
    if in_env:
        env["PYENGINE_STORAGE_DRIVER"] = "from-env"
    if on_flag:
        args = ["--storage-driver", "from-flag"]
    data = info_json(engine_env, *args, **env)
    if on_flag:
        expected = {"value": "from-flag", "source": "flag"}
    elif in_env:
        expected = {"value": "from-env", "source": "env"}
    elif in_file:
        expected = {"value": "from-file", "source": f"file:{engine_env.config_path}"}
    else:
        # The three have no priority: automatic selection never picks them.
        expected = {"value": auto, "source": "auto"}
    assert data["config"]["storage-driver"] == expected
    assert data["storage"]["driver"] == expected["value"]
    assert data["config_file"] == str(engine_env.config_path)


def test_every_setting_reports_its_source(engine_env):
    engine_env.write_config('log-level = "error"\n')
    data = info_json(engine_env, "--log-format", "console")
    config = data["config"]
    assert config["data-root"] == {"value": str(engine_env.data_root), "source": "env"}
    assert config["log-level"] == {"value": "error", "source": f"file:{engine_env.config_path}"}
    assert config["log-format"] == {"value": "console", "source": "flag"}
    assert config["host"] == {"value": None, "source": "default"}
    assert set(config) >= {"storage-driver", "data-root", "run-root", "log-level", "log-format", "host"}
    assert {"kind", "name", "plugin", "state", "reason"} <= set(data["drivers"][0])


def test_config_path_from_flag_beats_env(engine_env, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text('storage-driver = "example"\n')
    engine_env.write_config('storage-driver = "vfs"\n')
    data = info_json(engine_env, "--config", str(other))
    assert data["config"]["storage-driver"] == {"value": "example", "source": f"file:{other}"}


def test_driver_options_from_the_file_reach_the_driver(engine_env):
    engine_env.write_config('storage-driver = "example"\n[storage.example]\nfsync = false\n')
    data = info_json(engine_env)
    assert ["Fsync", "false"] in data["storage"]["status"]


# (config text, what the one error line must contain besides the file name)
BAD_CONFIGS = {
    "unknown-top-level-key": ('log-level = "info"\nstorage_driver = "vfs"\n',
                              [":2: storage_driver: unknown setting", "storage-driver"]),
    "bad-type": ('data-root = "/x"\n\nstorage-driver = 3\n',
                 [":3: storage-driver: expected string, got int 3"]),
    "toml-syntax-error": ('storage-driver = "vfs"\nlog-level = = "info"\n',
                          ["TOML syntax error", "line 2"]),
    "unknown-key-in-driver-table": ('[storage.vfs]\nfoo = 1\n',
                                    [":2: storage.vfs.foo: unknown key"]),
    "unknown-driver-table": ('\n[storage.nosuch]\nsize = 1\n',
                             [":2: storage.nosuch: unknown storage driver", "vfs", "example"]),
    "unknown-option-of-third-party-driver": ('[storage.example]\nfsync = true\ncompress = "zstd"\n',
                                             [":3: storage.example.compress: unknown key", "fsync"]),
    "bad-type-of-driver-option": ('[storage.example]\nfsync = "yes"\n',
                                  [":2: storage.example.fsync: expected boolean, got str 'yes'"]),
    "bad-log-format": ('log-format = "xml"\n', [":1: log-format: 'xml' is not one of console, json"]),
    "bad-log-level": ('log-level = "loud"\n', [":1: log-level: 'loud' is not one of"]),
    "unknown-table": ('[volumes]\ndriver = "local"\n', [":1: volumes: unknown table"]),
    "unknown-key-in-plugins": ('[plugins]\nenabled = ["x"]\n', [":2: plugins.enabled: unknown key"]),
    "plugins-disabled-not-a-list": ('[plugins]\ndisabled = "example"\n', [":2: plugins.disabled: expected list"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
@pytest.mark.parametrize("command", [["info"], ["plugins", "--json"], ["--storage-driver", "vfs", "info"]])
def test_bad_config_file_is_refused_before_anything_runs(engine_env, case, command):
    text, expected = BAD_CONFIGS[case]
    engine_env.write_config(text)
    result = engine_env.run(*command)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    line = one_line_error(result)
    assert line.startswith(f"pyengine: error: {engine_env.config_path}"), line
    for word in expected:
        assert word in line, line
    assert list(engine_env.data_root.iterdir()) == []


def test_bad_config_wins_over_no_such_command(engine_env):
    # A plugin command cannot be looked up without a valid config: the config error is shown.
    engine_env.write_config("nonsense = 1\n")
    result = engine_env.run("some-plugin-command")
    assert result.returncode == 2
    assert "nonsense: unknown setting" in one_line_error(result)


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--log-format", "xml"], {}, "Invalid value for '--log-format'"),
    ([], {"PYENGINE_LOG_FORMAT": "xml"}, "PYENGINE_LOG_FORMAT: 'xml' is not one of console, json"),
    ([], {"PYENGINE_LOG_LEVEL": "loud"}, "PYENGINE_LOG_LEVEL: 'loud' is not one of"),
])
def test_bad_log_setting_from_flag_or_env_is_refused(engine_env, args, env, expected):
    result = engine_env.run(*args, "info", env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert expected in result.stderr


def test_missing_explicit_config_file_is_refused(engine_env, tmp_path):
    missing = tmp_path / "nope.toml"
    result = engine_env.run("--config", str(missing), "info")
    assert result.returncode == 2
    assert one_line_error(result) == f"pyengine: error: {missing}: config file not found"


def test_unknown_table_of_a_disabled_plugin_is_tolerated(engine_env):
    # [storage.example] belongs to a plugin that is disabled: the file stays valid, so that
    # disabling a plugin never requires editing its options out.
    engine_env.write_config('[plugins]\ndisabled = ["example"]\n\n[storage.example]\nfsync = false\n')
    result = engine_env.run("info", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["storage"]["driver"] not in ("example", "")
