"""The root of every error a user can cause.

The CLI prints a `TaxiwayError` as its one-sentence message and exits 1; anything
else reaching the top is a bug and is reported as one.
"""


class TaxiwayError(Exception):
    """An error whose message is a complete sentence meant for the user."""
