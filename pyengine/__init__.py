"""pyengine: a container engine in Python, built around plugins.

This top-level module only carries the version; import submodules for anything else so that
``pyengine --version`` stays cheap.
"""

__version__ = "0.1.0"
