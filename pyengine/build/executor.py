"""The build executor: a BuildPlan's stages -> layers, image configs and images.

Walks the frontend's plan (``pyengine.build.plan``); per stage it starts from the base
(``scratch``, an earlier stage's result, or an image, pulled when missing or with ``pull``),
keeps the image config, and runs each instruction: RUN in a container of the engine's own
runtime (created, started and removed through ``pyengine.containers.engine.Containers``, so it
is confined exactly as ``pyengine run`` confines) whose changes become a layer through the
storage driver's diff; COPY and ADD as a layer tar written without a container; every other
instruction into the config only. Each step's result is cached (``pyengine.build.cache``).
Progress goes to an ``on_event(kind, text)`` callback that the CLI prints and the daemon's
``POST /build`` streams. Calls the frontend, the image store, the storage driver, the container
engine and the registry client; the frontend knows nothing of this module.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fnmatch
import io
import json
import os
import posixpath
import shutil
import socket
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pyengine.build import instructions as ins
from pyengine.build import layers, metadata
from pyengine.build.cache import BuildCache, CachedStep, image_exists, step_key
from pyengine.errors import DockerfileError, NotFound, PyEngineError, UsageError
from pyengine.log import get_logger

log = get_logger("pyengine.build")

#: on_event(kind, text): kind ``step`` (``Step 1/5 : FROM busybox``), ``status`` (`` ---> ...``,
#: ``Removing intermediate container ...``), ``output`` (a RUN's stdout/stderr, raw chunks),
#: ``warning``, ``result`` (``Successfully built ...``, ``Successfully tagged ...``), ``aux``
#: (the final image ID), ``progress`` (pulling a base image: dockerd's JSON progress event
#: itself, a dict, as the legacy builder streams it). Every kind but ``output`` and ``progress``
#: is one line without its newline.
EventCallback = Callable[[str, Any], None]


class BuildError(PyEngineError):
    """A build step failed (a RUN exited non-zero, a COPY source is missing, ...)."""

    exit_code = 1


@dataclass
class BuildOptions:
    """What one build was asked for (the CLI flags, or the query of ``POST /build``)."""

    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str | None] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    pull: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    network: str = ""                       # none | host | bridge | NAME; "" the engine default
    secrets: dict[str, str] = field(default_factory=dict)   # id -> host file
    extra_hosts: list[str] = field(default_factory=list)
    source_date_epoch: int | None = None


@dataclass
class StageState:
    """A stage between two steps: the image config so far and where its layers are."""

    config: dict[str, Any]
    layers: list[dict[str, Any]]
    oci: bool
    image: str | None          # the image holding these layers (None: no layers)
    key: str
    committed: bool = False    # whether ``image`` is exactly this state
    top_layer: str | None = None

    @property
    def container_config(self) -> dict[str, Any]:
        return self.config.setdefault("config", {})

    def cached(self) -> CachedStep:
        return CachedStep(config=self.config, layers=self.layers, oci=self.oci, image=self.image,
                          committed=self.committed)


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _go_quoted(argv: list[str]) -> str:
    """A list as Go's ``%q`` prints it (BuildKit's CMD and ENTRYPOINT history): ``["a" "b"]``."""
    return "[" + " ".join(json.dumps(a, ensure_ascii=False) for a in argv) + "]"


def _argv_text(argv: list[str]) -> str:
    return " ".join(argv)


def _fields(instruction: ins.Instruction) -> dict[str, Any]:
    """An instruction's fields without its place in the file (the cache must not care)."""
    data = dataclasses.asdict(instruction)
    data.pop("line", None)
    data.pop("original", None)
    data["keyword"] = instruction.keyword
    return data


class Builder:
    """One build of one Dockerfile in one context on one engine."""

    def __init__(self, engine: Any, dockerfile: Any, context: Any, options: BuildOptions,
                 on_event: EventCallback | None = None) -> None:
        from pyengine.containers.engine import Containers

        self.engine = engine
        self.dockerfile = dockerfile
        self.context = context
        self.options = options
        self.store = engine.images
        self.storage = engine.storage
        self.containers = Containers(engine)
        self.cache = BuildCache(engine.config.data_root)
        self._on_event = on_event or (lambda kind, text: None)
        self._event_lock = threading.Lock()
        # Stages build in threads, and starting a RUN container forks: a fork while another
        # thread holds one of the engine's flocks (container store, image store, a storage
        # driver's mount counts) would hand that lock to the container's monitor for its whole
        # life. So every call into the engine holds this one lock; only waiting for a RUN and
        # writing layer tars run in parallel. (It also covers the image store's in-process lock
        # depth, which is not thread-safe.)
        self._store_lock = threading.RLock()
        self.epoch = options.source_date_epoch
        self.results: dict[int, StageState] = {}
        self.step_numbers: dict[tuple[int, int], int] = {}
        self.total_steps = 0
        self.plan: Any = None
        self._pulled: dict[str, Any] = {}

    # -- events --------------------------------------------------------------------------------
    def emit(self, kind: str, text: Any) -> None:
        with self._event_lock:
            self._on_event(kind, text)

    # -- the build -----------------------------------------------------------------------------
    def build(self) -> Any:
        """Build the target stage; returns the final image (tagged with ``options.tags``)."""
        from pyengine.build.args import BuildArgs
        from pyengine.build.plan import plan

        build_args = BuildArgs(self.options.build_args, self.dockerfile.global_args,
                               escape=self.dockerfile.escape)
        if "SOURCE_DATE_EPOCH" in build_args.given:
            build_args.consumed.add("SOURCE_DATE_EPOCH")  # the builder's own, as in BuildKit
        if self.epoch is None:
            # a build-arg first (BuildKit's way), else the environment of the building process
            self.epoch = layers.source_date_epoch(build_args=build_args.given)
        self.build_args = build_args
        self.plan = plan(self.dockerfile, self.options.target, build_args)
        number = 0
        for stage in self.plan.needed:
            number += 1
            self.step_numbers[(stage.index, -1)] = number
            for position in range(len(stage.instructions)):
                number += 1
                self.step_numbers[(stage.index, position)] = number
        self.total_steps = number
        groups = self.plan.order()
        if any(len(group) > 1 for group in groups):
            _import_for_monitors()
        try:
            for group in groups:
                if len(group) == 1:
                    self.results[group[0].index] = self._build_stage(group[0])
                    continue
                with ThreadPoolExecutor(max_workers=len(group)) as pool:
                    futures = {stage.index: pool.submit(self._build_stage, stage) for stage in group}
                    errors = []
                    for index, future in futures.items():
                        try:
                            self.results[index] = future.result()
                        except BaseException as exc:
                            errors.append(exc)
                    if errors:
                        raise errors[0]
            final = self.results[self.plan.target.index]
            image = self._finish(final)
        except BaseException:
            with contextlib.suppress(Exception):
                with self._store_lock:
                    self.store.discard_new_blobs()
            raise
        warning = build_args.unused_warning()
        if warning:
            self.emit("warning", warning)
        self.emit("aux", image.id)
        self.emit("result", f"Successfully built {_short(image.id)}")
        for tag in self.options.tags:
            from pyengine.images.reference import parse_reference

            self.emit("result", f"Successfully tagged {parse_reference(tag).familiar()}")
        log.info("build.done", image=image.id, tags=self.options.tags)
        return image

    def _finish(self, state: StageState) -> Any:
        config = copy.deepcopy(state.config)
        if self.options.labels:
            labels = dict(config.setdefault("config", {}).get("Labels") or {})
            labels.update(self.options.labels)
            config["config"]["Labels"] = labels
        with self._store_lock:
            image_id = layers.config_digest(config)
            if image_exists(self.store, image_id):
                # an unchanged rebuild: the image is there; only the tags may be new
                for tag in self.options.tags:
                    self.store.tag(image_id, tag)
                return self.store.resolve_image(image_id)
            return layers.commit_config(self.store, config, state.layers, oci=state.oci, refs=self.options.tags)

    # -- stages --------------------------------------------------------------------------------
    def _build_stage(self, stage: Any) -> StageState:
        source = self.plan.base(stage)
        number = self.step_numbers[(stage.index, -1)]
        self.emit("step", f"Step {number}/{self.total_steps} : {stage.from_instruction.original.strip()}"
                  if stage.from_instruction is not None else f"Step {number}/{self.total_steps} : FROM {stage.base}")
        state = self._base_state(source, stage)
        if state.image:
            self.emit("status", f" ---> {self._state_id(state)}")
        args = self.build_args.stage()
        stage_flags = {"cmd_set": False}
        triggers = list(state.container_config.get("OnBuild") or [])
        if triggers:
            from pyengine.build.dockerfile import parse_instruction

            state.container_config.pop("OnBuild", None)
            state.committed = False
            self.emit("status", f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}")
            for text in triggers:
                try:
                    trigger = parse_instruction(text, stage.line, self.dockerfile.escape, self.dockerfile.filename)
                except DockerfileError as exc:
                    raise exc.located(stage.line) from None
                state = self._step(stage, state, trigger, args, stage_flags)
        for position, instruction in enumerate(stage.instructions):
            number = self.step_numbers[(stage.index, position)]
            self.emit("step", f"Step {number}/{self.total_steps} : {instruction.original.strip()}")
            state = self._step(stage, state, instruction, args, stage_flags)
        return state

    def _base_state(self, source: Any, stage: Any) -> StageState:
        if source.kind == "scratch":
            config = layers.empty_image_config()
            return StageState(config=config, layers=[], oci=False, image=None, key=step_key("", "FROM scratch"))
        if source.kind == "stage":
            base = self.results[source.stage]
            return dataclasses.replace(base, config=copy.deepcopy(base.config), layers=list(base.layers))
        image = self._image(source.ref, stage.line)
        descriptors, oci = layers.base_layer_descriptors(self.store, image)
        config = layers.derive_config(image.image_config)
        return StageState(config=config, layers=descriptors, oci=oci, image=image.id,
                          key=step_key("", "FROM", image.id), committed=True, top_layer=image.top_layer)

    def _image(self, ref: str, line: int) -> Any:
        """A base or ``--from`` image: from the store, pulled when missing (always with --pull)."""
        with self._store_lock:
            if ref in self._pulled:
                return self._pulled[ref]
            image = None
            if not self.options.pull:
                with contextlib.suppress(NotFound):
                    image = self.store.resolve_image(ref)
            if image is None:
                image = self._pull(ref, line)
            self._pulled[ref] = image
            return image

    def _pull(self, ref: str, line: int) -> Any:
        from pyengine.images.reference import parse_reference
        from pyengine.registry.verbs import pull_image

        try:
            parsed = parse_reference(ref)
        except UsageError as exc:
            raise DockerfileError(f"invalid reference format: {exc}", line, self.dockerfile.filename) from None
        try:
            # the mirrors, then the registry; its layers' progress between the step's lines
            pulled = pull_image(self.engine, self.store, parsed, on_event=lambda event: self.emit("progress", event))
        except PyEngineError as exc:
            raise BuildError(f"pull access denied or repository does not exist for {ref}: {exc}") from None
        self.store.record_event("pull", parsed.familiar(), parsed.familiar_repository)
        return pulled.image

    # -- one step ------------------------------------------------------------------------------
    def _expander(self, state: StageState, args: Any) -> Any:
        from pyengine.build.expand import Expander

        return Expander(args.lookup(metadata.env_dict(state.container_config)), self.dockerfile.escape)

    def _step(self, stage: Any, state: StageState, instruction: ins.Instruction, args: Any,
              flags: dict[str, bool]) -> StageState:
        try:
            return self._step_unlocated(stage, state, instruction, args, flags)
        except DockerfileError as exc:
            if exc.line is None:
                raise exc.located(instruction.line, self.dockerfile.filename) from None
            raise

    def _step_unlocated(self, stage: Any, state: StageState, instruction: ins.Instruction, args: Any,
                        flags: dict[str, bool]) -> StageState:
        if isinstance(instruction, ins.Arg):
            args.declare_instruction(instruction, metadata.env_dict(state.container_config))
            text = "ARG " + " ".join(a.name if a.default is None else f"{a.name}={a.default}" for a in instruction.args)
            return self._metadata_step(state, instruction, text, lambda config: None,
                                       extra=[args.values()])
        expanded = instruction.expand(self._expander(state, args))
        if isinstance(expanded, ins.Run):
            extra = [args.run_environment(metadata.env_dict(state.container_config)),
                     self._mount_sources_key(stage, expanded)]
            return self._cached(state, expanded, extra, lambda key: self._run(stage, state, expanded, args, key))
        if isinstance(expanded, (ins.Copy, ins.Add)):
            return self._copy_step(stage, state, expanded)
        if isinstance(expanded, ins.Workdir):
            return self._workdir(state, expanded)
        return self._metadata_instruction(state, expanded, flags)

    def _cached(self, state: StageState, instruction: ins.Instruction, extra: list[Any],
                execute: Callable[[str], StageState]) -> StageState:
        key = step_key(state.key, _fields(instruction), *extra)
        if not self.options.no_cache:
            hit = self.cache.lookup(key, self.store)
            if hit is not None:
                self.emit("status", " ---> Using cache")
                result = StageState(config=hit.config, layers=hit.layers, oci=hit.oci, image=hit.image, key=key,
                                    committed=hit.committed, top_layer=self._top_layer_of(hit))
                self.emit("status", f" ---> {self._state_id(result)}")
                log.info("build.cache_hit", key=key, instruction=instruction.keyword)
                return result
        result = execute(key)
        result.key = key
        self.cache.record(key, result.cached())
        self.emit("status", f" ---> {self._state_id(result)}")
        return result

    def _top_layer_of(self, step: CachedStep) -> str | None:
        if not step.layers:
            return None
        from pyengine.images.store import chain_ids

        return chain_ids(step.config["rootfs"]["diff_ids"])[-1].removeprefix("sha256:")

    def _state_id(self, state: StageState) -> str:
        return _short(state.image if state.committed and state.image else layers.config_digest(state.config))

    def _created(self) -> str:
        return layers.now_iso(self.epoch)

    # -- metadata ------------------------------------------------------------------------------
    def _metadata_step(self, state: StageState, instruction: ins.Instruction, created_by: str,
                       change: Callable[[dict[str, Any]], None], extra: list[Any] | None = None) -> StageState:
        def execute(key: str) -> StageState:
            config = copy.deepcopy(state.config)
            change(config)
            created = self._created()
            config["created"] = created
            layers.add_history(config, created_by, empty_layer=True, created=created)
            return dataclasses.replace(state, config=config, committed=False)
        return self._cached(state, instruction, [created_by, *(extra or [])], execute)

    def _metadata_instruction(self, state: StageState, instruction: ins.Instruction,
                              flags: dict[str, bool]) -> StageState:
        def apply(name: str, value: Any, **kw: Any) -> Callable[[dict[str, Any]], None]:
            def change(config: dict[str, Any]) -> None:
                try:
                    metadata.apply(config.setdefault("config", {}), name, value, **kw)
                except UsageError as exc:
                    raise DockerfileError(str(exc), instruction.line, self.dockerfile.filename) from None
            return change

        shell = list(state.container_config.get("Shell") or metadata.DEFAULT_SHELL)
        if isinstance(instruction, ins.Cmd):
            argv = list(instruction.command) if instruction.exec_form else shell + [str(instruction.command)]
            flags["cmd_set"] = True
            return self._metadata_step(state, instruction, f"CMD {_go_quoted(argv)}", apply("CMD", argv))
        if isinstance(instruction, ins.Entrypoint):
            argv = list(instruction.command) if instruction.exec_form else shell + [str(instruction.command)]
            return self._metadata_step(state, instruction, f"ENTRYPOINT {_go_quoted(argv)}",
                                       apply("ENTRYPOINT", argv, cmd_set_in_stage=flags["cmd_set"]),
                                       extra=[flags["cmd_set"]])
        if isinstance(instruction, ins.Env):
            text = "ENV " + " ".join(f"{k}={v}" for k, v in instruction.pairs)
            return self._metadata_step(state, instruction, text, apply("ENV", list(instruction.pairs)))
        if isinstance(instruction, ins.Label):
            text = "LABEL " + " ".join(f"{k}={v}" for k, v in instruction.pairs)
            return self._metadata_step(state, instruction, text, apply("LABEL", list(instruction.pairs)))
        if isinstance(instruction, ins.Expose):
            ports = instruction.exposed_ports()
            text = "EXPOSE map[" + " ".join(f"{p}:{{}}" for p in ports) + "]"
            return self._metadata_step(state, instruction, text, apply("EXPOSE", ports))
        if isinstance(instruction, ins.User):
            return self._metadata_step(state, instruction, f"USER {instruction.user}", apply("USER", instruction.user))
        if isinstance(instruction, ins.Volume):
            text = f"VOLUME [{' '.join(instruction.paths)}]"
            return self._metadata_step(state, instruction, text, apply("VOLUME", list(instruction.paths)))
        if isinstance(instruction, ins.StopSignal):
            return self._metadata_step(state, instruction, f"STOPSIGNAL {instruction.signal}",
                                       apply("STOPSIGNAL", instruction.signal))
        if isinstance(instruction, ins.Shell):
            return self._metadata_step(state, instruction, f"SHELL [{' '.join(instruction.shell)}]",
                                       apply("SHELL", list(instruction.shell)))
        if isinstance(instruction, ins.Healthcheck):
            check: dict[str, Any] = {"Test": list(instruction.test)}
            for key, value in (("Interval", instruction.interval), ("Timeout", instruction.timeout),
                               ("StartPeriod", instruction.start_period),
                               ("StartInterval", instruction.start_interval), ("Retries", instruction.retries)):
                if value:
                    check[key] = value
            text = "HEALTHCHECK " + instruction.original.split(None, 1)[1].strip() \
                if len(instruction.original.split(None, 1)) > 1 else "HEALTHCHECK"
            return self._metadata_step(state, instruction, text, apply("HEALTHCHECK", check))
        if isinstance(instruction, ins.Onbuild):
            return self._metadata_step(state, instruction, f"ONBUILD {instruction.expression}",
                                       apply("ONBUILD", instruction.expression))
        if isinstance(instruction, ins.Maintainer):
            def author(config: dict[str, Any]) -> None:
                config["author"] = instruction.name
            return self._metadata_step(state, instruction, f"MAINTAINER {instruction.name}", author)
        raise DockerfileError(f"unknown instruction: {instruction.keyword}", instruction.line, self.dockerfile.filename)

    # -- layers --------------------------------------------------------------------------------
    def _commit_layer(self, state: StageState, blob: layers.LayerBlob, created_by: str,
                      change: Callable[[dict[str, Any]], None] | None = None) -> StageState:
        config = copy.deepcopy(state.config)
        if change is not None:
            change(config)
        created = self._created()
        config["created"] = created
        layers.add_layer(config, blob)
        layers.add_history(config, created_by, empty_layer=False, created=created)
        descriptors = [*state.layers, blob.descriptor(state.oci)]
        with self._store_lock:
            image = layers.commit_config(self.store, config, descriptors, oci=state.oci)
        return StageState(config=config, layers=descriptors, oci=state.oci, image=image.id, key=state.key,
                          committed=True, top_layer=image.top_layer)

    def _no_layer(self, state: StageState, created_by: str, change: Callable[[dict[str, Any]], None] | None = None
                  ) -> StageState:
        config = copy.deepcopy(state.config)
        if change is not None:
            change(config)
        created = self._created()
        config["created"] = created
        layers.add_history(config, created_by, empty_layer=True, created=created)
        return dataclasses.replace(state, config=config, committed=False)

    @contextlib.contextmanager
    def rootfs(self, state: StageState) -> Iterator[str]:
        """The state's filesystem, mounted read-only for the block (an empty dir for none)."""
        top = state.top_layer
        if top is None and state.layers:
            from pyengine.images.store import chain_ids

            top = chain_ids(state.config["rootfs"]["diff_ids"])[-1].removeprefix("sha256:")
        if top is None:
            with tempfile.TemporaryDirectory(prefix="pyengine-scratch-") as empty:
                yield empty
            return
        with self._store_lock:
            path = self.storage.get(top)
        try:
            yield os.path.realpath(path)
        finally:
            with self._store_lock:
                self.storage.put(top)

    # -- WORKDIR -------------------------------------------------------------------------------
    def _workdir(self, state: StageState, instruction: ins.Workdir) -> StageState:
        path = metadata.join_workdir(state.container_config.get("WorkingDir") or "/", instruction.path)
        created_by = f"WORKDIR {path}"

        def execute(key: str) -> StageState:
            def change(config: dict[str, Any]) -> None:
                config.setdefault("config", {})["WorkingDir"] = path
            with self.rootfs(state) as root:
                members = self._missing_dirs(root, path, self._owner(root, state.container_config.get("User") or ""))
                members = _with_parents(root, members)
            if not members:
                return self._no_layer(state, created_by, change)
            blob = layers.write_tar_members(self.store, members, epoch=self.epoch)
            return self._commit_layer(state, blob, created_by, change)
        return self._cached(state, instruction, [path, state.container_config.get("User") or ""], execute)

    def _owner(self, root: str, user: str) -> tuple[int, int]:
        if not user:
            return 0, 0
        from pyengine.containers.spec import resolve_user

        try:
            uid, gid, _ = resolve_user(Path(root), user)
        except UsageError as exc:
            raise DockerfileError(str(exc)) from None
        return uid, gid

    def _missing_dirs(self, root: str, path: str, owner: tuple[int, int], mode: int = 0o755
                      ) -> list[layers.Member]:
        """Tar entries for the directories of ``path`` that ``root`` lacks (the last one owned
        by ``owner``), each at its resolved place inside the root."""
        from pyengine.layers.extract import resolve_in_root

        members: list[layers.Member] = []
        parts = [p for p in path.split("/") if p]
        now = int(time.time()) if self.epoch is None else self.epoch
        for i in range(len(parts)):
            host = resolve_in_root(root, "/".join(parts[: i + 1]))
            if os.path.isdir(host):
                continue
            if os.path.lexists(host):
                raise DockerfileError(f"cannot create directory {'/' + '/'.join(parts[: i + 1])}: "
                                      "a file of that name exists")
            info = tarfile.TarInfo(os.path.relpath(host, root))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, now
            info.uid, info.gid = owner if i == len(parts) - 1 else (0, 0)
            members.append((info, None))
            # the rest of the path lies in a directory this layer creates: no symlinks there
            for j in range(i + 1, len(parts)):
                sub = tarfile.TarInfo(posixpath.join(info.name, *parts[i + 1: j + 1]))
                sub.type, sub.mode, sub.mtime = tarfile.DIRTYPE, mode, now
                sub.uid, sub.gid = owner if j == len(parts) - 1 else (0, 0)
                members.append((sub, None))
            break
        return members

    # -- RUN -----------------------------------------------------------------------------------
    def _run(self, stage: Any, state: StageState, instruction: ins.Run, args: Any, key: str) -> StageState:
        config = state.container_config
        shell = list(config.get("Shell") or metadata.DEFAULT_SHELL)
        script = instruction.script_heredoc() if not instruction.exec_form else None
        cleanup: list[Callable[[], None]] = []
        binds: list[str] = []
        tmpfs: dict[str, str] = {}
        mount_points: list[str] = []
        try:
            if instruction.exec_form:
                argv = list(instruction.command)
            elif script is not None and script.content.startswith("#!"):
                scratch = tempfile.mkdtemp(prefix="pyengine-heredoc-")
                cleanup.append(lambda: shutil.rmtree(scratch, ignore_errors=True))
                script_path = os.path.join(scratch, "script")
                Path(script_path).write_text(script.content)
                os.chmod(script_path, 0o755)
                target = f"/dev/pipes/{script.name}"
                binds.append(f"{script_path}:{target}:ro")
                argv = [target]
            else:
                argv = shell + [instruction.shell_script()]
            for index, mount in enumerate(instruction.mounts):
                self._mount(stage, state, instruction, index, mount, binds, tmpfs, mount_points, cleanup)
            env = metadata.env_dict(config)
            env.update(args.run_environment(env))
            network = instruction.network or self.options.network or ""
            if network == "default":
                network = self.options.network or ""
            created_by = f"RUN {_argv_text(argv)}"
            if instruction.mounts:
                created_by = "RUN " + " ".join(f"--mount={self._mount_text(m)}" for m in instruction.mounts) \
                    + f" {_argv_text(argv)}"
            return self._run_container(state, argv, env, binds, tmpfs, mount_points, network,
                                       metadata.created_by("RUN", created_by))
        finally:
            for undo in reversed(cleanup):
                with contextlib.suppress(Exception):
                    undo()

    def _mount_sources_key(self, stage: Any, instruction: ins.Run) -> list[str]:
        """What a RUN's bind mounts show it: the context checksum of their sources, or the
        stage or image they come from (cache mounts and secrets do not count, as in BuildKit)."""
        keys = []
        for index, mount in enumerate(instruction.mounts):
            if mount.type != "bind":
                continue
            source = self.plan.mount_source(stage, instruction, index)
            if source.kind == "context":
                keys.append(self.context.checksum([mount.source or "."]))
            else:
                keys.append(self._source_key(source, stage))
        return keys

    @staticmethod
    def _mount_text(mount: ins.Mount) -> str:
        parts = [f"type={mount.type}"]
        for name in ("target", "source", "id"):
            value = getattr(mount, name)
            if value:
                parts.append(f"{name}={value}")
        return ",".join(parts)

    def _mount(self, stage: Any, state: StageState, instruction: ins.Run, index: int, mount: ins.Mount,
               binds: list[str], tmpfs: dict[str, str], mount_points: list[str],
               cleanup: list[Callable[[], None]]) -> None:
        workdir = state.container_config.get("WorkingDir") or "/"
        if mount.type == "secret":
            secret_id = mount.id or (posixpath.basename(mount.target) if mount.target else None)
            if not secret_id:
                raise DockerfileError("a secret mount needs an id or a target")
            target = mount.target or f"/run/secrets/{secret_id}"
            source = self.options.secrets.get(secret_id)
            if source is None:
                if mount.required:
                    raise BuildError(f"secret {secret_id} not found: give it with --secret id={secret_id},src=PATH")
                return
            copy_dir = tempfile.mkdtemp(prefix="pyengine-secret-")
            cleanup.append(lambda: shutil.rmtree(copy_dir, ignore_errors=True))
            secret_copy = os.path.join(copy_dir, "secret")
            shutil.copyfile(source, secret_copy)
            os.chown(secret_copy, mount.uid or 0, mount.gid or 0)
            os.chmod(secret_copy, mount.mode if mount.mode is not None else 0o400)
            binds.append(f"{secret_copy}:{target}:ro")
            mount_points.append(target)
            return
        if not mount.target:
            raise DockerfileError(f"a {mount.type} mount needs a target")
        target = metadata.join_workdir(workdir, mount.target)
        mount_points.append(target)
        if mount.type == "tmpfs":
            tmpfs[target] = f"size={mount.size}" if mount.size else ""
            return
        if mount.type == "cache":
            path = self.cache.mount_dir(mount.id or target, mount.mode if mount.mode is not None else 0o755,
                                        mount.uid or 0, mount.gid or 0)
            binds.append(f"{path}:{target}:{'ro' if mount.readonly else 'rw'}")
            return
        if mount.type != "bind":
            raise DockerfileError(f"unsupported mount type {mount.type!r} (bind, cache, tmpfs, secret)")
        source = self.plan.mount_source(stage, instruction, index)
        with self._source_root(source, stage) as root:
            if source.kind == "context" and root is None:
                root = self.context.root
            host = self._resolve_in(str(root), mount.source or "/")
            if not os.path.lexists(host):
                raise DockerfileError(f"mount source {mount.source} does not exist")
            # A bind mount's writes are discarded (BuildKit): the RUN gets a copy it may change,
            # or the source itself read-only.
            copy_dir = tempfile.mkdtemp(prefix="pyengine-bind-")
            cleanup.append(lambda: shutil.rmtree(copy_dir, ignore_errors=True))
            copied = os.path.join(copy_dir, "src")
            if os.path.isdir(host) and not os.path.islink(host):
                shutil.copytree(host, copied, symlinks=True)
            else:
                shutil.copy2(host, copied, follow_symlinks=False)
        binds.append(f"{copied}:{target}:{'ro' if mount.readonly else 'rw'}")

    def _run_container(self, state: StageState, argv: list[str], env: dict[str, str], binds: list[str],
                       tmpfs: dict[str, str], mount_points: list[str], network: str, created_by: str) -> StageState:
        from pyengine.containers import attach

        if state.image is None:
            raise BuildError(f"The command '{_argv_text(argv)}' cannot run: the stage has no filesystem yet "
                             "(FROM scratch)")
        image_ref = self._holder(state)
        config = state.container_config
        container_config: dict[str, Any] = {
            "Cmd": argv, "Entrypoint": [], "Env": [f"{k}={v}" for k, v in env.items()],
            "WorkingDir": config.get("WorkingDir") or "/", "User": config.get("User") or "",
            "Labels": {}, "Tty": False, "OpenStdin": False, "Image": image_ref,
        }
        host_config = {"NetworkMode": network, "Binds": binds, "Tmpfs": tmpfs,
                       "ExtraHosts": list(self.options.extra_hosts), "AutoRemove": False,
                       "RestartPolicy": {"Name": "no"}, "LogConfig": {"Type": "json-file", "Config": {}}}
        with self._store_lock:
            record = self.containers.create(image_ref, container_config, host_config)
        try:
            self.emit("status", f" ---> Running in {record.id[:12]}")
            log.info("build.run", container=record.id, command=argv)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                try:
                    with self._store_lock:
                        self.containers.start(record.id, client=theirs)
                finally:
                    theirs.close()
                code = self._relay(ours, attach)
            finally:
                ours.close()
            if code is None:
                with self._store_lock:
                    code = self.containers.wait(record.id)
            if code != 0:
                raise BuildError(f"The command '{_argv_text(argv)}' returned a non-zero code: {code}")
            with self._store_lock:
                blob, changed = layers.layer_from_storage(self.store, self.storage, record.layer_id,
                                                          state.top_layer, extra_mount_points=mount_points,
                                                          epoch=self.epoch)
            if changed == 0:
                result = self._no_layer(state, created_by)
            else:
                result = self._commit_layer(state, blob, created_by)
        finally:
            self.emit("status", f"Removing intermediate container {record.id[:12]}")
            with contextlib.suppress(PyEngineError), self._store_lock:
                self.containers.remove(record.id, force=True)
        return result

    def _holder(self, state: StageState) -> str:
        """An image in the store with exactly this state's layers, for a container to stand on."""
        if state.image is None:
            raise BuildError("the stage has no filesystem yet")
        return state.image

    def _relay(self, sock: socket.socket, attach: Any) -> int | None:
        reader = attach.FrameReader()
        while True:
            data = sock.recv(65536)
            if not data:
                return None
            for stream, payload in reader.feed(data):
                if stream in (attach.STDOUT, attach.STDERR):
                    self.emit("output", payload.decode(errors="replace"))
                elif stream == attach.EXIT:
                    return int(payload or b"0")

    # -- COPY / ADD ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _source_root(self, source: Any, stage: Any) -> Iterator[str | None]:
        """The root a COPY --from or mount reads: a stage's or image's filesystem (mounted for
        the block); None for the build context."""
        if source.kind == "context":
            yield None
            return
        if source.kind == "stage":
            with self.rootfs(self.results[source.stage]) as root:
                yield root
            return
        if source.kind == "scratch":
            with tempfile.TemporaryDirectory(prefix="pyengine-scratch-") as empty:
                yield empty
            return
        image = self._image(source.ref, stage.line)
        state = StageState(config=image.image_config, layers=[], oci=False, image=image.id, key="",
                           committed=True, top_layer=image.top_layer)
        with self.rootfs(state) as root:
            yield root

    def _source_key(self, source: Any, stage: Any) -> str:
        if source.kind == "context":
            return "context"
        if source.kind == "stage":
            return self.results[source.stage].key
        if source.kind == "image":
            return self._image(source.ref, stage.line).id
        return source.kind

    @staticmethod
    def _resolve_in(root: str, path: str, follow_last: bool = False) -> str:
        from pyengine.layers.extract import resolve_in_root

        rel = posixpath.normpath("/" + path).lstrip("/")
        return resolve_in_root(root, rel, follow_last=follow_last) if rel else root

    def _copy_step(self, stage: Any, state: StageState, instruction: ins.Copy | ins.Add) -> StageState:
        source = self.plan.copy_source(stage, instruction) if isinstance(instruction, ins.Copy) else None
        if source is None:
            from pyengine.build.plan import Source

            source = Source("context")
        urls = [s for s in instruction.sources if isinstance(instruction, ins.Add) and _is_url(s)]
        local = [s for s in instruction.sources if s not in urls]
        downloads: list[tuple[str, str, dict[str, str]]] = []
        try:
            if isinstance(instruction, ins.Add):  # urls is empty for a COPY
                for url in urls:
                    downloads.append(self._download(url, instruction))
            if source.kind == "context":
                checksum = self.context.checksum(local, instruction.exclude) if local else ""
            else:
                checksum = self._source_key(source, stage)
            extra = [checksum, [d[2] for d in downloads], state.container_config.get("WorkingDir") or "/"]

            def execute(key: str) -> StageState:
                return self._copy(stage, state, instruction, source, local, downloads)
            return self._cached(state, instruction, extra, execute)
        finally:
            for path, _, _ in downloads:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _download(self, url: str, instruction: ins.Add) -> tuple[str, str, dict[str, str]]:
        """Fetch an ADD URL to a temp file; (path, file name, {digest, mtime})."""
        import hashlib
        import urllib.error
        import urllib.parse
        import urllib.request
        from email.utils import parsedate_to_datetime

        if url.startswith("git@") or url.endswith(".git"):
            raise DockerfileError(f"ADD of a git repository is not supported: {url}")
        digest = hashlib.sha256()
        fd, path = tempfile.mkstemp(prefix="pyengine-add-")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                modified = response.headers.get("Last-Modified")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            os.unlink(path)
            raise BuildError(f"failed to fetch {url}: {getattr(exc, 'reason', exc)}") from None
        actual = "sha256:" + digest.hexdigest()
        if instruction.checksum and instruction.checksum != actual:
            os.unlink(path)
            raise DockerfileError(f"digest mismatch {actual}: {instruction.checksum}")
        mtime = "0"
        if modified:
            with contextlib.suppress(TypeError, ValueError):
                mtime = str(int(parsedate_to_datetime(modified).timestamp()))
        name = posixpath.basename(urllib.parse.urlparse(url).path.rstrip("/")) or "download"
        return path, name, {"digest": actual, "mtime": mtime}

    def _copy(self, stage: Any, state: StageState, instruction: ins.Copy | ins.Add, source: Any,
              local: list[str], downloads: list[tuple[str, str, dict[str, str]]]) -> StageState:
        keyword = instruction.keyword
        workdir = state.container_config.get("WorkingDir") or "/"
        dest = instruction.dest
        dest_is_dir_syntax = dest.endswith("/") or dest in (".", "..") or dest.endswith("/.")
        dest_abs = metadata.join_workdir(workdir, dest)
        chmod = None
        if instruction.chmod:
            try:
                chmod = int(instruction.chmod, 8)
            except ValueError:
                raise DockerfileError(f"invalid chmod parameter {instruction.chmod!r}: "
                                      "an octal mode is needed") from None
        with contextlib.ExitStack() as stack:
            parent_root = stack.enter_context(self.rootfs(state))
            owner = None
            if instruction.chown:
                owner = self._chown(parent_root, instruction.chown)
            entries: list[_Entry] = []
            heredoc_dir = None
            if instruction.heredocs:
                heredoc_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="pyengine-heredoc-"))
                for doc in instruction.heredocs:
                    path = os.path.join(heredoc_dir, doc.name)
                    Path(path).write_text(doc.content)
                    os.chmod(path, 0o644)
                    entries.append(_Entry(doc.name, path, "file"))
            if local:
                if source.kind == "context":
                    try:
                        resolved = self.context.resolve(local)
                    except DockerfileError as exc:
                        raise exc.located(instruction.line, self.dockerfile.filename) from None
                    for item in resolved:
                        for entry in item.entries:
                            entries.append(_Entry(posixpath.basename(entry.relpath) or ".", entry.path, entry.kind,
                                                  entry.relpath, tuple(instruction.exclude)))
                else:
                    root = stack.enter_context(self._source_root(source, stage))
                    assert root is not None
                    for word in local:
                        matched = self._glob(root, word)
                        if not matched:
                            raise DockerfileError(f"{keyword} failed: file not found in build stage: stat {word}: "
                                                  "no such file or directory", instruction.line,
                                                  self.dockerfile.filename)
                        entries.extend(_Entry(posixpath.basename(m) or ".", m, _kind(m)) for m in matched)
            for path, name, _ in downloads:
                entries.append(_Entry(name, path, "url"))
            if len(entries) > 1 and not dest_is_dir_syntax:
                raise DockerfileError(f"When using {keyword} with more than one source file, the destination "
                                      "must be a directory and end with a /", instruction.line,
                                      self.dockerfile.filename)
            members = _with_parents(parent_root, self._copy_members(
                parent_root, entries, dest_abs, dest_is_dir_syntax, owner, chmod, isinstance(instruction, ins.Add)))
            srcs = " ".join([*instruction.sources, *(f"<<{d.name}" for d in instruction.heredocs)])
            flags = "".join(f"--{name}={value} " for name, value in (("from", getattr(instruction, "from_", None)),
                                                                      ("chown", instruction.chown),
                                                                      ("chmod", instruction.chmod)) if value)
            created_by = metadata.created_by(keyword, f"{keyword} {flags}{srcs} {dest}")
            blob = layers.write_tar_members(self.store, members, epoch=self.epoch)
        return self._commit_layer(state, blob, created_by)

    def _chown(self, root: str, chown: str) -> tuple[int, int]:
        from pyengine.containers.spec import resolve_user

        user, sep, group = chown.partition(":")
        try:
            uid, gid, _ = resolve_user(Path(root), chown)
        except UsageError as exc:
            raise DockerfileError(str(exc)) from None
        if not sep and user.isdigit():
            gid = uid  # a bare UID means the same GID, as Docker says
        return uid, gid

    def _glob(self, root: str, word: str) -> list[str]:
        """Host paths matching ``word`` (Go filepath.Match wildcards per element) inside ``root``."""
        parts = [p for p in posixpath.normpath("/" + word).split("/") if p]
        current = [root]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            following = []
            for base in current:
                host_base = base if base == root else self._resolve_in(root, os.path.relpath(base, root), True)
                if any(c in part for c in "*?["):
                    if not os.path.isdir(host_base):
                        continue
                    for name in sorted(os.listdir(host_base)):
                        if fnmatch.fnmatchcase(name, part):
                            following.append(os.path.join(host_base, name))
                else:
                    candidate = os.path.join(host_base, part)
                    if os.path.lexists(candidate):
                        following.append(candidate)
            current = following
            if not last:
                current = [self._resolve_in(root, os.path.relpath(c, root), True) for c in current]
        if not parts:
            return [root]
        return current

    def _copy_members(self, parent_root: str, entries: list[_Entry], dest_abs: str, dest_is_dir_syntax: bool,
                      owner: tuple[int, int] | None, chmod: int | None, is_add: bool
                      ) -> list[layers.Member]:
        """The layer's tar entries: each source under the destination as COPY and ADD place it
        (a directory's contents into the destination directory; a file at the destination, or
        into it when it is a directory), at paths resolved inside the parent's filesystem."""
        dest_host = self._resolve_in(parent_root, dest_abs, follow_last=True)
        dest_exists_dir = os.path.isdir(dest_host)
        into_dir = dest_is_dir_syntax or dest_exists_dir or len(entries) > 1 \
            or (len(entries) == 1 and entries[0].kind == "dir")
        members: list[layers.Member] = []
        if into_dir:
            members.extend(self._missing_dirs(parent_root, dest_abs, owner or (0, 0)))
            base = members[-1][0].name if members else os.path.relpath(dest_host, parent_root)
        else:
            parent_abs = posixpath.dirname(dest_abs.rstrip("/")) or "/"
            members.extend(self._missing_dirs(parent_root, parent_abs, (0, 0)))
            parent_rel = members[-1][0].name if members else os.path.relpath(
                self._resolve_in(parent_root, parent_abs, follow_last=True), parent_root)
            base = posixpath.join(parent_rel, posixpath.basename(dest_abs.rstrip("/")))
        base = "" if base == "." else base
        for entry in entries:
            # COPY from the context gives root ownership; from a stage or image, the owners stay.
            keep_owner = entry.context_rel is None and entry.kind != "url" and owner is None
            target = posixpath.join(base, entry.name) if into_dir else base
            if entry.kind == "url":
                mode = 0o600 if chmod is None else chmod
                members.append(self._file_member(target, entry.host, os.stat(entry.host), owner or (0, 0), mode))
            elif is_add and entry.kind == "file" and _is_archive(entry.host):
                members.extend(self._archive_members(entry.host, base if into_dir else posixpath.dirname(base)))
            elif entry.kind == "dir":
                for rel, sub_host in self._walk(entry):
                    member = self._entry_member(posixpath.join(base, rel) if base else rel, sub_host,
                                                os.lstat(sub_host), owner, chmod, keep_owner)
                    if member is not None:
                        members.append(member)
            else:
                member = self._entry_member(target, entry.host, os.lstat(entry.host), owner, chmod, keep_owner)
                if member is not None:
                    members.append(member)
        return members

    def _walk(self, entry: _Entry) -> Iterator[tuple[str, str]]:
        """Everything under a source directory, (relative path, host path), no symlink followed;
        the build context's walk applies .dockerignore."""
        if entry.context_rel is not None:
            top = entry.context_rel.strip("/")
            top = "" if top == "." else top
            for item in self.context.walk(top, entry.exclude):
                rel = item.relpath[len(top) + 1:] if top else item.relpath
                yield rel, item.path
            return
        for dirpath, dirnames, filenames in os.walk(entry.host):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                yield os.path.relpath(full, entry.host), full

    def _entry_member(self, name: str, host: str, st: os.stat_result, owner: tuple[int, int] | None,
                      chmod: int | None, keep_owner: bool) -> layers.Member | None:
        info = tarfile.TarInfo(name)
        info.mtime = int(st.st_mtime)
        info.uid, info.gid = owner if owner is not None else ((st.st_uid, st.st_gid) if keep_owner else (0, 0))
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            info.type, info.mode = tarfile.DIRTYPE, chmod if chmod is not None else mode
            return info, None
        if stat.S_ISLNK(st.st_mode):
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(host), 0o777
            return info, None
        if stat.S_ISREG(st.st_mode):
            info.type, info.size, info.mode = tarfile.REGTYPE, st.st_size, chmod if chmod is not None else mode
            return info, _LazyFile(host)
        if stat.S_ISFIFO(st.st_mode):
            info.type, info.mode = tarfile.FIFOTYPE, mode
            return info, None
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor, info.mode = os.major(st.st_rdev), os.minor(st.st_rdev), mode
            return info, None
        return None  # a socket: nothing a layer can hold

    def _file_member(self, name: str, host: str, st: os.stat_result, owner: tuple[int, int], mode: int
                     ) -> layers.Member:
        info = tarfile.TarInfo(name)
        info.type, info.size, info.mode, info.mtime = tarfile.REGTYPE, st.st_size, mode, int(st.st_mtime)
        info.uid, info.gid = owner
        return info, _LazyFile(host)

    def _archive_members(self, host: str, base: str) -> Iterator[layers.Member]:
        """ADD of a local tar: its entries under ``base`` (names cleaned, nothing climbs out)."""
        from pyengine.errors import InvalidArchive
        from pyengine.layers.extract import WHITEOUT_PREFIX, clean_name

        stream = _open_archive(host)
        buffers: list[layers.Member] = []
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    rel = clean_name(member.name)
                    if any(p.startswith(WHITEOUT_PREFIX) for p in rel.split("/")):
                        raise InvalidArchive(f"ADD archive entry {member.name!r}: .wh. names are reserved")
                    member.name = posixpath.join(base, rel) if rel else (base or ".")
                    if member.islnk():
                        member.linkname = posixpath.join(base, clean_name(member.linkname))
                    data = None
                    if member.isreg():
                        extracted = tar.extractfile(member)
                        spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
                        if extracted is not None:
                            shutil.copyfileobj(extracted, spool)
                        spool.seek(0)
                        data = spool
                    buffers.append((member, data))
        except (tarfile.TarError, InvalidArchive) as exc:
            raise DockerfileError(f"ADD: cannot extract {posixpath.basename(host)}: {exc}") from None
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()
        return iter(buffers)


def _import_for_monitors() -> None:
    """Import what a RUN container's monitor imports after its fork, before any thread
    starts: a fork while another thread imports would leave the child the import lock."""
    import importlib

    for name in ("pyengine.containers.monitor", "pyengine.containers.networking", "pyengine.containers.spec",
                 "pyengine.containers.logfile", "pyengine.containers.attach", "pyengine.runtime.launch",
                 "pyengine.runtime.spec", "pyengine.runtime.kernel", "pyengine.shim", "pyengine.procfs"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


@dataclass
class _Entry:
    """One top-level source of a COPY/ADD: its name at the destination, its host path, its kind
    (file dir symlink other url), and its path in the build context (None: not from it)."""

    name: str
    host: str
    kind: str
    context_rel: str | None = None
    exclude: tuple[str, ...] = ()


class _LazyFile:
    """A file opened when the tar writer first reads it and closed at its end, so a COPY of
    many files does not hold them all open."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: IO[bytes] | None = None

    def read(self, n: int = -1) -> bytes:
        if self.file is None:
            self.file = open(self.path, "rb")  # noqa: SIM115 - closed at EOF
        data = self.file.read(n)
        if not data or n < 0:
            self.file.close()
        return data


def _with_parents(root: str, members: list[layers.Member]
                  ) -> list[layers.Member]:
    """``members`` preceded by an entry for every directory above them that the parent
    filesystem already has, with its attributes there. A layer applied to an overlay upper
    directory must carry its parents: a directory the extractor had to make would be root's,
    0755, and would hide the lower one's owner and mode."""
    names = {posixpath.normpath(m.name) for m, _ in members}
    parents: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    for member, _ in members:
        parts = posixpath.normpath(member.name).split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent in seen or parent in names or parent in ("", "."):
                continue
            seen.add(parent)
            host = os.path.join(root, parent)
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            info = tarfile.TarInfo(parent)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
            info.mtime = int(st.st_mtime)
            parents.append(info)
    return [(p, None) for p in parents] + members


def _is_url(word: str) -> bool:
    return word.startswith(("http://", "https://"))


def _kind(path: str) -> str:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "other"


_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def _compression(head: bytes) -> str | None:
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def _open_archive(path: str) -> IO[bytes]:
    import bz2
    import gzip
    import lzma

    with open(path, "rb") as f:
        head = f.read(6)
    kind = _compression(head)
    if kind == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if kind == "xz":
        return lzma.open(path, "rb")  # type: ignore[return-value]
    if kind == "zstd":
        import subprocess

        data = subprocess.run(["zstd", "-dcq", path], capture_output=True, check=False)
        if data.returncode != 0:
            raise DockerfileError(f"ADD: {posixpath.basename(path)} does not decompress (zstd)")
        return io.BytesIO(data.stdout)
    return open(path, "rb")  # noqa: SIM115 - the caller closes it


def _is_archive(path: str) -> bool:
    """Whether ADD extracts this local file: a tar, plain or compressed (gzip bzip2 xz zstd)."""
    try:
        stream = _open_archive(path)
    except (OSError, DockerfileError):
        return False
    try:
        block = stream.read(512)
    except (OSError, EOFError, ValueError):
        return False
    finally:
        stream.close()
    if len(block) < 512:
        return False
    try:
        tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def build(engine: Any, dockerfile: Any, context: Any, options: BuildOptions,
          on_event: EventCallback | None = None) -> Any:
    """Build ``dockerfile`` (parsed) in ``context`` on ``engine``; the final image."""
    return Builder(engine, dockerfile, context, options, on_event).build()


__all__ = ["BuildError", "BuildOptions", "Builder", "EventCallback", "StageState", "build"]
