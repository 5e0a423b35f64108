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
``sh`` bind-mounts, then the command. A one-off (release command, machine check) runs
in the machines' network, with an address of its own, as a machine does.

Every host-wide name (cgroup, namespace, interfaces, iptables rules, hosts files) comes
from the LaunchSpec's scope, which names the app's state folder
(`taxiway.runtime.scope`): two checkouts of one app never share or reap each other's.
Machines reach the host as ``host.taxiway.internal`` (`taxiway.runtime.hostaccess`).

Machines get a way out to the world through `taxiway.runtime.outbound` where the host
allows it; `auto` picks this driver only then (`taxiway.runtime.drivers.choose_driver`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path, PurePosixPath

import msgspec

from taxiway.runtime import cgroups, hostaccess, netns, outbound
from taxiway.runtime.drivers.base import Driver, DriverError, LaunchSpec, start_process
from taxiway.runtime.drivers.handle import ProcessHandle
from taxiway.runtime.drivers.oneoff_slots import OneoffSlots
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
        address: str,
    ) -> None:
        super().__init__(popen, log, cgroup.machine_id)
        self.cgroup = cgroup
        #: The machine's IPv4 on the app's bridge.
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


class NamespaceDriver(Driver, OneoffSlots):
    name = "namespace"
    #: Each machine has its own network: ports are not remapped, PORT = internal_port.
    own_network = True

    def __init__(self) -> None:
        OneoffSlots.__init__(self)
        #: Per scope: its bridge's /24, picked once (`netns.pick_subnet`).
        self._subnets: dict[str, ipaddress.IPv4Network] = {}
        #: Per scope, once its bridge is set up: why its machines have no way out to the
        #: world and no way to the host's loopback (None each: they have).
        self._bridges: dict[str, tuple[str | None, str | None]] = {}
        self._lock = threading.Lock()
        #: (machine, topic) pairs a machine's log already has a note about.
        self._told: set[tuple[str, str]] = set()

    def subnet(self, scope: str) -> ipaddress.IPv4Network:
        """The scope's /24, the same for the daemon's life (clear of the host's others)."""
        with self._lock:
            if scope not in self._subnets:
                try:
                    self._subnets[scope] = netns.pick_subnet(scope)
                except netns.NetnsError as exc:
                    raise DriverError(f"cannot give the app a private network: {exc}") from None
            return self._subnets[scope]

    def machine_host(self, scope: str, private_ip: str) -> str:
        """Where the host reaches the machine (its IPv4 on the scope's bridge)."""
        return netns.machine_ipv4(self.subnet(scope), private_ip)

    async def launch(self, spec: LaunchSpec) -> NamespaceHandle:
        who = f"machine {spec.machine_id} ({spec.group})"
        if not spec.cwd.is_dir():
            raise DriverError(f"{who}: folder {spec.cwd} does not exist")
        if _command_missing(spec):
            raise DriverError(f"{who}: command not found: {spec.argv[0]}")
        scope = spec.scope or "_"
        return await self.in_slot(spec, scope, lambda slotted: self._launch(slotted, scope, who))

    async def _launch(self, spec: LaunchSpec, scope: str, who: str) -> NamespaceHandle:
        net = netns.MachineNet(scope, spec.machine_id, spec.private_ip, self.subnet(scope))
        cgroup = cgroups.Cgroup(scope, spec.machine_id)
        try:
            hosts, (no_way_out, no_loopback) = await asyncio.to_thread(
                self._prepare, net, cgroup, spec
            )
        except (OSError, netns.NetnsError) as exc:
            raise DriverError(f"{who}: cannot set up its namespace: {exc}") from None
        if no_way_out is not None:
            self._tell_once(
                spec,
                "outbound",
                "this machine reaches the app's machines and the host, not beyond: giving it "
                f"a way out needs {no_way_out}",
            )
        if no_loopback is not None:
            self._tell_once(spec, "loopback", no_loopback)
        spec = self._with_machine_files(spec, hosts)
        argv = [
            "/bin/sh",
            "-c",
            _JOIN_PRELUDE,
            "taxiway-cgroup",
            *(str(p) for p in cgroup.procs_files()),
            "--",
            "nsenter",
            f"--net={net.path}",
            "--",
            *with_mounts(spec),
        ]
        try:
            popen = start_process(argv, cwd=spec.cwd, env=spec.env)
        except OSError as exc:
            raise DriverError(f"{who}: cannot start {spec.argv[0]}: {exc.strerror}") from None
        handle = NamespaceHandle(popen, spec.log, cgroup, net.ipv4)
        # Return once the main process is in its cgroup, so a stop right away reaches it
        # and whatever it starts (it joins before anything else runs).
        while handle.poll() is None and handle.pid not in cgroup.procs():
            await asyncio.sleep(0.001)
        return handle

    def _prepare(
        self, net: netns.MachineNet, cgroup: cgroups.Cgroup, spec: LaunchSpec
    ) -> tuple[Path, tuple[str | None, str | None]]:
        """Cgroup, namespace, hosts file and the bridge's ways out: the hosts file, and
        (why there is no way out, why no way to the host's loopback), None each: there is."""
        cgroup.kill_all()  # a previous run's stragglers, if any
        cgroup.create(memory_mb=spec.memory_mb, cpus=spec.cpus)
        net.ensure()
        gateway = netns.gateway(net.subnet)
        hosts = hostaccess.write_hosts(net.scope, net.machine_id, gateway, net.private_ip)
        with self._lock:
            if net.scope not in self._bridges:
                bridge = netns.bridge_name(net.scope)
                self._bridges[net.scope] = (
                    outbound.ensure(bridge, net.subnet),
                    hostaccess.ensure_loopback(bridge, gateway),
                )
            return hosts, self._bridges[net.scope]

    def _with_machine_files(self, spec: LaunchSpec, hosts: Path) -> LaunchSpec:
        """The spec with the machine's /etc/hosts (`taxiway.runtime.hostaccess`) and a
        resolv.conf: the private network's DNS server when it runs, else one its own
        network can reach when the host's names only its loopback (systemd-resolved's
        stub); the log says when there is none."""
        mounts = [*spec.mounts, (hosts, str(hostaccess.HOSTS))]
        resolv_conf, note = self.machine_resolv_conf, None
        if resolv_conf is None:
            resolv_conf, note = outbound.machine_resolv_conf()
        if note is not None:
            self._tell_once(spec, "resolver", note)
        if resolv_conf is not None:
            mounts.append((resolv_conf, str(outbound.RESOLV_CONF)))
        return msgspec.structs.replace(spec, mounts=mounts)

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

    def release_machine(self, scope: str, machine_id: str) -> None:
        """A destroyed machine, or an ended one-off: remove its cgroup, namespace and
        hosts file (and free a one-off's address)."""
        cgroups.Cgroup(scope, machine_id).remove()
        netns.remove_machine_net(scope, machine_id)
        hostaccess.remove_hosts(scope, machine_id)
        self.free_oneoff(scope, machine_id)

    def release_app(self, scope: str) -> list[str]:
        """Everything of the scope (`down`): processes, cgroups, namespaces, veths, the
        bridge, its iptables rules; the machines that still ran."""
        with self._lock:
            running = release_namespaces(scope, way_out=scope in self._bridges)
            self._bridges.pop(scope, None)
            self._subnets.pop(scope, None)
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
