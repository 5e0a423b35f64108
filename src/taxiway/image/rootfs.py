"""Files copied out of an image onto the host, for what taxiway serves or mounts itself
(e.g. ``[[statics]]`` guest paths, which the platform's proxy serves from the image).

The copy goes through a container that is created and never started (its filesystem is
the image's) and the engine's archive API, streamed: an image of any size copies in
bounded memory. The archive comes from outside taxiway's control, so extracting it
never writes outside the destination: no absolute names, no ``..``, no path through a
symlink, no hard link to a file outside. Symlinks are kept as symlinks (an absolute one
points into the image's filesystem, not the host's, when the copy is used as a root).
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from taxiway.image.engine import EngineError, client, engine_error
from taxiway.image.labels import COPY_OUT, SCOPE

#: Written last into a finished copy: a folder without it is not one.
COMPLETE = ".complete"

#: Bytes per read from the engine's archive stream.
_CHUNK = 1 << 20


def copy_out(
    image_id: str, guest_paths: list[str], dest: Path, *, scope: str | None = None
) -> Path:
    """Copy each absolute ``guest_paths`` entry (a directory or a file) out of the image
    into ``dest/<guest path>``; a path the image doesn't have is skipped.

    ``dest`` is one folder per image: when it holds `COMPLETE` it is returned at once.
    The copy is made in a temporary folder beside ``dest`` and renamed into place, so a
    crash never leaves half a copy where a finished one is expected. ``scope`` labels
    the helper container with its state folder, so that folder's reaping finds it."""
    if (dest / COMPLETE).is_file():
        return dest
    import docker.errors

    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        engine = client()
        labels = {COPY_OUT: image_id}
        if scope is not None:
            labels[SCOPE] = scope
        try:
            # An entrypoint the engine accepts for an image without CMD; never run.
            container = engine.containers.create(
                image_id, entrypoint=["/taxiway-copy-out"], labels=labels, network_disabled=True
            )
        except Exception as exc:
            raise engine_error(exc, f"image {image_id}") from exc
        try:
            for guest in guest_paths:
                path = posixpath.normpath("/" + guest.lstrip("/"))
                try:
                    chunks, _stat = container.get_archive(path, chunk_size=_CHUNK)
                except docker.errors.NotFound:
                    continue  # the image doesn't have it: nothing to copy
                except Exception as exc:
                    raise engine_error(exc, f"{path} in image {image_id}") from exc
                into = work if path == "/" else (work / path.lstrip("/")).parent
                into.mkdir(parents=True, exist_ok=True)
                try:
                    with _Stream(chunks) as stream:
                        extract(stream, into, within=work, top=posixpath.basename(path) or None)
                except EngineError:
                    raise
                except Exception as exc:
                    raise engine_error(exc, f"{path} in image {image_id}") from exc
        finally:
            with contextlib.suppress(Exception):  # labelled COPY_OUT: a reap can remove it
                container.remove(force=True)
        (work / COMPLETE).write_text(image_id + "\n", encoding="utf-8")
        _move_into_place(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dest


def _move_into_place(work: Path, dest: Path) -> None:
    """Rename the finished copy to ``dest``. Another process may have finished the same
    copy first (then ours goes); a ``dest`` without `COMPLETE` is a leftover and goes."""
    if dest.exists() or dest.is_symlink():
        if (dest / COMPLETE).is_file():
            shutil.rmtree(work, ignore_errors=True)
            return
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        else:
            dest.unlink()
    try:
        os.rename(work, dest)
    except OSError:
        if not (dest / COMPLETE).is_file():
            raise
        shutil.rmtree(work, ignore_errors=True)  # lost a race to an identical copy


def extract(fileobj: IO[bytes], into: Path, *, within: Path, top: str | None = None) -> None:
    """Extract the tar stream ``fileobj`` into ``into``, refusing any member that would
    land outside ``within`` (``into`` or a folder above it).

    ``top`` is the one first name component every member must have (the engine names
    an archive of /app/public ``public/…``); None (the archive of /) strips a leading
    "/" instead. Devices and FIFOs are skipped; setuid/setgid bits are dropped. Owners
    are kept when running as root, as the image's users may need them."""
    root = os.path.realpath(within)
    deferred: list[tuple[str, int]] = []
    trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    with tarfile.open(fileobj=fileobj, mode="r|") as archive:
        for member in archive:
            name = _member_name(member.name, top)
            if name is None:
                continue
            target = os.path.join(into, name)
            # Symlinks already on disk on the way to the member are followed; one at the
            # member's own name is removed below, never written through.
            parent, last = os.path.split(target)
            _check_inside(root, os.path.join(os.path.realpath(parent), last), member)
            if member.ischr() or member.isblk() or member.isfifo():
                continue
            if member.islnk():
                link = os.path.join(into, _link_name(member.linkname, top, member))
                _check_inside(root, os.path.realpath(link), member)
            _clear_the_way(target, member)
            member.name = name
            if member.islnk():
                member.linkname = _link_name(member.linkname, top, member)
            member.mode &= ~0o6000
            if member.isdir():
                deferred.append((target, member.mode & 0o7777))
                member.mode |= 0o700  # its own files must go in; the mode is set after
            archive.extract(member, into, numeric_owner=True, **trusted)  # type: ignore[arg-type]
    for path, mode in reversed(deferred):
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, mode)


def _member_name(name: str, top: str | None) -> str | None:
    """The member's path relative to the extraction folder (None for the root entry of
    an archive of /); a name with ``..``, absolute, or not below ``top`` is refused."""
    if top is None:
        name = name.lstrip("/")
    if name in ("", ".", "./"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or (top is not None and parts[0] != top):
        raise EngineError(
            f"the Docker engine's archive holds {name!r}, which is not under "
            f"{top or '/'}; refusing to extract it"
        )
    return "/".join(parts)


def _link_name(linkname: str, top: str | None, member: tarfile.TarInfo) -> str:
    """A hard link's target, a path inside the same archive."""
    name = _member_name(linkname, top)
    if name is None:
        raise EngineError(f"the archive's hard link {member.name!r} points at its root")
    return name


def _check_inside(root: str, resolved: str, member: tarfile.TarInfo) -> None:
    if os.path.commonpath([root, resolved]) != root:
        raise EngineError(
            f"the Docker engine's archive member {member.name!r} would land outside "
            f"{root} (through a symlink or ..); refusing to extract it"
        )


def _clear_the_way(target: str, member: tarfile.TarInfo) -> None:
    """Remove what stands at ``target`` unless both are directories: a file is never
    written through an existing symlink, and a later copy replaces an earlier one."""
    if not os.path.lexists(target):
        return
    if os.path.isdir(target) and not os.path.islink(target):
        if not member.isdir():
            shutil.rmtree(target)
        return
    os.unlink(target)


class _Stream(io.RawIOBase):
    """A readable file over the SDK's iterator of archive chunks, holding one at a time."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._chunk = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._chunk:
            try:
                self._chunk = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._chunk))
        buffer[:size] = self._chunk[:size]
        self._chunk = self._chunk[size:]
        return size

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        super().close()
