"""Every health check of one machine, run on its interval while the machine is started.

Each check gets its own loop: wait ``grace_period`` after the machine started, then run
every ``interval`` with ``timeout``. Runs of one check never overlap: when a run takes
longer than the interval (timeout > interval), the next one starts as soon as it ends.

Until a check has passed once since the machine started, a failed run is also tried
again every second until the next regular run (`STARTUP_RETRY_S`): an app that opens
its port a moment after the first run (grace_period 0, the default) would otherwise
stay out of routing for a whole interval. A retry that passes counts at once; a retry
that fails only updates the check's output (statuses and ``restart_limit`` move with
the regular runs only).

The monitor only publishes state. The runtime calls `start`/`stop` with the machine's
lifecycle and passes ``on_change`` on to the edge (routing reads `service_passing`); the
deployer waits on `wait_passing`. Statuses, and why a check is ``warning`` before its
first result, are explained in `taxiway.checks.state`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from taxiway.checks.runners import run_http, run_tcp
from taxiway.checks.state import CheckKind, CheckResult, CheckState, CheckStatus, trim
from taxiway.config.units import duration_seconds
from taxiway.plan.machine import Check, ServiceSpec

log = logging.getLogger(__name__)

#: The shortest pause between two runs of a check, whatever the config says (no busy loop).
MIN_INTERVAL_S = 0.01

NOT_STARTED = "not checked: the machine is not started"

#: How soon a check that has not passed yet since the machine started is tried again.
STARTUP_RETRY_S = 1.0


@dataclass(slots=True)
class _Entry:
    check: Check
    state: CheckState
    interval_s: float
    timeout_s: float
    grace_s: float
    #: Whether the check passed since the machine started.
    passed: bool = False


class MachineChecks:
    """The service checks and top-level checks of one machine, and their live state."""

    def __init__(
        self,
        machine_id: str,
        services: list[ServiceSpec],
        checks: list[Check],
        address: Callable[[int], tuple[str, int]],
        on_change: Callable[[], None],
        on_restart_limit: Callable[[Check], Awaitable[None]] | None = None,
    ) -> None:
        """``address(port)`` says where to connect for a port *now* (asked on every run, as
        a restarted machine may get new ports); ``on_change`` is called after any status
        changed; ``on_restart_limit(check)`` after ``restart_limit`` consecutive failures."""
        self.machine_id = machine_id
        self._address = address
        self._on_change = on_change
        self._on_restart_limit = on_restart_limit
        self._entries: list[_Entry] = []
        for service in services:
            for check in service.checks:
                port = check.port if check.port is not None else service.internal_port
                self._entries.append(_entry(check, "service", port))
        for check in checks:
            self._entries.append(_entry(check, "machine", check.port))
        self._tasks: list[asyncio.Task[None]] = []
        self._callbacks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        for entry in self._entries:
            entry.state.reset(NOT_STARTED)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Begin checking: the machine just reached ``started``. Needs a running loop."""
        if self._tasks:
            return
        changed = False
        for entry in self._entries:
            changed |= entry.state.reset(_waiting(entry))
            entry.passed = False
            self._tasks.append(
                asyncio.create_task(
                    self._loop(entry), name=f"check-{self.machine_id}-{entry.check.name}"
                )
            )
        if changed:
            self._notify()

    async def stop(self) -> None:
        """Stop checking (the machine is stopping); statuses go back to ``warning``."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        changed = False
        for entry in self._entries:
            changed |= entry.state.reset(NOT_STARTED)
        if changed:
            self._notify()

    # -- what the edge, the deployer and `status` read ------------------------------------

    def states(self) -> list[CheckState]:
        return [entry.state for entry in self._entries]

    def service_status(self, internal_port: int) -> CheckStatus:
        """The worst status of the service checks on that port (passing when there are none).

        ``warning`` means "not known yet", ``critical`` "failing"; the edge may tell them
        apart (e.g. for a machine it just started for a request).
        """
        worst = CheckStatus.PASSING
        for entry in self._entries:
            if entry.state.kind == "service" and entry.state.port == internal_port:
                if entry.state.status is CheckStatus.CRITICAL:
                    return CheckStatus.CRITICAL
                if entry.state.status is CheckStatus.WARNING:
                    worst = CheckStatus.WARNING
        return worst

    def service_passing(self, internal_port: int) -> bool:
        """Whether every service check on that port passes: the edge routes only then.

        Top-level checks never count here (they are informational on the platform).
        """
        return self.service_status(internal_port) is CheckStatus.PASSING

    def all_passing(self) -> bool:
        """Every check passes, top-level ones included: what a deploy waits for."""
        return all(entry.state.status is CheckStatus.PASSING for entry in self._entries)

    def summary(self) -> dict[str, object]:
        """The machine's ``checks`` in `status --json`, a stable shape::

            {"total": 2, "passing": 1, "warning": 0, "critical": 1,
             "checks": [{"name", "kind": "service"|"machine", "type": "tcp"|"http",
                         "port", "status", "output", "updated_at", "consecutive_failures"}]}

        ``kind`` "machine" is a top-level ``[checks]`` entry; ``updated_at`` is the last
        status change (as on the platform), not the last run.
        """
        states = self.states()
        counts = {status.value: 0 for status in CheckStatus}
        for state in states:
            counts[state.status.value] += 1
        return {"total": len(states), **counts, "checks": [s.as_dict() for s in states]}

    def second_run_within_s(self) -> float:
        """How long after a start every check has run twice at the latest (grace period,
        two intervals, a timeout): enough for a machine that is going to pass to show it."""
        return max((e.grace_s + 2 * e.interval_s + e.timeout_s for e in self._entries), default=0.0)

    async def wait_passing(self, timeout_s: float) -> bool:
        """Wait until `all_passing` (True), or ``timeout_s`` seconds (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.all_passing():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                return self.all_passing()
        return True

    # -- the loops ------------------------------------------------------------------------

    async def _loop(self, entry: _Entry) -> None:
        loop = asyncio.get_running_loop()
        if entry.grace_s > 0:
            await asyncio.sleep(entry.grace_s)
        while True:
            began = loop.time()
            result = await self._run(entry)
            self._record(entry, result)
            self._count_failure(entry)
            next_run = began + entry.interval_s
            while not entry.passed and loop.time() + STARTUP_RETRY_S < next_run:
                await asyncio.sleep(STARTUP_RETRY_S)
                retry = await self._run(entry)
                if retry.passing:
                    self._record(entry, retry)
                else:
                    entry.state.output = trim(retry.output)  # the latest word, same status
            await asyncio.sleep(max(MIN_INTERVAL_S, next_run - loop.time()))

    def _record(self, entry: _Entry, result: CheckResult) -> None:
        entry.passed |= result.passing
        if entry.state.record(result):
            self._notify()

    async def _run(self, entry: _Entry) -> CheckResult:
        check, port = entry.check, entry.state.port
        if port is None:
            return CheckResult(
                CheckStatus.CRITICAL, f"check {check.name} has no port to check; set its port"
            )
        try:
            host, real_port = self._address(port)
        except Exception as exc:  # the runtime can't say where the machine is
            return CheckResult(CheckStatus.CRITICAL, f"no address for port {port}: {exc}")
        try:
            if check.type == "http":
                return await run_http(host, real_port, check, entry.timeout_s)
            return await run_tcp(host, real_port, entry.timeout_s)
        except Exception as exc:  # a runner bug must not end the check's loop
            log.exception("machine %s: check %s failed to run", self.machine_id, check.name)
            return CheckResult(CheckStatus.CRITICAL, f"the check could not run: {exc}")

    def _count_failure(self, entry: _Entry) -> None:
        """After ``restart_limit`` failures in a row, call ``on_restart_limit`` once.

        The callback runs in its own task: it will likely stop this machine, which cancels
        the loop that noticed the failures.
        """
        limit = entry.check.restart_limit
        if not limit or self._on_restart_limit is None:
            return
        if entry.state.consecutive_failures < limit:
            return
        entry.state.consecutive_failures = 0
        task = asyncio.create_task(self._call_restart_limit(entry.check))
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)

    async def _call_restart_limit(self, check: Check) -> None:
        assert self._on_restart_limit is not None
        try:
            await self._on_restart_limit(check)
        except Exception:
            log.exception("machine %s: restart_limit handler failed", self.machine_id)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        try:
            self._on_change()
        except Exception:
            log.exception("machine %s: check change handler failed", self.machine_id)


def _entry(check: Check, kind: CheckKind, port: int | None) -> _Entry:
    return _Entry(
        check=check,
        state=CheckState(name=check.name, kind=kind, type=check.type, port=port),
        interval_s=max(MIN_INTERVAL_S, duration_seconds(check.interval)),
        timeout_s=max(0.001, duration_seconds(check.timeout)),
        grace_s=max(0.0, duration_seconds(check.grace_period)),
    )


def _waiting(entry: _Entry) -> str:
    if entry.grace_s > 0:
        return f"waiting for the first run (grace_period {entry.grace_s:g}s)"
    return "waiting for the first run"
