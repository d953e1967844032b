"""The monitor's native idle half, ``pyengine-shim`` (source: shim.c beside this file).

It is built by the package's install (setup.py); ``program()`` is None where it could not be
built, and monitors then stay in Python for the container's whole life.
"""

from __future__ import annotations

import os

# realpath: a strict editable install imports this file through a symlink, and the program
# is built beside the source
PROGRAM = os.path.join(os.path.dirname(os.path.realpath(__file__)), "pyengine-shim")


def program() -> str | None:
    """The shim's path when it is built and executable, else None."""
    return PROGRAM if os.access(PROGRAM, os.X_OK) else None
