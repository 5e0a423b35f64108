"""A check's status as the platform reports it (Consul heritage: passing/warning/critical).

Before a check's first result (during its grace period, or right after the machine
started) its status is ``warning``: not known to pass, not known to fail. Only
``passing`` counts as passing, so a service is not routed to until its checks have
passed once — the platform's "we won't start routing traffic to a new one until it proves
it's alive" (fly.io/docs/blueprints/seamless-deployments). A failed run is ``critical``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

#: A check from a service (routes) or from the top-level ``[checks]`` (informational).
CheckKind = Literal["service", "machine"]

#: The longest output kept for a check (a body excerpt or an error), in characters.
MAX_OUTPUT = 512


class CheckStatus(enum.StrEnum):
    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one run of a check."""

    status: CheckStatus
    output: str

    @property
    def passing(self) -> bool:
        return self.status is CheckStatus.PASSING


@dataclass(slots=True)
class CheckState:
    """What is known of one check of one machine."""

    name: str
    kind: CheckKind
    type: str
    port: int | None
    status: CheckStatus = CheckStatus.WARNING
    output: str = ""
    #: When the status last changed (as `fly checks list` shows it), not the last run.
    updated_at: str = ""
    consecutive_failures: int = 0

    def record(self, result: CheckResult) -> bool:
        """Take a run's result; True when the status changed."""
        changed = result.status is not self.status
        self.output = trim(result.output)
        if result.passing:
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
        if changed:
            self.status = result.status
            self.updated_at = now_iso()
        return changed

    def reset(self, output: str) -> bool:
        """Back to "not known yet" (machine started or stopped); True when the status changed."""
        changed = self.status is not CheckStatus.WARNING
        self.status = CheckStatus.WARNING
        self.output = output
        self.consecutive_failures = 0
        if changed or not self.updated_at:
            self.updated_at = now_iso()
        return changed

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "type": self.type,
            "port": self.port,
            "status": self.status.value,
            "output": self.output,
            "updated_at": self.updated_at,
            "consecutive_failures": self.consecutive_failures,
        }


def trim(text: str, limit: int = MAX_OUTPUT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summary_text(counts: dict[str, int]) -> str:
    """A machine's checks as `status --json` counts them, in words: ``2/3 passing, 1
    critical``, or ``-`` for a machine without checks (as the platform's `fly status`
    counts them). `taxiway status` and the dashboard both say it so."""
    total = counts.get("total", 0)
    if not total:
        return "-"
    text = f"{counts.get('passing', 0)}/{total} passing"
    for status in ("warning", "critical"):
        if counts.get(status):
            text += f", {counts[status]} {status}"
    return text
