"""Process groups: which exist, which is the default, and which items target which group.

On the platform each process group runs on its own machines. flyctl builds one
machine config per group from the items that target it (flyctl
`internal/appconfig/processgroups.go`, `machines.go`):

* an item with ``processes`` applies to exactly those groups;
* an item without ``processes`` applies **only to the default group** (``app`` if
  it exists, else the alphabetically first group) — except ``[[vm]]``, where an
  item without ``processes`` applies to every group without a more specific one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from taxiway.config.model import AppConfig

DEFAULT_GROUP = "app"


class _Targeted(Protocol):
    processes: list[str] | None


T = TypeVar("T", bound=_Targeted)


def group_names(config: AppConfig) -> list[str]:
    """The app's process groups, sorted; ``["app"]`` when there is no ``[processes]``."""
    if config.processes:
        return sorted(config.processes)
    return [DEFAULT_GROUP]


def default_group(config: AppConfig) -> str:
    names = group_names(config)
    return DEFAULT_GROUP if DEFAULT_GROUP in names else names[0]


def applies_to(item: _Targeted, group: str, default: str) -> bool:
    """Whether an item with a ``processes`` filter applies to ``group``."""
    if item.processes:
        return group in item.processes
    return group == default


def matching(items: Sequence[T] | None, group: str, default: str) -> list[tuple[int, T]]:
    """The items (with their index) that apply to ``group``."""
    return [(i, item) for i, item in enumerate(items or ()) if applies_to(item, group, default)]


def vm_for(items: Sequence[T] | None, group: str) -> tuple[int, T] | None:
    """The one ``[[vm]]`` entry ``group`` gets, as flyctl picks it: the last entry naming the
    group, else the first entry without ``processes``, else none. Entries are not merged."""
    entries = list(enumerate(items or ()))
    specific = [(i, v) for i, v in entries if v.processes and group in v.processes]
    if specific:
        return specific[-1]
    return next(((i, v) for i, v in entries if not v.processes), None)
