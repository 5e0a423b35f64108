"""Multi-container machines with the docker driver, against a real engine: the containers
share the main one's network (localhost), start in depends_on order (started, healthy,
exited successfully), their output is tagged in the machine's log, a container that
exits follows its restart policy, and signals (a container's own stop signal where it
names one), pause and kill reach all of them. Skips
(saying why) where no engine answers or the base image is absent."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import uuid
from pathlib import Path

import pytest

from engine_support import skip_without_image
from taxiway.runtime.drivers.base import ContainerLaunch, DriverError, LaunchSpec
from taxiway.runtime.environment import private_ip
from taxiway.runtime.logs import MachineLog
from taxiway.runtime.scope import seed

SERVER = b"""
import http.server, os
print("main up", flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(os.environ["FLY_MACHINE_ID"].encode())
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8080), H).serve_forever()
"""

HEALTH = [
    "python3",
    "-c",
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/', timeout=1)",
]
PROBE = """
import signal, sys, time, urllib.request
def stop(number, frame):
    print("probe stopped by", signal.Signals(number).name, flush=True)
    sys.exit(0)
signal.signal(signal.SIGUSR1, stop)
print("probe got", urllib.request.urlopen("http://127.0.0.1:8080/").read().decode(), flush=True)
time.sleep(3600)
"""


@pytest.fixture(autouse=True)
def _needs_the_python_image() -> None:
    skip_without_image("python:3.12-slim")


@pytest.fixture(scope="module")
def image():
    skip_without_image("python:3.12-slim")  # before the module-wide build
    import tarfile

    import docker

    client = docker.from_env()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (
            (
                "Dockerfile",
                b"FROM python:3.12-slim\nWORKDIR /srv\nCOPY server.py .\n"
                b'CMD ["python3", "server.py"]\n',
            ),
            ("server.py", SERVER),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    tag = f"taxiway-test/containers:{uuid.uuid4().hex[:8]}"
    client.images.build(
        fileobj=context, custom_context=True, tag=tag, rm=True, labels={"taxiway.test": "multic"}
    )
    yield tag
    client.images.remove(tag, force=True)


@pytest.fixture
def scope():
    from taxiway.runtime.drivers.engine_scope import remove_scope

    name = f"mc-{uuid.uuid4().hex[:8]}"
    yield name
    remove_scope(name)


def spec_for(tmp_path: Path, scope: str, image: str, containers: list[ContainerLaunch]):
    (tmp_path / "logs").mkdir(exist_ok=True)
    address = private_ip(seed(scope), 1)
    return LaunchSpec(
        machine_id="m1",
        group="app",
        argv=["python3", "server.py"],
        env={"FLY_MACHINE_ID": "m1", "FLY_PRIVATE_IP": address},
        cwd=tmp_path,
        log=MachineLog(tmp_path / "logs" / "m1.log", group="app"),
        scope=scope,
        private_ip=address,
        image=image,
        app="mc",
        containers=containers,
    )


def other(name: str, image: str, argv: list[str], **kw) -> ContainerLaunch:
    return ContainerLaunch(name=name, image=image, argv=argv, env={"FLY_MACHINE_ID": "m1"}, **kw)


def lines(spec: LaunchSpec) -> list[str]:
    if not spec.log.path.exists():
        return []
    text = spec.log.path.read_text()
    return [json.loads(line)["line"] for line in text.splitlines() if line.strip()]


def engine_containers(scope: str) -> dict[str, dict]:
    """The scope's containers by their container label, as the engine shows them."""
    import docker

    api = docker.from_env().api
    found = api.containers(all=True, filters={"label": f"taxiway.scope={scope}"})
    return {c["Labels"].get("taxiway.container", "?"): c for c in found}


async def until(check, what: str, tries: int = 200) -> None:
    for _ in range(tries):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(what)


def test_containers_share_localhost_and_start_in_dependency_order(tmp_path, image, scope):
    from taxiway.runtime.drivers.docker import DockerDriver

    async def main():
        driver = DockerDriver()
        containers = [
            ContainerLaunch(name="app", built=True, health=HEALTH),
            other("job", image, ["python3", "-c", "print('job done')"]),
            other(
                "probe",
                image,
                ["python3", "-c", PROBE],
                depends_on=[("app", "healthy"), ("job", "exited_successfully")],
                stop_signal="SIGUSR1",  # its own; the others get the machine's
            ),
            other(
                "flaky",
                image,
                ["python3", "-c", "print('flaky ran'); raise SystemExit(3)"],
                restart="on-failure",
                max_retries=1,
            ),
        ]
        spec = spec_for(tmp_path, scope, image, containers)
        handle = await driver.launch(spec)
        out = lambda: "\n".join(lines(spec))  # noqa: E731
        await until(lambda: "[probe] probe got m1" in out(), f"no probe output: {out()}")
        settled = "container flaky exited with code 3; it stays down"
        await until(lambda: settled in out(), f"flaky never settled: {out()}")
        text = out()
        assert "main up" in text and "[job] job done" in text
        assert text.count("[flaky] flaky ran") == 2  # once, then its one restart
        assert "container flaky exited with code 3; restarting it" in text
        assert text.index("[job] job done") < text.index("[probe] probe got m1")

        seen = engine_containers(scope)
        assert sorted(seen) == ["app", "flaky", "job", "probe"]
        owner = seen["app"]["Id"]
        assert seen["probe"]["HostConfig"]["NetworkMode"] == f"container:{owner}"
        assert {c["Labels"]["taxiway.machine"] for c in seen.values()} == {"m1"}

        handle.freeze()
        paused = engine_containers(scope)
        assert paused["app"]["State"] == paused["probe"]["State"] == "paused"
        handle.thaw()

        handle.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(handle.wait(), 20) == 143
        await until(lambda: "[probe] probe stopped by SIGUSR1" in out(), f"probe: {out()}")
        handle.kill_tree()
        await until(
            lambda: all(c["State"] != "running" for c in engine_containers(scope).values()),
            "a container still runs after kill_tree",
        )
        driver.release_machine(scope, "m1")
        assert engine_containers(scope) == {}

    asyncio.run(main())


def test_a_container_that_cannot_start_stops_the_whole_machine(tmp_path, image, scope):
    from taxiway.runtime.drivers.docker import DockerDriver

    async def main():
        driver = DockerDriver()
        missing = f"taxiway-test/absent:{uuid.uuid4().hex[:8]}"
        spec = spec_for(
            tmp_path,
            scope,
            image,
            [ContainerLaunch(name="app", built=True), other("side", missing, ["true"])],
        )
        with pytest.raises(DriverError) as caught:
            await driver.launch(spec)
        message = str(caught.value)
        assert message.startswith(
            f"machine m1 (app), container side: the image {missing} is not in the engine and "
            "could not be pulled ("
        )
        await until(
            lambda: all(c["State"] != "running" for c in engine_containers(scope).values()),
            "the main container still runs",
        )

        broken = [
            ContainerLaunch(name="app", built=True),
            other("db", image, ["python3", "-c", "raise SystemExit(1)"], health=["true"]),
            other("web", image, ["true"], depends_on=[("db", "healthy")]),
        ]
        with pytest.raises(DriverError, match="container db exited") as caught:
            await driver.launch(spec_for(tmp_path, scope, image, broken))
        assert "container web waits for it to be healthy" in str(caught.value)

    asyncio.run(main())
