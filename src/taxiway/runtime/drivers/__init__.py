"""Drivers start a machine's processes: `process` (portable) and `namespace` (Linux, root)."""

from __future__ import annotations

from taxiway.errors import TaxiwayError
from taxiway.runtime.drivers.base import Driver


def select_driver(name: str) -> Driver:
    """The driver called ``name`` (``auto`` picks the best one available).

    ``auto`` stays ``process``: see the namespace driver's start-up figures in the
    report of its commit before changing that."""
    from taxiway.runtime.drivers.process import ProcessDriver

    if name in ("auto", "process"):
        return ProcessDriver()
    if name == "namespace":
        from taxiway.runtime.drivers.namespace import NamespaceDriver, ensure_usable

        ensure_usable()
        return NamespaceDriver()
    raise TaxiwayError(f"unknown driver {name!r}; use auto, process or namespace")
