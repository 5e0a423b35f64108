"""The dashboard's HTML, rendered by the daemon with the state it has now.

The page is complete without JavaScript (a reload shows the latest state); the script
(`static/dashboard.js`) then keeps it current from the event stream and makes the
buttons work. Everything is escaped here: machine output and hints are the app's text.
"""

from __future__ import annotations

from html import escape
from typing import Any

ACTIONS = ("restart", "stop", "start")


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def machine_row(m: dict[str, Any]) -> str:
    """One machine's table row; the script builds the same cells (keep them in step)."""
    mid = _e(m["id"])
    buttons = "".join(
        f'<button type="button" data-action="{a}" data-machine="{mid}" '
        f'aria-label="{a.capitalize()} machine {mid}">{a.capitalize()}</button>'
        for a in ACTIONS
    )
    buttons += (
        f'<button type="button" class="danger" data-action="destroy" data-machine="{mid}" '
        f'aria-label="Destroy machine {mid}">Destroy…</button>'
    )
    state = _e(m["state"])
    cells = [
        f'<th scope="row"><code>{mid}</code></th>',
        f"<td>{_e(m['group'])}</td>",
        f'<td><span class="state state-{state}">{state}</span></td>',
        f"<td>{_e(m['region'])}</td>",
        f"<td><code>{_e(m['private_ip'])}</code></td>",
        f"<td>{_e(m['restarts'])}</td>",
        f'<td class="{"critical" if m.get("checks_critical") else ""}">{_e(m["checks"])}</td>',
        f'<td class="actions">{buttons}</td>',
    ]
    return f'<tr data-id="{mid}">{"".join(cells)}</tr>'


def _hint_items(machines: list[dict[str, Any]]) -> str:
    return "".join(
        f"<li>machine <code>{_e(m['id'])}</code>: {_e(hint)}</li>"
        for m in machines
        for hint in m.get("hints") or ()
    )


def _edge_items(edge: list[dict[str, Any]]) -> str:
    if not edge:
        return "<li>The edge listens nowhere (the app has no services).</li>"
    return "".join(
        f'<li><a href="{_e(b["url"])}">{_e(b["url"])}</a> — fly.toml port {_e(b["port"])}'
        + (" (mapped: that port could not be bound)" if b.get("mapped") else "")
        + "</li>"
        for b in edge
    )


def _release_rows(releases: list[dict[str, Any]]) -> str:
    return "".join(
        f'<tr><th scope="row">v{_e(r["version"])}{" (current)" if r["current"] else ""}</th>'
        f'<td><span class="rel rel-{_e(r["status"])}">{_e(r["status"])}</span></td>'
        f"<td>{_e(r['strategy'])}</td><td>{_e(r['created_at'])}</td>"
        f"<td>{_e(r['description'])}</td></tr>"
        for r in releases
    )


def _deploy(deploy: dict[str, Any] | None) -> str:
    if deploy is None:
        return "<p>No deploy since the daemon started.</p>"
    steps = "".join(f"<li>{_e(s)}</li>" for s in deploy["steps"])
    return (
        f"<p>Release v{_e(deploy['version'])}: <strong>{_e(deploy['status'])}</strong></p>"
        f"<ol>{steps}</ol>"
    )


def _log_options(state: dict[str, Any]) -> str:
    options = ['<option value="">every machine</option>']
    groups = sorted({m["group"] for m in state["machines"]})
    options += [f'<option value="group:{_e(g)}">group {_e(g)}</option>' for g in groups]
    options += [
        f'<option value="machine:{_e(m["id"])}">machine {_e(m["id"])} ({_e(m["group"])})</option>'
        for m in state["machines"]
    ]
    return "".join(options)


def render_page(state: dict[str, Any]) -> str:
    app = _e(state["app"])
    rows = "".join(machine_row(m) for m in state["machines"])
    driver = _e(state.get("driver"))
    hints = _hint_items(state["machines"])
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{app} — taxiway</title>
<link rel="stylesheet" href="/static/dashboard.css">
<script src="/static/dashboard.js" defer></script>
</head>
<body>
<a class="skip" href="#machines-title">Skip to machines</a>
<header>
  <h1><span class="brand">taxiway</span> {app}</h1>
  <p id="summary">release <span id="release">v{_e(state["release"])}</span>
     · driver <span id="driver">{driver}</span>
     · <span id="connection" role="status">connecting…</span></p>
</header>
<p id="announce" class="visually-hidden" aria-live="polite" aria-atomic="true"></p>
<main>
<section aria-labelledby="machines-title">
  <h2 id="machines-title">Machines</h2>
  <p id="action-result" role="status" aria-live="polite"></p>
  <div class="scroll">
  <table id="machines">
    <caption class="visually-hidden">The app's machines, one per row, with their actions</caption>
    <thead><tr>
      <th scope="col">ID</th><th scope="col">Group</th><th scope="col">State</th>
      <th scope="col">Region</th><th scope="col">Private IP</th><th scope="col">Restarts</th>
      <th scope="col">Checks</th><th scope="col">Actions</th>
    </tr></thead>
    <tbody>{rows}</tbody>
  </table>
  </div>
  <ul id="hints" class="hints" aria-label="Hints about the machines">{hints}</ul>
</section>

<section aria-labelledby="charts-title">
  <h2 id="charts-title">Traffic and resources</h2>
  <p id="services-unavailable" class="note" hidden></p>
  <div id="service-charts" class="charts"></div>
  <div id="machine-charts" class="charts"></div>
</section>

<div class="columns">
<section aria-labelledby="edge-title">
  <h2 id="edge-title">Edge listeners</h2>
  <ul id="edge">{_edge_items(state["edge"])}</ul>
</section>

<section aria-labelledby="deploy-title">
  <h2 id="deploy-title">Deploy</h2>
  <div id="deploy">{_deploy(state["deploy"])}</div>
</section>
</div>

<section aria-labelledby="releases-title">
  <h2 id="releases-title">Recent releases</h2>
  <div class="scroll">
  <table id="releases">
    <caption class="visually-hidden">The latest releases, newest first</caption>
    <thead><tr><th scope="col">Version</th><th scope="col">Status</th>
      <th scope="col">Strategy</th><th scope="col">Created</th>
      <th scope="col">Description</th></tr></thead>
    <tbody>{_release_rows(state["releases"])}</tbody>
  </table>
  </div>
</section>

<section aria-labelledby="logs-title">
  <h2 id="logs-title">Logs</h2>
  <form id="log-controls" class="controls">
    <label for="log-source">Show the output of</label>
    <select id="log-source" name="source">{_log_options(state)}</select>
    <input type="checkbox" id="log-follow" name="follow" checked>
    <label for="log-follow">Follow new lines</label>
  </form>
  <pre id="log" role="log" aria-label="Log tail" tabindex="0"></pre>
</section>
</main>

<dialog id="confirm-destroy" aria-labelledby="confirm-title">
  <form method="dialog">
    <h2 id="confirm-title">Destroy machine <code id="confirm-machine"></code>?</h2>
    <p>The machine is stopped and removed. This can't be undone.</p>
    <div class="dialog-buttons">
      <button type="submit" value="cancel" id="confirm-cancel" autofocus>Cancel</button>
      <button type="submit" value="destroy" id="confirm-ok" class="danger">Destroy</button>
    </div>
  </form>
</dialog>
</body>
</html>
"""


UNAUTHORIZED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taxiway dashboard</title></head>
<body><h1>Not signed in</h1>
<p>Open the address <code>taxiway dashboard</code> prints: it carries this app's token.</p>
</body></html>
"""
