"""The event journal: container, image, network and volume events in Docker's shape, read
daemonless with ``pyengine events`` and through the daemon with ``docker events`` and docker-py;
the journal's filters, time syntax, rotation and follow."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar, remove_all_containers
from daemon_support import start_daemon

from conftest import EngineEnv, need_root, need_tool
from pyengine.errors import UsageError
from pyengine.events import EventFilter, EventJournal, format_time, make_event, parse_time


# -- the journal, in-process -------------------------------------------------------------------
def test_event_has_dockers_shape_and_legacy_fields() -> None:
    event = make_event("container", "start", "c" * 64, {"name": "web", "image": "busybox"}, when_ns=1_700_000_000_5)
    assert event == {"status": "start", "id": "c" * 64, "from": "busybox", "Type": "container", "Action": "start",
                     "Actor": {"ID": "c" * 64, "Attributes": {"name": "web", "image": "busybox"}},
                     "scope": "local", "time": 17, "timeNano": 1_700_000_000_5}
    network = make_event("network", "create", "n1", {"name": "net", "type": "bridge"})
    assert "status" not in network and "id" not in network
    image = make_event("image", "tag", "sha256:1", {"name": "busybox:2"})
    assert (image["status"], image["id"]) == ("tag", "sha256:1") and "from" not in image


def test_journal_is_root_only_and_rotates_keeping_one_old_file(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "run", max_bytes=2000)
    for n in range(40):
        journal.record("volume", "create", f"v{n}", {"driver": "local"})
    assert stat.S_IMODE(os.stat(journal.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(journal.path).st_mode) == 0o600
    assert journal.old_path.exists()
    assert journal.path.stat().st_size <= 2000 and journal.old_path.stat().st_size <= 2000
    ids = [e["Actor"]["ID"] for e in journal.read()]
    assert ids == [f"v{n}" for n in range(40 - len(ids), 40)]  # the newest, in order, none torn
    assert 10 < len(ids) < 40


def test_follower_sees_only_new_events_across_a_rotation(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "run", max_bytes=1500)
    journal.record("volume", "create", "before")
    follower = journal.follower()
    assert follower.poll() == []
    seen = []
    for n in range(30):  # several rotations between polls
        journal.record("volume", "create", f"v{n}")
        if n % 7 == 0:
            seen += follower.poll()
    seen += follower.poll()
    follower.close()
    assert [e["Actor"]["ID"] for e in seen] == [f"v{n}" for n in range(30)]


def test_concurrent_writers_never_tear_or_lose_a_line(tmp_path: Path) -> None:
    run_root = tmp_path / "run"
    code = ("import sys; from pathlib import Path; from pyengine.events import EventJournal;"
            "j = EventJournal(Path(sys.argv[1]), max_bytes=1 << 30);"
            "[j.record('container', 'exec_start: sh', f'{sys.argv[2]}-{n}', {'pad': 'x' * 3000}) for n in range(200)]")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(run_root), str(w)]) for w in range(4)]
    assert [w.wait() for w in writers] == [0] * 4
    events = EventJournal(run_root).read()
    assert len(events) == 800
    for w in range(4):
        assert [e["Actor"]["ID"] for e in events if e["Actor"]["ID"].startswith(f"{w}-")] == \
            [f"{w}-{n}" for n in range(200)]


def test_filters_match_as_dockerds() -> None:
    start = make_event("container", "start", "abc123" + "0" * 58,
                       {"name": "web", "image": "busybox:latest", "tier": "front"})
    exec_start = make_event("container", "exec_start: sh -c true", "abc123" + "0" * 58, {"name": "web"})
    connect = make_event("network", "connect", "n" * 64, {"name": "net1", "type": "bridge",
                                                           "container": "abc123" + "0" * 58})
    tag = make_event("image", "tag", "sha256:feed", {"name": "busybox:latest"})

    def matching(**filters: list[str]) -> list[dict]:
        f = EventFilter(filters)
        return [e for e in (start, exec_start, connect, tag) if f.match(e)]

    assert matching(type=["container"]) == [start, exec_start]
    assert matching(type=["container", "image"]) == [start, exec_start, tag]
    assert matching(event=["exec_start"]) == [exec_start]
    assert matching(container=["web"]) == [start, exec_start]
    assert matching(container=["abc1"]) == [start, exec_start, connect]  # an ID prefix
    assert matching(container=["we"]) == [start, exec_start]  # names by prefix too, as moby FuzzyMatch
    assert matching(container=["db"]) == []
    assert matching(image=["busybox"]) == [start, tag]
    assert matching(label=["tier=front"]) == [start]
    assert matching(label=["tier"]) == [start]
    assert matching(label=["tier=back"]) == []
    assert matching(network=["net1"]) == [connect]
    assert matching(type=["container"], event=["start"]) == [start]
    with pytest.raises(UsageError, match="invalid filter 'colour'"):
        EventFilter({"colour": ["red"]})
    with pytest.raises(UsageError, match="expected name=value"):
        EventFilter.from_pairs(["type"])


def test_time_syntax_as_dockers() -> None:
    now = 1_700_000_000 * 10**9
    assert parse_time("1700000000", now) == now
    assert parse_time("1700000000.25", now) == now + 250_000_000
    assert parse_time("1700000000.000000001", now) == now + 1
    assert parse_time("10m", now) == now - 600 * 10**9
    assert parse_time("1h30m", now) == now - 5400 * 10**9
    assert parse_time("1.5s", now) == now - 1_500_000_000
    assert parse_time("2023-11-14T22:13:20Z", now) == now
    assert parse_time("2023-11-14T23:13:20+01:00", now) == now
    assert format_time(now + 5) .endswith(".000000005" + format_time(now)[19:])
    for bad in ("soon", "10x", "2023-13-40", ""):
        with pytest.raises(UsageError):
            parse_time(bad, now)


# -- end to end ----------------------------------------------------------------------------------
@pytest.fixture
def engine(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    need_root()
    tar = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
    engine_env.run("import", str(tar), "busybox:latest", check=True)
    yield engine_env
    remove_all_containers(engine_env.run)


def _lines(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_run_rm_events_in_order_daemonless_and_through_the_daemon(engine: EngineEnv) -> None:
    since = f"{time.time():.9f}"
    engine.run("run", "--rm", "--name", "ev1", "-l", "tier=front", "busybox", "true", check=True)
    engine.run("run", "--rm", "--name", "ev2", "busybox", "sh", "-c", "exit 3")
    engine.run("volume", "create", "evvol", check=True)
    engine.run("tag", "busybox", "busybox:ev", check=True)
    until = f"{time.time():.9f}"

    result = engine.run("events", "--since", since, "--until", until, "--filter", "container=ev1",
                        "--format", "{{json .}}", check=True)
    events = _lines(result)
    assert [e["Action"] for e in events] == ["create", "start", "die", "destroy"]
    assert {e["Actor"]["Attributes"]["name"] for e in events} == {"ev1"}
    assert events[2]["Actor"]["Attributes"]["exitCode"] == "0"
    assert events[0]["Actor"]["Attributes"]["tier"] == "front"  # labels, as dockerd's
    assert events[0]["from"] == "busybox" and events[0]["status"] == "create"
    times = [e["timeNano"] for e in events]
    assert times == sorted(times)

    plain = engine.run("events", "--since", since, "--until", until, "-f", "container=ev2", "-f", "event=die",
                       check=True).stdout.splitlines()
    assert len(plain) == 1
    assert " container die " in plain[0] and "exitCode=3" in plain[0] and "name=ev2" in plain[0]
    by_type = engine.run("system", "events", "--since", since, "--until", until, "-f", "type=volume",
                         "-f", "type=image", "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
                         check=True).stdout.splitlines()
    # a volume event has no name attribute: docker's template prints a missing map key as <no value>
    assert by_type == ["volume create <no value>", "image tag busybox:ev"]

    daemon = start_daemon(engine)
    try:
        cli = daemon.docker("events", "--since", since, "--until", until, "--filter", "container=ev1",
                            "--format", "{{json .}}", check=True)
        assert [(e["Type"], e["Action"]) for e in _lines(cli)] == \
            [("container", "create"), ("container", "start"), ("container", "die"), ("container", "destroy")]
        cli = daemon.docker("events", "--since", since, "--until", until, "--filter", "type=image", check=True)
        assert " image tag sha256:" in cli.stdout and "(name=busybox:ev)" in cli.stdout
        client = daemon.client()
        events = list(client.events(decode=True, since=float(since), until=float(until),
                                    filters={"container": "ev2"}))
        assert [e["Action"] for e in events] == ["create", "start", "die", "destroy"]
        assert events[2]["Actor"]["Attributes"]["exitCode"] == "3"
        assert all(e["id"] == events[0]["Actor"]["ID"] for e in events)
        client.close()
        bad = daemon.docker("events", "--filter", "colour=red", "--until", "0s")
        assert bad.returncode != 0 and "invalid filter 'colour'" in bad.stderr
    finally:
        assert daemon.stop() == 0


def test_following_streams_new_events_until_the_until_time(engine: EngineEnv) -> None:
    daemon = start_daemon(engine)
    try:
        until = time.time() + 6
        follow = subprocess.Popen(["docker", "events", "--until", f"{until:.3f}", "--format",
                                   "{{.Actor.Attributes.name}} {{.Action}}", "--filter", "type=container"],
                                  env={**os.environ, "DOCKER_HOST": daemon.url,
                                       "DOCKER_CONFIG": str(daemon.docker_config)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        local = subprocess.Popen([sys.executable, "-m", "pyengine", "events", "--until", f"{until:.3f}",
                                  "-f", "event=die"], env=engine.env, stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        started = time.monotonic()
        engine.run("run", "--rm", "--name", "live", "busybox", "true", check=True)
        out, err = follow.communicate(timeout=30)
        elapsed = time.monotonic() - started
        local_out, _ = local.communicate(timeout=30)
        assert out.splitlines() == ["live create", "live start", "live die", "live destroy"], err
        assert " container die " in local_out and "name=live" in local_out
        assert elapsed < 15  # ended at --until, not later
    finally:
        assert daemon.stop() == 0


def test_volume_events(engine: EngineEnv) -> None:
    since = f"{time.time():.9f}"
    engine.run("volume", "create", "v1", check=True)
    engine.run("volume", "create", "v2", check=True)
    engine.run("volume", "rm", "v1", check=True)
    until = f"{time.time():.9f}"
    volume = _lines(engine.run("events", "--since", since, "--until", until, "-f", "volume=v1",
                               "--format", "json", check=True))
    assert [(e["Type"], e["Action"], e["Actor"]["ID"]) for e in volume] == \
        [("volume", "create", "v1"), ("volume", "destroy", "v1")]
    assert volume[0]["Actor"]["Attributes"] == {"driver": "local"}


def test_network_events_in_a_test_host(engine: EngineEnv) -> None:
    need_tool("ip", "nft", "nsenter")
    from test_network_containers import NetTestHost

    host = NetTestHost(engine)
    try:
        since = f"{time.time():.9f}"
        host.cli("network", "create", "evnet", check=True)
        run = host.cli("run", "--rm", "--name", "netev", "--network", "evnet", "busybox", "true", check=True)
        host.cli("network", "rm", "evnet", check=True)
        until = f"{time.time():.9f}"
        events = _lines(host.cli("events", "--since", since, "--until", until, "-f", "network=evnet",
                                 "--format", "json", check=True))
        assert run.returncode == 0
        assert [e["Action"] for e in events] == ["create", "connect", "disconnect", "destroy"]
        assert {e["Actor"]["Attributes"]["name"] for e in events} == {"evnet"}
        assert events[1]["Actor"]["Attributes"]["type"] == "bridge"
        created = _lines(host.cli("events", "--since", since, "--until", until, "-f", "container=netev",
                                  "-f", "event=create", "--format", "json", check=True))
        container_id = created[0]["Actor"]["ID"]
        # The network events of one container, by its ID (a prefix will do, as for every ID)
        container_events = _lines(host.cli("events", "--since", since, "--until", until, "-f",
                                           f"container={container_id[:12]}", "-f", "type=network",
                                           "--format", "json", check=True))
        assert [e["Action"] for e in container_events] == ["connect", "disconnect"]
        assert container_events[0]["Actor"]["Attributes"]["container"] == container_id
    finally:
        host.cli("network", "rm", "evnet")
        host.close()


def test_events_with_a_stopping_daemon_end(engine: EngineEnv) -> None:
    daemon = start_daemon(engine)
    client = daemon.client()
    received = []

    def consume() -> None:
        for event in client.events(decode=True):
            received.append(event)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    time.sleep(0.5)
    engine.run("volume", "create", "stream-me", check=True)
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        time.sleep(0.1)
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 5  # the endless stream ended at SIGTERM
    reader.join(5)
    assert [e["Actor"]["ID"] for e in received] == ["stream-me"]
