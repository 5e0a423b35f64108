"""A volume folder as an archive and back: what a machine keeps in a volume survives the
trip, an archive can't write outside the folder it is unpacked into, and a failure
leaves nothing half-written."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from small_disk import small_tmpfs
from taxiway.volumes.archive import extract_archive, write_archive


def _tree(root: Path) -> None:
    (root / "db").mkdir()
    (root / "db" / "data.bin").write_bytes(os.urandom(100_000))
    (root / "db" / "data.bin").chmod(0o640)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "empty").mkdir(mode=0o750)
    os.symlink("/data/db/data.bin", root / "absolute-link")  # a path inside the machine
    os.symlink("db/data.bin", root / "relative-link")
    os.link(root / "db" / "data.bin", root / "hard-link")
    os.mkfifo(root / "fifo")


def _describe(root: Path) -> dict[str, tuple]:
    seen = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        kind = stat.S_IFMT(info.st_mode)
        content = (
            os.readlink(path)
            if path.is_symlink()
            else path.read_bytes()
            if stat.S_ISREG(info.st_mode)
            else None
        )
        seen[str(path.relative_to(root))] = (kind, stat.S_IMODE(info.st_mode), info.st_uid, content)
    return seen


def test_a_folder_comes_back_as_it_was(tmp_path: Path) -> None:
    source = tmp_path / "volume"
    source.mkdir()
    _tree(source)
    size, digest = write_archive(source, tmp_path / "snap" / "one.tar.gz")
    archive = tmp_path / "snap" / "one.tar.gz"
    assert size == archive.stat().st_size and len(digest) == 64
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert [p.name for p in archive.parent.iterdir()] == ["one.tar.gz"]  # no temporary left

    restored = tmp_path / "vol_new"
    extract_archive(archive, restored)
    assert _describe(restored) == _describe(source)
    assert (restored / "hard-link").stat().st_ino == (restored / "db" / "data.bin").stat().st_ino
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _archive_with(tmp_path: Path, *members: tarfile.TarInfo) -> Path:
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            data = b"owned" if member.isreg() else None
            if data is not None:
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


@pytest.mark.parametrize(
    "members",
    [
        [_member("../outside")],
        [_member("/etc/taxiway-test-evil")],
        [_member("up", tarfile.SYMTYPE, str(Path("/tmp").resolve())), _member("up/evil")],
        [_member("link", tarfile.LNKTYPE, "../../etc/passwd")],
        [_member("dev", tarfile.CHRTYPE)],
    ],
    ids=["dot-dot", "absolute", "through-a-symlink", "hard-link-out", "device"],
)
def test_an_archive_cannot_write_outside_its_folder(
    tmp_path: Path, members: list[tarfile.TarInfo]
) -> None:
    archive = _archive_with(tmp_path, *members)
    target = tmp_path / "restore" / "vol_x"
    target.parent.mkdir()
    with pytest.raises(tarfile.TarError):
        extract_archive(archive, target)
    assert list(target.parent.iterdir()) == []  # neither the folder nor its temporary
    assert not (tmp_path / "outside").exists() and not Path("/tmp/evil").exists()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "256k") as disk:
        yield disk


def test_a_full_disk_leaves_no_partial_archive_or_folder(tmp_path: Path, tiny_disk: Path) -> None:
    source = tmp_path / "volume"
    source.mkdir()
    (source / "random.bin").write_bytes(os.urandom(1_000_000))  # doesn't compress
    with pytest.raises(OSError):
        write_archive(source, tiny_disk / "snap" / "one.tar.gz")
    assert list((tiny_disk / "snap").iterdir()) == []

    archive = tmp_path / "one.tar.gz"
    write_archive(source, archive)
    with pytest.raises(OSError):
        extract_archive(archive, tiny_disk / "vol_new")
    assert [p.name for p in tiny_disk.iterdir()] == ["snap"]
