"""The engine verbs in this process (podman's "abi"): the same methods and Docker-shaped answers
as ``pyengine.client.remote``, each a call of the engine's own verb (``pyengine.containers``,
``pyengine.images.verbs``, ``pyengine.registry``, ``pyengine.network``), which the daemon's routes
call too. Nothing here decides anything the engine should: it adapts calls and shapes.
"""

from __future__ import annotations

import builtins
import os
import socket
import sys
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from pyengine.client import STDERR, STDOUT
from pyengine.errors import NotFound, UsageError

if TYPE_CHECKING:
    from pyengine.engine import Engine

Progress = Callable[[dict[str, Any]], None] | None


class LocalContainers:
    """Container verbs of the in-process engine."""

    def __init__(self, engine: Engine) -> None:
        from pyengine.containers.engine import Containers

        self.engine = engine
        self.containers = Containers(engine)

    def warm(self) -> None:
        self.containers.warm_isolators()  # the kernel's part of starting overlaps create

    def create(self, image: str, config: dict[str, Any], host_config: dict[str, Any], name: str | None = None,
               endpoint: dict[str, Any] | None = None) -> str:
        return self.containers.create(image, config, host_config, name=name, endpoint=endpoint).id

    def start(self, ref: str) -> None:
        self.containers.start(ref)

    def start_attached(self, ref: str, interactive: bool, tty: bool | None = None,
                       detach_keys: str | None = None) -> int:
        """Start with a socketpair to the monitor; relay stdio and signals; the exit code
        (``pyengine.containers.attach.Detached`` when the user typed the detach keys)."""
        from pyengine.cli.attach_client import relay
        from pyengine.containers.attach import parse_detach_keys

        keys = parse_detach_keys(detach_keys)

        record = self.containers.get(ref)
        tty = bool(record.config.get("Tty")) if tty is None else tty
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            record = self.containers.start(record.id, client=theirs)
        except BaseException:
            theirs.close()
            ours.close()
            try:
                if self.containers.store.load(record.id).host_config.get("AutoRemove"):
                    self.containers.wait(record.id)
            except NotFound:  # its monitor removed it already (--rm): the start's error stands
                pass
            raise
        theirs.close()
        return relay(ours, self.containers, record, interactive=interactive, tty=tty, detach_keys=keys)

    def attach(self, ref: str, stdin: bool = True, sig_proxy: bool = True, detach_keys: str | None = None) -> int:
        """Attach to the running container's monitor (stdin only when it was created with
        ``-i``); relay until it exits; its exit code (``Detached`` on the detach keys)."""
        from pyengine.cli.attach_client import relay
        from pyengine.containers.attach import parse_detach_keys

        keys = parse_detach_keys(detach_keys)
        record = self.containers.get(ref)
        if not record.state.running:
            from pyengine.errors import Conflict

            raise Conflict("You cannot attach to a stopped container, start it first")
        sock = self.containers.attach(record.id)
        interactive = stdin and bool(record.config.get("OpenStdin"))
        return relay(sock, self.containers, record, interactive=interactive, tty=bool(record.config.get("Tty")),
                     detach_keys=keys, sig_proxy=sig_proxy)

    def update(self, ref: str, changes: dict[str, Any]) -> list[str]:
        """Change limits and the restart policy (Docker's update body); the warnings."""
        return self.containers.update(ref, changes)

    def list(self, all_: bool = False, filters: dict[str, list[str]] | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
        from pyengine.containers import filters as container_filters
        from pyengine.containers.inspect import summary
        from pyengine.network.store import read_snapshot

        with read_snapshot():  # each summary reads the networks: read them once
            records = container_filters.select(self.containers, filters, all_=all_, limit=limit)
            return [summary(self.containers, record) for record in records]

    def inspect(self, ref: str) -> dict[str, Any]:
        return self.containers.inspect(ref)

    def logs(self, ref: str, follow: bool = False, tail: str = "all", timestamps: bool = False,
             since: str | None = None, until: str | None = None) -> Iterator[tuple[int, bytes]]:
        from pyengine.containers.logs import LogOptions, log_entries, parse_tail, parse_time

        options = LogOptions(follow=follow, tail=parse_tail(tail), since=parse_time(since), until=parse_time(until))
        for entry in log_entries(self.containers, ref, options):
            text = entry.get("log", "")
            if timestamps:
                text = f"{entry.get('time', '')} {text}"
            yield (STDERR if entry.get("stream") == "stderr" else STDOUT), text.encode()

    def stop(self, ref: str, timeout: int | None = None) -> None:
        self.containers.stop(ref, timeout)

    def restart(self, ref: str, timeout: int | None = None) -> None:
        self.containers.restart(ref, timeout)

    def kill(self, ref: str, signal: str | int = "KILL") -> None:
        self.containers.kill(ref, signal)

    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        self.containers.remove(ref, force=force)

    def wait(self, ref: str, condition: str = "not-running") -> int:
        return self.containers.wait(ref, condition)

    def pause(self, ref: str) -> None:
        self.containers.pause(ref)

    def unpause(self, ref: str) -> None:
        self.containers.unpause(ref)

    def rename(self, ref: str, new_name: str) -> None:
        self.containers.rename(ref, new_name)

    def top(self, ref: str, ps_args: str | None = None) -> dict[str, Any]:
        from pyengine.containers.stats import top

        return top(self.containers, ref, ps_args or "-ef")

    def stats(self, ref: str) -> dict[str, Any]:
        from pyengine.containers.stats import docker_stats, raw_sample

        record = self.containers.get(ref)
        return docker_stats(record, raw_sample(self.containers, record), None)

    def prune(self) -> builtins.list[str]:
        deleted, _ = self.containers.prune()
        return deleted

    def exec(self, ref: str, command: builtins.list[str], *, user: str | None = None,
             env: builtins.list[str] | None = None, workdir: str | None = None, tty: bool = False,
             privileged: bool = False, interactive: bool = False, detach: bool = False) -> int:
        """Run a command in a running container through pipes the engine owns; its exit code."""
        from pyengine.containers.exec import relay

        session = self.containers.exec(ref, command, user=user, env=env or [], workdir=workdir, tty=tty,
                                       privileged=privileged, interactive=interactive, detach=detach,
                                       console_size=_terminal_size() if tty else None)
        if detach:
            session.close()
            return 0
        if tty:
            from pyengine.cli.attach_client import relay_pty

            return relay_pty(session, interactive)
        sys.stdout.flush()
        sys.stderr.flush()
        return relay(session, sys.stdin.fileno() if interactive else None, sys.stdout.fileno(),
                     sys.stderr.fileno())


    # -- the container's filesystem: commit, diff, export, cp ------------------------------------
    def commit(self, ref: str, repo_tag: str | None = None, changes: builtins.list[str] | None = None,
               message: str = "", author: str = "", pause: bool = True) -> str:
        """A new image of the container's changes; its ID."""
        from pyengine.containers.changes import commit

        return commit(self.containers, ref, repo_tag, list(changes or []), message=message, author=author,
                      pause=pause).id

    def diff(self, ref: str) -> builtins.list[tuple[str, str]]:
        """(kind, path) of every change against the image: A added, C changed, D deleted."""
        from pyengine.containers.changes import diff

        return diff(self.containers, ref)

    def export(self, ref: str, out: IO[bytes]) -> None:
        from pyengine.containers.changes import export

        export(self.containers, ref, out)

    def stat_path(self, ref: str, path: str, follow_link: bool = False) -> dict[str, Any]:
        """Docker's path stat (``name``, ``size``, ``mode``, ``mtime``, ``linkTarget``)."""
        from pyengine.containers.changes import stat_path

        return stat_path(self.containers, ref, path, follow_link)

    def copy_from(self, ref: str, path: str, follow_link: bool = False) -> tuple[IO[bytes], dict[str, Any]]:
        """A tar of the path (rewound) and its path stat."""
        from pyengine.containers.changes import copy_from

        return copy_from(self.containers, ref, path, follow_link)

    def copy_to(self, ref: str, dest_dir: str, tar_stream: IO[bytes], copy_uid_gid: bool = False) -> None:
        """Extract a tar into the container's directory ``dest_dir``."""
        from pyengine.containers.changes import copy_to

        copy_to(self.containers, ref, dest_dir, tar_stream, copy_uid_gid=copy_uid_gid)


class LocalImages:
    """Image and registry verbs of the in-process engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.images

    def list(self, filters: dict[str, list[str]] | None = None, all_: bool = False) -> list[dict[str, Any]]:
        from pyengine.images.verbs import list_images

        return list_images(self.store, filters, all_=all_)

    def inspect(self, ref: str) -> dict[str, Any]:
        from pyengine.images import verbs

        return verbs.inspect(self.store, verbs.find_image(self.store, ref))

    def history(self, ref: str) -> builtins.list[dict[str, Any]]:
        from pyengine.images import verbs

        return verbs.history(verbs.find_image(self.store, ref))

    def tag(self, source: str, target: str) -> None:
        self.store.tag(source, target)

    def remove(self, ref: str, force: bool = False) -> builtins.list[dict[str, str]]:
        from pyengine.images import verbs

        return [{verb: what} for verb, what in verbs.remove(self.engine, ref, force=force)]

    def prune(self, all_images: bool = False) -> dict[str, Any]:
        from pyengine.images import verbs

        lines, reclaimed = verbs.prune(self.engine, all_images)
        return {"ImagesDeleted": [{verb: what} for verb, what in lines] or None, "SpaceReclaimed": reclaimed}

    def import_(self, source: IO[bytes], ref: str | None, message: str = "", changes: tuple[str, ...] = ()) -> str:
        from pyengine.images.verbs import import_image

        return import_image(self.store, source, ref, message, changes).id

    def load(self, source: IO[bytes], on_event: Progress = None) -> builtins.list[str]:
        from pyengine.images.archive import load_archive
        from pyengine.images.reference import parse_reference

        on_bytes = None
        if on_event is not None:
            from pyengine.registry.verbs import byte_events

            on_bytes = byte_events("Loading layer", on_event)  # a row per layer, as the daemon streams
        lines = []
        for name, image in load_archive(self.store, _spooled_path(source), on_bytes):
            text = f"Loaded image: {parse_reference(name).familiar()}" if name else f"Loaded image ID: {image.id}"
            lines.append(text)
            if on_event is not None:
                on_event({"stream": text + "\n"})
        return lines

    def save(self, refs: builtins.list[str], out: IO[bytes], fmt: str = "docker-archive") -> None:
        from pyengine.images.archive import save_archive

        for ref in refs:
            self.store.resolve_image(ref)  # a missing image fails before anything is written
        save_archive(self.store, refs, out, fmt)

    def pull(self, name: str, platform: str | None = None, all_tags: bool = False,
             on_event: Progress = None) -> builtins.list[str]:
        """Pull from a registry (or copy from oci:DIR, docker-archive:FILE, oci-archive:FILE);
        the references stored."""
        from pyengine.images.reference import parse_reference
        from pyengine.registry import verbs

        if name.startswith("oci:"):
            from pyengine.registry.layout import pull_layout
            from pyengine.registry.transfer import parse_platform

            stored, image = pull_layout(self.store, name, parse_platform(platform))
            _emit(on_event, {"status": f"Copied {name} as {stored} ({image.manifest_digest})"})
            return [stored]
        for prefix in ("docker-archive:", "oci-archive:"):
            if name.startswith(prefix):
                from pyengine.images.archive import load_archive

                return [loaded or image.id for loaded, image in load_archive(self.store, name[len(prefix):])]
        ref = parse_reference(name, default_tag=not all_tags)
        refs = [ref]
        if all_tags:
            if ref.tag or ref.digest:
                raise UsageError("--all-tags takes a repository name without a tag or digest")
            from pyengine.registry.connect import client_for

            client = client_for(self.engine, ref.domain)
            try:
                refs = [ref.with_tag(t) for t in sorted(client.tags(ref.path))]
            finally:
                client.close()
            if not refs:
                raise UsageError(f"{ref.repository} has no tags")
        for one in refs:
            verbs.pull_image(self.engine, self.store, one, platform, on_event=on_event)
        return [str(one) for one in refs]

    def push(self, name: str, destination: str | None = None, on_event: Progress = None,
             chunk_size: int | None = None) -> dict[str, Any]:
        """Push to a registry (or to oci:DIR, docker-archive:FILE, oci-archive:FILE); the
        pushed manifest's ``{"Tag", "Digest", "Size"}``."""
        from pyengine.registry import verbs

        if destination and destination.startswith("oci:"):
            from pyengine.registry.layout import push_layout

            return {"Tag": "", "Digest": push_layout(self.store, name, destination), "Size": 0}
        for prefix in ("docker-archive:", "oci-archive:"):
            if destination and destination.startswith(prefix):
                from pyengine.images.archive import save_archive

                with open(destination[len(prefix):], "wb") as out:
                    save_archive(self.store, [name], out, prefix[:-1])
                return {"Tag": "", "Digest": self.store.resolve_image(name).manifest_digest, "Size": 0}
        result = verbs.push_image(self.engine, name, destination, chunk_size=chunk_size,
                                  on_event=lambda event: None if "aux" in event else _emit(on_event, event))
        return {"Tag": result.ref.tag or "latest", "Digest": result.digest, "Size": result.size}

    def search(self, term: str, limit: int = 25) -> builtins.list[dict[str, Any]]:
        from pyengine.registry import verbs

        return verbs.search(self.engine, term, limit, with_tags=True)

    def login(self, server: str, username: str, password: str) -> str:
        from pyengine.registry import verbs

        verbs.check_login(self.engine, server, username, password)
        return "Login Succeeded"


    # -- builds --------------------------------------------------------------------------------
    #: the archive formats ``save`` can write
    save_formats = ("docker-archive", "oci-archive")

    def build(self, context: str | IO[bytes], options: Any, *, dockerfile: str | None = None,
              dockerfile_text: str | None = None, quiet: bool = False,
              on_event: Callable[[str, Any], None] | None = None) -> str:
        """Build with the engine's builder; the image's ID.

        :param context: a directory, or a tar stream of the context
        :param options: a ``pyengine.build.executor.BuildOptions``
        :param dockerfile: the Dockerfile's path (of a directory context: on this machine, the
            default ``CONTEXT/Dockerfile``; of a tar: inside it, the default ``Dockerfile``)
        :param dockerfile_text: the Dockerfile itself, given on stdin
        :param on_event: ``(kind, text)`` as ``pyengine.build.executor.EventCallback``
        """
        from pyengine.build.context import BuildContext
        from pyengine.build.dockerfile import parse
        from pyengine.build.executor import build as run_build

        if isinstance(context, str):
            name = dockerfile or os.path.join(context, "Dockerfile")
            ctx = BuildContext.from_directory(context, None if dockerfile_text is not None else os.path.abspath(name))
        else:
            name = dockerfile or "Dockerfile"
            ctx = BuildContext.from_tar(context, name)
        try:
            if dockerfile_text is None:
                dockerfile_text = ctx.read_dockerfile(name) if not isinstance(context, str) else _read_dockerfile(name)
            parsed = parse(dockerfile_text, os.path.basename(name))
            image = run_build(self.engine, parsed, ctx, options, on_event or (lambda kind, text: None))
        finally:
            ctx.close()
        return image.id

    def prune_build_cache(self) -> dict[str, Any]:
        """Remove the build cache; ``{"CachesDeleted": [...], "SpaceReclaimed": bytes}``."""
        from pyengine.build.cache import BuildCache

        removed, freed = BuildCache(self.engine.config.data_root).prune(self.store)
        return {"CachesDeleted": removed, "SpaceReclaimed": freed}


def _read_dockerfile(name: str) -> str:
    from pyengine.errors import NotFound

    try:
        with open(name, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise NotFound(f"unable to prepare context: the Dockerfile {name} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the Dockerfile {name}: {exc}") from None


def _terminal_size() -> tuple[int, int] | None:
    try:
        cols, rows = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return None
    return rows, cols


def _emit(on_event: Progress, event: dict[str, Any]) -> None:
    if on_event is not None:
        on_event(event)


def _spooled_path(source: IO[bytes]) -> str:
    name = getattr(source, "name", None)
    if isinstance(name, str) and os.path.isfile(name):
        return name
    raise UsageError("load reads a file here; give it with -i FILE")


class LocalNetworks:
    """Network verbs of the in-process engine, each on a reconciled manager (endpoints of
    containers whose monitor died are freed first), answering in Docker's network shape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _manager(self) -> Any:
        from pyengine.network.verbs import reconciled_manager

        return reconciled_manager(self.engine)

    def create(self, name: str, driver: str = "bridge", *, subnet: str | None = None, gateway: str | None = None,
               ip_range: str | None = None, internal: bool = False, options: dict[str, str] | None = None,
               labels: dict[str, str] | None = None) -> str:
        return self._manager().create(name, driver, subnet=subnet, gateway=gateway, ip_range=ip_range,
                                      internal=internal, options=options or {}, labels=labels or {}).id

    def list(self) -> list[dict[str, Any]]:
        from pyengine.network.verbs import inspect

        return [inspect(record) for record in self._manager().list()]

    def inspect(self, name: str) -> dict[str, Any]:
        from pyengine.network.verbs import inspect

        return inspect(self._manager().get(name))

    def remove(self, name: str) -> None:
        self._manager().remove(name)

    def prune(self) -> builtins.list[str]:
        return [record.name for record in self._manager().prune()]

    def connect(self, name: str, container: str, aliases: builtins.list[str] | None = None,
                ip: str | None = None) -> None:
        from pyengine.containers import networking
        from pyengine.containers.engine import Containers

        self._manager()
        networking.connect(Containers(self.engine), name, container, list(aliases or []), ip)

    def disconnect(self, name: str, container: str, force: bool = False) -> None:
        from pyengine.containers import networking
        from pyengine.containers.engine import Containers

        self._manager()
        networking.disconnect(Containers(self.engine), name, container)


class LocalVolumes:
    """Volume verbs of the in-process engine."""

    def __init__(self, engine: Engine) -> None:
        from pyengine.containers.volumes import VolumeStore

        self.engine = engine
        self.store = VolumeStore(engine.config.data_root, events_root=engine.config.run_root)

    def _users(self, name: str) -> list[str]:
        from pyengine.containers.engine import Containers
        from pyengine.containers.volumes import volumes_used

        return [r.id for r in Containers(self.engine).store.list() if name in volumes_used(r.host_config)]

    def create(self, name: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return self.store.create(name, labels or {})

    def list(self) -> list[dict[str, Any]]:
        return self.store.list()

    def inspect(self, name: str) -> dict[str, Any]:
        return self.store.inspect(name)

    def remove(self, name: str, force: bool = False) -> None:
        self.store.remove(name, self._users(name), force)

    def prune(self) -> builtins.list[str]:
        removed = []
        for volume in self.store.list():
            if not self._users(volume["Name"]):
                self.store.remove(volume["Name"])
                removed.append(volume["Name"])
        return removed


class LocalSystem:
    """What the in-process engine says about itself, in the daemon's shapes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def info(self) -> dict[str, Any]:
        from pyengine.sysinfo import system_info

        return system_info(self.engine)

    def disk_usage(self) -> dict[str, Any]:
        from pyengine.sysinfo import disk_usage

        return disk_usage(self.engine)

    def events(self, since_ns: int | None = None, until_ns: int | None = None,
               filters: dict[str, list[str]] | None = None) -> Iterator[dict[str, Any]]:
        """The journal's events from ``since_ns`` to ``until_ns``, then new ones as they are
        recorded (until ``until_ns``; without it, until the caller stops iterating)."""
        from pyengine.events import EventFilter, journal_for, watch

        yield from watch(journal_for(self.engine.config.run_root), since_ns, until_ns, EventFilter(filters))


class LocalEngine:
    """Every verb group of the in-process engine."""

    remote = False

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._containers: LocalContainers | None = None
        self._images: LocalImages | None = None
        self._volumes: LocalVolumes | None = None

    @property
    def containers(self) -> LocalContainers:
        if self._containers is None:
            self._containers = LocalContainers(self.engine)
        return self._containers

    @property
    def images(self) -> LocalImages:
        if self._images is None:
            self._images = LocalImages(self.engine)
        return self._images

    @property
    def networks(self) -> LocalNetworks:
        return LocalNetworks(self.engine)

    @property
    def system(self) -> LocalSystem:
        return LocalSystem(self.engine)

    @property
    def volumes(self) -> LocalVolumes:
        if self._volumes is None:
            self._volumes = LocalVolumes(self.engine)
        return self._volumes

    def close(self) -> None:
        """The engine is the CLI state's; it closes it."""
