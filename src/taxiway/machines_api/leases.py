"""Machine leases: who may change a machine, for how long, kept in the daemon's memory.

The platform's lease (https://fly.io/docs/machines/api/machines-resource/, "Lease"): a
client takes one with a time to live, gets a nonce, and from then on every change to
the machine without that nonce in the ``fly-machine-lease-nonce`` header is refused
with 409 until the lease is released or expires. flyctl takes one around each machine
it updates in a deploy. Kept in memory: a daemon that restarts has stopped every
machine, and no lease outlives the changes it guarded.

One daemon runs one app, so the process-wide `LEASES` serves every route:
`require_lease` is what a route that changes a machine calls first.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Container
from dataclasses import dataclass

from taxiway.api.routing import HTTPError, Request

#: The header that carries a lease's nonce.
NONCE_HEADER = "fly-machine-lease-nonce"
#: A lease's time to live when the request gives none (the platform's 30 s).
DEFAULT_TTL_S = 30


@dataclass
class Lease:
    nonce: str
    owner: str
    description: str
    #: Unix time (seconds) when the lease stops holding.
    expires_at: int
    #: The machine's instance id when the lease was taken.
    version: str

    def json(self) -> dict[str, object]:
        """As the platform answers a lease request (fly-go's `MachineLease`)."""
        return {
            "status": "success",
            "data": {
                "nonce": self.nonce,
                "expires_at": self.expires_at,
                "owner": self.owner,
                "description": self.description,
                "version": self.version,
            },
        }


class Leases:
    """The leases held on the app's machines, by machine id."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._held: dict[str, Lease] = {}

    @property
    def held(self) -> bool:
        """Whether any lease is held (expired ones included until looked at)."""
        return bool(self._held)

    def current(self, machine_id: str) -> Lease | None:
        """The machine's lease while it holds (an expired one is dropped)."""
        lease = self._held.get(machine_id)
        if lease is not None and lease.expires_at <= self._clock():
            del self._held[machine_id]
            return None
        return lease

    def acquire(
        self,
        machine_id: str,
        *,
        ttl_s: int,
        description: str,
        version: str,
        nonce: str | None = None,
    ) -> tuple[Lease, bool]:
        """Take the machine's lease, or refresh it with its ``nonce``; returns the lease
        and whether it is new. Someone else's lease: 409."""
        held = self.current(machine_id)
        expires_at = int(self._clock()) + ttl_s
        if held is not None:
            if nonce is None or not secrets.compare_digest(nonce, held.nonce):
                raise _held_by_another(machine_id, held)
            held.expires_at = expires_at
            if description:
                held.description = description
            return held, False
        lease = Lease(
            nonce=secrets.token_hex(6),
            owner=_owner(),
            description=description,
            expires_at=expires_at,
            version=version,
        )
        self._held[machine_id] = lease
        return lease, True

    def release(self, machine_id: str, nonce: str | None) -> None:
        """Let go of the machine's lease: 404 when none holds, 409 without its nonce."""
        held = self.current(machine_id)
        if held is None:
            raise HTTPError(404, f"machine {machine_id} has no lease to release")
        if nonce is None or not secrets.compare_digest(nonce, held.nonce):
            raise _held_by_another(machine_id, held)
        del self._held[machine_id]

    def require(self, machine_id: str, request: Request) -> None:
        """Refuse (409) a change to a leased machine that comes without the lease's nonce."""
        held = self.current(machine_id)
        if held is None:
            return
        nonce = request.headers.get(NONCE_HEADER)
        if nonce is None or not secrets.compare_digest(nonce, held.nonce):
            raise _held_by_another(machine_id, held)

    def forget(self, machine_id: str) -> None:
        """The machine is gone (destroyed): so is its lease."""
        self._held.pop(machine_id, None)

    def keep_only(self, machine_ids: Container[str]) -> None:
        """Drop the leases of machines not in ``machine_ids`` (destroyed ones)."""
        for machine_id in [m for m in self._held if m not in machine_ids]:
            del self._held[machine_id]


#: The daemon's leases (one daemon runs one app).
LEASES = Leases()


def require_lease(machine_id: str, request: Request) -> None:
    """What a route that changes a machine calls first: 409 when the machine is leased
    and the request lacks the lease's nonce in ``fly-machine-lease-nonce``."""
    LEASES.require(machine_id, request)


def _held_by_another(machine_id: str, held: Lease) -> HTTPError:
    return HTTPError(
        409,
        f"machine {machine_id} is leased by {held.owner} until "
        f"{time.strftime('%H:%M:%S', time.localtime(held.expires_at))}"
        f" ({held.description or 'no description'}); send its nonce in the "
        f"{NONCE_HEADER} header, or wait for it to expire",
    )


def _owner() -> str:
    """Who takes leases here: the user the daemon runs as (the platform names the token's
    owner)."""
    import getpass

    with contextlib.suppress(Exception):
        return getpass.getuser()
    return "local"
