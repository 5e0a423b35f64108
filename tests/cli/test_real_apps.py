"""The sample apps of tests/apps, each copied as it is and run the way its author would
run it here: `taxiway up -d` with the docker driver, then what a user checks in a browser,
with curl and with the CLI. No app is edited for taxiway (a deploy test changes the code
as its author would). Each app is built and started once, for the tests of its class,
and taken down, with its images, after them. Skips where no engine answers or a base
image is absent (`bash .ci/engine`; node's stand-in is built on demand)."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_runner import run_taxiway as taxiway
from docker_apps import DOCKER, ca_context, containers, edge_url, get, remove_images, status
from engine_support import ensure_stand_in_node, skip_without_image

APPS = Path(__file__).resolve().parent.parent / "apps"
BUILD_TIMEOUT_S = 600


def copy_of(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the sample app ``name``, untouched, in a fresh folder."""
    return Path(shutil.copytree(APPS / name, tmp_path_factory.mktemp("apps") / name))


#: Variables a developer's shell often has: the platform gives a machine none of them.
SHELL_ENV = {"TZ": "Asia/Tokyo", "USER": "someone", "LOGNAME": "someone"}


def up(folder: Path) -> None:
    """`taxiway up -d` with the docker driver, from a developer's shell."""
    result = taxiway(folder, "up", "-d", env={**DOCKER, **SHELL_ENV}, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr


def running(folder: Path) -> Iterator[Path]:
    """The app in ``folder`` up (docker driver) until the caller is done; then down, and
    its images gone."""
    try:
        up(folder)
        yield folder
    finally:
        taxiway(folder, "down", timeout=120)
        remove_images(folder)


def logs(folder: Path, *args: str) -> str:
    result = taxiway(folder, "logs", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def logs_with(folder: Path, want: str, *args: str, count: int = 1, timeout: float = 30) -> str:
    """`taxiway logs ARGS` once ``want`` is in it ``count`` times (retried until
    ``timeout``)."""
    deadline = time.monotonic() + timeout
    text = logs(folder, *args)
    while text.count(want) < count and time.monotonic() < deadline:
        time.sleep(0.5)
        text = logs(folder, *args)
    assert text.count(want) >= count, f"{want!r} not {count} times in the logs:\n{text}"
    return text


def machine_of(folder: Path, group: str) -> dict[str, Any]:
    (machine,) = [m for m in status(folder)["machines"] if m["group"] == group]
    return machine


def site(folder: Path) -> str:
    """The app's URL as a user types it: the edge's plain http port (``force_https``
    sends them on to https, which `get` follows with the app's CA)."""
    return edge_url(folder, 80)


# --- django-site -----------------------------------------------------------------------


@pytest.fixture(scope="class")
def django_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    skip_without_image("python:3.12-slim")
    yield from running(copy_of("django-site", tmp_path_factory))


class TestDjangoSite:
    def test_the_release_command_migrated_in_the_image(self, django_site: Path) -> None:
        ran = logs(django_site, "--group", "fly_app_release_command")
        assert "release command: /entrypoint.sh python manage.py migrate --noinput" in ran
        assert "Applying pages.0001_initial... OK" in ran
        (release,) = json.loads(taxiway(django_site, "releases", "--json").stdout)
        assert release["release_command"]["exit_code"] == 0

    def test_the_site_answers_over_https_through_the_edge(self, django_site: Path) -> None:
        ctx = ca_context(django_site)
        home = get(site(django_site) + "/", "<h1>django-site</h1>", context=ctx)
        css = re.search(r'href="([^"]+)"', home)
        assert css and css.group(1) == "/static/pages/site.css"
        assert plain_status(site(django_site) + "/") == 301  # force_https

    def test_collected_statics_come_from_the_image(self, django_site: Path) -> None:
        ctx = ca_context(django_site)
        source = django_site / "pages" / "static" / "pages" / "site.css"
        css = get(site(django_site) + "/static/pages/site.css", context=ctx)
        assert css == source.read_text()
        # Django's own admin files: only collectstatic, in the build, put them there
        admin = get(site(django_site) + "/static/admin/css/base.css", context=ctx)
        assert "DJANGO Admin styles" in admin
        assert not (django_site / "static").exists()
        # the edge served them: gunicorn (its access log) never saw a /static/ request
        get(site(django_site) + "/env/", context=ctx)
        access = logs_with(django_site, '"GET /env/', "--group", "app")
        assert "GET /static/" not in access

    def test_the_machine_gets_the_platforms_env(self, django_site: Path) -> None:
        env = json.loads(get(site(django_site) + "/env/", context=ca_context(django_site)))
        machine = machine_of(django_site, "app")
        assert env["FLY_APP_NAME"] == "django-site"
        assert env["FLY_MACHINE_ID"] == env["FLY_ALLOC_ID"] == machine["id"]
        assert env["FLY_PRIVATE_IP"] == machine["private_ip"]
        assert env["FLY_PROCESS_GROUP"] == "app"
        assert env["FLY_REGION"] == env["PRIMARY_REGION"] == "ams"
        assert env["FLY_VM_MEMORY_MB"] == "1024"
        assert env["FLY_IMAGE_REF"].startswith("registry.fly.io/django-site:deployment-")
        assert env["FLY_MACHINE_VERSION"]

    def test_the_cron_group_runs_and_ticks(self, django_site: Path) -> None:
        cron = machine_of(django_site, "cron")
        assert cron["state"] == "started" and cron["ports"] == {}  # no service
        ticks = logs_with(django_site, "cron: tick", "--group", "cron", count=2)
        assert f"cron: started on {cron['id']}, every 5s" in ticks

    def test_a_secret_restarts_the_site_and_reaches_the_console(self, django_site: Path) -> None:
        secret = taxiway(django_site, "secrets", "set", "SECRET_KEY=set-with-secrets")
        assert secret.returncode == 0, secret.stderr
        assert "restarted 2 machine(s)" in secret.stdout  # the web and the cron machine
        get(site(django_site) + "/", "<h1>django-site</h1>", context=ca_context(django_site))

        # the console runs in the image (its ENTRYPOINT, WORKDIR) with the new secret
        shell = (
            "import os; from django.conf import settings; "
            'print("console", os.environ["FLY_PROCESS_GROUP"], os.getcwd(), settings.SECRET_KEY)'
        )
        ran = taxiway(django_site, "console", stdin=shell + "\n", timeout=120)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "console fly_app_console /app set-with-secrets" in ran.stdout
        other = taxiway(
            django_site, "console", "--command", "sh -c 'echo out; echo err >&2; exit 4'"
        )
        assert (other.returncode, other.stdout, other.stderr) == (4, "out\n", "err\n")
        assert consoles(django_site) == []  # its container is gone

    def test_a_console_stopped_with_sigterm_leaves_no_container(self, django_site: Path) -> None:
        console = subprocess.Popen(
            [sys.executable, "-m", "taxiway", "console", "--command", "sleep 600"],
            cwd=django_site,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while not consoles(django_site) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert consoles(django_site), "the console's container never started"
            console.send_signal(signal.SIGTERM)
            assert console.wait(timeout=60) == 130
            assert consoles(django_site) == []
        finally:
            console.kill()
            console.wait()
            assert console.stdin is not None and console.stderr is not None
            console.stdin.close()
            console.stderr.close()

    def test_a_deploy_serves_the_new_images_statics_at_the_same_address(
        self, django_site: Path
    ) -> None:
        ctx = ca_context(django_site)
        before = status(django_site)["edge"]
        (current, *_) = json.loads(taxiway(django_site, "releases", "--json").stdout)
        css = django_site / "pages" / "static" / "pages" / "site.css"
        css.write_text(css.read_text().replace("#7b3fe4", "#e4573f"))
        deployed = taxiway(django_site, "deploy", timeout=BUILD_TIMEOUT_S)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert status(django_site)["edge"] == before  # the URL a user has open still works
        served = get(site(django_site) + "/static/pages/site.css", "#e4573f", context=ctx)
        assert served == css.read_text()
        newest = json.loads(taxiway(django_site, "releases", "--json").stdout)[0]
        assert newest["version"] == current["version"] + 1
        assert newest["release_command"]["exit_code"] == 0

    def test_visits_count_on_the_volume_and_survive_down_and_up(self, django_site: Path) -> None:
        ctx = ca_context(django_site)
        first = json.loads(get(site(django_site) + "/visits/", context=ctx))
        assert first["database"] == "/data/db.sqlite3"
        second = json.loads(get(site(django_site) + "/visits/", context=ctx))
        assert second["visits"] == first["visits"] + 1

        down = taxiway(django_site, "down", timeout=120)
        assert down.returncode == 0, down.stderr
        assert containers(django_site) == []
        up(django_site)
        again = json.loads(get(site(django_site) + "/visits/", context=ca_context(django_site)))
        assert again["visits"] == second["visits"] + 1


def consoles(folder: Path) -> list[Any]:
    """The app's console containers (the engine's, by their group label)."""
    return [c for c in containers(folder) if c.labels.get("taxiway.group") == "fly_app_console"]


def plain_status(url: str) -> int:
    """The status of GET ``url`` without following a redirect."""
    address = url.removeprefix("http://").split("/", 1)[0]
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/" + url.split("/", 3)[3], headers={"Host": "localhost"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


# --- fastapi-site ----------------------------------------------------------------------


@pytest.fixture(scope="class")
def fastapi_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    skip_without_image("python:3.12-slim")
    yield from running(copy_of("fastapi-site", tmp_path_factory))


class TestFastapiSite:
    def test_it_answers_with_fly_toml_env_and_the_images_env(self, fastapi_site: Path) -> None:
        index = json.loads(get(site(fastapi_site) + "/", context=ca_context(fastapi_site)))
        assert index["greeting"] == "Hello from Fly"  # [env]
        assert index["version"] == "1.4.0"  # the Dockerfile's ENV
        assert index["machine"] == machine_of(fastapi_site, "app")["id"]
        assert index["region"] == "fra"

    def test_nothing_of_the_hosts_environment_reaches_it(self, fastapi_site: Path) -> None:
        machine = machine_of(fastapi_site, "app")["id"]
        ran = taxiway(fastapi_site, "machine", "exec", machine, "env")
        assert ran.returncode == 0, ran.stderr
        env = dict(line.split("=", 1) for line in ran.stdout.splitlines() if "=" in line)
        assert env["APP_VERSION"] == "1.4.0" and env["GREETING"] == "Hello from Fly"
        assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        assert not set(SHELL_ENV) & set(env), env  # `up` ran with them set

    def test_its_http_check_passes(self, fastapi_site: Path) -> None:
        listed = taxiway(fastapi_site, "checks", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        (check,) = json.loads(listed.stdout)
        assert check["machine"] == machine_of(fastapi_site, "app")["id"]
        assert check["type"] == "http" and check["status"] == "passing", check
        assert "/health: 200" in check["output"]
        assert machine_of(fastapi_site, "app")["checks"]["passing"] == 1

    def test_items_live_in_the_machines_memory(self, fastapi_site: Path) -> None:
        ctx = ca_context(fastapi_site)
        url = edge_url(fastapi_site, 443) + "/items/7"
        stored = send(url, "PUT", {"name": "lamp", "price": 12.5}, ctx)
        assert stored == {"id": 7, "name": "lamp", "price": 12.5}
        assert json.loads(get(url, context=ctx)) == stored

        machine = machine_of(fastapi_site, "app")["id"]
        restarted = taxiway(fastapi_site, "machine", "restart", machine, timeout=120)
        assert restarted.returncode == 0, restarted.stderr
        assert status_once_up(url, ctx) == 404  # a fresh process: the store is empty


def status_once_up(url: str, ctx: Any, timeout: float = 30) -> int:
    """The status of GET ``url`` once the app answers it (the edge says 502 while the
    machine's server is still starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10, context=ctx) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            if exc.code != 502 or time.monotonic() > deadline:
                return exc.code
        time.sleep(0.2)


def send(url: str, method: str, body: dict[str, Any], ctx: Any) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30, context=ctx) as response:
        return json.loads(response.read())


# --- node-server -----------------------------------------------------------------------


@pytest.fixture(scope="class")
def node_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ensure_stand_in_node()
    yield from running(copy_of("node-server", tmp_path_factory))


class TestNodeServer:
    def test_it_answers_through_the_edge(self, node_server: Path) -> None:
        hello = json.loads(get(site(node_server) + "/", context=ca_context(node_server)))
        assert hello["hello"] == "from node-server"
        assert hello["machine"] == machine_of(node_server, "app")["id"]
        assert hello["region"] == "iad"
        assert "node-server listening on :3000" in logs(node_server)

    def test_a_deploy_of_new_code_builds_a_new_image_and_keeps_the_volume(
        self, node_server: Path
    ) -> None:
        ctx = ca_context(node_server)
        before = json.loads(get(site(node_server) + "/count", context=ctx))["count"]
        server = node_server / "server.js"
        server.write_text(
            server.read_text().replace('hello: "from node-server"', 'hello: "from node-server 2"')
        )
        deployed = taxiway(node_server, "deploy", timeout=BUILD_TIMEOUT_S)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        hello = json.loads(get(site(node_server) + "/", "node-server 2", context=ctx))
        assert hello["hello"] == "from node-server 2"
        after = json.loads(get(site(node_server) + "/count", context=ctx))["count"]
        assert after == before + 1
        # the old machine was stopped with the platform's default kill_signal, SIGINT
        assert "SIGINT: closing" in logs(node_server)

        releases = json.loads(taxiway(node_server, "releases", "--json").stdout)
        assert [r["version"] for r in releases] == [2, 1]
        assert releases[0]["current"]
        assert releases[0]["image_id"] and releases[1]["image_id"]
        assert releases[0]["image_id"] != releases[1]["image_id"]
