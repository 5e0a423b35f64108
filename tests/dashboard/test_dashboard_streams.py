"""The bounds that keep open dashboards cheap: a slow client is dropped, never buffered
for; a broadcast is one encoding for every stream; and the chart samples are honest."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

from taxiway.dashboard.http import event_chunk
from taxiway.dashboard.hub import QUEUE_SIZE, Stream, StreamHub
from taxiway.dashboard.log_feed import selection
from taxiway.dashboard.samples import ProcSource, RegistrySource, read_processes, tree_totals


def test_a_client_that_does_not_read_is_dropped_not_buffered() -> None:
    async def scenario() -> None:
        hub = StreamHub(max_streams=3)
        reading, stuck = Stream("state"), Stream("state")
        forever = asyncio.Event()

        async def client(stream: Stream, reads: bool) -> None:
            assert hub.join(stream)
            try:
                while True:
                    await (stream.queue.get() if reads else forever.wait())
            finally:
                hub.leave(stream)

        tasks = [asyncio.ensure_future(client(reading, True)),
                 asyncio.ensure_future(client(stuck, False))]
        await asyncio.sleep(0)
        chunk = event_chunk("state", '{"n": 1}')
        for _ in range(QUEUE_SIZE * 4):
            hub.broadcast("state", chunk)
            await asyncio.sleep(0)  # the reading client keeps up
        await asyncio.wait([tasks[1]])
        assert stuck.dropped and stuck.queue.qsize() <= QUEUE_SIZE
        assert tasks[1].cancelled()
        assert not reading.dropped and hub.streams == {reading}
        assert hub.dropped_count == 1
        # the cap: two more fit (3 in all), the next is refused
        more = [Stream("logs"), Stream("logs")]
        assert all(hub.join(s) for s in more)
        assert not hub.join(Stream("state"))
        for stream in more:  # joined from this task: closing the hub would cancel it
            hub.leave(stream)
        hub.close()
        await asyncio.wait(tasks)

    asyncio.run(scenario())


def test_an_event_is_one_chunk_of_the_stream() -> None:
    chunk = event_chunk("state", '{"a": 1}')
    size, _, rest = chunk.partition(b"\r\n")
    assert int(size, 16) == len(rest) - 2 and rest.endswith(b"\n\n\r\n")
    assert rest.startswith(b"event: state\ndata: {\"a\": 1}\n\n")


def test_log_selection_by_machine_prefix_and_group() -> None:
    line = {"machine": "abc123", "group": "web"}
    assert selection(None, None)(line)
    assert selection("abc", None)(line) and not selection("abd", None)(line)
    assert selection(None, "web")(line) and not selection(None, "worker")(line)
    assert selection("", "")(line)


def test_proc_source_measures_a_machines_process_tree() -> None:
    # a parent that starts a child holding ~40 MB: the tree's memory counts both
    child_code = "import time; b = bytearray(40 * 2**20); b[::4096] = b'x' * len(b[::4096]); " \
                 "print('ready', flush=True); time.sleep(60)"
    parent = subprocess.Popen(
        [sys.executable, "-c",
         f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {child_code!r}]);"
         " p.wait()"],
        start_new_session=True,  # its own process group: the test ends both by that id
    )
    try:
        def tree_memory() -> int:
            return tree_totals(parent.pid, read_processes())[1]

        import time

        deadline = time.monotonic() + 20
        while tree_memory() < 40 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tree_memory() >= 40 * 2**20
        info = SimpleNamespace(pid=parent.pid)
        runtime = SimpleNamespace(machines={"m1": SimpleNamespace(id="m1", info=info),
                                            "m2": SimpleNamespace(id="m2",
                                                                  info=SimpleNamespace(pid=None))})
        source = ProcSource(runtime)  # type: ignore[arg-type]
        point = source.sample()
        assert point["services"] is None and "unavailable" in point["services_unavailable"]
        assert point["machines"]["m1"]["memory_mb"] >= 40
        assert point["machines"]["m2"] == {"memory_mb": 0.0, "cpu_pct": 0.0}
        assert source.sample()["machines"]["m1"]["cpu_pct"] >= 0
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_registry_source_turns_counters_into_rates_and_survives_a_bad_snapshot() -> None:
    # the shape `taxiway.metrics.snapshot` answers: totals since the daemon started
    bounds = [0.005, 0.01, 0.1, 1.0]
    figures = {"at": 1000.0, "requests": 100, "errors": 2, "buckets": [50, 30, 20, 0, 0]}

    def snapshot(runtime: object) -> dict:
        return {
            "at": figures["at"],
            "bounds": bounds,
            "services": [{"service": "app:8080", "requests": figures["requests"],
                          "errors": figures["errors"], "latency_buckets": figures["buckets"],
                          "p50_s": 0.004, "p99_s": 0.05}],
            "machines": [{"id": "m1", "memory_bytes": 50 * 2**20, "cpu_seconds": 1.0},
                         {"id": "m2", "memory_bytes": None, "cpu_seconds": None}],
        }

    runtime = SimpleNamespace(machines={})
    source = RegistrySource(runtime, snapshot)  # type: ignore[arg-type]
    assert not source.in_thread  # the edge's counters belong to the loop
    first = source.sample()
    # nothing to compare with yet: no rate, no latency of the last tick
    assert first["services"]["app:8080"] == {
        "rps": 0.0, "errors_per_s": 0.0, "p50_ms": None, "p99_ms": None
    }
    assert first["machines"]["m1"]["memory_mb"] == 50.0
    assert first["machines"]["m2"] == {"memory_mb": None, "cpu_pct": None}
    # two seconds later: 200 more requests, 10 more errors, all of them slow
    figures.update(at=1002.0, requests=300, errors=12, buckets=[50, 30, 20, 200, 0])
    second = source.sample()["services"]["app:8080"]
    assert second["rps"] == 100.0 and second["errors_per_s"] == 5.0
    assert 100 < second["p50_ms"] <= 1000 and 100 < second["p99_ms"] <= 1000
    figures.update(at=1004.0)  # an idle tick: no requests, no latency drawn
    idle = source.sample()["services"]["app:8080"]
    assert idle["rps"] == 0.0 and idle["p50_ms"] is None

    def broken(runtime: object) -> dict:
        raise RuntimeError("registry not ready")

    point = RegistrySource(runtime, broken).sample()  # type: ignore[arg-type]
    assert point["services"] is None
    assert "registry not ready" in point["services_unavailable"]
