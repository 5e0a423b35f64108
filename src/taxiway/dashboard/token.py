"""The dashboard's access token: one random secret per state folder, kept 0600 in it.

The dashboard listens on a TCP port of 127.0.0.1, where every local user (and any web
page the user visits, through the browser) can reach it; the token is what tells the
user's own browser apart. It lives beside the app's other secrets in ``.taxiway/`` and
stays the same across daemon restarts, so a bookmarked URL only needs the new port.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from pathlib import Path

TOKEN_FILE = "dashboard.token"


def dashboard_token(state_dir: Path) -> str:
    """The state folder's token, made on first use (readable by its owner only)."""
    path = state_dir / TOKEN_FILE
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text().strip()
        if len(token) >= 32:
            return token
        path.unlink()  # cut short (a full disk): make a new one
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made meanwhile by another taxiway: use that one
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    return token


def token_matches(given: str | None, token: str) -> bool:
    """Compare in constant time: the answer must not tell how much of a guess was right."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
