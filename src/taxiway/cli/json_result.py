"""`--json` for scripts: one JSON document on stdout, everything for people on stderr.

One rule for every command: with ``--json`` stdout carries exactly one JSON value (the
command's result, printed when it succeeded), and whatever the command would print for a
person on the way (progress, build lines, a release command's output, notices) goes to
stderr, so `taxiway deploy --json | jq` sees nothing but the document. An error is still
one sentence on stderr with exit 1, and then stdout stays empty.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any


def print_json(data: Any, stream: Any = None) -> None:
    """``data`` as indented JSON, on stdout unless ``stream`` is given."""
    out = stream or sys.stdout
    json.dump(data, out, indent=2)
    out.write("\n")
    out.flush()


@contextlib.contextmanager
def people_to_stderr(enabled: bool) -> Iterator[Any]:
    """While the block runs (with ``enabled``, i.e. ``--json``), what it prints goes to
    stderr; yields the real stdout, where the block's result is printed."""
    real_stdout = sys.stdout
    if not enabled:
        yield real_stdout
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield real_stdout
