"""A damaged record is reported and can be removed, never a traceback (issue 13, item 6).

Each test damages one file in its own data root as a crash or a bad disk would — a truncated
container config.json, a state.json of garbage, an image config blob overwritten, an image
record that is not JSON — and then drives the CLI as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar

from conftest import EngineEnv, need_root

pytestmark = [pytest.mark.root]

DRIVERS = ["overlay", "vfs"]


@pytest.fixture(params=DRIVERS)
def engine(request: pytest.FixtureRequest, engine_env: EngineEnv,
           tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    """An engine with busybox:latest on each storage driver; removes what a test left."""
    need_root()
    engine_env.env["PYENGINE_STORAGE_DRIVER"] = request.param
    tar = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
    engine_env.run("import", str(tar), "busybox:latest", check=True)
    yield engine_env
    ids = engine_env.run("ps", "-aq", "--no-trunc").stdout.split()
    if ids:
        engine_env.run("rm", "-f", *ids)


def assert_one_line(result: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyengine: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def layer_path(env: EngineEnv, layer_id: str) -> Path:
    driver = env.env["PYENGINE_STORAGE_DRIVER"]
    return env.data_root / "storage" / driver / ("dir" if driver == "vfs" else "") / layer_id


def cgroup_dirs(pid: int) -> list[Path]:
    """The v1 cgroup directories of ``pid`` below a ``pyengine`` level (the container's own)."""
    out = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "/pyengine/" in path and controllers:
            out.append(Path("/sys/fs/cgroup") / controllers.split(",")[0].replace("name=", "") / path.lstrip("/"))
    return [p for p in out if p.is_dir()]


def mounts_under(prefix: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(prefix) + "/")]


def test_truncated_container_config_is_listed_damaged_and_rm_f_releases_it(engine: EngineEnv) -> None:
    env = engine
    cid = env.run("run", "-d", "--name", "victim", "busybox", "sleep", "300", check=True).stdout.strip()
    pid = json.loads(env.run("inspect", cid, check=True).stdout)[0]["State"]["Pid"]
    cgroups = cgroup_dirs(pid)
    assert cgroups, "the container has no cgroup to release"
    assert layer_path(env, cid).is_dir()
    config = env.data_root / "containers" / cid / "config.json"
    config.write_bytes(config.read_bytes()[:40])

    ps = env.run("ps", "-a")
    assert ps.returncode == 0 and "Traceback" not in ps.stderr, ps.stderr
    line = next((row for row in ps.stdout.splitlines() if row.startswith(cid[:12])), None)
    assert line is not None, f"the damaged container vanished from ps -a:\n{ps.stdout}"
    assert "Damaged" in line, line
    inspect = env.run("inspect", cid[:12])
    assert inspect.returncode == 0, inspect.stderr
    state = json.loads(inspect.stdout)[0]["State"]
    assert state["Status"] == "damaged"
    assert "config.json is damaged" in state["Error"], state["Error"]

    assert_one_line(env.run("start", cid[:12]), 1, "damaged")
    check = env.run("system", "check")
    assert check.returncode == 1 and f"container {cid} is damaged" in check.stdout, check.stdout + check.stderr
    assert_one_line(env.run("rm", cid[:12]), 1, "force")  # its processes may still run

    removed = env.run("rm", "-f", cid[:12])
    assert removed.returncode == 0, removed.stderr
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the damaged container's process still runs"
    assert mounts_under(env.data_root) == [], "its rootfs stayed mounted"
    assert [p for p in cgroups if p.exists()] == [], "its cgroups stayed"
    assert not layer_path(env, cid).exists(), "its layer leaked"
    assert not (env.data_root / "containers" / cid).exists()
    assert env.run("ps", "-aq", check=True).stdout.strip() == ""
    assert env.run("system", "check", check=True).stdout.strip() == "ok"


def test_garbage_state_is_damaged_keeps_its_name_and_repair_removes_it(engine: EngineEnv) -> None:
    env = engine
    cid = env.run("create", "--name", "broken", "busybox", "true", check=True).stdout.strip()
    (env.data_root / "containers" / cid / "state.json").write_bytes(b"\x00garbage{")
    ps = env.run("ps", "-a")
    assert ps.returncode == 0 and "Traceback" not in ps.stderr, ps.stderr
    assert any("broken" in row and "Damaged" in row for row in ps.stdout.splitlines()), ps.stdout
    state = json.loads(env.run("inspect", "broken", check=True).stdout)[0]["State"]
    assert state["Status"] == "damaged" and "state.json is damaged" in state["Error"], state
    check = env.run("system", "check")
    assert check.returncode == 1 and cid in check.stdout, check.stdout
    repair = env.run("system", "check", "--repair")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert env.run("ps", "-aq", check=True).stdout.strip() == ""
    assert not layer_path(env, cid).exists(), "the repaired container's layer leaked"
    assert env.run("system", "check", check=True).stdout.strip() == "ok"


def _config_blob(env: EngineEnv, ref: str) -> Path:
    image_id = json.loads(env.run("image", "inspect", ref, check=True).stdout)[0]["Id"]
    return env.data_root / "blobs" / "sha256" / image_id.removeprefix("sha256:")


def test_corrupted_image_config_blob_is_reported_never_a_traceback(engine: EngineEnv, tmp_path_factory) -> None:  # noqa: ANN001
    env = engine
    env.run("import", str(busybox_rootfs_tar(tmp_path_factory.getbasetemp())), "other:1", check=True)
    blob = _config_blob(env, "busybox")
    blob.write_bytes(b"\x00\xffnot json at all")

    images = env.run("images")
    assert images.returncode == 0 and "Traceback" not in images.stderr, images.stderr
    assert "other" in images.stdout and "busybox" not in images.stdout, images.stdout
    warnings = [line for line in images.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "damaged" in warnings[0], images.stderr
    assert_one_line(env.run("run", "--rm", "busybox", "true"), 125, "damaged", "system check --repair")
    assert_one_line(env.run("image", "inspect", "busybox"), 125, "damaged")

    check = env.run("system", "check")
    assert check.returncode == 1 and blob.name in check.stdout, check.stdout
    repair = env.run("system", "check", "--repair")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert env.run("system", "check", check=True).stdout.strip() == "ok"
    assert "busybox" not in env.run("images", check=True).stdout
    assert env.run("run", "--rm", "other:1", "/bin/echo", "ok", check=True).stdout.strip() == "ok"


def test_damaged_image_can_be_removed_with_rmi(engine: EngineEnv) -> None:
    env = engine
    blob = _config_blob(env, "busybox")
    blob.write_bytes(b"{")
    removed = env.run("rmi", "busybox")
    assert removed.returncode == 0, removed.stderr
    assert not blob.exists()
    assert env.run("images", "-q", check=True).stdout.strip() == ""
    assert env.run("system", "check", check=True).stdout.strip() == "ok"


def test_image_record_that_is_not_json_is_skipped_reported_and_repaired(engine: EngineEnv) -> None:
    env = engine
    records = sorted((env.data_root / "images" / "records").glob("*.json"))
    assert len(records) == 1
    records[0].write_text('{"id": "sha256:')
    images = env.run("images")
    assert images.returncode == 0 and "Traceback" not in images.stderr, images.stderr
    assert "busybox" not in images.stdout
    assert "damaged" in images.stderr and str(records[0]) in images.stderr, images.stderr
    run = env.run("run", "--rm", "busybox", "true")
    # A warning that names the damaged record, then the one-line error.
    assert run.returncode == 125 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1] == "pyengine: error: No such image: busybox", run.stderr
    check = env.run("system", "check")
    assert check.returncode == 1 and str(records[0]) in check.stdout, check.stdout
    env.run("system", "check", "--repair", check=True)
    assert env.run("system", "check", check=True).stdout.strip() == "ok"
    assert not records[0].exists()
    # Nothing of the image is left in the driver either: its layer went with its record.
    assert os.listdir(layer_path(env, "")) in ([], ["l"]), os.listdir(layer_path(env, ""))


def test_layer_of_a_lost_container_record_is_found_and_repaired(engine: EngineEnv) -> None:
    env = engine
    cid = env.run("create", "busybox", "true", check=True).stdout.strip()
    # As a crash between making the layer and writing the record would leave it.
    shutil.rmtree(env.data_root / "containers" / cid)
    assert layer_path(env, cid).is_dir()
    check = env.run("system", "check")
    assert check.returncode == 1 and f"layer {cid} in the storage driver belongs to no image" in check.stdout, \
        check.stdout + check.stderr
    env.run("system", "check", "--repair", check=True)
    assert not layer_path(env, cid).exists()
    assert env.run("system", "check", check=True).stdout.strip() == "ok"
    assert env.run("run", "--rm", "busybox", "echo", "ok", check=True).stdout.strip() == "ok"
