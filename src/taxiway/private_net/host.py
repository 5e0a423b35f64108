"""The host's share of the private network: addresses on its loopback and a path
between apps.

Machines route ``fdaa::/16`` to the host (`taxiway.private_net.addresses`). The host
holds the DNS server's ``fdaa::3`` and each app's flycast and API addresses on ``lo``,
so a machine of any app reaches them whichever bridge it is on, and it routes between
the apps' bridges, which takes IPv6 forwarding. taxiway doesn't turn forwarding on by
itself (that makes the host a router for every interface: its owner's decision, and
Docker's engine makes it when it gives a network IPv6); without it machines still reach
their own app's machines, the DNS server, flycast and the API, and `up` says what other
apps' machines need. One ip6tables rule (tagged ``taxiway 6pn``) lets the network's
traffic through a FORWARD chain that drops by default, ahead of an engine's isolation
rules; it goes with the last app, as do the shared addresses.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from taxiway.errors import TaxiwayError
from taxiway.private_net.addresses import DNS_ADDRESS, NETWORK, api_address, flycast_address
from taxiway.runtime.scope import seed

IF_INET6 = Path("/proc/net/if_inet6")
FORWARDING = Path("/proc/sys/net/ipv6/conf/all/forwarding")
#: The resolv.conf every machine whose driver owns its filesystem sees.
RESOLV_CONF = Path("/run/taxiway/6pn-resolv.conf")
RULE_TAG = "taxiway 6pn"
_RULE = ["FORWARD", "-s", str(NETWORK), "-d", str(NETWORK)]


def unavailable_reason() -> str | None:
    """None when the host can carry the private network, else what it lacks (a phrase)."""
    if not sys.platform.startswith("linux"):
        return "Linux"
    if os.geteuid() != 0:
        return "root (the DNS server's port 53 and the addresses on the host's loopback)"
    if shutil.which("ip") is None:
        return "the `ip` command"
    if not Path("/proc/sys/net/ipv6").is_dir():
        return "IPv6 in the host's kernel"
    return None


def forwarding_reason() -> str | None:
    """None when the host routes between the apps' bridges, else what it needs."""
    try:
        if FORWARDING.read_text().strip() == "1":
            return None
    except OSError:
        pass
    return "IPv6 forwarding (sysctl net.ipv6.conf.all.forwarding=1)"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def add_addresses(addresses: Iterable[str]) -> str | None:
    """Hold ``addresses`` on the host's loopback (idempotent); None, else why not."""
    for address in addresses:
        done = _ip("-6", "addr", "replace", f"{address}/128", "dev", "lo", "nodad")
        if done.returncode != 0:
            return f"cannot hold {address} on the loopback: {done.stderr.strip()}"
    return None


def remove_addresses(addresses: Iterable[str]) -> None:
    for address in addresses:
        _ip("-6", "addr", "del", f"{address}/128", "dev", "lo")


def held_addresses() -> set[str]:
    """The private network's addresses on the host's loopback now (read from /proc, not
    with `ip`: a restarted daemon asks on its way up)."""
    held = set()
    try:
        lines = IF_INET6.read_text().splitlines()
    except OSError:
        return held
    for line in lines:
        fields = line.split()
        if len(fields) == 6 and fields[5] == "lo" and fields[0].startswith("fdaa"):
            held.add(str(ipaddress.IPv6Address(int(fields[0], 16))))
    return held


def _ip6tables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip6tables", "-w", *args], capture_output=True, text=True, check=False)


def allow_between_apps() -> str | None:
    """The FORWARD rule for the network's traffic (idempotent); None, else why not. A
    host without ip6tables has no firewall to open."""
    if shutil.which("ip6tables") is None:
        return None
    rule = [*_RULE, "-m", "comment", "--comment", RULE_TAG, "-j", "ACCEPT"]
    if _ip6tables("-C", *rule).returncode == 0:
        return None
    chain, *spec = rule
    added = _ip6tables("-I", chain, "1", *spec)
    if added.returncode != 0:
        return f"ip6tables refused the private network's rule ({added.stderr.strip()})"
    return None


def disallow_between_apps() -> None:
    if shutil.which("ip6tables") is None:
        return
    rule = [*_RULE, "-m", "comment", "--comment", RULE_TAG, "-j", "ACCEPT"]
    while _ip6tables("-D", *rule).returncode == 0:
        pass


def write_resolv_conf() -> Path:
    """The machines' resolv.conf: the private network's DNS server, which answers the
    ``.internal`` names and passes every other name to the host's resolvers."""
    RESOLV_CONF.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    text = f"# written by taxiway: the private network's DNS server\nnameserver {DNS_ADDRESS}\n"
    if not RESOLV_CONF.exists() or RESOLV_CONF.read_text() != text:
        partial = RESOLV_CONF.with_suffix(".tmp")
        partial.write_text(text)
        partial.chmod(0o644)
        partial.replace(RESOLV_CONF)
    return RESOLV_CONF


@contextlib.contextmanager
def shared_lock() -> Iterator[None]:
    """Held (host-wide, by every daemon) while one publishes its entry and takes the
    shared addresses, or finds no entry left and removes them: a daemon starting while
    the last one stops must not lose ``fdaa::3`` between the two."""
    from taxiway.private_net import registry

    fd = os.open(registry.registry_dir() / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def release_scope(scope: str) -> None:
    """Everything the daemon of ``scope`` held in the private network, after it stopped
    or died: its registry entry, its addresses on the host, and the shared ones when no
    other app is left."""
    from taxiway.private_net import registry

    with contextlib.suppress(OSError, TaxiwayError):
        registry.withdraw(scope)
    if unavailable_reason() is not None:
        return
    app_seed = seed(scope)
    own = {flycast_address(app_seed), api_address(app_seed)}
    remove_addresses(own & held_addresses())
    if DNS_ADDRESS not in held_addresses():
        return
    with contextlib.suppress(OSError, TaxiwayError), shared_lock():
        if not registry.read_entries():
            remove_addresses([DNS_ADDRESS])
            disallow_between_apps()
            RESOLV_CONF.unlink(missing_ok=True)
