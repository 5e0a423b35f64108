"""A running container under supervision (the docker driver's machine process): its
output pumped into the machine's log, its exit and whether the OOM killer caused it,
its signals, pause and unpause through the engine; and a multi-container machine's
containers as one machine (`MachineContainers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

from taxiway.image.engine import client
from taxiway.runtime.drivers.base import ContainerLaunch
from taxiway.runtime.drivers.handle import LineBuffer
from taxiway.runtime.leftovers import process_start_time

if TYPE_CHECKING:
    from taxiway.runtime.logs import MachineLog


class ContainerHandle:
    """A running container under supervision: its output, its exit, its signals.

    One thread per container follows its attached output until the container ends, then
    reads its exit code and whether the kernel's OOM killer ended it, and hands both to
    the loop; the engine is asked nothing on the loop's thread but the signals."""

    def __init__(self, container_id: str, log: MachineLog, pid: int, tag: str = "") -> None:
        self.container_id = container_id
        #: Put before each line of its output in the machine's log (a multi-container
        #: machine's other containers: ``[nginx] ``).
        self.tag = tag.encode()
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
            if self.tag:
                lines = [self.tag + line for line in lines]
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


class MachineContainers(ContainerHandle):
    """A multi-container machine: its main container (the one with the app's image,
    whose exit ends the machine, and whose network the others share) and the others.

    Signals, kill, pause and unpause reach every container; `wait` and `alive` are the
    main container's. Another container that exits follows its own restart policy while
    the machine runs and no signal was sent to it (a stop sends one); without a policy
    it stays down until the machine starts again, as the log says."""

    def __init__(self, main: ContainerHandle) -> None:
        # Not ContainerHandle's __init__: this handle is the main container's, shared.
        self.container_id = main.container_id
        self.pid, self.pgid, self.start_time = main.pid, main.pgid, main.start_time
        self.tag = main.tag
        self._log, self._loop, self._exited = main._log, main._loop, main._exited
        self._main = main
        #: name → the handle of each other container, as it runs now, and what it runs.
        self.others: dict[str, ContainerHandle] = {}
        self._launches: dict[str, ContainerLaunch] = {}
        self._restarts: dict[str, int] = {}
        self._signalled = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property  # type: ignore[override]
    def oom_killed(self) -> bool:
        """The main container's: its end is the machine's."""
        return self._main.oom_killed

    def add(self, launch: ContainerLaunch, handle: ContainerHandle) -> None:
        self.others[launch.name] = handle
        self._launches[launch.name] = launch
        handle._exited.add_done_callback(lambda f: self._ended(launch, handle, f))

    def _ended(self, launch: ContainerLaunch, handle: ContainerHandle, done: Any) -> None:
        if self.others.get(launch.name) is not handle or self._signalled or not self.alive():
            return
        code = done.result()
        retries = self._restarts.get(launch.name, 0)
        again = launch.restart == "always" or (launch.restart == "on-failure" and code != 0)
        if again and launch.max_retries is not None and retries >= launch.max_retries:
            again = False
        if not again:
            self._log.system(
                f"container {launch.name} exited with code {code}; it stays down until the "
                "machine restarts (its restart policy: "
                f"{launch.restart or 'none, it ends with the machine'})"
            )
            return
        self._restarts[launch.name] = retries + 1
        self._log.system(f"container {launch.name} exited with code {code}; restarting it")
        task = asyncio.ensure_future(self._restart(launch, handle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, launch: ContainerLaunch, old: ContainerHandle) -> None:
        try:
            stream, pid = await asyncio.to_thread(_restart_container, old.container_id)
        except Exception as exc:
            self._log.system(f"container {launch.name} could not restart: {exc}")
            return
        handle = ContainerHandle(old.container_id, self._log, pid, tag=old.tag.decode())
        handle.follow(stream)
        self.add(launch, handle)
        if self._signalled or not self.alive():
            handle.kill_tree()  # the machine stopped while it restarted

    def _all(self) -> list[ContainerHandle]:
        return [self._main, *self.others.values()]

    def send_signal(self, sig: int) -> None:
        """A stop: ``sig`` (the machine's kill_signal) to the main container, and to each
        other one unless it names its own stop signal."""
        self._signalled = True
        if self._main.alive():
            self._main.send_signal(sig)
        for name, handle in self.others.items():
            if handle.alive():
                handle.send_signal(_signal_of(self._launches[name].stop_signal, sig))

    def kill_tree(self) -> None:
        self._signalled = True
        for handle in self._all():
            handle.kill_tree()

    def freeze(self) -> None:
        for handle in self._all():
            handle.freeze()

    def thaw(self) -> None:
        for handle in self._all():
            handle.thaw()


def _signal_of(name: str | None, default: int) -> int:
    """``SIGQUIT`` or ``QUIT`` as a number; ``default`` for None or a name no signal has."""
    if not name:
        return default
    name = name.upper()
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        return default


def _restart_container(container_id: str) -> tuple[Any, int]:
    """Start an exited container again, its output attached: (the stream, its pid)."""
    api = client().api
    stream = api.attach(container_id, stream=True, stdout=True, stderr=True, demux=True)
    api.start(container_id)
    return stream, int(api.inspect_container(container_id)["State"].get("Pid") or 0)


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
