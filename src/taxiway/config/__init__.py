"""fly.toml: reading, normalising, validating, converting (no processes, no sockets)."""
