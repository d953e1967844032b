"""Progress of pull, push, load and build (pyengine/cli/progress.py): under a real pseudo-terminal
the rows of each layer are redrawn with growing byte counts and end complete; into a pipe the
same commands print Docker's plain ``id: status`` lines and no escape sequence; with -q only
the result. Pulls come from Debian's docker-registry on 127.0.0.1, daemonless and through the
daemon, which must feed the renderer the same events."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import imagebuild as ib
import pytest
import registry_fixtures as rf
from daemon_support import start_daemon

from conftest import EngineEnv, need_root, need_tool

pytestmark = [pytest.mark.root, pytest.mark.tools, pytest.mark.registry]

REPO = "test/progress"
COLUMNS, LINES = 120, 40
#: a CSI or OSC escape sequence, as rich writes them to move the cursor, clear lines and colour
ESCAPE = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]")
SIZE = r"[\d.]+(?:B|kB|MB|GB)"
#: a layer's row: id, status (up to the bar, the byte counts or a column gap), bytes done/total, speed
ROW = re.compile(rf"([0-9a-f]{{12}}): (.+?)(?=\s*$|\s{{2}}|\s[━╸╺-]|\s{SIZE}/)(?:.*?({SIZE})/({SIZE}))?"
                 rf"(?:\s+({SIZE})/s)?")
PLAIN_LAYER = re.compile(r"[0-9a-f]{12}: (Pulling fs layer|Waiting|Downloading|Verifying Checksum|Download complete|"
                         r"Extracting|Pull complete|Already exists|Preparing|Pushing|Pushed|Layer already exists)")


@dataclass
class Terminal:
    """What a command wrote to its pseudo-terminal: the raw bytes and its exit status."""

    raw: bytes
    returncode: int
    stderr: str

    @property
    def text(self) -> str:
        """The output without escape sequences, one drawn line per line."""
        return ESCAPE.sub(b"", self.raw).decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")

    def rows(self, layer_id: str | None = None) -> list[tuple[str, str, float | None, float | None, str | None]]:
        """Every drawn row of a layer (or of all layers): (id, status, bytes done, total, speed)."""
        out = []
        for line in self.text.splitlines():
            match = ROW.match(line.strip())
            if match and (layer_id is None or match[1] == layer_id):
                out.append((match[1], match[2].strip(), _bytes(match[3]), _bytes(match[4]), match[5]))
        return out


def _bytes(text: str | None) -> float | None:
    if text is None:
        return None
    number, unit = re.fullmatch(r"([\d.]+)(B|kB|MB|GB)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


def run_in_terminal(env: EngineEnv, *args: str, timeout: float = 180) -> Terminal:
    """``pyengine ARGS`` with stdin and stdout on a fresh pseudo-terminal of COLUMNS x LINES."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    full_env = {**env.env, "COLUMNS": str(COLUMNS), "LINES": str(LINES), "TERM": "xterm-256color"}
    try:
        process = subprocess.Popen([sys.executable, "-m", "pyengine", *args], env=full_env, stdin=slave,
                                   stdout=slave, stderr=subprocess.PIPE, start_new_session=True)
    finally:
        os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal's other end closed it
                break
            if not data:
                break
            chunks.append(data)
        else:
            process.kill()
            raise AssertionError(f"pyengine {' '.join(args)} did not finish in {timeout}s")
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        returncode = process.wait(30)
    finally:
        os.close(master)
        if process.stderr:
            process.stderr.close()
    return Terminal(b"".join(chunks), returncode, stderr)


@pytest.fixture(scope="module")
def test_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_root()
    need_tool("umoci", "skopeo", "docker-registry")
    return ib.build_test_image(tmp_path_factory.mktemp("progress-image") / "build")


@pytest.fixture
def registry(tmp_path: Path, test_layout: Path):
    """A loopback registry holding the three-layer test image as test/progress:v1."""
    reg = rf.start_registry(tmp_path / "registry")
    try:
        ib.run("skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false", f"oci:{test_layout}:test",
               f"docker://{reg.host}/{REPO}:v1")
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def empty_registry(tmp_path: Path):
    reg = rf.start_registry(tmp_path / "empty-registry")
    yield reg
    reg.stop()


def layer_ids(layout: Path) -> list[str]:
    """The short ids (Docker's row names) of the image's layers, in order."""
    import json

    index = json.loads((layout / "index.json").read_text())
    manifest_digest = next(m["digest"] for m in index["manifests"]
                           if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "test")
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_text())
    return [layer["digest"].split(":")[1][:12] for layer in manifest["layers"]]


def assert_bars_advance_and_end_complete(term: Terminal, layers: list[str], final: str, moving: str,
                                        updates: int = 3) -> None:
    """Each layer's last row is ``final`` with all of its bytes; the largest layer was drawn
    at least ``updates`` times while ``moving``, its byte count growing, with a speed."""
    assert term.returncode == 0, term.text + term.stderr
    assert b"\x1b[" in term.raw, "no escape sequence: the terminal got no live display"
    for layer in layers:
        rows = term.rows(layer)
        assert rows, f"no row for layer {layer} in:\n{term.text}"
        _, status, done, total, _ = rows[-1]
        assert status == final, rows[-3:]
        assert done is not None and done == total, rows[-3:]
    largest = max(layers, key=lambda layer: max((r[3] or 0) for r in term.rows(layer)))
    # Every frame redraws every row: a row that got all its bytes is drawn again at each event
    # of the other layers, so the part-way rows are kept in order, and one of the whole ones.
    drawn = [r for r in term.rows(largest) if r[1] == moving and r[2] is not None]
    moving_rows = [r for r in drawn if r[2] != r[3]] + [r for r in drawn if r[2] == r[3]][:1]
    counts = [r[2] for r in moving_rows]
    assert len(set(counts)) >= updates, f"the bar of {largest} was drawn at {counts}"
    assert counts == sorted(counts), counts
    assert counts[0] < moving_rows[0][3], moving_rows  # type: ignore[operator]
    assert any(r[4] for r in moving_rows), f"no speed on the rows of {largest}: {moving_rows}"


def insecure(env: EngineEnv, host: str) -> None:
    env.write_config(f'[registries."{host}"]\ninsecure = true\n')


def test_pull_on_a_terminal_draws_bars_that_advance_and_end_complete(engine_env, registry, test_layout) -> None:
    insecure(engine_env, registry.host)
    name = f"{registry.host}/{REPO}:v1"
    term = run_in_terminal(engine_env, "pull", name)
    assert_bars_advance_and_end_complete(term, layer_ids(test_layout), "Pull complete", "Downloading")
    lines = term.text.splitlines()
    assert any(line.strip().startswith("v1: Pulling from test/progress") for line in lines), term.text
    assert any(line.startswith("Digest: sha256:") for line in lines), term.text
    assert f"Status: Downloaded newer image for {name}" in term.text
    assert lines[-1].strip() == name


def test_pull_into_a_pipe_prints_only_plain_lines(engine_env, registry, test_layout) -> None:
    insecure(engine_env, registry.host)
    name = f"{registry.host}/{REPO}:v1"
    result = engine_env.run("pull", name, check=True)
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == "v1: Pulling from test/progress"
    assert lines[-3].startswith("Digest: sha256:") and lines[-2] == f"Status: Downloaded newer image for {name}"
    assert lines[-1] == name
    layers = lines[1:-3]
    assert layers and all(PLAIN_LAYER.fullmatch(line) for line in layers), layers
    for layer in layer_ids(test_layout):
        assert f"{layer}: Pull complete" in layers
    # No byte counts in a pipe: Downloading is a state there, not a bar.
    assert not [line for line in lines if "/" in line.partition(": ")[2] and "Status" not in line
                and "Pulling from" not in line]


def test_quiet_pull_prints_only_the_name_even_on_a_terminal(engine_env, registry) -> None:
    insecure(engine_env, registry.host)
    name = f"{registry.host}/{REPO}:v1"
    term = run_in_terminal(engine_env, "pull", "-q", name)
    assert term.returncode == 0, term.text + term.stderr
    assert term.text.strip() == name
    piped = engine_env.run("pull", "-q", name, check=True)
    assert piped.stdout == name + "\n"


def test_push_on_a_terminal_draws_bars_that_end_pushed(engine_env, empty_registry, test_layout, tmp_path) -> None:
    registry = empty_registry
    insecure(engine_env, registry.host)
    archive = ib.oci_archive(test_layout, tmp_path / "image.tar")
    image = ib.loaded_image_id(engine_env.run("load", "-i", str(archive), check=True).stdout)
    destination = f"{registry.host}/{REPO}:pushed"
    # Chunks small enough that every layer sends several PATCH requests, each a bar update.
    term = run_in_terminal(engine_env, "push", "--chunk-size", "65536", image, destination)
    assert_bars_advance_and_end_complete(term, layer_ids(test_layout), "Pushed", "Pushing")
    assert term.text.splitlines()[0] == f"The push refers to repository [{registry.host}/{REPO}]"
    assert re.search(r"^pushed: digest: sha256:[0-9a-f]{64} size: \d+$", term.text, re.M), term.text
    again = engine_env.run("push", image, destination, check=True).stdout
    assert "\x1b" not in again and "Layer already exists" in again


def test_pull_through_the_daemon_draws_the_same_bars(engine_env, registry, test_layout) -> None:
    insecure(engine_env, registry.host)
    daemon = start_daemon(engine_env)
    try:
        name = f"{registry.host}/{REPO}:v1"
        term = run_in_terminal(engine_env, "-H", daemon.url, "pull", name)
        assert_bars_advance_and_end_complete(term, layer_ids(test_layout), "Pull complete", "Downloading")
        assert f"Status: Downloaded newer image for {name}" in term.text
        engine_env.run("-H", daemon.url, "rmi", name, check=True)
        piped = engine_env.run("-H", daemon.url, "pull", name, check=True).stdout
        assert "\x1b" not in piped
        assert [line for line in piped.splitlines() if line.endswith(": Pull complete")]
    finally:
        assert daemon.stop() == 0


def test_load_on_a_terminal_draws_a_row_per_layer_daemonless_and_through_the_daemon(engine_env, test_layout,
                                                                                     tmp_path) -> None:
    archive = ib.oci_archive(test_layout, tmp_path / "image.tar")
    layers = layer_ids(test_layout)
    term = run_in_terminal(engine_env, "load", "-i", str(archive))
    # Blobs are read a MiB at a time: the 1 MB layer's bar is drawn part-way and whole.
    assert_bars_advance_and_end_complete(term, layers, "Loading layer", "Loading layer", updates=2)
    assert term.text.splitlines()[-1].startswith("Loaded image ID: sha256:"), term.text
    image_id = term.text.splitlines()[-1].split(": ", 1)[1]
    piped = engine_env.run("load", "-i", str(archive), check=True)
    assert piped.stdout == f"Loaded image ID: {image_id}\n"
    quiet = run_in_terminal(engine_env, "load", "-q", "-i", str(archive))
    assert quiet.returncode == 0 and quiet.raw == b""
    engine_env.run("rmi", image_id, check=True)

    daemon = start_daemon(engine_env)
    try:
        term = run_in_terminal(engine_env, "-H", daemon.url, "load", "-i", str(archive))
        assert_bars_advance_and_end_complete(term, layers, "Loading layer", "Loading layer", updates=2)
        assert term.text.splitlines()[-1] == f"Loaded image ID: {image_id}", term.text
        piped = engine_env.run("-H", daemon.url, "load", "-i", str(archive), check=True)
        assert piped.stdout == f"Loaded image ID: {image_id}\n"
    finally:
        assert daemon.stop() == 0


def forget_build(env: EngineEnv, output: str, *names: str, via: tuple[str, ...] = ()) -> None:
    """Remove what a build made (``Successfully built ID``) and ``names``, so the next build
    pulls its base again."""
    built = re.findall(r"^Successfully built ([0-9a-f]{12})$", output, re.M)
    env.run(*via, "rmi", *built, *names, check=True)


def test_build_draws_the_base_image_pull_between_its_step_lines(engine_env, registry, test_layout,
                                                                 tmp_path) -> None:
    insecure(engine_env, registry.host)
    base = f"{registry.host}/{REPO}:v1"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nENV STAGE=progress\n")
    layers = layer_ids(test_layout)
    term = run_in_terminal(engine_env, "build", str(context))
    assert_bars_advance_and_end_complete(term, layers, "Pull complete", "Downloading")
    lines = [line.rstrip() for line in term.text.splitlines()]
    step = lines.index(f"Step 1/2 : FROM {base}")
    digest = next(i for i, line in enumerate(lines) if line.startswith("Digest: sha256:"))
    first_row = next(i for i, line in enumerate(lines) if ROW.match(line.strip()))
    assert step < first_row < digest < lines.index("Step 2/2 : ENV STAGE=progress"), term.text
    assert lines[digest + 1] == f"Status: Downloaded newer image for {base}", term.text
    assert lines[digest + 2].startswith(" ---> "), term.text
    assert lines[-1].startswith("Successfully built "), term.text
    forget_build(engine_env, term.text, base)

    # --progress plain on a terminal: the pull's plain lines, as into a pipe.
    plain = run_in_terminal(engine_env, "build", "--progress", "plain", str(context))
    assert plain.returncode == 0 and b"\x1b" not in plain.raw, plain.text + plain.stderr
    for layer in layers:
        assert f"{layer}: Pull complete" in plain.text.splitlines()
    forget_build(engine_env, plain.text, base)

    # Through the daemon: its POST /build stream carries the pull's events, drawn the same.
    daemon = start_daemon(engine_env)
    via = ("-H", daemon.url)
    try:
        piped = engine_env.run(*via, "build", str(context), check=True).stdout
        assert "\x1b" not in piped
        assert f"v1: Pulling from {REPO}" in piped.splitlines() and f"{layers[0]}: Pull complete" in piped
        assert piped.index("Pull complete") < piped.index("Step 2/2 : ENV STAGE=progress")
        forget_build(engine_env, piped, base, via=via)
        term = run_in_terminal(engine_env, *via, "build", str(context))
        assert_bars_advance_and_end_complete(term, layers, "Pull complete", "Downloading")
        quiet = engine_env.run(*via, "build", "-q", "--pull", "--no-cache", str(context), check=True)
        assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", quiet.stdout), quiet.stdout
    finally:
        assert daemon.stop() == 0
