"""The release command: create the jobs table (runs before any machine starts)."""

import os
import sqlite3

db = sqlite3.connect(os.environ.get("DATABASE", "app.db"))
db.execute("CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, done_by TEXT, at TEXT)")
db.commit()
flag = os.environ.get("RELEASE_COMMAND")
print(f"migrated {os.environ.get('DATABASE')} (RELEASE_COMMAND={flag})")
