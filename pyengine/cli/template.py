"""Go's text/template as docker users type it in ``--format``, and docker's formatter contexts.

Owns the template language (lexer, parser, executor with Go's truthiness, value printing,
``printf``, ``encoding/json`` output and docker's functions ``json join split upper lower title
pad truncate``), the ``table`` directive (a header row from docker's column names, columns
aligned as Go's tabwriter with docker's settings) and the rows each listing's template sees.
Pure Python on the standard library; imports nothing of the engine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from pyengine.errors import UsageError

__all__ = ["NO_VALUE", "Struct", "Template", "TemplateError", "format_rows", "go_json", "go_sprint",
           "render", "tabwriter"]


class TemplateError(UsageError):
    """A ``--format`` template that does not parse or cannot be executed on the data; the message
    is Go's (``template: :1:2: executing "" at <.Nope>: can't evaluate field Nope in type ...``)."""


class _NoValue:
    """What Go's reflection calls an invalid value (a map's missing key): prints ``<no value>``."""

    _instance: _NoValue | None = None

    def __new__(cls) -> _NoValue:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_VALUE"

    def __bool__(self) -> bool:
        return False


NO_VALUE = _NoValue()


class Struct:
    """A Go struct (or a map type with methods) as a template sees it: named fields and methods.

    :param go_type: the type name Go's errors give (``*formatter.ContainerContext``)
    :param fields: field name -> value (or a callable of no argument, computed when asked)
    :param methods: method name -> callable taking the template's arguments (``.Label "k"``)
    :param missing: ``"error"`` for a struct (an unknown field is an error), ``"novalue"`` for a
        map type (an unknown key is ``<no value>``)
    """

    def __init__(self, go_type: str, fields: dict[str, Any], methods: dict[str, Callable[..., Any]] | None = None,
                 missing: str = "error") -> None:
        self.go_type = go_type
        self.fields = fields
        self.methods = methods or {}
        self.missing = missing

    def field(self, name: str) -> Any:
        value = self.fields[name]
        return value() if callable(value) else value

    def as_dict(self) -> dict[str, Any]:
        """Every field, as docker's ``MarshalJSON`` of a formatter context gives them."""
        return {name: self.field(name) for name in self.fields}


# -- values as Go prints them --------------------------------------------------------------------
def _go_float(value: float, json_style: bool = False) -> str:
    """``strconv.FormatFloat(f, 'g', -1, 64)`` as fmt's ``%v`` uses it, or encoding/json's form."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if str(value).startswith("-") and not json_style else "0"
    sign, digits_t, exponent = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digits_t))
    point = len(digits) + int(exponent)  # where the decimal point falls in ``digits``
    exp = point - 1
    if json_style:
        use_e = abs(value) < 1e-6 or abs(value) >= 1e21
    else:
        use_e = exp < -4 or exp >= 6  # strconv's shortest 'g': %e from an exponent of 6 up
    if use_e:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exp_text = f"{abs(exp):02d}" if not json_style else str(abs(exp))
        text = f"{mantissa}e{'-' if exp < 0 else '+'}{exp_text}"
    elif point <= 0:
        text = "0." + "0" * (-point) + digits
    elif point >= len(digits):
        text = digits + "0" * (point - len(digits))
    else:
        text = digits[:point] + "." + digits[point:]
    return ("-" if sign else "") + text


def go_sprint(value: Any, top: bool = True) -> str:
    """A value as ``fmt.Sprint`` prints it: ``true``, ``[a b]``, ``map[k:v]``, ``<nil>``."""
    if value is NO_VALUE:
        return "<no value>"
    if value is None:
        return "<no value>" if top else "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_sprint(v, False) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{go_sprint(k, False)}:{go_sprint(value[k], False)}"
                                 for k in sorted(value, key=str)) + "]"
    if isinstance(value, Struct):
        return "{" + " ".join(go_sprint(v, False) for v in value.as_dict().values()) + "}"
    return str(value)


def _go_type(value: Any) -> str:
    """The Go type a decoded JSON value has (for Go's error messages)."""
    if isinstance(value, Struct):
        return value.go_type
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return "interface {}"


#: keys whose values are Go maps in docker's types (their JSON keys come out sorted)
_MAP_KEYS = frozenset({"Labels", "Options", "DriverOpts", "ExposedPorts", "Volumes", "Ports", "Networks", "Tmpfs",
                       "StorageOpt", "Sysctls", "Containers", "Attributes", "Annotations", "Peers"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
                 "\u2028": "\\u2028", "\u2029": "\\u2029"}
_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def _json_string(text: str, escape_html: bool) -> str:
    out = []
    for ch in text:
        if ch in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        elif escape_html and ch in _HTML_ESCAPES:
            out.append(_HTML_ESCAPES[ch])
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _is_go_map(value: dict[Any, Any], key: str | None) -> bool:
    """Whether a JSON object stands for a Go map (reached by a map-typed key such as Labels, or
    with keys no Go field could have) rather than a struct."""
    return key in _MAP_KEYS or not all(isinstance(k, str) and _IDENT.match(k) for k in value)


def go_json(value: Any, escape_html: bool = False, key: str | None = None) -> str:
    """``value`` as Go's encoding/json writes it: compact, ``<>&`` escaped only with
    ``escape_html`` (docker's ``json`` function turns that off; a formatter context's own
    MarshalJSON has it on), a map's keys sorted, a struct's in its order."""
    if value is None or value is NO_VALUE:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TemplateError(f"json: unsupported value: {_go_float(value)}")
        return _go_float(value, json_style=True)
    if isinstance(value, str):
        return _json_string(value, escape_html)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(go_json(v, escape_html) for v in value) + "]"
    if isinstance(value, Struct):
        fields = value.as_dict()
        return "{" + ",".join(f"{_json_string(k, True)}:{go_json(fields[k], True, k)}" for k in sorted(fields)) + "}"
    if isinstance(value, dict):
        keys = list(value)
        if _is_go_map(value, key):
            keys = sorted(keys, key=str)
        return "{" + ",".join(f"{_json_string(str(k), escape_html)}:{go_json(value[k], escape_html, str(k))}"
                              for k in keys) + "}"
    return _json_string(str(value), escape_html)


def go_quote(text: str) -> str:
    """``strconv.Quote``: Go's double-quoted string with its escapes."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def truth(value: Any) -> bool:
    """Go's template truth: false, 0, nil, and empty strings, slices and maps are false."""
    if value is None or value is NO_VALUE:
        return False
    if isinstance(value, Struct):
        return True
    if isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return bool(value)
    return True


# -- printf ---------------------------------------------------------------------------------------
_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*)?)?([a-zA-Z%])")


def _bad_verb(verb: str, value: Any) -> str:
    if value is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({_go_type(value)}={go_sprint(value, False)})"


def _pad(text: str, flags: str, width: int | None, zero_ok: bool = False) -> str:
    if width is None or len(text) >= width:
        return text
    if "-" in flags:
        return text.ljust(width)
    if "0" in flags and zero_ok:
        sign = text[0] if text[:1] in "+-" else ""
        return sign + text[len(sign):].rjust(width - len(sign), "0")
    return text.rjust(width)


def go_sprintf(fmt: str, *args: Any) -> str:
    """``fmt.Sprintf`` for the verbs templates use: v s q d t f e g x X o b c T %."""
    out: list[str] = []
    pos = 0
    arg_i = 0
    for match in _VERB.finditer(fmt):
        out.append(fmt[pos:match.start()])
        pos = match.end()
        flags, width_s, prec_s, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue

        def take() -> Any:
            nonlocal arg_i
            if arg_i >= len(args):
                raise IndexError
            arg_i += 1
            return args[arg_i - 1]

        try:
            width = int(take()) if width_s == "*" else (int(width_s) if width_s else None)
            prec = int(take()) if prec_s == "*" else (int(prec_s) if prec_s else (0 if match.group(0).find(".") > 0
                                                                                   and prec_s is None else None))
            value = take()
        except IndexError:
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_format_one(verb, flags, width, prec, value))
    out.append(fmt[pos:])
    if arg_i < len(args):
        extra = ", ".join(f"{_go_type(a)}={go_sprint(a, False)}" for a in args[arg_i:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _format_one(verb: str, flags: str, width: int | None, prec: int | None, value: Any) -> str:
    if value is NO_VALUE:
        value = None
    if verb == "T":
        return _pad(_go_type(value) if value is not None else "<nil>", flags, width)
    if verb in "vs":
        if verb == "s" and isinstance(value, (bool, int, float)) and not isinstance(value, str):
            return _bad_verb(verb, value)
        text = go_sprint(value, False) if not isinstance(value, str) else value
        if prec is not None and isinstance(value, str):
            text = text[:prec]
        return _pad(text, flags, width)
    if verb == "q":
        if isinstance(value, str):
            return _pad(go_quote(value), flags, width)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return _pad("[" + " ".join(go_quote(v) for v in value) + "]", flags, width)
        return _bad_verb(verb, value)
    if verb == "t":
        return _pad(go_sprint(value, False), flags, width) if isinstance(value, bool) else _bad_verb(verb, value)
    if verb == "c":
        return chr(value) if isinstance(value, int) and not isinstance(value, bool) else _bad_verb(verb, value)
    if verb in "dxXob":
        if isinstance(value, str) and verb in "xX":
            text = value.encode().hex()
            return _pad(text.upper() if verb == "X" else text, flags, width)
        if isinstance(value, float) and verb in "xX" or isinstance(value, bool) or not isinstance(value, int):
            return _bad_verb(verb, value)
        base = {"d": "d", "x": "x", "X": "X", "o": "o", "b": "b"}[verb]
        text = format(abs(value), base)
        if "#" in flags and verb in "xX":
            text = ("0x" if verb == "x" else "0X") + text
        elif "#" in flags and verb == "o":
            text = "0" + text
        sign = "-" if value < 0 else ("+" if "+" in flags else (" " if " " in flags else ""))
        return _pad(sign + text, flags, width, zero_ok=True)
    if verb in "feEgG":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _bad_verb(verb, value)
        if isinstance(value, int):
            return _bad_verb(verb, value)
        sign = "+" if "+" in flags else (" " if " " in flags else "")
        if verb in "gG" and prec is None:
            text = _go_float(value)
            if sign and value >= 0:
                text = sign + text
        else:
            text = format(value, f"{sign}.{6 if prec is None else prec}{verb}")
        return _pad(text, flags, width, zero_ok=True)
    return f"%!{verb}({_go_type(value)}={go_sprint(value, False)})"


# -- lexer ----------------------------------------------------------------------------------------
_SPACE = " \t\r\n"
_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}
_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|"
                     r"(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)")
_STRING_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
                   '"': '"', "'": "'"}


class _Token:
    __slots__ = ("kind", "value", "pos")

    def __init__(self, kind: str, value: Any, pos: int) -> None:
        self.kind = kind
        self.value = value
        self.pos = pos

    def __repr__(self) -> str:
        return f"{self.kind}:{self.value!r}@{self.pos}"


class _Lexer:
    """Splits a template into text and the tokens of its actions, applying ``{{-`` / ``-}}``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[_Token] = []

    def error(self, pos: int, message: str) -> TemplateError:
        return TemplateError(f"template: :{self.text.count(chr(10), 0, pos) + 1}: {message}")

    def run(self) -> list[_Token]:
        text, pos = self.text, 0
        trim_next = False
        while True:
            start = text.find("{{", pos)
            chunk = text[pos:] if start < 0 else text[pos:start]
            if trim_next:
                chunk = chunk.lstrip(_SPACE)
            if start < 0:
                if chunk:
                    self.tokens.append(_Token("text", chunk, pos))
                break
            inner = start + 2
            if text.startswith("-", inner) and inner + 1 < len(text) and text[inner + 1] in _SPACE:
                chunk = chunk.rstrip(_SPACE)
                inner += 2
            if chunk:
                self.tokens.append(_Token("text", chunk, pos))
            pos, trim_next = self.action(start, inner)
        self.tokens.append(_Token("eof", None, len(text)))
        return self.tokens

    def close_at(self, pos: int) -> tuple[int, bool] | None:
        """(end, trims) when the action closes at ``pos`` (``}}`` or `` -}}``)."""
        text = self.text
        if text.startswith("}}", pos):
            return pos + 2, False
        if text[pos] in _SPACE:
            j = pos
            while j < len(text) and text[j] in _SPACE:
                j += 1
            if text.startswith("-}}", j):
                return j + 3, True
        return None

    def action(self, start: int, pos: int) -> tuple[int, bool]:
        text = self.text
        self.tokens.append(_Token("left", None, start))
        probe = pos
        while probe < len(text) and text[probe] in _SPACE:
            probe += 1
        if text.startswith("/*", probe):
            end = text.find("*/", probe + 2)
            if end < 0:
                raise self.error(start, "unclosed comment")
            closed = self.close_at(end + 2) if end + 2 < len(text) else None
            if closed is None:
                raise self.error(start, "comment ends before closing delimiter")
            self.tokens.pop()
            return closed
        depth = 0
        while True:
            if pos >= len(text):
                raise self.error(start, "unclosed action")
            closed = self.close_at(pos) if depth == 0 else None
            if closed is not None:
                self.tokens.append(_Token("right", None, pos))
                return closed
            ch = text[pos]
            if ch in _SPACE:
                pos += 1
                while pos < len(text) and text[pos] in _SPACE:
                    pos += 1
                self.tokens.append(_Token("space", None, pos))
                continue
            if text.startswith(":=", pos):
                self.tokens.append(_Token("declare", None, pos))
                pos += 2
            elif ch == "=":
                self.tokens.append(_Token("assign", None, pos))
                pos += 1
            elif ch in "|,()":
                self.tokens.append(_Token({"|": "pipe", ",": "comma", "(": "lparen", ")": "rparen"}[ch], None, pos))
                depth += {"(": 1, ")": -1}.get(ch, 0)
                if depth < 0:
                    raise self.error(pos, "unexpected right paren")
                pos += 1
            elif ch == '"':
                pos = self.quoted(pos)
            elif ch == "`":
                end = text.find("`", pos + 1)
                if end < 0:
                    raise self.error(pos, "unterminated raw quoted string")
                self.tokens.append(_Token("string", text[pos + 1:end], pos))
                pos = end + 1
            elif ch == "'":
                match = re.match(r"'(\\.|[^\\'])'", text[pos:])
                if not match:
                    raise self.error(pos, "unterminated character constant")
                body = match.group(1)
                self.tokens.append(_Token("number", ord(_STRING_ESCAPES.get(body[1], body[1])
                                                        if body.startswith("\\") else body), pos))
                pos += match.end()
            elif ch == "$":
                match = re.match(r"\$[A-Za-z0-9_]*", text[pos:])
                assert match is not None
                self.tokens.append(_Token("variable", match.group(0), pos))
                pos += match.end()
            elif ch == "." and not (pos + 1 < len(text) and text[pos + 1].isdigit()):
                match = re.match(r"\.[A-Za-z_][A-Za-z0-9_]*", text[pos:])
                if match:
                    self.tokens.append(_Token("field", match.group(0)[1:], pos))
                    pos += match.end()
                else:
                    self.tokens.append(_Token("dot", None, pos))
                    pos += 1
            elif ch.isdigit() or ch in "+-." :
                match = _NUMBER.match(text, pos)
                if not match or (match.end() < len(text) and (text[match.end()].isalnum() or text[match.end()] == "_")):
                    bad = re.match(r"[^\s}|()]*", text[pos:])
                    raise self.error(pos, f'bad number syntax: "{bad.group(0) if bad else ch}"')
                raw = match.group(0).replace("_", "")
                try:
                    value: Any = int(raw, 0) if re.fullmatch(r"[+-]?(0[xXbBoO][0-9a-fA-F]+|\d+)", raw) \
                        else float(raw)
                except ValueError:
                    value = float(raw)
                self.tokens.append(_Token("number", value, pos))
                pos = match.end()
            elif ch.isalpha() or ch == "_":
                match = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[pos:])
                assert match is not None
                word = match.group(0)
                if word in _KEYWORDS:
                    self.tokens.append(_Token("keyword", word, pos))
                elif word in ("true", "false"):
                    self.tokens.append(_Token("bool", word == "true", pos))
                elif word == "nil":
                    self.tokens.append(_Token("nil", None, pos))
                else:
                    self.tokens.append(_Token("identifier", word, pos))
                pos += match.end()
            else:
                raise self.error(pos, f"unrecognized character in action: U+{ord(ch):04X} {ch!r}")

    def quoted(self, pos: int) -> int:
        text = self.text
        out = []
        i = pos + 1
        while True:
            if i >= len(text) or text[i] == "\n":
                raise self.error(pos, "unterminated quoted string")
            ch = text[i]
            if ch == '"':
                break
            if ch == "\\" and i + 1 < len(text):
                nxt = text[i + 1]
                if nxt in _STRING_ESCAPES:
                    out.append(_STRING_ESCAPES[nxt])
                    i += 2
                    continue
                hexlen = {"x": 2, "u": 4, "U": 8}.get(nxt)
                if hexlen and re.fullmatch(r"[0-9a-fA-F]+", text[i + 2:i + 2 + hexlen] or "-"):
                    out.append(chr(int(text[i + 2:i + 2 + hexlen], 16)))
                    i += 2 + hexlen
                    continue
                raise self.error(pos, f"invalid syntax: {text[pos:i + 2]}")
            out.append(ch)
            i += 1
        self.tokens.append(_Token("string", "".join(out), pos))
        return i + 1


# -- parse tree ------------------------------------------------------------------------------------
class _Node:
    pos = 0

    def __str__(self) -> str:
        return self.__class__.__name__


class _Text(_Node):
    def __init__(self, text: str) -> None:
        self.text = text


class _Literal(_Node):
    def __init__(self, value: Any, pos: int, source: str) -> None:
        self.value, self.pos, self.source = value, pos, source

    def __str__(self) -> str:
        return self.source


class _Dot(_Node):
    def __init__(self, pos: int) -> None:
        self.pos = pos

    def __str__(self) -> str:
        return "."


class _Nil(_Dot):
    def __str__(self) -> str:
        return "nil"


class _Field(_Node):
    def __init__(self, names: list[str], pos: int) -> None:
        self.names, self.pos = names, pos

    def __str__(self) -> str:
        return "".join("." + n for n in self.names)


class _Variable(_Node):
    def __init__(self, names: list[str], pos: int) -> None:
        self.names, self.pos = names, pos  # names[0] is the variable ($x)

    def __str__(self) -> str:
        return self.names[0] + "".join("." + n for n in self.names[1:])


class _Identifier(_Node):
    def __init__(self, name: str, pos: int) -> None:
        self.name, self.pos = name, pos

    def __str__(self) -> str:
        return self.name


class _Chain(_Node):
    def __init__(self, node: _Node, names: list[str], pos: int) -> None:
        self.node, self.names, self.pos = node, names, pos

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, _Pipe) else str(self.node)
        return inner + "".join("." + n for n in self.names)


class _Command(_Node):
    def __init__(self, args: list[_Node], pos: int) -> None:
        self.args, self.pos = args, pos

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, _Pipe) else str(a) for a in self.args)


class _Pipe(_Node):
    def __init__(self, decl: list[str], assign: bool, cmds: list[_Command], pos: int) -> None:
        self.decl, self.assign, self.cmds, self.pos = decl, assign, cmds, pos

    def __str__(self) -> str:
        head = ", ".join(self.decl) + (" = " if self.assign else " := ") if self.decl else ""
        return head + " | ".join(str(c) for c in self.cmds)


class _Action(_Node):
    def __init__(self, pipe: _Pipe, pos: int) -> None:
        self.pipe, self.pos = pipe, pos


class _Branch(_Node):
    def __init__(self, kind: str, pipe: _Pipe, body: list[_Node], orelse: list[_Node] | None, pos: int) -> None:
        self.kind, self.pipe, self.body, self.orelse, self.pos = kind, pipe, body, orelse, pos


class _Loop(_Node):
    def __init__(self, kind: str, pos: int) -> None:
        self.kind, self.pos = kind, pos


class _Parser:
    def __init__(self, text: str, functions: dict[str, Any]) -> None:
        self.lexer = _Lexer(text)
        self.tokens = self.lexer.run()
        self.i = 0
        self.functions = functions
        self.range_depth = 0

    # token helpers (spaces are significant only between operands)
    def peek(self, skip_space: bool = True) -> _Token:
        i = self.i
        while skip_space and self.tokens[i].kind == "space":
            i += 1
        return self.tokens[i]

    def next(self, skip_space: bool = True) -> _Token:
        while skip_space and self.tokens[self.i].kind == "space":
            self.i += 1
        token = self.tokens[self.i]
        self.i += 1
        return token

    def error(self, token: _Token, message: str) -> TemplateError:
        return self.lexer.error(token.pos, message)

    def parse(self) -> list[_Node]:
        body, end = self.list_until(())
        if end is not None:
            raise self.error(end, f"unexpected {{{{{end.value}}}}}")
        return body

    def list_until(self, stops: tuple[str, ...]) -> tuple[list[_Node], _Token | None]:
        """Nodes up to an ``{{end}}``/``{{else}}`` (the keyword token returned, positioned after it)."""
        nodes: list[_Node] = []
        while True:
            token = self.next(False)
            if token.kind == "eof":
                if stops:
                    raise self.error(token, "unexpected EOF")
                return nodes, None
            if token.kind == "text":
                nodes.append(_Text(token.value))
                continue
            # left delimiter
            head = self.peek()
            if head.kind == "keyword":
                self.next()
                word = head.value
                if word in ("end", "else"):
                    if word not in stops:
                        raise self.error(head, f"unexpected {{{{{word}}}}}")
                    return nodes, head
                nodes.append(self.control(head))
                continue
            pipe = self.pipeline("command", allow_decl=True)
            nodes.append(_Action(pipe, head.pos))

    def expect_right(self, context: str) -> None:
        token = self.next()
        if token.kind != "right":
            raise self.error(token, f"unexpected {self.describe(token)} in {context}")

    @staticmethod
    def describe(token: _Token) -> str:
        if token.kind in ("right",):
            return '"}}"'
        if token.kind == "eof":
            return "EOF"
        if token.value is None:
            return {"pipe": '"|"', "lparen": '"("', "rparen": '")"', "comma": '","', "declare": '":="',
                    "assign": '"="', "dot": '"."', "nil": "nil"}.get(token.kind, token.kind)
        return f'"{token.value}"' if token.kind != "string" else go_quote(token.value)

    def control(self, head: _Token) -> _Node:
        word = head.value
        if word in ("break", "continue"):
            if self.range_depth == 0:
                raise self.error(head, f"{{{{{word}}}}} outside {{{{range}}}}")
            self.expect_right(word)
            return _Loop(word, head.pos)
        if word in ("define", "template", "block"):
            raise self.error(head, f"{{{{{word}}}}} is not supported in --format templates")
        return self.branch(word, head)

    def branch(self, word: str, head: _Token) -> _Node:
        pipe = self.pipeline(word, allow_decl=True, range_decl=word == "range")
        if word == "range":
            self.range_depth += 1
        body, end = self.list_until(("end", "else"))
        if word == "range":
            self.range_depth -= 1
        orelse: list[_Node] | None = None
        assert end is not None
        if end.value == "else":
            nxt = self.peek()
            if nxt.kind == "keyword" and nxt.value in ("if", "with") and word in ("if", "with"):
                # {{else if x}} is {{else}}{{if x}}...{{end}}{{end}} sharing the one {{end}}
                self.next()
                orelse = [self.branch(nxt.value, nxt)]
                return _Branch(word, pipe, body, orelse, head.pos)
            self.expect_right("else")
            orelse, end = self.list_until(("end",))
        self.expect_right("end")
        return _Branch(word, pipe, body, orelse, head.pos)

    def pipeline(self, context: str, allow_decl: bool = False, range_decl: bool = False) -> _Pipe:
        start = self.peek()
        decl: list[str] = []
        assign = False
        if allow_decl and start.kind == "variable":
            save = self.i
            self.next()
            names = [start.value]
            tok = self.peek()
            if tok.kind == "comma" and range_decl:
                self.next()
                second = self.next()
                if second.kind != "variable":
                    raise self.error(second, "range can only initialize variables")
                names.append(second.value)
                tok = self.peek()
            if tok.kind in ("declare", "assign"):
                self.next()
                decl, assign = names, tok.kind == "assign"
            else:
                self.i = save
        cmds: list[_Command] = []
        end_kind = "rparen" if context == "paren" else "right"
        while True:
            tok = self.peek()
            if tok.kind == end_kind:
                if not cmds:
                    raise self.error(tok, f"missing value for {context}")
                self.next()
                break
            cmds.append(self.command(end_kind))
            tok = self.peek()
            if tok.kind == "pipe":
                self.next()
                continue
            if tok.kind != end_kind:
                where = "operand" if end_kind == "rparen" else context
                raise self.error(tok, f"unexpected {self.describe(tok)} in {where}")
        for cmd in cmds[1:]:
            first = cmd.args[0]
            if isinstance(first, (_Literal, _Nil)) or type(first) is _Dot:
                stage = cmds.index(cmd) + 1
                raise self.error(self.tokens[self.i - 1], f"non executable command in pipeline stage {stage}")
        return _Pipe(decl, assign, cmds, start.pos)

    def command(self, end_kind: str) -> _Command:
        args: list[_Node] = []
        pos = self.peek().pos
        while True:
            tok = self.peek()
            if tok.kind in (end_kind, "pipe") or (tok.kind == "right" and end_kind == "rparen"):
                break
            if args and self.tokens[self.i].kind != "space":
                raise self.error(tok, f"unexpected {self.describe(tok)} in operand")
            args.append(self.operand())
        if not args:
            raise self.error(self.peek(), "missing value for command")
        return _Command(args, pos)

    def operand(self) -> _Node:
        node = self.term()
        names = []
        # Go places a chain (.A.B, $x.A, (p).A) at its first field after the term
        chain_pos = self.tokens[self.i].pos
        while self.tokens[self.i].kind == "field":
            names.append(self.tokens[self.i].value)
            self.i += 1
        if not names:
            return node
        if isinstance(node, _Field):
            return _Field(node.names + names, chain_pos)
        if isinstance(node, _Variable):
            return _Variable(node.names + names, chain_pos)
        if isinstance(node, (_Literal, _Nil)) or type(node) is _Dot:
            raise self.lexer.error(node.pos, f"unexpected . after term {str(node)!r}".replace("'", '"'))
        return _Chain(node, names, chain_pos)

    def term(self) -> _Node:
        tok = self.next()
        kind = tok.kind
        if kind == "field":
            return _Field([tok.value], tok.pos)
        if kind == "variable":
            return _Variable([tok.value], tok.pos)
        if kind == "identifier":
            if tok.value not in self.functions:
                raise self.error(tok, f'function "{tok.value}" not defined')
            return _Identifier(tok.value, tok.pos)
        if kind == "dot":
            return _Dot(tok.pos)
        if kind == "nil":
            return _Nil(tok.pos)
        if kind == "bool":
            return _Literal(tok.value, tok.pos, "true" if tok.value else "false")
        if kind == "number":
            return _Literal(tok.value, tok.pos, self.lexer.text[tok.pos:self.tokens[self.i].pos].strip()
                            if self.tokens[self.i].pos > tok.pos else str(tok.value))
        if kind == "string":
            return _Literal(tok.value, tok.pos, go_quote(tok.value))
        if kind == "lparen":
            pipe = self.pipeline("paren")
            return pipe
        raise self.error(tok, f"unexpected {self.describe(tok)} in operand")


# -- functions ------------------------------------------------------------------------------------
class _FuncError(Exception):
    """A function refused its arguments; the executor adds where."""


def _want_str(value: Any, name: str = "") -> str:
    if isinstance(value, str):
        return value
    if value is NO_VALUE or value is None:
        raise _FuncError("invalid value; expected string")
    raise _FuncError(f"wrong type for value; expected string; got {_go_type(value)}")


def _want_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FuncError(f"wrong type for value; expected int; got {_go_type(value)}")
    return value


def _go_title(text: str) -> str:
    """``strings.Title``: the first letter of each word upper-cased, the rest left alone."""
    out, prev = [], " "
    for ch in text:
        separator = not (prev.isalnum() or prev == "_") if prev.isascii() else prev.isspace()
        out.append(ch.upper() if separator else ch)
        prev = ch
    return "".join(out)


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if item is None or item is NO_VALUE:
            raise _FuncError("error calling index: index of untyped nil")
        if isinstance(item, dict):
            if key in item:
                item = item[key]
            else:
                # a map of strings (Labels) gives "", one of anything gives nil
                item = "" if item and all(isinstance(v, str) for v in item.values()) else None
        elif isinstance(item, (list, tuple, str)):
            if isinstance(key, bool) or not isinstance(key, int):
                raise _FuncError(f"error calling index: cannot index slice/array with type {_go_type(key)}")
            if not 0 <= key < len(item):
                raise _FuncError(f"error calling index: index out of range: {key}")
            item = item[key] if not isinstance(item, str) else item.encode()[key]
        elif isinstance(item, Struct):
            raise _FuncError(f"error calling index: can't index item of type {item.go_type}")
        else:
            raise _FuncError(f"error calling index: can't index item of type {_go_type(item)}")
    return item


def _slice(item: Any, *bounds: Any) -> Any:
    if not isinstance(item, (list, tuple, str)):
        raise _FuncError(f"error calling slice: can't slice item of type {_go_type(item)}")
    idx = [_want_int(b) for b in bounds]
    if len(idx) > 2:
        idx = idx[:2]
    start = idx[0] if idx else 0
    end = idx[1] if len(idx) > 1 else len(item)
    if not 0 <= start <= end <= len(item):
        raise _FuncError(f"error calling slice: index out of range: {end if end > len(item) else start}")
    return item[start:end]


def _length(item: Any) -> int:
    if isinstance(item, str):
        return len(item.encode())
    if isinstance(item, (list, tuple, dict)):
        return len(item)
    raise _FuncError(f"error calling len: len of type {_go_type(item)}")


_KINDS = ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"))


def _kind(value: Any) -> str | None:
    if value is NO_VALUE or value is None:
        return None
    for cls, kind in _KINDS:
        if isinstance(value, cls):
            return "number" if kind in ("int", "float") else kind
    return "other"


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise _FuncError("error calling eq: missing argument for comparison")
    k1 = _kind(first)
    for other in others:
        k2 = _kind(other)
        if k1 != k2:
            if k1 is not None and k2 is not None:
                raise _FuncError("error calling eq: incompatible types for comparison")
            continue
        if k1 == "other":
            if isinstance(first, (list, dict, Struct)) or isinstance(other, (list, dict, Struct)):
                raise _FuncError(f"error calling eq: non-comparable type {go_sprint(first, False)}: "
                                 f"{_go_type(first)}")
        if first == other or (k1 is None and k2 is None):
            return True
    return False


def _ordered(name: str, a: Any, b: Any) -> tuple[Any, Any]:
    ka, kb = _kind(a), _kind(b)
    if ka not in ("number", "string") or kb not in ("number", "string"):
        raise _FuncError(f"error calling {name}: invalid type for comparison")
    if ka != kb:
        raise _FuncError(f"error calling {name}: incompatible types for comparison")
    return a, b


def _sprint(*args: Any) -> str:
    out = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_sprint(arg, False) if arg is not NO_VALUE else "<nil>")
    return "".join(out)


def _html(*args: Any) -> str:
    text = args[0] if len(args) == 1 and isinstance(args[0], str) else _sprint(*args)
    return (text.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&#34;").replace("\0", "\ufffd"))


def _js(*args: Any) -> str:
    text = args[0] if len(args) == 1 and isinstance(args[0], str) else _sprint(*args)
    out = []
    for ch in text:
        if ch in "\\'\"":
            out.append("\\" + ch)
        elif ch in "<>&=" or ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def _urlquery(*args: Any) -> str:
    from urllib.parse import quote_plus

    text = args[0] if len(args) == 1 and isinstance(args[0], str) else _sprint(*args)
    return quote_plus(text, safe="")


def _json_func(value: Any) -> str:
    return go_json(value)


def _pad_func(text: Any, prefix: Any, suffix: Any) -> str:
    text = _want_str(text)
    return text if not text else " " * _want_int(prefix) + text + " " * _want_int(suffix)


def _truncate(text: Any, length: Any) -> str:
    raw = _want_str(text).encode()
    n = _want_int(length)
    return raw.decode() if len(raw) < n else raw[:n].decode(errors="ignore")


#: name -> (function, least args, most args or None); ``and``/``or`` are evaluated lazily
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "and": (lambda *a: a[-1], 1, None),
    "or": (lambda *a: a[-1], 1, None),
    "not": (lambda a: not truth(a), 1, 1),
    "len": (_length, 1, 1),
    "index": (_index, 1, None),
    "slice": (_slice, 1, 4),
    "print": (_sprint, 0, None),
    "println": (lambda *a: " ".join(go_sprint(x, False) if x is not NO_VALUE else "<nil>" for x in a) + "\n",
                0, None),
    "printf": (lambda fmt, *a: go_sprintf(_want_str(fmt), *a), 1, None),
    "eq": (_eq, 1, None),
    "ne": (lambda a, b: not _eq(a, b), 2, 2),
    "lt": (lambda a, b: (lambda x, y: x < y)(*_ordered("lt", a, b)), 2, 2),
    "le": (lambda a, b: (lambda x, y: x <= y)(*_ordered("le", a, b)), 2, 2),
    "gt": (lambda a, b: (lambda x, y: x > y)(*_ordered("gt", a, b)), 2, 2),
    "ge": (lambda a, b: (lambda x, y: x >= y)(*_ordered("ge", a, b)), 2, 2),
    "html": (_html, 0, None),
    "js": (_js, 0, None),
    "urlquery": (_urlquery, 0, None),
    # docker's (cli/templates): json split join title lower upper pad truncate
    "json": (_json_func, 1, 1),
    "split": (lambda s, sep: list(_want_str(s)) if _want_str(sep) == "" else _want_str(s).split(sep), 2, 2),
    "join": (lambda items, sep: _want_str(sep).join(go_sprint(i, False) for i in _want_list(items)), 2, 2),
    "title": (lambda s: _go_title(_want_str(s)), 1, 1),
    "lower": (lambda s: _want_str(s).lower(), 1, 1),
    "upper": (lambda s: _want_str(s).upper(), 1, 1),
    "pad": (_pad_func, 3, 3),
    "truncate": (_truncate, 2, 2),
}

#: docker's HeaderFunctions: on the header row each function gives back its first argument
HEADER_FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    **FUNCTIONS, **{name: (lambda v, *rest: v, 1, None) for name in
                    ("json", "split", "join", "title", "lower", "upper", "pad", "truncate")}}


def _want_list(items: Any) -> list[Any]:
    if isinstance(items, (list, tuple)):
        return list(items)
    raise _FuncError(f"wrong type for value; expected []string; got {_go_type(items)}")


# -- executor -------------------------------------------------------------------------------------
class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_NO_FINAL = object()


class _Exec:
    def __init__(self, template: Template, data: Any, functions: dict[str, Any]) -> None:
        self.template = template
        self.functions = functions
        self.vars: list[tuple[str, Any]] = [("$", data)]
        self.out: list[str] = []

    def error(self, node: _Node, message: str) -> TemplateError:
        text = self.template.text
        pos = node.pos
        line_start = text.rfind("\n", 0, pos)
        col = pos if line_start < 0 else pos - line_start - 1
        return TemplateError(f'template: :{text.count(chr(10), 0, pos) + 1}:{col}: executing "" at <{node}>: '
                             f"{message}")

    def walk(self, dot: Any, nodes: list[_Node]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self.out.append(node.text)
            elif isinstance(node, _Action):
                # a declaration lives until the end of the enclosing block (see branch)
                value = self.pipeline(dot, node.pipe)
                if not node.pipe.decl:
                    self.out.append(self.printable(node, value))
            elif isinstance(node, _Branch):
                self.branch(dot, node)
            elif isinstance(node, _Loop):
                raise _Break() if node.kind == "break" else _Continue()

    def printable(self, node: _Node, value: Any) -> str:
        if isinstance(value, Struct) and value.go_type.startswith("*"):
            return "&" + go_sprint(value)
        return go_sprint(value)

    def branch(self, dot: Any, node: _Branch) -> None:
        mark = len(self.vars)
        if node.kind == "range":
            self.range(dot, node)
        else:
            value = self.pipeline(dot, node.pipe)
            if truth(value):
                self.walk(value if node.kind == "with" else dot, node.body)
            elif node.orelse is not None:
                self.walk(dot, node.orelse)
        del self.vars[mark:]

    def range(self, dot: Any, node: _Branch) -> None:
        pipe = node.pipe
        value = self.pipeline(dot, _Pipe([], False, pipe.cmds, pipe.pos))
        if isinstance(value, dict):
            items: Iterator[tuple[Any, Any]] = ((k, value[k]) for k in sorted(value, key=str))
        elif isinstance(value, (list, tuple)):
            items = iter(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = ((i, i) for i in range(value))
        elif value is None or value is NO_VALUE:
            items = iter(())
        else:
            raise self.error(node, f"range can't iterate over {go_sprint(value, False)}")
        mark = len(self.vars)
        ran = False
        for key, elem in items:
            ran = True
            if len(pipe.decl) == 1:
                self.set_var(pipe.decl[0], elem, pipe.assign)
            elif len(pipe.decl) == 2:
                self.set_var(pipe.decl[0], key, pipe.assign)
                self.set_var(pipe.decl[1], elem, pipe.assign)
            try:
                self.walk(elem, node.body)
            except _Break:
                del self.vars[mark:]
                break
            except _Continue:
                pass
            del self.vars[mark:]
        if not ran and node.orelse is not None:
            self.walk(dot, node.orelse)

    def set_var(self, name: str, value: Any, assign: bool) -> None:
        if assign:
            for i in range(len(self.vars) - 1, -1, -1):
                if self.vars[i][0] == name:
                    self.vars[i] = (name, value)
                    return
            raise TemplateError(f"template: undefined variable: {name}")
        self.vars.append((name, value))

    def var(self, node: _Node, name: str) -> Any:
        for vname, value in reversed(self.vars):
            if vname == name:
                return value
        raise self.error(node, f"undefined variable: {name}")

    def pipeline(self, dot: Any, pipe: _Pipe) -> Any:
        value: Any = _NO_FINAL
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        for name in pipe.decl:
            self.set_var(name, value, pipe.assign)
        return value

    def command(self, dot: Any, cmd: _Command, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, _Field):
            return self.field_chain(dot, dot, first, first.names, cmd.args, final)
        if isinstance(first, _Chain):
            base = self.arg(dot, first.node)
            return self.field_chain(dot, base, first, first.names, cmd.args, final)
        if isinstance(first, _Identifier):
            return self.function(dot, first, cmd, final)
        if isinstance(first, _Variable):
            value = self.var(first, first.names[0])
            if len(first.names) == 1:
                self.not_a_function(cmd, final)
                return value
            return self.field_chain(dot, value, first, first.names[1:], cmd.args, final)
        if isinstance(first, _Pipe):
            self.not_a_function(cmd, final)
            return self.pipeline(dot, first)
        self.not_a_function(cmd, final)
        if isinstance(first, _Nil):
            raise self.error(first, "nil is not a command")
        if isinstance(first, _Dot):
            return dot
        assert isinstance(first, _Literal)
        return first.value

    def not_a_function(self, cmd: _Command, final: Any) -> None:
        if len(cmd.args) > 1 or final is not _NO_FINAL:
            raise self.error(cmd.args[0], f"can't give argument to non-function {cmd.args[0]}")

    def field_chain(self, dot: Any, receiver: Any, node: _Node, names: list[str], args: list[_Node],
                    final: Any) -> Any:
        via = None
        for name in names[:-1]:
            receiver = self.field(dot, name, node, [], _NO_FINAL, receiver, via)
            via = name
        return self.field(dot, names[-1], node, args, final, receiver, via)

    def field(self, dot: Any, name: str, node: _Node, args: list[_Node], final: Any, receiver: Any,
              via: str | None = None) -> Any:
        has_args = len(args) > 1 or final is not _NO_FINAL
        if receiver is NO_VALUE:
            return NO_VALUE
        if isinstance(receiver, Struct):
            if name in receiver.methods:
                values = [self.arg(dot, a) for a in args[1:]]
                if final is not _NO_FINAL:
                    values.append(final)
                try:
                    return receiver.methods[name](*values)
                except TypeError:
                    raise self.error(node, f"wrong number of args for {name}") from None
                except _FuncError as exc:
                    raise self.error(node, f"error calling {name}: {exc}") from None
            if name in receiver.fields:
                if has_args:
                    raise self.error(node, f"{name} has arguments but cannot be invoked as function")
                return receiver.field(name)
            if receiver.missing == "novalue":
                return NO_VALUE
            raise self.error(node, f"can't evaluate field {name} in type {receiver.go_type}")
        if isinstance(receiver, dict):
            if has_args:
                raise self.error(node, f"{name} is not a method but has arguments")
            if name in receiver:
                return receiver[name]
            if self.template.document:
                # Go's field names where the JSON keys differ in case (APIVersion / ApiVersion)
                for key in receiver:
                    if isinstance(key, str) and key.lower() == name.lower():
                        return receiver[key]
                if not _is_go_map(receiver, via):
                    # a struct of docker's types: its raw JSON is read with missingkey=error
                    raise self.error(node, f'map has no entry for key "{name}"')
            return NO_VALUE
        if receiver is None:
            raise self.error(node, f"nil pointer evaluating interface {{}}.{name}")
        # a value decoded from a JSON document is an interface {} to Go
        go_type = "interface {}" if self.template.document else _go_type(receiver)
        raise self.error(node, f"can't evaluate field {name} in type {go_type}")

    def arg(self, dot: Any, node: _Node) -> Any:
        if isinstance(node, _Nil):
            return None
        if isinstance(node, _Dot):
            return dot
        if isinstance(node, _Literal):
            return node.value
        if isinstance(node, _Field):
            return self.field_chain(dot, dot, node, node.names, [node], _NO_FINAL)
        if isinstance(node, _Variable):
            value = self.var(node, node.names[0])
            return value if len(node.names) == 1 else self.field_chain(dot, value, node, node.names[1:], [node],
                                                                       _NO_FINAL)
        if isinstance(node, _Pipe):
            return self.pipeline(dot, node)
        if isinstance(node, _Identifier):
            return self.function(dot, node, _Command([node], node.pos), _NO_FINAL)
        if isinstance(node, _Chain):
            return self.field_chain(dot, self.arg(dot, node.node), node, node.names, [node], _NO_FINAL)
        raise self.error(node, f"can't handle {node} as an argument")

    def function(self, dot: Any, ident: _Identifier, cmd: _Command, final: Any) -> Any:
        name = ident.name
        fn, least, most = self.functions[name]
        arg_nodes = cmd.args[1:]
        count = len(arg_nodes) + (final is not _NO_FINAL)
        if count < least or (most is not None and count > most):
            want = str(least) if least == most else (f"at least {least}" if most is None else f"{least}..{most}")
            raise self.error(ident, f"wrong number of args for {name}: want {want} got {count}")
        if name in ("and", "or"):
            value: Any = None
            for node in arg_nodes:
                value = self.arg(dot, node)
                if truth(value) == (name == "or"):
                    return value
            if final is not _NO_FINAL:
                value = final
            return value
        values = [self.arg(dot, a) for a in arg_nodes]
        if final is not _NO_FINAL:
            values.append(final)
        try:
            return fn(*values)
        except _FuncError as exc:
            message = str(exc)
            if not message.startswith(("error calling", "wrong type", "invalid value")):
                message = f"error calling {name}: {message}"
            raise self.error(cmd if len(cmd.args) > 1 else ident, message) from None


class Template:
    """A parsed template; ``execute(data)`` gives its text for one value.

    :param document: the data is a Docker JSON document standing for Go structs, as ``inspect``
        sees it: a key may be named in another case when no key matches exactly (Go's field names
        where the JSON differs: ``{{.Client.APIVersion}}``, ``{{.ID}}`` for ``Id``), and a key
        missing from a struct is an error (``map has no entry for key``) while one missing from a
        Go map (Labels, Networks, ...) is ``<no value>``
    """

    def __init__(self, text: str, document: bool = False, functions: dict[str, Any] | None = None) -> None:
        self.text = text
        self.document = document
        self.functions = functions or FUNCTIONS
        self.nodes = _Parser(text, self.functions).parse()

    def execute(self, data: Any, functions: dict[str, Any] | None = None) -> str:
        run = _Exec(self, data, functions or self.functions)
        try:
            run.walk(data, self.nodes)
        except RecursionError:
            raise TemplateError("template: exceeded maximum template depth") from None
        return "".join(run.out)


def render(fmt: str, data: Any, document: bool = False) -> str:
    """``fmt`` executed on one value (inspect, version, info): ``json`` alone means ``{{json .}}``."""
    if fmt == "json":
        fmt = "{{json .}}"
    return Template(fmt, document=document).execute(data)


# -- the table directive -------------------------------------------------------------------------
def tabwriter(text: str, minwidth: int = 10, padding: int = 3) -> str:
    """Go's ``text/tabwriter`` as docker sets it up (``NewWriter(out, 10, 1, 3, ' ', 0)``): each
    tab-terminated cell padded to its column block's width; a line's last cell is not aligned."""
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def write_lines(start: int, end: int) -> None:
        for line in lines[start:end]:
            parts = []
            for j, cell in enumerate(line):
                parts.append(cell.ljust(widths[j]) if j < len(widths) and j < len(line) - 1 else cell)
            out.append("".join(parts))

    def fmt(start: int, end: int) -> int:
        column = len(widths)
        this = start
        line0 = start
        while this < end:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write_lines(line0, this)
            line0 = this
            width = minwidth
            while this < end and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            fmt(line0, this)
            widths.pop()
            line0 = this
        write_lines(line0, end)
        return end

    fmt(0, len(lines))
    return "\n".join(out)


def _prepare(fmt: str) -> tuple[str, bool]:
    """docker's preFormat: ``table`` taken off, spaces trimmed, ``\\t`` and ``\\n`` unescaped."""
    is_table = fmt.startswith("table")
    if is_table:
        fmt = fmt[len("table"):]
    fmt = fmt.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    return fmt, is_table


def format_rows(fmt: str, rows: list[Any], headers: dict[str, str], default: str) -> str:
    """What docker's formatter prints for a listing: each row through the template, each
    followed by a newline; for ``table ...`` a header row first (the template run on the column
    names, ``.Label "a.b-c"`` giving ``b c``) and the columns aligned. ``json`` is ``{{json .}}``;
    ``table`` alone is the command's ``default`` table."""
    if fmt == "json":
        fmt = "{{json .}}"
    body, is_table = _prepare(fmt)
    if is_table and not body:
        body, _ = _prepare(default)
    template = Template(body)
    text = "".join(template.execute(row) + "\n" for row in rows)
    if not is_table:
        return text
    header_ctx = Struct("formatter.SubHeaderContext", dict(headers),
                        {"Label": lambda name: _want_str(name).split(".")[-1].replace("-", " ").replace("_", " ")},
                        missing="novalue")
    try:
        header = template.execute(header_ctx, HEADER_FUNCTIONS)
    except TemplateError:
        header = ""
    return tabwriter(header + "\n" + text).rstrip("\n") + "\n"


# -- docker's formatter contexts: the rows each listing's template sees --------------------------
PS_HEADERS = {"ID": "CONTAINER ID", "Names": "NAMES", "Image": "IMAGE", "Command": "COMMAND",
              "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE",
              "Status": "STATUS", "Size": "SIZE", "Labels": "LABELS", "Mounts": "MOUNTS",
              "LocalVolumes": "LOCAL VOLUMES", "Networks": "NETWORKS"}
PS_DEFAULT = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
IMAGES_HEADERS = {"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
                  "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS",
                  "VirtualSize": "VIRTUAL SIZE", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE"}
IMAGES_DEFAULT = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
IMAGES_DIGESTS_DEFAULT = "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
NETWORK_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
                   "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT"}
NETWORK_DEFAULT = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
VOLUME_HEADERS = {"Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT",
                  "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE", "Group": "GROUP",
                  "Availability": "AVAILABILITY", "Status": "STATUS"}
VOLUME_DEFAULT = "table {{.Driver}}\t{{.Name}}"
HISTORY_HEADERS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY",
                   "Size": "SIZE", "Comment": "COMMENT"}
HISTORY_DEFAULT = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
STATS_HEADERS = {"Container": "CONTAINER", "Name": "NAME", "ID": "CONTAINER ID", "CPUPerc": "CPU %",
                 "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O",
                 "PIDs": "PIDS"}
STATS_DEFAULT = ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}"
                 "\t{{.PIDs}}")


def ellipsis(text: str, width: int) -> str:
    """docker's formatter.Ellipsis: at most ``width`` characters, the last one ``…`` when cut."""
    if len(text) <= width:
        return text
    return text[:width - 1] + "…" if width > 1 else text[:width]


def container_row(summary: dict[str, Any], trunc: bool, now: float, human_size: Callable[[float], str],
                  human_duration: Callable[[float], str], ports: Callable[[list[Any]], str]) -> Struct:
    """``ps``'s row (docker's ContainerContext) from a container summary (``GET /containers/json``)."""
    import time

    labels = summary.get("Labels") or {}
    created = summary.get("Created") or 0
    names = [n.lstrip("/") for n in summary.get("Names") or []]
    if trunc:
        names = [n for n in names if "/" not in n] or names[:1]
    command = summary.get("Command") or ""
    image = summary.get("Image") or ""
    if trunc and image.startswith("sha256:"):
        image = image[len("sha256:"):][:12]
    mounts = summary.get("Mounts") or []

    def size() -> str:
        rw = human_size(summary.get("SizeRw") or 0)
        root = summary.get("SizeRootFs") or 0
        return f"{rw} (virtual {human_size(root)})" if root > 0 else rw

    fields: dict[str, Any] = {
        "ID": summary["Id"][:12] if trunc else summary["Id"],
        "Image": image,
        "Command": go_quote(ellipsis(command, 20) if trunc else command),
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(created)),
        "RunningFor": human_duration(max(0.0, now - created)) + " ago",
        "Ports": lambda: ports(summary.get("Ports") or []),
        "State": summary.get("State") or "",
        "Status": summary.get("Status") or "",
        "Size": size,
        "Names": ",".join(names),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "Mounts": ",".join(ellipsis(m.get("Name") or m.get("Source") or "", 15) if trunc
                           else m.get("Name") or m.get("Source") or "" for m in mounts),
        "LocalVolumes": str(sum(1 for m in mounts if m.get("Driver") == "local")),
        "Networks": ",".join(sorted((summary.get("NetworkSettings") or {}).get("Networks") or {})),
    }
    return Struct("*formatter.ContainerContext", fields,
                  {"Label": lambda name: labels.get(_want_str(name), "")})


def image_row(row: dict[str, str]) -> Struct:
    """``images``'s row (docker's ImageContext) from the listing's computed columns."""
    keys = ("Containers", "CreatedAt", "CreatedSince", "Digest", "ID", "Repository", "SharedSize", "Size", "Tag",
            "UniqueSize", "VirtualSize")
    fields: dict[str, Any] = {key: row[key] for key in keys if key in row}
    return Struct("*formatter.ImageContext", fields)


def plain_row(go_type: str, fields: dict[str, Any], labels: dict[str, str] | None = None) -> Struct:
    """A row of a listing whose docker context is plain fields (+ ``.Label`` when it has labels)."""
    methods = {"Label": lambda name: (labels or {}).get(_want_str(name), "")} if labels is not None else None
    return Struct(go_type, fields, methods)


def network_row(doc: dict[str, Any], trunc: bool) -> Struct:
    """``network ls``'s row (docker's NetworkContext) from a network document."""
    labels = doc.get("Labels") or {}
    fields = {"ID": doc["Id"][:12] if trunc else doc["Id"], "Name": doc.get("Name") or "",
              "Driver": doc.get("Driver") or "", "Scope": doc.get("Scope") or "local",
              "IPv6": "true" if doc.get("EnableIPv6") else "false",
              "Internal": "true" if doc.get("Internal") else "false",
              "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
              "CreatedAt": doc.get("Created") or ""}
    return plain_row("*formatter.networkContext", fields, labels)


def volume_row(doc: dict[str, Any]) -> Struct:
    """``volume ls``'s row (docker's volumeContext) from a volume document."""
    labels = doc.get("Labels") or {}
    usage = doc.get("UsageData") or {}
    size = usage.get("Size")
    fields = {"Name": doc.get("Name") or "", "Driver": doc.get("Driver") or "local",
              "Scope": doc.get("Scope") or "local", "Mountpoint": doc.get("Mountpoint") or "",
              "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
              "Links": str(usage["RefCount"]) if usage.get("RefCount", -1) >= 0 and usage else "N/A",
              "Size": str(size) if isinstance(size, int) and size >= 0 else "N/A",
              "Group": "", "Availability": "N/A", "Status": "N/A"}
    return plain_row("*formatter.volumeContext", fields, labels)


def inspect_output(docs: list[Any], fmt: str | None, indent: int = 4) -> str:
    """What ``inspect -f`` prints: the template on each document, a newline after each (a key
    missing from a struct is an error, as docker's raw-JSON fallback with missingkey=error
    says); without a template, or with ``json``, the documents as an indented JSON list."""
    if not fmt or fmt == "json":
        import json

        return json.dumps(docs, indent=indent) + "\n"
    template = Template(fmt, document=True)
    return "".join(template.execute(doc) + "\n" for doc in docs)


def _custom_size(size: float, base: float, units: tuple[str, ...], precision: str) -> str:
    """go-units' CustomSize: ``size`` scaled by ``base`` and printed with C's ``%g`` precision."""
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return f"{size:{precision}}{units[i]}"


def bytes_size(size: float) -> str:
    """go-units' BytesSize (``1.5MiB``), docker's memory columns."""
    return _custom_size(float(size), 1024.0, ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"), ".4g")


def decimal_size(size: float) -> str:
    """go-units' HumanSizeWithPrecision(size, 3) (``4.26MB``), docker's I/O columns."""
    return _custom_size(float(size), 1000.0, ("B", "kB", "MB", "GB", "TB", "PB", "EB"), ".3g")


def stats_row(doc: dict[str, Any], container: str, previous: dict[str, Any] | None, trunc: bool = True) -> Struct:
    """``stats``'s row (docker's statsContext) from Docker's stats document; CPU % is measured
    against ``previous`` (the document before it: its ``precpu_stats`` when that is empty)."""
    cpu = doc.get("cpu_stats") or {}
    pre = (previous or {}).get("cpu_stats") or doc.get("precpu_stats") or {}
    cpu_delta = ((cpu.get("cpu_usage") or {}).get("total_usage") or 0) - \
        ((pre.get("cpu_usage") or {}).get("total_usage") or 0)
    system_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    cpus = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    cpu_percent = cpu_delta / system_delta * cpus * 100.0 if system_delta > 0 and cpu_delta > 0 else 0.0
    memory = doc.get("memory_stats") or {}
    stats = memory.get("stats") or {}
    # docker leaves the page cache out: inactive_file (v2) or total_inactive_file (v1)
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0)) or 0
    usage = max(0, (memory.get("usage") or 0) - (inactive if inactive < (memory.get("usage") or 0) else 0))
    limit = memory.get("limit") or 0
    networks = doc.get("networks") or {}
    rx = sum(n.get("rx_bytes") or 0 for n in networks.values())
    tx = sum(n.get("tx_bytes") or 0 for n in networks.values())
    read = write = 0
    for entry in (doc.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = str(entry.get("op") or "").lower()
        if op == "read":
            read += entry.get("value") or 0
        elif op == "write":
            write += entry.get("value") or 0
    full_id = doc.get("id") or ""
    fields = {"Container": container, "Name": (doc.get("name") or "").lstrip("/"),
              "ID": full_id[:12] if trunc else full_id, "CPUPerc": f"{cpu_percent:.2f}%",
              "MemUsage": f"{bytes_size(usage)} / {bytes_size(limit)}",
              "MemPerc": f"{usage / limit * 100.0:.2f}%" if limit else "0.00%",
              "NetIO": f"{decimal_size(rx)} / {decimal_size(tx)}",
              "BlockIO": f"{decimal_size(read)} / {decimal_size(write)}",
              "PIDs": str((doc.get("pids_stats") or {}).get("current") or 0)}
    return Struct("formatter.statsContext", fields)
