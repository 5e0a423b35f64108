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
"""

from __future__ import annotations

import asyncio
import signal

from taxiway.runtime import cgroups, netns
from taxiway.runtime.drivers.base import DriverError, LaunchSpec
from taxiway.runtime.drivers.process import ProcessDriver, ProcessHandle, with_mounts
from taxiway.runtime.logs import MachineLog

#: Joins every cgroup listed before ``--``, then execs the rest.
_JOIN_PRELUDE = (
    'while [ "$1" != "--" ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
)


def unusable_reason() -> str | None:
    """What this host lacks for the namespace driver (a phrase), or None."""
    return netns.usable() or cgroups.usable()


class NamespaceHandle(ProcessHandle):
    """A running machine: the process driver's handle (output pumps, wait), with signals,
    kills and freezing done through the machine's cgroup."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        log: MachineLog,
        cgroup: cgroups.Cgroup,
        address: str | None,
    ) -> None:
        super().__init__(proc, log)
        self.cgroup = cgroup
        #: The machine's IPv4 (None for a one-off on the host's network).
        self.address = address

    def send_signal(self, sig: int) -> None:
        super().send_signal(sig)
        self.cgroup.signal(sig)

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

    def machine_host(self, app: str, private_ip: str) -> str:
        """Where the host reaches the machine (its IPv4 on the app's bridge)."""
        return netns.machine_ipv4(app, private_ip)

    async def launch(self, spec: LaunchSpec) -> NamespaceHandle:
        who = f"machine {spec.machine_id} ({spec.group})"
        app = spec.app or spec.env.get("FLY_APP_NAME", "") or "_"
        net = netns.MachineNet(app, spec.machine_id, spec.private_ip) if spec.private_ip else None
        cgroup = cgroups.Cgroup(app, spec.machine_id)
        try:
            await asyncio.to_thread(self._prepare, net, cgroup, spec)
        except (OSError, netns.NetnsError) as exc:
            raise DriverError(f"{who}: cannot set up its namespace: {exc}") from None
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
        argv += with_mounts(spec)
        if not spec.cwd.is_dir():
            raise DriverError(f"{who}: folder {spec.cwd} does not exist")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=spec.cwd,
                env=spec.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise DriverError(f"{who}: cannot start {spec.argv[0]}: {exc.strerror}") from None
        handle = NamespaceHandle(proc, spec.log, cgroup, net.ipv4 if net else None)
        # Return once the main process is in its cgroup, so a stop right away reaches it
        # and whatever it starts (it joins before anything else runs).
        while proc.returncode is None and proc.pid not in cgroup.procs():
            await asyncio.sleep(0.001)
        return handle

    @staticmethod
    def _prepare(net: netns.MachineNet | None, cgroup: cgroups.Cgroup, spec: LaunchSpec) -> None:
        cgroup.kill_all()  # a previous run's stragglers, if any
        cgroup.create(memory_mb=spec.memory_mb, cpus=spec.cpus)
        if net is not None:
            net.ensure()

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

    def reap_orphan(self, pid: int, pgid: int, start_time: float | None) -> bool:
        """A dead daemon's machine: its whole cgroup when the pid is still in one, else
        the process driver's group kill (the leader is recognised by its start time)."""
        found = cgroups.cgroup_of(pid)  # before the kill: /proc/<pid> goes with it
        if not ProcessDriver().reap_orphan(pid, pgid, start_time):
            return False
        if found is not None:
            cgroups.Cgroup(*found).remove()
        return True

    def release_machine(self, app: str, machine_id: str, private_ip: str) -> None:
        """A destroyed machine: remove its cgroup and namespace."""
        cgroups.Cgroup(app, machine_id).remove()
        netns.MachineNet(app, machine_id, private_ip).remove()

    def release_app(self, app: str) -> int:
        """Everything of the app (`down`, or a daemon that died): processes, cgroups,
        namespaces, veths, the bridge; how many things were found."""
        return cgroups.cleanup_app(app) + netns.cleanup_leftovers(app)


def ensure_usable() -> None:
    """Raise the one-sentence DriverError naming what is missing, if anything."""
    reason = unusable_reason()
    if reason is not None:
        raise DriverError(
            f"the namespace driver needs {reason}, which this host lacks; use --driver process"
        )
