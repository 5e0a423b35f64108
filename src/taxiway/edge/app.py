"""Everything the edge runs for one app: listeners, statics, TLS, autostop.

The daemon builds one `AppEdge` over the runtime's fleet. Heavier parts load only when
the config asks for them: the TLS module (and `cryptography`) for ports with the ``tls``
handler, UDP forwarding for ``protocol = "udp"``, the autostop loop for services that
stop or suspend idle machines.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from taxiway.edge.autostop import Autostop, services_from_specs
from taxiway.edge.fleet import Fleet
from taxiway.edge.server import Edge
from taxiway.edge.statics import Statics
from taxiway.metrics.edge_counts import EdgeCounts
from taxiway.plan.machine import MachineSpec, StaticSpec

if TYPE_CHECKING:
    from taxiway.edge.tls import TlsContexts

#: How often the platform's proxy looks for idle machines (see `taxiway.edge.autostop`).
PLATFORM_AUTOSTOP_INTERVAL_S = 300.0


class AppEdge:
    """The edge of one app, started and stopped with the daemon, rebuilt when a deploy
    changes the app's services or statics."""

    def __init__(
        self,
        fleet: Fleet,
        specs: Mapping[str, MachineSpec],
        *,
        base_dir: Path,
        certs_dir: Path,
        host: str = "127.0.0.1",
        private_hosts: Sequence[str] = (),
        autostop_after_s: float | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        """``private_hosts``: the app's flycast addresses (`taxiway.edge.server.Edge`)."""
        self.fleet = fleet
        self.base_dir = base_dir
        self.certs_dir = certs_dir
        self.host = host
        self.private_hosts = tuple(private_hosts)
        self.autostop_after_s = autostop_after_s
        self.log = log
        self._layout = _layout(specs)
        self._statics_layout = _statics_layout(specs)
        #: The traffic counts (`taxiway.metrics`), kept when a deploy rebuilds the edge.
        self.counts = EdgeCounts()
        self.edge, self.autostop = self._build(specs)
        self._autostop_task: asyncio.Task[None] | None = None

    def _build(self, specs: Mapping[str, MachineSpec]) -> tuple[Edge, Autostop | None]:
        fleet, log = self.fleet, self.log
        ports = [p for spec in specs.values() for s in spec.services for p in s.ports]
        self.statics = self._statics(specs)
        tls = None
        if any("tls" in p.handlers for p in ports):
            tls = _tls_contexts(self.certs_dir, fleet.app, log)
        udp = None
        if any(s.protocol == "udp" for spec in specs.values() for s in spec.services):
            from taxiway.edge.udp import UdpForwarder

            udp = UdpForwarder()
        edge = Edge(
            fleet,
            specs,
            host=self.host,
            private_hosts=self.private_hosts,
            tls=tls,
            statics=self.statics,
            udp=udp,
            counts=self.counts,
        )
        autostop = None
        services = [s for s in services_from_specs(specs.values()) if s.mode != "off"]
        if services:
            autostop = Autostop(
                fleet,
                services,
                load=edge.load,
                interval_s=self.autostop_after_s or PLATFORM_AUTOSTOP_INTERVAL_S,
                log=log,
            )
            edge.on_route = autostop.touch
        return edge, autostop

    def _statics(self, specs: Mapping[str, MachineSpec]) -> Statics | None:
        statics = _statics_of(specs)
        if not statics:
            return None
        return Statics(
            statics,
            app_dir=self.base_dir,
            workdir=_workdir(specs),
            rootfs=_rootfs(specs, self.base_dir),
            log=lambda m: self.log(f"statics: {m}"),
        )

    async def start(self) -> None:
        await self.edge.start()
        if self.autostop is not None:
            self._autostop_task = asyncio.get_running_loop().create_task(self.autostop.run())

    async def close(self) -> None:
        if self._autostop_task is not None:
            self._autostop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._autostop_task
            self._autostop_task = None
        await self.edge.close()

    async def reconfigure(self, specs: Mapping[str, MachineSpec]) -> bool:
        """Follow a deploy's config: when its services or ports differ, listeners are
        rebound (connections open at that moment are cut, as a changed port or handler
        can't carry them over); when only the statics differ (another image's files, with
        the docker driver at every deploy), the listeners stay and serve the new ones.
        Returns whether the listeners were rebound."""
        layout = _layout(specs)
        if layout == self._layout:
            statics_layout = _statics_layout(specs)
            if statics_layout != self._statics_layout:
                self._statics_layout = statics_layout
                self.statics = self._statics(specs)
                self.edge.use_statics(self.statics)
            return False
        self.log("services changed: the edge's listeners are rebound")
        await self.close()
        self._layout = layout
        self._statics_layout = _statics_layout(specs)
        self.edge, self.autostop = self._build(specs)
        await self.start()
        return True

    def bindings(self) -> list[dict]:
        return self.edge.bindings()

    async def drain(self, machine_id: str, timeout_s: float) -> None:
        await self.edge.drain(machine_id, timeout_s)


def _layout(specs: Mapping[str, MachineSpec]) -> bytes:
    """What the edge's listeners are built from: every group's services."""
    return msgspec.json.encode([(group, spec.services) for group, spec in sorted(specs.items())])


def _statics_layout(specs: Mapping[str, MachineSpec]) -> bytes:
    """What the statics are built from: every group's statics, and the WORKDIR and rootfs
    they map from (a deploy of another image copies its files out elsewhere)."""
    return msgspec.json.encode(
        [
            (group, spec.statics, spec.runs.workdir, spec.runs.rootfs)
            for group, spec in sorted(specs.items())
        ]
    )


def _tls_contexts(certs_dir: Path, app: str, log: Callable[[str], None]) -> TlsContexts:
    """The local CA's contexts; imported only for apps with a ``tls`` port (cryptography
    costs tens of milliseconds of start-up)."""
    from taxiway.edge.tls import TlsContexts, local_ca

    return TlsContexts(local_ca(certs_dir, log=log), app)


def _workdir(specs: Mapping[str, MachineSpec]) -> str | None:
    """The image's WORKDIR, where statics under it map to the app's folder (one image
    for every group)."""
    return next((spec.runs.workdir for spec in specs.values()), None)


def _rootfs(specs: Mapping[str, MachineSpec], base_dir: Path) -> Path | None:
    """Where the image's files are on this host (the first group's that says; one image
    for every group), a relative path taken from the app's folder; None: the app's folder
    is the image."""
    rootfs = next((spec.runs.rootfs for spec in specs.values() if spec.runs.rootfs), None)
    return base_dir / rootfs if rootfs else None


def _statics_of(specs: Mapping[str, MachineSpec]) -> list[StaticSpec]:
    """Every group's statics once: the edge serves them for the whole app."""
    seen: dict[tuple[str, str], StaticSpec] = {}
    for spec in specs.values():
        for static in spec.statics:
            seen.setdefault((static.url_prefix, static.guest_path), static)
    return list(seen.values())
