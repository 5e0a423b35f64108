"""`taxiway dashboard`: the running app's web dashboard, opened in a browser."""

from __future__ import annotations

import argparse
import json
import os
import sys

from taxiway.cli.app_cmd import client_for


def dashboard(args: argparse.Namespace) -> int:
    client, app, _ = client_for(args.config)
    answer = client.request("GET", f"/v1/apps/{app}/dashboard")
    url = answer["url"]
    if args.json:  # one object on stdout, as every --json; browser notes go to stderr
        print(json.dumps({"app": app, "url": url, "port": answer["port"]}), flush=True)
    else:
        print(url, flush=True)
    if not args.no_open:
        _open(url)
    return 0


def _open(url: str) -> None:
    """Open the URL in the user's browser, if one can be found; never fail for want of one
    (a server, a container: the printed URL is the answer there)."""
    import webbrowser

    graphical = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if sys.platform.startswith("linux") and not graphical and not os.environ.get("BROWSER"):
        # without a display, webbrowser would run a text browser in this terminal
        print("no display here: open the address above in a browser", file=sys.stderr)
        return
    try:
        opened = webbrowser.open(url, new=2)
    except Exception:  # a broken browser setting must not turn into a failed command
        opened = False
    if not opened:
        print("no web browser found here: open the address above in one", file=sys.stderr)
