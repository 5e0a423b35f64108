"""Worker group: records a job every few seconds, and sometimes crashes (to show restarts)."""

import datetime
import os
import random
import signal
import sqlite3
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
db = sqlite3.connect(os.environ["DATABASE"])
machine = os.environ["FLY_MACHINE_ID"]
while True:
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    db.execute("INSERT INTO jobs (done_by, at) VALUES (?, ?)", (machine, now))
    db.commit()
    print(f"job done by {machine} at {now}", flush=True)
    if random.random() < 0.05:
        print("worker: simulated crash", flush=True)
        sys.exit(1)
    time.sleep(3)
