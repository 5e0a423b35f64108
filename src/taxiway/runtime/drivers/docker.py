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
import signal
import threading
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from taxiway.image import labels as image_labels
from taxiway.image.engine import EngineError, client, engine_error
from taxiway.runtime import hostaccess, netns
from taxiway.runtime.drivers.base import Driver, DriverError, LaunchSpec
from taxiway.runtime.drivers.engine_scope import (
    container_name,
    network_name,
    note_engine,
    remove_scope,
)
from taxiway.runtime.drivers.handle import LineBuffer
from taxiway.runtime.drivers.oneoff_slots import OneoffSlots
from taxiway.runtime.leftovers import process_start_time

if TYPE_CHECKING:
    from taxiway.runtime.logs import MachineLog

class ContainerHandle:
    """A running container under supervision: its output, its exit, its signals.

    One thread per container follows its attached output until the container ends, then
    reads its exit code and whether the kernel's OOM killer ended it, and hands both to
    the loop; the engine is asked nothing on the loop's thread but the signals."""

    def __init__(self, container_id: str, log: MachineLog, pid: int) -> None:
        self.container_id = container_id
        self.pid = pid
        self.pgid = _pgid(pid)
        self.start_time = process_start_time(pid) if pid else None
        #: Whether the kernel's OOM killer ended the container (known once it exited).
        self.oom_killed = False
        self._log = log
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()

    def follow(self, stream: Any) -> None:
        """Pump the attached ``stream`` into the log in a thread of its own, then settle
        the exit."""
        threading.Thread(
            target=self._pump, args=(stream,), name=f"container-{self.pid}", daemon=True
        ).start()

    def _pump(self, stream: Any) -> None:
        buffers = {"stdout": LineBuffer(), "stderr": LineBuffer()}
        try:
            for stdout, stderr in stream:
                for name, chunk in (("stdout", stdout), ("stderr", stderr)):
                    if chunk:
                        self._write(name, buffers[name].feed(chunk))
        except Exception:  # the engine went away: the exit below says what is known
            pass
        for name, buffer in buffers.items():
            self._write(name, buffer.flush())
        code, oom = _exit_of(self.container_id)
        self._soon(self._settle, code, oom)

    def _write(self, stream: str, lines: list[bytes]) -> None:
        if lines:
            self._soon(_write_lines, self._log, stream, lines)

    def _soon(self, callback: Any, *args: Any) -> None:
        """Hand ``callback`` to the loop, unless it closed (the daemon has ended)."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _settle(self, code: int, oom: bool) -> None:
        self.oom_killed = oom
        if not self._exited.done():
            self._exited.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        """To the container's init, which passes it on to the app."""
        _quietly(lambda api: api.kill(self.container_id, signal=int(sig)))

    def kill_tree(self) -> None:
        if not self._exited.done():
            _quietly(lambda api: api.kill(self.container_id, signal=int(signal.SIGKILL)))

    def alive(self) -> bool:
        return not self._exited.done()

    def freeze(self) -> None:
        _quietly(lambda api: api.pause(self.container_id))

    def thaw(self) -> None:
        _quietly(lambda api: api.unpause(self.container_id))


def _write_lines(log: MachineLog, stream: str, lines: list[bytes]) -> None:
    for line in lines:
        log.write(stream, line)


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return pid


def _quietly(call: Any) -> None:
    """An engine call whose failure changes nothing (the container is gone already)."""
    with contextlib.suppress(Exception):
        call(client().api)


def _exit_of(container_id: str) -> tuple[int, bool]:
    """The container's exit code and whether the OOM killer ended it."""
    try:
        api = client().api
        code = int(api.wait(container_id, timeout=30).get("StatusCode", -1))
        state = api.inspect_container(container_id).get("State", {})
        return code, bool(state.get("OOMKilled"))
    except Exception:
        return -1, False


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
        api = _api(f"the network {network_name(scope)}")
        bridge = netns.bridge_name(scope)
        try:
            found = api.networks(names=[network_name(scope)])
            found = [n for n in found if n.get("Name") == network_name(scope)]
            if found:
                config = api.inspect_network(found[0]["Id"])["IPAM"]["Config"]
                v4 = next(c["Subnet"] for c in config if ":" not in c["Subnet"])
                subnet = ipaddress.IPv4Network(v4)
            else:
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
                    options={"com.docker.network.bridge.name": bridge},
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

    def _settle_loopback(self, scope: str) -> str | None:
        """The host's loopback for a network whose bridge only exists once a container
        runs on it (Podman makes it then; dockerd at once): set up now, once."""
        with self._lock:
            subnet, note = self._networks[scope]
            if note == _BRIDGE_PENDING:
                bridge = netns.bridge_name(scope)
                note = hostaccess.ensure_loopback(bridge, netns.gateway(subnet))
                self._networks[scope] = (subnet, note)
            return note

    # -- machines -----------------------------------------------------------------------

    async def launch(self, spec: LaunchSpec) -> ContainerHandle:
        who = f"machine {spec.machine_id} ({spec.group})"
        if not spec.image:
            raise DriverError(f"{who}: the docker driver needs the app's image, and none was built")
        scope = spec.scope or "_"
        if not spec.private_ip:
            spec = self.oneoff_address(spec, scope)
        try:
            return await self._launch(spec, scope, who)
        except BaseException:
            self.free_oneoff(scope, spec.machine_id)
            raise

    async def _launch(self, spec: LaunchSpec, scope: str, who: str) -> ContainerHandle:
        state_dir = spec.log.path.parent.parent
        container_id, stream, pid = await asyncio.to_thread(self._start, spec, scope, who)
        note_engine(state_dir)
        handle = ContainerHandle(container_id, spec.log, pid)
        handle.follow(stream)
        return handle

    def _start(self, spec: LaunchSpec, scope: str, who: str) -> tuple[str, Any, int]:
        """Create, attach and start the container: (its id, its output stream, the host
        pid of its init)."""
        subnet = self.subnet(scope, spec.private_ip, spec.app)
        api = _api(who)
        name = container_name(scope, spec.machine_id)
        _remove(api, name)  # the previous start's container: each start is a fresh one
        host_config = api.create_host_config(
            binds={str(source): {"bind": dest, "mode": "rw"} for source, dest in spec.mounts},
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
                    scope, spec.app, machine=spec.machine_id, group=spec.group
                ),
                host_config=host_config,
                networking_config=networking,
                working_dir=spec.workdir or None,
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
            api = _api(f"machine {spec.machine_id}")
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
            _remove(client().api, container_name(scope, machine_id))
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


def _api(what: str) -> Any:
    try:
        return client().api
    except EngineError as exc:
        raise DriverError(f"{what}: {exc}") from None


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
