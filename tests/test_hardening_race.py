"""Parallel `run --rm` beside `ps` and `rm` (issue 13, item 7): no command fails because another
command's container was removed under it.

The race found: `start` read the container's record once more after its monitor reported the
start, and a short `--rm` container's monitor could already have removed it ("no such
container: <id>", exit 1). The same holds for a listing that meets a record removed between
reading the store's directory and loading it. One test makes the losing order certain; the
stress test runs the commands as a busy host does, and asserts no timing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from containers_support import busybox_rootfs_tar, remove_all_containers

from conftest import EngineEnv, need_root

RUNS = 60


@pytest.fixture
def engine(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    need_root()
    tar = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
    engine_env.run("import", str(tar), "busybox:latest", check=True)
    yield engine_env
    remove_all_containers(engine_env.run)


#: `pyengine ARGS` in one process whose monitor wins the race: start() returns only once the
#: `--rm` container's record is gone, as when the command is descheduled on a busy host.
_SLOW_START = textwrap.dedent("""
    import sys, time
    from pyengine.cli import main
    from pyengine.containers import monitor

    spawn = monitor.spawn_monitor

    def spawn_then_lose_the_race(containers, container_id, *args, **kwargs):
        answer = spawn(containers, container_id, *args, **kwargs)
        deadline = time.monotonic() + 60
        while containers.store.dir(container_id).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return answer

    monitor.spawn_monitor = spawn_then_lose_the_race
    main(sys.argv[1:])
""")


@pytest.mark.parametrize("detach", [True, False], ids=["detached", "attached"])
def test_run_rm_succeeds_when_its_monitor_removed_it_first(engine: EngineEnv, detach: bool) -> None:
    args = ["run", *(["-d"] if detach else []), "--rm", "busybox", "sh", "-c", "echo hi; exit 3"]
    result = subprocess.run([sys.executable, "-c", _SLOW_START, *args], env=engine.env, capture_output=True,
                            text=True, timeout=120)
    assert "no such container" not in result.stderr
    if detach:
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.strip()) == 64, result.stdout
    else:
        assert result.returncode == 3, result.stderr
        assert result.stdout == "hi\n"
    assert not engine.run("ps", "-aq").stdout.strip(), "--rm left the container behind"


def test_parallel_run_rm_beside_ps_and_rm_all_succeed(engine: EngineEnv) -> None:
    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "pyengine", *args], env=engine.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    runs = [start("run", *(["-d"] if i % 2 else []), "--rm", "busybox", "true") for i in range(RUNS)]
    side: list[tuple[tuple[str, ...], subprocess.CompletedProcess]] = []

    def side_command(*args: str) -> subprocess.CompletedProcess:
        result = engine.run(*args, timeout=300)
        side.append((args, result))
        return result

    # Unrelated containers made and force-removed, and listings, while the runs come and go.
    rounds = 0
    while any(p.poll() is None for p in runs) or rounds < 3:
        sleeper = side_command("run", "-d", "busybox", "sleep", "30").stdout.strip()
        created = side_command("create", "busybox", "true").stdout.strip()
        side_command("ps", "-a")
        side_command("rm", "-f", sleeper, created)
        side_command("ps", "-a", "-q")
        rounds += 1
        assert rounds < 200, "the parallel runs did not finish"
    failures = []
    for process in runs:
        out, err = process.communicate(timeout=300)
        if process.returncode != 0:
            failures.append(f"run exited {process.returncode}: {err.strip()}")
    for args, result in side:
        if result.returncode != 0:
            failures.append(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    assert not failures, "\n".join(failures)
    # The detached runs return before their monitors finish: give those a bounded while.
    deadline = time.monotonic() + 120
    while engine.run("ps", "-aq").stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not engine.run("ps", "-aq").stdout.strip(), "--rm left containers behind"
    leftovers = [p.name for p in (engine.data_root / "containers").iterdir() if p.name != ".lock"]
    assert not leftovers, f"the container store kept entries of removed containers: {leftovers}"
