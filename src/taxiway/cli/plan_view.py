"""Human-readable rendering of machine plans (`taxiway config machines`)."""

from __future__ import annotations

import shlex

from taxiway.plan.containers import ContainerPlan
from taxiway.plan.machine import Check, MachineSpec, Port, ServiceSpec


def machines_text(specs: dict[str, MachineSpec], statics_shown: set[str]) -> str:
    """The plan of each group; its [[statics]] under the groups in ``statics_shown``."""
    return "\n".join(_group(spec, spec.group in statics_shown) for spec in specs.values())


def statics_groups(specs: dict[str, MachineSpec], default: str) -> set[str]:
    """The groups whose machines serve the app's [[statics]]: every machine config carries
    them (flyctl's ToMachineConfig copies them into each group's), but the edge serves
    them for HTTP requests, which reach only the groups behind an HTTP port; with none,
    the default group."""
    serving = {
        group
        for group, spec in specs.items()
        if any("http" in p.handlers for svc in spec.services for p in svc.ports)
    }
    return serving or {default}


def _group(spec: MachineSpec, show_statics: bool) -> str:
    g = spec.guest
    lines = [f"[{spec.group}]"]
    lines.append(f"  command   {_command(spec)}")
    for container in spec.containers:
        lines.append(f"  container {_container(container)}")
        for check in container.healthchecks:
            if check.exec:
                lines.append(f"    health  {shlex.join(check.exec)}")
    gpu = f", {g.gpus}x {g.gpu_kind}" if g.gpu_kind else ""
    lines.append(f"  guest     {g.cpus} {g.cpu_kind} cpu, {g.memory_mb} MB{gpu} ({g.size})")
    for svc in spec.services:
        lines.append(f"  service   {_service(svc)}")
        for check in svc.checks:
            lines.append(f"    check   {check.name}: {_check(check)}")
    for check in spec.checks:
        lines.append(f"  check     {check.name}: {_check(check)} (gates deploys, not routing)")
    for mc in spec.machine_checks:
        lines.append(f"  machine check  {shlex.join(mc.command)}")
    for m in spec.mounts:
        lines.append(f"  volume    {m.name} at {m.path} ({m.size_gb:g} GB)")
    for f in spec.files:
        source = f"secret {f.secret_name}" if f.secret_name else "content"
        lines.append(f"  file      {f.guest_path} ({source})")
    for s in spec.statics if show_statics else ():
        lines.append(f"  static    {s.url_prefix} -> {s.guest_path}")
    if spec.metrics:
        lines.append(f"  metrics   :{spec.metrics.port}{spec.metrics.path}")
    r = spec.restart
    retries = f", {r.max_retries} retries" if r.max_retries is not None else ""
    lines.append(f"  restart   {r.policy}{retries}")
    lines.append(f"  stop      {spec.stop_config.signal}, then {spec.stop_config.timeout}")
    env = ", ".join(f"{k}={v}" for k, v in spec.env.items())
    lines.append(f"  env       {env}")
    if spec.image_env:
        image_env = ", ".join(f"{k}={v}" for k, v in spec.image_env.items())
        lines.append(f"  image env {image_env} (the Dockerfile's ENV, below env)")
    return "\n".join(lines) + "\n"


def _command(spec: MachineSpec) -> str:
    """The argv the machines run, as the plan resolved it (fly.toml's init over the
    image's ENTRYPOINT/CMD), and where it runs when the image sets a WORKDIR."""
    runs = spec.runs
    if not runs.argv:
        return "(none: add one under [processes], [experimental] cmd, or a Dockerfile CMD)"
    where = f" (in {runs.workdir})" if runs.workdir else ""
    return shlex.join(runs.argv) + where


def _container(c: ContainerPlan) -> str:
    """One container of a multi-container machine: its image, what it runs, what it waits
    for."""
    image = c.image or "the app's image"
    if c.built:
        image += ", built"
    if c.argv:
        runs = shlex.join(c.argv)
    elif c.entrypoint is not None or c.cmd is not None:
        runs = shlex.join([*(c.entrypoint or ["(image entrypoint)"]), *(c.cmd or [])])
    else:
        runs = "the image's command"
    line = f"{c.name} ({image}): {runs}"
    if c.user:
        line += f" as {c.user}"
    if c.depends_on:
        line += "; after " + ", ".join(f"{d.name} {d.condition}" for d in c.depends_on)
    if c.env:
        line += "; env " + ", ".join(f"{k}={v}" for k, v in c.env.items())
    for f in c.files:
        line += f"; file {f.guest_path}"
    return line


def _service(svc: ServiceSpec) -> str:
    ports = ", ".join(_port(p) for p in svc.ports) or "no ports"
    c = svc.concurrency
    hard = f"/{c.hard_limit}" if c.hard_limit else ""
    auto = f"autostop {svc.autostop}, autostart {'on' if svc.autostart else 'off'}"
    if svc.min_machines_running:
        auto += f", min {svc.min_machines_running}"
    return (
        f"{svc.protocol} {ports} -> :{svc.internal_port} "
        f"[{c.type} {c.soft_limit}{hard}; {auto}] ({svc.source})"
    )


def _port(p: Port) -> str:
    where = str(p.port) if p.start_port is None else f"{p.start_port}-{p.end_port}"
    handlers = "+".join(p.handlers) if p.handlers else "raw"
    return f"{where}/{handlers}" + (" (force https)" if p.force_https else "")


def _check(check: Check) -> str:
    what = f"{check.type} :{check.port}"
    if check.type == "http":
        what = f"{check.method} {check.protocol}://:{check.port}{check.path}"
    return f"{what} every {check.interval}, timeout {check.timeout}, grace {check.grace_period}"
