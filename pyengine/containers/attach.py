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
