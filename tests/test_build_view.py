"""``pyengine build``'s live view on a real terminal: the CLI runs on a pty, and what it writes
is played on a small terminal model (cursor moves, line erases, autowrap) whose screen the tests
read as a person would see it: one line per step with its state, a RUN's last lines while it
runs and not after, CACHED on a rebuild, ERROR and exit status 1 for a failing RUN, the plain
lines when stderr is no terminal or with ``--progress plain``.

Every test runs as root against the real kernel: RUN steps are real containers.
"""

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
from collections.abc import Iterator
from pathlib import Path

import pytest
from containers_support import busybox_engine

from conftest import EngineEnv

pytestmark = pytest.mark.root

ROWS, COLS = 30, 72


@pytest.fixture(params=["local", "daemon"])
def engine(request: pytest.FixtureRequest, engine_env: EngineEnv,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineEnv]:
    yield from busybox_engine(engine_env, tmp_path_factory, request.param)


# -- a terminal ----------------------------------------------------------------------------------
_CSI = re.compile(r"\x1b\[([0-9;?]*)([ -/]*)([@-~])")


class Screen:
    """The lines a terminal of ``cols`` columns shows (its scrollback included) after ``feed``:
    printable text, CR, LF, backspace, CSI cursor moves (A B C D G H), erases (K J); colours,
    modes and other sequences change nothing on the screen and are skipped."""

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self.lines: list[list[str]] = [[]]
        self.row = self.col = 0

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            char = text[i]
            if char == "\x1b":
                match = _CSI.match(text, i)
                if match:
                    self._csi(match.group(1), match.group(3))
                    i = match.end()
                    continue
                i += 2  # a two-character escape (ESC 7, ESC =, ...)
                continue
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self._down()
            elif char == "\b":
                self.col = max(self.col - 1, 0)
            elif char >= " ":
                if self.col >= self.cols:  # autowrap on the next character after the last column
                    self._down()
                    self.col = 0
                line = self.lines[self.row]
                line.extend(" " * (self.col + 1 - len(line)))
                line[self.col] = char
                self.col += 1
            i += 1

    def _down(self) -> None:
        self.row += 1
        if self.row == len(self.lines):
            self.lines.append([])

    def _top(self) -> int:
        return max(len(self.lines) - self.rows, 0)

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return
        numbers = [int(n) for n in params.split(";") if n]
        count = numbers[0] if numbers else 1
        line = self.lines[self.row]
        if final == "A":
            self.row = max(self.row - count, self._top())
        elif final == "B":
            for _ in range(count):
                self._down()
        elif final == "C":
            self.col = min(self.col + count, self.cols)
        elif final == "D":
            self.col = max(self.col - count, 0)
        elif final == "G":
            self.col = count - 1
        elif final == "H":
            row = numbers[0] if numbers else 1
            self.row = self._top() + row - 1
            while self.row >= len(self.lines):
                self.lines.append([])
            self.col = (numbers[1] if len(numbers) > 1 else 1) - 1
        elif final == "K":
            mode = numbers[0] if numbers else 0
            if mode == 0:
                del line[self.col:]
            elif mode == 1:
                line[:self.col + 1] = [" "] * min(self.col + 1, len(line))
            else:
                line.clear()
        elif final == "J":
            mode = numbers[0] if numbers else 0
            if mode in (0, 2, 3):
                del line[self.col:]
                del self.lines[self.row + 1:]

    def text(self) -> list[str]:
        """The screen's lines (the scrollback's too), trailing blanks and blank lines dropped."""
        return [stripped for line in self.lines if (stripped := "".join(line).rstrip())]


def on_a_pty(engine: EngineEnv, *args: str, rows: int = ROWS, cols: int = COLS,
             separate_stdout: bool = False) -> tuple[int, str, Screen, str]:
    """``pyengine ARGS`` with a rows x cols pty as its stdio (or as stdin and stderr only, stdout
    a pipe): its exit status, the raw text it wrote to the pty (colours removed), the terminal's
    screen, and what it wrote to the pipe."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in engine.env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    env["TERM"] = "xterm"
    stdout: int = subprocess.PIPE if separate_stdout else slave
    client = subprocess.Popen([sys.executable, "-m", "pyengine", *args], env=env, stdin=slave, stdout=stdout,
                              stderr=slave, start_new_session=True)
    os.close(slave)
    raw = piped = b""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the pty's other side is closed
                    break
                if not data:
                    break
                raw += data
            elif client.poll() is not None and not select.select([master], [], [], 0.2)[0]:
                break
        code = client.wait(timeout=30)
        if separate_stdout:
            assert client.stdout is not None
            piped = client.stdout.read()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        if client.stdout is not None:
            client.stdout.close()
        os.close(master)
    text = raw.decode(errors="replace")
    screen = Screen(rows, cols)
    screen.feed(text)
    return code, re.sub(r"\x1b\[[0-9;]*m", "", text), screen, piped.decode(errors="replace")


def context(tmp_path: Path, dockerfile: str, name: str = "ctx") -> Path:
    ctx = tmp_path / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "f.txt").write_text("file\n")
    return ctx


def step_line(lines: list[str], label: str) -> str:
    found = [line for line in lines if line.startswith(f"=> {label}")]
    assert len(found) == 1, (label, lines)
    return found[0]


SLOW = """\
FROM busybox
COPY f.txt /f.txt
RUN echo first-of-run; echo tail-line-two; sleep 1.5
RUN echo a-rather-long-command-line-that-does-not-fit-on-one-line-of-a-narrow-terminal > /long
"""


# -- the live view -------------------------------------------------------------------------------
def test_tty_view_draws_steps_in_place_and_shows_cached_on_a_rebuild(engine: EngineEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, SLOW)
    code, raw, screen, _ = on_a_pty(engine, "build", "-t", "view:1", str(ctx))
    lines = screen.text()
    assert code == 0, "\n".join(lines)
    assert re.fullmatch(r"\[\+\] Building \d+\.\ds \(4/4\) FINISHED", lines[0]), lines
    assert re.search(r"DONE \d+\.\ds$", step_line(lines, "[1/4] FROM busybox"))
    assert re.search(r"DONE \d+\.\ds$", step_line(lines, "[2/4] COPY f.txt /f.txt"))
    run = step_line(lines, "[3/4] RUN echo first-of-run; echo tail-line-two; sleep 1.5")
    seconds = float(re.search(r"DONE (\d+\.\d)s$", run).group(1))  # type: ignore[union-attr]
    assert seconds >= 1.5
    # the long step is shortened to the terminal's width, its state kept at the right
    long = step_line(lines, "[4/4] RUN echo a-rather-long")
    assert len(long) <= COLS and "…" in long and re.search(r"DONE \d+\.\ds$", long)
    assert all(len(line) <= COLS for line in lines)
    # while the RUN slept its last lines were under it, with a running timer; now they are gone
    assert "=> => # first-of-run" in raw and "=> => # tail-line-two" in raw
    assert re.search(r"RUN echo first-of-run; echo tail-line-two; sleep 1\.5 +\d+\.\ds\r?\n", raw)
    assert not any("first-of-run" in line or "tail-line-two" in line for line in lines if line.startswith("=> =>"))
    assert not any(line.startswith("=> => #") for line in lines)
    # the frame was redrawn in place: each step line is on the screen once, then the summary
    image = engine.run("image", "inspect", "--format", "{{.Id}}", "view:1", check=True).stdout.strip()
    assert lines[-2:] == [f"Successfully built {image[7:19]}", "Successfully tagged view:1"]
    assert len(lines) == 1 + 4 + 2, lines

    code, _, screen, _ = on_a_pty(engine, "build", "-t", "view:2", str(ctx))
    lines = screen.text()
    assert code == 0, "\n".join(lines)
    assert re.search(r"DONE \d+\.\ds$", step_line(lines, "[1/4] FROM busybox"))
    for label in ("[2/4] COPY", "[3/4] RUN echo first-of-run", "[4/4] RUN echo a-rather"):
        assert step_line(lines, label).endswith(" CACHED"), lines
    assert lines[-2:] == [f"Successfully built {image[7:19]}", "Successfully tagged view:2"]


def test_tty_view_names_stages_and_keeps_a_failing_steps_last_lines(engine: EngineEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox AS Base\nRUN echo base > /b\n"
                            "FROM base\nRUN echo about to fail; echo really; exit 3\nRUN echo never\n")
    code, raw, screen, _ = on_a_pty(engine, "build", str(ctx))
    lines = screen.text()
    assert code == 1, "\n".join(lines)
    assert re.fullmatch(r"\[\+\] Building \d+\.\ds \(4/5\) ERROR", lines[0]), lines
    assert re.search(r"DONE \d+\.\ds$", step_line(lines, "[base 1/5] FROM busybox AS Base"))
    assert re.search(r"DONE \d+\.\ds$", step_line(lines, "[base 2/5] RUN echo base > /b"))
    assert re.search(r"DONE \d+\.\ds$", step_line(lines, "[3/5] FROM base"))
    failed = step_line(lines, "[4/5] RUN echo about to fail; echo really; exit 3")
    assert re.search(r"ERROR \d+\.\ds$", failed)
    after = lines[lines.index(failed) + 1:]
    assert after[:2] == ["=> => # about to fail", "=> => # really"], lines
    assert not any("[5/5]" in line for line in lines), "the step after the failure never started"
    # the error's one line follows the last frame
    error = "pyengine: error: The command '/bin/sh -c echo about to fail; echo really; exit 3' returned a " \
            "non-zero code: 3"
    assert raw.rstrip().replace("\r", "").endswith(error), raw[-500:]
    assert not any(line.startswith("Successfully") for line in lines)


def test_tty_view_goes_to_stderr_and_the_summary_to_stdout(engine: EngineEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\nRUN echo hi > /hi\n")
    code, raw, screen, stdout = on_a_pty(engine, "build", "-t", "split:1", str(ctx), separate_stdout=True)
    assert code == 0, raw
    assert re.search(r"=> \[2/2\] RUN echo hi > /hi +DONE \d+\.\ds", raw) and "Successfully" not in raw
    assert stdout.startswith("Successfully built ") and stdout.endswith("Successfully tagged split:1\n")
    assert "\x1b" not in stdout


# -- plain lines ---------------------------------------------------------------------------------
def test_plain_lines_when_stderr_is_not_a_terminal(engine: EngineEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\nRUN echo plain-output\n")
    result = engine.run("build", "-t", "plain:1", str(ctx), check=True)
    lines = result.stdout.splitlines()
    assert lines[0] == "Step 1/2 : FROM busybox" and "Step 2/2 : RUN echo plain-output" in lines
    assert "plain-output" in lines and lines[-1] == "Successfully tagged plain:1"
    assert "\x1b" not in result.stdout + result.stderr and "[+] Building" not in result.stdout + result.stderr
    # --progress tty draws the view even into a pipe (as docker's does)
    result = engine.run("build", "--progress", "tty", str(ctx), check=True)
    assert "[+] Building" in result.stderr and "CACHED" in result.stderr
    assert result.stdout.startswith("Successfully built ")
    # quiet is -q: the ID alone
    result = engine.run("build", "--progress", "quiet", str(ctx), check=True)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", result.stdout) and result.stderr == ""


def test_progress_plain_on_a_terminal_prints_the_plain_lines(engine: EngineEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\nRUN echo on-a-terminal\n")
    code, raw, screen, _ = on_a_pty(engine, "build", "--progress", "plain", str(ctx))
    lines = screen.text()
    assert code == 0, "\n".join(lines)
    assert lines[0] == "Step 1/2 : FROM busybox" and "Step 2/2 : RUN echo on-a-terminal" in lines
    assert "on-a-terminal" in lines and lines[-1].startswith("Successfully built ")
    assert "[+] Building" not in raw and not any(line.startswith("=> ") for line in lines)
