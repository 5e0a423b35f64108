"""Prometheus metrics with the platform's names: the edge's and the app's request counts,
each machine's resources, volumes, and the app's own ``[metrics]`` endpoint re-exported.

The edge counts into plain structs (`taxiway.metrics.edge_counts`) and nothing here is
imported at the CLI's start: ``prometheus_client`` loads with the first ``/metrics``
request (`taxiway.metrics.registry`). `snapshot` is the same picture as JSON, for the
dashboard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taxiway.runtime.app import AppRuntime


def snapshot(runtime: AppRuntime) -> dict[str, Any]:
    """Request rate inputs, latency quantiles and each machine's memory and CPU, as JSON
    data (`taxiway.metrics.snapshot_view`)."""
    from taxiway.metrics.snapshot_view import snapshot as take

    return take(runtime)
