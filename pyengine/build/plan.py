"""The build plan: which stages a target needs, what each stands on, in what order to build.

``plan(dockerfile, target, build_args)`` resolves each FROM (expanded with the global ARGs
only) to ``scratch``, an earlier stage or an image reference, picks the target (default the
last stage), follows what it needs (FROM another stage, ``COPY --from``, ``RUN --mount
from=``), and gives the dependency edges so independent stages can build concurrently.
Knows nothing of storage or images: an image reference stays a string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pyengine.build.args import BuildArgs, StageArgs
from pyengine.build.dockerfile import Dockerfile, Stage
from pyengine.build.expand import expand
from pyengine.build.instructions import Arg, Copy, Instruction, Run
from pyengine.errors import DockerfileError


@dataclass(frozen=True)
class Source:
    """What a FROM, ``COPY --from`` or mount ``from`` names.

    kind: ``scratch`` | ``stage`` | ``image`` | ``context``; ``stage`` is the stage index for
    kind ``stage``; ``ref`` the expanded image reference for kind ``image`` (and the expanded
    word for the others); ``platform`` the expanded ``FROM --platform`` (bases only).
    """

    kind: str
    stage: int | None = None
    ref: str | None = None
    platform: str | None = None


@dataclass
class BuildPlan:
    """The stages one build needs and their edges.

    ``target``: the stage to build; ``needed``: the stages it needs, itself included, in
    Dockerfile order; ``bases``: stage index -> Source of its FROM (every stage, needed or
    not); ``depends``: stage index -> indexes it needs built first; ``build_args``: the
    BuildArgs (ask it for the unused warning after the build).
    """

    dockerfile: Dockerfile
    target: Stage
    needed: list[Stage]
    bases: dict[int, Source]
    depends: dict[int, set[int]]
    build_args: BuildArgs
    sources: dict[tuple[int, int, int], Source] = field(default_factory=dict)

    def order(self) -> list[list[Stage]]:
        """Groups of needed stages: each group needs only stages of earlier groups, so the
        stages of one group can build concurrently. Flattened, a topological order."""
        remaining = {s.index: s for s in self.needed}
        done: set[int] = set()
        groups: list[list[Stage]] = []
        while remaining:
            ready = [s for i, s in sorted(remaining.items()) if self.depends[i] <= done]
            if not ready:  # plan() refuses cycles, so this cannot happen for a plan it made
                raise DockerfileError("circular dependency between build stages")
            groups.append(ready)
            for stage in ready:
                done.add(stage.index)
                del remaining[stage.index]
        return groups

    def base(self, stage: Stage) -> Source:
        """What ``stage``'s FROM resolved to."""
        return self.bases[stage.index]

    def copy_source(self, stage: Stage, instruction: Instruction) -> Source:
        """What a ``COPY --from`` names (kind ``context`` for a COPY without ``--from``)."""
        return self.sources.get((stage.index, instruction.line, -1), Source("context"))

    def mount_source(self, stage: Stage, instruction: Instruction, mount_index: int) -> Source:
        """What the ``from`` of ``instruction.mounts[mount_index]`` names (``context`` if none)."""
        return self.sources.get((stage.index, instruction.line, mount_index), Source("context"))

    def resolve_from(self, stage: Stage, word: str, line: int) -> Source:
        """An already expanded ``--from`` word of ``stage`` (e.g. in an inherited ONBUILD
        trigger, which the plan could not see): a stage by name or index, else an image."""
        return _resolve_from(self.dockerfile, stage, word, line)

    def images(self) -> list[str]:
        """Every image reference the needed stages use (bases and ``--from``), first use first."""
        refs: list[str] = []
        needed = {s.index for s in self.needed}
        for index, source in sorted(self.bases.items()):
            if index in needed and source.kind == "image" and source.ref not in refs:
                refs.append(source.ref or "")
        for (index, _line, _n), source in sorted(self.sources.items()):
            if index in needed and source.kind == "image" and source.ref not in refs:
                refs.append(source.ref or "")
        return refs


def _resolve_base(dockerfile: Dockerfile, stage: Stage, scope: Mapping[str, str]) -> Source:
    try:
        ref = expand(stage.base, scope, dockerfile.escape)
        platform = (expand(stage.platform, scope, dockerfile.escape)
                    if stage.platform is not None else None)
    except DockerfileError as exc:
        raise exc.located(stage.line, dockerfile.filename) from None
    if not ref.strip():
        raise DockerfileError(f"base name ({stage.base}) should not be blank", stage.line,
                              dockerfile.filename)
    if ref.lower() == "scratch":
        return Source("scratch", ref="scratch", platform=platform)
    for earlier in dockerfile.stages[:stage.index]:
        if earlier.name == ref.lower():
            return Source("stage", earlier.index, ref, platform)
    return Source("image", ref=ref, platform=platform)


def _resolve_from(dockerfile: Dockerfile, stage: Stage, word: str, line: int) -> Source:
    """A ``--from`` value: a stage name, a stage index, else an image reference."""
    named = dockerfile.stage_by_name(word)
    if named is not None:
        index = named.index
    elif word.isdigit():
        index = int(word)
        if index >= len(dockerfile.stages):
            raise DockerfileError(f"invalid from flag value {word}: refers to a build stage "
                                  "that does not exist", line, dockerfile.filename)
    else:
        return Source("image", ref=word)
    if index == stage.index:
        raise DockerfileError(f"circular dependency detected on stage: {stage.name or index}",
                              line, dockerfile.filename)
    return Source("stage", index, word)


def _stage_sources(dockerfile: Dockerfile, stage: Stage,
                   args: StageArgs) -> dict[tuple[int, int, int], Source]:
    """The ``--from`` of every COPY and mount of ``stage``, expanded with its ARGs as declared
    at that point (ENV values are not known before the base image is, so they do not count)."""
    sources: dict[tuple[int, int, int], Source] = {}

    def word(value: str, line: int) -> str:
        try:
            return expand(value, args.lookup(), dockerfile.escape)
        except DockerfileError as exc:
            raise exc.located(line, dockerfile.filename) from None

    for instruction in stage.instructions:
        if isinstance(instruction, Arg):
            args.declare_instruction(instruction)
        elif isinstance(instruction, Copy) and instruction.from_ is not None:
            sources[(stage.index, instruction.line, -1)] = _resolve_from(
                dockerfile, stage, word(instruction.from_, instruction.line), instruction.line)
        elif isinstance(instruction, Run):
            for n, mount in enumerate(instruction.mounts):
                if mount.from_ is not None and mount.type in ("bind", "cache"):
                    sources[(stage.index, instruction.line, n)] = _resolve_from(
                        dockerfile, stage, word(mount.from_, instruction.line), instruction.line)
    return sources


def plan(dockerfile: Dockerfile, target: str | None = None,
         build_args: BuildArgs | Mapping[str, str | None] | None = None, *,
         target_platform: str | None = None, build_platform: str | None = None) -> BuildPlan:
    """The BuildPlan of ``dockerfile`` for ``target`` (a stage name; None: the last stage).

    Raises DockerfileError ``target stage "x" could not be found``, for a blank base name,
    and for a circular dependency between stages.
    """
    if not isinstance(build_args, BuildArgs):
        build_args = BuildArgs(build_args, dockerfile.global_args, target_platform,
                               build_platform, dockerfile.escape)
    if target is None:
        target_stage = dockerfile.stages[-1]
    else:
        found = dockerfile.stage_by_name(target)
        if found is None:
            raise DockerfileError(f'target stage "{target}" could not be found', None,
                                  dockerfile.filename)
        target_stage = found
    scope = build_args.global_scope()
    bases = {s.index: _resolve_base(dockerfile, s, scope) for s in dockerfile.stages}

    # Walk from the target: only the stages it reaches are looked at (their ARGs consumed).
    depends: dict[int, set[int]] = {}
    sources: dict[tuple[int, int, int], Source] = {}
    pending = [target_stage.index]
    while pending:
        index = pending.pop()
        if index in depends:
            continue
        stage = dockerfile.stages[index]
        stage_sources = _stage_sources(dockerfile, stage, build_args.stage())
        sources.update(stage_sources)
        edges = {s.stage for s in stage_sources.values() if s.kind == "stage"}
        if bases[index].kind == "stage":
            edges.add(bases[index].stage)
        depends[index] = {e for e in edges if e is not None}
        pending.extend(depends[index])
    _refuse_cycles(dockerfile, depends)
    needed = [s for s in dockerfile.stages if s.index in depends]
    return BuildPlan(dockerfile, target_stage, needed, bases, depends, build_args, sources)


def _refuse_cycles(dockerfile: Dockerfile, depends: dict[int, set[int]]) -> None:
    state: dict[int, str] = {}

    def visit(index: int) -> None:
        state[index] = "open"
        for dep in sorted(depends[index]):
            if state.get(dep) == "open":
                stage = dockerfile.stages[dep]
                raise DockerfileError(
                    f"circular dependency detected on stage: {stage.name or stage.index}",
                    stage.line, dockerfile.filename)
            if dep not in state:
                visit(dep)
        state[index] = "done"

    for index in sorted(depends):
        if index not in state:
            visit(index)
