"""Fixtures for the image tests: a real Docker engine and base image, or a skip saying
which is missing; a unique scope per test whose images are removed afterwards."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from image_apps import BASE_IMAGE, remove_scope

from taxiway.image.engine import engine_problem


@pytest.fixture(scope="session")
def engine_ready() -> None:
    problem = engine_problem(timeout=3.0)
    if problem:
        pytest.skip(f"needs a Docker engine: {problem}")
    import docker.errors

    from taxiway.image.engine import client

    try:
        client().images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"needs the base image {BASE_IMAGE} (`bash .ci/engine` makes it)")


@pytest.fixture
def scope(engine_ready: None) -> Iterator[str]:
    """A scope no other test or checkout uses; its images and containers go afterwards."""
    value = f"t-{secrets.token_hex(4)}"
    yield value
    remove_scope(value)
