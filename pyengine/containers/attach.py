"""The attach protocol between a monitor and its clients (``run`` without ``-d``, ``start -a``).

Frames on a Unix stream socket: one byte of stream id, four bytes of big-endian length, then
the payload — the shape of Docker's multiplexed attach stream, plus control frames.
"""

from __future__ import annotations

import socket
import struct

STDIN, STDOUT, STDERR, EXIT, RESIZE, STDIN_EOF, STARTED = 0, 1, 2, 3, 4, 5, 6
_HEADER = struct.Struct(">BI")


def send_frame(sock: socket.socket, stream: int, payload: bytes = b"") -> None:
    sock.sendall(_HEADER.pack(stream, len(payload)) + payload)


class FrameReader:
    """Splits a byte stream into frames; feed it what recv returned."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        frames = []
        while len(self.buffer) >= _HEADER.size:
            stream, length = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + length:
                break
            frames.append((stream, self.buffer[_HEADER.size:_HEADER.size + length]))
            self.buffer = self.buffer[_HEADER.size + length:]
        return frames


def connect(run_dir: str, timeout: float = 5.0) -> socket.socket:
    """A new attach client of a running container's monitor: a connection to the
    ``attach.sock`` in its run directory ``run_dir`` (through a descriptor of the directory:
    a run root plus a 64-hex ID is longer than sun_path allows)."""
    import os

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    dir_fd = os.open(run_dir, os.O_PATH | os.O_DIRECTORY)
    try:
        sock.connect(f"/proc/self/fd/{dir_fd}/attach.sock")
    except OSError:
        sock.close()
        raise
    finally:
        os.close(dir_fd)
    sock.settimeout(None)
    return sock


def send_resize(sock: socket.socket, rows: int, cols: int) -> None:
    """Ask the monitor to set the container's terminal size (with a tty)."""
    send_frame(sock, RESIZE, struct.pack(">HH", rows, cols))


class Detached(Exception):  # noqa: N818 - an outcome, as Docker's term.EscapeError
    """The client typed the detach keys: it leaves, the container runs on."""

    def __str__(self) -> str:
        return "read escape sequence"


#: Docker's default detach sequence (ctrl-p ctrl-q)
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_CTRL_SPECIALS = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse_detach_keys(text: str | None) -> bytes:
    """Docker's ``--detach-keys``: comma-separated ``ctrl-<value>`` (a letter or one of
    ``@[\\]^_``) or single characters; ``ctrl-p,ctrl-q`` (the default, for None or "") ->
    b"\\x10\\x11". UsageError in Docker's words for anything else."""
    from pyengine.errors import UsageError

    text = text or DEFAULT_DETACH_KEYS
    out = bytearray()
    for part in text.split(","):
        if len(part) == 1 and part.isprintable():
            out.append(ord(part))
        elif part.lower().startswith("ctrl-") and len(part) == 6 and (
                "a" <= part[5].lower() <= "z" or part[5] in _CTRL_SPECIALS):
            char = part[5]
            out.append(_CTRL_SPECIALS[char] if char in _CTRL_SPECIALS else ord(char.lower()) - ord("a") + 1)
        else:
            raise UsageError(f"Invalid detach keys ({text}) provided")
    return bytes(out)


class DetachScanner:
    """Finds the detach sequence in a client's input: ``feed`` returns the bytes to pass on and
    whether the sequence was typed. A partial match is held back until the next byte shows
    whether it continues the sequence (then it is dropped) or not (then it passes on)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for byte in data:
            if self.keys and byte == self.keys[len(self.held)]:
                self.held += bytes([byte])
                if len(self.held) == len(self.keys):
                    self.held = b""
                    return bytes(out), True
                continue
            if self.held:
                out += self.held
                self.held = b""
                if self.keys and byte == self.keys[0]:
                    self.held = bytes([byte])
                    continue
            out.append(byte)
        return bytes(out), False
