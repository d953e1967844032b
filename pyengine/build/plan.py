"""The build plan: which stages a target needs, what each stands on, in what order to build.

``plan(dockerfile, target, build_args)`` resolves each FROM (expanded with the global ARGs
only) to ``scratch``, an earlier stage or an image reference, picks the target (default the
last stage), follows what it needs (FROM another stage, ``COPY --from``, ``RUN --mount
from=``), and gives the dependency edges so independent stages can build concurrently.
Knows nothing of storage or images: an image reference stays a string.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """What a FROM, ``COPY --from`` or mount ``from`` names.

    kind: ``scratch`` | ``stage`` | ``image`` | ``context``; ``stage`` is the stage index for
    kind ``stage``; ``ref`` the expanded image reference for kind ``image``.
    """

    kind: str
    stage: int | None = None
    ref: str | None = None
    platform: str | None = None


class BuildPlan:
    """The stages one build needs and their edges.

    ``target``: the stage to build; ``needed``: the stages it needs, itself last, in
    Dockerfile order; ``bases``: stage index -> Source of its FROM; ``depends``: stage index
    -> indexes it needs first; ``build_args``: the BuildArgs (ask it for the unused warning).
    """

    def order(self) -> list[list]:
        """Groups of stages: each group needs only stages of earlier groups."""
        raise NotImplementedError

    def copy_source(self, stage, instruction) -> Source:
        """What a COPY's ``--from`` (or a RUN mount's ``from``) names for ``instruction``."""
        raise NotImplementedError


def plan(dockerfile, target: str | None = None, build_args=None) -> BuildPlan:
    """The BuildPlan of ``dockerfile`` for ``target``; raises DockerfileError
    ``target stage "x" could not be found`` and for a circular dependency."""
    raise NotImplementedError
