"""A multi-container machine's start order: a container that `depends_on` another
starts once that one is started, healthy (its exec health check passes) or exited
successfully, as the platform's init orders them
(https://fly.io/docs/machines/guides-examples/multi-container-machines/); and the image a
sidecar names, pulled when the engine doesn't have it.
"""

from __future__ import annotations

import shlex
import threading
import time
from typing import Any

from taxiway.image.engine import EngineError, client
from taxiway.runtime.drivers.base import ContainerLaunch, DriverError


def engine_api(what: str) -> Any:
    """The engine's low-level client, or DriverError naming ``what``."""
    try:
        return client().api
    except EngineError as exc:
        raise DriverError(f"{what}: {exc}") from None



#: How long a container waits for what it depends on to be healthy or to have exited.
DEPENDENCY_TIMEOUT_S = 120.0


def await_condition(
    container_id: str, dep: ContainerLaunch, condition: str, waiting: str, who: str
) -> None:
    """Block until container ``dep`` is healthy (its exec check exits 0) or has exited
    0, as ``condition`` says; DriverError when it can't be, or not in time."""
    api = engine_api(who)
    deadline = time.monotonic() + DEPENDENCY_TIMEOUT_S
    if condition == "exited_successfully":
        try:
            code = int(api.wait(container_id, timeout=DEPENDENCY_TIMEOUT_S).get("StatusCode", -1))
        except Exception:
            code = None
        if code != 0:
            ended = "did not exit in time" if code is None else f"exited with code {code}"
            raise DriverError(
                f"{who}: container {dep.name} {ended}, and container {waiting} starts only "
                "once it exited successfully"
            )
        return
    if not dep.health:
        raise DriverError(
            f"{who}: container {waiting} waits for {dep.name} to be healthy, but {dep.name} "
            "has no exec health check; add one or depend on it being started"
        )
    while True:
        if _passes(api, container_id, dep.health, dep.health_timeout_s):
            return
        running = api.inspect_container(container_id).get("State", {}).get("Running")
        if not running or time.monotonic() > deadline:
            why = "exited" if not running else f"not healthy after {DEPENDENCY_TIMEOUT_S:g}s"
            raise DriverError(
                f"{who}: container {dep.name} {why} ({shlex.join(dep.health)} did not pass), "
                f"and container {waiting} waits for it to be healthy"
            )
        time.sleep(1.0)


def _passes(api: Any, container_id: str, argv: list[str], timeout_s: float) -> bool:
    """Whether the exec check ``argv`` exits 0 in the container (within ``timeout_s``)."""
    result: dict[str, bool] = {}

    def run() -> None:
        try:
            made = api.exec_create(container_id, argv)
            api.exec_start(made["Id"])
            result["ok"] = api.exec_inspect(made["Id"]).get("ExitCode") == 0
        except Exception:
            result["ok"] = False

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout_s)
    return result.get("ok", False)


def ensure_image(api: Any, image: str, what: str) -> None:
    """The image is in the engine, pulled when it isn't (as the platform pulls a
    container's image); DriverError naming it when neither."""
    try:
        api.inspect_image(image)
        return
    except Exception:
        pass
    from docker.utils import parse_repository_tag

    try:
        repository, tag = parse_repository_tag(image)
        api.pull(repository, tag=tag or "latest")
    except Exception as exc:
        reason = str(getattr(exc, "explanation", "") or exc).splitlines()[0]
        raise DriverError(
            f"{what}: the image {image} is not in the engine and could not be pulled "
            f"({reason}); pull or build it there first"
        ) from None
