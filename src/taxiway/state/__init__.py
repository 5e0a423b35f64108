"""The daemon's state: SQLite under `.taxiway/`, with forward-only migrations."""
