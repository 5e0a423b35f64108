// taxiway's dashboard: keeps the server-rendered page current from the daemon's event
// stream (/events: state, chart points, a log tail) and makes the machine buttons work.
// No framework, no build step, nothing loaded from elsewhere. Rows are updated in place,
// keyed by machine id, so a focused button keeps its focus across updates.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const ACTIONS = ["restart", "stop", "start"];
  const MAX_LOG_LINES = 1000;
  const CHART_POINTS = 150;
  const MIN_SLOTS = 30;
  let history = [];
  let lastStates = {};
  let machineOrder = [];
  let machineGroups = {};

  function announce(text) {
    const region = $("announce");
    region.textContent = "";
    window.setTimeout(() => { region.textContent = text; }, 50);
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  // -- machines ------------------------------------------------------------------------------

  function actionButtons(id) {
    const cell = el("td", { class: "actions" });
    for (const action of ACTIONS) {
      const label = action[0].toUpperCase() + action.slice(1);
      cell.append(el("button", {
        type: "button", "data-action": action, "data-machine": id,
        "aria-label": `${label} machine ${id}`, text: label,
      }));
    }
    cell.append(el("button", {
      type: "button", class: "danger", "data-action": "destroy", "data-machine": id,
      "aria-label": `Destroy machine ${id}`, text: "Destroy…",
    }));
    return cell;
  }

  function newRow(m) {
    const row = el("tr", { "data-id": m.id });
    row.append(el("th", { scope: "row" }, [el("code", { text: m.id })]));
    for (let i = 0; i < 6; i++) row.append(el("td"));
    row.append(actionButtons(m.id));
    return row;
  }

  function stateText(m) {
    let text = m.state;
    if (m.oom_killed && ["stopped", "failed", "starting"].includes(m.state)) text += " (out of memory)";
    if (m.backoff_s) text += ` (restart in ${m.backoff_s}s)`;
    return text;
  }

  function fillRow(row, m) {
    const cells = row.children;
    // only what changed is touched: fewer DOM changes for assistive technology to follow
    const set = (node, text) => { if (node.textContent !== text) node.textContent = text; };
    let badge = cells[2].querySelector(".state");
    if (!badge) { badge = el("span"); cells[2].replaceChildren(badge); }
    badge.className = `state state-${m.state}`;
    set(badge, stateText(m));
    set(cells[1], m.group);
    set(cells[3], m.region);
    let ip = cells[4].querySelector("code");
    if (!ip) { ip = el("code"); cells[4].replaceChildren(ip); }
    set(ip, m.private_ip);
    set(cells[5], String(m.restarts));
    set(cells[6], m.checks);
    cells[6].className = m.checks_critical ? "critical" : "";
    const running = ["started", "starting", "suspended"].includes(m.state);
    for (const button of row.querySelectorAll("button[data-action]")) {
      const action = button.dataset.action;
      button.disabled = (action === "start" && running) || (action === "stop" && !running);
    }
  }

  function renderMachines(machines) {
    const body = $("machines").tBodies[0];
    const rows = new Map([...body.rows].map((r) => [r.dataset.id, r]));
    const seen = new Set();
    const changes = [];
    machines.forEach((m, index) => {
      seen.add(m.id);
      let row = rows.get(m.id);
      if (!row) { row = newRow(m); changes.push(`machine ${m.id} added`); }
      else if (lastStates[m.id] && lastStates[m.id] !== m.state) changes.push(`machine ${m.id} is ${m.state}`);
      fillRow(row, m);
      if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] || null);
      lastStates[m.id] = m.state;
    });
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        if (row.contains(document.activeElement)) $("machines-title").focus();
        row.remove();
        delete lastStates[id];
        changes.push(`machine ${id} removed`);
      }
    }
    if (changes.length) announce(changes.join("; "));
    $("hints").replaceChildren(...machines.flatMap((m) => m.hints.map((hint) =>
      el("li", {}, ["machine ", el("code", { text: m.id }), `: ${hint}`]))));
    updateLogOptions(machines);
  }

  function updateLogOptions(machines) {
    const select = $("log-source");
    const wanted = [["", "every machine"]];
    for (const g of [...new Set(machines.map((m) => m.group))].sort()) wanted.push([`group:${g}`, `group ${g}`]);
    for (const m of machines) wanted.push([`machine:${m.id}`, `machine ${m.id} (${m.group})`]);
    const have = [...select.options].map((o) => o.value).join("\n");
    if (have === wanted.map((w) => w[0]).join("\n")) return;
    const current = select.value;
    select.replaceChildren(...wanted.map(([value, text]) => el("option", { value, text })));
    select.value = wanted.some((w) => w[0] === current) ? current : "";
  }

  // -- edge, releases, deploy ----------------------------------------------------------------

  function renderEdge(edge) {
    const list = $("edge");
    if (!edge.length) {
      list.replaceChildren(el("li", { text: "The edge listens nowhere (the app has no services)." }));
      return;
    }
    list.replaceChildren(...edge.map((b) => el("li", {}, [
      el("a", { href: b.url, text: b.url }),
      ` — fly.toml port ${b.port}` + (b.mapped ? " (mapped: that port could not be bound)" : ""),
    ])));
  }

  function renderReleases(releases) {
    const body = $("releases").tBodies[0];
    body.replaceChildren(...releases.map((r) => el("tr", {}, [
      el("th", { scope: "row", text: `v${r.version}${r.current ? " (current)" : ""}` }),
      el("td", {}, [el("span", { class: `rel rel-${r.status}`, text: r.status })]),
      el("td", { text: r.strategy }),
      el("td", { text: r.created_at }),
      el("td", { text: r.description }),
    ])));
  }

  let lastDeploy = "";
  function renderDeploy(deploy) {
    const box = $("deploy");
    const key = JSON.stringify(deploy);
    if (key === lastDeploy) return;
    if (deploy && lastDeploy && JSON.parse(lastDeploy)?.status !== deploy.status) {
      announce(`release v${deploy.version} is ${deploy.status}`);
    }
    lastDeploy = key;
    if (!deploy) { box.replaceChildren(el("p", { text: "No deploy since the daemon started." })); return; }
    box.replaceChildren(
      el("p", {}, [`Release v${deploy.version}: `, el("strong", { text: deploy.status })]),
      el("ol", {}, deploy.steps.map((s) => el("li", { text: s }))),
    );
  }

  function renderState(state) {
    machineOrder = state.machines.map((m) => m.id);
    machineGroups = Object.fromEntries(state.machines.map((m) => [m.id, m.group]));
    $("release").textContent = `v${state.release}`;
    $("driver").textContent = state.driver || "";
    renderMachines(state.machines);
    renderEdge(state.edge);
    renderReleases(state.releases);
    renderDeploy(state.deploy);
  }

  // -- charts (inline SVG) -------------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }

  // One small chart: series = [{label, values, cls}], unit for the caption.
  function chart(title, unit, series) {
    const w = 240, h = 64, pad = 2;
    const all = series.flatMap((s) => s.values.filter((v) => v !== null));
    const max = Math.max(1e-9, ...all) * 1.25;  // headroom: a flat line stays visible
    const figure = el("figure", { class: "chart" });
    const latest = series.map((s) => {
      const v = s.values.filter((x) => x !== null).at(-1);
      return `${s.label} ${v === undefined ? "–" : format(v)}${unit}`;
    }).join(", ");
    const graphic = svg("svg", {
      viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: "img",
      "aria-label": `${title}: ${latest}`,
    });
    graphic.append(svg("rect", { x: 0, y: 0, width: w, height: h, class: "chart-bg" }));
    // the newest point at the right edge; at least MIN_SLOTS slots wide so a young chart
    // already draws a line rather than a speck
    const slots = Math.max(MIN_SLOTS, ...series.map((s) => s.values.length));
    for (const s of series) {
      const n = s.values.length;
      const xy = s.values.map((v, i) => v === null ? null : [
        pad + (i + slots - n) * (w - 2 * pad) / (slots - 1),
        h - pad - (v / max) * (h - 2 * pad),
      ]).filter((p) => p !== null);
      if (xy.length === 1) {
        graphic.append(svg("circle", { cx: xy[0][0], cy: xy[0][1], r: 2, class: `dot ${s.cls}` }));
      } else if (xy.length) {
        const points = xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
        graphic.append(svg("polyline", { points, class: s.cls }));
      }
    }
    figure.append(graphic, el("figcaption", {}, [el("strong", { text: title }), el("br"), latest]));
    return figure;
  }

  function format(v) {
    return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  }

  function renderCharts() {
    const last = history.at(-1);
    if (!last) return;
    const note = $("services-unavailable");
    note.hidden = !last.services_unavailable;
    note.textContent = last.services_unavailable || "";
    const services = last.services ? Object.keys(last.services).sort() : [];
    const serviceFigures = [];
    for (const name of services) {
      const pick = (key) => history.map((p) => p.services?.[name]?.[key] ?? null);
      serviceFigures.push(
        chart(`${name} requests`, "/s", [
          { label: "all", values: pick("rps"), cls: "line-a" },
          { label: "errors", values: pick("errors_per_s"), cls: "line-b" },
        ]),
        chart(`${name} latency`, " ms", [
          { label: "p50", values: pick("p50_ms"), cls: "line-a" },
          { label: "p99", values: pick("p99_ms"), cls: "line-b" },
        ]),
      );
    }
    $("service-charts").replaceChildren(...serviceFigures);
    const machineFigures = [];
    // in the machines table's order (by group), each titled with its group
    const order = machineOrder.filter((id) => id in last.machines);
    for (const id of Object.keys(last.machines).sort()) if (!order.includes(id)) order.push(id);
    for (const id of order) {
      const pick = (key) => history.map((p) => p.machines?.[id]?.[key] ?? null);
      const name = machineGroups[id] ? `${machineGroups[id]} ${id}` : id;
      machineFigures.push(
        chart(`${name} memory`, " MB", [{ label: "rss", values: pick("memory_mb"), cls: "line-a" }]),
        chart(`${name} CPU`, "%", [{ label: "cpu", values: pick("cpu_pct"), cls: "line-b" }]),
      );
    }
    $("machine-charts").replaceChildren(...machineFigures);
  }

  // -- event streams -------------------------------------------------------------------------

  let source = null;
  let tailKeys = new Set();
  function logLine(r) {
    return `${r.ts} ${r.machine} [${r.group}] ${r.stream === "system" ? "(taxiway) " : ""}${r.line}\n`;
  }

  function appendLines(lines) {
    const log = $("log");
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const text = lines.map(logLine).join("");
    if (!text) return;
    log.append(document.createTextNode(text));
    while (log.childNodes.length > MAX_LOG_LINES) log.firstChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  // One stream per tab: the state, the chart points and the selected log tail. A new
  // log selection opens a new stream (the server sends everything again on connect).
  function connect() {
    if (source) source.close();
    const value = $("log-source").value;
    const params = new URLSearchParams();
    if (value.startsWith("group:")) params.set("group", value.slice(6));
    if (value.startsWith("machine:")) params.set("machine", value.slice(8));
    $("log").replaceChildren();
    const stream = new EventSource(`/events?${params}`);
    source = stream;
    stream.addEventListener("open", () => { $("connection").textContent = "live"; });
    stream.addEventListener("error", () => {
      $("connection").textContent = "reconnecting…";  // EventSource retries on its own
    });
    stream.addEventListener("state", (e) => renderState(JSON.parse(e.data)));
    stream.addEventListener("history", (e) => { history = JSON.parse(e.data); renderCharts(); });
    stream.addEventListener("metrics", (e) => {
      history.push(JSON.parse(e.data));
      if (history.length > CHART_POINTS) history.shift();
      renderCharts();
    });
    stream.addEventListener("tail", (e) => {
      const lines = JSON.parse(e.data).lines;
      tailKeys = new Set(lines.slice(-50).map((r) => `${r.ts}|${r.machine}|${r.line}`));
      $("log").replaceChildren();
      appendLines(lines);
    });
    stream.addEventListener("lines", (e) => {
      if (!$("log-follow").checked) return;
      const data = JSON.parse(e.data);
      const fresh = data.lines.filter((r) => !tailKeys.has(`${r.ts}|${r.machine}|${r.line}`));
      if (data.skipped) fresh.push({ ts: "", machine: "", group: "", stream: "system",
        line: `${data.skipped} line(s) skipped: the app wrote faster than the page shows` });
      appendLines(fresh);
    });
  }

  // -- buttons -------------------------------------------------------------------------------

  async function act(id, action) {
    const result = $("action-result");
    result.textContent = `${action}: machine ${id}…`;
    try {
      const response = await fetch(`/machines/${encodeURIComponent(id)}/${action}`, {
        method: "POST", credentials: "same-origin", headers: { "X-Taxiway-Dashboard": "1" },
      });
      const data = await response.json();
      result.textContent = response.ok
        ? `machine ${id}: ${data.state}`
        : `could not ${action} machine ${id}: ${data.error}`;
    } catch (err) {
      result.textContent = `could not ${action} machine ${id}: ${err}`;
    }
  }

  function onMachineButton(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const { action, machine } = button.dataset;
    if (action !== "destroy") { act(machine, action); return; }
    const dialog = $("confirm-destroy");
    $("confirm-machine").textContent = machine;
    dialog.returnValue = "";
    dialog.onclose = () => {
      if (dialog.returnValue === "destroy") act(machine, "destroy");
      else button.focus();
    };
    dialog.showModal();
    $("confirm-cancel").focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("machines").addEventListener("click", onMachineButton);
    $("log-source").addEventListener("change", connect);
    $("log-follow").addEventListener("change", () => {
      if ($("log-follow").checked) connect();  // catch up with what was missed
    });
    $("log-controls").addEventListener("submit", (e) => e.preventDefault());
    $("machines-title").setAttribute("tabindex", "-1");
    for (const row of $("machines").tBodies[0].rows) {
      lastStates[row.dataset.id] = row.querySelector(".state")?.textContent;
    }
    connect();
  });
})();
