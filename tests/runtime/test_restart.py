"""Restart decisions: the platform's policies, exact retry counts, back-off and its reset."""

from __future__ import annotations

import random

import pytest

from taxiway.runtime.restart import (
    BACKOFF_CAP_S,
    DEFAULT_MAX_RETRIES,
    STABLE_AFTER_S,
    RestartState,
    decide,
)


def crash_loop(policy: str, retries: int | None, code: int = 1) -> list[float]:
    """Delays chosen for consecutive quick crashes until the supervisor gives up (max 50)."""
    state, delays = RestartState(), []
    for _ in range(50):
        d = decide(policy, retries, code, uptime_s=0.1, state=state, rng=random.Random(1))
        if not d.restart:
            break
        delays.append(d.delay_s)
    return delays


def test_no_never_restarts() -> None:
    assert crash_loop("no", None) == []


def test_on_failure_restarts_exactly_max_retries_times() -> None:
    assert len(crash_loop("on-failure", 3)) == 3
    assert len(crash_loop("on-failure", None)) == DEFAULT_MAX_RETRIES


def test_on_failure_does_not_restart_a_clean_exit() -> None:
    assert crash_loop("on-failure", 5, code=0) == []


@pytest.mark.parametrize("code", [0, 1, -9])
def test_always_restarts_whatever_the_exit(code: int) -> None:
    assert len(crash_loop("always", None, code=code)) == 50


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter() -> None:
    delays = crash_loop("always", None)
    assert delays[1] > delays[0] * 1.5
    assert max(delays) <= BACKOFF_CAP_S * 1.2
    assert delays[-1] >= BACKOFF_CAP_S
    assert len({round(d, 6) for d in crash_loop("always", None)[:3]}) == 3


def test_backoff_and_retry_count_reset_after_a_stable_run() -> None:
    state = RestartState()
    for _ in range(4):
        decide("on-failure", 5, 1, uptime_s=0.1, state=state)
    assert state.restarts == 4
    d = decide("on-failure", 5, 1, uptime_s=STABLE_AFTER_S + 1, state=state)
    assert d.restart
    assert state.restarts == 1  # counted afresh
    assert state.total_restarts == 5  # status still shows them all
    assert d.delay_s < 1.0


def test_reasons_are_sentences() -> None:
    state = RestartState(restarts=2)
    assert decide("on-failure", 2, 1, 0.1, state).reason == "gave up after 2 restarts (on-failure)"
    assert "restarting in" in decide("always", None, 0, 0.1, RestartState()).reason
