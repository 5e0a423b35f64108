"""The machine lifecycle follows the platform's state diagram."""

from __future__ import annotations

import pytest

from taxiway.runtime.ids import machine_id, ulid
from taxiway.runtime.lifecycle import State, TransitionError, check_transition


def test_machine_ids_look_like_the_platforms() -> None:
    ids = {machine_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 14 and all(c in "0123456789abcdef" for c in i) for i in ids)


def test_versions_are_sortable_ulids() -> None:
    a, b = ulid(1_700_000_000.0), ulid(1_700_000_001.0)
    assert len(a) == 26 and a < b
    assert set(a) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (State.CREATED, State.STARTING),
        (State.STARTING, State.STARTED),
        (State.STARTED, State.STOPPING),
        (State.STOPPING, State.STOPPED),
        (State.STOPPED, State.STARTING),
        (State.STARTED, State.SUSPENDING),
        (State.SUSPENDED, State.STARTING),
        (State.STOPPED, State.DESTROYING),
        (State.DESTROYING, State.DESTROYED),
    ],
)
def test_allowed_transitions(current: State, target: State) -> None:
    check_transition("d8d4017a0d1438", current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (State.DESTROYED, State.STARTING),
        (State.STOPPED, State.SUSPENDING),
        (State.CREATED, State.STARTED),
    ],
)
def test_refused_transitions_say_why(current: State, target: State) -> None:
    with pytest.raises(TransitionError) as info:
        check_transition("d8d4017a0d1438", current, target)
    assert str(info.value) == f"machine d8d4017a0d1438 is {current}; it cannot become {target}"
