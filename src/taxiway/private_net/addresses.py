"""Where things live on the private network (the platform's 6PN, one per host here).

The platform gives an organisation one private IPv6 network, ``fdaa::/16``-shaped, whose
DNS server every machine finds at ``fdaa::3`` and whose Machines API answers at
``_api.internal:4280`` (https://fly.io/docs/networking/private-networking/,
https://fly.io/docs/machines/api/working-with-machines-api/). Here every taxiway app on
the host is in that one network. An app's machines take addresses in its /64
(`taxiway.runtime.environment.private_ip`: ``fdaa:0:<seed>:a7b::/64``); its flycast and
Machines API addresses are in a /64 of their own beside it, ``fdaa:0:<seed>:fc::/64``,
held by the host (on its loopback interface), so no machine's on-link network covers
them and every machine reaches them through its route to the host.
"""

from __future__ import annotations

import ipaddress

#: The whole private network: machines route it to the host.
NETWORK = ipaddress.IPv6Network("fdaa::/16")
#: The platform's DNS server address inside machines.
DNS_ADDRESS = "fdaa::3"
DNS_PORT = 53
#: The Machines API's port on the private network (``_api.internal:4280``).
API_PORT = 4280


def _host_prefix(seed: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(f"fdaa:0:{seed & 0xFFFF:x}:fc::")


def flycast_address(seed: int) -> str:
    """The app's flycast address (``<app>.flycast``): the edge listens there."""
    return str(_host_prefix(seed) + 1)


def api_address(seed: int) -> str:
    """Where the app's machines reach its Machines API (``_api.internal``)."""
    return str(_host_prefix(seed) + 3)
