"""Container names as a user meets them: one name, one container, whatever happened before.

``create`` refuses a name in use with Docker's message; ``rm`` and ``rename`` free a name;
a data root made before the name index gets one; a create, remove or rename killed at any
point neither blocks a name nor lets two containers share one; ``system check`` reports an
index that its records contradict and ``--repair`` mends it; and the name check of a create
reads no other container's record, however many there are.

The store-level tests run unprivileged on temp roots (forked children stand in for a killed
command); the CLI tests need root and a busybox image.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar, remove_all_containers

from conftest import EngineEnv, need_root
from pyengine.containers import store as store_module
from pyengine.containers.store import NAME_INDEX, ContainerRecord, ContainerStore, now_iso
from pyengine.errors import Conflict


def conflict_message(name: str, holder: str) -> str:
    return (f"Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". You have "
            "to remove (or rename) that container to be able to reuse that name.")


def new_record(store: ContainerStore, name: str) -> ContainerRecord:
    container_id = store.new_id()
    return ContainerRecord(id=container_id, name=name, created=now_iso(), image="busybox",
                           image_id="sha256:" + "i" * 64, config={"Cmd": ["true"]},
                           host_config={"NetworkMode": "none"}, layer_id=container_id)


def add(store: ContainerStore, name: str) -> ContainerRecord:
    record = new_record(store, name)
    with store.lock():
        store.add(record)
    return record


def rename(store: ContainerStore, container_id: str, new_name: str) -> None:
    with store.lock():
        store.rename(store.load(container_id), new_name)


def remove(store: ContainerStore, container_id: str) -> None:
    with store.lock():
        store.remove_record(container_id)


@pytest.fixture
def store(tmp_path: Path) -> ContainerStore:
    return ContainerStore(tmp_path / "data", tmp_path / "run")


def killed_midway(monkeypatch: pytest.MonkeyPatch, target: object, attribute: str, when: Callable[..., bool],
                  action: Callable[[], None]) -> None:
    """Run ``action`` in a forked child that dies by SIGKILL at the first call of
    ``target.attribute`` for which ``when(*args)`` holds, before the call does anything."""
    real = getattr(target, attribute)

    def dying(*args: object, **kwargs: object) -> object:
        if when(*args):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    pid = os.fork()
    if pid == 0:
        try:
            monkeypatch.setattr(target, attribute, dying)
            action()
        finally:
            os._exit(3)  # not killed: the test fails below
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


# -- one name, one container --------------------------------------------------------------

def test_second_create_with_the_name_is_refused_with_dockers_message(store: ContainerStore) -> None:
    first = add(store, "web")
    with pytest.raises(Conflict) as refused:
        add(store, "web")
    assert str(refused.value) == conflict_message("web", first.id)
    assert [r.id for r in store.list()] == [first.id]


def test_name_is_free_again_after_remove(store: ContainerStore) -> None:
    first = add(store, "web")
    remove(store, first.id)
    second = add(store, "web")
    assert store.resolve("web") == second.id


def test_rename_frees_the_old_name_and_takes_the_new(store: ContainerStore) -> None:
    first = add(store, "web")
    rename(store, first.id, "api")
    assert store.load(first.id).name == "api"
    second = add(store, "web")
    with pytest.raises(Conflict) as refused:
        add(store, "api")
    assert str(refused.value) == conflict_message("api", first.id)
    with pytest.raises(Conflict, match="the container name 'web' is already in use"):
        rename(store, first.id, "web")
    rename(store, first.id, "api")  # to its own name: nothing changes
    assert {r.name: r.id for r in store.list()} == {"api": first.id, "web": second.id}


def test_removing_a_container_whose_record_lost_its_name_frees_the_name(store: ContainerStore) -> None:
    first = add(store, "web")
    config = store.dir(first.id) / "config.json"
    config.write_bytes(config.read_bytes()[:40])
    remove(store, first.id)
    add(store, "web")
    assert store.check() == ([], [])


def test_a_name_too_long_for_a_file_name_works_as_any_other(store: ContainerStore) -> None:
    name = "n" * 300
    first = add(store, name)
    with pytest.raises(Conflict) as refused:
        add(store, name)
    assert str(refused.value) == conflict_message(name, first.id)
    assert store.resolve(name) == first.id
    remove(store, first.id)
    add(store, name)


def test_creates_racing_for_one_name_leave_one_container(store: ContainerStore) -> None:
    add(store, "other")  # the index exists before the race
    children = []
    for _ in range(6):
        pid = os.fork()
        if pid == 0:
            code = 2
            try:
                add(store, "contested")
                code = 0
            except Conflict:
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    codes = sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children)
    assert codes == [0, 1, 1, 1, 1, 1]
    assert sorted(r.name for r in store.list()) == ["contested", "other"]


# -- data roots made before the index ------------------------------------------------------

def test_data_root_without_an_index_gets_one_that_knows_every_name(store: ContainerStore) -> None:
    old = [add(store, f"old{i}") for i in range(5)]
    index = store.root / NAME_INDEX
    for entry in index.iterdir():  # as an engine before the index left the data root
        entry.unlink()
    index.rmdir()
    assert store.resolve("old3") == old[3].id  # found by a scan meanwhile
    with pytest.raises(Conflict) as refused:
        add(store, "old2")
    assert str(refused.value) == conflict_message("old2", old[2].id)
    assert sorted(p.name for p in index.iterdir()) == [f"old{i}" for i in range(5)]
    assert store.check() == ([], [])


def test_the_index_goes_with_the_last_container(store: ContainerStore) -> None:
    records = [add(store, "a"), add(store, "b")]
    for record in records:
        remove(store, record.id)
    assert [p.name for p in store.root.iterdir() if p.name != ".lock"] == []


# -- commands killed midway ----------------------------------------------------------------

def test_create_killed_before_its_record_lands_leaves_the_name_free(store: ContainerStore,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    add(store, "other")
    killed_midway(monkeypatch, os, "rename", lambda src, dst: Path(src).name.startswith(".tmp-"),
                  lambda: add(store, "web"))
    assert (store.root / NAME_INDEX / "web").exists()  # the entry the killed create wrote
    problems, _ = store.check()
    assert any("stale name index entry" in p and p.endswith("rename)") for p in problems), problems
    second = add(store, "web")
    assert store.resolve("web") == second.id
    assert sorted(r.name for r in store.list()) == ["other", "web"]


def test_remove_killed_after_the_record_went_leaves_the_name_free(store: ContainerStore,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    first = add(store, "web")
    killed_midway(monkeypatch, store_module.shutil, "rmtree", lambda path, *a: ".rm-" in str(path),
                  lambda: remove(store, first.id))
    assert store.list() == []
    second = add(store, "web")
    assert store.resolve("web") == second.id


@pytest.mark.parametrize("point", ["before the record", "after the record"])
def test_rename_killed_midway_leaves_one_name_to_the_container(store: ContainerStore, point: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    first = add(store, "web")
    if point == "before the record":
        killed_midway(monkeypatch, ContainerStore, "save_config", lambda *a: True,
                      lambda: rename(store, first.id, "api"))
        held, free = "web", "api"
    else:
        killed_midway(monkeypatch, ContainerStore, "_drop_name", lambda self, name, cid: name == "web",
                      lambda: rename(store, first.id, "api"))
        held, free = "api", "web"
    assert store.load(first.id).name == held
    with pytest.raises(Conflict) as refused:
        add(store, held)
    assert str(refused.value) == conflict_message(held, first.id)
    other = add(store, free)
    assert store.resolve(free) == other.id
    assert store.resolve(held) == first.id


def test_entry_cut_short_still_names_its_container(store: ContainerStore) -> None:
    first = add(store, "web")
    (store.root / NAME_INDEX / "web").write_bytes(b"")  # a write lost with the machine
    with pytest.raises(Conflict) as refused:
        add(store, "web")
    assert str(refused.value) == conflict_message("web", first.id)
    assert (store.root / NAME_INDEX / "web").read_text() == first.id  # mended by the lookup


# -- system check --------------------------------------------------------------------------

def test_system_check_reports_a_wrong_index_and_repair_mends_it(store: ContainerStore) -> None:
    first, second = add(store, "web"), add(store, "api")
    index = store.root / NAME_INDEX
    (index / "web").unlink()
    (index / "api").write_text(first.id)
    (index / "ghost").write_text("f" * 64)
    problems, damaged = store.check()
    assert damaged == []
    assert f"stale name index entry {index / 'api'} (an interrupted create, remove or rename)" in problems
    assert f"stale name index entry {index / 'ghost'} (an interrupted create, remove or rename)" in problems
    assert f"the name index has no entry for 'api' of container {second.id}" in problems
    assert f"the name index has no entry for 'web' of container {first.id}" in problems
    store.check(repair=True)
    assert store.check() == ([], [])
    assert {p.name: p.read_text() for p in index.iterdir()} == {"web": first.id, "api": second.id}


# -- many containers -------------------------------------------------------------------------

def test_name_checks_read_no_other_container_with_300_present(store: ContainerStore,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    present = [add(store, f"c{i}") for i in range(300)]
    reads: list[str] = []
    real = store_module._read_if_there

    def counted(path: str) -> object:
        if path.endswith("config.json"):
            reads.append(path)
        return real(path)

    monkeypatch.setattr(store_module, "_read_if_there", counted)
    with store.lock():
        store.add(new_record(store, store.generate_name()))
    assert reads == []
    with pytest.raises(Conflict):
        add(store, "c150")
    assert reads == [str(store.dir(present[150].id) / "config.json")]  # the holder's, to confirm it
    reads.clear()
    assert store.resolve("c42") == present[42].id
    assert all(present[42].id in path for path in reads) and reads, reads


# -- as a user runs it -----------------------------------------------------------------------

@pytest.fixture
def engine(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    need_root()
    engine_env.env["PYENGINE_STORAGE_DRIVER"] = "overlay"
    engine_env.run("import", str(busybox_rootfs_tar(tmp_path_factory.getbasetemp())), "busybox:latest", check=True)
    yield engine_env
    remove_all_containers(engine_env.run)


def test_cli_create_rm_and_rename_keep_one_container_per_name(engine: EngineEnv) -> None:
    first = engine.run("create", "--name", "web", "busybox", "true", check=True).stdout.strip()
    again = engine.run("create", "--name", "web", "busybox", "true")
    assert again.returncode != 0, again.stderr
    assert again.stderr.strip() == f"pyengine: error: {conflict_message('web', first)}"
    engine.run("rename", "web", "api", check=True)
    second = engine.run("create", "--name", "web", "busybox", "true", check=True).stdout.strip()
    taken = engine.run("rename", "api", "web")
    assert taken.returncode != 0 and "the container name 'web' is already in use" in taken.stderr
    engine.run("rm", "api", check=True)
    third = engine.run("run", "--name", "api", "--rm", "busybox", "true")
    assert third.returncode == 0, third.stderr
    names = engine.run("ps", "-a", "--format", "{{.Names}} {{.ID}}", "--no-trunc", check=True).stdout.split("\n")
    assert [line for line in names if line] == [f"web {second}"]
    assert engine.run("system", "check", check=True).stdout.strip() == "ok"
