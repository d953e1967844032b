"""The client side of attach: relay the terminal or pipes to a container's monitor.

Forwards stdin, the window size (with -t) and signals (without -t, as docker's sig-proxy);
returns the container's exit code from the monitor's exit frame.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
from typing import Any

from pyengine.containers import attach

_PROXIED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def relay(sock: socket.socket, containers: Any, record: Any, interactive: bool, tty: bool,
          detach_keys: bytes | None = None, sig_proxy: bool = True) -> int:
    """Pump frames until the monitor reports the exit; the exit code. ``detach_keys`` typed on
    stdin (default ctrl-p ctrl-q) end the session with ``attach.Detached``: the container runs on."""
    import struct

    reader = attach.FrameReader()
    scanner = attach.DetachScanner(attach.parse_detach_keys(None) if detach_keys is None else detach_keys)
    selector = selectors.PollSelector()  # epoll refuses a regular file as stdin
    selector.register(sock, selectors.EVENT_READ, "sock")
    stdin_fd = sys.stdin.fileno() if interactive else None
    saved_tty = None
    if stdin_fd is not None:
        selector.register(stdin_fd, selectors.EVENT_READ, "stdin")
    if tty and stdin_fd is not None and os.isatty(stdin_fd):
        import termios
        import tty as ttymod

        saved_tty = termios.tcgetattr(stdin_fd)
        ttymod.setraw(stdin_fd)

    def send_size(*_: Any) -> None:
        try:
            cols, rows = os.get_terminal_size(sys.stdout.fileno())
        except OSError:
            return
        try:
            attach.send_frame(sock, attach.RESIZE, struct.pack(">HH", rows, cols))
        except OSError:  # the monitor has gone (the exit frame is on its way or read): no matter
            pass

    def proxy(signum: int, _frame: Any) -> None:
        from pyengine.errors import NotFound

        try:
            pid = containers.store.load(record.id).state.pid
        except NotFound:  # ended and removed (--rm): nothing left to signal
            return
        if pid:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    previous = {}
    if tty:
        previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, send_size)
        send_size()
    elif sig_proxy:
        for sig in _PROXIED:
            previous[sig] = signal.signal(sig, proxy)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    code: int | None = None
    try:
        while code is None:
            for key, _ in selector.select():
                if key.data == "stdin":
                    data = os.read(key.fd, 65536)
                    if data:
                        data, detached = scanner.feed(data)
                        if data:
                            attach.send_frame(sock, attach.STDIN, data)
                        if detached:
                            raise attach.Detached
                    else:
                        selector.unregister(key.fd)
                        attach.send_frame(sock, attach.STDIN_EOF)
                    continue
                data = sock.recv(65536)
                if not data:
                    code = containers.wait(record.id)
                    break
                for stream, payload in reader.feed(data):
                    if stream == attach.STDOUT:
                        out.write(payload)
                        out.flush()
                    elif stream == attach.STDERR:
                        err.write(payload)
                        err.flush()
                    elif stream == attach.EXIT:
                        code = int(payload or b"0")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if saved_tty is not None and stdin_fd is not None:
            import termios

            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved_tty)
        sock.close()
    return code


def relay_pty(process: Any, interactive: bool) -> int:
    """Relay the terminal to an exec'd process's pty until it exits; its exit code."""
    import termios
    import tty as ttymod

    master = process.tty_master
    stdin_fd = sys.stdin.fileno()
    saved = None
    if interactive and os.isatty(stdin_fd):
        saved = termios.tcgetattr(stdin_fd)
        ttymod.setraw(stdin_fd)
    try:
        cols, rows = os.get_terminal_size(sys.stdout.fileno())
        process.resize(rows, cols)
    except OSError:
        pass
    selector = selectors.PollSelector()  # epoll refuses a regular file as stdin
    selector.register(master, selectors.EVENT_READ, "pty")
    if interactive:
        selector.register(stdin_fd, selectors.EVENT_READ, "stdin")
    try:
        while True:
            done = False
            for key, _ in selector.select():
                if key.data == "stdin":
                    data = os.read(stdin_fd, 65536)
                    if data:
                        os.write(master, data)
                    else:
                        selector.unregister(stdin_fd)
                        os.write(master, b"\x04")
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    done = True
                    break
                os.write(sys.stdout.fileno(), data)
            if done:
                break
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        os.close(master)
        process.tty_master = None
    return process.wait()
