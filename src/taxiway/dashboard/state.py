"""The picture every dashboard shows, built once per change for all open tabs.

Machines (the `status --json` shape), where the edge listens, recent releases and the
deploy in progress with its steps. `SharedState.document` is called by the dashboard's
tick, never per client: fifty tabs cost one build and one JSON encoding.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taxiway.checks.state import summary_text

if TYPE_CHECKING:
    from taxiway.runtime.app import AppRuntime

#: Releases the page lists, newest first.
RECENT_RELEASES = 8
#: Progress lines kept of the latest deploy.
DEPLOY_STEPS = 60


def edge_url(binding: dict[str, Any]) -> str:
    """The URL a browser or client uses for one edge listener."""
    handlers = set(binding.get("handlers") or ())
    scheme = binding.get("protocol", "tcp")
    if "http" in handlers:
        scheme = "https" if "tls" in handlers else "http"
    elif "tls" in handlers:
        scheme = "tls"
    return f"{scheme}://{binding['address']}"


class DeployWatch:
    """The steps of the latest deploy, fed by the deployer's watchers."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self.version: int | None = None
        self.steps: collections.deque[str] = collections.deque(maxlen=DEPLOY_STEPS)
        self.started = 0.0
        self._changed = changed

    def line(self, version: int, line: str) -> None:
        if version != self.version:
            self.version = version
            self.steps.clear()
            self.started = time.time()
        self.steps.append(line)
        self._changed()


class SharedState:
    def __init__(self, runtime: AppRuntime, deployer: Callable[[], Any]) -> None:
        self.runtime = runtime
        #: The app's deployer once a deploy was asked for (None before).
        self.deployer = deployer
        self.deploy = DeployWatch(self.mark_changed)
        #: Something changed since the last `document`.
        self.changed = True

    def mark_changed(self) -> None:
        self.changed = True

    def document(self) -> dict[str, Any]:
        self.changed = False
        runtime = self.runtime
        status = runtime.status()
        machines = []
        for m in status["machines"]:  # type: ignore[union-attr]
            checks = m.get("checks") or {}
            machines.append(
                {
                    **{k: m[k] for k in ("id", "group", "state", "region", "private_ip")},
                    "restarts": m["restarts"],
                    "checks": summary_text(checks),
                    "checks_critical": bool(checks.get("critical")),
                    "exit_code": m.get("exit_code"),
                    "oom_killed": m.get("oom_killed", False),
                    "backoff_s": m.get("backoff_s", 0),
                    "pid": m.get("pid"),
                    "hints": m.get("hints") or [],
                }
            )
        edge = [
            {
                "url": edge_url(b),
                "port": b.get("port"),
                "mapped": bool(b.get("mapped")),
                "handlers": list(b.get("handlers") or ()),
            }
            for b in status.get("edge") or []  # type: ignore[union-attr]
        ]
        return {
            "app": runtime.app,
            "release": runtime.release,
            "driver": status.get("driver"),
            "driver_reason": status.get("driver_reason"),
            "machines": machines,
            "edge": edge,
            "releases": self._releases(),
            "deploy": self._deploy(),
        }

    def _releases(self) -> list[dict[str, Any]]:
        runtime = self.runtime
        records = runtime.store.list_releases(runtime.app)[:RECENT_RELEASES]
        return [
            {
                "version": r.version,
                "status": r.status,
                "strategy": r.strategy,
                "created_at": r.created_at,
                "description": r.description,
                "current": r.version == runtime.release,
            }
            for r in records
        ]

    def _deploy(self) -> dict[str, Any] | None:
        deployer = self.deployer()
        current = getattr(deployer, "current", None) if deployer is not None else None
        watch = self.deploy
        if current is None and watch.version is None:
            return None
        version = current.version if current is not None else watch.version
        status = "running" if current is not None else self._release_status(version)
        steps = list(watch.steps) if watch.version == version else []
        return {"version": version, "status": status, "running": current is not None,
                "steps": steps}

    def _release_status(self, version: int | None) -> str:
        runtime = self.runtime
        for r in runtime.store.list_releases(runtime.app)[:RECENT_RELEASES]:
            if r.version == version:
                return str(r.status)
        return "unknown"
