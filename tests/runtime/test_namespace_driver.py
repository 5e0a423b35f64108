"""The namespace driver with real namespaces, veths, cgroups and processes (root only)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from taxiway.runtime import cgroups, netns
from taxiway.runtime.drivers.base import LaunchSpec
from taxiway.runtime.drivers.namespace import NamespaceDriver, NamespaceHandle, unusable_reason
from taxiway.runtime.environment import private_ip
from taxiway.runtime.logs import MachineLog, read_log

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
    """A unique app name per test, with nothing of it left afterwards."""
    name = f"nstest-{os.getpid()}-{request.node.name[-20:]}"
    yield name
    NamespaceDriver().release_app(name)
    assert netns.leftovers(name) == ([], [])
    assert cgroups.app_cgroups(name) == []


def spec(tmp_path: Path, app: str, index: int, argv: list[str], **extra: object) -> LaunchSpec:
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
        app=app,
        private_ip=address,
        **extra,
    )


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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


def test_machines_bind_the_same_port_and_reach_each_other(tmp_path: Path, app: str) -> None:
    (tmp_path / "server.py").write_text(SERVER)
    driver = NamespaceDriver()

    async def main() -> None:
        a_spec = spec(tmp_path, app, 1, [sys.executable, "server.py"])
        b_spec = spec(tmp_path, app, 2, [sys.executable, "server.py"])
        # In parallel, as the runtime starts a group: one of them makes the bridge.
        a, b = await asyncio.gather(driver.launch(a_spec), driver.launch(b_spec))
        try:
            assert a.address == driver.machine_host(app, a_spec.private_ip)
            assert a.address != b.address
            # The host reaches each machine's IPv4, each on its own port 8080.
            assert await fetch_when_up(f"http://{a.address}:8080/") == a_spec.machine_id
            assert await fetch_when_up(f"http://{b.address}:8080/") == b_spec.machine_id
            # Machine a reaches b by its private IPv6 and by its IPv4.
            client = spec(
                tmp_path,
                app,
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


def test_volume_and_file_at_their_guest_paths(tmp_path: Path, app: str) -> None:
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
            tmp_path, app, 1, py(code), mounts=[(volume, guest_dir), (secret, guest_file)]
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


def test_memory_limit_is_in_the_cgroup(tmp_path: Path, app: str) -> None:
    async def main() -> None:
        launch = spec(tmp_path, app, 1, py("import time; time.sleep(30)"), memory_mb=256, cpus=1)
        handle = await NamespaceDriver().launch(launch)
        try:
            assert handle.cgroup.memory_limit() == 256 * 1024 * 1024
            assert handle.pid in handle.cgroup.procs()
        finally:
            await stop(handle)

    asyncio.run(main())


def test_kill_tree_reaches_a_setsid_escapee_after_the_leader_exited(
    tmp_path: Path, app: str
) -> None:
    pidfile = tmp_path / "escapee.pid"
    argv = ["/bin/sh", "-c", f"setsid sleep 60 & echo $! > {pidfile}; exit 0"]

    async def main() -> None:
        handle = await NamespaceDriver().launch(spec(tmp_path, app, 1, argv))
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


def test_freeze_and_thaw(tmp_path: Path, app: str) -> None:
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
        handle = await NamespaceDriver().launch(spec(tmp_path, app, 1, py(code)))
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


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # left running
def test_a_dead_daemons_leftovers_are_all_cleaned(tmp_path: Path, app: str) -> None:
    """A daemon killed with -9 leaves machines (and an escapee) running, their namespaces,
    veths and cgroups; the next daemon's cleanup removes all of it."""
    pidfile = tmp_path / "escapee.pid"
    argv = ["/bin/sh", "-c", f"setsid sleep 60 & echo $! > {pidfile}; exec sleep 60"]

    async def leave_running() -> list[int]:
        driver = NamespaceDriver()
        first = await driver.launch(spec(tmp_path, app, 1, argv))
        second = await driver.launch(spec(tmp_path, app, 2, py("import time; time.sleep(60)")))
        await wait_until(pidfile.exists, "the escapee's pid")
        return [first.pid, second.pid, int(pidfile.read_text())]

    pids = asyncio.run(leave_running())  # the loop ends; the processes stay
    assert all(alive(pid) for pid in pids)
    namespaces, links = netns.leftovers(app)
    assert len(namespaces) == 2 and len(links) == 3  # two veths and the bridge
    assert len(cgroups.app_cgroups(app)) == 2

    assert NamespaceDriver().release_app(app) == 7
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(alive(pid) for pid in pids)
    assert netns.leftovers(app) == ([], [])
    assert cgroups.app_cgroups(app) == []
    for controller in ("memory", "freezer"):
        assert not (cgroups.ROOT / controller / cgroups.TOP / app).exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # left running
def test_reap_orphan_kills_the_machines_cgroup(tmp_path: Path, app: str) -> None:
    pidfile = tmp_path / "escapee.pid"
    argv = ["/bin/sh", "-c", f"setsid sleep 60 & echo $! > {pidfile}; exec sleep 60"]

    async def leave_running() -> tuple[int, int, float | None]:
        handle = await NamespaceDriver().launch(spec(tmp_path, app, 1, argv))
        await wait_until(pidfile.exists, "the escapee's pid")
        return handle.pid, handle.pgid, handle.start_time

    pid, pgid, start = asyncio.run(leave_running())
    escapee = int(pidfile.read_text())
    assert NamespaceDriver().reap_orphan(pid, pgid, start)
    deadline = time.monotonic() + 10
    while (alive(pid) or alive(escapee)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid) and not alive(escapee)
    assert cgroups.app_cgroups(app) == []


def test_signal_reaches_every_process(tmp_path: Path, app: str) -> None:
    async def main() -> int:
        handle = await NamespaceDriver().launch(
            spec(tmp_path, app, 1, py("import time; print('up', flush=True); time.sleep(30)"))
        )
        await wait_until(
            lambda: any(e.line == "up" for e in read_log(tmp_path / "logs" / f"{1:014x}.log")),
            "output in the log",
        )
        handle.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(handle.wait(), 10)

    assert asyncio.run(main()) == -signal.SIGTERM
