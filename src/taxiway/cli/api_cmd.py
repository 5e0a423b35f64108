"""`taxiway api token`: the Machines API's token for this app's state folder.

Printed alone on its line, so ``curl -H "Authorization: Bearer $(taxiway api token)"``
works; made on first use (here or by the daemon, whichever comes first), no daemon
needed. The API's address is in `taxiway status --json` (``api.url``).
"""

from __future__ import annotations

import argparse
import json
import sys

from taxiway.api.paths import AppPaths
from taxiway.config.loader import load_config


def api(args: argparse.Namespace) -> int:
    from taxiway.machines_api.token import api_token

    loaded = load_config(args.config)
    paths = AppPaths.for_config(loaded.source.path)
    paths.ensure()
    token = api_token(paths.state_dir)
    if args.json:
        json.dump({"token": token}, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(token)
    return 0
