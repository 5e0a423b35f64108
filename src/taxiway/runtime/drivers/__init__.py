"""Drivers start a machine's processes: `process` today (portable); `namespace` next."""

from __future__ import annotations

from taxiway.errors import TaxiwayError
from taxiway.runtime.drivers.base import Driver


def select_driver(name: str) -> Driver:
    """The driver called ``name`` (``auto`` picks the best one available)."""
    from taxiway.runtime.drivers.process import ProcessDriver

    if name in ("auto", "process"):
        return ProcessDriver()
    raise TaxiwayError(f"unknown driver {name!r}; use auto or process")
