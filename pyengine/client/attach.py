"""The terminal side of a hijacked attach or exec connection: stdin to the daemon (half-closed
at EOF), the output back to stdout/stderr (raw with a tty, Docker's stdcopy frames without), the
window size on SIGWINCH and, without a tty, signals passed on as the docker CLI's sig-proxy."""

from __future__ import annotations

import os
import selectors
import signal
import sys
from collections.abc import Callable
from typing import Any

from pyengine.client.transport import STDERR, FrameDecoder, Hijacked

_PROXIED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def terminal_size() -> tuple[int, int] | None:
    """(rows, cols) of our stdout's terminal, None when it is not one."""
    try:
        cols, rows = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return None
    return rows, cols


def relay(conn: Hijacked, tty: bool, interactive: bool, resize: Callable[[int, int], None] | None = None,
          send_signal: Callable[[int], None] | None = None, detach_keys: bytes | None = None) -> None:
    """Pump bytes until the daemon closes the output side. With ``detach_keys``, typing them
    on stdin ends the session with ``pyengine.containers.attach.Detached`` (the container runs on)."""
    from pyengine.containers.attach import Detached, DetachScanner

    scanner = DetachScanner(detach_keys) if detach_keys else None
    stdin_fd = sys.stdin.fileno() if interactive else None
    selector = selectors.PollSelector()  # epoll refuses a regular file as stdin
    selector.register(conn.fileno(), selectors.EVENT_READ, "conn")
    if stdin_fd is not None:
        selector.register(stdin_fd, selectors.EVENT_READ, "stdin")
    saved_tty = None
    if tty and stdin_fd is not None and os.isatty(stdin_fd):
        import termios
        import tty as ttymod

        saved_tty = termios.tcgetattr(stdin_fd)
        ttymod.setraw(stdin_fd)
    previous: dict[signal.Signals, Any] = {}

    def on_winch(*_: Any) -> None:
        size = terminal_size()
        if size and resize is not None:
            try:
                resize(*size)
            except Exception:  # noqa: BLE001 - a resize that fails must not end the session
                pass

    def on_signal(signum: int, _frame: Any) -> None:
        if send_signal is not None:
            try:
                send_signal(signum)
            except Exception:  # noqa: BLE001 - the container may be gone already
                pass

    if tty:
        previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, on_winch)
        on_winch()
    elif send_signal is not None:
        for sig in _PROXIED:
            previous[sig] = signal.signal(sig, on_signal)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    decoder = None if tty else FrameDecoder()
    try:
        done = False
        while not done:
            events = [(None, "conn")] if conn.pending else \
                [(None, key.data) for key, _ in selector.select()]
            for _, what in events:
                if what == "stdin":
                    assert stdin_fd is not None  # registered only when there is one
                    data = os.read(stdin_fd, 65536)
                    detached = False
                    if data and scanner is not None:
                        data, detached = scanner.feed(data)
                        if not data and not detached:
                            continue  # the start of the sequence, held back
                    if detached:
                        # The daemon must see the sequence too (it was told the same keys): it
                        # then ends the attach without closing the container's stdin.
                        conn.send(data + (detach_keys or b""))
                        raise Detached
                    if data:
                        try:
                            conn.send(data)
                        except OSError:
                            selector.unregister(stdin_fd)
                    else:
                        selector.unregister(stdin_fd)
                        conn.close_write()
                    continue
                data = conn.recv(65536)
                if not data:
                    done = True
                    break
                if decoder is None:
                    out.write(data)
                    out.flush()
                    continue
                for stream, payload in decoder.feed(data):
                    target = err if stream == STDERR else out
                    target.write(payload)
                    target.flush()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if saved_tty is not None and stdin_fd is not None:
            import termios

            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved_tty)
        conn.close()
