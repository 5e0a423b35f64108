"""Printing diagnostics for people: ``file:line: severity: path: message``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TextIO

from taxiway.config.diagnostics import Diagnostic, Severity, in_file_order

_COLORS = {Severity.ERROR: "31", Severity.WARNING: "33", Severity.INFO: "36"}


def use_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty()


def format_diagnostic(d: Diagnostic, filename: str, color: bool = False) -> str:
    where = f"{filename}:{d.line}" if d.line else filename
    severity = d.severity.value
    if color:
        severity = f"\033[{_COLORS[d.severity]}m{severity}\033[0m"
    return f"{where}: {severity}: {d.message}"


def print_diagnostics(
    diagnostics: Iterable[Diagnostic], filename: str, stream: TextIO | None = None
) -> None:
    out = stream or sys.stderr
    color = use_color(out)
    for d in in_file_order(diagnostics):
        print(format_diagnostic(d, filename, color), file=out)
