"""The root of every error a user can cause.

The CLI prints a `TaxiwayError` as its one-sentence message and exits 1; anything
else reaching the top is a bug and is reported as one.
"""


class TaxiwayError(Exception):
    """An error whose message is a complete sentence meant for the user."""


def os_error_sentence(exc: OSError) -> str:
    """What the host refused (a full disk, a missing permission), naming the file when
    the error does: the user's environment, not a bug in taxiway."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        return f"cannot use {exc.filename}: {reason.lower()}"
    return reason
