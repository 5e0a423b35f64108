"""What `taxiway up` asks of the daemon: a light module, so client commands that start
a daemon (`up`, `deploy`) don't import the daemon's machinery to describe it. A msgspec
Struct rather than a dataclass: msgspec is loaded anyway, dataclasses costs `up` ~6 ms."""

from __future__ import annotations

import msgspec

#: What `--driver` and ``TAXIWAY_DRIVER`` may say (`taxiway.runtime.drivers.choose_driver`).
DRIVER_NAMES = ("auto", "process", "namespace", "docker")


class DaemonOptions(msgspec.Struct, frozen=True):
    """How `taxiway up` asked the daemon to run the app."""

    #: auto | process | namespace | docker (`taxiway.runtime.drivers.choose_driver`).
    driver: str = "auto"
    #: Where an explicit driver came from, for `status` to say why it runs:
    #: ``--driver`` or ``TAXIWAY_DRIVER``.
    driver_asked_by: str = "--driver"
    #: The address the edge's listeners bind (`up --edge-host`).
    edge_host: str = "127.0.0.1"
    #: Idle period before autostop stops a machine; None = the platform's schedule.
    autostop_after_s: float | None = None
    #: Where ``/metrics`` is also served on 127.0.0.1 (`up --metrics-port`); None: only
    #: on the API socket.
    metrics_port: int | None = None
