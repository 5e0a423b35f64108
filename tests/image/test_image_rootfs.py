"""Copying paths out of an image: whole or not at all, and never outside the destination."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from image_apps import BASE_IMAGE, Progress, write_app

from taxiway.image import rootfs
from taxiway.image.build import build_image
from taxiway.image.engine import EngineError, client
from taxiway.image.labels import COPY_OUT
from taxiway.image.rootfs import COMPLETE, copy_out, extract

DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN mkdir -p /app/public/sub \\
 && echo hi > /app/public/index.html \\
 && echo deep > /app/public/sub/deep.txt \\
 && ln -s /etc /app/public/etc-link \\
 && ln -s ../../../../../../../../tmp /app/public/up-link \\
 && echo one > /app/one.txt \\
 && chmod 0555 /app/public/sub
"""


def test_copy_out_files_symlinks_and_missing_paths(scope: str, tmp_path: Path) -> None:
    loaded = write_app(tmp_path / "app", 'app = "image-test"\n', {"Dockerfile": DOCKERFILE})
    built = build_image(loaded, scope=scope, app="image-test", progress=Progress())
    dest = tmp_path / "images" / built.id.removeprefix("sha256:")

    got = copy_out(built.id, ["/app/public", "/app/one.txt", "/not/there"], dest, scope=scope)

    assert got == dest
    assert (dest / COMPLETE).is_file()
    assert (dest / "app/public/index.html").read_text() == "hi\n"
    assert (dest / "app/public/sub/deep.txt").read_text() == "deep\n"
    assert (dest / "app/one.txt").read_text() == "one\n"
    assert not (dest / "not").exists()
    assert os.stat(dest / "app/public/sub").st_mode & 0o777 == 0o555
    # Symlinks stay symlinks, pointing where they pointed in the image.
    assert os.readlink(dest / "app/public/etc-link") == "/etc"
    assert os.readlink(dest / "app/public/up-link") == "../../../../../../../../tmp"
    # Nothing half-made beside it, and no helper container left behind.
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]
    assert client().containers.list(all=True, filters={"label": f"{COPY_OUT}={built.id}"}) == []

    # A finished copy is returned as it is, without asking the engine.
    def no_engine() -> None:
        raise AssertionError("the engine was asked again")

    original = rootfs.client
    rootfs.client = no_engine  # type: ignore[assignment]
    try:
        assert copy_out(built.id, ["/app/public"], dest) == dest
    finally:
        rootfs.client = original


def test_copy_out_of_a_missing_image_leaves_nothing(engine_ready: None, tmp_path: Path) -> None:
    dest = tmp_path / "images" / "nope"
    with pytest.raises(EngineError, match="image sha256:0000"):
        copy_out("sha256:" + "0" * 64, ["/app"], dest)
    assert list((tmp_path / "images").iterdir()) == []


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    out.seek(0)
    return out


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    return info


@pytest.fixture
def jail(tmp_path: Path) -> tuple[Path, Path]:
    """A destination, and a folder beside it that nothing may reach."""
    (tmp_path / "dest" / "app").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return tmp_path / "dest", tmp_path / "outside"


def test_a_member_through_an_extracted_symlink_is_refused(jail: tuple[Path, Path]) -> None:
    dest, outside = jail
    archive = tar_of(
        (entry("public", tarfile.SYMTYPE, linkname=str(outside)), None),
        (entry("public/evil.txt"), b"escaped"),
    )
    with pytest.raises(EngineError, match="outside"):
        extract(archive, dest / "app", within=dest, top="public")
    assert list(outside.iterdir()) == []
    assert os.readlink(dest / "app/public") == str(outside)  # kept, never followed


def test_a_file_over_an_extracted_symlink_replaces_the_link(jail: tuple[Path, Path]) -> None:
    dest, outside = jail
    (outside / "target.txt").write_text("untouched")
    archive = tar_of(
        (entry("public", tarfile.DIRTYPE, mode=0o755), None),
        (entry("public/f", tarfile.SYMTYPE, linkname=str(outside / "target.txt")), None),
        (entry("public/f"), b"new"),
    )
    extract(archive, dest / "app", within=dest, top="public")
    assert (outside / "target.txt").read_text() == "untouched"
    assert not os.path.islink(dest / "app/public/f")
    assert (dest / "app/public/f").read_text() == "new"


@pytest.mark.parametrize(
    "name", ["public/../../escape.txt", "/public/abs.txt", "../escape.txt", "elsewhere/x.txt"]
)
def test_names_outside_the_copied_path_are_refused(jail: tuple[Path, Path], name: str) -> None:
    dest, _ = jail
    archive = tar_of((entry(name), b"escaped"))
    with pytest.raises(EngineError, match="refusing to extract"):
        extract(archive, dest / "app", within=dest, top="public")
    assert not any(p.is_file() for p in dest.parent.rglob("*"))


def test_a_hard_link_to_a_file_outside_is_refused(jail: tuple[Path, Path]) -> None:
    dest, outside = jail
    (outside / "secret").write_text("host file")
    archive = tar_of(
        (entry("public", tarfile.DIRTYPE, mode=0o755), None),
        (entry("public/out", tarfile.SYMTYPE, linkname=str(outside)), None),
        (entry("public/hard", tarfile.LNKTYPE, linkname="public/out/secret"), None),
    )
    with pytest.raises(EngineError, match="outside"):
        extract(archive, dest / "app", within=dest, top="public")
    assert not (dest / "app/public/hard").exists()


def test_devices_are_skipped_and_setuid_dropped(jail: tuple[Path, Path]) -> None:
    dest, _ = jail
    archive = tar_of(
        (entry("public", tarfile.DIRTYPE, mode=0o755), None),
        (entry("public/fifo", tarfile.FIFOTYPE), None),
        (entry("public/tool", mode=0o4755), b"#!/bin/sh\n"),
    )
    extract(archive, dest / "app", within=dest, top="public")
    assert not (dest / "app/public/fifo").exists()
    assert os.stat(dest / "app/public/tool").st_mode & 0o7777 == 0o755
