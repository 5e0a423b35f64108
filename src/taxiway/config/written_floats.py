"""Floats as the file wrote them, so messages quote the user's digits.

A parser turns ``memory = 12345678901234.567`` into the nearest double, which Python
prints as ``12345678901234.566``; ``99999999999999999999999.0`` prints as ``1e+23``.
A message that quotes either would name a number the user never wrote. So the parsers
note how each float was spelled where that differs from how Python prints it, the
normaliser works on `WrittenFloat` values that print as written, and the type check hands
the model plain floats again (msgspec, JSON and YAML writers accept nothing else).
"""

from __future__ import annotations

import math
from typing import Any


class WrittenFloat(float):
    """A float that messages print the way the config file wrote it.

    ``repr`` and f-strings give the written text; ``str`` stays the float's own, so a
    value made from it (an env value "1.5" from ``A = 1.50``) is what flyctl makes.
    """

    __slots__ = ("written",)

    def __new__(cls, value: float, written: str) -> WrittenFloat:
        self = super().__new__(cls, value)
        self.written = written
        return self

    def __getnewargs__(self) -> tuple[float, str]:  # copy and pickle keep the text
        return float(self), self.written

    def __repr__(self) -> str:
        return self.written

    def __format__(self, spec: str) -> str:
        return self.written if not spec else super().__format__(spec)

    def __str__(self) -> str:
        return float.__repr__(self)


class FloatTexts:
    """Collects, while a file is parsed, the spelling of each float Python prints otherwise."""

    def __init__(self) -> None:
        self.texts: dict[float, str] = {}

    def note(self, text: str, value: float) -> float:
        """Remember that ``value`` was written ``text``; returns ``value`` for the parser."""
        if math.isfinite(value) and text != repr(value):
            self.texts[value] = text
        return value

    def parse(self, text: str) -> float:
        """A ``parse_float`` for tomllib and json that notes what it reads."""
        return self.note(text, float(text))


def restore_written(data: Any, texts: dict[float, str]) -> None:
    """Replace, in place, each float of ``data`` that was written otherwise by a `WrittenFloat`.

    Walks tables and lists only (what a parsed config is made of); each one once, so
    shared YAML anchors and even recursive ones are fine.
    """
    if not texts:
        return
    seen: set[int] = set()
    pending = [data]
    while pending:
        container = pending.pop()
        if id(container) in seen:
            continue
        seen.add(id(container))
        keys = container.keys() if isinstance(container, dict) else range(len(container))
        for key in keys:
            value = container[key]
            if isinstance(value, dict | list):
                pending.append(value)
            elif type(value) is float and value in texts:
                container[key] = WrittenFloat(value, texts[value])


def plain(value: Any) -> Any:
    """``value`` with every `WrittenFloat` in it turned back into a plain float."""
    if isinstance(value, WrittenFloat):
        return float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
