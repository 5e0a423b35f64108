"""taxiway's example worker process, as the `worker` group runs it: no ports, just a loop.

Prints a heartbeat line every $HEARTBEAT_SECONDS (default 5) seconds. SIGTERM (the fly.toml
`kill_signal`) and SIGINT end it at once with exit code 0.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time


def main() -> int:
    try:
        interval = float(os.environ.get("HEARTBEAT_SECONDS") or 5)
    except ValueError:
        print("worker: HEARTBEAT_SECONDS must be a number", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(f"worker: got {signal.Signals(signum).name}, stopping", flush=True)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    machine = os.environ.get("FLY_MACHINE_ID") or "(no machine id)"
    group = os.environ.get("FLY_PROCESS_GROUP") or "worker"
    started = time.monotonic()
    beats = 0
    print(f"worker: started on {machine} ({group}), heartbeat every {interval:g}s", flush=True)
    while not stop.is_set():
        beats += 1
        uptime = time.monotonic() - started
        print(f"worker: heartbeat {beats}, up {uptime:.0f}s", flush=True)
        stop.wait(interval)  # returns early when a signal sets `stop`
    print("worker: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
