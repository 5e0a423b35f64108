"""`taxiway logs --since`: from a duration ago or from a moment, as a log timestamp.

Log lines carry UTC timestamps written one way (`taxiway.runtime.logs`: ISO 8601 with
milliseconds and a ``Z``), so a cutoff written the same way selects lines by a plain
string comparison, in the daemon and in the files alike.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from taxiway.errors import TaxiwayError


def since_cutoff(text: str, now: datetime | None = None) -> str:
    """The log timestamp from which ``--since TEXT`` shows lines: ``10m`` (a duration
    back from ``now``) or ``2026-12-03T12:00:00Z`` (a moment; one without a UTC offset
    is UTC, like the timestamps `logs` prints)."""
    from taxiway.config.units import UnitError, duration_seconds

    value = text.strip()
    try:
        seconds = duration_seconds(value)
    except UnitError:
        moment = _moment(value)
    else:
        if seconds < 0:
            raise TaxiwayError(f"--since {text} is negative; give how long back, like 10m")
        moment = (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise TaxiwayError(
            f"--since {value} is neither a duration nor a timestamp; write how long back, like "
            "10m or 1h30m, or a moment, like 2026-12-03T12:00:00Z"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
