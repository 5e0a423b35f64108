"""When a machine's main process exits: restart it or not, and after how long.

The platform's policies
(https://fly.io/docs/machines/guides-examples/machine-restart-policy/): ``no`` never restarts;
``always`` restarts whatever the exit code; ``on-failure`` (the default) restarts
after a non-zero exit, at most ``max_retries`` (default 10) times. taxiway adds
what users of every process manager ask for: exponential back-off with jitter
and a cap, reset once the machine has stayed up for a while, so a crash loop
doesn't spin and a machine that crashes once a day isn't punished for last week.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    import random

DEFAULT_MAX_RETRIES = 10
BACKOFF_START_S = 0.5
BACKOFF_FACTOR = 2.0
BACKOFF_CAP_S = 30.0
#: Up this long without exiting and the next crash starts the back-off (and the retry count) over.
STABLE_AFTER_S = 60.0


class RestartState(msgspec.Struct):
    """What the supervisor remembers between exits of one machine."""

    restarts: int = 0  # restarts since the machine last stayed up STABLE_AFTER_S
    total_restarts: int = 0  # shown in status
    backoff_s: float = 0.0  # the last delay used (0 when none)


class Decision(msgspec.Struct, frozen=True):
    restart: bool
    delay_s: float
    reason: str


def decide(
    policy: str,
    max_retries: int | None,
    exit_code: int,
    uptime_s: float,
    state: RestartState,
    *,
    rng: random.Random | None = None,
) -> Decision:
    """Decide what happens after an exit, and update ``state`` for the next one."""
    if uptime_s >= STABLE_AFTER_S:
        state.restarts = 0
        state.backoff_s = 0.0
    if policy == "no":
        return Decision(False, 0.0, "restart policy is no")
    if policy == "on-failure":
        if exit_code == 0:
            return Decision(False, 0.0, "exited with code 0 (restart policy on-failure)")
        limit = max_retries or DEFAULT_MAX_RETRIES
        if state.restarts >= limit:
            return Decision(False, 0.0, f"gave up after {limit} restarts (on-failure)")
    if rng is None:
        import random  # only once a machine exits: a daemon's start-up does without (~1 ms)

        rng = random.Random()
    base = BACKOFF_START_S * BACKOFF_FACTOR**state.restarts
    delay = min(BACKOFF_CAP_S, base) * (1 + 0.2 * rng.random())
    state.restarts += 1
    state.total_restarts += 1
    state.backoff_s = delay
    return Decision(True, delay, f"restarting in {delay:.1f}s (restart {state.restarts})")
