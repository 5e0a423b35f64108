"""The edge follows deploys: a deploy that adds the app's first service grows one, a
deploy that changes a service's ports rebinds its listeners."""

from __future__ import annotations

import sys
from pathlib import Path

from deploy_app import deploy, get, ok, replace_file, status, up, wait_for, write_programs

FAST = ("--no-smoke-checks", "--strategy", "immediate")


def _write(folder: Path, *, web: bool, port: int = 80) -> None:
    """The app: one group running a worker (no services), or the web server behind an
    http_service served on ``port``."""
    write_programs(folder)
    program = "web.py" if web else "worker.py"
    service = f"""
[[services]]
internal_port = 8080
protocol = "tcp"
processes = ["app"]
  [[services.ports]]
  port = {port}
  handlers = ["http"]
"""
    replace_file(
        folder / "fly.toml",
        f'app = "edgefollows"\nkill_timeout = 1\n[env]\nV = "{port}"\n'
        f'[processes]\napp = "{sys.executable} {program}"\n' + (service if web else ""),
    )


def _edge_port(app: Path, port: int) -> int | None:
    bound = [b for b in status(app).get("edge", []) if b["port"] == port]
    return int(bound[0]["address"].rsplit(":", 1)[1]) if bound else None


def test_a_deploy_that_adds_the_first_service_grows_an_edge(app: Path) -> None:
    _write(app, web=False)
    up(app)
    assert status(app).get("edge", []) == []
    _write(app, web=True, port=8400)
    ok(deploy(app, *FAST))
    wait_for(lambda: _edge_port(app, 8400) is not None, what="the edge's listener")
    port = _edge_port(app, 8400)
    assert port is not None
    wait_for(lambda: get(port) == "8400", what="a request through the new edge")


def test_a_deploy_that_changes_a_services_port_rebinds_the_edge(app: Path) -> None:
    _write(app, web=True, port=8401)
    up(app)
    first = _edge_port(app, 8401)
    assert first is not None
    wait_for(lambda: get(first) == "8401", what="a request through the edge")
    _write(app, web=True, port=8402)
    ok(deploy(app, *FAST))
    wait_for(lambda: _edge_port(app, 8402) is not None, what="the rebound listener")
    assert _edge_port(app, 8401) is None
    second = _edge_port(app, 8402)
    assert second is not None
    wait_for(lambda: get(second) == "8402", what="a request through the rebound edge")
