"""Identifiers shaped like the platform's.

Machine ids are 14 lowercase hex characters (``d8d4017a0d1438``); a machine's
version (``FLY_MACHINE_VERSION``, the API's ``instance_id``) is a 26-character
ULID that changes on every config or release change.
"""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def machine_id() -> str:
    return os.urandom(7).hex()


def ulid(now: float | None = None) -> str:
    """A ULID: 48 bits of milliseconds, then 80 random bits, in Crockford base32."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))
