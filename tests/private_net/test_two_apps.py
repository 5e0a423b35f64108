"""Two apps in two folders on one private network, as two apps of one organisation on
the platform: a web app whose ``DATABASE_URL`` names ``<db>.internal`` reaches the db
app's machine by name; a stopped db machine leaves the DNS answers within their TTL;
``<db>.flycast`` goes through the db app's edge, which starts its stopped machine.
Run with the namespace driver and with the docker driver, each skipping, saying why,
where it can't run."""

from __future__ import annotations

import secrets
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from docker_apps import edge_url, get, remove_images, status
from engine_support import skip_without_image
from taxiway.private_net import host
from taxiway.runtime.drivers import unusable_reason

STAND_IN = "python:3.12-slim"

#: The db: a line-based "database" on port 5432, on every address (6PN included), and
#: an HTTP page on 8080 behind the edge for flycast.
DB = """
import os, socketserver, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Line(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(("db " + os.environ["FLY_MACHINE_ID"] + "\\n").encode())

class Dual(socketserver.ThreadingTCPServer):
    import socket as _s
    address_family = _s.AF_INET6
    allow_reuse_address = True
    daemon_threads = True

class Page(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("page " + os.environ["FLY_MACHINE_ID"]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

threading.Thread(target=Dual(("::", 5432), Line).serve_forever, daemon=True).start()
ThreadingHTTPServer(("0.0.0.0", 8080), Page).serve_forever()
"""

#: The web app: /db connects to DATABASE_URL's host and port by name; /fetch?url=…
#: fetches a URL from inside the machine.
WEB = """
import os, socket, urllib.parse, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            if self.path == "/db":
                url = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
                with socket.create_connection((url.hostname, url.port), timeout=5) as s:
                    body = s.makefile("rb").readline()
            else:
                target = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["url"][0]
                body = urllib.request.urlopen(target, timeout=20).read()
            code = 200
        except Exception as exc:
            body, code = repr(exc).encode(), 502
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""

DOCKERFILE = f"""FROM {STAND_IN}
WORKDIR /app
COPY . .
CMD ["python3", "main.py"]
"""


def _fly_toml(app: str, extra: str) -> str:
    return f'app = "{app}"\nkill_timeout = 2\n{extra}'


DB_SERVICE = """
[http_service]
internal_port = 8080
auto_stop_machines = "stop"
auto_start_machines = true
min_machines_running = 0
"""

WEB_SERVICE = """
[env]
DATABASE_URL = "postgres://{db}.internal:5432/app"

[http_service]
internal_port = 8080
auto_stop_machines = "off"
"""


def _skip_reason(driver: str) -> str | None:
    missing = host.unavailable_reason()
    if missing is not None:
        return f"the private network needs {missing}"
    if driver == "namespace" and (reason := unusable_reason()) is not None:
        return f"the namespace driver needs {reason}"
    forwarding = host.forwarding_reason()
    if forwarding is not None:
        return f"apps reach each other through the host, which needs {forwarding}"
    return None


@pytest.fixture(scope="module", params=["namespace", "docker"])
def apps(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path, str]]:
    """The two apps, up for every test of a driver (in the order they are written: the
    machine the second test stops, the third starts again through flycast)."""
    driver = request.param
    tmp_path = tmp_path_factory.mktemp(driver)
    reason = _skip_reason(driver)
    if reason is not None:
        pytest.skip(reason)
    if driver == "docker":
        skip_without_image(STAND_IN)
    db_name = f"db-{secrets.token_hex(3)}"
    env = {"TAXIWAY_DRIVER": driver}
    folders = []
    for name, main, extra in (
        (db_name, DB, DB_SERVICE),
        (f"web-{secrets.token_hex(3)}", WEB, WEB_SERVICE.format(db=db_name)),
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "main.py").write_text(main)
        (folder / "fly.toml").write_text(_fly_toml(name, extra))
        (folder / "Dockerfile").write_text(DOCKERFILE)  # the command, for every driver
        folders.append(folder)
    try:
        for folder in folders:
            up = taxiway(folder, "up", "-d", env=env, timeout=180)
            assert up.returncode == 0, up.stdout + up.stderr
        yield folders[0], folders[1], db_name
    finally:
        for folder in folders:
            taxiway(folder, "down", env=env, timeout=60)
            if driver == "docker":
                remove_images(folder)


def _aaaa(name: str) -> list[str]:
    from dnslib import QTYPE, DNSRecord

    reply = DNSRecord.parse(
        DNSRecord.question(name, "AAAA").send("fdaa::3", 53, timeout=3, ipv6=True)
    )
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.AAAA]


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s")
        time.sleep(0.2)


def test_a_web_app_reaches_another_apps_machine_by_name(apps: tuple[Path, Path, str]) -> None:
    db, web, db_name = apps
    db_machine = status(db)["machines"][0]
    body = get(edge_url(web) + "/db", want="db ")
    assert body.strip() == f"db {db_machine['id']}"
    assert _aaaa(f"{db_name}.internal") == [db_machine["private_ip"]]
    facts = status(web)["private_network"]
    assert facts["dns"] == "[fdaa::3]:53" and facts["flycast"].startswith("fdaa:")


def test_a_stopped_machine_leaves_the_answers_within_the_ttl(
    apps: tuple[Path, Path, str],
) -> None:
    db, _, db_name = apps
    machine = status(db)["machines"][0]
    assert _aaaa(f"{machine['id']}.vm.{db_name}.internal") == [machine["private_ip"]]
    stopped = taxiway(db, "machine", "stop", machine["id"])
    assert stopped.returncode == 0, stopped.stderr
    stopped_at = time.monotonic()
    names = [f"{db_name}.internal", f"{machine['id']}.vm.{db_name}.internal"]
    # every daemon's DNS server answers (they share the port), each from its own view of
    # the registry: all of them must have let the machine go within the TTL
    _wait_for(lambda: all(_aaaa(n) == [] for n in names), 5, "the stopped machine left")
    assert time.monotonic() - stopped_at <= 5  # the answers' TTL


def test_flycast_goes_through_the_edge_and_starts_a_stopped_machine(
    apps: tuple[Path, Path, str],
) -> None:
    db, web, db_name = apps
    machine = status(db)["machines"][0]
    if machine["state"] != "stopped":
        assert taxiway(db, "machine", "stop", machine["id"]).returncode == 0
    _wait_for(lambda: status(db)["machines"][0]["state"] == "stopped", 20, "the db machine stopped")
    url = urllib.request.quote(f"http://{db_name}.flycast/", safe="")
    body = get(edge_url(web) + f"/fetch?url={url}", want="page ")
    assert body == f"page {machine['id']}"
    assert status(db)["machines"][0]["state"] == "started"


def test_names_resolve_for_the_machines_and_public_names_are_forwarded(
    apps: tuple[Path, Path, str],
) -> None:
    """The machine's resolver is the private network's: an unknown .internal name is
    NXDOMAIN, a name the host's resolver knows resolves in the machine too (forwarded)."""
    _, web, db_name = apps
    public = _host_resolves("pypi.org", "deb.debian.org")
    probe = (
        "import socket, sys\n"
        "def resolve(name):\n"
        "    try:\n"
        "        return sorted({a[4][0] for a in socket.getaddrinfo(name, 80)})\n"
        "    except socket.gaierror as exc:\n"
        "        return exc.errno\n"
        "for name in sys.argv[1:]:\n"
        "    print(name, resolve(name))\n"
        "print(open('/etc/resolv.conf').read())\n"
        "print(open('/etc/hosts').read())\n"
    )
    machine = status(web)["machines"][0]["id"]
    names = ["nobody-here.internal", f"{db_name}.internal", *([public] if public else [])]
    result = taxiway(web, "machine", "exec", machine, "--", "python3", "-c", probe, *names)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines()[: len(names)])
    assert lines["nobody-here.internal"] == str(socket.EAI_NONAME)
    assert lines[f"{db_name}.internal"].startswith("['fdaa:")
    if public:
        assert lines[public].startswith("[")
    assert "nameserver fdaa::3" in result.stdout
    private_ip = status(web)["machines"][0]["private_ip"]
    assert f"{private_ip}\tfly-local-6pn" in result.stdout.replace(" ", "\t")


def _host_resolves(*names: str) -> str | None:
    """The first of ``names`` the host's own resolver knows (None on a host without one)."""
    for name in names:
        try:
            socket.getaddrinfo(name, 80)
        except OSError:
            continue
        return name
    return None
