"""The `docker` driver: a machine is a container of the release's image, as on the
platform, where a machine runs the app's image (https://fly.io/docs/machines/overview/).

The container runs exactly the plan's argv (the image's ENTRYPOINT and CMD as fly.toml
overrides them, `taxiway.plan.command`) with the machine's environment above the image's
own ENV, an init as PID 1 so that signals reach the app and zombies are reaped, and the
[[vm]] memory and cpus as its limits. Each start is a fresh container (the platform
resets a machine's root filesystem at every start); volumes and [[files]] are bind
mounts, so they outlive it. taxiway supervises the container as any other machine: the
engine's restart policy stays off, its log driver is off (the output goes to `taxiway
logs` through an attach), stop is kill_signal then SIGKILL after kill_timeout, suspend
is the engine's pause.

Network: one engine network per state folder, with the app's 6PN /64 and the /24 the
namespace driver would use: every container gets its private IPv6 (``FLY_PRIVATE_IP``)
and an IPv4 the edge connects to, both known before it starts, and binds
``internal_port`` itself. Machines reach each other by private address, and the host as
``host.taxiway.internal`` (its 127.0.0.1 services too: `taxiway.runtime.hostaccess`).

A multi-container machine (`taxiway.plan.containers`: ``[build.compose]`` or
``machine_config``) is one container per container of the machine: the one with the
app's image is made as above and owns the machine's network; every other one joins that
network (``network_mode=container:<id>``), as containers of one machine share theirs on
the platform (https://fly.io/docs/machines/guides-examples/multi-container-machines/),
and starts once what it ``depends_on`` is started, healthy or exited successfully. The
main container owns the network rather than a holder container of its own because the
app's image is the one image known to be there and to run; the price is that it can't
wait for its own depends_on (the plan warns). Limits are the main container's only.

Everything the driver makes carries the state folder's labels
(`taxiway.image.labels`), and a note in the state folder says the engine holds some of
its machines, so that `down` and the next `up` after a ``kill -9`` remove exactly what
is theirs (`release_app`, `taxiway.runtime.leftovers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import threading
from pathlib import PurePosixPath
from typing import Any

from taxiway.image import labels as image_labels
from taxiway.image.engine import EngineError, client, engine_error
from taxiway.runtime import hostaccess, netns
from taxiway.runtime.drivers.base import ContainerLaunch, Driver, DriverError, LaunchSpec
from taxiway.runtime.drivers.container_handle import ContainerHandle, MachineContainers
from taxiway.runtime.drivers.container_order import (
    await_condition,
    engine_api,
    ensure_image,
)
from taxiway.runtime.drivers.engine_scope import (
    bridge_name,
    container_name,
    network_name,
    note_engine,
    remove_scope,
)
from taxiway.runtime.drivers.oneoff_slots import OneoffSlots

#: The engine's option that names a bridge network's host interface.
_BRIDGE_OPTION = "com.docker.network.bridge.name"


class DockerDriver(Driver, OneoffSlots):
    name = "docker"
    #: Every container has its own network namespace: it binds internal_port itself.
    own_network = True
    #: The containers run the release's image, not the app's folder.
    runs_image = True

    def __init__(self) -> None:
        OneoffSlots.__init__(self)
        #: Per scope: its network's IPv4 /24 and the note about the host's loopback (None:
        #: machines reach it), settled once per daemon.
        self._networks: dict[str, tuple[ipaddress.IPv4Network, str | None]] = {}
        self._lock = threading.Lock()
        self._told: set[tuple[str, str]] = set()

    # -- network ------------------------------------------------------------------------

    def subnet(self, scope: str, private_ip: str = "", app: str = "") -> ipaddress.IPv4Network:
        """The scope's network's /24 (the network is made at first use)."""
        with self._lock:
            if scope not in self._networks:
                self._networks[scope] = self._ensure_network(scope, private_ip, app)
            return self._networks[scope][0]

    def machine_host(self, scope: str, private_ip: str) -> str:
        """The container's IPv4 on the state folder's network."""
        return netns.machine_ipv4(self.subnet(scope, private_ip), private_ip)

    def _ensure_network(
        self, scope: str, private_ip: str, app: str
    ) -> tuple[ipaddress.IPv4Network, str | None]:
        """The scope's network (made when missing) and why the host's loopback isn't
        reachable from it (None: it is)."""
        api = engine_api(f"the network {network_name(scope)}")
        bridge = bridge_name(scope)
        try:
            found = api.networks(names=[network_name(scope)])
            found = [n for n in found if n.get("Name") == network_name(scope)]
            subnet = self._usable_subnet(api, found[0]["Id"], bridge) if found else None
            if subnet is None:
                if found:  # made otherwise, or its bridge is gone: make it again
                    api.remove_network(found[0]["Id"])
                subnet = netns.pick_subnet(scope)
                v6 = netns.ipv6_link(private_ip or _any_private_ip(scope))
                from docker.types import IPAMConfig, IPAMPool

                api.create_network(
                    network_name(scope),
                    driver="bridge",
                    enable_ipv6=True,
                    ipam=IPAMConfig(
                        pool_configs=[
                            IPAMPool(subnet=str(subnet), gateway=netns.gateway(subnet)),
                            IPAMPool(subnet=str(v6), gateway=str(v6.network_address + 1)),
                        ]
                    ),
                    options={_BRIDGE_OPTION: bridge},
                    labels=image_labels.labels(scope, app or scope),
                    check_duplicate=True,
                )
        except netns.NetnsError as exc:
            raise DriverError(f"cannot give the app a private network: {exc}") from None
        except Exception as exc:
            what = f"the network {network_name(scope)}"
            raise DriverError(str(engine_error(exc, what))) from None
        if not os.path.exists(f"/sys/class/net/{bridge}"):
            return subnet, _BRIDGE_PENDING
        return subnet, hostaccess.ensure_loopback(bridge, netns.gateway(subnet))

    @staticmethod
    def _usable_subnet(api: Any, network_id: str, bridge: str) -> ipaddress.IPv4Network | None:
        """The existing network's /24 when it is as this driver makes it (its bridge is
        named ``bridge``), else None. (Podman makes the interface only once a container
        runs on it, so its absence says nothing.)"""
        details = api.inspect_network(network_id)
        if (details.get("Options") or {}).get(_BRIDGE_OPTION) != bridge:
            return None
        config = (details.get("IPAM") or {}).get("Config") or []
        v4 = [c["Subnet"] for c in config if ":" not in c.get("Subnet", ":")]
        return ipaddress.IPv4Network(v4[0]) if v4 else None

    def _settle_loopback(self, scope: str) -> str | None:
        """The host's loopback for a network whose bridge only exists once a container
        runs on it (Podman makes it then; dockerd at once): set up now, once."""
        with self._lock:
            subnet, note = self._networks[scope]
            if note == _BRIDGE_PENDING:
                bridge = bridge_name(scope)
                note = hostaccess.ensure_loopback(bridge, netns.gateway(subnet))
                self._networks[scope] = (subnet, note)
            return note

    # -- machines -----------------------------------------------------------------------

    async def launch(self, spec: LaunchSpec) -> ContainerHandle:
        who = f"machine {spec.machine_id} ({spec.group})"
        if not spec.image:
            raise DriverError(f"{who}: the docker driver needs the app's image, and none was built")
        scope = spec.scope or "_"
        return await self.in_slot(spec, scope, lambda slotted: self._launch(slotted, scope, who))

    async def _launch(self, spec: LaunchSpec, scope: str, who: str) -> ContainerHandle:
        # noted before anything is made, so a daemon killed halfway still has it reaped
        note_engine(spec.log.path.parent.parent)
        container_id, stream, pid = await asyncio.to_thread(self._start, spec, scope, who)
        handle = ContainerHandle(container_id, spec.log, pid)
        handle.follow(stream)
        if not spec.containers:
            return handle
        machine = MachineContainers(handle)
        try:
            await self._start_others(machine, spec, scope, who)
        except BaseException:
            machine.kill_tree()
            raise
        return machine

    async def _start_others(
        self, machine: MachineContainers, spec: LaunchSpec, scope: str, who: str
    ) -> None:
        """A multi-container machine's other containers, each in the main one's network
        once what it depends on is started, healthy (its exec check passed) or exited
        successfully."""
        main = next(c for c in spec.containers if c.built)
        ids = {main.name: machine.container_id}
        by_name = {c.name: c for c in spec.containers}
        for launch in spec.containers:
            if launch.built:
                continue
            for dep, condition in launch.depends_on:
                if condition == "started" or dep not in ids:
                    continue
                await asyncio.to_thread(
                    await_condition, ids[dep], by_name[dep], condition, launch.name, who
                )
            container_id, stream, pid = await asyncio.to_thread(
                self._start_other, spec, launch, machine.container_id, scope, who
            )
            ids[launch.name] = container_id
            handle = ContainerHandle(container_id, spec.log, pid, tag=f"[{launch.name}] ")
            handle.follow(stream)
            machine.add(launch, handle)

    def _start_other(
        self, spec: LaunchSpec, launch: ContainerLaunch, owner: str, scope: str, who: str
    ) -> tuple[str, Any, int]:
        """Create, attach and start one more container of the machine in the network of
        ``owner`` (the main container): (its id, its output stream, its init's pid)."""
        what = f"{who}, container {launch.name}"
        api = engine_api(what)
        name = container_name(scope, spec.machine_id, launch.name)
        _remove(api, name)
        image = launch.image or ""
        ensure_image(api, image, what)
        host_config = api.create_host_config(
            binds={str(source): {"bind": dest, "mode": "rw"} for source, dest in launch.mounts},
            init=True,
            network_mode=f"container:{owner}",
            log_config={"type": "none", "config": {}},
            restart_policy={"Name": "no"},
        )
        argv = launch.argv
        try:
            created = api.create_container(
                image,
                command=argv[1:] if argv else launch.cmd,
                entrypoint=argv[:1] if argv else launch.entrypoint,
                environment=launch.env,
                name=name,
                user=launch.user or "",
                labels=image_labels.labels(
                    scope,
                    spec.app,
                    machine=spec.machine_id,
                    group=spec.group,
                    container=launch.name,
                ),
                host_config=host_config,
                stop_signal="SIGKILL",
            )
            container_id = created["Id"]
            stream = api.attach(container_id, stream=True, stdout=True, stderr=True, demux=True)
            api.start(container_id)
            pid = int(api.inspect_container(container_id)["State"].get("Pid") or 0)
        except Exception as exc:
            _remove(api, name)
            raise DriverError(str(engine_error(exc, f"{what}, image {image}"))) from None
        return container_id, stream, pid

    def _start(self, spec: LaunchSpec, scope: str, who: str) -> tuple[str, Any, int]:
        """Create, attach and start the container: (its id, its output stream, the host
        pid of its init)."""
        subnet = self.subnet(scope, spec.private_ip, spec.app)
        api = engine_api(who)
        name = container_name(scope, spec.machine_id)
        _remove(api, name)  # the previous start's container: each start is a fresh one
        main = next((c for c in spec.containers if c.built), None)
        for other in spec.containers:
            if not other.built:
                _remove(api, container_name(scope, spec.machine_id, other.name))
        binds = {str(source): {"bind": dest, "mode": "rw"} for source, dest in spec.mounts}
        if self.machine_resolv_conf is not None:  # the engine leaves a mounted one alone
            binds[str(self.machine_resolv_conf)] = {"bind": "/etc/resolv.conf", "mode": "ro"}
        host_config = api.create_host_config(
            binds=binds,
            init=True,
            extra_hosts={
                hostaccess.HOST_NAME: netns.gateway(subnet),
                "fly-local-6pn": spec.private_ip,
            },
            log_config={"type": "none", "config": {}},
            restart_policy={"Name": "no"},
            **self._limits(spec),
        )
        networking = api.create_networking_config(
            {
                network_name(scope): api.create_endpoint_config(
                    ipv4_address=netns.machine_ipv4(subnet, spec.private_ip),
                    ipv6_address=spec.private_ip,
                )
            }
        )
        try:
            created = api.create_container(
                spec.image,
                command=spec.argv[1:],
                entrypoint=spec.argv[:1],
                environment=spec.env,
                name=name,
                hostname=spec.machine_id,
                labels=image_labels.labels(
                    scope,
                    spec.app,
                    machine=spec.machine_id,
                    group=spec.group,
                    container=main.name if main else None,
                ),
                host_config=host_config,
                networking_config=networking,
                working_dir=spec.workdir or None,
                user=(main.user if main else None) or "",
                stop_signal="SIGKILL",  # taxiway stops it itself; the engine only kills
            )
            container_id = created["Id"]
            if not _has_command(api, container_id, spec):
                _remove(api, name)
                raise DriverError(
                    f"{who}: command not found in the image {spec.image}: {spec.argv[0]}"
                )
            stream = api.attach(container_id, stream=True, stdout=True, stderr=True, demux=True)
            api.start(container_id)
            pid = int(api.inspect_container(container_id)["State"].get("Pid") or 0)
        except DriverError:
            raise
        except Exception as exc:
            _remove(api, name)
            raise DriverError(_launch_error(who, spec, exc)) from None
        loopback_note = self._settle_loopback(scope)
        if loopback_note is not None:
            self._tell_once(spec, "loopback", loopback_note)
        return container_id, stream, pid

    def _limits(self, spec: LaunchSpec) -> dict[str, int]:
        """[[vm]] memory and cpus as the container's limits; cpus beyond the host's are
        capped there (the engine refuses more), and the log says so once."""
        limits: dict[str, int] = {}
        if spec.memory_mb:
            limits["mem_limit"] = spec.memory_mb * 1024 * 1024
            limits["memswap_limit"] = spec.memory_mb * 1024 * 1024  # no swap, as a VM
        if spec.cpus:
            host = os.cpu_count() or 1
            if spec.cpus > host:
                self._tell_once(
                    spec,
                    "cpus",
                    f"[[vm]] asks for {spec.cpus} cpus; this host has {host}, so the "
                    f"container may use {host}",
                )
            limits["nano_cpus"] = min(spec.cpus, host) * 1_000_000_000
        return limits

    def _tell_once(self, spec: LaunchSpec, topic: str, note: str) -> None:
        if (spec.machine_id, topic) not in self._told:
            self._told.add((spec.machine_id, topic))
            spec.log.system(note)

    async def exec(
        self, process: Any, spec: LaunchSpec, cmd: list[str], timeout_s: float
    ) -> dict[str, object]:
        """`machine exec`: the command inside the running container, with its env."""
        if not isinstance(process, ContainerHandle):
            raise DriverError(
                f"machine {spec.machine_id} is not running; start it to run a command in it"
            )

        def run() -> dict[str, object]:
            api = engine_api(f"machine {spec.machine_id}")
            try:
                made = api.exec_create(process.container_id, cmd, environment=spec.env)
                out, err = api.exec_start(made["Id"], demux=True)
                code = api.exec_inspect(made["Id"]).get("ExitCode")
            except Exception as exc:
                raise DriverError(str(engine_error(exc, f"machine {spec.machine_id}"))) from None
            return {
                "stdout": (out or b"").decode(errors="replace"),
                "stderr": (err or b"").decode(errors="replace"),
                "exit_code": code if code is not None else 126,
            }

        try:
            return await asyncio.wait_for(asyncio.to_thread(run), timeout_s)
        except TimeoutError:
            return {"stdout": "", "stderr": "timed out", "exit_code": 124}

    # -- clean-up -----------------------------------------------------------------------

    def release_machine(self, scope: str, machine_id: str) -> None:
        """A destroyed machine or an ended one-off: its container goes."""
        with contextlib.suppress(EngineError):
            api = client().api
            _remove(api, container_name(scope, machine_id))
            with contextlib.suppress(Exception):  # a multi-container machine's others
                labels = image_labels.scope_filter(scope)["label"]
                found = api.containers(
                    all=True,
                    filters={"label": [*labels, f"{image_labels.MACHINE}={machine_id}"]},
                )
                for container in found:
                    _remove(api, container["Id"])
        self.free_oneoff(scope, machine_id)

    def release_app(self, scope: str) -> list[str]:
        """`down`: every container and the network of the state folder."""
        with self._lock:
            self._networks.pop(scope, None)
        self.forget_oneoffs(scope)
        return remove_scope(scope) or []


#: A network's loopback note before its bridge exists: Podman creates the bridge when
#: the first container starts on the network, not with the network.
_BRIDGE_PENDING = "the network's bridge does not exist yet"


def _any_private_ip(scope: str) -> str:
    from taxiway.runtime.environment import private_ip
    from taxiway.runtime.scope import seed

    return private_ip(seed(scope), 1)


#: The PATH a container has when neither the image nor the machine sets one.
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _has_command(api: Any, container_id: str, spec: LaunchSpec) -> bool:
    """Whether the container's filesystem has the command (its init would only say so
    by exiting 127): a path is looked up as it is, a name in each folder of its PATH."""
    command = spec.argv[0]
    if "/" in command:
        folder = spec.workdir or "/"
        candidates = [str(PurePosixPath(folder, command))]
    else:
        path = spec.env.get("PATH", _DEFAULT_PATH)
        candidates = [str(PurePosixPath(folder or "/", command)) for folder in path.split(":")]
    for candidate in candidates:
        try:
            api.get_archive(container_id, candidate, chunk_size=1)[0].close()
        except Exception:
            continue
        return True
    return False


def _remove(api: Any, name: str) -> None:
    with contextlib.suppress(Exception):
        api.remove_container(name, force=True)


def _launch_error(who: str, spec: LaunchSpec, exc: Exception) -> str:
    """Why the container could not start, in one sentence."""
    text = str(getattr(exc, "explanation", "") or exc)
    if "executable file not found" in text or "no such file or directory" in text:
        return f"{who}: command not found in the image {spec.image}: {spec.argv[0]}"
    if "No such image" in text:
        return f"{who}: the image {spec.image} is not in the engine; deploy again to build it"
    return str(engine_error(exc, f"{who}, image {spec.image}"))
