"""How a namespace machine reaches the host: one name, ``host.taxiway.internal``, that
works for the host's services even when they listen only on its loopback.

The name is the host's address on the app's bridge (the machine's gateway), written in
the machine's own ``/etc/hosts`` (bind-mounted in its mount namespace), with
``localhost`` and ``fly-local-6pn`` (the machine's ``FLY_PRIVATE_IP``, as the platform's
``/etc/hosts`` has it), then the host's own entries. A service bound to every address
answers there as is; one bound only to 127.0.0.1 (a local PostgreSQL) needs the host's
help: the bridge is allowed to carry loopback addresses (``route_localnet``, for this
bridge only) and a DNAT rule, scoped to packets coming from the bridge to the gateway,
sends them on to 127.0.0.1.
That needs ``iptables``; IPv4 forwarding is not involved (the packets end on the host).
The rule carries `taxiway.runtime.outbound`'s tag, so its `remove` deletes it with the
others (``down``, reaping).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from taxiway.runtime import outbound

HOST_NAME = "host.taxiway.internal"
HOSTS = Path("/etc/hosts")
#: Where the machines' hosts files are kept: per scope, one file per machine.
RUN_DIR = Path("/run/taxiway")
ROUTE_LOCALNET = "/proc/sys/net/ipv4/conf/{bridge}/route_localnet"


def hosts_text(gateway: str, private_ip: str, host_hosts: str) -> str:
    """The machine's names first (the first match wins), then the host's entries: the
    machine shares the host's hostname, which its resolver must still find, and names
    the user put there keep working."""
    return (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"{gateway}\t{HOST_NAME}\n"
        f"{private_ip}\tfly-local-6pn\n"
        f"# the host's {HOSTS}:\n{host_hosts}"
    )


def write_hosts(scope: str, machine_id: str, gateway: str, private_ip: str) -> Path:
    """The machine's /etc/hosts, written on the host (tmpfs) for the driver to mount."""
    folder = RUN_DIR / scope
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = folder / f"{machine_id}.hosts"
    try:
        host_hosts = HOSTS.read_text()
    except OSError:
        host_hosts = ""
    path.write_text(hosts_text(gateway, private_ip, host_hosts))
    path.chmod(0o644)
    return path


def remove_hosts(scope: str, machine_id: str | None = None) -> None:
    """One machine's hosts file, or (``machine_id`` None) every one of the scope."""
    folder = RUN_DIR / scope
    if machine_id is not None:
        (folder / f"{machine_id}.hosts").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
        return
    shutil.rmtree(folder, ignore_errors=True)


def ensure_loopback(bridge: str, gateway: str) -> str | None:
    """Let machines on ``bridge`` reach the host's 127.0.0.1 services at ``gateway``
    (idempotent); None when done, else a note saying what it needs."""
    if shutil.which("iptables") is None:
        return (
            f"{HOST_NAME} ({gateway}) reaches the host's services that listen on all its "
            "addresses; ones that listen only on 127.0.0.1 need the `iptables` command "
            "on the host (install it, then `taxiway down` and `up` again)"
        )
    try:
        Path(ROUTE_LOCALNET.format(bridge=bridge)).write_text("1")
    except OSError as exc:
        return f"{HOST_NAME} can't reach the host's 127.0.0.1: route_localnet: {exc.strerror}"
    rule = [
        "PREROUTING",
        "-i",
        bridge,
        "-d",
        f"{gateway}/32",
        "-m",
        "comment",
        "--comment",
        outbound.tag(bridge),
        "-j",
        "DNAT",
        "--to-destination",
        "127.0.0.1",
    ]
    refused = outbound.add_rules([("nat", rule)])
    return None if refused is None else f"{HOST_NAME} can't reach the host's 127.0.0.1: {refused}"
