"""What a daemon settles before it serves an app: the app's lock, the driver, what a
dead daemon left behind, the release it runs.

None of it needs an event loop, and this module imports no asyncio: `taxiway up -d`
(`taxiway.cli.app_cmd`) runs `prepare` in the command's own process while the daemon it
forked is still importing its machinery, then hands the daemon the `StartUp` (and the
lock's descriptor). A daemon started any other way runs `prepare` itself
(`taxiway.daemon.serve`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os

import msgspec

from taxiway.api.paths import AppPaths
from taxiway.config.loader import LoadedConfig
from taxiway.config.names import app_name_for
from taxiway.errors import TaxiwayError
from taxiway.state.records import ReleaseRecord


class AlreadyRunning(TaxiwayError):
    """Another daemon runs this app."""


class StartUp(msgspec.Struct, kw_only=True):
    """What `prepare` settled, for the daemon that serves the app."""

    #: The open ``daemon.lock``, locked: the daemon holds it for its whole life.
    lock_fd: int
    app: str
    #: The driver picked for this host (`taxiway.runtime.drivers.resolve_driver`).
    driver: str
    #: The release `up` makes (None: the config, code and secrets are the last one's).
    release: ReleaseRecord | None
    #: What the user should be told before the machines start.
    notices: list[str]


def acquire_lock(paths: AppPaths) -> int:
    """Take the app's daemon lock, or raise `AlreadyRunning` naming the running daemon."""
    paths.ensure()
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode().strip() or "?"
        os.close(fd)
        raise AlreadyRunning(
            f"taxiway is already running this app (daemon pid {holder}); "
            "see `taxiway status`, or stop it with `taxiway down`"
        ) from None
    write_lock_holder(fd)
    return fd


def write_lock_holder(lock_fd: int) -> None:
    """Record this process as the lock's holder (a forked daemon, once it owns the lock)."""
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, str(os.getpid()).encode(), 0)


def prepare(
    loaded: LoadedConfig, paths: AppPaths, driver: str, code_digest: str | None = None
) -> StartUp:
    """Lock the app (or raise `AlreadyRunning`), pick the driver, clean up what a dead
    daemon left, and make the release `up` deploys (`taxiway.deploy.releases`).
    ``code_digest``: the app folder's, when the caller took it already."""
    from taxiway.deploy.releases import release_for_up
    from taxiway.runtime.drivers import resolve_driver
    from taxiway.runtime.leftovers import reap
    from taxiway.state.store import Store

    lock = acquire_lock(paths)
    try:
        chosen = resolve_driver(driver)
        app = app_name_for(loaded.source.path, loaded.config.app)
        with Store.open(paths.state_dir) as store:
            store.ensure_app(app, str(loaded.source.path.resolve()))
            reap(store, app, paths.state_dir)
            with contextlib.suppress(FileNotFoundError):
                paths.socket.unlink()  # we hold the lock: any socket file is a dead daemon's
            before = store.latest_release(app)
            release = release_for_up(store, app, loaded, code=code_digest)
    except BaseException:
        os.close(lock)
        raise
    notices = []
    if release is not None and before is not None and before.status != "complete":
        how = {
            "running": "was interrupted (its daemon stopped mid-deploy)",
            "rolled_back": "was rolled back",
        }.get(before.status, f"is {before.status}")
        notices.append(
            f"release v{before.version} {how}; v{release.version} deploys the current config"
        )
    return StartUp(lock_fd=lock, app=app, driver=chosen, release=release, notices=notices)


def hand_over(channel_fd: int, payload: bytes, lock_fd: int) -> None:
    """Send a forked daemon ``payload`` and the lock over a unix socket, then close it. The
    lock's descriptor travels as SCM_RIGHTS, so the daemon holds the very lock this
    process took (flock belongs to the open file, not to a process)."""
    import socket

    with socket.socket(fileno=channel_fd) as channel:
        socket.send_fds(channel, [b"L"], [lock_fd])
        channel.sendall(payload)


def take_over(channel_fd: int) -> tuple[bytes, int] | None:
    """What `hand_over` sent: the payload, and this process's descriptor of the lock;
    None when the command sent nothing (the config had errors, or the app already runs)."""
    import socket

    with socket.socket(fileno=channel_fd) as channel:
        _, fds, _, _ = socket.recv_fds(channel, 1, 1)
        chunks = []
        while chunk := channel.recv(1 << 20):
            chunks.append(chunk)
    if not fds:
        return None
    if not chunks:  # the command died while sending
        os.close(fds[0])
        return None
    # Received descriptors are inheritable: a machine must never hold the lock (it would
    # outlive a killed daemon and keep the next one out).
    os.set_inheritable(fds[0], False)
    return b"".join(chunks), fds[0]
