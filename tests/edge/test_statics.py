"""`[[statics]]` served by the edge: real trees, real symlinks, every traversal trick refused."""

from __future__ import annotations

import os
from email.utils import formatdate
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taxiway.config.loader import load_config
from taxiway.edge.statics import SMALL_FILE, FileBody, StaticResponse, Statics, host_path
from taxiway.plan.machine import StaticSpec, plan_machines

SECRET = b"TOP-SECRET-CONTENT"
CSS = b"body { color: red }\n"
BIG = bytes(range(256)) * (SMALL_FILE // 256 + 40)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return make_app(tmp_path)


def make_app(tmp_path: Path) -> Path:
    """An app folder with public/ (served at /public) and secrets around it."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    app = tmp_path / "app"
    public = app / "public"
    (public / "sub").mkdir(parents=True)
    (app / "secret.txt").write_bytes(SECRET)
    (public / "style.css").write_bytes(CSS)
    (public / "index.html").write_text("<h1>index</h1>")
    (public / "sub" / "index.html").write_text("<h1>sub</h1>")
    (public / "sub" / "page.html").write_text("<h1>page</h1>")
    (public / "app.js").write_text("console.log(1)")
    (public / "data.json").write_text("{}")
    (public / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (public / "font.woff2").write_bytes(b"wOF2")
    (public / "style.css.gz").write_bytes(b"\x1f\x8b")
    (public / "README").write_text("no extension")
    (public / "a b.txt").write_text("spaced")
    (public / "empty.txt").write_bytes(b"")
    (public / "big.bin").write_bytes(BIG)
    (public / "%2e%2e").mkdir()  # a real directory with that literal name
    (public / "out.txt").symlink_to(tmp_path / "secret.txt")
    (public / "outdir").symlink_to(tmp_path)
    (public / "in.css").symlink_to(public / "style.css")
    (public / "indir").symlink_to(public / "sub")
    return app


def statics(app: Path, *specs: StaticSpec, workdir: str | None = None, log=None) -> Statics:
    specs = specs or (StaticSpec(guest_path="/app/public", url_prefix="/public"),)
    return Statics(list(specs), app_dir=app, workdir=workdir, log=log)


def get(s: Statics, path: bytes, *headers: tuple[bytes, bytes], method: str = "GET"):
    return s.match(method, path, list(headers))


def header(response: StaticResponse, name: bytes) -> bytes | None:
    values = [v for k, v in response.headers if k.lower() == name.lower()]
    assert len(values) <= 1
    return values[0] if values else None


def body(response: StaticResponse) -> bytes:
    if isinstance(response.body, FileBody):
        with response.body.open() as f:
            return f.read(response.body.length)
    return response.body


# --- serving --------------------------------------------------------------------------


def test_a_file_under_the_prefix_is_served_with_its_headers(app: Path) -> None:
    r = get(statics(app), b"/public/style.css?v=3")
    assert r is not None and r.status == 200 and r.reason == b"OK"
    assert r.body == CSS
    assert header(r, b"content-type") == b"text/css; charset=utf-8"
    assert header(r, b"content-length") == str(len(CSS)).encode()
    assert header(r, b"accept-ranges") == b"bytes"
    st = (app / "public" / "style.css").stat()
    assert header(r, b"last-modified") == formatdate(int(st.st_mtime), usegmt=True).encode()
    assert header(r, b"etag") == b'"%x-%x"' % (st.st_mtime_ns, st.st_size)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", b"text/javascript; charset=utf-8"),
        ("data.json", b"application/json; charset=utf-8"),
        ("logo.png", b"image/png"),
        ("font.woff2", b"font/woff2"),
        ("sub/page.html", b"text/html; charset=utf-8"),
        ("style.css.gz", b"application/gzip"),  # the file as it is, no Content-Encoding
        ("README", b"application/octet-stream"),
        ("empty.txt", b"text/plain; charset=utf-8"),
    ],
)
def test_content_types(app: Path, name: str, content_type: bytes) -> None:
    r = get(statics(app), b"/public/" + name.encode())
    assert r is not None and r.status == 200
    assert header(r, b"content-type") == content_type
    assert header(r, b"content-encoding") is None


def test_head_has_the_headers_of_get_and_no_body(app: Path) -> None:
    r = get(statics(app), b"/public/big.bin", method="HEAD")
    assert r is not None and r.status == 200 and r.body == b""
    assert header(r, b"content-length") == str(len(BIG)).encode()


def test_large_files_are_streamed_from_disk(app: Path) -> None:
    r = get(statics(app), b"/public/big.bin")
    assert r is not None and isinstance(r.body, FileBody)
    assert (r.body.offset, r.body.length) == (0, len(BIG))
    assert body(r) == BIG


def test_a_streamed_file_replaced_meanwhile_is_not_opened(app: Path) -> None:
    r = get(statics(app), b"/public/big.bin")
    assert r is not None and isinstance(r.body, FileBody)
    target = app / "public" / "big.bin"
    target.rename(app / "old.bin")  # kept, so the new file can't reuse its inode
    target.write_bytes(BIG)  # same name and content, another file
    with pytest.raises(FileNotFoundError):
        r.body.open()
    target.unlink()
    target.symlink_to(app / "old.bin")  # the very same file, through a symlink
    with pytest.raises(OSError):
        r.body.open()


def test_escaped_names_and_redundant_segments_are_served(app: Path) -> None:
    s = statics(app)
    assert get(s, b"/public/a%20b.txt").body == b"spaced"
    for path in (b"/public/./style.css", b"/public/sub/../style.css", b"//public//style.css"):
        assert get(s, path).body == CSS, path
    assert get(s, b"/p%75blic/style.css").body == CSS


# --- what goes to the app -------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        b"/public",
        b"/public/",  # no index document at the root, as the platform does
        b"/public/sub/",  # nor in a subfolder
        b"/public/sub",  # a directory: no listing
        b"/public/missing.css",
        b"/publicity/style.css",  # prefixes match whole segments
        b"/style.css",
        b"/",
        b"*",
    ],
)
def test_not_a_static_file_goes_to_the_app(app: Path, path: bytes) -> None:
    assert get(statics(app), path) is None


def test_only_get_and_head_are_served(app: Path) -> None:
    s = statics(app)
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        assert get(s, b"/public/style.css", method=method) is None


def test_a_fifo_is_not_opened(app: Path) -> None:
    os.mkfifo(app / "public" / "pipe")
    assert get(statics(app), b"/public/pipe") is None  # and does not block


# --- traversal ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        # dot segments are removed before matching: these are the paths /secret.txt & co,
        # which are not static paths; they go to the app as they would without statics
        (b"/public/../secret.txt", None),
        (b"/public/%2e%2e/secret.txt", None),
        (b"/public/%2E%2E/%2e%2e/secret.txt", None),
        (b"/public/.%2e/.%2E/secret.txt", None),
        (b"/public/../../../../../etc/passwd", None),
        (b"/../public/../secret.txt", None),
        # decoded once only: "%2e%2e" is a literal (existing!) directory name here
        (b"/public/%252e%252e/secret.txt", None),
        (b"/public/%252e%252e/%252e%252e/secret.txt", None),
        # an encoded slash, a backslash or NUL in a name is a bad request
        (b"/public/..%2fsecret.txt", 400),
        (b"/public/%2e%2e%2f%2e%2e%2fsecret.txt", 400),
        (b"/public/sub%2f..%2f..%2fsecret.txt", 400),
        (b"/public/..\\secret.txt", 400),
        (b"/public/%5c..%5csecret.txt", 400),
        (b"/public/secret.txt%00.css", 400),
        (b"/public/style.css%00", 400),
        # symlinks are never followed, wherever they point
        (b"/public/out.txt", None),
        (b"/public/outdir/secret.txt", None),
        (b"/public/outdir/app/secret.txt", None),
    ],
)
def test_no_path_escapes_guest_path(app: Path, path: bytes, status: int | None) -> None:
    r = get(statics(app), path)
    if status is None:
        assert r is None
    else:
        assert r is not None and r.status == status and SECRET not in body(r)
        assert header(r, b"content-length") == str(len(r.body)).encode()


def test_symlinks_pointing_inside_are_not_followed_either(app: Path) -> None:
    notes: list[str] = []
    s = statics(app, log=notes.append)
    assert get(s, b"/public/in.css") is None
    assert get(s, b"/public/indir/page.html") is None
    assert get(s, b"/public/in.css") is None
    assert len(notes) == 2 and all("symlink" in n for n in notes)


def test_a_symlinked_guest_path_is_not_served_and_says_so(app: Path) -> None:
    (app / "assets").symlink_to(app / "public")
    notes: list[str] = []
    s = statics(app, StaticSpec(guest_path="/app/assets", url_prefix="/assets"), log=notes.append)
    assert any("symlink" in d and "real path" in d for d in s.diagnostics)
    assert notes[: len(s.diagnostics)] == s.diagnostics
    assert get(s, b"/assets/style.css") is None


# --- conditional requests -------------------------------------------------------------


def test_if_none_match_gives_304(app: Path) -> None:
    s = statics(app)
    etag = header(get(s, b"/public/style.css"), b"etag")
    for value in (etag, b"W/" + etag, b'"other", ' + etag, b"*"):
        r = get(s, b"/public/style.css", (b"If-None-Match", value))
        assert r is not None and r.status == 304 and r.body == b"", value
        assert header(r, b"etag") == etag and header(r, b"content-length") is None
    assert get(s, b"/public/style.css", (b"if-none-match", b'"other"')).status == 200


def test_a_rewritten_file_gets_a_new_etag(app: Path) -> None:
    s = statics(app)
    etag = header(get(s, b"/public/style.css"), b"etag")
    target = app / "public" / "style.css"
    target.write_bytes(CSS + b"p {}\n")
    r = get(s, b"/public/style.css", (b"If-None-Match", etag))
    assert r.status == 200 and header(r, b"etag") != etag


def test_if_modified_since_gives_304(app: Path) -> None:
    s = statics(app)
    target = app / "public" / "style.css"
    os.utime(target, (1_700_000_000, 1_700_000_000))
    last_modified = header(get(s, b"/public/style.css"), b"last-modified")
    assert get(s, b"/public/style.css", (b"If-Modified-Since", last_modified)).status == 304
    later = formatdate(1_700_000_100, usegmt=True).encode()
    assert get(s, b"/public/style.css", (b"If-Modified-Since", later)).status == 304
    earlier = formatdate(1_699_999_999, usegmt=True).encode()
    assert get(s, b"/public/style.css", (b"If-Modified-Since", earlier)).status == 200
    assert get(s, b"/public/style.css", (b"If-Modified-Since", b"yesterday")).status == 200
    # If-None-Match wins over If-Modified-Since
    r = get(
        s, b"/public/style.css", (b"If-None-Match", b'"x"'), (b"If-Modified-Since", last_modified)
    )
    assert r.status == 200


# --- ranges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        (b"bytes=0-4", 0, 4),
        (b"bytes=5-", 5, len(CSS) - 1),
        (b"bytes=-3", len(CSS) - 3, len(CSS) - 1),
        (b"bytes=-1000", 0, len(CSS) - 1),
        (b"bytes=3-1000", 3, len(CSS) - 1),
        (b"Bytes = 2-2", 2, 2),
    ],
)
def test_a_single_range_gives_206(app: Path, spec: bytes, first: int, last: int) -> None:
    r = get(statics(app), b"/public/style.css", (b"Range", spec))
    assert r is not None and r.status == 206
    assert r.body == CSS[first : last + 1]
    assert header(r, b"content-range") == b"bytes %d-%d/%d" % (first, last, len(CSS))
    assert header(r, b"content-length") == str(last - first + 1).encode()


def test_a_range_of_a_large_file_is_streamed(app: Path) -> None:
    r = get(statics(app), b"/public/big.bin", (b"Range", b"bytes=100-"))
    assert r.status == 206 and isinstance(r.body, FileBody)
    assert body(r) == BIG[100:]
    r = get(statics(app), b"/public/big.bin", (b"Range", b"bytes=70000-70009"))
    assert r.body == BIG[70000:70010]


@pytest.mark.parametrize(
    "spec", [b"bytes=0-1,4-5", b"bytes=a-b", b"bytes=5-2", b"items=0-1", b"bytes=-", b"bytes"]
)
def test_other_ranges_give_the_whole_file(app: Path, spec: bytes) -> None:
    r = get(statics(app), b"/public/style.css", (b"Range", spec))
    assert r.status == 200 and r.body == CSS and header(r, b"content-range") is None


@pytest.mark.parametrize("spec", [b"bytes=1000-", b"bytes=20-30", b"bytes=-0"])
def test_an_unsatisfiable_range_gives_416(app: Path, spec: bytes) -> None:
    r = get(statics(app), b"/public/style.css", (b"Range", spec))
    assert r is not None and r.status == 416
    assert header(r, b"content-range") == b"bytes */%d" % len(CSS)
    assert header(r, b"content-length") == str(len(r.body)).encode()


def test_ranges_and_empty_files_and_head(app: Path) -> None:
    s = statics(app)
    r = get(s, b"/public/empty.txt", (b"Range", b"bytes=0-"))
    assert r.status == 200 and r.body == b"" and header(r, b"content-length") == b"0"
    r = get(s, b"/public/style.css", (b"Range", b"bytes=0-1"), method="HEAD")
    assert r.status == 200 and r.body == b""  # Range is defined for GET only


def test_if_range(app: Path) -> None:
    s = statics(app)
    full = get(s, b"/public/style.css")
    etag, last_modified = header(full, b"etag"), header(full, b"last-modified")
    for validator, status in (
        (etag, 206),
        (last_modified, 206),
        (b'"old"', 200),
        (b"W/" + etag, 200),
    ):
        r = get(s, b"/public/style.css", (b"Range", b"bytes=0-1"), (b"If-Range", validator))
        assert r.status == status, validator


# --- mappings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("guest", "workdir", "base", "root"),
    [
        ("/app/public", None, "APP", "APP/public"),
        ("/app", None, "APP", "APP"),
        ("/app/", None, "APP", "APP"),
        ("/srv/www/dist", "/srv/www", "APP", "APP/dist"),
        ("dist", "/srv/www", "APP", "APP/dist"),
        ("/srv/www/../www/dist", "/srv/www", "APP", "APP/dist"),
        ("/application/public", None, "/application", "/application/public"),
        ("/var/www/html", "/srv", "/var/www", "/var/www/html"),
        ("/var/www/html", None, "/var/www", "/var/www/html"),
    ],
)
def test_guest_paths_under_workdir_map_to_the_app_folder(
    tmp_path: Path, guest: str, workdir: str | None, base: str, root: str
) -> None:
    def real(p: str) -> Path:
        return Path(p.replace("APP", str(tmp_path)))

    assert host_path(guest, app_dir=tmp_path, workdir=workdir) == (real(base), real(root))


@pytest.mark.parametrize("guest", ["/etc", "/", "/app/..", "..", "HOST"])
def test_host_paths_outside_the_app_folder_are_never_served(tmp_path: Path, guest: str) -> None:
    """/etc/shadow, or any host folder: the mapping is refused with one sentence, and its
    requests go to the app."""
    www = tmp_path / "host" / "www"
    www.mkdir(parents=True)
    (www / "x.txt").write_text("host file")
    guest = str(www) if guest == "HOST" else guest
    notes: list[str] = []
    s = Statics(
        [StaticSpec(guest_path=guest, url_prefix="/x")],
        app_dir=tmp_path / "app",
        workdir=None,
        log=notes.append,
    )
    assert len(s.diagnostics) == 1 and notes == s.diagnostics
    assert "is not served" in notes[0] and "outside the app's folder" in notes[0]
    for path in (b"/x/x.txt", b"/x/shadow", b"/x/etc/shadow"):
        assert get(s, path) is None


@pytest.mark.parametrize("guest", ["/app", "/app/.", "/app/public/.."])
@pytest.mark.parametrize(
    "path",
    [
        b"/x/.taxiway/certs/ca.key",
        b"/x/.taxiway/taxiway.db",
        b"/x/.taxiway/daemon.log",
        b"/x/%2etaxiway/daemon.log",
        b"/x/.TAXIWAY/daemon.log",
        b"/x/public/../.taxiway/daemon.log",
        b"/x/.git/config",
        b"/x/.env",
    ],
)
def test_the_state_folder_and_hidden_names_are_never_served(
    tmp_path: Path, guest: str, path: bytes
) -> None:
    app = tmp_path / "app"
    for name in (
        ".taxiway/certs/ca.key",
        ".taxiway/taxiway.db",
        ".taxiway/daemon.log",
        ".TAXIWAY/daemon.log",
        ".git/config",
        ".env",
        "public/ok.txt",
    ):
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text("secret" if "ok" not in name else "ok")
    (app / "public" / "state").symlink_to(app / ".taxiway")
    s = statics(app, StaticSpec(guest_path=guest, url_prefix="/x"))
    assert s.diagnostics == []
    assert get(s, path) is None
    assert get(s, b"/x/public/state/daemon.log") is None  # nor through a symlink
    assert get(s, b"/x/public/ok.txt").body == b"ok"  # the folder itself is served


def test_a_guest_path_in_a_hidden_folder_is_refused(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / ".taxiway" / "certs").mkdir(parents=True)
    (app / ".taxiway" / "certs" / "ca.key").write_text("secret")
    s = statics(app, StaticSpec(guest_path="/app/.taxiway", url_prefix="/x"))
    assert "hidden folder .taxiway" in s.diagnostics[0]
    assert get(s, b"/x/certs/ca.key") is None


def test_well_known_is_served(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "public" / ".well-known").mkdir(parents=True)
    (app / "public" / ".well-known" / "security.txt").write_text("Contact: x")
    s = statics(app, StaticSpec(guest_path="/app/public", url_prefix="/"))
    assert get(s, b"/.well-known/security.txt").body == b"Contact: x"


def test_the_dockerfile_workdir_decides(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM node\nWORKDIR /srv\nWORKDIR site\n")
    (tmp_path / "fly.toml").write_text(
        'app = "a"\n[[statics]]\nguest_path = "/srv/site/dist"\nurl_prefix = "/assets/"\n'
    )
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "app.css").write_bytes(CSS)
    loaded = load_config(tmp_path / "fly.toml")
    spec = plan_machines(loaded.config, base_dir=tmp_path)["app"]
    s = Statics(spec.statics, app_dir=tmp_path, workdir=spec.runs.workdir)
    assert get(s, b"/assets/app.css").body == CSS


def test_a_missing_guest_path_is_reported_and_served_once_it_exists(app: Path) -> None:
    s = statics(app, StaticSpec(guest_path="/app/dist", url_prefix="/dist"))
    assert len(s.diagnostics) == 1 and "not a directory" in s.diagnostics[0]
    assert get(s, b"/dist/app.css") is None
    (app / "dist").mkdir()
    (app / "dist" / "app.css").write_bytes(CSS)
    assert get(s, b"/dist/app.css").body == CSS


def test_the_longest_prefix_is_tried_first_then_shorter_ones(app: Path) -> None:
    images = app / "images"
    images.mkdir()
    (images / "style.css").write_bytes(b"from images")
    s = statics(
        app,
        StaticSpec(guest_path="/app/public", url_prefix="/public"),
        StaticSpec(guest_path="/app/images", url_prefix="/public/sub/"),
    )
    assert get(s, b"/public/sub/style.css").body == b"from images"
    assert get(s, b"/public/sub/page.html").body == b"<h1>page</h1>"  # falls back to /public
    assert get(s, b"/public/style.css").body == CSS


def test_a_duplicate_prefix_is_served_once(app: Path) -> None:
    s = statics(
        app,
        StaticSpec(guest_path="/app/public", url_prefix="/public"),
        StaticSpec(guest_path="/app", url_prefix="/public/"),
    )
    assert any("only the first" in d for d in s.diagnostics)
    assert get(s, b"/public/secret.txt") is None


def test_a_root_prefix_serves_existing_files_and_lets_the_rest_through(app: Path) -> None:
    s = statics(app, StaticSpec(guest_path="/app/public", url_prefix="/"))
    assert get(s, b"/style.css").body == CSS
    assert get(s, b"/api/users") is None
    assert get(s, b"/") is None


def test_index_document_is_for_tigris_statics_only(app: Path) -> None:
    plain = statics(
        app, StaticSpec(guest_path="/app/public", url_prefix="/public", index_document="index.html")
    )
    assert any("index_document" in d for d in plain.diagnostics)
    assert get(plain, b"/public/") is None

    tigris = statics(
        app,
        StaticSpec(
            guest_path="/app/public",
            url_prefix="/public",
            tigris_bucket="bucket",
            index_document="index.html",
        ),
    )
    assert any("Tigris bucket bucket" in d for d in tigris.diagnostics)
    assert get(tigris, b"/public/").body == b"<h1>index</h1>"
    r = get(tigris, b"/public/sub/")
    assert r.body == b"<h1>sub</h1>" and header(r, b"content-type").startswith(b"text/html")
    assert get(tigris, b"/public/sub") is None  # only paths ending in /
    assert get(tigris, b"/public/indir/") is None  # still no symlinks


def test_no_statics_means_nothing_matches(app: Path) -> None:
    assert Statics([], app_dir=app, workdir=None).match("GET", b"/public/style.css", []) is None


PIECES = [
    "..",
    ".",
    "",
    "%2e%2e",
    "%2E.",
    ".%2e",
    "%252e%252e",
    "%2f",
    "%5c",
    "\\",
    "%00",
    "%",
    "secret.txt",
    "app",
    "public",
    "sub",
    "style.css",
    "out.txt",
    "outdir",
    "in.css",
    "indir",
    "%2e%2e%2fsecret.txt",
    "p%75blic",
    "%252f",
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_app(tmp_path_factory.mktemp("tree"))


@given(st.lists(st.sampled_from(PIECES), max_size=8), st.sampled_from(["GET", "HEAD"]))
@settings(max_examples=300, deadline=None)
def test_whatever_the_path_only_files_inside_guest_path_are_served(
    tree: Path, pieces: list[str], method: str
) -> None:
    s = statics(tree)
    path = ("/public/" + "/".join(pieces)).encode()
    r = s.match(method, path, [])
    if r is None or r.status != 200:
        assert r is None or r.status == 400
        return
    served = {
        p.read_bytes() for p in (tree / "public").rglob("*") if p.is_file() and not p.is_symlink()
    }
    assert body(r) in served or method == "HEAD"
    assert SECRET not in body(r)
