"""Progress of pull, push, load and build for people: Docker's JSON progress events rendered
as live rows on a terminal, as plain lines into a pipe or a file, and not at all with -q.

The events are the dicts the registry verbs (``pyengine.registry.verbs``), the archive loader
and a daemon's streams (``POST /images/create``, ``/images/{name}/push``, ``/images/load``,
``/build``) carry alike: ``{"status": "Downloading", "id": "ec562eabd705", "progressDetail":
{"current": 1048576, "total": 2152000}}``, ``{"status": "Digest: sha256:..."}``, ``{"stream":
"Loaded image: busybox:latest\\n"}``. Only the standard library is imported here; rich is
imported when a terminal display starts, so neither a pipe nor ``--help`` pays for it.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

#: a layer in one of these states has all of its bytes: a known total shows as a full bar
COMPLETE_STATUSES = frozenset({"Download complete", "Pull complete", "Pushed", "Loading layer"})

#: width of a row's bar, in cells
BAR_WIDTH = 30


def plain_line(event: dict[str, Any]) -> str | None:
    """The line a pipe gets for ``event`` (``id: status``, or the status alone); None for byte
    counts (``progress``), ``stream`` text and aux records, which a pipe does not get as lines."""
    if "progress" in event or "status" not in event:
        return None
    return f"{event['id']}: {event['status']}" if event.get("id") else str(event["status"])


@dataclass
class LayerRow:
    """What the terminal shows of one id: its latest status, its bytes and its speed."""

    layer_id: str
    status: str = ""
    current: int | None = None
    total: int | None = None
    show_bytes: bool = False
    first_bytes: tuple[float, int] | None = None
    speed: float | None = None

    def update(self, event: dict[str, Any], now: float) -> None:
        self.status = str(event.get("status") or self.status)
        detail = event.get("progressDetail") or {}
        current = detail.get("current")
        if isinstance(current, int):
            if isinstance(detail.get("total"), int) and detail["total"] > 0:
                self.total = detail["total"]
            if self.first_bytes is None or current < self.first_bytes[1]:
                self.first_bytes = (now, current)  # a new transfer (a push after a pull, a resume)
            elif now > self.first_bytes[0]:
                self.speed = (current - self.first_bytes[1]) / (now - self.first_bytes[0])
            self.current = current
            self.show_bytes = True
        elif self.status in COMPLETE_STATUSES and self.total:
            self.current = self.total
            self.show_bytes = True
        else:
            # Extracting, Verifying Checksum, Waiting...: a state without a byte count of its own
            self.show_bytes = False

    def bytes_text(self) -> str:
        from pyengine.registry.verbs import human_size

        if self.current is None:
            return ""
        return f"{human_size(self.current)}/{human_size(self.total)}" if self.total else human_size(self.current)


class Progress:
    """The ``on_event`` callback of pull, push, load and build, for ``stream`` (stdout).

    On a terminal, one live row per layer id (status, bar, bytes done/total, speed), redrawn at
    each event; a line without an id (``Digest: ...``, a build step) ends the rows above it,
    which stay on the screen as their last frame. Elsewhere, one plain line per layer event in
    Docker's non-terminal form (``ec562eabd705: Pull complete``). With ``quiet``, nothing.
    Events may come from several download threads at once. Use it as a context manager (or
    call :meth:`stop`) so the last frame is drawn before anything else is printed.
    """

    def __init__(self, quiet: bool = False, stream: IO[str] | None = None, terminal: bool | None = None) -> None:
        """:param terminal: draw rows (True) or print lines (False) whatever ``stream`` is;
            None asks the stream (``build --progress tty|plain|auto``)"""
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stdout
        self.terminal = not quiet and (_is_terminal(self.stream) if terminal is None else terminal)
        self._rows: dict[str, LayerRow] = {}
        self._live: Any = None
        self._console: Any = None
        self._lock = threading.RLock()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        with self._lock:
            if not self.terminal:
                self._plain(event)
            elif event.get("id") and ("status" in event or "progressDetail" in event):
                row = self._rows.get(event["id"])
                if row is None:
                    row = self._rows[event["id"]] = LayerRow(event["id"])
                row.update(event, time.monotonic())
                self._draw()
            elif isinstance(event.get("stream"), str):
                self.write(event["stream"])
            elif "status" in event:
                self.write(f"{event['status']}\n")

    def write(self, text: str) -> None:
        """Text between rows (a build's output, ``Loaded image: ...``): the rows so far stay
        above it as they are; later events start new rows below it."""
        if self.quiet:
            return
        with self._lock:
            self.stop()
            self.stream.write(text)
            self.stream.flush()

    def stop(self) -> None:
        """Draw the last frame of the rows and leave them on the screen."""
        with self._lock:
            if self._live is not None:
                self._live.stop()  # its last refresh draws the final frame
                self._live = None
            self._rows = {}

    # -- plain -----------------------------------------------------------------------------------
    def _plain(self, event: dict[str, Any]) -> None:
        line = plain_line(event)
        if line is None and isinstance(event.get("stream"), str):
            self.stream.write(event["stream"])
        elif line is not None:
            self.stream.write(line + "\n")
        else:
            return
        self.stream.flush()

    # -- terminal --------------------------------------------------------------------------------
    def _draw(self) -> None:
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            if self._console is None:
                self._console = Console(file=self.stream, highlight=False, soft_wrap=False,
                                        force_terminal=True)
            # Redrawn at each event (already throttled by the verbs to about 50 per blob), not by
            # a timer thread: the display changes exactly when the transfer does.
            self._live = Live(self._table(), console=self._console, auto_refresh=False, transient=False,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        self._live.update(self._table(), refresh=True)

    def _table(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        from pyengine.registry.verbs import human_size

        table = Table.grid(padding=(0, 1))
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True, width=BAR_WIDTH)
        table.add_column(no_wrap=True, justify="right")
        table.add_column(no_wrap=True, justify="right")
        for row in self._rows.values():
            bar: Any = Text("")
            if row.show_bytes and row.total:
                bar = ProgressBar(total=row.total, completed=min(row.current or 0, row.total), width=BAR_WIDTH,
                                  complete_style="green" if row.current == row.total else "bar.complete",
                                  finished_style="green")
            speed = f"{human_size(row.speed)}/s" if row.show_bytes and row.speed else ""
            table.add_row(Text(f"{row.layer_id}:", style="bold"), Text(row.status), bar,
                          Text(row.bytes_text() if row.show_bytes else ""), Text(speed))
        return table


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
