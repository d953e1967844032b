"""Healthchecks: ``run --health-*`` and the image's HEALTHCHECK, checks run inside the container
by its monitor (Python for the first second, pyengine-shim after), State.Health in inspect,
``(healthy)`` in ps, ``ps --filter health=``, ``health_status: ...`` events; daemonless and
through the daemon."""

from __future__ import annotations

import json
import os
import time

import pytest
from containers_support import busybox_engine

from conftest import EngineEnv
from pyengine import shim


@pytest.fixture(params=["local", "daemon"])
def engine(request: pytest.FixtureRequest, engine_env: EngineEnv,
           tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    yield from busybox_engine(engine_env, tmp_path_factory, request.param)


def _health(engine: EngineEnv, ref: str) -> dict:
    return json.loads(engine.run("inspect", ref, check=True).stdout)[0]["State"].get("Health") or {}


def _until_status(engine: EngineEnv, ref: str, status: str, deadline: float = 40) -> dict:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        health = _health(engine, ref)
        if health.get("Status") == status:
            return health
        time.sleep(0.1)
    raise AssertionError(f"{ref} did not become {status}: {health}")


def _ps_status(engine: EngineEnv, ref: str) -> str:
    return engine.run("ps", "-a", "--filter", f"name={ref}", "--format", "{{.Status}}", check=True).stdout.strip()


def _ps_health(engine: EngineEnv, value: str) -> list[str]:
    return engine.run("ps", "-a", "--filter", f"health={value}", "--format", "{{.Names}}", check=True).stdout.split()


def test_failing_check_turns_unhealthy_after_retries_and_healthy_again(engine: EngineEnv) -> None:
    since = str(time.time() - 1)
    cid = engine.run("run", "-d", "--name", "hc", "--health-cmd", "test -f /tmp/ok", "--health-interval", "300ms",
                     "--health-retries", "2", "--health-timeout", "5s", "busybox", "sh", "-c",
                     "touch /tmp/ok; exec sleep 120", check=True).stdout.strip()
    assert _health(engine, "hc").get("Status") in ("starting", "healthy")
    healthy = _until_status(engine, "hc", "healthy")
    assert healthy["FailingStreak"] == 0 and healthy["Log"][-1]["ExitCode"] == 0
    assert _ps_status(engine, "hc").endswith("(healthy)")
    assert _ps_health(engine, "healthy") == ["hc"] and _ps_health(engine, "none") == []

    time.sleep(1.5)  # past the hand-over: from now on pyengine-shim starts the checks
    if "PYENGINE_HOST" not in engine.env:
        state = json.loads((engine.data_root / "containers" / cid / "state.json").read_text())
        assert os.readlink(f"/proc/{state['monitor_pid']}/exe") == shim.PROGRAM
    engine.run("exec", "hc", "rm", "/tmp/ok", check=True)
    unhealthy = _until_status(engine, "hc", "unhealthy")
    assert unhealthy["FailingStreak"] >= 2
    log = unhealthy["Log"]
    assert 1 <= len(log) <= 5 and log[-1]["ExitCode"] == 1
    assert all(set(entry) == {"Start", "End", "ExitCode", "Output"} for entry in log)
    assert _ps_status(engine, "hc").endswith("(unhealthy)")
    assert _ps_health(engine, "unhealthy") == ["hc"] and _ps_health(engine, "healthy") == []

    engine.run("exec", "hc", "touch", "/tmp/ok", check=True)
    again = _until_status(engine, "hc", "healthy")
    assert again["FailingStreak"] == 0
    time.sleep(1.2)  # several more checks: the log keeps only the last five
    assert len(_health(engine, "hc")["Log"]) == 5

    events = engine.run("events", "--since", since, "--until", str(time.time()), "--filter", "container=hc",
                        "--filter", "event=health_status", "--format", "{{json .}}", check=True).stdout
    actions = [json.loads(line)["Action"] for line in events.splitlines()]
    assert actions == ["health_status: healthy", "health_status: unhealthy", "health_status: healthy"], events


def test_image_healthcheck_applies_and_no_healthcheck_disables_it(engine: EngineEnv, tmp_path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text('FROM busybox\nHEALTHCHECK --interval=300ms --retries=1 CMD ["test", "-e", '
                                        '"/bin/sh"]\n')
    engine.run("build", "-q", "-t", "busybox:checked", str(context), check=True)
    engine.run("run", "-d", "--name", "imaged", "busybox:checked", "sleep", "60", check=True)
    health = _until_status(engine, "imaged", "healthy")
    assert health["Log"][0]["ExitCode"] == 0
    doc = json.loads(engine.run("inspect", "imaged", check=True).stdout)[0]
    assert doc["Config"]["Healthcheck"]["Test"] == ["CMD", "test", "-e", "/bin/sh"]
    assert doc["Config"]["Healthcheck"]["Interval"] == 300_000_000

    # the user's flags over the image's: a new command, the image's interval kept
    engine.run("run", "-d", "--name", "overridden", "--health-cmd", "exit 3", "busybox:checked", "sleep", "60",
               check=True)
    failing = _until_status(engine, "overridden", "unhealthy")
    assert failing["Log"][-1]["ExitCode"] == 3
    config = json.loads(engine.run("inspect", "overridden", check=True).stdout)[0]["Config"]["Healthcheck"]
    assert config["Test"] == ["CMD-SHELL", "exit 3"] and config["Interval"] == 300_000_000

    engine.run("run", "-d", "--name", "unchecked", "--no-healthcheck", "busybox:checked", "sleep", "60", check=True)
    time.sleep(1)
    assert _health(engine, "unchecked") == {}
    assert "(" not in _ps_status(engine, "unchecked")
    assert _ps_health(engine, "none") == ["unchecked"]


def test_start_period_and_timeout(engine: EngineEnv) -> None:
    engine.run("run", "-d", "--name", "slow", "--health-cmd", "false", "--health-interval", "200ms",
               "--health-retries", "1", "--health-start-period", "60s", "--health-start-interval", "200ms",
               "busybox", "sleep", "60", check=True)
    end = time.monotonic() + 30
    while len(_health(engine, "slow").get("Log") or []) < 3 and time.monotonic() < end:
        time.sleep(0.1)
    health = _health(engine, "slow")
    assert len(health["Log"]) >= 3, health
    assert health["Status"] == "starting" and health["FailingStreak"] == 0, "failures in the start period count"
    assert _ps_status(engine, "slow").endswith("(health: starting)")
    assert _ps_health(engine, "starting") == ["slow"]

    engine.run("run", "-d", "--name", "hung", "--health-cmd", "sleep 30", "--health-interval", "200ms",
               "--health-timeout", "300ms", "--health-retries", "1", "busybox", "sleep", "60", check=True)
    hung = _until_status(engine, "hung", "unhealthy")
    assert hung["Log"][-1]["ExitCode"] == -1
    assert hung["Log"][-1]["Output"] == "Health check exceeded timeout (300ms)"


def test_bad_health_flags_are_one_line_and_create_nothing(engine: EngineEnv) -> None:
    for args, words in ((["--health-interval", "30"], "missing unit"),
                        (["--health-interval", "-1s"], "cannot be negative"),
                        (["--health-timeout", "1us"], "cannot be less than 1ms"),
                        (["--no-healthcheck", "--health-cmd", "true"], "conflicts"),
                        (["--health-retries", "-2"], "cannot be negative")):
        result = engine.run("run", "-d", *args, "busybox", "true")
        assert result.returncode != 0, args
        assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr, result.stderr
        assert words in result.stderr, (args, result.stderr)
    assert engine.run("ps", "-aq").stdout.strip() == ""
