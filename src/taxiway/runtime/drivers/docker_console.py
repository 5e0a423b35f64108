"""`taxiway console` with the docker driver: the command in a throwaway container of the
release's image, attached to this terminal, removed when it ends.

On the platform the console is an ephemeral machine made from the app's current image,
with the app's env and secrets (https://fly.io/docs/flyctl/console/): the image's
ENTRYPOINT, WORKDIR and files are there, the app folder on this host is not, so the
command can't run as a process here. The container gets no volume (a console machine
has none), [[vm]] memory as its limit, an init as PID 1, and the engine's default
network: it reaches the world, not the app's machines' private addresses.

Its stdin is this process's, its output comes back as it is written; with a terminal on
both ends it gets a TTY of this terminal's size (this terminal in raw mode meanwhile),
without one the engine keeps stdout and stderr apart. Ctrl-C, SIGTERM or a closed
terminal (SIGHUP) removes it; it carries the state folder's labels, so the `down` or
`up` after a crash (SIGKILL) removes it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Iterator

from taxiway.image.engine import EngineError, client, engine_error
from taxiway.runtime.drivers.base import DriverError

#: The engine's attach stream without a TTY: frames of an 8-byte header (stream type,
#: 3 zero bytes, big-endian length) and that many bytes.
_HEADER = 8
_STREAMS = {1: "stdout", 2: "stderr"}


def run_attached(
    *,
    image: str,
    argv: list[str],
    env: dict[str, str],
    workdir: str | None,
    name: str,
    hostname: str,
    labels: dict[str, str],
    memory_mb: int | None = None,
) -> int:
    """Run ``argv`` in a new container of ``image`` attached to this process's stdin,
    stdout and stderr; its exit code. The container is removed however it ends (Ctrl-C
    without a terminal: 130)."""
    try:
        api = client().api
    except EngineError as exc:
        raise DriverError(f"console: {exc}") from None
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    limits = {}
    if memory_mb:
        limits = {"mem_limit": memory_mb << 20, "memswap_limit": memory_mb << 20}
    try:
        created = api.create_container(
            image,
            command=argv[1:],
            entrypoint=argv[:1],
            environment=env,
            name=name,
            hostname=hostname,
            labels=labels,
            working_dir=workdir or None,
            stdin_open=True,  # and, as the SDK sets it, once: EOF when this process lets go
            tty=tty,
            host_config=api.create_host_config(init=True, **limits),
        )
    except Exception as exc:
        raise DriverError(str(engine_error(exc, f"console, image {image}"))) from None
    container = created["Id"]
    try:
        sock = api.attach_socket(
            container, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        )
        raw: socket.socket = getattr(sock, "_sock", sock)
        api.start(container)
        with _raw_terminal(tty), _interrupted_by_term():
            if tty:
                size = shutil.get_terminal_size()
                with contextlib.suppress(Exception):
                    api.resize(container, height=size.lines, width=size.columns)
            threading.Thread(target=_send_stdin, args=(raw,), daemon=True).start()
            _copy_output(raw, tty)
        return int(api.wait(container).get("StatusCode", 1))
    except KeyboardInterrupt:
        return 130
    except DriverError:
        raise
    except Exception as exc:
        raise DriverError(str(engine_error(exc, f"console, image {image}"))) from None
    finally:
        with contextlib.suppress(Exception):
            api.remove_container(container, force=True)


@contextlib.contextmanager
def _interrupted_by_term() -> Iterator[None]:
    """SIGTERM and SIGHUP end the console as Ctrl-C does (the container is removed),
    not this process alone."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _raw_terminal(tty: bool) -> Iterator[None]:
    """This terminal in raw mode while ``tty`` (keys go to the container as typed, Ctrl-C
    included), restored afterwards."""
    if not tty:
        yield
        return
    import termios
    import tty as tty_mode

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty_mode.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _send_stdin(raw: socket.socket) -> None:
    """This process's stdin to the container, then end its input (EOF) when it ends."""
    fd = sys.stdin.fileno()
    try:
        while data := os.read(fd, 4096):
            raw.sendall(data)
        raw.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the container ended, and its socket with it


def _copy_output(raw: socket.socket, tty: bool) -> None:
    """The container's output to this process's stdout and stderr until it ends."""
    outputs = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    pending = b""
    while chunk := raw.recv(65536):
        if tty:
            outputs["stdout"].write(chunk)
            outputs["stdout"].flush()
            continue
        pending += chunk
        while len(pending) >= _HEADER:
            size = int.from_bytes(pending[4:_HEADER], "big")
            if len(pending) < _HEADER + size:
                break
            out = outputs[_STREAMS.get(pending[0], "stdout")]
            out.write(pending[_HEADER : _HEADER + size])
            out.flush()
            pending = pending[_HEADER + size :]
