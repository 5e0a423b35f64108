"""The app's own metrics: each started machine's ``[metrics]`` endpoint, scraped on an
interval and re-exported with the platform's labels.

As on the platform (https://fly.io/docs/reference/configuration/#the-metrics-section):
every 15 s, one endpoint per machine (the first ``[[metrics]]`` entry for its group,
`taxiway.plan.machine`), a response cut at 16 MB, and the platform's labels (``app``,
``region``, ``host``, ``instance``, ``process_group``) overwrite same-named ones.

A scrape that fails — no answer in time, too large, not 200, not the text format, or
nothing listening — is a count in ``taxiway_metrics_scrape_failures_count{instance,
reason}``, never a log line, and drops that machine's series until a scrape succeeds
(stale numbers would look alive). Scrapes run concurrently, each bounded by its
timeout; parsing runs in a thread, so a huge or hanging endpoint never slows the
daemon's API.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from taxiway.metrics import labels as std
from taxiway.metrics.families import family, sample

if TYPE_CHECKING:
    from taxiway.runtime.app import AppRuntime
    from taxiway.runtime.machine import SupervisedMachine

#: The platform's cadence and cap.
INTERVAL_S = 15.0
MAX_BYTES = 16 * 1024 * 1024


class ScrapeFailed(Exception):
    """``args[0]``: the reason label."""


class Scraper:
    """The last good scrape of every machine, and the failures so far."""

    def __init__(self, *, timeout_s: float = 10.0, max_bytes: int = MAX_BYTES) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        #: machine id -> (its group, families parsed from its last good scrape).
        self.last: dict[str, tuple[str, list[Any]]] = {}
        #: (machine id, reason) -> failures.
        self.failures: dict[tuple[str, str], int] = {}

    async def scrape_all(self, runtime: AppRuntime) -> None:
        machines = [
            m
            for m in runtime.machines.values()
            if m.spec.metrics is not None and m.spec.metrics.port and m.state.value == "started"
        ]
        await asyncio.gather(*(self._scrape(m) for m in machines))
        live = {m.id for m in machines}
        for gone in set(self.last) - live:
            del self.last[gone]

    async def _scrape(self, machine: SupervisedMachine) -> None:
        spec = machine.spec.metrics
        assert spec is not None
        info = machine.info
        port = info.ports.get(spec.port, spec.port)
        try:
            body = await asyncio.wait_for(
                fetch(info.host, port, spec.path, https=spec.https, max_bytes=self.max_bytes),
                self.timeout_s,
            )
            families = await asyncio.to_thread(parse, body)
        except ScrapeFailed as exc:
            self._failed(machine.id, exc.args[0])
        except TimeoutError:
            self._failed(machine.id, "timeout")
        except (OSError, ssl.SSLError):
            self._failed(machine.id, "connect")
        else:
            self.last[machine.id] = (info.group, families)

    def _failed(self, machine_id: str, reason: str) -> None:
        self.last.pop(machine_id, None)
        key = (machine_id, reason)
        self.failures[key] = self.failures.get(key, 0) + 1

    def families(self, app: str, region: str) -> Iterator[Any]:
        """The machines' own families, merged by name, with the platform's labels over
        theirs; then the failure counts."""
        merged: dict[str, Any] = {}
        for machine_id, (group, families) in sorted(self.last.items()):
            platform = std.machine(app, region, machine_id, group)
            for fam in families:
                out = merged.get(fam.name)
                if out is None:
                    out = merged[fam.name] = family(fam.name, fam.documentation, fam.type)
                for s in fam.samples:
                    out.add_sample(s.name, {**s.labels, **platform}, s.value)
        yield from merged.values()
        failures = family(
            "taxiway_metrics_scrape_failures_count",
            "Failed scrapes of a machine's [metrics] endpoint, by reason",
            "counter",
        )
        for (machine_id, reason), n in sorted(self.failures.items()):
            labels = {**std.base(app, region), "instance": machine_id, "reason": reason}
            sample(failures, labels, n)
        yield failures


async def fetch(host: str, port: int, path: str, *, https: bool, max_bytes: int) -> bytes:
    """GET ``path``: the body, or `ScrapeFailed` ("too_large", "http_status")."""
    import httptools

    context = None
    if https:  # an app's own endpoint, usually self-signed: not verified, as a scraper does
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/plain;version=0.0.4"
            "\r\nConnection: close\r\nUser-Agent: taxiway\r\n\r\n".encode()
        )
        body: list[bytes] = []
        state = {"size": 0, "done": False}

        class Response:
            def on_body(self, data: bytes) -> None:
                state["size"] += len(data)
                if state["size"] > max_bytes:
                    raise ScrapeFailed("too_large")
                body.append(data)

            def on_message_complete(self) -> None:
                state["done"] = True

        parser = httptools.HttpResponseParser(Response())
        read = 0
        while not state["done"]:
            data = await reader.read(262144)
            if not data:
                break
            read += len(data)
            if read > max_bytes + 65536:  # the cut: never read on past the cap
                raise ScrapeFailed("too_large")
            try:
                parser.feed_data(data)
            except httptools.HttpParserCallbackError as exc:
                cause = exc.__context__
                raise cause if isinstance(cause, ScrapeFailed) else ScrapeFailed("parse") from None
            except httptools.HttpParserError:
                raise ScrapeFailed("parse") from None
        if not read:
            raise ScrapeFailed("parse")
        if parser.get_status_code() != 200:
            raise ScrapeFailed("http_status")
        return b"".join(body)
    finally:
        writer.close()


def parse(body: bytes) -> list[Any]:
    """The text format's families, or `ScrapeFailed` ("parse") for anything else."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        families = list(text_string_to_metric_families(body.decode("utf-8")))
    except (ValueError, UnicodeDecodeError, IndexError, TypeError):
        raise ScrapeFailed("parse") from None
    if body.strip() and not any(f.samples for f in families):
        raise ScrapeFailed("parse")  # words, but no metric in them
    return families
