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
