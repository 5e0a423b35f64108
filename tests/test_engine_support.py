"""The engine helpers: a missing engine or image is a skip that says what to do, and the
node stand-in runs commands as the official image does."""

from __future__ import annotations

import inspect
import uuid

import pytest

from engine_support import (
    LABEL,
    engine,
    ensure_stand_in_node,
    image_problem_or_none,
    requires_engine,
    requires_image,
)

MISSING = f"taxiway-no-such-image-{uuid.uuid4().hex[:8]}:0"


@requires_engine
def test_a_missing_image_is_named_with_the_way_to_make_it() -> None:
    problem = image_problem_or_none(MISSING)
    assert problem is not None and MISSING in problem and "bash .ci/engine" in problem


def test_requires_image_skips_with_the_reason_when_the_test_runs() -> None:
    ran: list[bool] = []
    test = requires_image(MISSING)(lambda: ran.append(True))
    with pytest.raises(pytest.skip.Exception) as skipped:
        test()
    assert ran == []
    assert MISSING in str(skipped.value) or "engine" in str(skipped.value)


def test_the_decorators_keep_the_tests_fixtures() -> None:
    def needs(tmp_path, monkeypatch) -> None: ...

    async def needs_async(tmp_path) -> None: ...

    assert list(inspect.signature(requires_engine(needs)).parameters) == ["tmp_path", "monkeypatch"]
    wrapped = requires_image("x")(needs_async)
    assert inspect.iscoroutinefunction(wrapped)
    assert list(inspect.signature(wrapped).parameters) == ["tmp_path"]


@requires_engine
def test_the_node_stand_in_runs_a_script_and_bare_options_with_node() -> None:
    image = ensure_stand_in_node()
    client = engine()
    run = {"remove": True, "labels": LABEL}
    assert client.containers.run(image, ["node", "-e", "console.log('hi')"], **run) == b"hi\n"
    # As in the official image: an option alone runs with node.
    assert client.containers.run(image, ["-e", "console.log(6 * 7)"], **run) == b"42\n"
    assert client.images.get(image).attrs["Config"]["Entrypoint"] == ["docker-entrypoint.sh"]
