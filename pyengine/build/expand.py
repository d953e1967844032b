"""Variable expansion in Dockerfile words, as BuildKit's shell lexer does it.

``expand`` turns one word into its value: ``$v``, ``${v}``, ``${v:-w}``, ``${v-w}``,
``${v:+w}``, ``${v+w}``, ``${v:?msg}``, ``${v?msg}``, ``${v#p}``, ``${v##p}``, ``${v%p}``,
``${v%%p}``, ``${v/p/r}``, ``${v//p/r}`` (the nested word ``w`` is itself expanded); single
quotes keep their contents literal, double quotes allow expansion, the escape character makes
the next character literal, and the quotes themselves are removed. Unset variables are empty.
``split_words`` does the same and splits the result on unquoted whitespace, ``expand_text``
expands only variables (heredoc bodies keep their quotes), and ``expand_pairs`` expands an
ENV/LABEL list against one environment. Pure functions; nothing here touches the host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pyengine.errors import DockerfileError

_SPECIAL_PARAMS = "*#@?-$!0"


class _Lexer:
    """One pass over ``text``; ``quotes`` False expands variables only (heredoc bodies)."""

    def __init__(self, text: str, lookup: Mapping[str, str], escape: str, quotes: bool = True):
        self.text = text
        self.pos = 0
        self.lookup = lookup
        self.escape = escape
        self.quotes = quotes

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _next(self) -> str:
        ch = self._peek()
        self.pos += 1 if ch else 0
        return ch

    def words(self, stop: str = "", split: bool = False, raw_escapes: bool = False) -> list[str]:
        """Process up to ``stop`` (consumed) or the end; split on unquoted blanks if asked."""
        words: list[str] = []
        current: list[str] = []
        in_word = False

        def add(value: str, quoted: bool) -> None:
            nonlocal in_word
            if not split or quoted:
                current.append(value)
                in_word = in_word or quoted or bool(value)
                return
            for ch in value:
                if ch.isspace():
                    if in_word:
                        words.append("".join(current))
                        current.clear()
                        in_word = False
                else:
                    current.append(ch)
                    in_word = True

        while True:
            ch = self._peek()
            if not ch:
                if stop:
                    raise DockerfileError("syntax error: missing '}'")
                break
            if stop and ch == stop:
                self._next()
                break
            if ch == self.escape and not raw_escapes:
                self._next()
                if not self._peek():
                    break
                if not self.quotes and self._peek() not in ("$", self.escape):
                    add(self.escape, True)
                    continue
                add(self._next(), True)
            elif ch == "'" and self.quotes:
                self._next()
                add(self._single_quoted(), True)
            elif ch == '"' and self.quotes:
                self._next()
                add(self._double_quoted(), True)
            elif ch == "$":
                add(self._dollar(), False)
            else:
                add(self._next(), False)
        if in_word or not split:
            words.append("".join(current))
        return words

    def _single_quoted(self) -> str:
        end = self.text.find("'", self.pos)
        if end < 0:
            raise DockerfileError("unexpected end of statement while looking for matching single-quote")
        value = self.text[self.pos:end]
        self.pos = end + 1
        return value

    def _double_quoted(self) -> str:
        out: list[str] = []
        while True:
            ch = self._peek()
            if not ch:
                raise DockerfileError(
                    "unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self._next()
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            self._next()
            if ch == self.escape and self._peek() in ('"', "$", self.escape) and self._peek():
                ch = self._next()
            out.append(ch)

    def _name(self) -> str:
        ch = self._peek()
        if ch.isdigit():
            start = self.pos
            while self._peek().isdigit():
                self._next()
            return self.text[start:self.pos]
        if ch and ch in _SPECIAL_PARAMS:
            return self._next()
        start = self.pos
        while self._peek() and (self._peek().isalnum() or self._peek() == "_"):
            self._next()
        return self.text[start:self.pos]

    def _get(self, name: str) -> tuple[str, bool]:
        if name in self.lookup:
            return self.lookup[name], True
        return "", False

    def _dollar(self) -> str:
        self._next()
        if self._peek() != "{":
            name = self._name()
            if not name:
                return "$"
            return self._get(name)[0]
        self._next()
        ch = self._peek()
        if not ch:
            raise DockerfileError("syntax error: missing '}'")
        if ch in "{}:":
            raise DockerfileError("syntax error: bad substitution")
        name = self._name()
        op = self._next()
        if op == "}":
            return self._get(name)[0]
        if not op:
            raise DockerfileError("syntax error: missing '}'")
        null_is_unset = False
        if op == ":":
            null_is_unset = True
            op = self._next()
            if op not in "+-?":
                raise DockerfileError(f"unsupported modifier (:{op}) in substitution")
        value, is_set = self._get(name)
        if op in "#%":
            longest = self._peek() == op
            if longest:
                self._next()
            pattern = self._nested(raw_escapes=True)
            return _remove_affix(value, pattern, suffix=op == "%", longest=longest)
        if op == "/":
            every = self._peek() == "/"
            if every:
                self._next()
            pattern = self._nested(stop="/", raw_escapes=True, allow_end="}")
            replacement = "" if self.text[self.pos - 1] == "}" else self._nested()
            return _replace(value, pattern, replacement, every)
        if op not in "+-?":
            raise DockerfileError(f"unsupported modifier ({op}) in substitution")
        word = self._nested()
        empty = not is_set or (null_is_unset and value == "")
        if op == "-":
            return word if empty else value
        if op == "+":
            return "" if empty else word
        if empty:
            reason = "is not allowed to be unset" if not is_set else "is not allowed to be empty"
            raise DockerfileError(f"{name}: {word or reason}")
        return value

    def _nested(self, stop: str = "}", raw_escapes: bool = False, allow_end: str = "") -> str:
        """The word of a modifier, expanded itself, up to ``stop`` (or ``allow_end``)."""
        if allow_end:
            # ``${v/pat}`` without a replacement ends at the brace instead of the slash.
            end = self._find_unnested(stop, allow_end)
            inner = _Lexer(self.text[self.pos:end], self.lookup, self.escape, self.quotes)
            value = inner.words(raw_escapes=raw_escapes)[0]
            self.pos = end + 1
            return value
        return self.words(stop=stop, raw_escapes=raw_escapes)[0]

    def _find_unnested(self, stop: str, end_char: str) -> int:
        depth = 0
        i = self.pos
        while i < len(self.text):
            ch = self.text[i]
            i += 1
            if ch == self.escape:
                i += 1
            elif ch == "{":
                depth += 1
            elif ch == "}" and depth:
                depth -= 1
            elif depth == 0 and ch in (stop, end_char):
                return i - 1
        raise DockerfileError("syntax error: missing '}'")


def _glob_regex(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _remove_affix(value: str, pattern: str, suffix: bool, longest: bool) -> str:
    regex = re.compile(_glob_regex(pattern), re.DOTALL)
    cuts = range(len(value) + 1)
    order = reversed(cuts) if longest else cuts
    for n in order:
        part = value[len(value) - n:] if suffix else value[:n]
        if regex.fullmatch(part):
            return value[:len(value) - n] if suffix else value[n:]
    return value


def _replace(value: str, pattern: str, replacement: str, every: bool) -> str:
    if not pattern:
        return value
    regex = re.compile(_glob_regex(pattern), re.DOTALL)
    return regex.sub(lambda _m: replacement, value, count=0 if every else 1)


def expand(word: str, lookup: Mapping[str, str], escape: str = "\\") -> str:
    """The value of one Dockerfile word: variables replaced, quotes and escapes removed.

    Raises DockerfileError (without a line; the caller places it) for a malformed
    substitution or an unterminated quote.
    """
    return _Lexer(word, lookup, escape).words()[0]


def split_words(text: str, lookup: Mapping[str, str], escape: str = "\\") -> list[str]:
    """``text`` expanded and split on unquoted whitespace (also inside expanded values)."""
    return _Lexer(text, lookup, escape).words(split=True)


def expand_text(text: str, lookup: Mapping[str, str], escape: str = "\\") -> str:
    """Variables only: quotes stay, ``\\$`` gives ``$`` (an unquoted heredoc's body)."""
    return _Lexer(text, lookup, escape, quotes=False).words()[0]


def expand_pairs(pairs: list[tuple[str, str]], lookup: Mapping[str, str],
                 escape: str = "\\") -> list[tuple[str, str]]:
    """Every key and value expanded against the same ``lookup``.

    This is why ``ENV a=x b=$a`` gives ``b`` the *old* ``a``: all pairs of one instruction
    see the environment from before it.
    """
    return [(expand(k, lookup, escape), expand(v, lookup, escape)) for k, v in pairs]


class Expander:
    """A word expander bound to one lookup, the form instructions' ``expand()`` takes.

    Calling it expands one word; ``text`` expands a heredoc body; ``words`` splits.
    """

    def __init__(self, lookup: Mapping[str, str], escape: str = "\\") -> None:
        self.lookup = lookup
        self.escape = escape

    def __call__(self, word: str) -> str:
        return expand(word, self.lookup, self.escape)

    def text(self, content: str) -> str:
        return expand_text(content, self.lookup, self.escape)

    def words(self, text: str) -> list[str]:
        return split_words(text, self.lookup, self.escape)
