"""``fly_volume_size_bytes`` and ``fly_volume_used_pct``: each volume's size (its
``size_gb``) and how much of it its folder fills.

A volume here is a folder on the host (`taxiway.state`), not a block device: "used" is
the size of the files in it, walked in a thread in the background (a large volume takes
a while) and read from the last walk by ``/metrics``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from taxiway.metrics import labels as std
from taxiway.metrics.families import family, sample

if TYPE_CHECKING:
    from taxiway.runtime.app import AppRuntime

GIB = 1024**3


class VolumeUsage:
    """The last measured bytes in each volume's folder."""

    def __init__(self) -> None:
        self.used: dict[str, int] = {}

    async def refresh(self, runtime: AppRuntime) -> None:
        volumes = runtime.store.list_volumes(runtime.app)
        if not volumes:  # no walk, and no worker thread, for an app without volumes
            self.used = {}
            return
        sizes = await asyncio.to_thread(lambda: [folder_bytes(v.path) for v in volumes])
        self.used = {v.id: n for v, n in zip(volumes, sizes, strict=True)}

    def families(self, runtime: AppRuntime) -> Iterator[Any]:
        size = family("fly_volume_size_bytes", "The volume's size", "gauge")
        used = family("fly_volume_used_pct", "Percent of the volume its files fill", "gauge")
        base = std.base(runtime.app, runtime.region)
        for volume in runtime.store.list_volumes(runtime.app):
            labels = {**base, "id": volume.id}
            total = volume.size_gb * GIB
            sample(size, labels, total)
            if volume.id in self.used and total:
                sample(used, labels, round(100 * self.used[volume.id] / total, 4))
        yield size
        yield used


def folder_bytes(path: str) -> int:
    """Bytes of the files under ``path`` (allocated blocks, as ``du`` counts them)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total
