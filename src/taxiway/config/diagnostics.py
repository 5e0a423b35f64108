"""Diagnostics: what the config layer tells the user about their fly.toml.

Every problem found while reading, normalising or validating a config becomes one
`Diagnostic`: a severity, one sentence, the key path it concerns and, where the
file shows it, the line. Layers collect them in a `Diagnostics` list instead of
raising, so a user sees every problem of a file in one run.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Any

import msgspec

#: A key path into the config: table keys are strings, array positions integers.
KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    def __str__(self) -> str:
        return self.value


def format_path(path: KeyPath) -> str:
    """Render a key path the way a user reads it: ``services[0].ports[1].port``.

    Keys that are not bare TOML keys are quoted (``env."my.var"``).
    """
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
            continue
        key = part if _BARE_KEY.match(part) else '"' + part.replace('"', '\\"') + '"'
        out.append(("." if out else "") + key)
    return "".join(out)


class Diagnostic(msgspec.Struct, frozen=True):
    """One finding about a config."""

    severity: Severity
    message: str
    #: The key path in the normalised config (what `config show` prints and messages name).
    path: KeyPath = ()
    line: int | None = None
    #: Where the key is written in the file, when that differs from ``path`` (a ``[mounts]``
    #: table is ``mounts[0]`` once normalised); used to find ``line``, never shown.
    file_path: KeyPath | None = None

    @property
    def path_str(self) -> str:
        return format_path(self.path)

    def to_json(self) -> dict[str, object]:
        return {
            "severity": self.severity.value,
            "message": self.message,
            "path": self.path_str,
            "line": self.line,
        }


def in_file_order(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Diagnostics as a reader meets them: by line, then as found (a line has no column
    here); those without a line (the file as a whole) last."""
    return sorted(diagnostics, key=lambda d: (d.line is None, d.line or 0))


class Diagnostics:
    """An ordered collection of diagnostics with helpers to add them."""

    def __init__(self, items: Iterable[Diagnostic] = ()) -> None:
        self._items: list[Diagnostic] = list(items)

    def error(self, message: str, path: KeyPath = (), *, file_path: KeyPath | None = None) -> None:
        self._items.append(Diagnostic(Severity.ERROR, message, tuple(path), None, file_path))

    def warning(
        self, message: str, path: KeyPath = (), *, file_path: KeyPath | None = None
    ) -> None:
        self._items.append(Diagnostic(Severity.WARNING, message, tuple(path), None, file_path))

    def info(self, message: str, path: KeyPath = (), *, file_path: KeyPath | None = None) -> None:
        self._items.append(Diagnostic(Severity.INFO, message, tuple(path), None, file_path))

    def extend(self, other: Iterable[Diagnostic]) -> None:
        self._items.extend(other)

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self._items)

    def errors(self) -> list[Diagnostic]:
        return [d for d in self._items if d.severity is Severity.ERROR]

    def warnings(self) -> list[Diagnostic]:
        return [d for d in self._items if d.severity is Severity.WARNING]

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)


def describe_value(value: Any) -> str:
    """Name a value's kind for a message: 'the number 20', 'a table', …"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return f"the date/time {value.isoformat()}"
    return f"a {type(value).__name__}"
