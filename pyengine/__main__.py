"""``python -m pyengine`` runs the CLI, as the ``pyengine`` command does (through the fork
server when one answers)."""

from pyengine.forkserver.client import main

main()
