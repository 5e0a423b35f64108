"""Telling a user when their app ignores ``PORT`` (the process driver's one requirement).

With the process driver every machine gets its own host port per service
``internal_port`` and finds it in ``PORT``. An app that listens on the fixed
``internal_port`` instead works for one machine and breaks the second; this check
says so in the machine's log instead of leaving the user to guess.
"""

from __future__ import annotations

import asyncio
import contextlib

#: How long an app gets to open its port before taxiway looks.
GRACE_S = 3.0


async def listening(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def port_advice(internal: int, host_port: int, *, grace_s: float = GRACE_S) -> str | None:
    """A sentence for the machine's log when nothing answers on ``PORT``, else None."""
    await asyncio.sleep(grace_s)
    if internal == host_port or await listening(host_port):
        return None
    if await listening(internal):
        return (
            f"nothing listens on PORT={host_port}, but something does on {internal}: with the "
            f"process driver each machine must listen on $PORT (machines of a group can't all "
            f"bind {internal}); read PORT from the environment"
        )
    return (
        f"nothing listens on PORT={host_port} yet ({GRACE_S:g}s after start); the service on "
        f"internal_port {internal} reaches this machine there"
    )
