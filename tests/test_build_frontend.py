"""The build frontend, without root: Dockerfile text -> typed instructions -> a build plan,
variable expansion, ARG scoping, .dockerignore rules and the build context."""

from __future__ import annotations

import io
import os
import platform
import tarfile
from pathlib import Path

import pytest

from conftest import need_root
from pyengine.build.args import BuildArgs, normalize_platform, platform_args
from pyengine.build.context import BuildContext, extract_context_tar
from pyengine.build.dockerfile import parse, parse_instruction
from pyengine.build.dockerignore import IgnoreMatcher, find_dockerignore, match, read_patterns
from pyengine.build.expand import Expander, expand, expand_pairs, expand_text, split_words
from pyengine.build.instructions import (
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from pyengine.build.plan import plan
from pyengine.errors import DockerfileError, InvalidArchive, PyEngineError

SECOND = 1_000_000_000


def body(text: str):
    """The instructions of a one-stage Dockerfile ``FROM scratch`` + ``text``."""
    return parse("FROM scratch\n" + text).stages[0].instructions


def one(text: str):
    [instruction] = body(text)
    return instruction


# -- the parser: a corpus of Dockerfiles and what each must parse to ----------------------------

PARSE_CASES = [
    ("lowercase keywords", "from alpine\nrun echo hi\n",
     lambda df: isinstance(df.stages[0].instructions[0], Run) and df.stages[0].base == "alpine"),
    ("mixed-case keyword and AS", "FrOm alpine As Builder\n",
     lambda df: df.stages[0].name == "builder"),
    ("syntax directive accepted and ignored", "# syntax=docker/dockerfile:1.7\nFROM a\n",
     lambda df: df.directives.syntax == "docker/dockerfile:1.7" and df.escape == "\\"),
    ("check directive", "# check=skip=all\nFROM a\n", lambda df: df.directives.check == "skip=all"),
    ("directive names are case-insensitive, spaces allowed", "#  ESCAPE = `\nFROM a\n",
     lambda df: df.escape == "`"),
    ("directive after a comment is a comment", "# hello\n# escape=`\nFROM a\n",
     lambda df: df.escape == "\\"),
    ("directive after a blank line is a comment", "\n# escape=`\nFROM a\n",
     lambda df: df.escape == "\\"),
    ("directive after an instruction is a comment",
     "FROM a\n# escape=`\nRUN a \\\n b\n", lambda df: df.stages[0].instructions[0].command == "a  b"),
    ("unknown directive ends the directives", "# foo=bar\n# escape=`\nFROM a\n",
     lambda df: df.escape == "\\"),
    ("backtick escape continues lines, backslash is literal",
     "# escape=`\nFROM a\nRUN dir c:\\ `\n  && echo hi\n",
     lambda df: df.stages[0].instructions[0].command == "dir c:\\   && echo hi"),
    ("continuation with comments and blank lines inside",
     "FROM a\nRUN echo a \\\n# a comment\n   # an indented comment\n\n  b \\\n  c\n",
     lambda df: df.stages[0].instructions[0].command == "echo a   b   c"),
    ("continuation: trailing blanks after the escape",
     "FROM a\nRUN echo a \\   \n b\n", lambda df: df.stages[0].instructions[0].command == "echo a  b"),
    ("line numbers count continuation lines", "FROM a\nRUN a \\\n b\nRUN c\n",
     lambda df: [i.line for i in df.stages[0].instructions] == [2, 4]),
    ("original is the joined instruction", "FROM a\nRUN a \\\n b\n",
     lambda df: df.stages[0].instructions[0].original == "RUN a  b"),
    ("leading whitespace and CRLF", "  FROM a\r\n\tRUN x\r\n",
     lambda df: df.stages[0].instructions[0].command == "x"),
    ("a BOM is ignored", "\ufeffFROM a\n", lambda df: df.stages[0].base == "a"),
    ("global args before FROM", "ARG A=1\nARG B\nFROM a\n",
     lambda df: [a.args[0].name for a in df.global_args] == ["A", "B"]),
    ("FROM --platform and the unexpanded word", "FROM --platform=$BUILDPLATFORM ${IMG}:1 AS x\n",
     lambda df: (df.stages[0].platform, df.stages[0].base) == ("$BUILDPLATFORM", "${IMG}:1")),
    ("stages are indexed in order", "FROM a AS one\nFROM b\nFROM c AS three\n",
     lambda df: [(s.index, s.name) for s in df.stages] == [(0, "one"), (1, None), (2, "three")]),
]


@pytest.mark.parametrize("text, check", [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES])
def test_dockerfile_parses_as_the_reference_says(text, check) -> None:
    assert check(parse(text))


@pytest.mark.parametrize("text, command, exec_form", [
    ('RUN ["echo", "hi there"]', ["echo", "hi there"], True),
    ("RUN   [ \"a\" ]  ", ["a"], True),
    ("RUN []", [], True),
    ('RUN ["echo", 1]', '["echo", 1]', False),       # not all strings: shell form
    ("RUN [not json", "[not json", False),            # invalid JSON falls back to shell form
    ("RUN ['single', 'quotes']", "['single', 'quotes']", False),
    ("RUN echo $HOME", "echo $HOME", False),          # RUN is not expanded by the builder
])
def test_run_exec_form_and_shell_form(text: str, command, exec_form: bool) -> None:
    run = one(text)
    assert isinstance(run, Run)
    assert (run.command, run.exec_form) == (command, exec_form)


def test_cmd_and_entrypoint_forms() -> None:
    cmd, entry, cmd2 = body('CMD ["nginx", "-g", "daemon off;"]\nENTRYPOINT exec top -b\nCMD [bad\n')
    assert isinstance(cmd, Cmd) and cmd.exec_form and cmd.command == ["nginx", "-g", "daemon off;"]
    assert isinstance(entry, Entrypoint) and not entry.exec_form and entry.command == "exec top -b"
    assert cmd2.command == "[bad" and not cmd2.exec_form


# -- heredocs -------------------------------------------------------------------------------------

def test_heredoc_run_script_is_the_body() -> None:
    run = one("RUN <<EOF\necho one\necho two\nEOF\n")
    assert run.command == "<<EOF"
    assert run.heredocs[0].content == "echo one\necho two\n"
    assert run.script_heredoc() is run.heredocs[0]
    assert run.shell_script() == "echo one\necho two\n"


def test_heredoc_dash_strips_leading_tabs_and_terminator_may_be_indented() -> None:
    run = one("RUN <<-EOT\n\t\techo tabbed\n\t  spaces stay\n\tEOT\n")
    assert run.heredocs[0].content == "echo tabbed\n  spaces stay\n"
    assert run.heredocs[0].strip_tabs


def test_heredoc_without_dash_keeps_tabs_and_needs_exact_terminator() -> None:
    run = one("RUN <<EOF\n\tx\n\tEOF\nEOF\n")
    assert run.heredocs[0].content == "\tx\n\tEOF\n"


@pytest.mark.parametrize("marker, expands", [("<<EOF", True), ('<<"EOF"', False), ("<<'EOF'", False),
                                             ('<<-"EOF"', False)])
def test_heredoc_quoted_delimiter_turns_expansion_off(marker: str, expands: bool) -> None:
    copy = one(f"COPY {marker} /x\n$HOME\nEOF\n")
    assert copy.heredocs[0].name == "EOF" and copy.heredocs[0].expand_content is expands
    expanded = copy.expand(Expander({"HOME": "/root"}))
    assert expanded.heredocs[0].content == ("/root\n" if expands else "$HOME\n")


def test_several_heredocs_on_one_line_and_the_shell_gets_them_back() -> None:
    df = parse("FROM a\nRUN cat <<A 3<<B > /out\nfirst\nA\nsecond\nB\nRUN after\n")
    run, after = df.stages[0].instructions
    assert [(h.name, h.content, h.fd) for h in run.heredocs] == [("A", "first\n", None), ("B", "second\n", 3)]
    assert run.script_heredoc() is None
    assert run.shell_script() == "cat <<A 3<<B > /out\nfirst\nA\nsecond\nB"
    assert after.command == "after" and after.line == 7


def test_copy_heredoc_makes_a_file_and_keeps_other_sources() -> None:
    copy = one('COPY <<EOF a.txt <<"EOT" /dest/\nhello $NAME "quoted"\nEOF\nraw\nEOT\n')
    assert copy.sources == ["a.txt"] and copy.dest == "/dest/"
    assert [h.name for h in copy.heredocs] == ["EOF", "EOT"]
    expanded = copy.expand(Expander({"NAME": "you"}))
    assert expanded.heredocs[0].content == 'hello you "quoted"\n'   # quotes kept in a body
    assert expanded.heredocs[1].content == "raw\n"


def test_heredoc_in_quotes_or_exec_form_is_not_a_heredoc() -> None:
    run, exec_run = body('RUN echo "<<EOF"\nRUN ["sh", "-c", "cat <<EOF"]\n')
    assert run.heredocs == [] and exec_run.heredocs == []


# -- flags ----------------------------------------------------------------------------------------

def test_copy_flags() -> None:
    copy = one('COPY --from=build --chown=app:app --chmod=0755 --link --parents --exclude=*.md '
               '--exclude="b c" a b /dst/\n')
    assert isinstance(copy, Copy)
    assert (copy.from_, copy.chown, copy.chmod, copy.link, copy.parents) == ("build", "app:app", "0755", True, True)
    assert copy.exclude == ["*.md", "b c"] and copy.sources == ["a", "b"] and copy.dest == "/dst/"


def test_copy_json_form_keeps_spaces() -> None:
    copy = one('COPY ["a file", "dir with space/"]\n')
    assert copy.sources == ["a file"] and copy.dest == "dir with space/"


def test_add_flags() -> None:
    add = one("ADD --checksum=sha256:abc --keep-git-dir=true --link=false https://x/y.tgz /y\n")
    assert isinstance(add, Add) and add.unpack is None
    assert one("ADD --unpack=false a.tgz /y\n").unpack is False
    assert (add.checksum, add.keep_git_dir, add.link, add.sources) == ("sha256:abc", True, False,
                                                                         ["https://x/y.tgz"])


def test_run_mounts_network_security() -> None:
    run = one("RUN --mount=type=cache,target=/root/.cache,sharing=locked,id=pip "
              "--mount=type=bind,source=src,target=/src,from=build "
              "--mount=type=tmpfs,target=/tmp,size=64m "
              "--mount=type=secret,id=token --mount=type=secret,target=/etc/key,required "
              "--mount=type=ssh "
              "--mount=target=/ctx,rw "
              "--network=none --security=sandbox make\n")
    cache, bind, tmpfs, secret, secret2, ssh, plain = run.mounts
    assert (cache.type, cache.target, cache.id, cache.sharing, cache.readonly, cache.mode) == (
        "cache", "/root/.cache", "pip", "locked", False, 0o755)
    assert (bind.type, bind.source, bind.target, bind.from_, bind.readonly) == ("bind", "src", "/src", "build", True)
    assert (tmpfs.type, tmpfs.size, tmpfs.readonly) == ("tmpfs", 64 * 1024 * 1024, False)
    assert (secret.id, secret.target, secret.required) == ("token", "/run/secrets/token", False)
    assert (secret2.id, secret2.target, secret2.required) == ("key", "/etc/key", True)
    assert (ssh.type, ssh.id) == ("ssh", "default")
    assert (plain.type, plain.target, plain.readonly) == ("bind", "/ctx", False)
    assert (run.network, run.security, run.command) == ("none", "sandbox", "make")


def test_cache_mount_id_defaults_to_target_and_expands_with_it() -> None:
    run = one("RUN --mount=type=cache,target=$DIR true\n").expand(Expander({"DIR": "/c"}))
    assert (run.mounts[0].target, run.mounts[0].id) == ("/c", "/c")


def test_flags_stop_at_the_first_word_and_at_double_dash() -> None:
    run = one("RUN -- --not-a-flag\n")
    assert run.command == "--not-a-flag"
    run = one("RUN echo --network=host\n")
    assert run.network is None and run.command == "echo --network=host"


# -- every other instruction ------------------------------------------------------------------------

def test_env_forms_and_order() -> None:
    new, old, quoted = body('ENV A=1 B="two words" C=\\$x\nENV LEGACY value with spaces\nENV Q="a\\"b"\n')
    assert isinstance(new, Env)
    assert new.pairs == [("A", "1"), ("B", '"two words"'), ("C", "\\$x")]
    assert old.pairs == [("LEGACY", "value with spaces")]
    expanded = new.expand(Expander({"x": "no"}))
    assert expanded.pairs == [("A", "1"), ("B", "two words"), ("C", "$x")]
    assert quoted.expand(Expander({})).pairs == [("Q", 'a"b')]


def test_env_pairs_see_the_old_value() -> None:
    env = one("ENV a=new b=$a c=${a}-x\n")
    before = {"a": "old"}
    assert env.expand(Expander(before)).pairs == [("a", "new"), ("b", "old"), ("c", "old-x")]
    assert expand_pairs(env.pairs, before) == [("a", "new"), ("b", "old"), ("c", "old-x")]


def test_arg_several_per_line() -> None:
    arg = one('ARG A B=2 C="x y"\n')
    assert isinstance(arg, Arg)
    assert [(a.name, a.default) for a in arg.args] == [("A", None), ("B", "2"), ("C", '"x y"')]


def test_label_user_workdir_stopsignal_maintainer_shell_volume() -> None:
    label, user, workdir, sig, maint, shell, vol_json, vol_words = body(
        'LABEL a=1 "b c"="d e"\nUSER app:staff\nWORKDIR /srv/$APP\nSTOPSIGNAL SIGQUIT\n'
        'MAINTAINER Jane <j@x>\nSHELL ["/bin/bash", "-c"]\nVOLUME ["/data", "/logs"]\nVOLUME /a /b\n')
    assert isinstance(label, Label) and label.pairs == [("a", "1"), ('"b c"', '"d e"')]
    assert label.expand(Expander({})).pairs == [("a", "1"), ("b c", "d e")]
    assert isinstance(user, User) and user.user == "app:staff"
    assert isinstance(workdir, Workdir) and workdir.expand(Expander({"APP": "web"})).path == "/srv/web"
    assert isinstance(sig, StopSignal) and sig.signal == "SIGQUIT"
    assert isinstance(maint, Maintainer) and maint.name == "Jane <j@x>"
    assert isinstance(shell, Shell) and shell.shell == ["/bin/bash", "-c"]
    assert isinstance(vol_json, Volume) and vol_json.paths == ["/data", "/logs"]
    assert vol_words.paths == ["/a", "/b"]


@pytest.mark.parametrize("ports, exposed", [
    ("80", ["80/tcp"]),
    ("53/UDP 53/tcp", ["53/tcp", "53/udp"]),
    ("8000-8002", ["8000/tcp", "8001/tcp", "8002/tcp"]),
    ("7000-7001/udp 80/sctp", ["80/sctp", "7000/udp", "7001/udp"]),
    ("$PORTS", ["443/tcp", "8080/tcp"]),
])
def test_expose_ranges_and_lowercased_protocols(ports: str, exposed: list[str]) -> None:
    expose = one(f"EXPOSE {ports}\n")
    assert isinstance(expose, Expose)
    assert expose.expand(Expander({"PORTS": "8080 443"})).exposed_ports() == exposed


@pytest.mark.parametrize("ports, message", [("http", "invalid containerPort: http"),
                                            ("80/icmp", "invalid proto: icmp"),
                                            ("90-80", "invalid range")])
def test_expose_bad_port_names_the_line(ports: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=f"^Dockerfile:2: {message}"):
        one(f"EXPOSE {ports}\n").exposed_ports()


def test_healthcheck_options_in_nanoseconds() -> None:
    hc = one("HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=2s --start-interval=1.5s "
             "--retries=4 CMD curl -f http://localhost/ || exit 1\n")
    assert isinstance(hc, Healthcheck)
    assert hc.test == ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]
    assert (hc.interval, hc.timeout, hc.start_period, hc.start_interval, hc.retries) == (
        90 * SECOND, SECOND // 2, 2 * SECOND, 3 * SECOND // 2, 4)


def test_healthcheck_exec_form_and_none() -> None:
    exec_hc, none = body('HEALTHCHECK\tCMD ["/bin/check", "-q"]\nhealthcheck none\n')
    assert exec_hc.test == ["CMD", "/bin/check", "-q"] and exec_hc.interval == 0 and exec_hc.retries == 0
    assert none.test == ["NONE"]


def test_onbuild_parses_its_trigger() -> None:
    onbuild = one("ONBUILD COPY --chown=1:1 . /app\n")
    assert isinstance(onbuild, Onbuild)
    assert onbuild.expression == "COPY --chown=1:1 . /app"
    assert isinstance(onbuild.inner, Copy) and onbuild.inner.chown == "1:1"
    assert onbuild.expand(Expander({})) is onbuild


def test_parse_instruction_for_an_inherited_trigger() -> None:
    run = parse_instruction("RUN echo from-parent", line=7)
    assert isinstance(run, Run) and run.line == 7 and run.command == "echo from-parent"


def test_builder_expands_exactly_the_documented_instructions() -> None:
    lookup = Expander({"V": "val"})
    run, cmd, entry, copy, add, user, sig, vol = body(
        "RUN echo $V\nCMD echo $V\nENTRYPOINT [\"$V\"]\nCOPY --chown=$V --from=$V $V /$V\n"
        "ADD --checksum=$V $V /d\nUSER $V\nSTOPSIGNAL $V\nVOLUME /$V\n")
    assert run.expand(lookup).command == "echo $V"
    assert cmd.expand(lookup).command == "echo $V" and entry.expand(lookup).command == ["$V"]
    copy_x = copy.expand(lookup)
    assert (copy_x.sources, copy_x.dest, copy_x.chown, copy_x.from_) == (["val"], "/val", "val", "$V")
    add_x = add.expand(lookup)
    assert (add_x.sources, add_x.checksum) == (["val"], "val")
    assert user.expand(lookup).user == "val" and sig.expand(lookup).signal == "val"
    assert vol.expand(lookup).paths == ["/val"]


# -- bad Dockerfiles: one line, naming the line ------------------------------------------------------

BAD = [
    ("FROM a\nRUN x\nFOOBAR y\n", "Dockerfile:3: unknown instruction: FOOBAR"),
    ("", "Dockerfile: no FROM instruction"),
    ("# only a comment\nARG A=1\n", "Dockerfile: no FROM instruction"),
    ("RUN echo\nFROM a\n", "Dockerfile:1: RUN instruction must be preceded by FROM"),
    ("FROM a\nRUN --foo=bar x\n", "Dockerfile:2: unknown flag: foo"),
    ("FROM a\nCOPY --from a b\n", "Dockerfile:2: missing a value on flag: from"),
    ("FROM a\nCOPY --link=maybe a b\n", "Dockerfile:2: expecting boolean value for flag link, not: maybe"),
    ("FROM a\nCOPY --chown=1 --chown=2 a b\n", "Dockerfile:2: duplicate flag specified: chown"),
    ("FROM a\nENV --x=1\n", "Dockerfile:2: unknown flag: x"),
    ("FROM a\nRUN --mount=type=nfs,target=/x true\n", 'Dockerfile:2: unsupported mount type "nfs"'),
    ("FROM a\nRUN --mount=type=cache,target=/x,foo=1 true\n", "Dockerfile:2: unexpected key 'foo' in 'foo=1'"),
    ("FROM a\nRUN --mount=type=bind,target=/x,sharing=locked true\n",
     "Dockerfile:2: invalid cache sharing set for bind mount"),
    ("FROM a\nRUN --mount=type=cache true\n", "Dockerfile:2: mount type cache requires a target"),
    ("FROM a\nRUN --mount=type=bind,target=/x,size=1m true\n",
     "Dockerfile:2: unexpected key 'size' for mount type 'bind'"),
    ("FROM a\nRUN --network=bridge x\n", 'Dockerfile:2: unsupported network mode "bridge"'),
    ("FROM a\nRUN <<EOF\necho never ends\n", "Dockerfile:2: unterminated heredoc EOF"),
    ("FROM a\nCOPY a <<EOF\nx\nEOF\n", "Dockerfile:2: COPY cannot accept a heredoc as a destination"),
    ("FROM a\nRUN \\\n", "Dockerfile:2: line continuation at the end of the file: RUN has no arguments"),
    ("FROM a\nRUN\n", "Dockerfile:2: RUN requires at least one argument"),
    ("FROM a b\n", "Dockerfile:1: FROM requires either one or three arguments"),
    ("FROM a AS 1x\n", "Dockerfile:1: invalid name for build stage"),
    ("FROM a AS scratch\n", "Dockerfile:1: scratch is a reserved stage name"),
    ("FROM a AS x\nFROM b AS X\n", 'Dockerfile:2: duplicate stage name "x"'),
    ("FROM a\nCOPY onlyone\n", "Dockerfile:2: COPY requires at least two arguments"),
    ("FROM a\nENV A\n", "Dockerfile:2: ENV must have two arguments"),
    ("FROM a\nENV A=1 B\n", "Dockerfile:2: Syntax error - can't find = in \"B\""),
    ("FROM a\nENV =1\n", "Dockerfile:2: ENV names can not be blank"),
    ("FROM a\nARG =x\n", "Dockerfile:2: ARG names can not be blank"),
    ("FROM a\nSHELL /bin/sh -c\n", "Dockerfile:2: SHELL requires the arguments to be in JSON form"),
    ("FROM a\nUSER\n", "Dockerfile:2: USER requires exactly one argument"),
    ("FROM a\nEXPOSE\n", "Dockerfile:2: EXPOSE requires at least one argument"),
    ("FROM a\nHEALTHCHECK NONE x\n", "Dockerfile:2: HEALTHCHECK NONE takes no arguments"),
    ("FROM a\nHEALTHCHECK PING x\n", 'Dockerfile:2: Unknown type "PING" in HEALTHCHECK (try CMD)'),
    ("FROM a\nHEALTHCHECK CMD\n", "Dockerfile:2: Missing command after HEALTHCHECK CMD"),
    ("FROM a\nHEALTHCHECK --interval=1 CMD x\n", 'Dockerfile:2: time: invalid duration "1"'),
    ("FROM a\nHEALTHCHECK --timeout=10us CMD x\n", 'Dockerfile:2: Interval "timeout" cannot be less than 1ms'),
    ("FROM a\nHEALTHCHECK --retries=-1 CMD x\n", "Dockerfile:2: --retries cannot be negative (-1)"),
    ("FROM a\nONBUILD ONBUILD RUN x\n", "Dockerfile:2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("FROM a\nONBUILD FROM b\n", "Dockerfile:2: FROM isn't allowed as an ONBUILD trigger"),
    ("FROM a\nonbuild maintainer me\n", "Dockerfile:2: MAINTAINER isn't allowed as an ONBUILD trigger"),
    ("FROM a\nONBUILD BOGUS x\n", "Dockerfile:2: unknown instruction: BOGUS"),
    ("# escape=x\nFROM a\n", "Dockerfile:1: invalid escape token 'x' does not match ` or \\"),
    ("# escape=`\n# escape=\\\nFROM a\n", "Dockerfile:2: only one escape parser directive can be used"),
    ("FROM a\nVOLUME [\"\"]\n", "Dockerfile:2: VOLUME specified can not be an empty string"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m.split(": ", 1)[-1][:40] for _, m in BAD])
def test_bad_dockerfile_gives_one_line_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 1 and isinstance(info.value, PyEngineError)


def test_error_names_the_users_dockerfile() -> None:
    with pytest.raises(DockerfileError, match=r"^build/app\.Dockerfile:1: unknown instruction: NOPE$"):
        parse("NOPE\n", filename="build/app.Dockerfile")


# -- expansion ------------------------------------------------------------------------------------

ENV = {"v": "value", "empty": "", "path": "/usr/local/bin", "file": "archive.tar.gz", "sp": "a b"}

EXPANSIONS = [
    ("$v", "value"), ("${v}", "value"), ("x${v}y", "xvaluey"), ("$v-$v", "value-value"),
    ("$unset", ""), ("${unset}", ""), ("pre${unset}post", "prepost"),
    ("${v:-word}", "value"), ("${empty:-word}", "word"), ("${unset:-word}", "word"),
    ("${v-word}", "value"), ("${empty-word}", ""), ("${unset-word}", "word"),
    ("${v:+word}", "word"), ("${empty:+word}", ""), ("${unset:+word}", ""),
    ("${v+word}", "word"), ("${empty+word}", "word"), ("${unset+word}", ""),
    ("${unset:-${v}}", "value"), ("${unset:-$v/x}", "value/x"), ("${v:+<${v}>}", "<value>"),
    ("${unset:-${unset2:-deep}}", "deep"), ('${unset:-"a b"}', "a b"),
    ("\\$v", "$v"), ("\\${v}", "${v}"), ("a\\ b", "a b"), ("\\\\$v", "\\value"),
    ("'$v'", "$v"), ("'${v}'", "${v}"), ('"$v"', "value"), ("\"'$v'\"", "'value'"),
    ('"\\$v"', "$v"), ('"a\\b"', "a\\b"), ("'a\\b'", "a\\b"), ('"x"y\'z\'', "xyz"),
    ("$", "$"), ("a$", "a$"), ("$ v", "$ v"), ("$1", ""),
    ("${path#*/}", "usr/local/bin"), ("${path##*/}", "bin"), ("${file%.*}", "archive.tar"),
    ("${file%%.*}", "archive"), ("${file/tar/zip}", "archive.zip.gz"), ("${path//\\//:}", ":usr:local:bin"),
    ("${sp}", "a b"),
]


@pytest.mark.parametrize("word, value", EXPANSIONS, ids=[w for w, _ in EXPANSIONS])
def test_expansion_forms(word: str, value: str) -> None:
    assert expand(word, ENV) == value


def test_backtick_escape_in_expansion() -> None:
    assert expand("`$v", ENV, escape="`") == "$v"
    assert expand("c:\\$v", ENV, escape="`") == "c:\\value"


@pytest.mark.parametrize("word, message", [
    ("${v", "missing '}'"), ("${}", "bad substitution"), ("'open", "matching single-quote"),
    ('"open', "matching double-quote"), ("${unset:?must be set}", "unset: must be set"),
    ("${unset?}", "unset: is not allowed to be unset"), ("${empty:?}", "empty: is not allowed to be empty"),
    ("${v:#x}", "unsupported modifier"),
])
def test_bad_substitution_is_a_dockerfile_error(word: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message):
        expand(word, ENV)


def test_split_words_splits_expanded_values_but_not_quotes() -> None:
    assert split_words('$sp "c d" e\\ f', ENV) == ["a", "b", "c d", "e f"]
    assert split_words("  ", ENV) == []
    assert split_words('""', ENV) == [""]


def test_expand_text_keeps_quotes_for_heredoc_bodies() -> None:
    assert expand_text("echo \"$v\" '$v' \\$v \\n", ENV) == "echo \"value\" 'value' $v \\n"


def test_expansion_error_placed_at_the_instruction() -> None:
    copy = one("COPY ${x /y\n")
    with pytest.raises(DockerfileError) as info:
        copy.expand(Expander({}))
    assert str(info.value.located(copy.line)) == "Dockerfile:2: syntax error: missing '}'"


# -- ARG scoping --------------------------------------------------------------------------------------

def stage_values(text: str, build_args=None, stage: int = 0, **platforms) -> tuple[dict, BuildArgs]:
    df = parse(text)
    args = BuildArgs(build_args, df.global_args, escape=df.escape, **platforms)
    view = args.stage()
    for instruction in df.stages[stage].instructions:
        if isinstance(instruction, Arg):
            view.declare_instruction(instruction)
    return view.values(), args


def test_global_arg_must_be_redeclared_in_a_stage() -> None:
    values, args = stage_values("ARG V=1\nFROM a\n")
    assert "V" not in values and args.global_scope()["V"] == "1"
    values, _ = stage_values("ARG V=1\nFROM a\nARG V\n")
    assert values == {"V": "1"}


def test_build_arg_beats_stage_default_beats_global_default() -> None:
    text = "ARG V=global\nFROM a\nARG V=stage\n"
    assert stage_values(text)[0] == {"V": "stage"}
    assert stage_values(text, {"V": "cli"})[0] == {"V": "cli"}
    assert stage_values("ARG V=global\nFROM a\nARG V\n", {"V": "cli"})[0] == {"V": "cli"}
    # --build-arg NAME with NAME unset in the client's environment: not given
    assert stage_values(text, {"V": None})[0] == {"V": "stage"}


def test_arg_without_value_is_declared_but_unset() -> None:
    values, _ = stage_values("FROM a\nARG NOVALUE\n")
    assert values == {}


def test_arg_default_sees_earlier_args_and_env_beats_arg() -> None:
    df = parse("ARG G=g\nFROM a\nARG G\nARG A=1 B=${A}-$G\n")
    args = BuildArgs({}, df.global_args)
    view = args.stage()
    for instruction in df.stages[0].instructions:
        view.declare_instruction(instruction)
    assert view.values() == {"G": "g", "A": "1", "B": "1-g"}
    assert view.lookup({"A": "from-env"})["A"] == "from-env"
    assert view.run_environment({"A": "from-env"}) == {"G": "g", "B": "1-g"}


def test_global_arg_defaults_expand_against_earlier_globals_and_build_args() -> None:
    df = parse("ARG REG=docker.io\nARG IMG=${REG}/library/alpine\nFROM $IMG\n")
    assert BuildArgs({"REG": "localhost:5000"}, df.global_args).global_scope()["IMG"] == \
        "localhost:5000/library/alpine"


def test_unused_build_arg_is_not_visible_and_warned_in_dockers_words() -> None:
    values, args = stage_values("FROM a\nARG USED\n", {"USED": "1", "ZZ": "2", "AA": "3", "HTTP_PROXY": "p"})
    assert values == {"USED": "1"}
    assert args.unused() == ["AA", "ZZ"]
    assert args.unused_warning() == "[Warning] One or more build-args [AA ZZ] were not consumed"
    assert stage_values("FROM a\nARG X\n", {"X": "1"})[1].unused_warning() is None


def test_proxy_args_need_no_declaration() -> None:
    df = parse("FROM a\n")
    args = BuildArgs({"https_proxy": "http://proxy:3128"}, df.global_args)
    view = args.stage()
    assert view.values() == {} and view.run_environment() == {"https_proxy": "http://proxy:3128"}
    assert args.unused_warning() is None


def test_platform_args_are_global_and_need_declaring_in_a_stage() -> None:
    values, args = stage_values("FROM a\nARG TARGETARCH\nARG BUILDPLATFORM\n")
    host = args.global_scope()
    assert values == {"TARGETARCH": host["TARGETARCH"], "BUILDPLATFORM": host["BUILDPLATFORM"]}
    assert "TARGETOS" not in values
    if platform.machine() == "x86_64":
        assert host["TARGETPLATFORM"] == "linux/amd64" and host["BUILDARCH"] == "amd64"
        assert host["TARGETVARIANT"] == ""


def test_target_platform_sets_the_target_args() -> None:
    values, _ = stage_values("FROM a\nARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT\n",
                             target_platform="linux/arm/v7", build_platform="linux/x86_64")
    assert values == {"TARGETPLATFORM": "linux/arm/v7", "TARGETOS": "linux", "TARGETARCH": "arm",
                      "TARGETVARIANT": "v7"}
    assert platform_args("linux/arm64", "linux/amd64")["BUILDPLATFORM"] == "linux/amd64"
    assert normalize_platform("aarch64") == ("linux", "arm64", "")


# -- the plan -------------------------------------------------------------------------------------

MULTI = """\
ARG BASE=alpine:3.19
FROM ${BASE} AS base
RUN echo base
FROM base AS deps
RUN echo deps
FROM golang AS tools
RUN echo tools
FROM scratch AS unused
COPY --from=nothere /x /x
FROM busybox AS final
COPY --from=deps /a /a
COPY --from=2 /t /t
COPY --from=nginx:1.25 /etc/nginx /n
RUN --mount=type=bind,from=base,target=/b true
"""


def test_plan_default_target_is_the_last_stage_and_skips_unneeded() -> None:
    p = plan(parse(MULTI))
    assert p.target.name == "final"
    assert [s.name for s in p.needed] == ["base", "deps", "tools", "final"]   # "unused" skipped
    assert p.depends[4] == {1, 2, 0}


def test_plan_groups_independent_stages_for_concurrency() -> None:
    groups = plan(parse(MULTI)).order()
    assert [[s.name for s in g] for g in groups] == [["base", "tools"], ["deps"], ["final"]]


def test_plan_resolves_bases_and_froms() -> None:
    df = parse(MULTI)
    p = plan(df, build_args={"BASE": "alpine:3.20"})
    assert (p.bases[0].kind, p.bases[0].ref) == ("image", "alpine:3.20")
    assert (p.bases[1].kind, p.bases[1].stage) == ("stage", 0)
    assert p.bases[3].kind == "scratch"
    final = df.stages[4]
    copies = [i for i in final.instructions if isinstance(i, Copy)]
    assert [(p.copy_source(final, c).kind, p.copy_source(final, c).stage, p.copy_source(final, c).ref)
            for c in copies] == [("stage", 1, "deps"), ("stage", 2, "2"), ("image", None, "nginx:1.25")]
    run = final.instructions[-1]
    assert p.mount_source(final, run, 0).stage == 0
    assert p.resolve_from(final, "tools", 99).stage == 2 and p.resolve_from(final, "x:1", 99).kind == "image"
    assert p.images() == ["alpine:3.20", "golang", "busybox", "nginx:1.25"]


def test_plan_named_target_builds_only_what_it_needs() -> None:
    p = plan(parse(MULTI), target="DEPS")
    assert [s.name for s in p.needed] == ["base", "deps"]
    assert [[s.name for s in g] for g in p.order()] == [["base"], ["deps"]]


def test_plan_unknown_target() -> None:
    with pytest.raises(DockerfileError, match=r'^Dockerfile: target stage "nope" could not be found$'):
        plan(parse(MULTI), target="nope")


def test_plan_copy_from_expands_stage_args() -> None:
    df = parse("FROM a AS one\nFROM b AS two\nFROM c\nARG SRC=one\nCOPY --from=$SRC /x /x\n")
    p = plan(df, build_args={"SRC": "two"})
    assert [s.name for s in p.needed] == ["two", None]


def test_plan_from_only_earlier_stages_else_an_image() -> None:
    df = parse("FROM later AS first\nFROM a AS later\n")
    p = plan(df, target="first")
    assert (p.bases[0].kind, p.bases[0].ref) == ("image", "later")


def test_plan_unused_stage_args_are_reported_unused() -> None:
    p = plan(parse("FROM a AS skipped\nARG ONLY_HERE\nFROM b\n"), build_args={"ONLY_HERE": "x"})
    assert p.build_args.unused_warning() == "[Warning] One or more build-args [ONLY_HERE] were not consumed"


@pytest.mark.parametrize("text, message", [
    ("ARG B\nFROM $B\n", "Dockerfile:2: base name ($B) should not be blank"),
    ("FROM a AS x\nCOPY --from=x /a /b\n", "Dockerfile:2: circular dependency detected on stage: x"),
    ("FROM a AS x\nCOPY --from=y /a /b\nFROM b AS y\nCOPY --from=x /a /b\n",
     "Dockerfile:1: circular dependency detected on stage: x"),
    ("FROM a\nCOPY --from=5 /a /b\n", "Dockerfile:2: invalid from flag value 5"),
])
def test_plan_errors(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        plan(parse(text))
    assert str(info.value).startswith(message)


# -- .dockerignore ---------------------------------------------------------------------------------

IGNORE_CASES = [
    (["*.md"], "README.md", True), (["*.md"], "docs/a.md", False), (["*/*.md"], "docs/a.md", True),
    (["**/*.md"], "a/b/c.md", True), (["**/*.md"], "c.md", True), (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True), (["a/**/b"], "a/x/y/c", False), (["**"], "anything/at/all", True),
    (["doc?"], "docs", True), (["doc?"], "doc", False), (["[a-c]*"], "bin", True),
    (["[a-c]*"], "dist", False), (["[^a-c]*"], "dist", True), (["\\*"], "*", True), (["\\*"], "x", False),
    (["build"], "build/out/x.o", True), (["/build"], "build", True), (["./build/"], "build/x", True),
    (["build/../dist"], "dist/x", True),
    (["*.md", "!README.md"], "README.md", False), (["*.md", "!README.md"], "CHANGES.md", True),
    (["!README.md", "*.md"], "README.md", True),                     # last match wins
    (["docs", "!docs/keep"], "docs/keep/file", False), (["docs", "!docs/keep"], "docs/other", True),
    (["*", "!src", "src/*.pyc"], "src/x.pyc", True), (["*", "!src", "src/*.pyc"], "src/x.py", False),
    (["# comment", "x"], "# comment", False),
]


@pytest.mark.parametrize("patterns, path, excluded", IGNORE_CASES,
                         ids=[f"{'|'.join(p)}~{path}" for p, path, _ in IGNORE_CASES])
def test_dockerignore_go_rules(patterns: list[str], path: str, excluded: bool) -> None:
    assert IgnoreMatcher(read_patterns("\n".join(patterns))).excluded(path) is excluded


def test_dockerignore_reading() -> None:
    text = "\ufeff# comment\n\n  *.tmp  \n!  keep.tmp\n/abs\n./rel/\nnot#comment\n"
    assert read_patterns(text) == ["*.tmp", "!keep.tmp", "abs", "rel", "not#comment"]
    with pytest.raises(DockerfileError, match="illegal exclusion pattern"):
        read_patterns("!\n")


def test_dockerignore_tells_which_excluded_dirs_to_walk() -> None:
    matcher = IgnoreMatcher(["docs", "!docs/keep/*.md", "vendor"])
    assert matcher.may_include_under("docs") and matcher.may_include_under("docs/keep")
    assert not matcher.may_include_under("docs/other") and not matcher.may_include_under("vendor")
    assert IgnoreMatcher(["vendor", "!**/LICENSE"]).may_include_under("vendor/a/b")  # ** reaches anything
    assert not IgnoreMatcher(["docs"]).may_include_under("docs")


def test_go_match_single_component() -> None:
    assert match("*.c", "a.c") and not match("*.c", "d/a.c") and match("a?c", "abc")


def test_named_dockerfile_dockerignore_takes_precedence(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a\n")
    (tmp_path / "build").mkdir()
    assert find_dockerignore(tmp_path, "build/app.Dockerfile") == tmp_path / ".dockerignore"
    (tmp_path / "build" / "app.Dockerfile.dockerignore").write_text("b\n")
    assert find_dockerignore(tmp_path, "build/app.Dockerfile") == tmp_path / "build/app.Dockerfile.dockerignore"
    assert find_dockerignore(tmp_path, None) == tmp_path / ".dockerignore"
    ctx = BuildContext.from_directory(tmp_path, "build/app.Dockerfile")
    assert ctx.ignore.excluded("b") and not ctx.ignore.excluded("a")


# -- the build context ------------------------------------------------------------------------------

def make_tar(*members: tuple[tarfile.TarInfo, bytes | None], compression: str = "") -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:" + compression) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info


@pytest.mark.parametrize("members", [
    [(member("../escape"), b"x")],
    [(member("/abs/escape"), b"x")],
    [(member("a/../../escape"), b"x")],
    [(member("link", tarfile.SYMTYPE, "/tmp"), None), (member("link/escape"), b"x")],
    [(member("rel", tarfile.SYMTYPE, ".."), None), (member("rel/escape"), b"x")],
    [(member("hard", tarfile.LNKTYPE, "../../etc/passwd"), None)],
    [(member("hard", tarfile.LNKTYPE, "/etc/passwd"), None)],
    [(member("sl", tarfile.SYMTYPE, "/etc/passwd"), None), (member("hard", tarfile.LNKTYPE, "sl"), None)],
    [(member("dev", tarfile.CHRTYPE), None)],
], ids=["dotdot", "absolute", "inner-dotdot", "through-abs-symlink", "through-rel-symlink",
        "hardlink-out", "hardlink-abs", "hardlink-to-symlink", "device"])
def test_context_tar_refuses_escapes(tmp_path: Path, members) -> None:
    dest = tmp_path / "ctx"
    dest.mkdir()
    with pytest.raises(InvalidArchive):
        extract_context_tar(make_tar(*members), dest)
    assert not (tmp_path / "escape").exists() and not Path("/tmp/escape").exists()


def test_context_tar_is_removed_on_close_and_keeps_symlinks(tmp_path: Path) -> None:
    tar = make_tar((member("dir/", tarfile.DIRTYPE, mode=0o750), None), (member("dir/f", mode=0o600), b"data"),
                   (member("passwd", tarfile.SYMTYPE, "/etc/passwd"), None),
                   (member("dir/h", tarfile.LNKTYPE, "dir/f"), None), compression="gz")
    with BuildContext.from_tar(tar, tmpdir=tmp_path) as ctx:
        root = Path(ctx.root)
        assert (root / "dir/f").read_bytes() == b"data" and (root / "dir/h").read_bytes() == b"data"
        assert (root / "dir").stat().st_mode & 0o777 == 0o750
        assert (root / "dir/f").stat().st_mode & 0o777 == 0o600
        assert os.readlink(root / "passwd") == "/etc/passwd"
    assert not root.exists()


def test_context_tar_garbage_is_invalid_archive(tmp_path: Path) -> None:
    with pytest.raises(InvalidArchive, match="not a valid tar"):
        BuildContext.from_tar(io.BytesIO(b"this is not a tar at all" * 40), tmpdir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def context_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src/sub").mkdir(parents=True)
    (root / "src/a.py").write_text("a")
    (root / "src/b.txt").write_text("b")
    (root / "src/sub/c.py").write_text("c")
    (root / "docs").mkdir()
    (root / "docs/secret.md").write_text("s")
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "hostbin").symlink_to("/usr/bin")
    (root / "loop").symlink_to("loop")
    (root / "inner").symlink_to("src")
    (root / ".dockerignore").write_text("docs\n**/*.txt\n")
    return root


def test_context_symlink_to_host_file_stays_a_symlink(context_dir: Path) -> None:
    ctx = BuildContext.from_directory(context_dir)
    [resolved] = ctx.resolve(["passwd"])
    assert [(e.relpath, e.kind) for e in resolved.entries] == [("passwd", "symlink")]
    # its checksum is the link target, not the host file's content
    before = ctx.checksum(["passwd"])
    (context_dir / "passwd").unlink()
    (context_dir / "passwd").symlink_to("/etc/hostname")
    assert ctx.checksum(["passwd"]) != before


@pytest.mark.parametrize("source, message", [
    ("../outside", "forbidden path outside the build context: ../outside"),
    ("src/../../x", "forbidden path outside the build context"),
    ("hostbin/env", "file not found in build context"),  # /usr/bin resolves inside the context
    ("loop/x", "too many levels of symbolic links"),
    ("docs/secret.md", "excluded by .dockerignore"),
    ("src/b.txt", "excluded by .dockerignore"),
    ("nothing*", "no source files were specified"),
])
def test_context_sources_never_leave_the_context(context_dir: Path, source: str, message: str) -> None:
    ctx = BuildContext.from_directory(context_dir)
    with pytest.raises(DockerfileError, match=message.replace(".", r"\.")):
        ctx.resolve([source])


def test_context_resolves_wildcards_and_inner_symlinks(context_dir: Path) -> None:
    ctx = BuildContext.from_directory(context_dir)
    [py, star, via_link, root, absolute] = ctx.resolve(["src/*.py", "src/*", "inner/sub/c.py", ".", "/src/a.py"])
    assert [e.relpath for e in py.entries] == ["src/a.py"]
    assert [e.relpath for e in star.entries] == ["src/a.py", "src/sub"]     # b.txt is ignored
    assert [e.relpath for e in via_link.entries] == ["src/sub/c.py"]
    assert [(e.relpath, e.kind) for e in root.entries] == [("", "dir")]
    assert [e.relpath for e in absolute.entries] == ["src/a.py"]
    walked = [e.relpath for e in ctx.walk("")]
    assert "docs" not in walked and "docs/secret.md" not in walked and "src/b.txt" not in walked
    assert {"src/a.py", "src/sub/c.py", "passwd", "hostbin", "inner"} <= set(walked)
    assert [e.relpath for e in ctx.walk("src", exclude=["sub"])] == ["src/a.py"]


def test_context_walk_enters_excluded_dir_with_reincluded_files(context_dir: Path) -> None:
    (context_dir / ".dockerignore").write_text("docs\n!docs/keep.md\n")
    (context_dir / "docs/keep.md").write_text("k")
    ctx = BuildContext.from_directory(context_dir)
    assert [e.relpath for e in ctx.walk("") if e.relpath.startswith("docs")] == ["docs/keep.md"]
    assert [e.relpath for e in ctx.resolve(["docs/keep.md"])[0].entries] == ["docs/keep.md"]


def test_checksum_ignores_mtime_but_not_content_or_mode(context_dir: Path) -> None:
    ctx = BuildContext.from_directory(context_dir)
    first = ctx.checksum(["src"])
    os.utime(context_dir / "src/a.py", (1, 1))
    os.utime(context_dir / "src/sub", (2, 2))
    assert BuildContext.from_directory(context_dir).checksum(["src"]) == first
    (context_dir / "src/a.py").chmod(0o755)
    moded = BuildContext.from_directory(context_dir).checksum(["src"])
    assert moded != first
    (context_dir / "src/a.py").write_text("A")
    assert BuildContext.from_directory(context_dir).checksum(["src"]) not in (first, moded)
    (context_dir / "src/new.py").write_text("")
    assert BuildContext.from_directory(context_dir).checksum(["src/a.py"]) != \
        BuildContext.from_directory(context_dir).checksum(["src"])


def test_checksum_of_ignored_file_change_is_stable(context_dir: Path) -> None:
    ctx = BuildContext.from_directory(context_dir)
    first = ctx.checksum(["src"])
    (context_dir / "src/b.txt").write_text("ignored anyway")
    assert BuildContext.from_directory(context_dir).checksum(["src"]) == first


@pytest.mark.root
def test_checksum_sees_owner_changes(context_dir: Path) -> None:
    need_root()
    first = BuildContext.from_directory(context_dir).checksum(["src"])
    os.chown(context_dir / "src/a.py", 1234, 5678)
    assert BuildContext.from_directory(context_dir).checksum(["src"]) != first


def test_read_dockerfile_inside_the_context(context_dir: Path) -> None:
    (context_dir / "Dockerfile").write_text("FROM scratch\n")
    ctx = BuildContext.from_directory(context_dir)
    assert ctx.read_dockerfile() == "FROM scratch\n"
    with pytest.raises(PyEngineError, match="Cannot locate specified Dockerfile: ../Dockerfile"):
        ctx.read_dockerfile("../Dockerfile")
    with pytest.raises(PyEngineError, match="Cannot locate specified Dockerfile: passwd"):
        ctx.read_dockerfile("passwd")      # /etc/passwd is looked up inside the context
