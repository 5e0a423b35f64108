"""Drivers start a machine's processes: `process` (portable) and `namespace` (Linux, root)."""

from __future__ import annotations

from taxiway.errors import TaxiwayError
from taxiway.runtime.drivers.base import Driver


def select_driver(name: str) -> Driver:
    """The driver called ``name``. ``auto`` picks the namespace driver where it is fully
    usable (its machines also get a way out to the world), else the process driver."""
    from taxiway.runtime.drivers.process import ProcessDriver

    if name == "process":
        return ProcessDriver()
    if name == "auto":
        from taxiway.runtime.drivers.namespace import NamespaceDriver, fully_usable_reason

        return NamespaceDriver() if fully_usable_reason() is None else ProcessDriver()
    if name == "namespace":
        from taxiway.runtime.drivers.namespace import NamespaceDriver, ensure_usable

        ensure_usable()
        return NamespaceDriver()
    raise TaxiwayError(f"unknown driver {name!r}; use auto, process or namespace")


def release_leftovers(app: str) -> list[str]:
    """Clean up what a dead daemon of ``app`` left in namespaces and cgroups, whatever the
    driver of the next one (the last one may have used the namespace driver); the machines
    that still ran. Nothing to do where the namespace driver can't run."""
    from taxiway.runtime.drivers.namespace import NamespaceDriver, unusable_reason

    if unusable_reason() is not None:
        return []
    return NamespaceDriver().release_app(app)
