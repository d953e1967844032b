"""SIGKILL during `pyengine load`, again and again at random moments: no tag ever points to a
missing blob or layer, and `system check` passes (or `--repair` makes it pass)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import imagebuild as ib
import pytest

from conftest import need_root, need_tool

pytestmark = [pytest.mark.root, pytest.mark.tools]

ROUNDS = 10


def tags_are_whole(env, driver: str) -> None:  # noqa: ANN001
    """Every tag leads to an image record whose blobs and driver layers all exist."""
    tags_path = env.data_root / "images" / "tags.json"
    tags = json.loads(tags_path.read_text()) if tags_path.exists() else {}
    records = [json.loads(p.read_text()) for p in (env.data_root / "images" / "records").glob("*.json")]
    engine = ib.open_engine(env, driver)
    try:
        for ref, digest in tags.items():
            owners = [r for r in records if digest in r["manifests"] or digest in r.get("indexes", {})]
            assert owners, f"tag {ref} points to {digest}, which no image record holds"
            record = owners[0]
            for blob in {record["id"], *record["manifests"], *record["layer_blobs"]}:
                assert (env.data_root / "blobs/sha256" / blob[7:]).is_file(), f"tag {ref}: no blob {blob}"
            for chain in record["layers"]:
                assert (env.data_root / "images/layers" / f"{chain[7:]}.json").is_file(), f"{ref}: no record {chain}"
                assert engine.storage.exists(chain[7:]), f"tag {ref}: layer {chain} missing in the driver"
    finally:
        engine.close()


@pytest.mark.parametrize("driver", ib.drivers_under_test()[:1])
def test_sigkill_during_load_never_leaves_a_broken_tag(engine_env, tmp_path, driver: str) -> None:
    need_root()
    need_tool("umoci", "skopeo")
    layout = ib.synthetic_image(tmp_path / "build", tag="crash", total_mb=24, files=1500)
    archive = ib.docker_archive(layout, "crash", tmp_path / "crash.tar", "example.com/crash:1")
    command = [sys.executable, "-m", "pyengine", "--storage-driver", driver, "load", "-i", str(archive)]

    started = time.monotonic()
    engine_env.run("--storage-driver", driver, "load", "-i", str(archive), check=True)
    full = time.monotonic() - started
    engine_env.run("--storage-driver", driver, "rmi", "example.com/crash:1", check=True)

    rng = random.Random(int(os.environ.get("PYENGINE_CRASH_SEED", "1")))
    repaired = 0
    for _ in range(ROUNDS):
        process = subprocess.Popen(command, env=engine_env.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, full))
        process.send_signal(signal.SIGKILL)
        process.wait()
        tags_are_whole(engine_env, driver)
        check = engine_env.run("--storage-driver", driver, "system", "check")
        if check.returncode != 0:
            assert "tag " not in check.stdout, check.stdout
            engine_env.run("--storage-driver", driver, "system", "check", "--repair", check=True)
            repaired += 1
        assert engine_env.run("--storage-driver", driver, "system", "check", check=True).stdout.strip() == "ok"
        tags_are_whole(engine_env, driver)
        # Sometimes start the next round from a loaded image, so kills also land on a re-load.
        if rng.random() < 0.3:
            engine_env.run("--storage-driver", driver, "load", "-i", str(archive), check=True)

    engine_env.run("--storage-driver", driver, "load", "-i", str(archive), check=True)
    assert engine_env.run("--storage-driver", driver, "system", "check", check=True).stdout.strip() == "ok"
    tags_are_whole(engine_env, driver)
    print(f"load took {full:.2f}s; {repaired} of {ROUNDS} kills needed --repair")
