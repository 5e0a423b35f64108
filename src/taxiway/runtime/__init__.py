"""The machine runtime: supervised machines per process group (what the platform's agent does)."""
