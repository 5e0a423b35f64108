"""MachineChecks against real backends: grace periods, intervals, restart_limit, routing state.

No assertion is about timings: what ran is read from the servers' request logs, and every
wait is "until this holds" with a generous cap.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from check_backends import Backend, wait_until

from taxiway.checks.monitor import MachineChecks
from taxiway.checks.state import CheckStatus
from taxiway.plan.machine import Check, Concurrency, ServiceSpec

HOST = "127.0.0.1"


def http_check(name: str, port: int, path: str = "/", **fields: object) -> Check:
    values: dict[str, object] = {"interval": "20ms", "timeout": "2s", "grace_period": "0s"}
    values.update(fields)
    return Check(
        name=name, type="http", port=port, method="GET", path=path, protocol="http", **values
    )  # type: ignore[arg-type]


def service(internal_port: int, *checks: Check) -> ServiceSpec:
    return ServiceSpec(
        protocol="tcp",
        internal_port=internal_port,
        ports=[],
        concurrency=Concurrency(),
        checks=list(checks),
    )


def ignore() -> None:
    """An on_change for tests that read the state directly."""


def routed(ports: dict[int, int]) -> Callable[[int], tuple[str, int]]:
    """The runtime's address function: internal port -> where the backend really listens."""
    return lambda internal: (HOST, ports[internal])


def test_no_run_before_the_grace_period(backend: Callable[..., Backend]) -> None:
    b = backend()

    async def main() -> None:
        slow = http_check("slow-start", 8080, "/slow", grace_period="1h")
        quick = http_check("quick", 8080, "/quick")
        checks = MachineChecks(
            "m1", [service(8080, slow, quick)], [], routed({8080: b.port}), ignore
        )
        checks.start()
        await wait_until(lambda: b.paths().count("/quick") >= 5)
        assert "/slow" not in b.paths()
        states = {s.name: s for s in checks.states()}
        assert states["slow-start"].status is CheckStatus.WARNING
        assert "grace_period 3600s" in states["slow-start"].output
        assert states["quick"].status is CheckStatus.PASSING
        assert not checks.service_passing(8080)  # unconfirmed is not routed to
        await checks.stop()

    asyncio.run(main())


def test_runs_start_after_the_grace_period(backend: Callable[..., Backend]) -> None:
    b = backend()

    async def main() -> None:
        later = http_check("later", 8080, "/later", grace_period="200ms")
        now = http_check("now", 8080, "/now")
        checks = MachineChecks(
            "m1", [service(8080, later, now)], [], routed({8080: b.port}), ignore
        )
        checks.start()
        await wait_until(lambda: checks.service_passing(8080))
        assert b.paths()[0] == "/now"
        assert "/later" in b.paths()
        await checks.stop()

    asyncio.run(main())


def test_restart_limit_calls_back_once_per_limit(backend: Callable[..., Backend]) -> None:
    b = backend(status=500)
    calls: list[int] = []

    async def main() -> None:
        check = http_check("servicecheck-00-http-8080", 8080, restart_limit=3)

        async def restart(c: Check) -> None:
            # What the runtime does: stop and start the machine, so its checks too.
            calls.append(len(b.requests))
            assert c is check
            await checks.stop()
            checks.start()

        checks = MachineChecks(
            "m1", [service(8080, check)], [], routed({8080: b.port}), ignore, restart
        )
        checks.start()
        await wait_until(lambda: len(calls) >= 2)
        await checks.stop()

    asyncio.run(main())
    assert calls[:2] == [3, 6]


def test_no_restart_when_failures_are_not_consecutive(backend: Callable[..., Backend]) -> None:
    b = backend(status=500)
    calls: list[Check] = []

    async def main() -> None:
        check = http_check("c", 8080, restart_limit=3)

        async def restart(c: Check) -> None:
            calls.append(c)

        checks = MachineChecks(
            "m1", [service(8080, check)], [], routed({8080: b.port}), ignore, restart
        )
        checks.start()
        await wait_until(lambda: checks.states()[0].consecutive_failures == 2)
        b.status = 200
        await wait_until(lambda: checks.service_passing(8080))
        assert checks.states()[0].consecutive_failures == 0
        await checks.stop()

    asyncio.run(main())
    assert calls == []


def test_service_passing_follows_the_backend(backend: Callable[..., Backend]) -> None:
    b = backend()
    changes: list[bool] = []

    async def main() -> None:
        check = http_check("servicecheck-00-http-8080", 8080, "/healthz")
        checks = MachineChecks(
            "m1",
            [service(8080, check), service(9090)],
            [],
            routed({8080: b.port}),
            lambda: changes.append(checks.service_passing(8080)),
        )
        assert not checks.service_passing(8080)
        assert checks.service_passing(9090)  # no checks on that service: nothing to fail
        checks.start()
        await wait_until(lambda: checks.service_passing(8080))
        b.status = 503
        await wait_until(lambda: not checks.service_passing(8080))
        assert checks.service_status(8080) is CheckStatus.CRITICAL
        assert "503 Service Unavailable" in checks.states()[0].output
        b.status = 200
        await wait_until(lambda: checks.service_passing(8080))
        await checks.stop()
        assert not checks.service_passing(8080)  # a stopped machine's checks are not known

    asyncio.run(main())
    # One notification per status change, not per run.
    assert changes == [True, False, True, False]


def test_tcp_check_fails_when_the_backend_goes_away() -> None:
    async def main() -> None:
        server = socket.create_server((HOST, 0))
        port = server.getsockname()[1]
        check = Check(name="servicecheck-00-tcp-5432", type="tcp", port=5432, interval="20ms")
        checks = MachineChecks("m1", [service(5432, check)], [], routed({5432: port}), ignore)
        checks.start()
        await wait_until(lambda: checks.service_passing(5432))
        server.close()
        await wait_until(lambda: checks.service_status(5432) is CheckStatus.CRITICAL)
        assert checks.states()[0].output.endswith("connection refused")
        await checks.stop()

    asyncio.run(main())


def test_top_level_checks_gate_deploys_but_not_routing(backend: Callable[..., Backend]) -> None:
    web, admin = backend(), backend(status=500)

    async def main() -> None:
        service_check = http_check("servicecheck-00-http-8080", 8080)
        top_level = http_check("admin", 9000, "/admin")
        checks = MachineChecks(
            "m1",
            [service(8080, service_check)],
            [top_level],
            routed({8080: web.port, 9000: admin.port}),
            ignore,
        )
        checks.start()
        await wait_until(lambda: checks.service_passing(8080))
        await wait_until(lambda: checks.states()[1].status is CheckStatus.CRITICAL)
        assert checks.service_passing(8080)
        assert not checks.all_passing()
        assert not await checks.wait_passing(0.1)

        waiter = asyncio.create_task(checks.wait_passing(10))
        admin.status = 200
        assert await waiter
        assert checks.all_passing()

        summary = checks.summary()
        assert {k: summary[k] for k in ("total", "passing", "warning", "critical")} == {
            "total": 2,
            "passing": 2,
            "warning": 0,
            "critical": 0,
        }
        kinds = [(c["name"], c["kind"], c["port"]) for c in summary["checks"]]  # type: ignore[attr-defined]
        assert kinds == [("servicecheck-00-http-8080", "service", 8080), ("admin", "machine", 9000)]
        await checks.stop()

    asyncio.run(main())


def test_a_timeout_longer_than_the_interval_works_without_overlapping_runs(
    backend: Callable[..., Backend],
) -> None:
    b = backend(delay_s=0.1)

    async def main() -> None:
        check = http_check("slow", 8080, interval="10ms", timeout="2s")
        checks = MachineChecks("m1", [service(8080, check)], [], routed({8080: b.port}), ignore)
        checks.start()
        await wait_until(lambda: len(b.requests) >= 4)
        assert checks.service_passing(8080)
        await checks.stop()

    asyncio.run(main())
    assert b.max_in_flight == 1


def test_no_checks_means_passing() -> None:
    async def main() -> None:
        checks = MachineChecks("m1", [service(8080)], [], routed({}), ignore)
        checks.start()
        assert checks.all_passing()
        assert await checks.wait_passing(0)
        assert checks.summary() == {
            "total": 0,
            "passing": 0,
            "warning": 0,
            "critical": 0,
            "checks": [],
        }
        await checks.stop()

    asyncio.run(main())


def test_a_check_without_a_port_is_critical() -> None:
    async def main() -> None:
        check = Check(name="orphan", type="tcp", port=None, interval="20ms")
        checks = MachineChecks("m1", [], [check], routed({}), ignore)
        checks.start()
        await wait_until(lambda: checks.states()[0].status is CheckStatus.CRITICAL)
        assert "no port" in checks.states()[0].output
        await checks.stop()

    asyncio.run(main())


def test_a_check_not_passed_yet_is_retried_before_its_interval(
    backend: Callable[..., Backend],
) -> None:
    """An app that answers a moment after the first run passes at the next retry, not a
    whole interval later; failed retries change neither the status nor the failure count."""
    b = backend(status=500)

    async def main() -> None:
        check = http_check("starting", 8080, "/health", interval="1h")
        checks = MachineChecks("m1", [service(8080, check)], [], routed({8080: b.port}), ignore)
        checks.start()
        [state] = checks.states()
        await wait_until(lambda: len(b.paths()) >= 3)  # the regular run and two retries
        assert state.status is CheckStatus.CRITICAL
        assert state.consecutive_failures == 1
        b.status = 200
        await wait_until(lambda: state.status is CheckStatus.PASSING)
        assert checks.service_passing(8080)
        await checks.stop()

    asyncio.run(main())
