"""The engine verbs over the Docker Engine API (podman's "tunnel"): the same methods, arguments and
Docker-shaped answers as ``pyengine.client.local``, each one request (or a stream, or a hijacked
connection) to the daemon. Works against pyengine's daemon, dockerd and podman's service alike.
"""

from __future__ import annotations

import base64
import builtins
import json
import os
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

from pyengine.client.transport import STDERR, STDOUT, Transport, quote_ref, read_frames
from pyengine.errors import NotFound, PyEngineError, UsageError

Progress = Callable[[dict[str, Any]], None] | None


def _q(ref: str) -> str:
    return quote_ref(ref)


def _filters(filters: dict[str, list[str]] | None) -> str | None:
    return json.dumps(filters) if filters else None


def _registry_auth(host: str) -> dict[str, str]:
    """``X-Registry-Auth`` from this client's own credentials: the daemon holds none of its own."""
    from pyengine.registry import auth

    creds = auth.stored_credentials(host)
    if creds is None:
        return {}
    doc = {"username": creds.username, "password": creds.secret, "serveraddress": auth.normalise_host(host)}
    return {"X-Registry-Auth": base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()}


class StartFailed(PyEngineError):
    """The daemon could not start the container's process; the exit status the docker CLI
    gives for the daemon's words (127 not found, 126 cannot execute, else 125)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        lowered = message.lower()
        if any(words in lowered for words in ("executable file not found", "no such file or directory")):
            self.exit_code = 127
        elif any(words in lowered for words in ("permission denied", "is a directory", "exec format error")):
            self.exit_code = 126


class RemoteContainers:
    """Container verbs of a daemon."""

    def __init__(self, api: Transport) -> None:
        self.api = api

    def warm(self) -> None:
        """Nothing to prepare on this side: the daemon's engine is warm."""

    def create(self, image: str, config: dict[str, Any], host_config: dict[str, Any], name: str | None = None,
               endpoint: dict[str, Any] | None = None) -> str:
        body = {k: v for k, v in config.items() if v is not None}
        body["HostConfig"] = host_config
        network = host_config.get("NetworkMode") or ""
        if endpoint and (endpoint.get("Aliases") or endpoint.get("IPAddress")) and network:
            settings: dict[str, Any] = {"Aliases": endpoint.get("Aliases") or None}
            if endpoint.get("IPAddress"):
                settings["IPAMConfig"] = {"IPv4Address": endpoint["IPAddress"]}
            body["NetworkingConfig"] = {"EndpointsConfig": {network: settings}}
        try:
            answer = self.api.json("POST", "/containers/create", {"name": name}, body)
        except UsageError as exc:  # the daemon refused the config (400): docker's run and create exit 125
            exc.exit_code = 125
            raise
        except NotFound as exc:
            if "image" not in str(exc).lower():
                raise
            self._pull_for_create(image)
            answer = self.api.json("POST", "/containers/create", {"name": name}, body)
        for warning in answer.get("Warnings") or []:
            import sys

            print(f"WARNING: {warning}", file=sys.stderr)
        return answer["Id"]

    def _pull_for_create(self, image: str) -> None:
        """As the docker CLI does when the daemon lacks the image: pull it, then create again."""
        import sys

        print(f"Unable to find image '{image}' locally", file=sys.stderr)
        RemoteImages(self.api).pull(image, on_event=lambda event: print(_progress_line(event), file=sys.stderr))

    def start(self, ref: str) -> None:
        try:
            self.api.request("POST", f"/containers/{_q(ref)}/start")
        except (NotFound, UsageError):
            raise
        except PyEngineError as exc:
            raise StartFailed(str(exc)) from None

    def start_attached(self, ref: str, interactive: bool, tty: bool | None = None,
                       detach_keys: str | None = None) -> int:
        """Attach, start, relay until the output ends; the exit code (docker run/start -a);
        ``pyengine.containers.attach.Detached`` when the user typed the detach keys."""
        from pyengine.client.attach import relay, terminal_size
        from pyengine.containers.attach import Detached, parse_detach_keys

        keys = parse_detach_keys(detach_keys)

        doc = self.inspect(ref)
        container_id = doc["Id"]
        tty = bool(doc["Config"].get("Tty")) if tty is None else tty
        auto_remove = bool((doc.get("HostConfig") or {}).get("AutoRemove"))
        conn, _ = self.api.hijack(f"/containers/{container_id}/attach",
                                  {"stream": True, "stdin": interactive, "stdout": True, "stderr": True,
                                   "detachKeys": detach_keys or None})
        waiter = _Waiter(self.api, container_id, "removed" if auto_remove else "next-exit")
        try:
            self.start(container_id)
        except BaseException:
            conn.close()
            waiter.abandon()
            raise
        if tty:
            size = terminal_size()
            if size:
                self._resize(container_id, *size)
        try:
            relay(conn, tty, interactive, resize=lambda h, w: self._resize(container_id, h, w),
                  send_signal=lambda signum: self.kill(container_id, signum), detach_keys=keys)
        except Detached:
            waiter.abandon()
            raise
        return waiter.result()

    def attach(self, ref: str, stdin: bool = True, sig_proxy: bool = True, detach_keys: str | None = None) -> int:
        """``POST /containers/{id}/attach``; relay until the output ends; the exit code
        (``Detached`` when the user typed the detach keys)."""
        from pyengine.client.attach import relay, terminal_size
        from pyengine.containers.attach import parse_detach_keys
        from pyengine.errors import Conflict

        keys = parse_detach_keys(detach_keys)
        doc = self.inspect(ref)
        container_id = doc["Id"]
        if not (doc.get("State") or {}).get("Running"):
            raise Conflict("You cannot attach to a stopped container, start it first")
        tty = bool(doc["Config"].get("Tty"))
        interactive = stdin and bool(doc["Config"].get("OpenStdin"))
        conn, _ = self.api.hijack(f"/containers/{container_id}/attach",
                                  {"stream": True, "stdin": interactive, "stdout": True, "stderr": True,
                                   "detachKeys": detach_keys or None})
        if tty:
            size = terminal_size()
            if size:
                self._resize(container_id, *size)
        relay(conn, tty, interactive, resize=lambda h, w: self._resize(container_id, h, w),
              send_signal=(lambda signum: self.kill(container_id, signum)) if sig_proxy else None,
              detach_keys=keys)
        return self.wait(container_id, "not-running")

    def update(self, ref: str, changes: dict[str, Any]) -> list[str]:
        """``POST /containers/{id}/update``; the daemon's warnings."""
        return list(self.api.json("POST", f"/containers/{_q(ref)}/update", body=changes).get("Warnings") or [])

    def _resize(self, container_id: str, rows: int, cols: int) -> None:
        try:
            self.api.request("POST", f"/containers/{container_id}/resize", {"h": rows, "w": cols})
        except PyEngineError:
            pass  # as the docker CLI: a container that already ended refuses a resize; no error

    def list(self, all_: bool = False, filters: dict[str, list[str]] | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
        return self.api.json("GET", "/containers/json", {"all": all_, "filters": _filters(filters),
                                                         "limit": limit or None}) or []

    def inspect(self, ref: str) -> dict[str, Any]:
        return self.api.json("GET", f"/containers/{_q(ref)}/json")

    def logs(self, ref: str, follow: bool = False, tail: str = "all", timestamps: bool = False,
             since: str | None = None, until: str | None = None) -> Iterator[tuple[int, bytes]]:
        """(stream, bytes) pieces of the log: STDOUT or STDERR, as they come when following."""
        tty = bool(self.inspect(ref)["Config"].get("Tty"))
        response = self.api.stream("GET", f"/containers/{_q(ref)}/logs", {
            "stdout": True, "stderr": True, "follow": follow, "tail": tail, "timestamps": timestamps,
            "since": since, "until": until})
        try:
            if tty:
                while True:
                    data = response.read1(65536)
                    if not data:
                        return
                    yield STDOUT, data
            else:
                for kind, payload in read_frames(response):
                    yield (STDERR if kind == STDERR else STDOUT), payload
        finally:
            response.close()

    def stop(self, ref: str, timeout: int | None = None) -> None:
        self.api.request("POST", f"/containers/{_q(ref)}/stop", {"t": timeout})

    def restart(self, ref: str, timeout: int | None = None) -> None:
        self.api.request("POST", f"/containers/{_q(ref)}/restart", {"t": timeout})

    def kill(self, ref: str, signal: str | int = "KILL") -> None:
        self.api.request("POST", f"/containers/{_q(ref)}/kill", {"signal": signal})

    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        self.api.request("DELETE", f"/containers/{_q(ref)}", {"force": force, "v": volumes})

    def wait(self, ref: str, condition: str = "not-running") -> int:
        doc = self.api.json("POST", f"/containers/{_q(ref)}/wait", {"condition": condition})
        if (doc.get("Error") or {}).get("Message"):
            raise PyEngineError(doc["Error"]["Message"])
        return int(doc["StatusCode"])

    def pause(self, ref: str) -> None:
        self.api.request("POST", f"/containers/{_q(ref)}/pause")

    def unpause(self, ref: str) -> None:
        self.api.request("POST", f"/containers/{_q(ref)}/unpause")

    def rename(self, ref: str, new_name: str) -> None:
        self.api.request("POST", f"/containers/{_q(ref)}/rename", {"name": new_name})

    def top(self, ref: str, ps_args: str | None = None) -> dict[str, Any]:
        return self.api.json("GET", f"/containers/{_q(ref)}/top", {"ps_args": ps_args})

    def stats(self, ref: str) -> dict[str, Any]:
        """One sample of Docker's stats document."""
        return self.api.json("GET", f"/containers/{_q(ref)}/stats", {"stream": False, "one-shot": True})

    def prune(self) -> builtins.list[str]:
        return self.api.json("POST", "/containers/prune").get("ContainersDeleted") or []

    def exec(self, ref: str, command: builtins.list[str], *, user: str | None = None,
             env: builtins.list[str] | None = None, workdir: str | None = None, tty: bool = False,
             privileged: bool = False, interactive: bool = False, detach: bool = False) -> int:
        """Run a command in a running container; its exit code (0 at once when detached)."""
        from pyengine.client.attach import relay, terminal_size

        size = terminal_size() if tty else None
        body: dict[str, Any] = {"AttachStdin": interactive and not detach, "AttachStdout": not detach,
                                "AttachStderr": not detach, "Tty": tty, "Cmd": command, "Env": env or [],
                                "Privileged": privileged}
        if user:
            body["User"] = user
        if workdir:
            body["WorkingDir"] = workdir
        if size:
            body["ConsoleSize"] = list(size)
        exec_id = self.api.json("POST", f"/containers/{_q(ref)}/exec", body=body)["Id"]
        if detach:
            self.api.request("POST", f"/exec/{exec_id}/start", body={"Detach": True, "Tty": tty})
            return 0
        conn, _ = self.api.hijack(f"/exec/{exec_id}/start", body={"Detach": False, "Tty": tty})

        def resize(rows: int, cols: int) -> None:
            self.api.request("POST", f"/exec/{exec_id}/resize", {"h": rows, "w": cols})

        relay(conn, tty, interactive, resize=resize if tty else None)
        for _ in range(100):
            doc = self.api.json("GET", f"/exec/{exec_id}/json")
            if not doc.get("Running"):
                return int(doc.get("ExitCode") or 0)
            import time

            time.sleep(0.05)
        raise PyEngineError(f"exec {exec_id[:12]}: the daemon still reports it running after its output ended")


    # -- the container's filesystem: commit, diff, export, cp ------------------------------------
    def commit(self, ref: str, repo_tag: str | None = None, changes: builtins.list[str] | None = None,
               message: str = "", author: str = "", pause: bool = True) -> str:
        """``POST /commit``; the new image's ID."""
        repo = tag = None
        if repo_tag:
            from pyengine.images.reference import parse_reference

            parsed = parse_reference(repo_tag)
            if parsed.digest:
                raise UsageError(f"refusing to create a tag with a digest reference: {repo_tag}")
            repo, tag = parsed.familiar_repository, parsed.tag
        answer = self.api.json("POST", "/commit", {
            "container": ref, "repo": repo, "tag": tag, "comment": message or None, "author": author or None,
            "pause": pause, "changes": list(changes or [])}, body={})
        return answer["Id"]

    def diff(self, ref: str) -> builtins.list[tuple[str, str]]:
        """``GET /containers/{id}/changes``: (kind, path), kind A, C or D."""
        kinds = {0: "C", 1: "A", 2: "D"}
        found = self.api.json("GET", f"/containers/{_q(ref)}/changes") or []
        return [(kinds.get(change.get("Kind"), "C"), change["Path"]) for change in found]

    def export(self, ref: str, out: IO[bytes]) -> None:
        """``GET /containers/{id}/export`` into ``out``."""
        _copy_response(self.api.stream("GET", f"/containers/{_q(ref)}/export"), out)

    def _head_stat(self, ref: str, path: str) -> dict[str, Any]:
        try:
            _, headers, _ = self.api.request("HEAD", f"/containers/{_q(ref)}/archive", {"path": path})
        except NotFound as exc:
            if "container" in str(exc).lower() and "no such" in str(exc).lower():
                raise
            # a HEAD answer has no body: say what the daemon would have said
            raise NotFound(f"Could not find the file {path} in container {ref}") from None
        return _path_stat(headers)

    def stat_path(self, ref: str, path: str, follow_link: bool = False) -> dict[str, Any]:
        """``HEAD /containers/{id}/archive``: Docker's path stat; with ``follow_link`` the stat
        of a symlink's target (the daemon gives its path as ``linkTarget``)."""
        info = self._head_stat(ref, path)
        if follow_link and info.get("linkTarget"):
            info = self._head_stat(ref, info["linkTarget"])
        return info

    def copy_from(self, ref: str, path: str, follow_link: bool = False) -> tuple[IO[bytes], dict[str, Any]]:
        """``GET /containers/{id}/archive``: a tar of the path (spooled, rewound) and its stat.
        With ``follow_link`` a symlink's target is fetched and its top entry renamed as the
        link, as the docker CLI does."""
        import tempfile

        rename = None
        source = path
        if follow_link:
            link = self._head_stat(ref, path)
            if link.get("linkTarget"):
                source = link["linkTarget"]
        response = self.api.stream("GET", f"/containers/{_q(ref)}/archive", {"path": source})
        info = _path_stat({k.lower(): v for k, v in response.getheaders()})
        out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=32 << 20)  # type: ignore[assignment]
        try:
            _copy_response(response, out)
            out.seek(0)
            if source != path:
                import posixpath

                from pyengine.containers.changes import rebase_tar

                rename = (info["name"], posixpath.basename(posixpath.normpath("/" + path)) or "/")
                renamed = rebase_tar(out, "", rename=rename)
                out.close()
                out = renamed
                info = dict(info, name=rename[1])
        except BaseException:
            out.close()
            raise
        return out, info

    def copy_to(self, ref: str, dest_dir: str, tar_stream: IO[bytes], copy_uid_gid: bool = False) -> None:
        """``PUT /containers/{id}/archive``: the tar extracted into the directory ``dest_dir``."""
        self.api.request("PUT", f"/containers/{_q(ref)}/archive", {"path": dest_dir, "copyUIDGID": copy_uid_gid},
                         body=tar_stream, headers={"Content-Type": "application/x-tar"})


def _path_stat(headers: dict[str, str]) -> dict[str, Any]:
    """The ``X-Docker-Container-Path-Stat`` header: base64 of Docker's path stat JSON."""
    raw = headers.get("x-docker-container-path-stat")
    if not raw:
        raise PyEngineError("the daemon did not send the path's stat (X-Docker-Container-Path-Stat)")
    try:
        info = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        raise PyEngineError("the daemon sent a path stat that is not base64 JSON") from None
    if not isinstance(info, dict) or not isinstance(info.get("mode"), int):
        raise PyEngineError(f"the daemon sent a path stat without a mode: {info!r}")
    info.setdefault("name", "")
    info.setdefault("linkTarget", "")
    return info


def _copy_response(response: Any, out: IO[bytes]) -> None:
    try:
        while True:
            data = response.read(1 << 20)
            if not data:
                break
            out.write(data)
    finally:
        response.close()


class _Waiter:
    """``POST /containers/{id}/wait`` sent before the start (so no exit can be missed), its
    answer read in a thread while the output is relayed."""

    def __init__(self, api: Transport, container_id: str, condition: str) -> None:
        self.conn = api._new_connection(timeout=None)
        self.code: int | None = None
        self.error: BaseException | None = None
        self.conn.request("POST", api.path(f"/containers/{container_id}/wait", {"condition": condition}),
                          headers={"User-Agent": "pyengine"})
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        from pyengine.client.transport import raise_for_status

        try:
            response = self.conn.getresponse()
            data = response.read()
            raise_for_status(response.status, data)
            doc = json.loads(data)
            if (doc.get("Error") or {}).get("Message"):
                raise PyEngineError(doc["Error"]["Message"])
            self.code = int(doc["StatusCode"])
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
        finally:
            self.conn.close()

    def result(self) -> int:
        self.thread.join()
        if self.error is not None:
            if isinstance(self.error, PyEngineError):
                raise self.error
            raise PyEngineError(f"waiting for the container failed: {self.error}")
        return self.code if self.code is not None else 0

    def abandon(self) -> None:
        # shut the socket down first: the reading thread holds the response's buffer, and a
        # plain close would wait for it (for ever, while the container runs on after a detach)
        sock = self.conn.sock
        if sock is not None:
            import socket

            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(timeout=5)
        self.conn.close()


def _progress_line(event: dict[str, Any]) -> str:
    status = event.get("status") or event.get("stream") or ""
    progress = event.get("progress")
    text = f"{status} {progress}" if progress else status
    return f"{event['id']}: {text}" if event.get("id") else text


class RemoteImages:
    """Image and registry verbs of a daemon."""

    def __init__(self, api: Transport) -> None:
        self.api = api

    def list(self, filters: dict[str, list[str]] | None = None, all_: bool = False) -> list[dict[str, Any]]:
        # no ``digests``: RepoDigests always come (podman's service answers nothing to it)
        return self.api.json("GET", "/images/json", {"all": all_, "filters": _filters(filters)}) or []

    def inspect(self, ref: str) -> dict[str, Any]:
        return self.api.json("GET", f"/images/{_q(ref)}/json")

    def history(self, ref: str) -> builtins.list[dict[str, Any]]:
        return self.api.json("GET", f"/images/{_q(ref)}/history") or []

    def tag(self, source: str, target: str) -> None:
        from pyengine.images.reference import parse_reference

        ref = parse_reference(target, default_tag=False)
        self.api.request("POST", f"/images/{_q(source)}/tag", {"repo": ref.repository, "tag": ref.tag or "latest"})

    def remove(self, ref: str, force: bool = False) -> builtins.list[dict[str, str]]:
        return self.api.json("DELETE", f"/images/{_q(ref)}", {"force": force}) or []

    def prune(self, all_images: bool = False) -> dict[str, Any]:
        filters = {"dangling": ["false"]} if all_images else None
        return self.api.json("POST", "/images/prune", {"filters": _filters(filters)}) or {}

    def import_(self, source: IO[bytes], ref: str | None, message: str = "", changes: tuple[str, ...] = ()) -> str:
        repo, tag = _split_repo_tag(ref)
        image_id = ""
        for event in self.api.json_stream("POST", "/images/create", {
                "fromSrc": "-", "repo": repo, "tag": tag, "message": message or None, "changes": list(changes)},
                body=source):
            status = event.get("status") or ""
            if status.startswith("sha256:"):
                image_id = status
        if not image_id:
            raise PyEngineError("the daemon did not say which image it imported")
        return image_id

    def load(self, source: IO[bytes], on_event: Progress = None) -> builtins.list[str]:
        """Load an archive; the daemon's lines (``Loaded image: NAME:TAG``); its per-layer
        progress (``Loading layer``) goes only to ``on_event``, and is asked for only when there
        is an ``on_event`` (as the docker CLI asks only for a terminal)."""
        lines = []
        for event in self.api.json_stream("POST", "/images/load", {"quiet": on_event is None}, body=source):
            text = (event.get("stream") or event.get("status") or "").strip()
            if text and not event.get("id"):
                lines.append(text)
            if text and on_event is not None:
                on_event(event)
        return lines

    def save(self, refs: builtins.list[str], out: IO[bytes], fmt: str = "docker-archive") -> None:
        if fmt != "docker-archive":
            raise UsageError(f"--format {fmt} is not offered over the Docker Engine API; use docker-archive")
        for ref in refs:
            self.inspect(ref)  # a missing image fails before anything is written
        _copy_response(self.api.stream("GET", "/images/get", {"names": refs}), out)

    def pull(self, name: str, platform: str | None = None, all_tags: bool = False,
             on_event: Progress = None) -> builtins.list[str]:
        """Pull through the daemon; the references pulled (``docker.io/library/busybox:latest``)."""
        from pyengine.images.reference import parse_reference

        if name.startswith(("oci:", "docker-archive:", "oci-archive:")):
            raise UsageError(f"{name.split(':', 1)[0]}: sources are paths on this machine, not the daemon's; "
                             "use `load` to send an archive to the daemon")
        ref = parse_reference(name, default_tag=not all_tags)
        if all_tags and (ref.tag or ref.digest):
            raise UsageError("--all-tags takes a repository name without a tag or digest")
        query = {"fromImage": ref.repository, "tag": ref.digest or ref.tag or None, "platform": platform}
        for event in self.api.json_stream("POST", "/images/create", query, headers=_registry_auth(ref.domain)):
            if on_event is not None:
                on_event(event)
        return [ref.repository] if all_tags else [str(ref)]

    def push(self, name: str, destination: str | None = None, on_event: Progress = None,
             chunk_size: int | None = None) -> dict[str, Any]:
        """Push through the daemon (tagging ``name`` as ``destination`` first); the pushed
        manifest's ``{"Tag", "Digest", "Size"}``."""
        from pyengine.images.reference import parse_reference

        if chunk_size is not None:
            raise UsageError("--chunk-size is not offered over the Docker Engine API: the daemon chooses")

        if destination and destination.startswith(("oci:", "docker-archive:", "oci-archive:")):
            raise UsageError(f"{destination.split(':', 1)[0]}: destinations are paths on this machine; "
                             "use `save` to fetch an archive from the daemon")
        if destination:
            self.tag(name, destination)
        ref = parse_reference(destination or name)
        aux: dict[str, Any] = {}
        headers = _registry_auth(ref.domain) or {"X-Registry-Auth": base64.urlsafe_b64encode(b"{}").decode()}
        for event in self.api.json_stream("POST", f"/images/{_q(ref.repository)}/push", {"tag": ref.tag or "latest"},
                                          headers=headers):
            if event.get("aux"):
                aux = event["aux"]
            elif on_event is not None:
                on_event(event)
        return aux

    def search(self, term: str, limit: int = 25) -> builtins.list[dict[str, Any]]:
        """``GET /images/search``: Docker's entries (``name``, ``description``, ``star_count``,
        ``is_official``); the daemon may not know each repository's tags."""
        first, sep, _ = term.partition("/")
        host = first if sep and ("." in first or ":" in first or first == "localhost") else "docker.io"
        return self.api.json("GET", "/images/search", {"term": term, "limit": limit},
                             headers=_registry_auth(host)) or []

    # -- builds --------------------------------------------------------------------------------
    #: the archive formats ``save`` can fetch: ``GET /images/get`` sends docker-archive only
    save_formats = ("docker-archive",)

    def build(self, context: str | IO[bytes], options: Any, *, dockerfile: str | None = None,
              dockerfile_text: str | None = None, quiet: bool = False,
              on_event: Callable[[str, Any], None] | None = None) -> str:
        """``POST /build`` (the legacy builder's protocol) with the context as a tar (a
        directory's honouring its ``.dockerignore``); each ``stream`` line to ``on_event`` as
        ``("output", text)``; the image's ID from the final ``aux``."""
        from pyengine.client.transport import StreamError

        if options.secrets:
            raise UsageError("--secret is not offered by the daemon's build API (POST /build); build without it "
                             "or on this machine's engine")
        if isinstance(context, str):
            body, name = context_tar(context, dockerfile, dockerfile_text)
        else:
            body, name = context, dockerfile or "Dockerfile"
        query = {"t": list(options.tags), "dockerfile": name, "q": quiet, "nocache": options.no_cache,
                 "pull": options.pull, "rm": True, "target": options.target or None,
                 "networkmode": options.network or None, "extrahosts": ",".join(options.extra_hosts) or None,
                 "buildargs": json.dumps(options.build_args) if options.build_args else None,
                 "labels": json.dumps(options.labels) if options.labels else None}
        image_id = ""
        last = ""
        try:
            for event in self.api.json_stream("POST", "/build", query, body=body,
                                              headers={"Content-Type": "application/x-tar"}):
                aux = event.get("aux")
                if isinstance(aux, dict) and aux.get("ID"):
                    image_id = aux["ID"]
                    continue
                text = event.get("stream")
                if isinstance(text, str) and text:
                    last = text.strip() or last
                    if on_event is not None and not quiet:
                        on_event("output", text)
                elif ("status" in event or "progressDetail" in event) and on_event is not None and not quiet:
                    on_event("progress", event)  # a base image's pull
        except StreamError as exc:
            raise BuildFailed(str(exc)) from None
        finally:
            if isinstance(context, str):
                body.close()
        if not image_id:
            # a daemon that sends no aux (an old one) ends with "Successfully built ID" or, with
            # -q, the ID alone
            image_id = last.rsplit(" ", 1)[-1] if last.startswith(("Successfully built", "sha256:")) else ""
        if not image_id:
            raise PyEngineError("the daemon did not say which image it built")
        return image_id

    def prune_build_cache(self) -> dict[str, Any]:
        """``POST /build/prune``."""
        answer = self.api.json("POST", "/build/prune") or {}
        return {"CachesDeleted": answer.get("CachesDeleted") or [], "SpaceReclaimed": answer.get("SpaceReclaimed") or 0}

    def login(self, server: str, username: str, password: str) -> str:
        from pyengine.registry import auth

        answer = self.api.json("POST", "/auth", body={"username": username, "password": password,
                                                      "serveraddress": auth.normalise_host(server)})
        return (answer or {}).get("Status") or "Login Succeeded"


class BuildFailed(PyEngineError):
    """A step of a daemon's build failed (the local build's exit status, 1)."""

    exit_code = 1


def context_tar(context: str, dockerfile: str | None = None,
                dockerfile_text: str | None = None) -> tuple[IO[bytes], str]:
    """The build context of directory ``context`` as a tar (spooled, rewound) and the
    Dockerfile's name in it, as the docker CLI sends them: what ``.dockerignore`` (or
    ``<Dockerfile>.dockerignore``) excludes is left out, except the Dockerfile and the ignore
    file themselves; a Dockerfile outside the context, or given as text, goes in as
    ``.dockerfile.<random>``."""
    import secrets
    import tarfile
    import tempfile

    from pyengine.build.context import BuildContext
    from pyengine.build.dockerignore import find_dockerignore

    path = None if dockerfile_text is not None else os.path.abspath(dockerfile or os.path.join(context, "Dockerfile"))
    ctx = BuildContext.from_directory(context, path)
    if path is not None and not os.path.isfile(path):
        raise NotFound(f"unable to prepare context: the Dockerfile {dockerfile or os.path.join(context, 'Dockerfile')} "
                       "does not exist")
    root = ctx.root
    ignore_file = find_dockerignore(root, path)

    def inside(host_path: str) -> str | None:
        rel = os.path.relpath(os.path.realpath(host_path), root)
        return None if rel == ".." or rel.startswith("../") else rel.replace(os.sep, "/")

    name = inside(path) if path is not None else None
    extra: dict[str, str] = {}  # name in the tar -> file on this machine
    if name is None:
        name = f".dockerfile.{secrets.token_hex(10)}"
        if path is not None:
            extra[name] = path
            if ignore_file is not None and inside(str(ignore_file)) is None:
                extra[name + ".dockerignore"] = str(ignore_file)
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=32 << 20)  # type: ignore[assignment]

    def plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uname = info.gname = ""
        return info

    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            sent = set()
            for entry in ctx.walk():
                tar.add(entry.path, arcname=entry.relpath, recursive=False, filter=plain)
                sent.add(entry.relpath)
            always = [rel for rel in (name, inside(str(ignore_file)) if ignore_file else None) if rel]
            for rel in always:
                if rel not in sent and rel not in extra and os.path.lexists(os.path.join(root, rel)):
                    tar.add(os.path.join(root, rel), arcname=rel, recursive=False, filter=plain)
            for arcname, host_path in extra.items():
                tar.add(host_path, arcname=arcname, recursive=False, filter=plain)
            if dockerfile_text is not None:
                import io

                data = dockerfile_text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    except BaseException:
        out.close()
        raise
    finally:
        ctx.close()
    out.seek(0)
    return out, name


def _split_repo_tag(ref: str | None) -> tuple[str | None, str | None]:
    if not ref:
        return None, None
    from pyengine.images.reference import parse_reference

    parsed = parse_reference(ref)
    return parsed.repository, parsed.tag


class RemoteNetworks:
    """Network verbs of a daemon."""

    def __init__(self, api: Transport) -> None:
        self.api = api

    def create(self, name: str, driver: str = "bridge", *, subnet: str | None = None, gateway: str | None = None,
               ip_range: str | None = None, internal: bool = False, options: dict[str, str] | None = None,
               labels: dict[str, str] | None = None) -> str:
        config = {k: v for k, v in (("Subnet", subnet), ("Gateway", gateway), ("IPRange", ip_range)) if v}
        body = {"Name": name, "Driver": driver, "Internal": internal, "Options": options or {},
                "Labels": labels or {}, "IPAM": {"Driver": "default", "Config": [config] if config else []}}
        return self.api.json("POST", "/networks/create", body=body)["Id"]

    def list(self) -> list[dict[str, Any]]:
        return self.api.json("GET", "/networks") or []

    def inspect(self, name: str) -> dict[str, Any]:
        return self.api.json("GET", f"/networks/{_q(name)}")

    def remove(self, name: str) -> None:
        self.api.request("DELETE", f"/networks/{_q(name)}")

    def prune(self) -> builtins.list[str]:
        return self.api.json("POST", "/networks/prune").get("NetworksDeleted") or []

    def connect(self, name: str, container: str, aliases: builtins.list[str] | None = None,
                ip: str | None = None) -> None:
        endpoint: dict[str, Any] = {"Aliases": aliases or None}
        if ip:
            endpoint["IPAMConfig"] = {"IPv4Address": ip}
        self.api.request("POST", f"/networks/{_q(name)}/connect", body={"Container": container,
                                                                      "EndpointConfig": endpoint})

    def disconnect(self, name: str, container: str, force: bool = False) -> None:
        self.api.request("POST", f"/networks/{_q(name)}/disconnect", body={"Container": container, "Force": force})


class RemoteVolumes:
    """Volume verbs of a daemon."""

    def __init__(self, api: Transport) -> None:
        self.api = api

    def create(self, name: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return self.api.json("POST", "/volumes/create", body={"Name": name or "", "Labels": labels or {}})

    def list(self) -> list[dict[str, Any]]:
        return (self.api.json("GET", "/volumes") or {}).get("Volumes") or []

    def inspect(self, name: str) -> dict[str, Any]:
        return self.api.json("GET", f"/volumes/{_q(name)}")

    def remove(self, name: str, force: bool = False) -> None:
        self.api.request("DELETE", f"/volumes/{_q(name)}", {"force": force})

    def prune(self) -> builtins.list[str]:
        return self.api.json("POST", "/volumes/prune").get("VolumesDeleted") or []


class RemoteSystem:
    """What a daemon says about itself."""

    def __init__(self, api: Transport) -> None:
        self.api = api

    def info(self) -> dict[str, Any]:
        return self.api.json("GET", "/info")

    def version(self) -> dict[str, Any]:
        return self.api.json("GET", "/version")

    def disk_usage(self) -> dict[str, Any]:
        return self.api.json("GET", "/system/df")

    def events(self, since_ns: int | None = None, until_ns: int | None = None,
               filters: dict[str, list[str]] | None = None) -> Iterator[dict[str, Any]]:
        """``GET /events``: the daemon's events, as they come (until ``until_ns``)."""
        yield from self.api.json_stream("GET", "/events", {
            "since": _unix(since_ns), "until": _unix(until_ns), "filters": _filters(filters)})


def _unix(time_ns: int | None) -> str | None:
    """A time as the docker CLI sends ``since``/``until``: ``SECONDS.NANOSECONDS``."""
    if time_ns is None:
        return None
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return f"{seconds}.{nanos:09d}"


class RemoteEngine:
    """Every verb group of one daemon, over one transport."""

    remote = True

    def __init__(self, api: Transport) -> None:
        self.api = api
        self.containers = RemoteContainers(api)
        self.images = RemoteImages(api)
        self.networks = RemoteNetworks(api)
        self.volumes = RemoteVolumes(api)
        self.system = RemoteSystem(api)

    def close(self) -> None:
        self.api.close()
