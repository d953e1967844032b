"""The build executor end to end through ``pyengine build``: each instruction's effect on the
built image (config through ``image inspect``, files and modes through ``run``), multi-stage
builds, RUN mounts and confinement, the cache, and the errors a user meets.

Every test runs as root against the real kernel: RUN steps are real containers.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.server
import io
import json
import lzma
import os
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from containers_support import busybox_engine

from conftest import EngineEnv, need_tool

TEN = """\
FROM busybox
ENV GREETING=hi
WORKDIR /app
COPY f.txt .
RUN echo "$GREETING $VERSION" > /app/out && cat f.txt
RUN mkdir /data && echo two > /data/two
ARG VERSION=1
LABEL version=$VERSION
EXPOSE 8080 53/UDP
CMD ["cat", "/app/out"]
"""


@pytest.fixture
def engine(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    yield from busybox_engine(engine_env, tmp_path_factory)


def context(tmp_path: Path, dockerfile: str, files: dict[str, str | bytes] | None = None) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, content in (files or {}).items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return ctx


def build(engine: EngineEnv, ctx: Path, *flags: str, check: bool = True, env: dict | None = None):
    return engine.run("build", *flags, str(ctx), check=check, env=env)


def inspect(engine: EngineEnv, ref: str) -> dict:
    return json.loads(engine.run("image", "inspect", ref, check=True).stdout)[0]


def run_in(engine: EngineEnv, ref: str, script: str) -> str:
    return engine.run("run", "--rm", "--entrypoint", "", ref, "sh", "-c", script, check=True).stdout


def history(engine: EngineEnv, ref: str) -> list[dict]:
    image = inspect(engine, ref)
    store = Path(engine.data_root) / "blobs" / "sha256" / image["Id"].removeprefix("sha256:")
    return json.loads(store.read_text())["history"]


# -- the ten-instruction Dockerfile --------------------------------------------------------------
def test_build_applies_every_step_to_config_and_files(engine: EngineEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, TEN, {"f.txt": "hello\n"})
    result = build(engine, ctx, "-t", "ten:1")
    lines = result.stdout.splitlines()
    assert lines[0] == "Step 1/10 : FROM busybox"
    assert "Step 5/10 : RUN echo \"$GREETING $VERSION\" > /app/out && cat f.txt" in lines
    assert sum(1 for line in lines if line.startswith(" ---> Running in ")) == 2
    assert "hello" in lines  # the RUN's output is streamed
    assert lines[-2].startswith("Successfully built ") and lines[-1] == "Successfully tagged ten:latest" \
        or lines[-1] == "Successfully tagged ten:1"
    data = inspect(engine, "ten:1")
    assert lines[-2] == f"Successfully built {data['Id'][7:19]}"
    config = data["Config"]
    assert "GREETING=hi" in config["Env"]
    assert config["WorkingDir"] == "/app"
    assert config["Labels"] == {"version": "1"}
    assert config["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert config["Cmd"] == ["cat", "/app/out"]
    # ARG VERSION is declared after the RUN: the RUN did not see it
    assert engine.run("run", "--rm", "ten:1", check=True).stdout == "hi \n"
    assert run_in(engine, "ten:1", "cat /data/two; stat -c '%a %u' /app/f.txt /app") == "two\n644 0\n755 0\n"
    base_layers = len(inspect(engine, "busybox")["RootFS"]["Layers"])
    assert len(data["RootFS"]["Layers"]) == base_layers + 4  # WORKDIR, COPY, 2 RUN
    entries = history(engine, "ten:1")[-9:]
    assert [e["created_by"] for e in entries] == [
        "ENV GREETING=hi", "WORKDIR /app", "COPY f.txt . # buildkit",
        'RUN /bin/sh -c echo "$GREETING $VERSION" > /app/out && cat f.txt # buildkit',
        "RUN /bin/sh -c mkdir /data && echo two > /data/two # buildkit",
        "ARG VERSION=1", "LABEL version=1", "EXPOSE map[53/udp:{} 8080/tcp:{}]", 'CMD ["cat" "/app/out"]']
    assert [bool(e.get("empty_layer")) for e in entries] == [True, False, False, False, False, True, True, True, True]
    assert engine.run("ps", "-aq").stdout == "", "intermediate containers are removed"


def test_quiet_iidfile_label_and_output_archive(engine: EngineEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\nCMD [\"true\"]\n")
    iid = tmp_path / "iid"
    out = tmp_path / "image.tar"
    result = build(engine, ctx, "-q", "--iidfile", str(iid), "--label", "a=b", "--output",
                   f"type=oci,dest={out}", "-t", "q:1")
    assert result.stdout.strip() == iid.read_text() == inspect(engine, "q:1")["Id"]
    assert inspect(engine, "q:1")["Config"]["Labels"] == {"a": "b"}
    with tarfile.open(out) as tar:
        assert "index.json" in tar.getnames()


# -- metadata instructions -----------------------------------------------------------------------
def test_entrypoint_resets_inherited_cmd_but_not_own(engine: EngineEnv, tmp_path: Path) -> None:
    build(engine, context(tmp_path, 'FROM busybox\nCMD ["echo", "base"]\n'), "-t", "withcmd")
    build(engine, context(tmp_path, 'FROM withcmd\nENTRYPOINT ["echo", "ep"]\n'), "-t", "reset")
    config = inspect(engine, "reset")["Config"]
    assert config["Entrypoint"] == ["echo", "ep"] and not config.get("Cmd")
    build(engine, context(tmp_path, 'FROM withcmd\nCMD ["own"]\nENTRYPOINT ["echo"]\n'), "-t", "keep")
    assert inspect(engine, "keep")["Config"]["Cmd"] == ["own"]
    assert engine.run("run", "--rm", "keep", check=True).stdout == "own\n"


def test_user_volume_stopsignal_healthcheck_shell_maintainer(engine: EngineEnv, tmp_path: Path) -> None:
    dockerfile = """\
FROM busybox
MAINTAINER Jane <jane@example.com>
SHELL ["/bin/sh", "-ec"]
RUN echo "shell: $0 $-" > /shell
USER app:extra
VOLUME ["/data", "/logs"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=3s --retries=2 CMD wget -q localhost || exit 1
CMD echo from shell form
"""
    build(engine, context(tmp_path, dockerfile), "-t", "meta")
    data = inspect(engine, "meta")
    config = data["Config"]
    assert data["Author"] == "Jane <jane@example.com>"
    assert config["Shell"] == ["/bin/sh", "-ec"]
    assert config["User"] == "app:extra"
    assert config["Volumes"] == {"/data": {}, "/logs": {}}
    assert config["StopSignal"] == "SIGINT"
    assert config["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q localhost || exit 1"], "Interval": 5_000_000_000,
                                     "Timeout": 3_000_000_000, "Retries": 2}
    assert config["Cmd"] == ["/bin/sh", "-ec", "echo from shell form"]
    assert "e" in run_in(engine, "meta", "cat /shell").split()[-1]
    assert engine.run("run", "--rm", "meta", "id", "-u", check=True).stdout == "1000\n"
    build(engine, context(tmp_path, "FROM meta\nHEALTHCHECK NONE\n"), "-t", "nohealth")
    assert inspect(engine, "nohealth")["Config"]["Healthcheck"] == {"Test": ["NONE"]}


def test_onbuild_triggers_run_in_child_build(engine: EngineEnv, tmp_path: Path) -> None:
    build(engine, context(tmp_path, "FROM busybox\nONBUILD RUN echo triggered > /trigger\n"
                          "ONBUILD ENV CHILD=yes\n"), "-t", "parent")
    assert inspect(engine, "parent")["Config"]["OnBuild"] == ["RUN echo triggered > /trigger", "ENV CHILD=yes"]
    assert "trigger" not in engine.run("run", "--rm", "parent", "ls", "/", check=True).stdout.split()
    result = build(engine, context(tmp_path, "FROM parent\nRUN cat /trigger\n"), "-t", "child")
    assert "# Executing 2 build triggers" in result.stdout
    assert result.stdout.count("triggered") == 1
    data = inspect(engine, "child")
    assert not data["Config"].get("OnBuild")
    assert "CHILD=yes" in data["Config"]["Env"]


def test_workdir_is_created_owned_by_user(engine: EngineEnv, tmp_path: Path) -> None:
    build(engine, context(tmp_path, "FROM busybox\nUSER app\nWORKDIR /srv/app\nWORKDIR sub\nRUN pwd > here\n"),
          "-t", "wd")
    assert inspect(engine, "wd")["Config"]["WorkingDir"] == "/srv/app/sub"
    out = run_in(engine, "wd", "stat -c '%U %a' /srv /srv/app /srv/app/sub; cat /srv/app/sub/here")
    assert out == "root 755\napp 755\napp 755\n/srv/app/sub\n"


# -- COPY and ADD --------------------------------------------------------------------------------
def test_copy_flags_wildcards_dirs_and_symlinks(engine: EngineEnv, tmp_path: Path) -> None:
    dockerfile = """\
FROM busybox
COPY --chown=app:extra --chmod=750 a.txt /owned/
COPY *.txt /texts/
COPY dir /contents
COPY dir/ /contents2/
COPY passwd-link /links/
COPY --chown=1234 a.txt /numeric
"""
    ctx = context(tmp_path, dockerfile, {"a.txt": "A\n", "b.txt": "B\n", "dir/x": "X\n", "dir/sub/y": "Y\n"})
    os.symlink("/etc/passwd", ctx / "passwd-link")
    os.chmod(ctx / "dir" / "x", 0o604)
    build(engine, ctx, "-t", "copies")
    out = run_in(engine, "copies", "stat -c '%n %U:%G %a' /owned/a.txt; stat -c '%n %u:%g %a' /numeric; "
                 "ls /texts; ls -R /contents; "
                 "ls /contents2; readlink /links/passwd-link; stat -c '%a' /contents/x")
    assert out.splitlines() == ["/owned/a.txt app:extra 750", "/numeric 1234:1234 644", "a.txt", "b.txt",
                                "/contents:", "sub", "x", "", "/contents/sub:", "y", "sub", "x", "/etc/passwd", "604"]


def test_context_symlink_is_copied_as_symlink_never_the_host_file(engine: EngineEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM scratch\nCOPY evil /evil\nCOPY tree/ /tree/\n")
    os.symlink("/etc/passwd", ctx / "evil")
    (ctx / "tree").mkdir()
    os.symlink("/etc/shadow", ctx / "tree" / "shadow")
    build(engine, ctx, "-t", "links", "--output", f"type=docker,dest={tmp_path / 'links.tar'}")
    engine.run("create", "--name", "lk", "links", "x", check=True)
    data = engine.run("export", "lk", input=b"", check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        evil = tar.getmember("evil")
        assert evil.issym() and evil.linkname == "/etc/passwd"
        shadow = tar.getmember("tree/shadow")
        assert shadow.issym() and shadow.linkname == "/etc/shadow"
        assert not any(m.isreg() and m.size for m in tar.getmembers())


def test_copy_errors_name_the_line(engine: EngineEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\n\nCOPY a.txt b.txt /notadir\n", {"a.txt": "a", "b.txt": "b"})
    result = build(engine, ctx, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "pyengine: error: Dockerfile:3: When using COPY with more than one source file, the destination "
        "must be a directory and end with a /")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY ../outside /x\n")
    result = build(engine, ctx, check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("pyengine: error: Dockerfile:2: ")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY missing.txt /x\n")
    result = build(engine, ctx, check=False)
    assert result.returncode != 0 and "Dockerfile:2:" in result.stderr and "missing.txt" in result.stderr


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid = len(data), 0o640, 7
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_add_extracts_local_archives(engine: EngineEnv, tmp_path: Path) -> None:
    need_tool("zstd")
    raw = _tar_bytes({"inner/file": b"content\n"})
    zstd = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
    files = {"plain.tar": raw, "a.tar.gz": gzip.compress(raw), "a.tar.bz2": bz2.compress(raw),
             "a.tar.xz": lzma.compress(raw), "a.tar.zst": zstd, "notatar.gz": gzip.compress(b"just text")}
    dockerfile = "FROM busybox\n" + "".join(f"ADD {name} /x/{name}.d/\n" for name in files) + "COPY a.tar.gz /copied/\n"
    build(engine, context(tmp_path, dockerfile, files), "-t", "adds")
    script = "; ".join(f"cat /x/{name}.d/inner/file" for name in list(files)[:5])
    assert run_in(engine, "adds", script) == "content\n" * 5
    out = run_in(engine, "adds", "stat -c '%a %u' /x/a.tar.xz.d/inner/file; ls /x/notatar.gz.d; ls /copied")
    assert out.splitlines() == ["640 7", "notatar.gz", "a.tar.gz"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_add_url_with_checksum(engine: EngineEnv, tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "payload.txt").write_bytes(b"downloaded\n")
    digest = "sha256:" + hashlib.sha256(b"downloaded\n").hexdigest()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             lambda *a: _Quiet(*a, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/payload.txt"
        build(engine, context(tmp_path, f"FROM busybox\nADD --checksum={digest} {url} /dl/\n"), "-t", "url")
        assert run_in(engine, "url", "cat /dl/payload.txt; stat -c '%a' /dl/payload.txt") == "downloaded\n600\n"
        bad = build(engine, context(tmp_path, f"FROM busybox\nADD --checksum=sha256:{'0' * 64} {url} /dl/\n"),
                    check=False)
        assert bad.returncode == 1
        assert bad.stderr.strip().splitlines()[-1].startswith("pyengine: error: Dockerfile:2: digest mismatch")
    finally:
        server.shutdown()
        server.server_close()


# -- multi-stage ---------------------------------------------------------------------------------
MULTI = """\
FROM busybox AS build
RUN echo built > /artifact && chown 1000:1000 /artifact
FROM busybox AS unused
RUN echo SHOULD-NOT-RUN
FROM busybox AS other
RUN echo other > /other
FROM scratch
COPY --from=build /artifact /artifact
COPY --from=2 /bin/busybox /bin/busybox
COPY --from=other /other /other
COPY --from=busybox /etc/passwd /etc/passwd
CMD ["/bin/busybox", "cat", "/artifact", "/other"]
"""


def test_multistage_copies_from_stages_and_images_and_skips_unused(engine: EngineEnv, tmp_path: Path) -> None:
    result = build(engine, context(tmp_path, MULTI), "-t", "multi")
    assert "SHOULD-NOT-RUN" not in result.stdout
    assert engine.run("run", "--rm", "multi", check=True).stdout == "built\nother\n"
    owner = engine.run("run", "--rm", "multi", "/bin/busybox", "stat", "-c", "%u", "/artifact", check=True)
    assert owner.stdout == "1000\n"  # COPY --from keeps the owner
    target = build(engine, context(tmp_path, MULTI), "--target", "other", "-t", "other-only")
    assert "SHOULD-NOT-RUN" not in target.stdout and "Step" in target.stdout
    assert run_in(engine, "other-only", "cat /other") == "other\n"
    missing = build(engine, context(tmp_path, MULTI), "--target", "nope", check=False)
    assert missing.returncode != 0
    assert 'target stage "nope" could not be found' in missing.stderr.strip().splitlines()[-1]


# -- RUN ---------------------------------------------------------------------------------------
def test_run_is_confined_like_a_default_container(engine: EngineEnv, tmp_path: Path) -> None:
    result = build(engine, context(tmp_path, "FROM busybox\nRUN mount -t tmpfs x /mnt\n"), check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == ("pyengine: error: The command '/bin/sh -c mount -t tmpfs x /mnt' "
                                     "returned a non-zero code: 255") or \
        "The command '/bin/sh -c mount -t tmpfs x /mnt' returned a non-zero code:" in result.stderr
    caps = build(engine, context(tmp_path, "FROM busybox\nRUN grep CapBnd /proc/self/status > /caps\n"), "-t", "caps")
    assert caps.returncode == 0
    assert run_in(engine, "caps", "cat /caps").split()[1] == "00000000a80425fb"  # Docker's default set


def test_failing_run_gives_dockers_wording(engine: EngineEnv, tmp_path: Path) -> None:
    result = build(engine, context(tmp_path, "FROM busybox\nRUN exit 1\n"), check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "pyengine: error: The command '/bin/sh -c exit 1' returned a non-zero code: 1"
    assert engine.run("ps", "-aq").stdout == ""


def test_run_mounts_cache_secret_tmpfs_bind(engine: EngineEnv, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret")
    dockerfile = """\
FROM busybox
RUN --mount=type=cache,target=/cache echo run >> /cache/log && wc -l < /cache/log > /count
RUN --mount=type=secret,id=tok cat /run/secrets/tok > /seen
RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && grep -q ' /scratch tmpfs' /proc/mounts
RUN --mount=type=bind,source=data,target=/ctx,rw cat /ctx/file > /from-ctx && echo w > /ctx/written
"""
    ctx = context(tmp_path, dockerfile, {"data/file": "ctxdata\n"})
    build(engine, ctx, "--secret", f"id=tok,src={secret}", "-t", "mounts")
    assert run_in(engine, "mounts", "cat /count; cat /seen; echo; cat /from-ctx; ls /run/secrets/tok /scratch/x "
                  "/ctx 2>&1 | grep -c 'No such file'") == "1\ns3cret\nctxdata\n3\n"
    assert not (ctx / "data" / "written").exists()
    build(engine, ctx, "--no-cache", "--secret", f"id=tok,src={secret}", "-t", "mounts2")
    assert run_in(engine, "mounts2", "cat /count") == "2\n"  # the cache mount survived the first build
    engine.run("builder", "prune", "-f", check=True)
    build(engine, ctx, "--secret", f"id=tok,src={secret}", "-t", "mounts3")
    assert run_in(engine, "mounts3", "cat /count") == "1\n"  # prune freed it


# -- the cache ----------------------------------------------------------------------------------
def _ran(output: str) -> int:
    return sum(1 for line in output.splitlines() if line.startswith(" ---> Running in "))


def test_cache_unchanged_rebuild_runs_nothing_same_id(engine: EngineEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, TEN, {"f.txt": "hello\n"})
    first = build(engine, ctx, "-t", "c:1")
    assert _ran(first.stdout) == 2
    image_id = inspect(engine, "c:1")["Id"]
    again = build(engine, ctx, "-t", "c:2")
    assert _ran(again.stdout) == 0
    assert again.stdout.count(" ---> Using cache") == 9
    assert inspect(engine, "c:2")["Id"] == image_id
    # An mtime-only change of a COPY source keeps everything
    os.utime(ctx / "f.txt", (1_000_000, 1_000_000))
    touched = build(engine, ctx, "-t", "c:3")
    assert _ran(touched.stdout) == 0 and inspect(engine, "c:3")["Id"] == image_id
    # A content change rebuilds from the COPY on: both RUNs run once
    (ctx / "f.txt").write_text("changed\n")
    changed = build(engine, ctx, "-t", "c:4")
    assert _ran(changed.stdout) == 2
    lines = changed.stdout.splitlines()
    copy_at = lines.index("Step 4/10 : COPY f.txt .")
    assert lines[1:copy_at].count(" ---> Using cache") == 2 and " ---> Using cache" not in lines[copy_at:]
    assert inspect(engine, "c:4")["Id"] != image_id
    # A build-arg the RUNs see changes from the first RUN that sees it
    (ctx / "Dockerfile").write_text(TEN.replace("ENV GREETING=hi", "ARG NAME\nENV GREETING=hi"))
    build(engine, ctx, "-t", "c:5")
    with_arg = build(engine, ctx, "--build-arg", "NAME=x", "-t", "c:6")
    assert _ran(with_arg.stdout) == 2
    assert _ran(build(engine, ctx, "--build-arg", "NAME=x", "-t", "c:7").stdout) == 0
    # --no-cache runs everything
    assert _ran(build(engine, ctx, "--no-cache").stdout) == 2


def test_cache_survives_and_builder_prune_frees_it(engine: EngineEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\nRUN echo once > /once\n")
    build(engine, ctx, "-t", "p:1")
    cache_dir = Path(engine.data_root) / "builder"
    assert cache_dir.stat().st_mode & 0o777 == 0o700
    assert _ran(build(engine, ctx).stdout) == 0
    pruned = engine.run("builder", "prune", "-f", check=True)
    assert pruned.stdout.strip().splitlines()[-1].startswith("Total reclaimed space: ")
    assert _ran(build(engine, ctx).stdout) == 1


def test_source_date_epoch_makes_builds_reproducible(engine: EngineEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\nCOPY f /f\nRUN echo x > /x\nCMD [\"true\"]\n", {"f": "f\n"})
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    first = build(engine, ctx, "-q", "--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", env=env)
    second = build(engine, ctx, "-q", "--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", env=env)
    assert first.stdout.strip() == second.stdout.strip()
    data = inspect(engine, first.stdout.strip())
    assert data["Created"] == "2023-11-14T22:13:20Z"


# -- contexts and errors -------------------------------------------------------------------------
def test_context_and_dockerfile_from_stdin(engine: EngineEnv, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM busybox\nCOPY in.txt /\n"), ("in.txt", b"from tar\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    engine.run("build", "-t", "fromtar", "-", input=buf.getvalue(), check=True)
    assert engine.run("run", "--rm", "fromtar", "cat", "/in.txt", check=True).stdout == "from tar\n"
    ctx = tmp_path / "plain"
    ctx.mkdir()
    (ctx / "x").write_text("x\n")
    engine.run("build", "-t", "stdinfile", "-f", "-", str(ctx), input="FROM busybox\nCOPY x /x\n", check=True)
    assert engine.run("run", "--rm", "stdinfile", "cat", "/x", check=True).stdout == "x\n"


@pytest.mark.parametrize(("dockerfile", "wanted"), [
    ("FROM busybox\nFROBNICATE x\n", "Dockerfile:2: "),
    ("RUN true\n", "Dockerfile:1: "),
    ("FROM busybox\nEXPOSE 80/xyz\n", "Dockerfile:2: "),
])
def test_bad_dockerfile_is_one_line_naming_the_line(engine: EngineEnv, tmp_path: Path, dockerfile: str,
                                                    wanted: str) -> None:
    before = engine.run("images", "-aq").stdout
    result = build(engine, context(tmp_path, dockerfile), check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pyengine: error: {wanted}"), result.stderr
    assert engine.run("images", "-aq").stdout == before


def test_missing_base_image_is_one_line(engine: EngineEnv, tmp_path: Path) -> None:
    result = build(engine, context(tmp_path, "FROM 127.0.0.1:1/nope:1\n"), check=False)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "127.0.0.1:1/nope:1" in result.stderr


def test_cache_entry_whose_image_was_removed_is_a_miss(engine: EngineEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\nRUN echo a > /a\nCMD [\"true\"]\n")
    build(engine, ctx, "-t", "gone:1")
    engine.run("rmi", "gone:1", check=True)  # the RUN's intermediate image still holds its layer
    assert _ran(build(engine, ctx, "-t", "gone:2").stdout) == 0
    engine.run("rmi", "gone:2", check=True)
    held = [i for i in engine.run("images", "-aq", "--no-trunc").stdout.split()
            if i != inspect(engine, "busybox")["Id"]]
    engine.run("rmi", *held, check=True)
    assert _ran(build(engine, ctx, "-t", "gone:3").stdout) == 1



def test_run_heredocs_add_host_and_network(engine: EngineEnv, tmp_path: Path) -> None:
    dockerfile = """\
FROM busybox
RUN <<EOF
echo "plain $0" > /plain
EOF
RUN <<EOF
#!/bin/sh -e
echo "shebang" > /shebang
EOF
COPY <<EOF /made.txt
made by a heredoc
EOF
RUN grep myhost /etc/hosts > /hosts-line
RUN --network=none ls /sys/class/net > /links
"""
    build(engine, context(tmp_path, dockerfile), "--add-host", "myhost:10.1.2.3", "--network", "none", "-t", "hd")
    out = run_in(engine, "hd", "cat /plain /shebang /made.txt /hosts-line /links")
    assert out.splitlines() == ["plain /bin/sh", "shebang", "made by a heredoc", "10.1.2.3\tmyhost", "lo"]
