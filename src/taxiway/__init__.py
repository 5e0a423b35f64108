"""taxiway: run a Fly.io app from its fly.toml on your own machine, with the platform's
semantics."""

__version__ = "0.1.0"
