"""Per-machine network namespaces on a per-app bridge, as the platform's private network.

Every machine of an app gets a named network namespace (``tw-<app hash>-<machine id>``)
joined to the app's bridge by a veth pair. Inside it has ``lo``, an IPv4 address from the
app's private /24 (the host is ``.1`` on the bridge, so the edge and checks reach every
machine) and its 6PN-style ``FLY_PRIVATE_IP`` on the same link, so machines reach each
other by either address and can all bind the same port. Names carry a hash of the app,
so a restarted daemon finds what a dead one left (`cleanup_leftovers`).

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

NETNS_DIR = Path("/run/netns")
#: The interface name the machine sees (as a VM sees its NIC).
GUEST_IF = "eth0"
#: Machines start in parallel (threads): one of them makes the app's bridge.
_BRIDGE_LOCK = threading.Lock()


class NetnsError(Exception):
    """An ``ip`` command failed; the message carries its stderr."""


def app_hash(app: str) -> str:
    return hashlib.sha1(app.encode()).hexdigest()


def bridge_name(app: str) -> str:
    """``tw`` + 6 hex digits: every interface of the app starts with it (≤ 15 chars)."""
    return "tw" + app_hash(app)[:6]


def veth_name(app: str, machine_id: str) -> str:
    """The host end of a machine's veth: the bridge's name + 7 hex digits of the machine."""
    return bridge_name(app) + hashlib.sha1(machine_id.encode()).hexdigest()[:7]


def netns_name(app: str, machine_id: str) -> str:
    return f"tw-{app_hash(app)[:6]}-{machine_id}"


def app_subnet(app: str) -> ipaddress.IPv4Network:
    """The app's private 10.a.b.0/24, derived from its name so it never changes."""
    digest = hashlib.sha1(app.encode()).digest()
    return ipaddress.IPv4Network(f"10.{digest[0]}.{digest[1]}.0/24")


def _index(private_ip: str) -> int:
    """The machine's index, which `environment.private_ip` encodes in groups 5 and 6."""
    groups = ipaddress.IPv6Address(private_ip).exploded.split(":")
    return (int(groups[4], 16) << 16) | int(groups[5], 16)


def machine_ipv4(app: str, private_ip: str) -> str:
    """The machine's IPv4: known before launch, the same across restarts. Indexes wrap
    around the /24's 253 machine addresses (``.2``–``.254``)."""
    subnet = app_subnet(app)
    return str(subnet.network_address + 2 + (_index(private_ip) - 1) % 253)


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


def ensure_bridge(app: str, private_ip: str) -> None:
    """The app's bridge with the host's addresses on it (idempotent)."""
    bridge = bridge_name(app)
    subnet = app_subnet(app)
    host6 = ipv6_link(private_ip).network_address + 1
    with _BRIDGE_LOCK:
        if link_exists(bridge):
            return
        _ip(
            "-batch",
            "-",
            batch=(
                f"link add {bridge} type bridge\n"
                f"addr add {subnet.network_address + 1}/{subnet.prefixlen} dev {bridge}\n"
                f"addr add {host6}/64 dev {bridge} nodad\n"
                f"link set {bridge} up\n"
            ),
        )


class MachineNet(msgspec.Struct, frozen=True):
    """One machine's namespace and addresses."""

    app: str
    machine_id: str
    private_ip: str

    @property
    def netns(self) -> str:
        return netns_name(self.app, self.machine_id)

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def ipv4(self) -> str:
        return machine_ipv4(self.app, self.private_ip)

    def ensure(self) -> None:
        """Bridge, namespace, veth pair and addresses; a no-op when they all exist."""
        ensure_bridge(self.app, self.private_ip)
        veth = veth_name(self.app, self.machine_id)
        if self.path.exists() and link_exists(veth):
            return
        self.remove()  # half-made (a crash mid-setup): start over
        bridge = bridge_name(self.app)
        subnet = app_subnet(self.app)
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
                f"route add default via {subnet.network_address + 1}\n"
            ),
        )

    def remove(self) -> None:
        """Delete the veth (synchronously; a namespace's own cleanup is deferred by the
        kernel) and the namespace. Idempotent."""
        veth = veth_name(self.app, self.machine_id)
        if link_exists(veth):
            _ip("link", "del", veth, check=False)
        if self.path.exists():
            _ip("netns", "del", self.netns, check=False)


def leftovers(app: str) -> tuple[list[str], list[str]]:
    """The app's namespaces and interfaces (veths, then the bridge) that exist now."""
    prefix = f"tw-{app_hash(app)[:6]}-"
    namespaces = sorted(p.name for p in NETNS_DIR.glob(prefix + "*")) if NETNS_DIR.is_dir() else []
    bridge = bridge_name(app)
    links = sorted(name for _, name in socket.if_nameindex() if name.startswith(bridge))
    links.sort(key=lambda name: name == bridge)  # veths before the bridge
    return namespaces, links


def cleanup_leftovers(app: str) -> int:
    """Remove every namespace and interface of the app (a restarted daemon, `down`);
    how many were found."""
    namespaces, links = leftovers(app)
    for link in links:
        _ip("link", "del", link, check=False)
    for name in namespaces:
        _ip("netns", "del", name, check=False)
    return len(namespaces) + len(links)
