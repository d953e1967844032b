"""The bundled ``namespaces`` isolator as the engine loads it: listed, started, checking specs."""

from __future__ import annotations

import pytest

from tests.conftest import need_root

pytestmark = pytest.mark.root


def _engine(env):  # noqa: ANN001, ANN202
    from pyengine import config
    from pyengine.engine import Engine

    flags = {"data-root": str(env.data_root), "run-root": str(env.run_root), "storage-driver": None,
             "log-level": None, "log-format": None, "host": None}
    return Engine(config.load(str(env.config_path), flags, environ={}))


def test_namespaces_isolator_is_listed_and_ok(engine_env) -> None:  # noqa: ANN001
    need_root()
    result = engine_env.run("plugins")
    assert result.returncode == 0, result.stderr
    assert "isolation:namespaces=ok" in result.stdout


def test_namespaces_isolator_checks_the_spec_and_reports_status(engine_env, tmp_path) -> None:  # noqa: ANN001
    need_root()
    from pyengine.drivers.isolation import Isolator
    from pyengine.errors import PyEngineError, UsageError
    from pyengine.runtime.spec import default_spec

    isolator = next(i for i in _engine(engine_env).isolators if i.name == "namespaces")
    assert isinstance(isolator, Isolator)
    spec = default_spec(["true"], str(tmp_path))
    assert set(isolator.prepare("c1", spec)["namespaces"]) == {"pid", "network", "ipc", "uts", "mount", "cgroup"}
    spec["linux"]["namespaces"][1]["path"] = str(tmp_path / "no-such-netns")
    with pytest.raises(UsageError, match="does not exist"):
        isolator.prepare("c1", spec)
    spec = default_spec(["true"], str(tmp_path))
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 2**40}]
    with pytest.raises(PyEngineError, match="nofile"):
        isolator.prepare("c1", spec)
    status = dict(isolator.status())
    assert "pid" in status["Namespaces"].split(",")
    assert status["Seccomp"].startswith("libseccomp 2.")
    isolator.release("c1")
    isolator.release("c1")  # holds nothing: safe to call twice
