"""Building prometheus_client metric families the way the platform names them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taxiway.metrics.edge_counts import TIME_BOUNDS


def family(name: str, doc: str, kind: str) -> Any:
    """An empty family; samples are added with `sample` or `histogram`."""
    from prometheus_client.core import Metric

    return Metric(name, doc, kind)


def sample(fam: Any, labels: dict[str, str], value: float) -> None:
    fam.add_sample(fam.name, labels, value)


def histogram(fam: Any, labels: dict[str, str], counts: Sequence[int], total: float) -> None:
    """``counts``: per bucket of `TIME_BOUNDS` and +Inf, not cumulative."""
    running = 0
    for bound, n in zip((*TIME_BOUNDS, float("inf")), counts, strict=True):
        running += n
        le = "+Inf" if bound == float("inf") else repr(bound)
        fam.add_sample(fam.name + "_bucket", {**labels, "le": le}, running)
    fam.add_sample(fam.name + "_count", labels, running)
    fam.add_sample(fam.name + "_sum", labels, total)
