"""The daemon's metrics: one prometheus_client registry holding one collector that asks
each part (edge, machines, volumes, the app's endpoints) for its families when read.

Made by the daemon once the app runs (`taxiway.daemon`); ``/metrics`` on the API socket
and on ``up --metrics-port`` render it. The background task refreshes what is slow to
read (the app's endpoints, the engine's stats, volume folders) on the scrape interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from taxiway.metrics.docker_stats import DockerStats
from taxiway.metrics.instance import InstanceProbe
from taxiway.metrics.scraper import INTERVAL_S, Scraper
from taxiway.metrics.volumes import VolumeUsage

if TYPE_CHECKING:
    from taxiway.edge.server import Edge
    from taxiway.runtime.app import AppRuntime


class MetricsHub:
    """Every metric of one app, and the loop that refreshes the slow ones."""

    def __init__(
        self,
        runtime: AppRuntime,
        edge: Callable[[], Edge | None] = lambda: None,
        *,
        interval_s: float = INTERVAL_S,
        timeout_s: float | None = None,
    ) -> None:
        from prometheus_client.registry import CollectorRegistry

        self.runtime = runtime
        self.edge = edge
        self.interval_s = interval_s
        self.scraper = Scraper(timeout_s=timeout_s or min(10.0, interval_s))
        self.instances = InstanceProbe(runtime)
        if runtime.driver.name == "docker":
            self.instances.docker = DockerStats()
        self.volumes = VolumeUsage()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def refresh(self) -> None:
        """Scrape the app's endpoints, ask the engine, walk the volumes: once."""
        parts = [self.scraper.scrape_all(self.runtime), self.volumes.refresh(self.runtime)]
        if self.instances.docker is not None:
            parts.append(self.instances.docker.refresh(self.runtime))
        await asyncio.gather(*parts, return_exceptions=True)

    async def _refresh_loop(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval_s)

    def families(self) -> Iterator[Any]:
        from taxiway.metrics.edge_families import edge_families

        runtime = self.runtime
        edge = self.edge()
        groups = {
            m.id: m.info.group
            for m in runtime.machines.values()
            if m.info.state.value != "destroyed"
        }
        if edge is not None:
            yield from edge_families(
                edge.counts,
                app=runtime.app,
                region=runtime.region,
                groups=groups,
                load=edge.stats()["load"],
            )
        yield from self.instances.families()
        yield from self.volumes.families(runtime)
        yield from self.scraper.families(runtime.app, runtime.region)

    def render(self) -> bytes:
        """The text format of every metric, now."""
        from taxiway.metrics.exposition import render

        return render(self.registry.collect())


class _Collector:
    """A prometheus_client collector over the hub (families made when collected)."""

    def __init__(self, hub: MetricsHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Any]:
        return self.hub.families()

    def describe(self) -> list[Any]:
        return []  # nothing to check at registration: names are the platform's
