"""The live view of ``pyengine build`` on a terminal, as BuildKit's tty output: a header with
the build's time and count, one line per step (``[stage N/M] INSTRUCTION`` shortened to the
terminal's width, then its state: a running timer, ``DONE 0.4s``, ``CACHED``, ``ERROR 0.1s``),
the last lines of a running step's output under it, redrawn in place on stderr.

It is the executor's ``on_event(kind, text)`` callback (``pyengine.build.executor``); a daemon's
build (``-H``) arrives as the legacy builder's stream text, whose lines it reads back into the
same events. Only the standard library is imported here; rich is imported when the view first
draws, as ``pyengine.cli.progress`` does.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any

from pyengine.cli.progress import LayerRow

#: output lines of a running step shown under it
TAIL_LINES = 6

#: redraws a second, for the running timers
REFRESH_PER_SECOND = 8

_STEP = re.compile(r"Step (\d+)/(\d+) : (.*)", re.DOTALL)
_STAGE_NAME = re.compile(r"\s+as\s+(\S+)\s*$", re.IGNORECASE)
# escape sequences and control characters of a RUN's output, which would move our cursor
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


def clean_line(text: str) -> str:
    """One line of a RUN's output as a terminal would leave it: what follows the last carriage
    return, without escape sequences or control characters, tabs expanded."""
    return _CONTROL.sub("", text.rstrip("\r").rsplit("\r", 1)[-1].expandtabs(4))


@dataclass
class StepView:
    """What the view knows of one step."""

    number: int
    total: int
    stage: str | None
    instruction: str
    started: float
    ended: float | None = None
    state: str = "running"  # running, done, cached, error
    cache_hit: bool = False
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    partial: str = ""
    pulls: dict[str, LayerRow] = field(default_factory=dict)

    @property
    def label(self) -> str:
        where = f"{self.stage} {self.number}/{self.total}" if self.stage else f"{self.number}/{self.total}"
        return f"[{where}] {' '.join(self.instruction.split())}"

    def feed(self, text: str) -> None:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        self.tail.extend(clean_line(line) for line in lines)

    def finish(self, state: str, now: float) -> None:
        self.state = state
        self.ended = now
        if self.partial:
            self.feed("\n")
        if state != "error":  # a failed step keeps its last lines: they say why
            self.tail.clear()
        self.pulls.clear()

    def tail_lines(self) -> list[str]:
        rows = [f"{row.layer_id}: {row.status} {row.bytes_text() if row.show_bytes else ''}".rstrip()
                for row in self.pulls.values()]
        lines = list(self.tail) + ([clean_line(self.partial)] if self.partial else [])
        return (rows + lines)[-TAIL_LINES:]


class BuildView:
    """The ``on_event`` callback that draws the live view; call :meth:`close` when the build
    ends (``failed`` when it raised) to draw the last frame, which stays on the screen.

    Events may come from several stages' threads at once: a step's ``status`` and ``output``
    belong to the last step its thread announced (the executor runs each stage in one thread);
    a base image's pull, whose layers download in threads of their own, belongs to the running
    FROM step. The summary (``Successfully built ID``, ``Successfully tagged NAME`` on stdout,
    warnings on stderr) is printed below the last frame, as the plain lines print it.
    """

    def __init__(self, stream: IO[str] | None = None, out: IO[str] | None = None,
                 legacy_stream: bool = False) -> None:
        """:param stream: where the view is drawn (stderr)
        :param out: where the summary lines go (stdout)
        :param legacy_stream: the events are a daemon's ``POST /build`` stream, all ``output``"""
        self.stream = stream if stream is not None else sys.stderr
        self.out = out if out is not None else sys.stdout
        self.legacy_stream = legacy_stream
        self.started = time.monotonic()
        self.ended: float | None = None
        self.failed = False
        self.steps: list[StepView] = []
        self.total = 0
        self.scrolled = 0  # finished steps moved above the live region
        self._current: dict[int, StepView] = {}
        self._stage: dict[int, str | None] = {}
        self._legacy_partial = ""
        self._lock = threading.RLock()  # the view's state; the renderer takes it
        self._print_lock = threading.Lock()  # printing above the live region, in order
        self._live: Any = None
        self._console: Any = None
        self._stopped = False

    # -- events ----------------------------------------------------------------------------------
    def __call__(self, kind: str, text: Any) -> None:
        if kind == "output" and self.legacy_stream:
            self._legacy(text)
            return
        if kind in ("warning", "result"):  # every step is over: the last frame, then the summary
            self.close()
            target = self.stream if kind == "warning" else self.out
            target.write(f"{text}\n")
            target.flush()
            return
        with self._lock:
            if self._stopped:
                return
            if kind == "step":
                self._step(str(text))
            elif kind == "status":
                self._status(str(text))
            elif kind == "output":
                step = self._current.get(threading.get_ident())
                if step is not None and step.state == "running":
                    step.feed(str(text))
            elif kind == "progress" and isinstance(text, dict):
                self._progress(text)
        self._start()
        self._fit()

    def close(self, failed: bool = False) -> None:
        """The build is over: steps still running failed (``failed``) or ended; the last frame."""
        partial, self._legacy_partial = self._legacy_partial, ""
        if partial:  # a daemon's last output without its newline
            self._legacy(partial + "\n")
        with self._lock:
            now = time.monotonic()
            for step in self.steps:
                if step.state == "running":
                    step.finish("error" if failed else ("cached" if step.cache_hit else "done"), now)
            self.failed = self.failed or failed
        self._stop()

    def _step(self, text: str) -> None:
        match = _STEP.fullmatch(text.strip())
        if match is None:
            return
        thread = threading.get_ident()
        now = time.monotonic()
        previous = self._current.get(thread)
        if previous is not None and previous.state == "running":  # FROM scratch says nothing more
            previous.finish("cached" if previous.cache_hit else "done", now)
        instruction = match.group(3).strip()
        if instruction.split(None, 1)[0].upper() == "FROM":
            name = _STAGE_NAME.search(instruction)
            self._stage[thread] = name.group(1).lower() if name else None
        step = StepView(int(match.group(1)), int(match.group(2)), self._stage.get(thread), instruction, now)
        self.total = max(self.total, step.total)
        self.steps.append(step)
        self._current[thread] = step

    def _status(self, text: str) -> None:
        step = self._current.get(threading.get_ident())
        if step is None:
            return
        line = text.strip()
        if line == "---> Using cache":
            step.cache_hit = True
        elif line.startswith("# Executing"):  # a base's ONBUILD triggers: steps of the FROM
            step.state, step.ended = "running", None
        elif line.startswith("---> ") and not line.startswith("---> Running in"):
            step.finish("cached" if step.cache_hit else "done", time.monotonic())

    def _progress(self, event: dict[str, Any]) -> None:
        if not event.get("id") or not ("status" in event or "progressDetail" in event):
            return
        running = [step for step in self.steps if step.state == "running"]
        froms = [step for step in running if step.instruction.upper().startswith("FROM")]
        if froms or running:
            step = (froms or running)[-1]
            row = step.pulls.setdefault(event["id"], LayerRow(event["id"]))
            row.update(event, time.monotonic())

    def _legacy(self, text: str) -> None:
        """A daemon's stream text: its lines back into the executor's events."""
        lines = (self._legacy_partial + str(text)).split("\n")
        self._legacy_partial = lines.pop()
        for line in lines:
            if _STEP.fullmatch(line.strip()):
                self("step", line)
            elif line.startswith((" ---> ", "Removing intermediate container", "# Executing")):
                self("status", line)
            elif line.startswith(("Successfully built ", "Successfully tagged ")):
                self("result", line)
            elif line.startswith("[Warning]"):
                self("warning", line)
            else:
                with self._lock:
                    running = [step for step in self.steps if step.state == "running"]
                    if running:
                        running[-1].feed(line + "\n")
                self._start()

    # -- drawing ---------------------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._live is not None or self._stopped or not self.steps:
                return
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=self.stream, force_terminal=True, highlight=False, soft_wrap=False,
                                    emoji=False, markup=False)
            self._live = Live(console=self._console, get_renderable=self._frame, auto_refresh=True,
                              refresh_per_second=REFRESH_PER_SECOND, transient=False, redirect_stdout=False,
                              redirect_stderr=False)
        self._live.start()

    def _stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self.ended = time.monotonic()
            live = self._live
        if live is not None:
            live.stop()  # its last refresh draws the final frame, whatever its height
            self.stream.flush()

    def _fit(self) -> None:
        """Steps that no longer fit on the screen, finished ones from the top, move above the
        live region for good (as BuildKit scrolls them off), so the running ones stay in view."""
        if self._live is None:
            return
        with self._print_lock:
            with self._lock:
                if self._stopped:
                    return
                room = max(self._console.height - 2, 3)
                done: list[Any] = []
                while self.steps and self.steps[0].state != "running" and self._height() > room:
                    done.append(self._step_text(self.steps.pop(0), self._console.width))
                    self.scrolled += 1
            for line in done:
                self._live.console.print(line)

    def _height(self) -> int:
        return 1 + sum(1 + len(step.tail_lines()) for step in self.steps)

    def _frame(self) -> Any:
        from rich.text import Text

        with self._lock:
            width = self._console.width
            lines = [self._header()]
            for step in self.steps:
                lines.append(self._step_text(step, width))
                lines.extend(Text(f"=> => # {line}", style="dim", no_wrap=True, overflow="ellipsis")
                             for line in step.tail_lines())
            for line in lines:
                line.truncate(width, overflow="ellipsis")
            return Text("\n").join(lines)

    def _header(self) -> Any:
        from rich.text import Text

        end = self.ended if self.ended is not None else time.monotonic()
        finished = self.scrolled + sum(1 for step in self.steps if step.state != "running")
        counted = max(self.total, self.scrolled + len(self.steps))
        text = f"[+] Building {end - self.started:.1f}s ({finished}/{counted})"
        if self._stopped or self.ended is not None:
            text += " ERROR" if self.failed else " FINISHED"
        return Text(text, style="bold red" if self.failed and self.ended is not None else "bold")

    def _step_text(self, step: StepView, width: int) -> Any:
        from rich.text import Text

        end = step.ended if step.ended is not None else time.monotonic()
        seconds = f"{end - step.started:.1f}s"
        state, style = {"running": (seconds, "cyan"), "done": (f"DONE {seconds}", "blue"),
                        "cached": ("CACHED", "blue"), "error": (f"ERROR {seconds}", "bold red")}[step.state]
        left = Text(f"=> {step.label}", style=style, no_wrap=True)
        left.truncate(max(width - len(state) - 1, 8), overflow="ellipsis", pad=True)
        return Text.assemble(left, " ", (state, style), no_wrap=True)
