"""Where a machine listens, read from /proc for real processes, and the hint's sentence."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from process_watch import wait_for
from taxiway.runtime.portcheck import PortFacts, listening_ports, machine_hint

LISTEN = """
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(60)
"""


def facts(**fields: object) -> PortFacts:
    base: dict[str, object] = {
        "machine": "m1",
        "group": "web",
        "internal": 8080,
        "edge_port": 40000,
        "own_network": False,
        "listening": frozenset(),
    }
    return PortFacts(**{**base, **fields})  # type: ignore[arg-type]


def test_listening_ports_are_the_machines_own() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTEN], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with socket.socket() as mine:  # a listener of this process, not of the machine
            mine.bind(("127.0.0.1", 0))
            mine.listen()
            found = listening_ports(proc.pid, os.getpgid(proc.pid), own_network=False)
            assert found == {port}
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: listening_ports(proc.pid, proc.pid, own_network=False) is None, "gone")


def test_a_machine_in_the_hosts_network_has_no_namespace_of_its_own_yet() -> None:
    assert listening_ports(os.getpid(), os.getpgid(0), own_network=True) is None


def test_no_hint_when_the_machine_listens_where_the_edge_connects() -> None:
    assert machine_hint(facts(listening=frozenset({40000, 9091}))) is None
    assert machine_hint(facts(listening=None)) is None


def test_a_machine_on_its_fixed_port_while_port_says_another() -> None:
    hint = machine_hint(facts(listening=frozenset({8080})))
    assert hint is not None
    assert hint.startswith("machine m1 (web) listens on 8080, but the edge sends its traffic ")
    assert "$PORT, 40000" in hint and "`taxiway scale count web=1`" in hint


def test_a_wrong_internal_port_with_its_own_network() -> None:
    hint = machine_hint(facts(edge_port=8080, own_network=True, listening=frozenset({3000})))
    assert hint == (
        "machine m1 (web) listens on 3000, but the edge sends its traffic to internal_port "
        "8080: make the app listen on 8080 ($PORT), or set internal_port = 3000 in fly.toml"
    )


def test_a_machine_that_cannot_bind_a_port_another_machine_holds() -> None:
    early = facts(listening=None, internal_holder="machine m0")
    assert machine_hint(early) is None  # it may still be starting
    hint = machine_hint(facts(listening=None, internal_holder="machine m0", settled=True))
    assert hint is not None and "internal_port 8080 is held by machine m0" in hint
    assert machine_hint(facts(listening=None, settled=True)) is None  # nothing holds 8080
