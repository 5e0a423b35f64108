"""Line numbers for key paths, so diagnostics can say where in the file a problem is.

The parsers that read configs (tomllib, json, yaml.safe_load) return plain values
with no positions. `PositionIndex` reads the same text a second time and records,
for every key path, the line on which that key (or array element) is written.
It is only built for files that have diagnostics, and only after the real parser
accepted the text, so the scanners below may assume valid input; they still never
raise, because a missing line number is better than a crash while reporting.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from functools import cache

from taxiway.config.diagnostics import KeyPath

# Bare keys: TOML 1.0 allows [A-Za-z0-9_-]; accepting any other non-delimiter
# character as well keeps TOML 1.1's Unicode bare keys working and costs nothing.
_BARE_KEY = re.compile(r"""[^ \t\r\n=.\[\]{}"',#:]+""")
_BASIC = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"')
_LITERAL = re.compile(r"'[^'\n]*'")
# A multi-line string ends at the first unescaped triple quote; up to two more quotes
# right after it still belong to the content (`"""a"""""` is `a""`).
_ML_BASIC = re.compile(r'"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*"""(?:""|")?', re.S)
_ML_LITERAL = re.compile(r"'''[^']*(?:'(?!'')[^']*)*'''(?:''|')?")
# Numbers, booleans, dates and times (which may contain a space), JSON's null.
_SCALAR = re.compile(r"[^,\]}#\r\n]*")
_WS = re.compile(r"[ \t]*")
_WS_NL = re.compile(r"(?:[ \t\r\n]+|#[^\n]*)*")
_TO_EOL = re.compile(r"[^\n]*")
_ESCAPE = re.compile(r"\\(?:u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|x[0-9A-Fa-f]{2}|.)", re.S)
_ESCAPES = {
    "b": "\b",
    "t": "\t",
    "n": "\n",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    '"': '"',
    "\\": "\\",
    "/": "/",
}
_YAML_MERGE = "tag:yaml.org,2002:merge"


class PositionIndex:
    """Answers "on which line is this key path written?" for one config file's text."""

    __slots__ = ("_lines",)

    def __init__(self, lines: dict[KeyPath, int] | None = None) -> None:
        self._lines: dict[KeyPath, int] = lines if lines is not None else {}

    @classmethod
    def build(cls, text: str, fmt: str) -> PositionIndex:
        """Index `text`, which the parser for `fmt` ("toml", "json" or "yaml") accepted.

        Never raises for odd text: what could be indexed is kept, the rest answers None.
        An unknown `fmt` is a caller's bug and raises ValueError.
        """
        if fmt == "toml":
            return cls(_Scanner(text, json=False).document())
        if fmt == "json":
            lines = _yaml_lines(text)
            if lines is None:
                # PyYAML refuses some valid JSON (tabs before a token); JSON is simple
                # enough for the TOML scanner's value grammar to read it directly.
                lines = _Scanner(text, json=True).document()
            return cls(lines)
        if fmt in ("yaml", "yml"):
            return cls(_yaml_lines(text) or {})
        raise ValueError(f"unknown config format {fmt!r}")

    def line(self, path: KeyPath) -> int | None:
        """The 1-based line of `path`, else of its longest prefix in the file, else None.

        Falling back to a prefix lets a diagnostic about a key the file leaves out
        (a missing `internal_port`) point at the table that should have had it.
        """
        path = tuple(path)
        lines = self._lines
        for end in range(len(path), 0, -1):
            found = lines.get(path[:end])
            if found is not None:
                return found
        return None


def _unescape(match: re.Match[str]) -> str:
    """Decode one escape of a TOML basic string or a JSON string."""
    seq = match.group()
    if len(seq) > 2:
        return chr(int(seq[2:], 16))
    return _ESCAPES.get(seq[1], seq[1])


def _decode_basic(raw: str) -> str:
    """The value of a quoted key, as tomllib or json would give it."""
    if "\\" not in raw:
        return raw
    value = _ESCAPE.sub(_unescape, raw)
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        # JSON writes characters outside the BMP as two \u surrogate escapes.
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return value


class _Scanner:
    """A single forward pass over TOML (or JSON) text that records where keys are.

    It recognises just enough of the grammar to never mistake the inside of a
    string or comment for a key, and to count array elements and `[[tables]]`.
    JSON reuses the value grammar: objects are inline tables with `:` for `=`.
    """

    def __init__(self, text: str, *, json: bool) -> None:
        self.text = text
        self.json = json
        self.i = 1 if text.startswith("\ufeff") else 0
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.lines: dict[KeyPath, int] = {}
        # Paths defined by a header or as the last part of a key; a later explicit
        # definition beats a table that only appeared implicitly (`[a.b]` before `[a]`).
        self.explicit: set[KeyPath] = set()
        # Concrete path of each array of tables -> number of elements so far. The path
        # holds the parent's element index, so every new `[[services]]` starts its own
        # `services.ports` count.
        self.aot: dict[KeyPath, int] = {}

    def document(self) -> dict[KeyPath, int]:
        """Scan the whole text; on a surprise keep what was indexed so far."""
        try:
            if self.json:
                self.skip_ws_nl()
                self.value(())
            else:
                self.toml_document()
        except Exception:  # e.g. RecursionError on absurd nesting; a report must not crash
            pass
        return self.lines

    def put(self, path: KeyPath, pos: int, *, explicit: bool) -> None:
        line = bisect_left(self.newlines, pos) + 1
        if not explicit:
            self.lines.setdefault(path, line)
        elif self.json or path not in self.explicit:
            # Of duplicate JSON keys the last wins, as in json.loads; TOML forbids them,
            # and its `[[a]]` headers re-define `a` while its first header is `a`'s line.
            self.explicit.add(path)
            self.lines[path] = line

    def skip_ws(self) -> None:
        self.i = _WS.match(self.text, self.i).end()

    def skip_ws_nl(self) -> None:
        """Skip blanks, newlines and comments."""
        self.i = _WS_NL.match(self.text, self.i).end()

    def skip_gap(self) -> None:
        """Skip what may stand around `=` (TOML: blanks) or `:` (JSON: any whitespace)."""
        if self.json:
            self.skip_ws_nl()
        else:
            self.skip_ws()

    def at(self, chars: str) -> bool:
        return self.i < len(self.text) and self.text[self.i] in chars

    def toml_document(self) -> None:
        text = self.text
        table: KeyPath = ()
        while True:
            self.skip_ws_nl()
            start = self.i
            if start >= len(text):
                return
            if text[start] == "[":
                table = self.header()
            else:
                self.keyval(table)
            # Only blanks and a comment may follow on the line; if anything else is
            # left, the scanner lost track, and the next line is the place to resume.
            self.skip_ws()
            if not self.at("\r\n"):
                self.i = _TO_EOL.match(text, self.i).end()

    def header(self) -> KeyPath:
        """Read `[a.b]` or `[[a.b]]`; return the concrete path of the table it opens."""
        start = self.i
        array = self.text.startswith("[[", start)
        self.i += 2 if array else 1
        parts = self.key()
        self.skip_ws()
        self.i += 2 if array else 1
        path: KeyPath = ()
        for n, part in enumerate(parts):
            path += (part,)
            last = n == len(parts) - 1
            if last and array:
                count = self.aot.get(path, 0)
                self.aot[path] = count + 1
                self.put(path, start, explicit=True)
                path += (count,)
                self.put(path, start, explicit=True)
            else:
                self.put(path, start, explicit=last)
                # `[services.concurrency]` after `[[services]]` is in the LAST element.
                count = self.aot.get(path)
                if count:
                    path += (count - 1,)
        return path

    def key(self) -> list[str]:
        """Read a possibly dotted, possibly quoted key; blanks around dots allowed."""
        text = self.text
        parts: list[str] = []
        while True:
            self.skip_ws()
            i = self.i
            if i >= len(text):
                break
            char = text[i]
            if char == '"':
                match = _BASIC.match(text, i)
                if match is None:
                    break
                parts.append(_decode_basic(match.group()[1:-1]))
            elif char == "'":
                match = _LITERAL.match(text, i)
                if match is None:
                    break
                parts.append(match.group()[1:-1])
            else:
                match = _BARE_KEY.match(text, i)
                if match is None:
                    break
                parts.append(match.group())
            self.i = match.end()
            self.skip_ws()
            if not self.at("."):
                break
            self.i += 1
        return parts

    def keyval(self, table: KeyPath) -> None:
        """Read `key = value` (or JSON's `"key": value`) inside `table`."""
        start = self.i
        parts = self.key()
        if not parts:
            return
        path = table
        for n, part in enumerate(parts):
            path += (part,)
            self.put(path, start, explicit=n == len(parts) - 1)
        self.skip_gap()
        if self.at(":" if self.json else "="):
            self.i += 1
            self.skip_gap()
            self.value(path)

    def value(self, path: KeyPath) -> None:
        text = self.text
        i = self.i
        if i >= len(text):
            return
        char = text[i]
        if char == '"' or char == "'":
            self.skip_string()
        elif char == "[":
            self.array(path)
        elif char == "{":
            self.inline_table(path)
        else:
            self.i = _SCALAR.match(text, i).end()

    def skip_string(self) -> None:
        text, i = self.text, self.i
        if text.startswith('"""', i):
            pattern = _ML_BASIC
        elif text.startswith("'''", i):
            pattern = _ML_LITERAL
        elif text[i] == '"':
            pattern = _BASIC
        else:
            pattern = _LITERAL
        match = pattern.match(text, i)
        # An unterminated string cannot pass the real parser; give up on the rest.
        self.i = match.end() if match else len(text)

    def array(self, path: KeyPath) -> None:
        """Read `[v, v, ...]` over any number of lines, recording each element."""
        self.i += 1
        index = 0
        while True:
            self.skip_ws_nl()
            if self.i >= len(self.text) or self.at("]"):
                self.i += 1
                return
            start = self.i
            element = (*path, index)
            self.put(element, start, explicit=True)
            self.value(element)
            self.skip_ws_nl()
            if self.at(","):
                self.i += 1
                index += 1
            elif self.i == start or not self.at("]"):
                return

    def inline_table(self, path: KeyPath) -> None:
        """Read `{ k = v, ... }`; newlines are allowed, as TOML 1.1 and JSON do."""
        self.i += 1
        while True:
            self.skip_ws_nl()
            if self.i >= len(self.text) or self.at("}"):
                self.i += 1
                return
            start = self.i
            self.keyval(path)
            self.skip_ws_nl()
            if self.at(","):
                self.i += 1
            elif self.i == start or not self.at("}"):
                return


def _yaml_lines(text: str) -> dict[KeyPath, int] | None:
    """Key lines from PyYAML's node tree, or None if PyYAML cannot compose the text."""
    import yaml  # only needed for YAML and JSON files with diagnostics

    try:
        root = yaml.compose(text, Loader=_alias_keeping_loader())
    except Exception:  # YAMLError, or RecursionError on absurd nesting
        return None
    lines: dict[KeyPath, int] = {}
    if root is None:
        return lines
    # Aliases are leaves in this tree (see `_alias_keeping_loader`), so every node is
    # walked once: linear even for "billion laughs" documents.
    stack: list[tuple[yaml.Node, KeyPath]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*path, index)] = item.start_mark.line + 1
                stack.append((item, (*path, index)))
        elif isinstance(node, yaml.MappingNode):
            merged: list[tuple[str, int]] = []
            for key, value in node.value:
                name = _scalar_text(key)
                if name is None:
                    continue
                line = key.start_mark.line + 1
                if key.tag == _YAML_MERGE:
                    merged.extend((merged_name, line) for merged_name in _merged_keys(value))
                    continue
                lines[(*path, name)] = line
                stack.append((value, (*path, name)))
            # Keys brought in by `<<: *base` sit on the `<<` line unless written here.
            for merged_name, line in merged:
                lines.setdefault((*path, merged_name), line)
    return lines


@cache
def _alias_keeping_loader() -> type:
    """A SafeLoader whose composer keeps each `*alias` as a leaf at its own position.

    PyYAML's composer returns the anchored node itself for an alias, which puts the
    alias at the anchor's line and shares subtrees. A leaf that points at the anchored
    node (`.target`) keeps the alias's line and makes the walk a tree walk.
    """
    import yaml

    class AliasLeaf(yaml.Node):
        id = "alias"

        def __init__(self, target: yaml.Node, event: yaml.AliasEvent) -> None:
            super().__init__(target.tag, target.value, event.start_mark, event.end_mark)
            self.target = target

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                return AliasLeaf(super().compose_node(parent, index), event)
            return super().compose_node(parent, index)

    return Loader


def _target(node: object) -> object:
    """The node an alias leaf stands for; any other node itself."""
    return getattr(node, "target", node)


def _scalar_text(node: object) -> str | None:
    """A mapping key's text; None for keys that are sequences or mappings."""
    import yaml

    node = _target(node)
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _merged_keys(node: object) -> list[str]:
    """Names of the keys a YAML merge (`<<: *a` or `<<: [*a, *b]`) adds to a mapping."""
    import yaml

    names: list[str] = []
    pending = [node]
    seen: set[int] = set()
    while pending:
        current = _target(pending.pop())
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.SequenceNode):
            pending.extend(current.value)
        elif isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                name = _scalar_text(key)
                if name is None:
                    continue
                if _target(key).tag == _YAML_MERGE:
                    pending.append(value)
                else:
                    names.append(name)
    return names
