"""The labels the platform puts on every series: ``app``, ``region``, ``host`` and, on a
machine's series, ``instance`` (the machine id) and ``process_group``
(https://fly.io/docs/monitoring/metrics/). ``fly_edge_*`` and ``fly_volume_*`` series
have no ``instance``."""

from __future__ import annotations

import hashlib
import socket
from functools import cache


@cache
def host_id() -> str:
    """This host as the platform names a server in ``host``: four hex characters, here
    taken from the host name so they stay the same across restarts."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:4]


def base(app: str, region: str) -> dict[str, str]:
    """The labels of an app-wide series (the edge's, a volume's)."""
    return {"app": app, "region": region, "host": host_id()}


def machine(app: str, region: str, instance: str, group: str) -> dict[str, str]:
    """The labels of one machine's series."""
    return {**base(app, region), "instance": instance, "process_group": group}
