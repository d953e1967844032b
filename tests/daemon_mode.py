"""Running the CLI tests a second time through the daemon: ``via="daemon"`` starts ``pyengine
daemon`` on the test engine's roots and sets PYENGINE_HOST in its environment, so every
``engine_env.run(...)`` is ``pyengine -H unix://...``: the CLI as a client of the Docker API.

The daemon is local, so tests that look at the kernel (namespaces, cgroups, mounts) or the
stores directly keep working. Tests of daemonless-only machinery (the fork server, the
monitor's process tree, ``system check``) say so with ``@local_only(fixture, params, why)``.
"""

from __future__ import annotations

import pytest
from daemon_support import Daemon, start_daemon

from conftest import EngineEnv

VIAS = ["local", "daemon"]


class ThroughDaemon:
    """The daemon serving an engine_env while its commands go through it."""

    def __init__(self, engine_env: EngineEnv) -> None:
        self.engine_env = engine_env
        self.daemon: Daemon = start_daemon(engine_env)
        engine_env.env["PYENGINE_HOST"] = self.daemon.url

    def stop(self) -> None:
        """Stop the daemon (which must exit 0 on SIGTERM); later commands are daemonless."""
        self.engine_env.env.pop("PYENGINE_HOST", None)
        code = self.daemon.stop()
        assert code == 0, f"the daemon exited {code}:\n{self.daemon.log()[-4000:]}"


def serve(engine_env: EngineEnv, via: str) -> ThroughDaemon | None:
    """Start the daemon for ``via == "daemon"`` (after the engine's settings are in its env)."""
    if via != "daemon":
        return None
    return ThroughDaemon(engine_env)


def local_only(fixture: str, params: list, why: str) -> pytest.MarkDecorator:
    """Run this test only with the daemonless ``params`` of ``fixture`` (no skip: CI allows
    none); ``why`` says what daemonless-only behaviour it pins."""
    assert why, "say why the test is daemonless only"
    return pytest.mark.parametrize(fixture, [p for p in params if "daemon" not in str(p)], indirect=True)
