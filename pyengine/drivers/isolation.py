"""The isolator protocol: what confines a container's process (namespaces, cgroups)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Isolator(Protocol):
    """What every isolator implements. ``spec`` is the container's runtime spec (a dict in
    the OCI runtime spec's vocabulary); isolators apply their part of it.

    Optional, outside the protocol: ``warm() -> threading.Thread | None``, called once by a
    command about to start a container (``run``, ``start``) before anything else, to begin
    slow kernel work the launch will wait for in the background (cgroup v1 uses it for the
    RCU grace period of the first cgroup move). It must change nothing a container sees."""

    name: str

    def prepare(self, container_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Set up host-side resources before the process starts; return state to persist.

        Called by ``pyengine.runtime.launch.launch`` before it forks; raise a PyEngineError
        when the spec asks for what this host cannot give."""

    def enter(self, container_id: str, spec: dict[str, Any], pid: int) -> None:
        """Confine the started process ``pid`` (move it into a cgroup, ...).

        Called on the host side with the host pid of the container's PID 1 (or of an
        ``exec``'d process) while it waits on a pipe: after its fork, before it unshares its
        cgroup namespace, drops privileges and execs. Raising kills it and fails the launch."""

    def stats(self, container_id: str) -> dict[str, Any]:
        """Resource usage of the container, for ``stats`` and ``inspect``."""

    def release(self, container_id: str) -> None:
        """Remove everything ``prepare`` made; safe to call twice."""

    def status(self) -> list[tuple[str, str]]:
        """Key/value pairs that describe the isolator's state, for ``info``."""
