"""pyengine's bundled plugins, installed as the ``pyengine_plugins`` package.

Each sub-package is one plugin, declared as an entry point in the ``pyengine`` group exactly as a
third-party plugin would be. Plugins import only ``pyengine.drivers``, ``pyengine.errors``,
``pyengine.plugin`` and small helpers of the core.
"""
