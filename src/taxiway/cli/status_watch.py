"""`taxiway status --watch` and `taxiway top`: `status`, refreshed until Ctrl-C.

One status request per refresh (the daemon's ``GET …/status``, as `status` makes), so a
watch left open costs the daemon next to nothing. On a terminal each refresh redraws the
screen in place (cursor home, clear, the cursor hidden meanwhile and shown again on the
way out); into a pipe or a file the pictures follow one another separated by a blank
line, each under a header with the time, so the output can be logged. With ``--json``
each refresh is one compact `status --json` object on a line of its own.

When the daemon goes away (`taxiway down`, a crash) the watch says so and keeps asking:
the picture comes back once the app is up again. Ctrl-C (or SIGTERM) ends it with exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any, NoReturn

from taxiway.api.client import Client, DaemonNotRunning
from taxiway.errors import TaxiwayError

#: Cursor home, then erase to the end of the screen: one redraw with no blank flash.
REDRAW = "\033[H\033[J"
HIDE_CURSOR = "\033[?25l"
SHOW_CURSOR = "\033[?25h"

#: How long one status request may take before the picture says the daemon is stuck.
REQUEST_TIMEOUT_S = 10.0


def interval_seconds(text: str) -> float:
    """``--interval``: plain seconds (``2``, ``0.5``) or a duration (``500ms``)."""
    try:
        seconds = float(text)
    except ValueError:
        from taxiway.config.units import UnitError, duration_seconds

        try:
            seconds = duration_seconds(text)
        except UnitError:
            seconds = -1.0
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise TaxiwayError(
            f"--interval {text} is not a positive number of seconds; write it like 2, 0.5 or 500ms"
        )
    return seconds


def watch(args: argparse.Namespace) -> int:
    from taxiway.cli.app_cmd import client_for

    interval = interval_seconds(str(args.interval))
    _, app, paths = client_for(args.config)
    client = Client(paths.socket, timeout=REQUEST_TIMEOUT_S)
    out = sys.stdout
    on_terminal = not args.json and out.isatty()
    signal.signal(signal.SIGTERM, _stop)
    if on_terminal:
        out.write(HIDE_CURSOR)
    try:
        if args.json:
            _watch_json(client, app, interval)
        else:
            _watch_text(client, app, interval, on_terminal)
    except KeyboardInterrupt:
        pass
    finally:
        if on_terminal:
            with contextlib.suppress(OSError, ValueError):
                out.write(SHOW_CURSOR)
                out.flush()
    return 0


def _stop(signum: int, frame: Any) -> NoReturn:
    """SIGTERM ends a watch like Ctrl-C: the cursor comes back, exit 0."""
    raise KeyboardInterrupt


def _watch_text(client: Client, app: str, interval: float, on_terminal: bool) -> None:
    first = True
    while True:
        status, problem = _ask(client, app)
        picture = _picture(app, interval, status, problem)
        if on_terminal:
            sys.stdout.write(REDRAW + picture)
        else:
            sys.stdout.write(picture if first else "\n" + picture)
        sys.stdout.flush()
        first = False
        time.sleep(interval)


def _watch_json(client: Client, app: str, interval: float) -> None:
    said = None
    while True:
        status, problem = _ask(client, app)
        if status is not None:
            sys.stdout.write(json.dumps(status) + "\n")
            sys.stdout.flush()
        elif problem != said:  # once per change, not once per refresh
            print(f"taxiway: {problem}", file=sys.stderr, flush=True)
        said = problem
        time.sleep(interval)


def _ask(client: Client, app: str) -> tuple[dict[str, Any] | None, str | None]:
    """The app's status, or why there is none this time."""
    try:
        return client.request("GET", f"/v1/apps/{app}/status"), None
    except DaemonNotRunning:
        return None, f"taxiway is not running {app}; waiting for it (`taxiway up -d` starts it)"
    except (ConnectionError, ValueError):  # it went away mid-answer
        return None, f"taxiway's daemon for {app} went away; waiting for it to come back"
    except TaxiwayError as exc:
        return None, f"{exc}; asking again"


def _picture(app: str, interval: float, status: dict[str, Any] | None, problem: str | None) -> str:
    """One refresh: a header with the time, then what `status` prints (or the problem)."""
    from taxiway.cli.app_cmd import print_status

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    text = io.StringIO()
    text.write(f"{now}  taxiway status {app}, every {interval:g}s (Ctrl-C quits)\n\n")
    if status is None:
        text.write(f"{problem}\n")
    else:
        with contextlib.redirect_stdout(text):
            print_status(status)
    return text.getvalue()
