"""``--format`` templates: each construct of Go's text/template that docker users type, on
ps/images/inspect data, against what docker prints for the same template.

Templates come from Docker's docs (docs.docker.com "Format command and log output",
"docker ps" formatting, "docker inspect" examples); expected strings are what the docker CLI
prints for them (Go's text/template and fmt, docker's functions and its tabwriter with
padding 3 and a minimum width of 10). The last tests ask the docker CLI itself: the same
templates through ``docker`` and ``pyengine`` on the same daemon's documents must agree.
"""

from __future__ import annotations

import json
import re

import pytest
from containers_support import busybox_engine, remove_all_containers
from daemon_support import start_daemon

from conftest import EngineEnv
from pyengine.cli import template
from pyengine.cli.template import TemplateError, format_rows, render

#: an inspect document of the shape Docker's docs use in their examples
DOC = {
    "Id": "4fa6e0f0c6786287e131c3852c58a2e01cc697a68231826813597e4994f1d6e2",
    "Name": "/redis", "Args": ["-c", "echo hi"], "RestartCount": 0, "LogPath": "/var/lib/x/x-json.log",
    "State": {"Status": "running", "Running": True, "Paused": False, "Pid": 4242, "ExitCode": 0, "Health": None},
    "Config": {"Image": "redis:7", "Env": ["PATH=/usr/bin", "A=1"], "Cmd": ["redis-server"],
               "Labels": {"com.example.vendor": "ACME", "com.example.html": "<b>&</b>"},
               "ExposedPorts": {"6379/tcp": {}}},
    "NetworkSettings": {
        "IPAddress": "172.17.0.3",
        "Ports": {"6379/tcp": [{"HostIp": "0.0.0.0", "HostPort": "16379"}],
                  "8787/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18787"}]},
        "Networks": {"bridge": {"IPAddress": "172.17.0.3", "MacAddress": "02:42:ac:11:00:03"}}},
}

#: (template, expected) on DOC: one or more per construct
INSPECT_CASES = [
    # fields, nested fields, map keys (docs: "docker inspect" examples)
    ("{{.LogPath}}", "/var/lib/x/x-json.log"),
    ("{{.Config.Image}}", "redis:7"),
    ("{{.State.Pid}}", "4242"),
    ("{{.NetworkSettings.Networks.bridge.IPAddress}}", "172.17.0.3"),
    ("Container {{ .Name }} listens on {{ .NetworkSettings.IPAddress }}:"
     "{{ range $index, $elem := .Config.ExposedPorts }}{{ $index }}{{ end }}",
     "Container /redis listens on 172.17.0.3:6379/tcp"),
    # values as Go prints them
    ("{{.State.Running}} {{.State.Paused}}", "true false"),
    ("{{.Config.Labels}}", "map[com.example.html:<b>&</b> com.example.vendor:ACME]"),
    ("{{.Args}}", "[-c echo hi]"),
    ("{{.Config.Labels.nope}}", "<no value>"),  # a Go map's missing key
    ("{{.ID}} {{.id}}", DOC["Id"] + " " + DOC["Id"]),  # Go's field name where the JSON key differs in case
    # json: compact, map keys sorted, no HTML escaping (docker's json function)
    ("{{json .Config.Labels}}", '{"com.example.html":"<b>&</b>","com.example.vendor":"ACME"}'),
    ("{{json .Args}}", '["-c","echo hi"]'),
    ("{{json .State.Running}}", "true"),
    ("{{json .State.Health}}", "null"),
    # docker's functions (docs: "Format command and log output")
    ('{{join .Args " , "}}', "-c , echo hi"),
    ("{{upper .Name}}", "/REDIS"),
    ("{{lower .Config.Labels.com}}", None),  # a dotted key is not a field: see the index case
    ('{{lower (index .Config.Labels "com.example.vendor")}}', "acme"),
    ('{{title "hello docker world"}}', "Hello Docker World"),
    ('{{split .Config.Image ":"}}', "[redis 7]"),
    ('{{pad .Name 1 2}}|', " /redis  |"),
    ("{{truncate .Id 12}}", "4fa6e0f0c678"),
    # range over slices and maps, with . and variables
    ("{{range .Config.Env}}[{{.}}]{{end}}", "[PATH=/usr/bin][A=1]"),
    ("{{range $v := .Args}}<{{$v}}>{{end}}", "<-c><echo hi>"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}", "com.example.html=<b>&</b>;com.example.vendor=ACME;"),
    ("{{range $p, $conf := .NetworkSettings.Ports}} {{$p}} -> {{(index $conf 0).HostPort}} {{end}}",
     " 6379/tcp -> 16379  8787/tcp -> 18787 "),
    ("{{range .NetworkSettings.Networks}}{{println .IPAddress}}{{end}}", "172.17.0.3\n"),
    ("{{range .Config.Labels.none}}x{{else}}empty{{end}}", "empty"),
    ("{{range $i, $e := .Args}}{{if $i}},{{end}}{{$e}}{{end}}", "-c,echo hi"),
    # if / else / else if with Go's truth
    ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
    ('{{if eq .State.Status "exited"}}x{{else if eq .State.Status "running"}}r{{else}}?{{end}}', "r"),
    ("{{if .State.ExitCode}}failed{{else}}ok{{end}}", "ok"),
    ('{{if ""}}a{{else}}b{{end}}{{if .Args}}c{{end}}{{if .Config.ExposedPorts}}d{{end}}', "bcd"),
    ("{{with .State}}{{.Status}}/{{.Pid}}{{end}}", "running/4242"),
    # index, len
    ('{{(index (index .NetworkSettings.Ports "8787/tcp") 0).HostPort}}', "18787"),
    ('{{index .Config.Labels "com.example.vendor"}}', "ACME"),
    ('{{index .Config.Labels "missing"}}', ""),
    ("{{index .Args 1}}", "echo hi"),
    ("{{len .Args}} {{len .Config.Labels}} {{len .Name}}", "2 2 6"),
    # print, println, printf
    ('{{println .Name "is" .State.Status}}', "/redis is running\n"),
    ('{{printf "%s has pid %d" .Name .State.Pid}}', "/redis has pid 4242"),
    ('{{printf "%-8s|%8s|%q|%v|%t|%05d|%x" "ab" "cd" .Name .Args .State.Running 42 255}}',
     'ab      |      cd|"/redis"|[-c echo hi]|true|00042|ff'),
    ('{{printf "%d" .Name}}', "%!d(string=/redis)"),
    ('{{print 1 2 "a" "b" 3}}', "1 2ab3"),
    # comparisons and logic
    ('{{eq .State.Status "running"}} {{ne .State.Pid 1}} {{lt .RestartCount 1}} {{gt (len .Args) 5}}',
     "true true true false"),
    ('{{eq .State.Status "created" "running"}}', "true"),
    ('{{and .State.Running .Config.Image}} {{or .RestartCount "none"}} {{not .State.Paused}}', "redis:7 none true"),
    # pipelines
    ("{{.Name | upper}}", "/REDIS"),
    ('{{.Config.Image | printf "image=%s"}}', "image=redis:7"),
    ('{{index .Config.Labels "com.example.vendor" | lower | printf "%q"}}', '"acme"'),
    # variables and whitespace trim markers
    ("{{$n := .Name}}{{$n}}{{$n = \"other\"}} {{$n}}", "/redis other"),
    ("a  {{- .State.Status -}}  b", "arunningb"),
    ("{{- range .Args }}\n  {{ . }}\n{{- end }}", "\n  -c\n  echo hi"),
    ("{{/* a comment */}}x{{- /* trimmed */ -}} y", "xy"),
    # literals and numbers as Go prints them
    ("{{1.5}} {{1e6}} {{100000.0}} {{0.00001}} {{'a'}} {{true}}", "1.5 1e+06 100000 1e-05 97 true"),
]


@pytest.mark.parametrize(("fmt", "expected"), [c for c in INSPECT_CASES if c[1] is not None])
def test_inspect_template_prints_what_docker_prints(fmt: str, expected: str) -> None:
    assert render(fmt, DOC, document=True) == expected


def test_a_dotted_label_key_is_not_a_path() -> None:
    # {{.Config.Labels.com}} looks up the key "com", which is missing: <no value>, not an error
    assert render("{{.Config.Labels.com}}", DOC, document=True) == "<no value>"


ERROR_CASES = [
    # a struct's missing field: docker reads the raw JSON with missingkey=error
    ("{{.Nope}}", 'template: :1:2: executing "" at <.Nope>: map has no entry for key "Nope"'),
    ("x {{.State.Nope}}", 'template: :1:10: executing "" at <.State.Nope>: map has no entry for key "Nope"'),
    ("{{.Name.Nope}}", 'template: :1:7: executing "" at <.Name.Nope>: can\'t evaluate field Nope in type interface {}'),
    ("{{.State.Health.Status}}",
     'template: :1:8: executing "" at <.State.Health.Status>: nil pointer evaluating interface {}.Status'),
    ("{{index .Args 5}}", 'template: :1:2: executing "" at <index .Args 5>: error calling index: index out of '
                          "range: 5"),
    ("{{upper .State.Pid}}", 'template: :1:2: executing "" at <upper .State.Pid>: wrong type for value; expected '
                             "string; got int"),
    ("x\n{{nope .}}", 'template: :2: function "nope" not defined'),
    ("{{.Name", "template: :1: unclosed action"),
    ("{{if .Name}}x", "template: :1: unexpected EOF"),
    ("{{end}}", "template: :1: unexpected {{end}}"),
    ("{{range .Args}}{{break}}{{end}}{{break}}", "template: :1: {{break}} outside {{range}}"),
    ("{{$x}}", 'template: :1:2: executing "" at <$x>: undefined variable: $x'),
]


@pytest.mark.parametrize(("fmt", "message"), ERROR_CASES)
def test_bad_templates_are_go_errors(fmt: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(fmt, DOC, document=True)
    assert str(caught.value) == message
    assert caught.value.exit_code == 2


def _ps_row(**overrides: object) -> template.Struct:
    summary = {"Id": "a87ecb4f327c" + "0" * 52, "Names": ["/fervent_poincare"], "Image": "busybox:latest",
               "Command": "/bin/sh -c 'while true; do sleep 1; done'", "Created": 1_700_000_000,
               "Labels": {"com.docker.swarm.node": "ubuntu", "com.docker.swarm.storage": "ssd"},
               "State": "running", "Status": "Up 2 minutes", "Ports": [], "Mounts": [],
               "NetworkSettings": {"Networks": {"bridge": {}}}}
    summary.update(overrides)
    return template.container_row(summary, True, 1_700_000_120, lambda s: f"{int(s)}B",
                                  lambda s: f"{int(s) // 60} minutes", lambda p: "")


def test_ps_fields_and_label_method_as_docker_names_them() -> None:
    row = _ps_row()
    out = format_rows('{{.ID}}: {{.Command}} {{.Label "com.docker.swarm.node"}} {{.Networks}} {{.Size}}',
                      [row], template.PS_HEADERS, template.PS_DEFAULT)
    # docker quotes the command (strconv.Quote) and cuts it to 20 columns with an ellipsis
    assert out == 'a87ecb4f327c: "/bin/sh -c \'while t…" ubuntu bridge 0B\n'
    assert format_rows("{{.Labels}}", [row], template.PS_HEADERS, "") == \
        "com.docker.swarm.node=ubuntu,com.docker.swarm.storage=ssd\n"


def test_ps_table_header_and_columns_are_docker_tabwriter() -> None:
    rows = [_ps_row(), _ps_row(Id="01946d9d34d8" + "1" * 52, Labels={}, Names=["/x"])]
    out = format_rows("table {{.ID}}\\t{{.Labels}}", rows, template.PS_HEADERS, template.PS_DEFAULT)
    assert out == ("CONTAINER ID   LABELS\n"
                   "a87ecb4f327c   com.docker.swarm.node=ubuntu,com.docker.swarm.storage=ssd\n"
                   "01946d9d34d8   \n")
    # a label column's header is the last part of its key ("-" and "_" as spaces), as docker 28 prints it
    out = format_rows('table {{.Names}}\t{{.Label "com.docker.swarm.node"}}\t{{.Status}}', rows,
                      template.PS_HEADERS, template.PS_DEFAULT)
    assert out == ("NAMES              node      STATUS\n"
                   "fervent_poincare   ubuntu    Up 2 minutes\n"
                   "x                            Up 2 minutes\n")
    # "table" alone is the default table
    assert format_rows("table", rows[:1], template.PS_HEADERS, template.PS_DEFAULT).splitlines()[0] == \
        "CONTAINER ID   IMAGE            COMMAND                  CREATED         STATUS         PORTS     NAMES"


def test_ps_json_is_docker_marshal_of_the_context() -> None:
    (line,) = format_rows("{{json .}}", [_ps_row(Labels={"k": "<v>"})], template.PS_HEADERS, "").splitlines()
    doc = json.loads(line)
    assert list(doc) == sorted(doc)
    assert set(doc) == {"Command", "CreatedAt", "ID", "Image", "Labels", "LocalVolumes", "Mounts", "Names",
                        "Networks", "Ports", "RunningFor", "Size", "State", "Status"}
    # the context's own MarshalJSON is json.Marshal: <, > and & come out escaped
    assert '"Labels":"k=\\u003cv\\u003e"' in line
    assert format_rows("json", [_ps_row()], template.PS_HEADERS, "") == \
        format_rows("{{json .}}", [_ps_row()], template.PS_HEADERS, "")


def test_ps_unknown_field_is_docker_error() -> None:
    with pytest.raises(TemplateError) as caught:
        format_rows("{{.Nope}}", [_ps_row()], template.PS_HEADERS, "")
    assert str(caught.value) == ('template: :1:2: executing "" at <.Nope>: can\'t evaluate field Nope in type '
                                 "*formatter.ContainerContext")


def test_images_table_as_docker_prints_it() -> None:
    rows = [template.image_row({"Repository": "<none>", "Tag": "<none>", "ID": "77af4d6b9913", "Digest": "<none>",
                                "CreatedSince": "19 hours ago", "CreatedAt": "", "Size": "1.09GB"}),
            template.image_row({"Repository": "committ", "Tag": "latest", "ID": "b6fa739cedf5",
                                "Digest": "<none>", "CreatedSince": "19 hours ago", "CreatedAt": "",
                                "Size": "1.09GB"})]
    out = format_rows("table {{.ID}}\\t{{.Repository}}\\t{{.Tag}}", rows, template.IMAGES_HEADERS, "")
    assert out == ("IMAGE ID       REPOSITORY   TAG\n"
                   "77af4d6b9913   <none>       <none>\n"
                   "b6fa739cedf5   committ      latest\n")
    assert format_rows("{{.ID}}: {{.Repository}}", rows, template.IMAGES_HEADERS, "") == \
        "77af4d6b9913: <none>\nb6fa739cedf5: committ\n"
    assert format_rows("table", rows, template.IMAGES_HEADERS, template.IMAGES_DEFAULT).splitlines()[0] == \
        "REPOSITORY   TAG       IMAGE ID       CREATED        SIZE"
    # {{json .}} of an image row: docker's own marshalling, so "<none>" comes out as \u003cnone\u003e
    assert '"Digest":"\\u003cnone\\u003e"' in format_rows("{{json .}}", rows[:1], template.IMAGES_HEADERS, "")


def test_tabwriter_aligns_column_blocks_as_go_does() -> None:
    # cells are tab-terminated; a line's last cell is never padded; a line with fewer cells ends a block
    assert template.tabwriter("a\tbb\tc\nlonger-cell\td\te") == "a             bb        c\nlonger-cell   d         e"
    assert template.tabwriter("x\ty\nnone\nlong-long-long\tz") == "x         y\nnone\nlong-long-long   z"


# -- end to end: the commands, daemonless and against the docker CLI ------------------------------
@pytest.fixture
def engine(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    yield from busybox_engine(engine_env, tmp_path_factory)


def test_ps_images_inspect_format_end_to_end(engine: EngineEnv) -> None:
    cid = engine.run("create", "--name", "web", "-l", "com.example.tier=front", "busybox", "sh", "-c", "echo hi",
                     check=True).stdout.strip()
    out = engine.run("ps", "-a", "--format", 'table {{.Names}}\\t{{.Label "com.example.tier"}}\\t{{.State}}',
                     check=True).stdout
    assert out == "NAMES     tier      STATE\nweb       front     created\n"
    assert engine.run("ps", "-a", "--format", "{{.ID}} {{.Command}}", check=True).stdout == \
        f'{cid[:12]} "sh -c echo hi"\n'
    assert engine.run("ps", "-a", "--no-trunc", "--format", "{{.ID}}", check=True).stdout == cid + "\n"
    out = engine.run("images", "--format", "table {{.Repository}}\\t{{.Tag}}", check=True).stdout
    assert out == "REPOSITORY   TAG\nbusybox      latest\n"
    out = engine.run("inspect", "-f", '{{.Name}} {{.State.Status}} {{index .Config.Labels "com.example.tier"}} '
                     '{{join .Args "+"}} {{json .Config.Cmd}}', "web", check=True).stdout
    assert out == '/web created front -c+echo hi ["sh","-c","echo hi"]\n'
    image_id = engine.run("image", "inspect", "-f", "{{.Id}}", "busybox", check=True).stdout.strip()
    assert engine.run("inspect", "-f", "{{.Id}} {{.Os}}", "busybox", check=True).stdout == f"{image_id} linux\n"
    # a field that does not exist: one line, non-zero, nothing printed
    bad = engine.run("ps", "-a", "--format", "{{.Nope}}")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == ('pyengine: error: template: :1:2: executing "" at <.Nope>: can\'t evaluate field Nope '
                          "in type *formatter.ContainerContext\n")
    bad = engine.run("images", "--format", "{{.Repository")
    assert bad.returncode == 2 and bad.stderr == "pyengine: error: template: :1: unclosed action\n"


#: templates docker's own CLI runs on the daemon's inspect document; pyengine must print the same
ORACLE_INSPECT = [
    "{{.Name}} {{.Config.Image}} {{.State.Status}} {{.State.Running}} {{.RestartCount}}",
    '{{join .Args " , "}}|{{upper .Name}}|{{title .State.Status}}|{{split .Config.Image ":"}}',
    "{{json .Config.Labels}} {{json .Args}} {{json .Config.Cmd}}",
    "{{.Config.Labels}} {{.Args}} {{.Config.Cmd}}",
    "{{range .Config.Env}}[{{.}}]{{end}}{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
    '{{if .State.Running}}up{{else if eq .State.Status "created"}}new{{else}}down{{end}}',
    '{{index .Config.Labels "a"}}|{{index .Config.Labels "missing"}}|{{len .Args}}|{{index .Args 0}}',
    '{{println .Name}}{{printf "%s:%d:%q" .Name .State.ExitCode .Path}}',
    '{{.Name | upper | printf "%s!"}} {{eq .State.Status "created" "running"}} {{ne .State.ExitCode 1}} '
    "{{lt .RestartCount 1}} {{gt (len .Args) 1}} {{and .State.Running 1}} {{or .State.Running .Path}} "
    "{{not .State.Running}}",
    "x {{- .Name -}} y {{/* comment */}}{{$n := .Path}}{{$n}}",
    "{{.Config.Labels.nope}} {{.ID}} {{range $i, $e := .Args}}{{$i}}={{$e}} {{end}}",
]

#: templates docker refuses; pyengine's one-line error is docker's after "template parsing error: "
ORACLE_ERRORS = ["{{.Nope}}", "{{.Config.Nope}}", "{{.Name.X}}", "{{index .Args 9}}"]


def _seconds_ago(text: str) -> str:
    return re.sub(r"(Less than a second|\b1 second|\b\d+ seconds) ago\b", "N seconds ago", text)


def test_templates_match_the_docker_cli(engine: EngineEnv) -> None:
    daemon = start_daemon(engine)
    try:
        engine.run("create", "--name", "oracle", "-l", "a=<b>&c", "-l", "com.example.v=1", "-e", "FOO=bar",
                   "busybox", "sh", "-c", "echo hi", check=True)
        via = ("-H", daemon.url)
        for fmt in ORACLE_INSPECT:
            docker = daemon.docker("inspect", "-f", fmt, "oracle", check=True).stdout
            ours = engine.run(*via, "inspect", "-f", fmt, "oracle", check=True).stdout
            assert ours == docker, fmt
        for fmt in ORACLE_ERRORS:
            docker = daemon.docker("inspect", "-f", fmt, "oracle")
            ours = engine.run(*via, "inspect", "-f", fmt, "oracle")
            assert docker.returncode != 0 and ours.returncode != 0 and ours.stdout == "", fmt
            assert ours.stderr == "pyengine: error: " + docker.stderr.strip().removeprefix("template parsing error: ") \
                + "\n", fmt
        for fmt in ("table {{.ID}}\\t{{.Names}}\\t{{.Image}}\\t{{.Command}}\\t{{.Label \"com.example.v\"}}",
                    "{{.Names}} {{.State}} {{.Label \"a\"}} {{.Mounts}} {{.LocalVolumes}}",
                    "table {{.Names}}\\t{{.Status}}\\t{{.Ports}}\\t{{.Names}}"):
            docker = daemon.docker("ps", "-a", "--format", fmt, check=True).stdout
            assert engine.run(*via, "ps", "-a", "--format", fmt, check=True).stdout == docker, fmt
            assert engine.run("ps", "-a", "--format", fmt, check=True).stdout == docker, fmt
        for fmt in ("table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{.Size}}", "{{.Repository}}:{{.Tag}} {{.ID}}",
                    "table"):
            # The bare table has CREATED; the image is seconds old, so the two runs may fall in
            # different seconds: "2 seconds ago" and "3 seconds ago" are the same answer.
            docker = _seconds_ago(daemon.docker("images", "--format", fmt, check=True).stdout)
            assert _seconds_ago(engine.run(*via, "images", "--format", fmt, check=True).stdout) == docker, fmt
        remove_all_containers(engine.run)
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]
