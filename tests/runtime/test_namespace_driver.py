"""The namespace driver with real namespaces, veths, cgroups and processes (root only)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from process_watch import alive
from taxiway.runtime import cgroups, netns, outbound
from taxiway.runtime.drivers import unusable_reason
from taxiway.runtime.drivers.base import DriverError, LaunchSpec
from taxiway.runtime.drivers.namespace import NamespaceDriver, NamespaceHandle
from taxiway.runtime.environment import private_ip
from taxiway.runtime.leftovers import reap
from taxiway.runtime.logs import MachineLog, read_log
from taxiway.runtime.scope import scope_for
from taxiway.state.store import Store

_missing = unusable_reason()
pytestmark = pytest.mark.skipif(
    _missing is not None, reason=f"the namespace driver needs {_missing}"
)

SERVER = """
import http.server, os, socket, sys
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["FLY_MACHINE_ID"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
print("listening", flush=True)
S(("::", 8080), H).serve_forever()
"""


@pytest.fixture
def app(request: pytest.FixtureRequest) -> str:
    """A unique app name per test."""
    return f"nstest-{os.getpid()}-{request.node.name[-20:]}"


@pytest.fixture
def scope(app: str, tmp_path: Path) -> Iterator[str]:
    """The scope of the app's state folder, with nothing of it left afterwards."""
    name = scope_for(app, tmp_path / "state")
    yield name
    NamespaceDriver().release_app(name)
    assert netns.leftovers(name) == ([], [])
    assert cgroups.scope_cgroups(name) == []


def spec(tmp_path: Path, scope: str, index: int, argv: list[str], **extra: object) -> LaunchSpec:
    machine_id = f"{index:014x}"
    address = private_ip(0x1234, index)
    return LaunchSpec(
        machine_id=machine_id,
        group="web",
        argv=argv,
        env={
            "PATH": os.environ["PATH"],
            "FLY_MACHINE_ID": machine_id,
            "FLY_PRIVATE_IP": address,
        },
        cwd=tmp_path,
        log=MachineLog(tmp_path / "logs" / f"{machine_id}.log"),
        scope=scope,
        private_ip=address,
        **extra,
    )


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def wait_until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


async def fetch_when_up(url: str) -> str:
    deadline = time.monotonic() + 10
    while True:
        try:
            return await asyncio.to_thread(fetch, url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def stop(handle: NamespaceHandle) -> None:
    handle.kill_tree()
    await asyncio.wait_for(handle.wait(), 10)


def test_machines_bind_the_same_port_and_reach_each_other(tmp_path: Path, scope: str) -> None:
    (tmp_path / "server.py").write_text(SERVER)
    driver = NamespaceDriver()

    async def main() -> None:
        a_spec = spec(tmp_path, scope, 1, [sys.executable, "server.py"])
        b_spec = spec(tmp_path, scope, 2, [sys.executable, "server.py"])
        # In parallel, as the runtime starts a group: one of them makes the bridge.
        a, b = await asyncio.gather(driver.launch(a_spec), driver.launch(b_spec))
        try:
            assert a.address == driver.machine_host(scope, a_spec.private_ip)
            assert a.address != b.address
            # The host reaches each machine's IPv4, each on its own port 8080.
            assert await fetch_when_up(f"http://{a.address}:8080/") == a_spec.machine_id
            assert await fetch_when_up(f"http://{b.address}:8080/") == b_spec.machine_id
            # Machine a reaches b by its private IPv6 and by its IPv4.
            client = spec(
                tmp_path,
                scope,
                3,
                py(
                    "import urllib.request as u, sys\n"
                    f"print(u.urlopen('http://[{b_spec.private_ip}]:8080/').read().decode())\n"
                    f"print(u.urlopen('http://{b.address}:8080/').read().decode())\n"
                ),
            )
            probe = await driver.launch(client)
            assert await asyncio.wait_for(probe.wait(), 15) == 0
            lines = [e.line for e in read_log(client.log.path) if e.stream == "stdout"]
            assert lines == [b_spec.machine_id, b_spec.machine_id]
        finally:
            await stop(a)
            await stop(b)

    asyncio.run(main())


def test_volume_and_file_at_their_guest_paths(tmp_path: Path, scope: str) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "data.txt").write_text("in the volume")
    secret = tmp_path / "secret-file"
    secret.write_text("file content")
    guest_dir = f"/tw-test-{os.getpid()}/data"
    guest_file = f"/etc/tw-test-{os.getpid()}.conf"
    code = (
        f"print(open('{guest_dir}/data.txt').read()); print(open('{guest_file}').read()); "
        f"open('{guest_dir}/new.txt', 'w').write('written')"
    )

    async def main() -> int:
        launch = spec(
            tmp_path, scope, 1, py(code), mounts=[(volume, guest_dir), (secret, guest_file)]
        )
        handle = await NamespaceDriver().launch(launch)
        return await asyncio.wait_for(handle.wait(), 15)

    try:
        assert asyncio.run(main()) == 0
        lines = [e.line for e in read_log(tmp_path / "logs" / f"{1:014x}.log")]
        assert "in the volume" in lines and "file content" in lines
        assert (volume / "new.txt").read_text() == "written"
        # On the host the guest paths are only (empty) mount points.
        assert not Path(guest_dir, "data.txt").exists()
        assert not Path(guest_file).exists() or Path(guest_file).read_text() == ""
    finally:
        Path(guest_file).unlink(missing_ok=True)
        for path in (Path(guest_dir), Path(guest_dir).parent):
            if path.is_dir():
                path.rmdir()


def test_memory_limit_is_in_the_cgroup(tmp_path: Path, scope: str) -> None:
    async def main() -> None:
        launch = spec(tmp_path, scope, 1, py("import time; time.sleep(30)"), memory_mb=256, cpus=1)
        handle = await NamespaceDriver().launch(launch)
        try:
            assert handle.cgroup.memory_limit() == 256 * 1024 * 1024
            dirs = handle.cgroup.dirs
            if "cpu" in dirs:  # v1: one cpu's worth of each period
                assert (dirs["cpu"] / "cpu.cfs_quota_us").read_text().split() == ["100000"]
            elif "unified" in dirs:
                assert (dirs["unified"] / "cpu.max").read_text().split() == ["100000", "100000"]
            assert handle.pid in handle.cgroup.procs()
        finally:
            await stop(handle)

    asyncio.run(main())


def test_kill_tree_reaches_a_setsid_escapee_after_the_leader_exited(
    tmp_path: Path, scope: str
) -> None:
    pidfile = tmp_path / "escapee.pid"
    argv = ["/bin/sh", "-c", f"setsid sleep 60 & echo $! > {pidfile}; exit 0"]

    async def main() -> None:
        handle = await NamespaceDriver().launch(spec(tmp_path, scope, 1, argv))
        assert await asyncio.wait_for(handle.wait(), 10) == 0
        await wait_until(pidfile.exists, "the escapee's pid")
        escapee = int(pidfile.read_text())
        assert alive(escapee)
        assert os.getpgid(escapee) != handle.pgid  # out of reach of a group kill
        assert handle.alive()
        handle.kill_tree()
        await wait_until(lambda: not alive(escapee), "the escapee to die")
        assert not handle.alive()

    asyncio.run(main())


def test_freeze_and_thaw(tmp_path: Path, scope: str) -> None:
    counter = tmp_path / "count"
    code = (
        "import time, pathlib\n"
        f"p = pathlib.Path('{counter}')\n"
        "n = 0\n"
        "while True:\n"
        "    n += 1; p.write_text(str(n)); time.sleep(0.01)\n"
    )

    def state(pid: int) -> str:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]

    async def main() -> None:
        handle = await NamespaceDriver().launch(spec(tmp_path, scope, 1, py(code)))
        try:
            await wait_until(counter.exists, "the counter")
            handle.freeze()
            await wait_until(
                lambda: (
                    handle.cgroup.dirs.get("freezer") is None
                    or (handle.cgroup.dirs["freezer"] / "freezer.state").read_text().strip()
                    == "FROZEN"
                ),
                "the freezer",
            )
            frozen_at = counter.read_text()
            await asyncio.sleep(0.2)
            assert counter.read_text() == frozen_at
            assert state(handle.pid) in ("D", "T", "S")
            handle.thaw()
            await wait_until(lambda: counter.read_text() != frozen_at, "the counter to move")
        finally:
            await stop(handle)

    asyncio.run(main())


#: A stand-in daemon: launches machines with the driver, prints their pids, then waits to
#: be killed with -9, leaving them running as a real daemon's death would.
DAEMON = """
import asyncio, json, sys
from pathlib import Path
from taxiway.runtime.drivers.base import DriverError, LaunchSpec
from taxiway.runtime.drivers.namespace import NamespaceDriver
from taxiway.runtime.logs import MachineLog

async def main():
    driver = NamespaceDriver()
    handles = []
    for machine in json.loads(sys.argv[1]):
        log = MachineLog(Path(machine.pop("log")))
        handles.append(await driver.launch(LaunchSpec(**machine, cwd=Path.cwd(), log=log)))
    print(json.dumps([[h.pid, h.pgid, h.start_time] for h in handles]), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def launch_and_die(tmp_path: Path, specs: list[LaunchSpec]) -> list[list]:
    """Launch ``specs`` from a separate process, then kill that process with -9."""
    machines = [
        {
            "machine_id": s.machine_id,
            "group": s.group,
            "argv": s.argv,
            "env": s.env,
            "scope": s.scope,
            "private_ip": s.private_ip,
            "log": str(s.log.path),
        }
        for s in specs
    ]
    daemon = subprocess.Popen(
        [sys.executable, "-c", DAEMON, json.dumps(machines)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        launched = json.loads(daemon.stdout.readline())
    finally:
        daemon.kill()
        daemon.wait()
        daemon.stdout.close()
    return launched


def test_a_dead_daemons_leftovers_are_all_cleaned(tmp_path: Path, app: str, scope: str) -> None:
    """A daemon killed with -9 leaves machines (and an escapee) running, their namespaces,
    veths and cgroups; the next daemon's cleanup removes all of it."""
    pidfile = tmp_path / "escapee.pid"
    argv = ["/bin/sh", "-c", f"setsid sleep 60 & echo $! > {pidfile}; exec sleep 60"]
    first = spec(tmp_path, scope, 1, argv)
    second = spec(tmp_path, scope, 2, py("import time; time.sleep(60)"))
    launched = launch_and_die(tmp_path, [first, second])
    deadline = time.monotonic() + 10
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = [pid for pid, _, _ in launched] + [int(pidfile.read_text())]
    assert all(alive(pid) for pid in pids)
    namespaces, links = netns.leftovers(scope)
    assert len(namespaces) == 2 and len(links) == 3  # two veths and the bridge
    assert len(cgroups.scope_cgroups(scope)) == 2

    # What any driver's next daemon runs (its store knows nothing of these machines):
    state_dir = tmp_path / "state"
    with Store.open(state_dir) as store:
        assert reap(store, app, state_dir) == 2
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(alive(pid) for pid in pids)
    assert netns.leftovers(scope) == ([], [])
    assert cgroups.scope_cgroups(scope) == []
    for controller in ("memory", "freezer"):
        assert not (cgroups.ROOT / controller / cgroups.TOP / scope).exists()
    with Store.open(state_dir) as store:
        assert reap(store, app, state_dir) == 0  # idempotent


def test_signal_reaches_every_process(tmp_path: Path, scope: str) -> None:
    async def main() -> int:
        handle = await NamespaceDriver().launch(
            spec(tmp_path, scope, 1, py("import time; print('up', flush=True); time.sleep(30)"))
        )
        await wait_until(
            lambda: any(e.line == "up" for e in read_log(tmp_path / "logs" / f"{1:014x}.log")),
            "output in the log",
        )
        handle.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(handle.wait(), 10)

    assert asyncio.run(main()) == -signal.SIGTERM


def test_a_signal_reaches_each_process_once(tmp_path: Path, scope: str) -> None:
    """The group and the cgroup overlap: a second SIGINT would interrupt the app's
    handling of the first."""
    code = (
        "import signal, sys, time\n"
        "got = []\n"
        "signal.signal(signal.SIGINT, lambda *a: got.append(1))\n"
        "print('ready', flush=True)\n"
        "while not got: time.sleep(0.01)\n"
        "time.sleep(0.3)\n"  # room for a second delivery, if there were one
        "print('signals', len(got), flush=True)\n"
    )
    log = tmp_path / "logs" / f"{1:014x}.log"

    async def main() -> int:
        handle = await NamespaceDriver().launch(spec(tmp_path, scope, 1, py(code)))
        await wait_until(lambda: any(e.line == "ready" for e in read_log(log)), "ready")
        handle.send_signal(signal.SIGINT)
        return await asyncio.wait_for(handle.wait(), 10)

    assert asyncio.run(main()) == 0
    assert "signals 1" in [e.line for e in read_log(log)]


def test_a_missing_command_fails_at_once(tmp_path: Path, scope: str) -> None:
    async def main() -> None:
        await NamespaceDriver().launch(spec(tmp_path, scope, 1, ["no-such-command-here"]))

    with pytest.raises(DriverError) as caught:
        asyncio.run(main())
    assert str(caught.value) == (f"machine {1:014x} (web): command not found: no-such-command-here")


def test_a_loopback_resolver_is_replaced_by_the_upstream_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd-resolved's stub (127.0.0.53) is out of a machine's reach: it sees the
    upstream list instead; a resolver it can reach is kept."""
    resolv, upstream = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    monkeypatch.setattr(outbound, "RESOLV_CONF", resolv)
    monkeypatch.setattr(outbound, "UPSTREAM_RESOLV_CONF", upstream)
    resolv.write_text("nameserver 127.0.0.53\noptions edns0\n")
    upstream.write_text("nameserver 192.0.2.53\n")
    assert outbound.machine_resolv_conf() == (upstream, None)
    upstream.unlink()
    file, note = outbound.machine_resolv_conf()
    assert file is None and "127.0.0.53" in note
    resolv.write_text("nameserver 10.0.0.53\nnameserver ::1\n")
    assert outbound.machine_resolv_conf() == (None, None)


#: Runs inside a sandbox network namespace standing in for the host: with forwarding
#: on, `auto` picks the namespace driver and a machine reaches the "internet" (another
#: namespace, which has no route back to the machine's subnet: only masquerading works).
SANDBOXED = """
import asyncio, json, subprocess, sys
from pathlib import Path
from taxiway.runtime import outbound
from taxiway.runtime.drivers import select_driver
from taxiway.runtime.drivers.base import LaunchSpec
from taxiway.runtime.logs import MachineLog, read_log

scope, machine_id, address, code = sys.argv[1:5]
forwarding = Path("/proc/sys/net/ipv4/ip_forward")
forwarding.write_text("0")
picked_without = select_driver("auto").name
forwarding.write_text("1")
driver = select_driver("auto")
log = MachineLog(Path("machine.log"))

async def main():
    handle = await driver.launch(LaunchSpec(
        machine_id=machine_id, group="web", argv=[sys.executable, "-c", code],
        env={"PATH": "/usr/bin:/bin"}, cwd=Path.cwd(), log=log, scope=scope, private_ip=address,
    ))
    return await asyncio.wait_for(handle.wait(), 15)

code = asyncio.run(main())
rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
running = driver.release_app(scope)
after = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
print(json.dumps({
    "picked_without_forwarding": picked_without,
    "picked": driver.name,
    "exit": code,
    "lines": [e.line for e in read_log(log.path)],
    "tagged_rules": rules.count("taxiway tw"),
    "tagged_rules_after": after.count("taxiway tw"),
}))
"""

#: The "internet": answers each connection with the address it came from.
OUTSIDE = """
import socket
server = socket.create_server(("198.51.100.2", 9000))
print("listening", flush=True)
while True:
    conn, peer = server.accept()
    conn.sendall(peer[0].encode())
    conn.close()
"""


@pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables")
def test_a_way_out_through_the_host_and_auto_picks_the_driver_then(
    tmp_path: Path, scope: str
) -> None:
    sandbox, outside = f"twtest-host-{os.getpid()}", f"twtest-www-{os.getpid()}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", sandbox)
    ip("netns", "add", outside)
    server = None
    try:
        ip("-n", sandbox, "link", "add", "up0", "type", "veth", "peer", "up0", "netns", outside)
        for ns, address in ((sandbox, "198.51.100.1/30"), (outside, "198.51.100.2/30")):
            ip("-n", ns, "addr", "add", address, "dev", "up0")
            ip("-n", ns, "link", "set", "up0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{outside}", sys.executable, "-c", OUTSIDE],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout.readline().strip() == "listening"
        client = (
            "import socket\n"
            "s = socket.create_connection(('198.51.100.2', 9000), timeout=5)\n"
            "print('seen as', s.recv(100).decode())\n"
        )
        result = subprocess.run(
            [
                "nsenter",
                f"--net=/run/netns/{sandbox}",
                sys.executable,
                "-c",
                SANDBOXED,
                scope,
                f"{1:014x}",
                private_ip(0x1234, 1),
                client,
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["picked_without_forwarding"] == "process"
        assert report["picked"] == "namespace"
        assert report["exit"] == 0, report["lines"]
        assert "seen as 198.51.100.1" in report["lines"]  # masqueraded behind the "host"
        assert report["tagged_rules"] == 2 and report["tagged_rules_after"] == 0
    finally:
        if server is not None:
            server.kill()
            server.wait()
            server.stdout.close()
        subprocess.run(["ip", "netns", "del", sandbox], check=False)
        subprocess.run(["ip", "netns", "del", outside], check=False)


def test_a_subnet_another_interface_has_is_skipped(tmp_path: Path, scope: str) -> None:
    """Another checkout's bridge (or a LAN) on the scope's first /24: the next one, the same
    each time, and the machine's address is in it."""
    first, second = netns.subnet_candidate(scope, 0), netns.subnet_candidate(scope, 1)
    other = f"twtest{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", other, "type", "bridge"], check=True)
    try:
        subprocess.run(
            ["ip", "addr", "add", f"{first.network_address + 1}/24", "dev", other], check=True
        )
        assert netns.pick_subnet(scope) == second

        async def main() -> str:
            handle = await NamespaceDriver().launch(spec(tmp_path, scope, 1, py("pass")))
            await asyncio.wait_for(handle.wait(), 10)
            return handle.address

        assert ipaddress.IPv4Address(asyncio.run(main())) in second
    finally:
        subprocess.run(["ip", "link", "del", other], check=False)
