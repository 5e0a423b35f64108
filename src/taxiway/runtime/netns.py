"""Per-machine network namespaces on a per-app bridge, as the platform's private network.

Every machine of an app gets a named network namespace (``tw-<scope hash>-<machine id>``)
joined to the app's bridge by a veth pair. Inside it has ``lo``, an IPv4 address from the
app's private /24 (the host is ``.1`` on the bridge, so the edge and checks reach every
machine, and the machine reaches the host there) and its 6PN-style ``FLY_PRIVATE_IP`` on
the same link, so machines reach each other by either address and can all bind the same
port. Names carry a hash of the scope (the state folder, `taxiway.runtime.scope`), so a
restarted daemon finds what a dead one left (`cleanup_leftovers`) and another checkout of
the same app never touches them. The /24 is derived from the scope too, skipping one
another interface of the host already uses (`pick_subnet`).

A one-off (release command, machine check) gets a namespace of its own on the bridge
too, with an address from the top of the /24 (`ONEOFF_BASE`), removed when it ends.

A way out to the world beyond the host is `taxiway.runtime.outbound`'s concern. Interfaces
are looked up in the caller's own network namespace (`socket.if_nametoindex`), never
through /sys, which shows the namespace it was mounted in.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import msgspec

from taxiway.private_net import addresses as private_net

NETNS_DIR = Path("/run/netns")
#: The interface name the machine sees (as a VM sees its NIC).
GUEST_IF = "eth0"
#: Machines start in parallel (threads): one of them makes the app's bridge.
_BRIDGE_LOCK = threading.Lock()


class NetnsError(Exception):
    """An ``ip`` command failed; the message carries its stderr."""


def scope_hash(scope: str) -> str:
    return hashlib.sha1(scope.encode()).hexdigest()


def bridge_name(scope: str) -> str:
    """``tw`` + 6 hex digits: every interface of the scope starts with it (≤ 15 chars)."""
    return "tw" + scope_hash(scope)[:6]


def veth_name(scope: str, machine_id: str) -> str:
    """The host end of a machine's veth: the bridge's name + 7 hex digits of the machine."""
    return bridge_name(scope) + hashlib.sha1(machine_id.encode()).hexdigest()[:7]


def netns_name(scope: str, machine_id: str) -> str:
    return f"tw-{scope_hash(scope)[:6]}-{machine_id}"


#: How many /24s `pick_subnet` tries before it gives up.
_SUBNET_TRIES = 64


def subnet_candidate(scope: str, attempt: int) -> ipaddress.IPv4Network:
    """The scope's ``attempt``-th choice of a private 10.a.b.0/24 (the first one unless
    another interface of the host has it)."""
    digest = hashlib.sha1(f"{scope}#{attempt}".encode() if attempt else scope.encode()).digest()
    return ipaddress.IPv4Network(f"10.{digest[0]}.{digest[1]}.0/24")


def host_networks(exclude: str) -> list[ipaddress.IPv4Network]:
    """The IPv4 networks on the host's interfaces, but ``exclude``'s."""
    out = _ip("-o", "-4", "addr", "show", check=False)
    networks = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[1] != exclude and fields[2] == "inet":
            networks.append(ipaddress.IPv4Interface(fields[3]).network)
    return networks


def pick_subnet(scope: str) -> ipaddress.IPv4Network:
    """The scope's /24: its bridge's when it has one, else the first candidate that no
    other interface's network overlaps (another checkout's bridge, a LAN), so the same
    folder gets the same /24 whenever it is free."""
    bridge = bridge_name(scope)
    if link_exists(bridge):
        for line in _ip("-o", "-4", "addr", "show", "dev", bridge, check=False).splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[2] == "inet":
                return ipaddress.IPv4Interface(fields[3]).network
    taken = host_networks(exclude=bridge)
    for attempt in range(_SUBNET_TRIES):
        candidate = subnet_candidate(scope, attempt)
        if not any(candidate.overlaps(network) for network in taken):
            return candidate
    raise NetnsError(f"no free 10.x.y.0/24 for the app's bridge after {_SUBNET_TRIES} tries")


def gateway(subnet: ipaddress.IPv4Network) -> str:
    """The host's address on the bridge: machines reach the host there."""
    return str(subnet.network_address + 1)


def _index(private_ip: str) -> int:
    """The machine's index, which `environment.private_ip` encodes in groups 5 and 6."""
    groups = ipaddress.IPv6Address(private_ip).exploded.split(":")
    return (int(groups[4], 16) << 16) | int(groups[5], 16)


#: Machines take ``.2``–``.239``; one-offs ``.240``–``.254`` (their index counts down
#: from ``.254``, past `ONEOFF_BASE`).
MACHINE_ADDRESSES = 238
ONEOFF_BASE = 0xFFFF0000
ONEOFF_SLOTS = 15


def machine_ipv4(subnet: ipaddress.IPv4Network, private_ip: str) -> str:
    """The machine's IPv4: known before launch, the same across restarts. Machine indexes
    wrap around the /24's first 238 machine addresses; a one-off's has its own range."""
    index = _index(private_ip)
    if index >= ONEOFF_BASE:
        return str(subnet.network_address + 254 - (index - ONEOFF_BASE) % ONEOFF_SLOTS)
    return str(subnet.network_address + 2 + (index - 1) % MACHINE_ADDRESSES)


def ipv6_link(private_ip: str) -> ipaddress.IPv6Network:
    """The /64 every machine of the app shares (`private_ip` varies only below it)."""
    return ipaddress.IPv6Network(f"{private_ip}/64", strict=False)


#: The capabilities namespaces and veths need (bit numbers in /proc/self/status CapEff).
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


def usable() -> str | None:
    """None when namespaces can be made here, else what is missing (a phrase)."""
    if not sys.platform.startswith("linux"):
        return "Linux"
    if os.geteuid() != 0:
        return "root"
    if not _has_capabilities(CAP_NET_ADMIN, CAP_SYS_ADMIN):
        return "the CAP_SYS_ADMIN and CAP_NET_ADMIN capabilities (a container needs --privileged)"
    for tool in ("ip", "nsenter", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"the `{tool}` command"
    return None


def _has_capabilities(*bits: int) -> bool:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            effective = int(line.split()[1], 16)
            return all(effective >> bit & 1 for bit in bits)
    return False


def _ip(*args: str, batch: str | None = None, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], input=batch, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetnsError(result.stderr.strip() or f"ip {' '.join(args)} failed")
    return result.stdout


def link_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def ensure_bridge(scope: str, subnet: ipaddress.IPv4Network, private_ip: str) -> None:
    """The scope's bridge with the host's addresses on it (idempotent)."""
    bridge = bridge_name(scope)
    host6 = ipv6_link(private_ip).network_address + 1
    with _BRIDGE_LOCK:
        if link_exists(bridge):
            return
        _ip(
            "-batch",
            "-",
            batch=(
                f"link add {bridge} type bridge\n"
                f"addr add {gateway(subnet)}/{subnet.prefixlen} dev {bridge}\n"
                f"addr add {host6}/64 dev {bridge} nodad\n"
                f"link set {bridge} up\n"
            ),
        )


class MachineNet(msgspec.Struct, frozen=True):
    """One machine's namespace and addresses."""

    scope: str
    machine_id: str
    private_ip: str
    subnet: ipaddress.IPv4Network

    @property
    def netns(self) -> str:
        return netns_name(self.scope, self.machine_id)

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def ipv4(self) -> str:
        return machine_ipv4(self.subnet, self.private_ip)

    def ensure(self) -> None:
        """Bridge, namespace, veth pair and addresses; a no-op when they all exist."""
        ensure_bridge(self.scope, self.subnet, self.private_ip)
        veth = veth_name(self.scope, self.machine_id)
        if self.path.exists() and link_exists(veth):
            return
        self.remove()  # half-made (a crash mid-setup): start over
        bridge = bridge_name(self.scope)
        subnet = self.subnet
        _ip(
            "-batch",
            "-",
            batch=(
                f"netns add {self.netns}\n"
                f"link add {veth} type veth peer name {GUEST_IF} netns {self.netns}\n"
                f"link set {veth} master {bridge} up\n"
            ),
        )
        _ip(
            "-n",
            self.netns,
            "-batch",
            "-",
            batch=(
                "link set lo up\n"
                f"addr add {self.ipv4}/{subnet.prefixlen} dev {GUEST_IF}\n"
                f"addr add {self.private_ip}/64 dev {GUEST_IF} nodad\n"
                f"link set {GUEST_IF} up\n"
                f"route add default via {gateway(subnet)}\n"
                f"route add {private_net.NETWORK} via {ipv6_link(self.private_ip)[1]}\n"
            ),
        )

    def remove(self) -> None:
        remove_machine_net(self.scope, self.machine_id)


def remove_machine_net(scope: str, machine_id: str) -> None:
    """Delete a machine's veth (synchronously; a namespace's own cleanup is deferred by
    the kernel) and its namespace. Idempotent."""
    veth = veth_name(scope, machine_id)
    if link_exists(veth):
        _ip("link", "del", veth, check=False)
    netns = netns_name(scope, machine_id)
    if (NETNS_DIR / netns).exists():
        _ip("netns", "del", netns, check=False)


def leftovers(scope: str) -> tuple[list[str], list[str]]:
    """The scope's namespaces and interfaces (veths, then the bridge) that exist now."""
    prefix = f"tw-{scope_hash(scope)[:6]}-"
    namespaces = sorted(p.name for p in NETNS_DIR.glob(prefix + "*")) if NETNS_DIR.is_dir() else []
    bridge = bridge_name(scope)
    links = sorted(name for _, name in socket.if_nameindex() if name.startswith(bridge))
    links.sort(key=lambda name: name == bridge)  # veths before the bridge
    return namespaces, links


def cleanup_leftovers(scope: str) -> int:
    """Remove every namespace and interface of the scope (a restarted daemon, `down`);
    how many were found."""
    namespaces, links = leftovers(scope)
    for link in links:
        _ip("link", "del", link, check=False)
    for name in namespaces:
        _ip("netns", "del", name, check=False)
    return len(namespaces) + len(links)
