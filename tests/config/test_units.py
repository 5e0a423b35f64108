"""Units in fly.toml: Go durations, docker-style sizes and signal names.

flyctl reads durations with Go's ``time.ParseDuration`` and sizes with docker's
``go-units``; taxiway must read the same spellings the same way, and write them
back in a form both read again to the same value.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from taxiway.config.units import (
    GB,
    KNOWN_SIGNALS,
    MB,
    REFERENCE_SIGNALS,
    UnitError,
    duration_seconds,
    format_duration_ns,
    format_size_gb,
    format_size_mb,
    normalize_signal,
    parse_duration_ns,
    parse_size_bytes,
    parse_size_gb,
    parse_size_mb,
)

NS = 1
US = 1_000
MS = 1_000_000
S = 1_000_000_000
M = 60 * S
H = 60 * M

SizeParser = Callable[[str | int | float], float]


# --- durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1m21s", 81 * S),
        ("500ms", 500 * MS),
        ("1.5h", 90 * M),
        ("0", 0),
        ("0s", 0),
        ("10s", 10 * S),
        ("1m30s", 90 * S),
        ("1h2m3.5s", H + 2 * M + 3 * S + 500 * MS),
        ("2h45m", 2 * H + 45 * M),
        ("300ns", 300 * NS),
        ("1us", 1 * US),
        ("1µs", 1 * US),  # U+00B5 micro sign, as Go accepts
        ("1μs", 1 * US),  # U+03BC Greek mu, as Go accepts
        (".5s", 500 * MS),
        ("1.s", 1 * S),
        ("1.25m", 75 * S),
        ("+2s", 2 * S),
        ("-1s", -1 * S),
        ("-0", 0),
        ("  15s  ", 15 * S),
    ],
)
def test_parse_duration_reads_go_durations(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "10",  # a bare number in a string has no unit (only "0" may omit it)
        "0.0",
        "abc",
        "s",
        "10x",
        "1d",  # Go has no day unit
        "1S",  # units are case-sensitive in Go
        "1MS",
        "1s2",
        "1 s",
        "1m 2s",
        "--1s",
        "1e3s",
        "ten seconds",
    ],
)
def test_parse_duration_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(UnitError):
        parse_duration_ns(text)


def test_duration_error_message_names_the_value_and_shows_examples() -> None:
    with pytest.raises(UnitError) as info:
        parse_duration_ns("10x")
    message = str(info.value)
    assert '"10x" is not a duration' in message
    assert '"10s"' in message


def test_empty_duration_has_its_own_message() -> None:
    with pytest.raises(UnitError, match="empty string is not a duration"):
        parse_duration_ns("")


def test_unit_error_is_a_value_error() -> None:
    assert issubclass(UnitError, ValueError)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (999, "999ns"),
        (1 * US, "1us"),
        (1500, "1500ns"),
        (1 * MS, "1ms"),
        (500 * MS, "500ms"),
        (1500 * US, "1500us"),
        (1500 * MS, "1500ms"),
        (1 * S, "1s"),
        (59 * S, "59s"),
        (60 * S, "1m"),
        (81 * S, "1m21s"),
        (90 * S, "1m30s"),
        (H, "1h"),
        (90 * M, "1h30m"),
        (H + M + S, "1h1m1s"),
        (H + 5 * S, "1h5s"),
        (24 * H, "24h"),
        (-5 * S, "-5s"),
        (-500 * MS, "-500ms"),
    ],
)
def test_format_duration_is_canonical(ns: int, text: str) -> None:
    assert format_duration_ns(ns) == text


@pytest.mark.parametrize(
    "ns",
    [
        0,
        1,
        7,
        999,
        1000,
        1001,
        1500,
        MS,
        1500 * US,
        2 * S + 1,
        59 * S,
        61 * S,
        H - 1,
        3 * H + 7 * MS,
    ],
)
def test_format_then_parse_gives_the_same_nanoseconds(ns: int) -> None:
    assert parse_duration_ns(format_duration_ns(ns)) == ns
    assert parse_duration_ns(format_duration_ns(-ns)) == -ns


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("90s", "1m30s"),
        ("1.5h", "1h30m"),
        ("0.5s", "500ms"),
        ("60m", "1h"),
        ("1m21s", "1m21s"),
        ("3600000ms", "1h"),
        ("1000us", "1ms"),
        ("0", "0s"),
    ],
)
def test_parse_then_format_writes_one_canonical_spelling(text: str, canonical: str) -> None:
    assert format_duration_ns(parse_duration_ns(text)) == canonical
    # The canonical form is itself stable.
    assert format_duration_ns(parse_duration_ns(canonical)) == canonical


@pytest.mark.parametrize(
    ("text", "seconds"), [("1m30s", 90.0), ("500ms", 0.5), ("0", 0.0), ("2h", 7200.0)]
)
def test_duration_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


# --- sizes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mb"),
    [
        ("8gb", 8192),
        ("512mb", 512),
        ("512MB", 512),
        ("512Mb", 512),
        ("512m", 512),
        ("512 mb", 512),
        ("1GiB", 1024),
        ("1gib", 1024),
        ("1gb", 1024),  # binary multiples, like docker's RAMInBytes
        ("2g", 2048),
        ("1.5gb", 1536),
        ("1tb", 1024 * 1024),
        ("1024k", 1),
        ("1024", 1024),  # a bare number in a string is megabytes
        (512, 512),
        (1024, 1024),
        (256.0, 256),
    ],
)
def test_parse_size_mb(value: str | int | float, mb: int) -> None:
    assert parse_size_mb(value) == mb


@pytest.mark.parametrize(
    ("value", "gb"),
    [
        ("8gb", 8.0),
        ("20GB", 20.0),
        ("1GiB", 1.0),
        ("500mb", 0.5),  # volume sizes are decimal, as flyctl reads them
        ("1500mb", 1.5),
        ("1000mb", 1.0),
        ("1tb", 1000.0),
        ("10", 10.0),  # a bare number in a string is gigabytes for volumes
        (10, 10.0),
        (1.5, 1.5),
    ],
)
def test_parse_size_gb(value: str | int | float, gb: float) -> None:
    assert parse_size_gb(value) == gb


def test_parse_size_gb_keeps_fractions_below_one_gigabyte() -> None:
    assert parse_size_gb("15mb") == pytest.approx(0.015)


def test_parse_size_bytes_uses_the_default_unit_only_for_bare_numbers() -> None:
    assert parse_size_bytes("3", MB) == 3 * MB
    assert parse_size_bytes("3", GB) == 3 * GB
    assert parse_size_bytes("3mb", GB) == 3 * MB
    assert parse_size_bytes("3b", GB) == 3  # "b" alone: bytes, not the default unit


@pytest.mark.parametrize(
    "value",
    ["", "big", "-1gb", "1xb", "1gbb", "1 0gb", "1e3", "gb", "1,5gb", "0x10"],
)
@pytest.mark.parametrize("parse", [parse_size_mb, parse_size_gb])
def test_sizes_reject_bad_strings(value: str, parse: SizeParser) -> None:
    with pytest.raises(UnitError, match="is not a size"):
        parse(value)


@pytest.mark.parametrize("parse", [parse_size_mb, parse_size_gb])
@pytest.mark.parametrize("value", [True, False])
def test_sizes_reject_booleans(parse: SizeParser, value: bool) -> None:
    # bool is an int in Python; memory = true must not read as 1 MB.
    with pytest.raises(UnitError):
        parse(value)


@pytest.mark.parametrize(
    ("mb", "text"),
    [(256, "256mb"), (512, "512mb"), (1024, "1gb"), (1536, "1536mb"), (2048, "2gb"), (8192, "8gb")],
)
def test_format_size_mb(mb: int, text: str) -> None:
    assert format_size_mb(mb) == text


@pytest.mark.parametrize(
    ("gb", "text"),
    [(1, "1gb"), (20, "20gb"), (20.0, "20gb"), (0.5, "500mb"), (1.5, "1500mb")],
)
def test_format_size_gb(gb: float, text: str) -> None:
    assert format_size_gb(gb) == text


@pytest.mark.parametrize("mb", [1, 255, 256, 300, 512, 1000, 1024, 1536, 4096, 16384])
def test_memory_sizes_round_trip(mb: int) -> None:
    assert parse_size_mb(format_size_mb(mb)) == mb


@pytest.mark.parametrize("gb", [1, 3, 10, 20, 500, 0.5, 1.5, 2.25])
def test_volume_sizes_round_trip(gb: float) -> None:
    assert parse_size_gb(format_size_gb(gb)) == gb


@pytest.mark.parametrize("text", ["8gb", "512mb", "1GiB", "1536MB", "2g"])
def test_memory_size_spellings_settle_on_one_form(text: str) -> None:
    canonical = format_size_mb(parse_size_mb(text))
    assert format_size_mb(parse_size_mb(canonical)) == canonical
    assert parse_size_mb(canonical) == parse_size_mb(text)


# --- signals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("SIGTERM", "SIGTERM"),
        ("sigterm", "SIGTERM"),
        ("term", "SIGTERM"),
        ("TERM", "SIGTERM"),
        ("  int ", "SIGINT"),
        ("Sigkill", "SIGKILL"),
        ("usr1", "SIGUSR1"),
        ("hup", "SIGHUP"),
    ],
)
def test_normalize_signal(text: str, signal: str) -> None:
    assert normalize_signal(text) == signal


def test_normalize_signal_upper_cases_unknown_names() -> None:
    assert normalize_signal("foo") == "SIGFOO"
    assert normalize_signal("SIGFOO") not in KNOWN_SIGNALS


def test_reference_signals_are_the_ones_the_reference_lists() -> None:
    assert set(REFERENCE_SIGNALS) == {
        "SIGINT",
        "SIGTERM",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGKILL",
        "SIGSTOP",
    }
    assert set(REFERENCE_SIGNALS) <= set(KNOWN_SIGNALS)
    assert "SIGHUP" in KNOWN_SIGNALS  # the Machines API accepts it too
    assert len(KNOWN_SIGNALS) == len(set(KNOWN_SIGNALS))
