"""`[[statics]]` from a rootfs (the docker driver's copy of the image's files): every guest
path is the image's, the rootfs is the trusted base, symlinks and hidden names stay refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
from edge_support import plan

from taxiway.edge.app import AppEdge
from taxiway.edge.fleet import StaticFleet
from taxiway.edge.statics import FileBody, StaticResponse, Statics, host_path
from taxiway.plan.machine import Runs, StaticSpec

SECRET = b"HOST-SECRET"
IMAGE_CSS = b"/* from the image */\n"
HOST_CSS = b"/* from the app folder */\n"


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """An image's files copied out, next to a host secret and an app folder that differs."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    root = tmp_path / "rootfs"
    files = {
        "app/static/site.css": IMAGE_CSS,
        "app/static/admin/base.css": b"admin",
        "app/manage.py": b"source",
        "app/.env": b"SECRET_KEY=x",
        "app/static/.git/config": b"[core]",
        "app/static/.well-known/security.txt": b"Contact: x",
        "usr/share/nginx/html/index.html": b"<h1>nginx</h1>",
        "usr/lib/x/file.txt": b"lib",
        "etc/motd": b"image motd",
        "root/.ssh/id_ed25519": b"key",
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    static = root / "app" / "static"
    (static / "leak.txt").symlink_to(tmp_path / "secret.txt")  # points out of the rootfs
    (static / "hostdir").symlink_to(tmp_path)
    (static / "motd").symlink_to(root / "etc" / "motd")  # points inside: not followed either
    (static / "rel").symlink_to("../../etc")
    (root / "lib").symlink_to("usr/lib")  # merged /usr, as in Debian's images
    app = tmp_path / "app"
    (app / "static").mkdir(parents=True)
    (app / "static" / "site.css").write_bytes(HOST_CSS)
    return root


def statics(rootfs: Path, *specs: StaticSpec, workdir: str | None = None, log=None) -> Statics:
    specs = specs or (StaticSpec(guest_path="/app/static", url_prefix="/static/"),)
    return Statics(
        list(specs), app_dir=rootfs.parent / "app", workdir=workdir, rootfs=rootfs, log=log
    )


def get(s: Statics, path: bytes) -> StaticResponse | None:
    return s.match("GET", path, [])


def body(r: StaticResponse | None) -> bytes:
    assert r is not None and r.status == 200, r
    if isinstance(r.body, FileBody):
        with r.body.open() as f:
            return f.read(r.body.length)
    return r.body


# --- mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("guest", "workdir", "root"),
    [
        ("/app/static", None, "app/static"),
        ("static", None, "app/static"),
        ("/app", None, "app"),
        ("dist", "/srv/www", "srv/www/dist"),
        ("/srv/www/../www/dist", "/srv/www", "srv/www/dist"),
        ("/usr/share/nginx/html", None, "usr/share/nginx/html"),
        ("/etc", "/app", "etc"),
        ("/app/../../etc", None, "etc"),
        ("/", None, ""),
    ],
)
def test_every_guest_path_maps_into_the_rootfs(
    tmp_path: Path, guest: str, workdir: str | None, root: str
) -> None:
    rootfs = tmp_path / "rootfs"
    expected = rootfs / root if root else rootfs
    assert host_path(guest, app_dir=tmp_path / "app", workdir=workdir, rootfs=rootfs) == (
        rootfs,
        expected,
    )


def test_the_image_files_are_served_not_the_app_folder(rootfs: Path) -> None:
    s = statics(rootfs)
    assert s.diagnostics == []
    assert body(get(s, b"/static/site.css")) == IMAGE_CSS
    assert body(get(s, b"/static/admin/base.css")) == b"admin"
    assert get(s, b"/static/missing.css") is None  # a miss goes to the app
    assert get(s, b"/static/") is None  # no listing


@pytest.mark.parametrize(
    ("guest", "path", "content"),
    [
        ("/usr/share/nginx/html", b"/x/index.html", b"<h1>nginx</h1>"),
        ("/etc", b"/x/motd", b"image motd"),  # the image's /etc, not the host's
        ("/app", b"/x/manage.py", b"source"),
    ],
)
def test_a_guest_path_outside_the_workdir_is_the_images(
    rootfs: Path, guest: str, path: bytes, content: bytes
) -> None:
    s = statics(rootfs, StaticSpec(guest_path=guest, url_prefix="/x"))
    assert s.diagnostics == []
    assert body(get(s, path)) == content


@pytest.mark.parametrize(
    "path",
    [b"/static/leak.txt", b"/static/hostdir/secret.txt", b"/static/motd", b"/static/rel/motd"],
)
def test_symlinks_in_the_rootfs_are_not_followed(rootfs: Path, path: bytes) -> None:
    notes: list[str] = []
    s = statics(rootfs, log=notes.append)
    assert get(s, path) is None
    assert any("is a symlink" in note for note in notes)


def test_a_guest_path_through_a_symlink_of_the_image_is_not_served(rootfs: Path) -> None:
    """/lib is usr/lib in the image: the platform's static server doesn't follow it, nor
    does taxiway, and the mapping says so."""
    s = statics(rootfs, StaticSpec(guest_path="/lib", url_prefix="/x"))
    assert "is a symlink" in s.diagnostics[0]
    assert get(s, b"/x/x/file.txt") is None
    s = statics(rootfs, StaticSpec(guest_path="/lib/x", url_prefix="/x"))
    assert get(s, b"/x/file.txt") is None


@pytest.mark.parametrize(
    "path", [b"/x/.env", b"/x/%2eenv", b"/x/static/.git/config", b"/x/static/../.env"]
)
def test_hidden_names_are_refused(rootfs: Path, path: bytes) -> None:
    s = statics(rootfs, StaticSpec(guest_path="/app", url_prefix="/x"))
    assert get(s, path) is None


def test_well_known_is_served(rootfs: Path) -> None:
    assert body(get(statics(rootfs), b"/static/.well-known/security.txt")) == b"Contact: x"


@pytest.mark.parametrize("guest", ["/root/.ssh", "/app/.git", ".venv/lib"])
def test_a_guest_path_in_a_hidden_folder_is_refused(rootfs: Path, guest: str) -> None:
    s = statics(rootfs, StaticSpec(guest_path=guest, url_prefix="/x"))
    assert len(s.diagnostics) == 1 and "hidden folder" in s.diagnostics[0]
    assert get(s, b"/x/id_ed25519") is None


@pytest.mark.parametrize("guest", ["/", "/app/..", "../..", "/.."])
def test_the_image_root_itself_is_refused(rootfs: Path, guest: str) -> None:
    s = statics(rootfs, StaticSpec(guest_path=guest, url_prefix="/x"))
    assert len(s.diagnostics) == 1
    assert "is not served" in s.diagnostics[0] and "whole file system" in s.diagnostics[0]
    assert get(s, b"/x/etc/motd") is None


@pytest.mark.parametrize(
    "path",
    [
        b"/static/../../../secret.txt",
        b"/static/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        b"/static/..%2f..%2f..%2fsecret.txt",
        b"/static/admin/../../../../secret.txt",
        b"/static/%2e%2e%5c%2e%2e%5csecret.txt",
        b"/static/../manage.py",
        b"/static/site.css%00.png",
        b"/static//../../etc/motd",
    ],
)
def test_no_path_climbs_out_of_guest_path(rootfs: Path, path: bytes) -> None:
    r = get(statics(rootfs), path)
    assert r is None or r.status == 400
    assert r is None or (SECRET not in r.body and b"source" not in r.body)


def test_a_missing_rootfs_is_reported_and_served_once_it_exists(tmp_path: Path) -> None:
    rootfs = tmp_path / "later"
    s = statics(rootfs)
    assert "not a directory" in s.diagnostics[0]
    assert get(s, b"/static/site.css") is None
    (rootfs / "app" / "static").mkdir(parents=True)
    (rootfs / "app" / "static" / "site.css").write_bytes(IMAGE_CSS)
    assert body(get(s, b"/static/site.css")) == IMAGE_CSS


# --- the app's edge -------------------------------------------------------------------


def test_runs_rootfs_is_last_and_none_from_the_planner(tmp_path: Path) -> None:
    assert Runs.__struct_fields__[-1] == "rootfs"
    specs = plan(tmp_path, 'app = "a"\n')
    assert specs["app"].runs.rootfs is None


def with_rootfs(specs: dict, rootfs: str | None) -> dict:
    return {
        group: msgspec.structs.replace(spec, runs=msgspec.structs.replace(spec.runs, rootfs=rootfs))
        for group, spec in specs.items()
    }


def test_the_app_edge_serves_from_the_plans_rootfs_and_follows_a_new_one(
    tmp_path: Path, rootfs: Path
) -> None:
    app = tmp_path / "app"
    specs = plan(
        app,
        'app = "a"\n[processes]\nweb = "x"\ncron = "y"\n'
        '[[statics]]\nguest_path = "/app/static"\nurl_prefix = "/static/"\n',
    )
    edge = AppEdge(
        StaticFleet("a", []), specs, base_dir=app, certs_dir=tmp_path / "certs", log=lambda m: None
    )
    assert edge.statics is not None
    assert body(get(edge.statics, b"/static/site.css")) == HOST_CSS  # no rootfs: the app folder

    # The first group that has one says where; a relative rootfs is from the app folder.
    moved = with_rootfs(specs, None) | {"web": with_rootfs(specs, "../rootfs")["web"]}

    listeners = edge.edge

    async def deploys() -> list[bool]:
        changed = [await edge.reconfigure(moved), await edge.reconfigure(moved)]
        await edge.close()
        return changed

    # Only the statics moved (a deploy of another image): the listeners are not rebound,
    # so no connection is cut and no port is given up; they serve the new image's files.
    assert asyncio.run(deploys()) == [False, False]
    assert edge.edge is listeners and listeners.statics is edge.statics
    assert body(get(edge.statics, b"/static/site.css")) == IMAGE_CSS


def test_a_deploy_of_another_image_keeps_the_listeners_and_their_connections(
    tmp_path: Path, rootfs: Path
) -> None:
    """With the docker driver every deploy of new code copies its image's statics out
    afresh: the edge serves them from then on, on the port it had, without cutting the
    connections a browser holds."""
    app = tmp_path / "app"
    specs = plan(
        app,
        'app = "a"\n[http_service]\ninternal_port = 8080\n'
        '[[statics]]\nguest_path = "/app/static"\nurl_prefix = "/static/"\n',
    )
    edge = AppEdge(
        StaticFleet("a", []), specs, base_dir=app, certs_dir=tmp_path / "certs", log=lambda m: None
    )
    request = b"GET /static/site.css HTTP/1.1\r\nHost: a.localhost\r\n\r\n"

    async def css(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return await reader.readexactly(length)

    async def deploy() -> tuple[list[bytes], bool, bool]:
        await edge.start()
        try:
            before = edge.bindings()
            host, port = next(b["address"] for b in before if b["port"] == 80).rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            served = [await css(reader, writer)]
            rebound = await edge.reconfigure(with_rootfs(specs, str(rootfs)))
            served.append(await css(reader, writer))  # the same connection
            writer.close()
            return served, rebound, edge.bindings() == before
        finally:
            await edge.close()

    served, rebound, same_ports = asyncio.run(deploy())
    assert served == [HOST_CSS, IMAGE_CSS]
    assert not rebound and same_ports
