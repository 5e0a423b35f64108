"""A volume folder as one gzipped tar file, and back: written whole or not at all.

Both directions go through a temporary name beside the result and a rename at the
end, so a full disk or a crash leaves no half-written archive or volume folder behind
(the temporary one is removed on failure). The archive keeps what a machine relies on
in its volume: modes, owners, symlinks (with any target), hard links and empty folders.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tarfile
from pathlib import Path

#: gzip's fastest level: a started machine is paused while its volume is copied, so
#: speed matters more than the last few percent of size.
COMPRESS_LEVEL = 1
SUFFIX = ".tar.gz"


class VolumeChanged(Exception):
    """A file changed size while it was copied (the volume was not paused)."""


def write_archive(folder: Path, target: Path) -> tuple[int, str]:
    """Archive the contents of ``folder`` at ``target``; returns its (size in bytes,
    sha256 hex). Raises `OSError` (nothing left at ``target``) when the disk refuses."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".partial")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as raw:
            with tarfile.open(
                fileobj=raw, mode="w:gz", compresslevel=COMPRESS_LEVEL, format=tarfile.PAX_FORMAT
            ) as tar:
                _add_tree(tar, folder, "")
            raw.flush()
            os.fsync(raw.fileno())
        with open(temporary, "rb") as done:
            digest = hashlib.file_digest(done, "sha256").hexdigest()
        size = temporary.stat().st_size
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return size, digest


def _add_tree(tar: tarfile.TarFile, folder: Path, prefix: str) -> None:
    """Add what ``folder`` holds (not the folder itself), skipping what vanishes while
    the walk goes (a crash-consistent copy of a volume in use) and sockets."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return
    for name in names:
        path = folder / name
        arcname = f"{prefix}{name}"
        try:
            info = tar.gettarinfo(str(path), arcname)
        except FileNotFoundError:
            continue
        if info is None:  # a socket: nothing to keep
            continue
        if info.isreg():
            _add_file(tar, path, arcname)
        else:
            tar.addfile(info)
            if info.isdir():
                _add_tree(tar, path, arcname + "/")


def _add_file(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    """A regular file, described from the opened file itself (never through a symlink
    that replaced it meanwhile), its bytes as they are now."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError):
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # it became a symlink: gone as a file
            return
        raise
    with os.fdopen(fd, "rb") as handle:
        info = tar.gettarinfo(arcname=arcname, fileobj=handle)
        if not info.isreg():  # it became something else (a hard link keeps its bytes once)
            tar.addfile(info)
            return
        try:
            tar.addfile(info, handle)
        except OSError as exc:
            if "unexpected end of data" in str(exc):
                raise VolumeChanged(path) from None
            raise


def extract_archive(archive: Path, folder: Path) -> None:
    """Unpack ``archive`` as the new folder ``folder`` (which must not exist). Raises
    `OSError` (nothing left at ``folder``) when the disk refuses, `tarfile.TarError`
    when the archive is damaged."""
    temporary = folder.with_name(f".{folder.name}.restoring")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(mode=0o700, parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(temporary, filter=_inside)
        os.rename(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _inside(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """Extract a member as it was taken (mode and owner kept), but only inside ``dest``:
    no absolute or ``..`` names, no path through a symlink out, no hard link to outside,
    no device files. A symlink may point anywhere: it is created, never followed."""
    root = os.path.realpath(dest)
    if os.path.isabs(member.name) or not _within(root, os.path.join(root, member.name)):
        raise tarfile.OutsideDestinationError(member, member.name)
    if member.islnk() and not _within(root, os.path.join(root, member.linkname)):
        raise tarfile.LinkOutsideDestinationError(member, member.linkname)
    if member.ischr() or member.isblk():
        raise tarfile.SpecialFileError(member)
    return member


def _within(root: str, path: str) -> bool:
    return os.path.commonpath([root, os.path.realpath(path)]) == root
