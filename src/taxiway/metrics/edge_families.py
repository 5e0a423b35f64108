"""``fly_edge_*`` and ``fly_app_*``: the edge's counts (`taxiway.metrics.edge_counts`)
turned into metric families when ``/metrics`` is read.

The edge's series describe the app as a whole (no ``instance``); the app's describe
each machine as the edge met it: responses it sent, how long it took, connections the
edge opened to it, and requests or connections in flight (``fly_app_concurrency``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from taxiway.metrics import labels as std
from taxiway.metrics.edge_counts import Buckets, EdgeCounts
from taxiway.metrics.families import family, histogram, sample


def edge_families(
    counts: EdgeCounts,
    *,
    app: str,
    region: str,
    groups: Mapping[str, str],
    load: Mapping[str, int],
) -> Iterator[Any]:
    """``groups``: machine id -> process group of every machine the series may name;
    ``load``: machine id -> requests or connections in flight now."""
    counts.settle()
    base = std.base(app, region)
    responses = family(
        "fly_edge_http_responses_count", "HTTP responses the edge sent, by status", "counter"
    )
    times = family(
        "fly_edge_http_response_time_seconds",
        "Time from a request read to its response sent, by status",
        "histogram",
    )
    by_status: dict[int, Buckets] = {}
    for site in counts.sites.values():
        for m in site.machines.values():
            for status, t in m.statuses.items():
                found = by_status.setdefault(status, Buckets())
                for i, n in enumerate(t.edge):
                    found.counts[i] += n
                found.total += t.edge_sum
        for status, local in site.local.items():
            by_status.setdefault(status, Buckets()).add(local)
    for status, buckets in sorted(by_status.items()):
        labels = {**base, "status": str(status)}
        sample(responses, labels, buckets.count())
        histogram(times, labels, buckets.counts, buckets.total)
    yield responses
    yield times

    sites = counts.sites.values()
    for name, doc, value in (
        ("fly_edge_tcp_connects_count", "Client connections accepted", "tcp_connects"),
        ("fly_edge_tcp_disconnects_count", "Client connections closed", "tcp_disconnects"),
        ("fly_edge_data_in", "Bytes received from clients", "data_in"),
        ("fly_edge_data_out", "Bytes sent to clients", "data_out"),
    ):
        fam = family(name, doc, "counter")
        sample(fam, base, sum(getattr(s, value) for s in sites))
        yield fam

    errors = family(
        "fly_edge_tls_handshake_errors",
        'Failed TLS handshakes, by the server name asked for ("" when unknown)',
        "counter",
    )
    for servername, n in sorted(counts.tls_errors.items()):
        sample(errors, {**base, "servername": servername}, n)
    yield errors
    handshakes = family(
        "fly_edge_tls_handshake_time_seconds", "Time of successful TLS handshakes", "histogram"
    )
    for version, buckets in sorted(counts.tls_times.items()):
        histogram(handshakes, {**base, "version": version}, buckets.counts, buckets.total)
    yield handshakes

    yield from _app_families(counts, app=app, region=region, groups=groups, load=load)


def _app_families(
    counts: EdgeCounts,
    *,
    app: str,
    region: str,
    groups: Mapping[str, str],
    load: Mapping[str, int],
) -> Iterator[Any]:
    concurrency = family(
        "fly_app_concurrency", "Requests or connections the edge has in flight to it", "gauge"
    )
    responses = family(
        "fly_app_http_responses_count", "HTTP responses it sent, by status", "counter"
    )
    times = family(
        "fly_app_http_response_time_seconds",
        "Time from a request sent to it to its response's end, by status",
        "histogram",
    )
    connect = family(
        "fly_app_connect_time_seconds", "Time the edge took to connect to it", "histogram"
    )
    connects = family("fly_app_tcp_connects_count", "Connections the edge opened to it", "counter")
    disconnects = family(
        "fly_app_tcp_disconnects_count", "Connections from the edge to it that closed", "counter"
    )
    for machine_id in sorted(groups):
        labels = std.machine(app, region, machine_id, groups[machine_id])
        sample(concurrency, labels, load.get(machine_id, 0))
        by_status: dict[int, Buckets] = {}
        connect_times = Buckets()
        opened = closed = 0
        for site in counts.sites.values():
            m = site.machines.get(machine_id)
            if m is None:
                continue
            for status, t in m.statuses.items():
                found = by_status.setdefault(status, Buckets())
                for i, n in enumerate(t.app):
                    found.counts[i] += n
                found.total += t.app_sum
            connect_times.add(m.connect_times)
            opened += m.connects
            closed += m.disconnects
        for status, buckets in sorted(by_status.items()):
            status_labels = {**labels, "status": str(status)}
            sample(responses, status_labels, buckets.count())
            histogram(times, status_labels, buckets.counts, buckets.total)
        histogram(connect, labels, connect_times.counts, connect_times.total)
        sample(connects, labels, opened)
        sample(disconnects, labels, closed)
    yield from (concurrency, responses, times, connect, connects, disconnects)
