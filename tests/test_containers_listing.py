"""What keeps ``docker ps`` and ``docker run --rm`` through the daemon fast, pinned as behaviour:
a listing reuses the records whose files did not change and never waits for a container's lock;
a wait wakes when the container's monitor exits or this process starts a container, not at its
next poll; the engine's times parse as strptime parses them; a monitor forked while another
thread holds a flock or a connection keeps neither.

Unprivileged: the container store on temp roots, forked processes standing in for monitors.
"""

from __future__ import annotations

import calendar
import fcntl
import os
import resource
import socket
import threading
import time
from pathlib import Path

import pytest
from imagebuild import open_engine

from conftest import EngineEnv
from pyengine.containers import engine as engine_module
from pyengine.containers.inspect import summary, unix_seconds
from pyengine.containers.monitor import _drop_inherited_locks
from pyengine.containers.store import ContainerRecord, ContainerState, ContainerStore, now_iso
from pyengine.procfs import start_time


def make_store(root: Path) -> tuple[ContainerStore, ContainerRecord]:
    store = ContainerStore(root / "data", root / "run")
    record = ContainerRecord(id="c" * 64, name="listed", created=now_iso(), image="busybox",
                             image_id="sha256:" + "i" * 64, config={"Cmd": ["true"], "Labels": {"a": "b"}},
                             host_config={"NetworkMode": "none"}, layer_id="c" * 64)
    with store.lock():
        store.add(record)
    return store, record


def test_shared_load_reuses_the_record_until_its_files_change(tmp_path: Path) -> None:
    store, record = make_store(tmp_path)
    first = store.load(record.id, shared=True)
    assert store.load(record.id, shared=True) is first
    assert store.load(record.id) is not first  # an unshared load is the caller's own to change
    state = store.load(record.id).state
    state.status, state.exit_code, state.finished_at = "exited", 3, now_iso()
    store.save_state(record.id, state)
    changed = store.load(record.id, shared=True)
    assert changed is not first
    assert (changed.state.status, changed.state.exit_code) == ("exited", 3)
    assert first.state.status == "created"  # what a listing already holds is not changed under it
    renamed = store.load(record.id)
    renamed.name = "renamed"
    store.save_config(renamed)
    assert store.load(record.id, shared=True).name == "renamed"
    assert [r.name for r in store.list(shared=True)] == ["renamed"]


def test_summaries_of_shared_records_follow_the_clock_and_the_record(engine_env: EngineEnv) -> None:
    containers = engine_module.Containers(open_engine(engine_env, "vfs"))
    store, record = make_store(engine_env.data_root.parent)
    state = store.load(record.id).state
    state.status, state.started_at, state.finished_at = "exited", now_iso(), now_iso()
    store.save_state(record.id, state)
    shared = store.load(record.id, shared=True)
    now = unix_seconds(shared.state.finished_at)
    first = summary(containers, shared, now=now + 2, shared=True)
    later = summary(containers, shared, now=now + 120, shared=True)
    assert first["Status"] == "Exited (0) 2 seconds ago" and later["Status"] == "Exited (0) 2 minutes ago"
    assert {**first, "Status": ""} == {**later, "Status": ""}
    assert list(first) == list(summary(containers, store.load(record.id), now=now + 2))  # dockerd's key order
    assert first == summary(containers, store.load(record.id), now=now + 2)
    renamed = store.load(record.id)
    renamed.name = "renamed"
    store.save_config(renamed)
    assert summary(containers, store.load(record.id, shared=True), now=now, shared=True)["Names"] == ["/renamed"]


def test_shared_load_of_a_damaged_record_is_damaged_and_not_kept(tmp_path: Path) -> None:
    store, record = make_store(tmp_path)
    store.load(record.id, shared=True)
    (store.dir(record.id) / "state.json").write_text("{not json")
    damaged = store.load(record.id, shared=True)
    assert damaged.state.status == "damaged" and "state.json is damaged" in damaged.state.error
    assert store.load(record.id, shared=True) is not damaged
    (store.dir(record.id) / "config.json").unlink()
    assert "config.json is missing" in store.load(record.id, shared=True).state.error


def test_a_listing_does_not_wait_for_a_container_lock(engine_env: EngineEnv) -> None:
    containers = engine_module.Containers(open_engine(engine_env, "vfs"))
    store, record = make_store(engine_env.data_root.parent)
    assert store.root == containers.store.root
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # as a monitor holds it while it launches the container
        with store.container_lock(record.id):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        listed = containers.list(all_=True, shared=True)
        assert time.monotonic() - started < 5
        assert [r.id for r in listed] == [record.id]
    finally:
        release.set()
        holder.join()


def fork_sleeper(seconds: float) -> int:
    pid = os.fork()
    if pid == 0:
        time.sleep(seconds)
        os._exit(0)
    return pid


def test_a_wait_wakes_when_the_monitor_exits(tmp_path: Path) -> None:
    pid = fork_sleeper(0.2)
    try:
        state = ContainerState(status="running", monitor_pid=pid, monitor_start_time=start_time(pid))
        watch = engine_module._MonitorWatch()
        started = time.monotonic()
        watch.sleep(state, engine_module._start_count, 30)
        assert time.monotonic() - started < 10  # woken by the exit, not by the 30 s timeout
        assert watch.pidfd is None  # done with that monitor: the next look sees what it left
    finally:
        os.waitpid(pid, 0)


def test_a_wait_watches_a_monitor_past_descriptor_1024(monkeypatch: pytest.MonkeyPatch) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2048:
        pytest.skip(f"the hard descriptor limit {hard} is below 2048")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    opened = os.pidfd_open

    def high_pidfd(pid: int) -> int:  # as in a daemon with a thousand connections open
        fd = opened(pid)
        high = os.dup2(fd, 1500)
        os.close(fd)
        return high

    monkeypatch.setattr(os, "pidfd_open", high_pidfd)
    pid = fork_sleeper(0.2)
    try:
        state = ContainerState(status="running", monitor_pid=pid, monitor_start_time=start_time(pid))
        watch = engine_module._MonitorWatch()
        started = time.monotonic()
        watch.sleep(state, engine_module._start_count, 30)
        assert time.monotonic() - started < 10 and watch.pidfd is None
    finally:
        os.waitpid(pid, 0)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_wait_does_not_watch_a_stranger_with_the_monitors_pid(tmp_path: Path) -> None:
    pid = fork_sleeper(30)
    try:
        # the recorded monitor started at another time: the pid now belongs to someone else
        state = ContainerState(status="running", monitor_pid=pid, monitor_start_time=start_time(pid) + 1)
        watch = engine_module._MonitorWatch()
        started = time.monotonic()
        watch.sleep(state, engine_module._start_count, 0.1)
        assert watch.pidfd is None and time.monotonic() - started < 10
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_a_wait_wakes_when_this_process_starts_a_container() -> None:
    watch = engine_module._MonitorWatch()
    seen = engine_module._start_count
    woke: list[float] = []

    def sleeper() -> None:
        started = time.monotonic()
        watch.sleep(ContainerState(status="created"), seen, 30)
        woke.append(time.monotonic() - started)

    thread = threading.Thread(target=sleeper)
    thread.start()
    time.sleep(0.1)
    engine_module._note_start()
    thread.join(20)
    assert woke and woke[0] < 10


@pytest.mark.parametrize("text", [now_iso(), "2026-12-01T20:10:20.123456789Z", "2024-02-29T23:59:59Z",
                                  "2023-02-29T00:00:00Z", "2024-02-29T23:59:60Z", "2026-13-01T00:00:00Z",
                                  "2026-12-01T20:10:2", "0001-01-01T00:00:00Z", "garbage", ""])
def test_store_times_parse_as_strptime_parses_them(text: str) -> None:
    try:
        whole = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) if text else None
    except ValueError:
        whole = None
    if whole is None:
        assert unix_seconds(text) == 0.0
        return
    _, dot, frac = text.rstrip("Z").partition(".")
    assert unix_seconds(text) == whole + (float("0." + frac) if dot and frac.isdigit() else 0.0)


def test_a_fork_drops_the_flocks_and_connections_other_threads_held(tmp_path: Path) -> None:
    lock_path = tmp_path / ".lock"
    held = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)  # as another request's thread holds a container's lock
    ours, peer = socket.socketpair()  # as another client's connection to the daemon
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            _drop_inherited_locks({ready_w, go_r})
            os.write(ready_w, b"r")
            os.read(go_r, 1)  # the parent's thread is done with the lock
            mine = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(mine, fcntl.LOCK_EX | fcntl.LOCK_NB)
                code = 0
            except BlockingIOError:
                code = 1  # the fork's copy of the parent's descriptor still holds it
        finally:
            os._exit(code)
    try:
        assert os.read(ready_r, 1) == b"r"
        ours.close()
        peer.settimeout(10)
        assert peer.recv(1) == b""  # EOF at once: the fork kept no copy of our end
        os.close(held)
        os.write(go_w, b"g")
    finally:
        _, status = os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
        peer.close()
    assert os.waitstatus_to_exitcode(status) == 0
