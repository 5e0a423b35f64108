"""The `namespace` driver (Linux, root): a machine gets its own network and mount
namespaces and a cgroup, which lifts the process driver's limits.

Every machine binds ``internal_port`` as on the platform (no ``PORT`` remapping) and has
a real private address on the app's bridge (`taxiway.runtime.netns`); volumes and
[[files]] appear at their guest paths only inside the machine (the process driver's
`with_mounts`); the cgroup (`taxiway.runtime.cgroups`) holds the memory/cpu limits and
every process of the machine, so a stop reaches ``setsid`` escapees and whatever the
main process left behind, and suspend freezes the machine at once.

The launch is one exec chain, so the main process keeps the first pid: ``sh`` joins the
cgroup, ``nsenter`` enters the network namespace, ``unshare`` makes the mount namespace,
``sh`` bind-mounts, then the command. A one-off (release command, machine check) has no
private address: it gets the cgroup and the mounts, on the host's network.

Machines get a way out to the world through `taxiway.runtime.outbound` where the host
allows it; `auto` picks this driver only then (`taxiway.runtime.drivers.resolve_driver`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path, PurePosixPath

import msgspec

from taxiway.runtime import cgroups, netns, outbound
from taxiway.runtime.drivers.base import DriverError, LaunchSpec, start_process
from taxiway.runtime.drivers.handle import ProcessHandle
from taxiway.runtime.drivers.process import with_mounts
from taxiway.runtime.leftovers import release_namespaces
from taxiway.runtime.logs import MachineLog

#: Joins every cgroup listed before ``--``, then execs the rest.
_JOIN_PRELUDE = (
    'while [ "$1" != "--" ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
)


class NamespaceHandle(ProcessHandle):
    """A running machine: the process driver's handle (output pumps, wait), with signals,
    kills and freezing done through the machine's cgroup."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        log: MachineLog,
        cgroup: cgroups.Cgroup,
        address: str | None,
    ) -> None:
        super().__init__(popen, log, cgroup.machine_id)
        self.cgroup = cgroup
        #: The machine's IPv4 (None for a one-off on the host's network).
        self.address = address

    def send_signal(self, sig: int) -> None:
        """Once to each process of the cgroup (the group is a part of it: signalling both
        would deliver a second SIGINT while the app handles the first)."""
        if not self.cgroup.signal(sig):
            super().send_signal(sig)

    def kill_tree(self) -> None:
        super().kill_tree()  # the group, and the output readers
        self.cgroup.kill_all()

    def alive(self) -> bool:
        return bool(self.cgroup.procs()) or super().alive()

    def freeze(self) -> None:
        if not self.cgroup.freeze():
            self.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if not self.cgroup.thaw():
            self.send_signal(signal.SIGCONT)


class NamespaceDriver:
    name = "namespace"
    #: Each machine has its own network: ports are not remapped, PORT = internal_port.
    own_network = True

    def __init__(self) -> None:
        #: Per app: None once its machines have a way out, else why they have none.
        self._outbound: dict[str, str | None] = {}
        self._outbound_lock = threading.Lock()
        #: (machine, topic) pairs a machine's log already has a note about.
        self._told: set[tuple[str, str]] = set()

    def machine_host(self, app: str, private_ip: str) -> str:
        """Where the host reaches the machine (its IPv4 on the app's bridge)."""
        return netns.machine_ipv4(app, private_ip)

    async def launch(self, spec: LaunchSpec) -> NamespaceHandle:
        who = f"machine {spec.machine_id} ({spec.group})"
        if not spec.cwd.is_dir():
            raise DriverError(f"{who}: folder {spec.cwd} does not exist")
        if _command_missing(spec):
            raise DriverError(f"{who}: command not found: {spec.argv[0]}")
        app = spec.app or spec.env.get("FLY_APP_NAME", "") or "_"
        net = netns.MachineNet(app, spec.machine_id, spec.private_ip) if spec.private_ip else None
        cgroup = cgroups.Cgroup(app, spec.machine_id)
        try:
            no_way_out = await asyncio.to_thread(self._prepare, net, cgroup, spec)
        except (OSError, netns.NetnsError) as exc:
            raise DriverError(f"{who}: cannot set up its namespace: {exc}") from None
        if no_way_out is not None:
            self._tell_once(
                spec,
                "outbound",
                "this machine reaches the app's machines and the host, not beyond: giving it "
                f"a way out needs {no_way_out}",
            )
        argv = [
            "/bin/sh",
            "-c",
            _JOIN_PRELUDE,
            "taxiway-cgroup",
            *(str(p) for p in cgroup.procs_files()),
            "--",
        ]
        if net is not None:
            argv += ["nsenter", f"--net={net.path}", "--"]
            spec = self._with_resolver(spec)
        argv += with_mounts(spec)
        try:
            popen = start_process(argv, cwd=spec.cwd, env=spec.env)
        except OSError as exc:
            raise DriverError(f"{who}: cannot start {spec.argv[0]}: {exc.strerror}") from None
        handle = NamespaceHandle(popen, spec.log, cgroup, net.ipv4 if net else None)
        # Return once the main process is in its cgroup, so a stop right away reaches it
        # and whatever it starts (it joins before anything else runs).
        while handle.poll() is None and handle.pid not in cgroup.procs():
            await asyncio.sleep(0.001)
        return handle

    def _prepare(
        self, net: netns.MachineNet | None, cgroup: cgroups.Cgroup, spec: LaunchSpec
    ) -> str | None:
        """Cgroup, namespace and the app's way out; why it has none (None: it has)."""
        cgroup.kill_all()  # a previous run's stragglers, if any
        cgroup.create(memory_mb=spec.memory_mb, cpus=spec.cpus)
        if net is None:
            return None  # a one-off, on the host's network
        net.ensure()
        with self._outbound_lock:
            if net.app not in self._outbound:
                bridge = netns.bridge_name(net.app)
                self._outbound[net.app] = outbound.ensure(bridge, netns.app_subnet(net.app))
            return self._outbound[net.app]

    def _with_resolver(self, spec: LaunchSpec) -> LaunchSpec:
        """The spec with a resolv.conf the machine's own network can reach, when the host's
        names only its loopback (systemd-resolved's stub); the log says when there is none."""
        resolv_conf, note = outbound.machine_resolv_conf()
        if note is not None:
            self._tell_once(spec, "resolver", note)
        if resolv_conf is None:
            return spec
        return msgspec.structs.replace(
            spec, mounts=[*spec.mounts, (resolv_conf, str(outbound.RESOLV_CONF))]
        )

    def _tell_once(self, spec: LaunchSpec, topic: str, note: str) -> None:
        """A note in the machine's log at its first start, not at every restart."""
        if (spec.machine_id, topic) not in self._told:
            self._told.add((spec.machine_id, topic))
            spec.log.system(note)

    def exec_prefix(self, process: NamespaceHandle, spec: LaunchSpec) -> list[str]:
        """`machine exec` inside the running machine: its cgroup, network and mounts."""
        return [
            "/bin/sh",
            "-c",
            _JOIN_PRELUDE,
            "taxiway-cgroup",
            *(str(p) for p in process.cgroup.procs_files()),
            "--",
            "nsenter",
            f"--target={process.pid}",
            "--mount",
            "--net",
            f"--wd={spec.cwd}",
            "--",
        ]

    def release_machine(self, app: str, machine_id: str, private_ip: str) -> None:
        """A destroyed machine: remove its cgroup and namespace."""
        cgroups.Cgroup(app, machine_id).remove()
        netns.MachineNet(app, machine_id, private_ip).remove()

    def release_app(self, app: str) -> list[str]:
        """Everything of the app (`down`): processes, cgroups, namespaces, veths, the
        bridge, its way out; the machines that still ran."""
        with self._outbound_lock:
            running = release_namespaces(app, way_out=app in self._outbound)
            self._outbound.pop(app, None)
        return running


def _command_missing(spec: LaunchSpec) -> bool:
    """Whether the command can't be found (so the machine fails as with the process
    driver, not with a shell's exit 127). A path under a mount is only in the machine."""
    command = spec.argv[0] if spec.argv else ""
    if "/" not in command:
        return shutil.which(command, path=spec.env.get("PATH", os.defpath)) is None
    path = PurePosixPath(spec.cwd, command)
    if any(path.is_relative_to(guest) for _, guest in spec.mounts):
        return False
    return not Path(path).exists()
