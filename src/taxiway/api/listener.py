"""The daemon's API socket, bound without an event loop.

`up -d`'s daemon can report its machines started before it has imported asyncio
(`taxiway.runtime.early`); its socket is listening by then, so a `taxiway status` run
right after `up -d` waits in the socket's backlog for the API instead of finding no
daemon. The API server serves the socket once the loop runs (`taxiway.api.server`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def listen_unix(path: Path) -> socket.socket:
    """A unix socket listening at ``path``, private to its owner (0600) from the start."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        previous = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(previous)
        os.chmod(path, 0o600)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock
