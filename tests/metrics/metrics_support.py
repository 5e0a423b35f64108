"""Reading a running app's /metrics in tests: over the API socket, parsed with
prometheus_client's own parser."""

from __future__ import annotations

import time
from pathlib import Path

from taxiway.api.client import Client
from taxiway.api.paths import AppPaths


def scrape_socket(folder: Path) -> str:
    """GET /metrics on the daemon's unix socket, with the API's client."""
    response = Client(AppPaths.for_config(folder / "fly.toml").socket)._open("GET", "/metrics")
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    return response.read().decode()


def parsed(text: str) -> dict[str, object]:
    """family name -> family, with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``
    (prometheus_client's parser calls a counter's samples ``NAME_total``)."""
    total = 0.0
    for fam in parsed(text).values():
        for s in fam.samples:
            if s.name in (name, name + "_total") and all(
                s.labels.get(k) == v for k, v in labels.items()
            ):
                total += s.value
    return total


def samples(text: str, name: str) -> list:
    return [
        s for fam in parsed(text).values() for s in fam.samples if s.name in (name, name + "_total")
    ]


def wait_for(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)
