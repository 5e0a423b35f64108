"""Health checks: tcp/http runners and per-machine check state.

Checks publish state (passing / warning / critical); the edge decides routing from it and
the deployer waits on it. Nothing here routes or restarts by itself.
"""
