"""The Machines API's bearer token: one per state folder, in ``.taxiway/api.token``.

A file readable by its owner only (0600), made on first need by the daemon or by
`taxiway api token`, whichever comes first: whoever can read the state folder may
drive the app's machines, nobody else on the host can.
"""

from __future__ import annotations

import contextlib
import hmac
import os
from pathlib import Path

TOKEN_FILE = "api.token"


def api_token(state_dir: Path) -> str:
    """The state folder's token, made (0600) when there is none yet."""
    path = state_dir / TOKEN_FILE
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text().strip()
        if token:
            return token
    import secrets  # only to make one

    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    temporary = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # the first writer wins; a racing second reads its token
    except FileExistsError:
        existing = path.read_text().strip()
        if existing:
            return existing
        os.replace(temporary, path)  # an empty file (a full disk once): replaced
    finally:
        temporary.unlink(missing_ok=True)
    return token


def token_matches(given: str, expected: str) -> bool:
    """Compared in constant time: the answer's timing says nothing about the token."""
    return hmac.compare_digest(given.encode(), expected.encode())
