"""The plugin marker: plugins decorate their hooks with :data:`hookimpl`."""

import pluggy

NAME = "pyengine"

hookspec = pluggy.HookspecMarker(NAME)
hookimpl = pluggy.HookimplMarker(NAME)

__all__ = ["NAME", "hookimpl", "hookspec"]
