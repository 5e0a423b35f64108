"""The cron process: a small loop standing in for a scheduler, doing its job every few
seconds and saying so in the logs."""

import os
import signal
import sys
import time
from datetime import UTC, datetime

INTERVAL_S = float(os.environ.get("CRON_INTERVAL_S", "5"))


def stop(signum, frame):
    print("cron: stopping", flush=True)
    sys.exit(0)


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    machine = os.environ.get("FLY_MACHINE_ID", "local")
    print(f"cron: started on {machine}, every {INTERVAL_S:g}s", flush=True)
    while True:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        print(f"cron: tick {now}", flush=True)
        time.sleep(INTERVAL_S)


if __name__ == "__main__":
    main()
