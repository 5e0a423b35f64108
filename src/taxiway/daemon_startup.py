"""What a daemon settles before it serves an app: the app's lock, the driver, what a
dead daemon left behind, the release it runs.

None of it needs an event loop, and this module imports no asyncio: `taxiway up -d`
runs `prepare` before any loop runs, in the daemon it forked when that launches its
machines first, else in the command's own process while the daemon imports its
machinery (`taxiway.daemon_fork`). A daemon started any other way runs `prepare` itself
(`taxiway.daemon.serve`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from taxiway.api.paths import AppPaths
from taxiway.config.loader import LoadedConfig
from taxiway.config.names import app_name_for
from taxiway.errors import TaxiwayError
from taxiway.plan.dockerfile import has_image
from taxiway.state.records import ReleaseRecord

if TYPE_CHECKING:
    from taxiway.state.store import Store


class AlreadyRunning(TaxiwayError):
    """Another daemon runs this app."""


class StartUp(msgspec.Struct, kw_only=True):
    """What `prepare` settled, for the daemon that serves the app."""

    #: The open ``daemon.lock``, locked: the daemon holds it for its whole life.
    lock_fd: int
    app: str
    #: The driver picked for this host (`taxiway.runtime.drivers.choose_driver`).
    driver: str
    #: Why that driver (`taxiway.runtime.drivers.DriverChoice`), for `status` and `up`.
    driver_reason: str
    #: The release `up` makes (None: the config, code and secrets are the last one's).
    release: ReleaseRecord | None
    #: What the user should be told before the machines start.
    notices: list[str]


#: How long a second `up` waits for a daemon that has just taken the lock to write its pid.
_HOLDER_WAIT_S = 1.0


def acquire_lock(paths: AppPaths, holder: int | None = None) -> int:
    """Take the app's daemon lock, or raise `AlreadyRunning` naming the running daemon.
    ``holder``: the pid of the daemon that will hold the lock (`up -d`'s command takes
    it for the daemon it forked), else this process."""
    paths.ensure()
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        running = _lock_holder(fd)
        os.close(fd)
        raise AlreadyRunning(
            f"taxiway is already running this app (daemon pid {running or '?'}); "
            "see `taxiway status`, or stop it with `taxiway down`"
        ) from None
    write_lock_holder(fd, holder)
    return fd


def write_lock_holder(lock_fd: int, holder: int | None = None) -> None:
    """Record the lock's holder (this process unless ``holder`` says which): written
    over the old pid, then cut to length, so a reader never sees an empty file."""
    text = f"{holder or os.getpid()}\n".encode()
    os.pwrite(lock_fd, text, 0)
    os.ftruncate(lock_fd, len(text))


def _lock_holder(lock_fd: int) -> int | None:
    """The pid of the daemon holding the lock. Until a daemon that has just taken the
    lock writes its own pid, the file names the previous one (no longer running): wait
    a moment for a live one."""
    deadline = time.monotonic() + _HOLDER_WAIT_S
    while True:
        words = os.pread(lock_fd, 32, 0).split()
        pid = int(words[0]) if words and words[0].isdigit() else None
        if (pid is not None and _alive(pid)) or time.monotonic() >= deadline:
            return pid
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _quiet(line: str) -> None:
    """Where build output goes when nobody watches."""


def _build(
    loaded: LoadedConfig, app: str, paths: AppPaths, progress: Callable[[str], None]
) -> str:
    """Build the app's image for `up` (docker driver); its id. A failed build prints its
    last lines before the one sentence that says why."""
    from taxiway.image.build import BuildError
    from taxiway.image.for_release import build_release
    from taxiway.runtime.scope import scope_for

    try:
        built = build_release(
            loaded, scope=scope_for(app, paths.state_dir), app=app, progress=progress
        )
    except BuildError as exc:
        for line in exc.tail:
            progress(f"  {line}")
        raise
    return built.id


def _tag(
    image_id: str, app: str, paths: AppPaths, release: ReleaseRecord | None, store: Store
) -> None:
    """Tag the image with the release `up` runs, and prune what no rollback needs."""
    from taxiway.image.build import tag_release
    from taxiway.image.for_release import prune
    from taxiway.runtime.scope import scope_for

    if release is None:
        return
    scope = scope_for(app, paths.state_dir)
    tag_release(image_id, scope, release.version)
    prune(scope, release.version, [r.version for r in store.list_releases(app)])


def prepare(
    loaded: LoadedConfig,
    paths: AppPaths,
    driver: str,
    code_digest: str | None = None,
    store: Store | None = None,
    holder: int | None = None,
    *,
    asked_by: str = "--driver",
    progress: Callable[[str], None] | None = None,
) -> StartUp:
    """Lock the app (or raise `AlreadyRunning`), pick the driver, clean up what a dead
    daemon left, and make the release `up` deploys (`taxiway.deploy.releases`).
    ``code_digest``: the app folder's, when the caller took it already; ``store``: the
    state store, when the caller keeps it open (else it is opened for this); ``holder``:
    the pid of the daemon that will hold the lock, when it is not this process;
    ``asked_by``: where an explicit driver came from
    (`taxiway.runtime.drivers.choose_driver`). With the docker driver the app's image is
    built first (its output to ``progress``) and is the release's code; a failed build
    leaves the app as it was."""
    from taxiway.deploy.releases import release_for_up
    from taxiway.runtime.drivers import choose_driver
    from taxiway.runtime.leftovers import reap
    from taxiway.state.store import Store

    lock = acquire_lock(paths, holder)
    db = store
    try:
        chosen = choose_driver(
            driver, asked_by, has_image=has_image(loaded.config, loaded.base_dir)
        )
        app = app_name_for(loaded.source.path, loaded.config.app)
        if db is None:
            db = Store.open(paths.state_dir)
        db.ensure_app(app, str(loaded.source.path.resolve()))
        reap(db, app, paths.state_dir)
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()  # we hold the lock: any socket file is a dead daemon's
        before = db.latest_release(app)
        image_id = None
        if chosen.name == "docker":
            image_id = _build(loaded, app, paths, progress or _quiet)
        release = release_for_up(db, app, loaded, code=code_digest, image_id=image_id)
        if image_id is not None:
            _tag(image_id, app, paths, release or before, db)
    except BaseException:
        os.close(lock)
        raise
    finally:
        if store is None and db is not None:
            db.close()
    notices = []
    if release is not None and before is not None and before.status != "complete":
        how = {
            "running": "was interrupted (its daemon stopped mid-deploy)",
            "rolled_back": "was rolled back",
        }.get(before.status, f"is {before.status}")
        notices.append(
            f"release v{before.version} {how}; v{release.version} deploys the current config"
        )
    return StartUp(
        lock_fd=lock,
        app=app,
        driver=chosen.name,
        driver_reason=chosen.reason,
        release=release,
        notices=notices,
    )
