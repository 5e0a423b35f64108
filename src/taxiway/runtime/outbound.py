"""A way out for an app's machines: their private /24 masqueraded behind the host's address.

On the platform a machine reaches the internet; in its own network namespace it reaches
only the app's bridge, unless the host forwards and masquerades its packets. taxiway
never turns IPv4 forwarding on by itself (that makes the host a router for every
interface, a decision for its owner); where it is on and ``iptables`` is there, each app
gets three rules, tagged with a comment naming its bridge so that `remove` (``down``, a
restarted daemon) finds them: masquerade the subnet leaving by another interface, and let
the bridge's traffic through a FORWARD chain that may drop by default (Docker's does).
`remove` deletes `taxiway.runtime.hostaccess`'s rule too: it carries the same tag.

The host's resolver may be one only the host can reach (systemd-resolved's 127.0.0.53);
`machine_resolv_conf` names the file a machine should see as ``/etc/resolv.conf`` then.
"""

from __future__ import annotations

import ipaddress
import shlex
import shutil
import subprocess
from pathlib import Path

FORWARDING = Path("/proc/sys/net/ipv4/ip_forward")
RESOLV_CONF = Path("/etc/resolv.conf")
#: systemd-resolved's list of the real upstream servers, behind its 127.0.0.53 stub.
UPSTREAM_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")


def unavailable_reason() -> str | None:
    """None when machines can be given a way out, else what the host lacks (a phrase)."""
    try:
        forwarding = FORWARDING.read_text().strip() == "1"
    except OSError:
        forwarding = False
    if not forwarding:
        return "IPv4 forwarding (sysctl net.ipv4.ip_forward=1)"
    if shutil.which("iptables") is None:
        return "the `iptables` command"
    return None


def tag(bridge: str) -> str:
    """The comment on every rule made for ``bridge`` (this module's, `hostaccess`'s)."""
    return f"taxiway {bridge}"


def _rules(bridge: str, subnet: ipaddress.IPv4Network) -> list[tuple[str, list[str]]]:
    """(table, rule) for each rule the app needs."""
    comment = ["-m", "comment", "--comment", tag(bridge)]
    established = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]
    return [
        (
            "nat",
            ["POSTROUTING", "-s", str(subnet), "!", "-o", bridge, *comment, "-j", "MASQUERADE"],
        ),
        ("filter", ["FORWARD", "-i", bridge, *comment, "-j", "ACCEPT"]),
        ("filter", ["FORWARD", "-o", bridge, *established, *comment, "-j", "ACCEPT"]),
    ]


def iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)


def ensure(bridge: str, subnet: ipaddress.IPv4Network) -> str | None:
    """Add the app's rules that are missing (idempotent); None when done, else why not."""
    reason = unavailable_reason()
    if reason is not None:
        return reason
    return add_rules(_rules(bridge, subnet))


def add_rules(rules: list[tuple[str, list[str]]]) -> str | None:
    """Insert each (table, rule) that is missing at the top of its chain; None when done,
    else why not."""
    for table, rule in rules:
        if iptables("-t", table, "-C", *rule).returncode == 0:
            continue
        chain, *spec = rule
        added = iptables("-t", table, "-I", chain, "1", *spec)
        if added.returncode != 0:
            return f"iptables refused a rule ({added.stderr.strip() or 'no reason given'})"
    return None


def remove(bridge: str) -> int:
    """Delete every rule tagged with ``bridge``; how many there were."""
    if shutil.which("iptables") is None:
        return 0
    removed = 0
    marker = f'--comment "{tag(bridge)}"'
    for table in ("nat", "filter"):
        listing = iptables("-t", table, "-S")
        for line in listing.stdout.splitlines():
            if line.startswith("-A ") and marker in line:
                spec = shlex.split(line[3:])  # `-S` quotes only the comment
                removed += iptables("-t", table, "-D", *spec).returncode == 0
    return removed


def machine_resolv_conf() -> tuple[Path | None, str | None]:
    """What a machine should see as /etc/resolv.conf: (a file to show there instead of the
    host's, or None to keep the host's; a note for its log when it will have no resolver).
    The host's serves unless it names only loopback servers, which a machine's own network
    can't reach; systemd-resolved's upstream list stands in for its stub then."""
    try:
        servers = [
            fields[1]
            for fields in (line.split() for line in RESOLV_CONF.read_text().splitlines())
            if len(fields) > 1 and fields[0] == "nameserver"
        ]
    except OSError:
        return None, None
    if not servers or not all(_is_loopback(server) for server in servers):
        return None, None
    if UPSTREAM_RESOLV_CONF.is_file():
        return UPSTREAM_RESOLV_CONF, None
    return None, (
        f"the host's resolver ({', '.join(servers)}) is on its loopback, which this machine's "
        "own network can't reach: names won't resolve in it"
    )


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False
