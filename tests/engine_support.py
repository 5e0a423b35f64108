"""Whether a Docker engine and the base images the docker driver's tests build on are here.

No registry is reachable from the test hosts, so base images are made locally
(`bash .ci/engine` makes ``debian:bookworm-slim`` and ``python:3.12-slim``;
`ensure_stand_in_node` makes ``node:20-slim``). A test that needs what is missing skips
and says what is missing and how to get it; it never fails for it. The docker SDK is
imported only when a test asks, so collecting the suite costs nothing without an engine.

    @requires_engine
    def test_x(): ...

    @requires_image("python:3.12-slim")
    def test_y(): ...
"""

from __future__ import annotations

import functools
import inspect
import io
import os
import tarfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    import docker

F = TypeVar("F", bound=Callable[..., Any])

#: What makes the engine and the base images on a host that can.
ENGINE_SCRIPT = "bash .ci/engine"
#: The label on everything these helpers create, for cleaning up by hand.
LABEL = {"taxiway.test": "engine-support"}
NODE_IMAGE = "node:20-slim"
#: The official node images run their command through an entrypoint script: a first
#: argument that is an option, or a script file that isn't executable, runs with node.
#: The stand-in does the same so a Dockerfile's CMD means what it means there.
_NODE_ENTRYPOINT = """#!/bin/sh
set -e
case "$1" in
    -*) set -- node "$@" ;;
    *) if [ -f "$1" ] && [ ! -x "$1" ]; then set -- node "$@"; fi ;;
esac
exec "$@"
"""
_NODE_DOCKERFILE = f"""FROM debian:bookworm-slim
RUN apt-get update \\
    && apt-get install -y --no-install-recommends nodejs \\
    && rm -rf /var/lib/apt/lists/*
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod +x /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["node"]
LABEL taxiway.stand-in="{NODE_IMAGE}"
"""


def _where() -> str:
    return os.environ.get("DOCKER_HOST") or "the default socket (/var/run/docker.sock)"


@functools.cache
def _client_or_problem() -> tuple[docker.DockerClient | None, str | None]:
    try:
        import docker
    except ImportError:
        return None, "the docker SDK is not installed (pip install 'docker>=7')"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except docker.errors.DockerException as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, f"no Docker engine answers at {_where()} ({first}); run `{ENGINE_SCRIPT}`"
    return client, None


def engine_problem_or_none() -> str | None:
    """Why the engine can't be used (one sentence), or None when it answers."""
    return _client_or_problem()[1]


def engine() -> docker.DockerClient:
    """The engine's client; skips the calling test when none answers."""
    client, problem = _client_or_problem()
    if client is None:
        pytest.skip(problem)
    return client


def image_problem_or_none(name: str) -> str | None:
    """Why the image ``name`` can't be used (no engine, or not on it), or None."""
    client, problem = _client_or_problem()
    if client is None:
        return problem
    import docker

    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return (
            f"the image {name} is not on the engine at {_where()} and no registry can be "
            f"reached to pull it; make the base images with `{ENGINE_SCRIPT}`"
        )
    return None


def _skipping_when(problem: Callable[[], str | None], test: F) -> F:
    """``test``, skipped with the reason when ``problem`` gives one at run time (not at
    collection: the engine is asked only by tests that run)."""
    if inspect.iscoroutinefunction(test):

        @functools.wraps(test)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            reason = problem()
            if reason is not None:
                pytest.skip(reason)
            return await test(*args, **kwargs)

        return run_async  # type: ignore[return-value]

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> Any:
        reason = problem()
        if reason is not None:
            pytest.skip(reason)
        return test(*args, **kwargs)

    return run  # type: ignore[return-value]


def requires_engine(test: F) -> F:
    """Decorator: the test skips, saying why, when no engine answers."""
    return _skipping_when(engine_problem_or_none, test)


def requires_image(name: str) -> Callable[[F], F]:
    """Decorator: the test skips, naming the image and `bash .ci/engine`, when ``name``
    is not on the engine (or there is no engine)."""

    def decorate(test: F) -> F:
        return _skipping_when(lambda: image_problem_or_none(name), test)

    return decorate


NGINX_IMAGE = "nginx:stable"
#: The official nginx image runs nginx in the foreground with its logs on the
#: container's output, takes its sites from /etc/nginx/conf.d/*.conf and stops on
#: SIGQUIT; the stand-in does the same with Debian's nginx-light.
_NGINX_DOCKERFILE = f"""FROM debian:bookworm-slim
RUN apt-get update \\
    && apt-get install -y --no-install-recommends nginx-light \\
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \\
    && ln -sf /dev/stdout /var/log/nginx/access.log \\
    && ln -sf /dev/stderr /var/log/nginx/error.log
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
LABEL taxiway.stand-in="{NGINX_IMAGE}"
"""


def _stand_in_problem(tag: str, what: str, files: list[tuple[str, str, int]]) -> str | None:
    """Build ``tag`` from ``files`` (name, text, mode) when the engine lacks it; why it
    can't be had, or None."""
    problem = image_problem_or_none(tag)
    if problem is None:
        return None
    problem = image_problem_or_none("debian:bookworm-slim")
    if problem is not None:
        return f"the stand-in for {tag} is built on debian:bookworm-slim: {problem}"
    import docker

    client, _ = _client_or_problem()
    assert client is not None
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text, mode in files:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    try:
        client.images.build(fileobj=context, custom_context=True, tag=tag, labels=LABEL, rm=True)
    except (docker.errors.BuildError, docker.errors.APIError) as e:
        return f"the stand-in for {tag} ({what} on debian:bookworm-slim) could not be built: {e}"
    return None


@functools.cache
def _node_problem() -> str | None:
    return _stand_in_problem(
        NODE_IMAGE,
        "Debian's nodejs",
        [
            ("Dockerfile", _NODE_DOCKERFILE, 0o644),
            ("docker-entrypoint.sh", _NODE_ENTRYPOINT, 0o755),
        ],
    )


@functools.cache
def _nginx_problem() -> str | None:
    return _stand_in_problem(
        NGINX_IMAGE, "Debian's nginx-light", [("Dockerfile", _NGINX_DOCKERFILE, 0o644)]
    )


def ensure_stand_in_nginx() -> str:
    """``nginx:stable`` on the engine, built when absent as a stand-in from
    ``debian:bookworm-slim`` and Debian's ``nginx-light`` (the real image can't be
    pulled here) that behaves like the official one where an app relies on it: nginx in
    the foreground, sites from /etc/nginx/conf.d, logs on the output. Returns the name;
    skips the calling test when it can't be had."""
    problem = _nginx_problem()
    if problem is not None:
        pytest.skip(problem)
    return NGINX_IMAGE


def node_image_problem_or_none() -> str | None:
    """Why ``node:20-slim`` can't be had, or None once it is on the engine (built as a
    stand-in when absent)."""
    return _node_problem()


def ensure_stand_in_node() -> str:
    """``node:20-slim`` on the engine, built when absent as a stand-in from
    ``debian:bookworm-slim`` and Debian's ``nodejs`` (18.x, not 20: the real image can't
    be pulled here), with the official image's entrypoint behaviour. Returns the name;
    skips the calling test when it can't be had."""
    problem = _node_problem()
    if problem is not None:
        pytest.skip(problem)
    return NODE_IMAGE


def skip_without_image(name: str) -> None:
    """Skip the calling test (or a module's autouse fixture) unless image ``name`` is on
    the engine, saying what is missing and how to make it."""
    problem = image_problem_or_none(name)
    if problem is not None:
        pytest.skip(problem)
