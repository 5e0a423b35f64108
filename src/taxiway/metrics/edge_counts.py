"""What the edge counts while it serves: plain ints and floats in small structs.

Counting must not cost the edge: its hot path (`taxiway.edge.exchange`,
`taxiway.edge.http_proxy`, `taxiway.edge.tcp_proxy`) only adds to the fields here, and a
proxied response is one tuple appended to `SiteCounts.done`; the edge's once-a-second
sweep (and any reader, first) sorts those into histograms in one tight loop
(`SiteCounts.settle`), and the Prometheus families are made from these structs when
``/metrics`` is read (`taxiway.metrics.edge_families`). Counting each response where it
ended (a method call, two dict lookups, two ``bisect`` calls) cost the http path ~8% of
its CPU per request on this 2-core box; the append costs a fraction of that. A
per-request ``Counter.inc()`` of prometheus_client would take a lock and walk label
dictionaries. No prometheus_client import here: the edge imports this module.

Response counts are not kept apart from the histograms: a status's count is the sum of
its buckets, so each response is counted once.
"""

from __future__ import annotations

from bisect import bisect_left

#: Upper bounds (seconds) of the response-time and connect-time histograms' buckets.
#: The platform does not publish its buckets; these are Prometheus client defaults
#: widened to a minute (the platform's idle timeout is 60 s).
TIME_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SLOTS = len(TIME_BOUNDS) + 1  # the last one is +Inf


class Buckets:
    """One histogram's buckets (not cumulative) and the sum of what it observed."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * _SLOTS
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(TIME_BOUNDS, seconds)] += 1
        self.total += seconds

    def add(self, other: Buckets) -> None:
        counts = self.counts
        for i, n in enumerate(other.counts):
            counts[i] += n
        self.total += other.total

    def count(self) -> int:
        return sum(self.counts)


class StatusTimes:
    """The responses of one status code from one machine: the time the client waited
    (its request read to the response's end: ``fly_edge_*``) and the time the machine
    took (the request sent to it to the response's end: ``fly_app_*``)."""

    __slots__ = ("app", "app_sum", "edge", "edge_sum")

    def __init__(self) -> None:
        self.edge = [0] * _SLOTS
        self.edge_sum = 0.0
        self.app = [0] * _SLOTS
        self.app_sum = 0.0


class MachineCounts:
    """One machine, as one service's traffic met it."""

    __slots__ = ("connect_times", "connects", "disconnects", "statuses")

    def __init__(self) -> None:
        #: status code -> its responses' times.
        self.statuses: dict[int, StatusTimes] = {}
        #: Connections the edge opened to the machine and saw close.
        self.connects = 0
        self.disconnects = 0
        #: How long opening those connections took.
        self.connect_times = Buckets()


class SiteCounts:
    """One service's listeners (every port of a ``[[services]]`` entry or
    ``[http_service]``): client connections, bytes, responses per machine, and the
    responses the edge made itself (errors, redirects, statics)."""

    __slots__ = (
        "data_in",
        "data_out",
        "done",
        "local",
        "machines",
        "service",
        "tcp_connects",
        "tcp_disconnects",
    )

    def __init__(self, service: str) -> None:
        self.service = service
        self.tcp_connects = 0
        self.tcp_disconnects = 0
        #: Bytes from clients and to clients.
        self.data_in = 0
        self.data_out = 0
        #: machine id -> what the service's traffic to it did.
        self.machines: dict[str, MachineCounts] = {}
        #: status code -> responses the edge answered itself (no machine involved).
        self.local: dict[int, Buckets] = {}
        #: Proxied responses not sorted in yet: (machine id, status, began, sent_at,
        #: ended), loop times; `settle` sorts them.
        self.done: list[tuple[str | None, int, float, float, float]] = []

    def machine(self, machine_id: str) -> MachineCounts:
        found = self.machines.get(machine_id)
        if found is None:
            found = self.machines[machine_id] = MachineCounts()
        return found

    def response(
        self, machine_id: str | None, status: int, began: float, sent_at: float, now: float
    ) -> None:
        """A machine's response has gone to the client: ``began`` when its request was
        read, ``sent_at`` when it went to the machine, ``now`` (loop times). The hot
        path appends to `done` itself."""
        self.done.append((machine_id, status, began, sent_at, now))

    def settle(self) -> None:
        """Sort the responses in `done` into their machines' histograms."""
        done = self.done
        if not done:
            return
        self.done = []
        machines = self.machines
        bounds = TIME_BOUNDS
        for machine_id, status, began, sent_at, ended in done:
            if machine_id is None:
                self.local_response(status, began, ended)
                continue
            m = machines.get(machine_id)
            if m is None:
                m = machines[machine_id] = MachineCounts()
            times = m.statuses.get(status)
            if times is None:
                times = m.statuses[status] = StatusTimes()
            seconds = ended - began
            times.edge[bisect_left(bounds, seconds)] += 1
            times.edge_sum += seconds
            seconds = ended - sent_at if sent_at else 0.0
            times.app[bisect_left(bounds, seconds)] += 1
            times.app_sum += seconds

    def local_response(self, status: int, began: float, now: float) -> None:
        """A response the edge made itself (an error page, a redirect, a static file)."""
        buckets = self.local.get(status)
        if buckets is None:
            buckets = self.local[status] = Buckets()
        buckets.observe(now - began if began else 0.0)


class EdgeCounts:
    """Everything the edge of one app counted, kept across the edge's rebuilds (a deploy
    that changes the services rebinds the listeners, the counters go on)."""

    def __init__(self) -> None:
        #: service name -> its counts (`site`).
        self.sites: dict[str, SiteCounts] = {}
        #: TLS handshakes: failures per server name asked for (SNI, "" without), and
        #: the time successful ones took, per TLS version.
        self.tls_errors: dict[str, int] = {}
        self.tls_times: dict[str, Buckets] = {}

    def settle(self) -> None:
        """Sort every site's pending responses in (before reading them, and once a
        second from the edge's sweep)."""
        for site in self.sites.values():
            site.settle()

    def site(self, service: str) -> SiteCounts:
        found = self.sites.get(service)
        if found is None:
            found = self.sites[service] = SiteCounts(service)
        return found

    def tls_handshake(self, version: str | None, seconds: float) -> None:
        key = version or ""
        buckets = self.tls_times.get(key)
        if buckets is None:
            buckets = self.tls_times[key] = Buckets()
        buckets.observe(seconds)

    def tls_failure(self, servername: str | None) -> None:
        key = servername or ""
        self.tls_errors[key] = self.tls_errors.get(key, 0) + 1
