"""`python -m taxiway` is the `taxiway` command."""

from taxiway.cli.main import run

run()
