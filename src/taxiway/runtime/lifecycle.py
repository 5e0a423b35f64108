"""Machine states and the transitions between them, as on the platform.

Persistent states: created, started, stopped, suspended, failed; transient ones
while an action runs: starting, stopping, suspending, destroying, replacing;
terminal: destroyed (https://fly.io/docs/machines/machine-states/). The runtime moves a machine only
along these edges, so `status` never shows a state the platform couldn't.
"""

from __future__ import annotations

from enum import StrEnum

from taxiway.errors import TaxiwayError


class State(StrEnum):
    CREATED = "created"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    REPLACING = "replacing"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"
    FAILED = "failed"


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    S.CREATED: frozenset({S.STARTING, S.STOPPING, S.DESTROYING, S.REPLACING}),
    S.STARTING: frozenset({S.STARTED, S.FAILED, S.STOPPING, S.STOPPED}),
    S.STARTED: frozenset({S.STOPPING, S.SUSPENDING, S.DESTROYING, S.REPLACING, S.STOPPED}),
    S.STOPPING: frozenset({S.STOPPED, S.DESTROYING}),
    S.STOPPED: frozenset({S.STARTING, S.DESTROYING, S.REPLACING}),
    S.SUSPENDING: frozenset({S.SUSPENDED, S.STOPPING, S.STOPPED}),
    S.SUSPENDED: frozenset({S.STARTING, S.STARTED, S.STOPPING, S.DESTROYING}),
    S.REPLACING: frozenset({S.STARTING, S.STOPPED, S.FAILED}),
    S.FAILED: frozenset({S.STARTING, S.DESTROYING, S.REPLACING}),
    S.DESTROYING: frozenset({S.DESTROYED}),
    S.DESTROYED: frozenset(),
}

#: States in which a machine has (or is about to have) running processes.
RUNNING = frozenset({S.STARTING, S.STARTED, S.STOPPING, S.SUSPENDING, S.SUSPENDED})


class TransitionError(TaxiwayError):
    """An action that the machine's current state doesn't allow."""


def check_transition(machine_id: str, current: State, target: State) -> None:
    if target not in TRANSITIONS[current]:
        raise TransitionError(f"machine {machine_id} is {current}; it cannot become {target}")
