"""The platform's named machine sizes (``[[vm]] size``) and GPU kinds.

shared-cpu-Nx presets have N shared vCPUs and N × 256 MB; performance-Nx have N
dedicated vCPUs and N × 2 GB (fly-go `machine_types.go` presets; `fly platform
vm-sizes`). New machines with no ``[[vm]]`` get shared-cpu-1x.
"""

from __future__ import annotations

import msgspec


class Preset(msgspec.Struct, frozen=True):
    """One size's guest (a msgspec Struct, not a dataclass: the daemon's start-up
    would pay ~1 ms for the dataclasses module and the decorator's code generation)."""

    cpu_kind: str
    cpus: int
    memory_mb: int
    gpu_kind: str | None = None
    gpus: int = 0


PRESETS: dict[str, Preset] = {
    **{f"shared-cpu-{n}x": Preset("shared", n, n * 256) for n in (1, 2, 4, 8)},
    **{f"performance-{n}x": Preset("performance", n, n * 2048) for n in (1, 2, 4, 8, 16)},
    "a10": Preset("performance", 8, 32768, "a10", 1),
    "l40s": Preset("performance", 8, 32768, "l40s", 1),
    "a100-40gb": Preset("performance", 8, 32768, "a100-pcie-40gb", 1),
    "a100-80gb": Preset("performance", 8, 32768, "a100-sxm4-80gb", 1),
}

DEFAULT_PRESET = "shared-cpu-1x"
#: What a GPU machine gets when only ``gpu_kind`` is given.
DEFAULT_GPU_PRESET = "performance-8x"

GPU_KINDS = ("a10", "l40s", "a100-pcie-40gb", "a100-sxm4-80gb")
GPU_COUNTS = (1, 2, 4, 8)
CPU_COUNTS = (1, 2, 4, 8, 16)
