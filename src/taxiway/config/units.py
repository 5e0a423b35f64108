"""Units fly.toml values come in: durations, sizes and signals.

flyctl reads durations with Go's ``time.ParseDuration`` and sizes with docker's
``go-units``; taxiway accepts the same spellings so real configs load, and writes
them back in one canonical form (``"1m30s"``, ``"512mb"``) that both read.
"""

from __future__ import annotations

import math
import re

# --- durations ----------------------------------------------------------------

_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class UnitError(ValueError):
    """A value that does not parse as the unit it should be in; the message is for users."""


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration string (``"1m21s"``, ``"500ms"``, ``"1.5h"``) into nanoseconds."""
    s = text.strip()
    if not s:
        raise UnitError("an empty string is not a duration")
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise UnitError(
                f'"{text}" is not a duration; write a number with a unit, '
                'like "10s", "500ms" or "1m30s"'
            )
        total += float(m.group(1)) * _DURATION_UNITS_NS[m.group(2)]
        pos = m.end()
    return sign * round(total)


def format_duration_ns(ns: int) -> str:
    """Write nanoseconds as the shortest Go-style duration: ``90_000_000_000`` → ``"1m30s"``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns % 1_000_000_000 == 0:
        secs = ns // 1_000_000_000
        h, rest = divmod(secs, 3600)
        m, s = divmod(rest, 60)
        out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s else "")
        return sign + out
    for unit, size in (("ms", 1_000_000), ("us", 1_000)):
        if ns % size == 0:
            return f"{sign}{ns // size}{unit}"
    return f"{sign}{ns}ns"


def duration_seconds(text: str) -> float:
    """Seconds in a canonical duration string, for code that consumes the config."""
    return parse_duration_ns(text) / 1_000_000_000


# --- sizes ---------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)
_SIZE_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size_bytes(text: str, default_unit_bytes: int, *, base: int = 1024) -> int:
    """Parse ``"8gb"``, ``"512MB"``, ``"1GiB"`` or a bare number in ``default_unit_bytes``.

    flyctl reads memory like docker's ``RAMInBytes`` (binary: ``"1gb"`` is 1024 MB) and
    volume sizes like ``FromHumanSize`` (decimal: ``"1gb"`` is 1000 MB); ``base`` says
    which. As in both, an ``i`` (``"GiB"``) does not change the base.
    """
    m = _SIZE.match(text)
    if not m:
        raise UnitError(
            f'"{text}" is not a size; write a number with a unit, like "512mb" or "8gb"'
        )
    number, prefix, _binary, _b = m.groups()
    value = float(number)
    if not prefix and not _b:
        return math.floor(value * default_unit_bytes)
    return math.floor(value * base ** _SIZE_POWER[prefix.lower()])


MB = 1024 * 1024
GB = 1024 * MB
DECIMAL_GB = 1000**3


def parse_size_mb(value: str | int | float) -> int:
    """Memory-style size: bare numbers are megabytes."""
    if (isinstance(value, float) and not math.isfinite(value)) or (
        isinstance(value, int | float) and abs(value) > 1e12
    ):
        raise UnitError(f"{value} is not a usable size")
    if isinstance(value, bool):
        raise UnitError(f"{value!r} is not a size")
    if isinstance(value, int | float):
        return int(value)
    return parse_size_bytes(value, MB) // MB


#: The largest volume the platform makes, in GB: "The maximum volume size is 500GB"
#: (https://fly.io/docs/volumes/overview/#volume-size); it is also the ceiling of
#: ``auto_extend_size_limit``.
MAX_VOLUME_GB = 500


def parse_size_gb(value: str | int | float) -> float:
    """Volume-style size in decimal gigabytes: bare numbers are gigabytes, ``"500mb"`` is 0.5.
    May be fractional (``"15mb"`` → 0.015)."""
    if (isinstance(value, float) and not math.isfinite(value)) or (
        isinstance(value, int | float) and abs(value) > 1e12
    ):
        raise UnitError(f"{value} is not a usable size")
    if isinstance(value, bool):
        raise UnitError(f"{value!r} is not a size")
    if isinstance(value, int | float):
        return float(value)
    return parse_size_bytes(value, DECIMAL_GB, base=1000) / DECIMAL_GB


def format_size_mb(mb: int) -> str:
    """Canonical memory size: ``1024`` → ``"1gb"``, ``512`` → ``"512mb"``."""
    return f"{mb // 1024}gb" if mb and mb % 1024 == 0 else f"{mb}mb"


def format_size_gb(gb: float) -> str:
    """Canonical volume size: ``20`` → ``"20gb"``; fractions fall back to megabytes."""
    if float(gb).is_integer():
        return f"{int(gb)}gb"
    return f"{round(gb * 1000)}mb"


# --- signals ---------------------------------------------------------------------

#: The kill signals the reference lists for ``kill_signal``.
REFERENCE_SIGNALS = ("SIGINT", "SIGTERM", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGKILL", "SIGSTOP")
#: What the Machines API also accepts (``stop_config.signal``).
API_SIGNALS = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM")
KNOWN_SIGNALS = tuple(dict.fromkeys(REFERENCE_SIGNALS + API_SIGNALS))


def normalize_signal(text: str) -> str:
    """``"term"``/``"sigterm"`` → ``"SIGTERM"``; unknown names are returned upper-cased."""
    name = text.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    return name
