"""Shared test set-up. Its folder is on sys.path, so `cli_runner` is importable everywhere."""
