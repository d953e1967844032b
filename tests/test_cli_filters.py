"""Filters and pruning as docker users type them: ``ps --filter``, ``images --filter``,
``--no-trunc``, ``logs --since --until --details``, ``system prune``, ``image prune -a`` and
``network prune``."""

from __future__ import annotations

import json
import time

import pytest
from containers_support import busybox_engine

from conftest import EngineEnv, need_tool


@pytest.fixture
def engine(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    yield from busybox_engine(engine_env, tmp_path_factory)


def names(engine: EngineEnv, *args: str) -> list[str]:
    return sorted(engine.run("ps", "-a", *args, "--format", "{{.Names}}", check=True).stdout.split())


def test_ps_filters(engine: EngineEnv) -> None:
    first = engine.run("create", "--name", "web-1", "-l", "tier=front", "-l", "team=a", "busybox", "true",
                       check=True).stdout.strip()
    engine.run("commit", engine.run("create", "busybox", "true", check=True).stdout.strip(), "other:1", check=True)
    engine.run("rm", "-f", engine.run("ps", "-aq", check=True).stdout.split()[0], check=True)
    engine.run("create", "--name", "web-2", "-l", "tier=back", "-v", "data:/data", "other:1", "true", check=True)
    engine.run("run", "--name", "failed", "busybox", "sh", "-c", "exit 3")
    last = engine.run("run", "--name", "done", "busybox", "true", check=True)
    assert last.returncode == 0
    assert names(engine, "-f", "name=web") == ["web-1", "web-2"]
    assert names(engine, "-f", "name=^/web-1$") == ["web-1"]
    assert names(engine, "-f", f"id={first[:8]}") == ["web-1"]
    assert names(engine, "-f", "label=tier") == ["web-1", "web-2"]
    assert names(engine, "-f", "label=tier=front") == ["web-1"]
    assert names(engine, "-f", "label=tier", "-f", "label=team=a") == ["web-1"]  # keys must all match
    assert names(engine, "-f", "status=created") == ["web-1", "web-2"]
    assert names(engine, "-f", "status=exited") == ["done", "failed"]
    assert names(engine, "-f", "exited=3") == ["failed"]
    assert names(engine, "-f", "exited=0") == ["done"]
    assert names(engine, "-f", "ancestor=other:1") == ["web-2"]
    other_id = engine.run("image", "inspect", "-f", "{{.Id}}", "other:1", check=True).stdout.strip()
    assert names(engine, "-f", f"ancestor={other_id}") == ["web-2"]
    assert names(engine, "-f", "ancestor=busybox:latest", "-f", "name=web") == ["web-1"]
    assert names(engine, "-f", "before=failed") == ["web-1", "web-2"]
    assert names(engine, "-f", "since=web-2") == ["done", "failed"]
    assert names(engine, "-f", "volume=data") == ["web-2"]
    assert names(engine, "-f", "volume=/data") == ["web-2"]
    assert names(engine, "-f", "network=none") == ["done", "failed", "web-1", "web-2"]
    assert names(engine, "-f", "health=none") == ["done", "failed", "web-1", "web-2"]
    # values of one key are alternatives
    assert names(engine, "-f", "name=web-1", "-f", "name=done") == ["done", "web-1"]
    # a status filter lists stopped containers without -a
    assert engine.run("ps", "-f", "status=exited", "--format", "{{.Names}}", check=True).stdout.split() == \
        ["done", "failed"]
    for bad, message in (("nosuch=1", "invalid filter 'nosuch'"),
                         ("status=sleeping", "invalid filter 'status=sleeping'"),
                         ("nofilter", "bad format of filter (expected name=value): nofilter")):
        result = engine.run("ps", "-f", bad)
        assert result.returncode == 2 and result.stderr == f"pyengine: error: {message}\n", result.stderr


def test_ps_and_images_no_trunc(engine: EngineEnv) -> None:
    cid = engine.run("create", "--name", "long", "busybox", "sh", "-c", "echo a long command line here",
                     check=True).stdout.strip()
    short = engine.run("ps", "-a", "--format", "{{.ID}} {{.Command}}", check=True).stdout
    assert short == f'{cid[:12]} "sh -c echo a long c…"\n'
    full = engine.run("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Command}}", check=True).stdout
    assert full == f'{cid} "sh -c echo a long command line here"\n'
    image_id = engine.run("image", "inspect", "-f", "{{.Id}}", "busybox", check=True).stdout.strip()
    assert engine.run("images", "-q", "--no-trunc", check=True).stdout.split() == [image_id]
    assert engine.run("images", "--no-trunc", "--format", "{{.ID}}", check=True).stdout.split() == [image_id]
    assert engine.run("images", "-q", check=True).stdout.split() == [image_id[7:19]]


def test_images_filters(engine: EngineEnv) -> None:
    engine.run("tag", "busybox", "first:1", check=True)
    time.sleep(1.1)  # image creation times have second resolution
    engine.run("commit", "-c", "LABEL role=db", engine.run("create", "busybox", "true", check=True).stdout.strip(),
               "second:1", check=True)
    engine.run("commit", "-c", "LABEL role=web", engine.run("create", "busybox", "true", check=True).stdout.strip(),
               "third:1", check=True)
    engine.run("tag", "third:1", "gone:1", check=True)
    engine.run("commit", "-c", "LABEL role=web", engine.run("create", "busybox", "true", check=True).stdout.strip(),
               "gone:1", check=True)  # gone:1 moves on; the image it named keeps third:1
    dangling = engine.run("commit", engine.run("create", "busybox", "true", check=True).stdout.strip(),
                          check=True).stdout.strip()

    def listed(*args: str) -> list[str]:
        return sorted(engine.run("images", *args, "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout.split())

    assert listed("-f", "label=role") == ["gone:1", "second:1", "third:1"]
    assert listed("-f", "label=role=web") == ["gone:1", "third:1"]
    assert listed("-f", "reference=first") == ["first:1"]
    assert listed("-f", "reference=*:1", "-f", "label=role=db") == ["second:1"]
    assert listed("busybox") == ["busybox:latest"]
    assert listed("-f", "before=second:1") == ["busybox:latest", "first:1"]
    assert "busybox:latest" not in listed("-f", "since=busybox")
    assert engine.run("images", "-q", "--no-trunc", "-f", "dangling=true", check=True).stdout.split() == [dangling]
    assert "<none>:<none>" not in listed("-f", "dangling=false")
    bad = engine.run("images", "-f", "colour=red")
    assert bad.returncode == 2 and bad.stderr == "pyengine: error: invalid filter 'colour'\n"


def test_logs_since_until_and_details(engine: EngineEnv) -> None:
    engine.run("run", "--name", "talk", "busybox", "sh", "-c", "echo early; sleep 2; echo late", check=True)
    stamped = engine.run("logs", "-t", "talk", check=True).stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["early", "late"]
    middle = stamped[0].split(" ", 1)[0]
    after_early = engine.run("logs", "--since", _plus(middle, 1.0), "talk", check=True).stdout
    assert after_early == "late\n"
    assert engine.run("logs", "--until", _plus(middle, 1.0), "talk", check=True).stdout == "early\n"
    # no --log-opt labels=/env= attributes: docker's --details puts just the separating space
    assert engine.run("logs", "--details", "talk", check=True).stdout == " early\n late\n"
    detailed = engine.run("logs", "--details", "-t", "talk", check=True).stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in detailed] == [" early", " late"]
    bad = engine.run("logs", "--since", "yesterday-ish", "talk")
    assert bad.returncode == 2 and bad.stderr.startswith("pyengine: error: ")


def _plus(rfc3339: str, seconds: float) -> str:
    from datetime import datetime, timedelta

    when = datetime.fromisoformat(rfc3339[:26].rstrip("Z") + "+00:00") + timedelta(seconds=seconds)
    return f"{when.timestamp():.3f}"


def test_system_prune(engine: EngineEnv) -> None:
    need_tool("unshare")
    stopped = engine.run("create", "--name", "old", "busybox", "true", check=True).stdout.strip()
    kept = engine.run("run", "-d", "--name", "alive", "busybox", "sleep", "300", check=True).stdout.strip()
    engine.run("volume", "create", "spare", check=True)
    engine.run("volume", "create", "used", check=True)
    user = engine.run("create", "--name", "user", "-v", "used:/v", "busybox", "true", check=True).stdout.strip()
    dangling = engine.run("commit", stopped, check=True).stdout.strip()
    engine.run("commit", user, "unused:1", check=True)  # an image no container uses, with a name
    # a user-defined bridge network, made (and pruned) in a network namespace of the command's own
    _in_netns(engine, "network", "create", "scratch")
    out = _in_netns(engine, "system", "prune", "-f")
    assert out.startswith("Deleted Containers:\n")
    blocks = out.split("\n\n")
    assert sorted(blocks[0].splitlines()[1:]) == sorted([stopped, user])
    assert "Deleted Networks:\nscratch" in out
    assert f"deleted: {dangling}" in out and "Deleted Volumes:" not in out
    assert out.splitlines()[-1].startswith("Total reclaimed space: ")
    assert engine.run("ps", "-aq", "--no-trunc", check=True).stdout.split() == [kept]
    assert "unused:1" in engine.run("images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout
    assert engine.run("volume", "ls", "-q", check=True).stdout.split() == ["spare", "used"]
    # -a takes every image no container uses; --volumes every volume none uses
    out = _in_netns(engine, "system", "prune", "-a", "--volumes", "-f")
    assert "Deleted Volumes:\nspare\nused\n" in out
    assert "untagged: unused:1" in out and "Deleted Containers:" not in out
    assert engine.run("images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout.split() == \
        ["busybox:latest"]  # the running container's image stays
    assert engine.run("volume", "ls", "-q", check=True).stdout == ""
    nothing = _in_netns(engine, "system", "prune", "-f")
    assert nothing == "Total reclaimed space: 0B\n"


def _in_netns(engine: EngineEnv, *args: str) -> str:
    """``pyengine ARGS`` in a network namespace of its own (bridges made there die with it)."""
    import subprocess
    import sys

    result = subprocess.run(["unshare", "-n", sys.executable, "-m", "pyengine", *args], env=engine.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_image_prune_all_and_network_prune(engine: EngineEnv) -> None:
    need_tool("unshare")
    engine.run("create", "--name", "holder", "busybox", "true", check=True)
    engine.run("create", "--name", "source", "busybox", "true", check=True)
    dangling = engine.run("commit", "holder", check=True).stdout.strip()
    spare = engine.run("commit", "source", "spare:1", check=True).stdout.strip()
    out = engine.run("image", "prune", "-f", check=True).stdout
    assert out.startswith("Deleted Images:\n") and f"deleted: {dangling}" in out and "spare:1" not in out
    out = engine.run("image", "prune", "-a", "-f", check=True).stdout
    # busybox is the holder's image: kept; spare:1 is no container's
    assert "untagged: spare:1" in out and f"deleted: {spare}" in out
    assert out.splitlines()[-1].startswith("Total reclaimed space: ")
    listed = json.loads(engine.run("image", "inspect", "busybox", check=True).stdout)[0]["RepoTags"]
    assert listed == ["busybox:latest"]
    _in_netns(engine, "network", "create", "lonely")
    _in_netns(engine, "network", "create", "other")
    assert sorted(_in_netns(engine, "network", "prune", "-f").split()) == ["lonely", "other"]
    assert _in_netns(engine, "network", "prune", "-f") == ""
    assert sorted(engine.run("network", "ls", "--format", "{{.Name}}", check=True).stdout.split()) == \
        ["host", "none"]
