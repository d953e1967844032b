"""``python -m pyengine`` runs the CLI."""

from pyengine.cli import main

main()
