"""Skips for tests that need a Docker engine or a local base image, each with its reason
(`bash .ci/engine` makes both; CI runs it)."""

from __future__ import annotations

import functools

import pytest


@functools.cache
def engine_problem() -> str | None:
    """Why no engine can be used here, or None."""
    from taxiway.image.engine import engine_problem as problem

    return problem()


@functools.cache
def image_missing(name: str) -> str | None:
    """Why the image ``name`` can't be used here, or None."""
    problem = engine_problem()
    if problem is not None:
        return problem
    import docker

    try:
        docker.from_env().images.get(name)
    except docker.errors.ImageNotFound:
        return f"the image {name} is not in the engine (`bash .ci/engine` makes it)"
    return None


def requires_engine() -> pytest.MarkDecorator:
    problem = engine_problem()
    return pytest.mark.skipif(problem is not None, reason=f"needs a Docker engine: {problem}")


def requires_image(name: str) -> pytest.MarkDecorator:
    missing = image_missing(name)
    return pytest.mark.skipif(missing is not None, reason=f"needs {name}: {missing}")
