"""Drivers start a machine's processes: `process` (portable), `namespace` (Linux, root)
and `docker` (a container of the app's image, through a Docker engine).

This module picks one for the host and imports no asyncio: `up -d`'s command process
makes the choice while the daemon it forked is still importing its machinery
(`taxiway.daemon_startup`), and hands the daemon the name (`make_driver`).
"""

from __future__ import annotations

from typing import NamedTuple

from taxiway.daemon_options import DRIVER_NAMES
from taxiway.errors import TaxiwayError
from taxiway.runtime import cgroups, netns, outbound
from taxiway.runtime.drivers.base import Driver, DriverError


def unusable_reason() -> str | None:
    """What this host lacks for the namespace driver (a phrase), or None."""
    return netns.usable() or cgroups.usable()


def fully_usable_reason() -> str | None:
    """What this host lacks for `auto` to pick the namespace driver: everything it needs,
    and a way out for its machines (they reach the world as with the process driver)."""
    return unusable_reason() or outbound.unavailable_reason()


def ensure_usable() -> None:
    """Raise the one-sentence DriverError naming what the namespace driver lacks, if anything."""
    reason = unusable_reason()
    if reason is not None:
        raise DriverError(
            f"the namespace driver needs {reason}, which this host lacks; use --driver process"
        )


class DriverChoice(NamedTuple):
    """The driver a start uses, and why: `status` and `up` say both."""

    name: str
    reason: str


def choose_driver(
    name: str, asked_by: str = "--driver", *, has_image: bool = False
) -> DriverChoice:
    """The driver ``name`` stands for on this host, and why. ``auto`` is the docker driver
    when the app has an image to build or run (``has_image``: a Dockerfile, `[build]
    image` or `[build.compose]`) and an engine answers, as the platform runs the image;
    else the namespace driver where it is fully usable (an app that can't reach its
    database or an API is worse off than one whose port is remapped), else the process
    driver. An explicit driver that can't run here raises what it lacks. ``asked_by``
    names where an explicit choice came from (``--driver`` or ``TAXIWAY_DRIVER``)."""
    if name == "auto":
        engine = None
        if has_image:
            from taxiway.image.engine import engine_problem

            engine = engine_problem()
            if engine is None:
                return DriverChoice("docker", "auto: the app has an image and an engine answers")
        lacking = fully_usable_reason()
        if lacking is None:
            return DriverChoice(
                "namespace", "auto: this host has namespaces, IPv4 forwarding and iptables"
            )
        if engine is not None:
            return DriverChoice(
                "process", f"auto: {engine}, and the namespace driver needs {lacking}"
            )
        return DriverChoice("process", f"auto: the namespace driver needs {lacking}")
    if name == "namespace":
        ensure_usable()
        return DriverChoice(name, f"{asked_by} {name}")
    if name == "docker":
        from taxiway.image.engine import engine_problem

        problem = engine_problem()
        if problem is not None:
            raise DriverError(
                f"the docker driver needs a Docker engine: {problem}; start one (dockerd, "
                "or `bash .ci/engine` in a taxiway checkout) or point DOCKER_HOST at one"
            )
        return DriverChoice(name, f"{asked_by} {name}")
    if name == "process":
        return DriverChoice(name, f"{asked_by} {name}")
    raise TaxiwayError(f"unknown driver {name!r}; use {', '.join(DRIVER_NAMES)}")


def make_driver(name: str) -> Driver:
    """The driver called ``name``, as `choose_driver` returned it (no host checks again)."""
    if name == "namespace":
        from taxiway.runtime.drivers.namespace import NamespaceDriver

        return NamespaceDriver()
    if name == "docker":
        from taxiway.runtime.drivers.docker import DockerDriver

        return DockerDriver()
    from taxiway.runtime.drivers.process import ProcessDriver

    return ProcessDriver()


def select_driver(name: str) -> Driver:
    """The driver called ``name``, checked against this host (`choose_driver`)."""
    return make_driver(choose_driver(name).name)
