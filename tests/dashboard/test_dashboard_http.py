"""The dashboard over real sockets, as a browser (or a hostile page) would speak to it:
the token, the cookie, the Host check, the buttons' guard, the stream cap."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import urllib.parse
from pathlib import Path

from dashboard_app import dashboard_url, machine_ids, running_app, say, status, wait_for

from cli_runner import run_taxiway as taxiway

__all__ = ["running_app"]  # the fixture, used by name


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


def _post(port: int, path: str, headers: dict[str, str]) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=b"", headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _signed_in(url: str) -> tuple[int, str]:
    """The port and the cookie the token buys (as the browser gets it)."""
    parts = urllib.parse.urlsplit(url)
    status_code, headers, _ = _get(parts.port, f"/?{parts.query}")
    assert status_code == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    return parts.port, cookie.split(";")[0]


def test_without_the_token_nothing_is_told(running_app: Path) -> None:
    app = running_app
    url = dashboard_url(app)
    port = urllib.parse.urlsplit(url).port
    ids = machine_ids(app)
    token = url.partition("token=")[2]
    # the token is kept private in the state folder, and it is the one in the URL
    token_file = app / ".taxiway" / "dashboard.token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert token_file.read_text().strip() == token
    wrong = "x" * len(token)
    for path, headers in [
        ("/", {}),
        (f"/?token={wrong}", {}),
        ("/events", {}),
        ("/events?group=web", {}),
        ("/static/dashboard.js", {}),
        ("/", {"Cookie": f"taxiway_dashtest={token}"}),  # another name: not this app's
        ("/events", {"Cookie": "taxiway_x=1"}),
    ]:
        code, _, body = _get(port, path, headers)
        assert code == 401, (path, code)
        assert not any(i in body for i in ids.values()), path
    # and a POST to a machine button without it changes nothing
    code, body = _post(port, f"/machines/{ids['worker']}/stop", {"X-Taxiway-Dashboard": "1"})
    assert code == 401 and ids["worker"] not in body
    assert {m["state"] for m in status(app)["machines"]} == {"started"}
    # the URL is the same on every ask: one server per daemon
    assert dashboard_url(app) == url
    as_json = taxiway(app, "dashboard", "--no-open", "--json")
    assert json.loads(as_json.stdout) == {"app": "dashtest", "url": url, "port": port}
    # a deleted token file is a revoked token: the next ask makes a new one
    port, cookie = _signed_in(url)
    assert _get(port, "/", {"Cookie": cookie})[0] == 200
    token_file.unlink()
    renewed = dashboard_url(app)
    assert renewed != url and urllib.parse.urlsplit(renewed).port == port
    assert _get(port, "/", {"Cookie": cookie})[0] == 401
    assert _signed_in(renewed)[0] == port


def test_the_token_buys_a_cookie_and_the_page(running_app: Path) -> None:
    app = running_app
    port, cookie = _signed_in(dashboard_url(app))
    ids = machine_ids(app)
    code, headers, page = _get(port, "/", {"Cookie": cookie})
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    for machine_id in ids.values():
        assert f'data-id="{machine_id}"' in page
    code, _, script = _get(port, "/static/dashboard.js", {"Cookie": cookie})
    assert code == 200 and "EventSource" in script
    # it listens on 127.0.0.1 alone: not on every address (127.0.0.2 is this host too)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.2", port)) != 0
    # only the loopback names of this port are answered (a DNS-rebinding page has its own)
    code, _, body = _get(port, "/", {"Cookie": cookie, "Host": f"rebound.example:{port}"})
    assert code == 403 and ids["web"] not in body


def test_buttons_need_the_page_and_act_like_the_cli(running_app: Path) -> None:
    app = running_app
    port, cookie = _signed_in(dashboard_url(app))
    worker = machine_ids(app)["worker"]
    # a cross-site form can send the cookie-less request only; with the cookie but without
    # the page's header (or from another origin) it is refused
    code, _ = _post(port, f"/machines/{worker}/stop", {"Cookie": cookie})
    assert code == 403
    code, _ = _post(
        port,
        f"/machines/{worker}/stop",
        {"Cookie": cookie, "X-Taxiway-Dashboard": "1", "Origin": "http://evil.example"},
    )
    assert code == 403
    assert machine_ids(app)["worker"] == worker
    assert {m["state"] for m in status(app)["machines"]} == {"started"}
    headers = {"Cookie": cookie, "X-Taxiway-Dashboard": "1", "Origin": f"http://127.0.0.1:{port}"}
    code, body = _post(port, f"/machines/{worker}/stop", headers)
    assert code == 200, body
    assert json.loads(body)["state"] == "stopped"
    code, body = _post(port, f"/machines/{worker}/start", headers)
    assert code == 200 and json.loads(body)["state"] == "started"
    code, body = _post(port, "/machines/nosuchmachine/stop", headers)
    assert code == 409 and "no machine nosuchmachine" in json.loads(body)["error"]


def _open_stream(port: int, cookie: str, path: str = "/events") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n".encode()
    )
    return sock


def _read_until(sock: socket.socket, needle: bytes) -> bytes:
    data = b""
    while needle not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_streams_are_capped_and_carry_state_and_log_lines(running_app: Path) -> None:
    app = running_app
    port, cookie = _signed_in(dashboard_url(app))
    ids = machine_ids(app)
    streams = []
    try:
        first = _open_stream(port, cookie)
        streams.append(first)
        head = _read_until(first, b"event: tail")
        assert b"200 OK" in head and b"text/event-stream" in head
        assert ids["worker"].encode() in head
        for _ in range(63):
            streams.append(_open_stream(port, cookie))
        for sock in streams[1:]:
            assert b"event: state" in _read_until(sock, b"event: state")
        # the 65th is refused: the cap holds however many tabs are opened
        extra = _open_stream(port, cookie)
        assert b" 503 " in _read_until(extra, b"\r\n\r\n")
        extra.close()
        # a stopped machine reaches every open stream without asking again
        assert taxiway(app, "machine", "stop", ids["worker"]).returncode == 0
        for sock in (streams[0], streams[-1]):
            _read_until(sock, b'"state": "stopped"')
    finally:
        for sock in streams:
            sock.close()
    # once the daemon has seen them close, a new one is let in again, and a log tail sees
    # a new line
    def let_in() -> bool:
        with _open_stream(port, cookie, "/events?group=web") as logs:
            return b"event: tail" in _read_until(logs, b"event: tail")  # 503: closed

    wait_for(let_in, what="a stream to be let in after the others closed")
    assert taxiway(app, "machine", "start", ids["worker"]).returncode == 0
    logs = _open_stream(port, cookie, f"/events?machine={ids['worker']}")
    try:
        _read_until(logs, b"event: tail")
        say(app, "a line for the dashboard 8d2f")
        assert b"a line for the dashboard 8d2f" in _read_until(logs, b"8d2f")
    finally:
        logs.close()


def test_dashboard_needs_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text('app = "nodaemon"\n')
    result = taxiway(tmp_path, "dashboard", "--no-open")
    assert result.returncode == 1
    assert "not running this app" in result.stderr and "Traceback" not in result.stderr


def test_without_a_display_the_address_is_printed_and_no_browser_runs(running_app: Path) -> None:
    env = {"DISPLAY": "", "WAYLAND_DISPLAY": "", "BROWSER": ""}
    result = taxiway(running_app, "dashboard", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("http://127.0.0.1:")
    assert "no display here" in result.stderr


def test_idle_connections_are_capped(running_app: Path) -> None:
    from taxiway.dashboard.server import MAX_CONNECTIONS

    port, cookie = _signed_in(dashboard_url(running_app))
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n".encode()
    held: list[socket.socket] = []

    def answered(sock: socket.socket) -> bool:
        sock.sendall(request)
        try:
            return sock.recv(12).startswith(b"HTTP/1.1 200")
        except ConnectionResetError:
            return False

    try:
        # connections that say nothing, up to one short of the cap
        for _ in range(MAX_CONNECTIONS - 1):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))

        def one_more_kept() -> bool:  # the last place: taken by a kept-alive connection
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if answered(sock):
                held.append(sock)
                return True
            sock.close()
            return False

        wait_for(one_more_kept, what="the last connection under the cap")
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert not answered(extra)  # over the cap: closed unanswered
        extra.close()
    finally:
        for sock in held:
            sock.close()

    def page_again() -> bool:  # once the daemon has seen the held ones close
        try:
            return _get(port, "/", {"Cookie": cookie})[0] == 200
        except ConnectionError:
            return False

    wait_for(page_again, what="the page again")
