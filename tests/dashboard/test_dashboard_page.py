"""The page the daemon renders: complete without JavaScript, and the app's text escaped."""

from __future__ import annotations

from html.parser import HTMLParser

from taxiway.checks.state import summary_text
from taxiway.dashboard.page import render_page
from taxiway.dashboard.state import edge_url

HOSTILE = '<script>alert("x")</script>'


def _state() -> dict:
    machine = {
        "id": "abc123",
        "group": "web",
        "state": "started",
        "region": "ams",
        "private_ip": "fdaa::2",
        "restarts": 1,
        "checks": "1/2 passing, 1 critical",
        "checks_critical": True,
        "hints": [f"listens on 8081, not 8080 {HOSTILE}"],
    }
    return {
        "app": "demo",
        "release": 3,
        "driver": "process",
        "machines": [machine],
        "edge": [{"url": "http://127.0.0.1:8080", "port": 80, "mapped": True}],
        "releases": [
            {"version": 3, "status": "complete", "strategy": "rolling",
             "created_at": "2026-01-01T00:00:00Z", "description": HOSTILE, "current": True}
        ],
        "deploy": {"version": 3, "status": "complete", "running": False,
                   "steps": ["release v3 (rolling)", HOSTILE]},
    }


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_page_holds_the_state_and_escapes_the_apps_text() -> None:
    page = render_page(_state())
    assert HOSTILE not in page and "&lt;script&gt;" in page
    parsed = _Collect()
    parsed.feed(page)
    scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
    assert scripts == [{"src": "/static/dashboard.js", "defer": None}]  # nothing inline
    buttons = [attrs for tag, attrs in parsed.tags if tag == "button"]
    labels = {b.get("aria-label") for b in buttons}
    assert {"Restart machine abc123", "Stop machine abc123", "Start machine abc123",
            "Destroy machine abc123"} <= labels
    assert all(b.get("type") in ("button", "submit") for b in buttons)
    for text in ("1/2 passing, 1 critical", "v3 (current)", "http://127.0.0.1:8080",
                 "mapped", "Release v3", "listens on 8081"):
        assert text in page
    # nothing loaded from elsewhere: every src and stylesheet is the daemon's own
    for tag, attrs in parsed.tags:
        if "src" in attrs or (tag == "link" and attrs.get("rel") == "stylesheet"):
            assert (attrs.get("src") or attrs.get("href", "")).startswith("/static/")


def test_edge_urls_and_check_summaries() -> None:
    assert edge_url({"address": "127.0.0.1:80", "protocol": "tcp", "handlers": ["http"]}) == (
        "http://127.0.0.1:80"
    )
    assert edge_url({"address": "127.0.0.1:443", "protocol": "tcp",
                     "handlers": ["tls", "http"]}) == "https://127.0.0.1:443"
    assert edge_url({"address": "127.0.0.1:5432", "protocol": "tcp", "handlers": []}) == (
        "tcp://127.0.0.1:5432"
    )
    assert summary_text({}) == "-"
    assert summary_text({"total": 2, "passing": 1, "critical": 1}) == "1/2 passing, 1 critical"
