"""`[[statics]]`: files under ``url_prefix`` answered by the edge from ``guest_path``.

On the platform a static file server next to the machine answers a request whose path
starts with ``url_prefix`` **if the file exists** under ``guest_path``; anything else
goes to the app (https://fly.io/docs/reference/configuration/#the-statics-sections).
Here the edge does the same: `Statics.match` returns a `StaticResponse`, or None to say
"proxy this to the app".

The rules, and where taxiway had to decide:

- ``guest_path`` is a path inside the machine. Under the Dockerfile's ``WORKDIR`` (``/app``
  without one) it maps to the app folder, as the process and namespace drivers run the
  app from there. Any other path would be this host's own, so it is not served (requests
  go to the app, and the mapping's diagnostic says why); nor is anything under a hidden
  name — the state folder ``.taxiway``, ``.git``, ``.env`` — whatever guest_path says
  (`taxiway.config.static_paths`). A relative ``guest_path`` is relative to the
  ``WORKDIR``.
- With a ``rootfs`` (the docker driver: the image's files copied out to a folder on this
  host) every ``guest_path`` is the image's own and maps to ``<rootfs>/<guest_path>``,
  ``/etc`` included; the rootfs is then the trusted base below which no symlink is
  followed. ``/`` itself stays refused (the whole image, source and baked-in secrets
  with it), and so do hidden names.
- Prefixes match whole path segments (``/public`` matches ``/public`` and ``/public/x``,
  not ``/publicity``), a trailing slash in ``url_prefix`` doesn't matter, the longest
  prefix is tried first, and a miss there tries the shorter ones before the app.
- Percent-escapes are decoded once; dot segments are then removed as RFC 3986 says, so
  ``/public/%2e%2e/secret`` *is* the path ``/secret`` (not a static path; the app gets
  it like any other). No path can climb out of a prefix, so none climbs out of
  ``guest_path``. A file name with NUL, a backslash or an encoded ``/`` is a 400.
- The platform doesn't honour symlinks: a symlink anywhere between the app folder (or
  the rootfs) and the file is a miss, even one that points
  back inside. That also makes escaping through a symlink impossible.
- Only GET and HEAD are served; other methods go to the app (a POST under
  ``/public`` may well be the app's).
- No directory listings and no index document, as for the platform's container statics.
  ``index_document`` applies to Tigris statics only, for paths ending in ``/``; taxiway
  has no bucket, so it serves a Tigris mapping from its local folder and says so.
- The ETag is strong, ``"<mtime_ns hex>-<size hex>"`` (nginx's shape): it changes
  whenever the file is rewritten, and a strong one lets ``If-Range`` work. The
  platform's own headers are unconfirmed.
- One byte range is honoured (206); several, or a range on an empty file, get the whole
  file (200); a range starting past the end is a 416.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from io import FileIO
from pathlib import Path
from urllib.parse import unquote_to_bytes

from taxiway.config.static_paths import DEFAULT_WORKDIR, guest_root, is_hidden, refusal
from taxiway.plan.machine import StaticSpec

__all__ = ["DEFAULT_WORKDIR", "Statics", "host_path"]
#: Files up to this size are read into the response; larger ones are streamed from disk.
SMALL_FILE = 64 * 1024

_METHODS = frozenset({"GET", "HEAD"})
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class FileBody:
    """``length`` bytes of the file at ``path`` from ``offset``, for sendfile or streaming.

    ``device``/``inode`` are the file `Statics.match` checked; `open` refuses anything else
    (the path replaced by another file or a symlink meanwhile).
    """

    path: bytes
    offset: int
    length: int
    device: int
    inode: int

    def open(self) -> FileIO:
        """The file, positioned at ``offset``; FileNotFoundError if it is no longer the same.

        The file may still shrink before it is sent: the caller stops at end of file and
        closes the connection if fewer than ``length`` bytes came.
        """
        fd = os.open(self.path, _OPEN_FLAGS)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (self.device, self.inode) or not stat.S_ISREG(st.st_mode):
                raise FileNotFoundError(os.fsdecode(self.path))
            os.set_blocking(fd, True)
            f = FileIO(fd, "rb", closefd=True)
        except BaseException:
            os.close(fd)
            raise
        f.seek(self.offset)
        return f


@dataclass(slots=True)
class StaticResponse:
    """What the edge writes back: status line, these headers as given, then the body.

    ``headers`` always carry the right Content-Length (for HEAD, the length a GET would
    get), so the edge must not derive it from ``body``.
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes | FileBody = b""

    @property
    def reason(self) -> bytes:
        return HTTPStatus(self.status).phrase.encode()


@dataclass(frozen=True, slots=True)
class _Mapping:
    """One `StaticSpec`, ready for lookups."""

    prefix: tuple[bytes, ...]
    #: A host directory trusted as is; the walk to a file starts here.
    base: bytes
    #: Components from ``base`` to the guest root; none may be a symlink.
    parts: tuple[bytes, ...]
    index_document: bytes | None


def host_path(
    guest_path: str, *, app_dir: Path, workdir: str | None, rootfs: Path | None = None
) -> tuple[Path, Path]:
    """Where ``guest_path`` lives on this host, as (trusted base, guest root).

    With a ``rootfs`` (the image's files copied out) every path is in it, and the base is
    the rootfs. Without, paths under ``workdir`` (``/app`` when None) are in the app
    folder, and the base is the app folder: the part below it is "the image", where
    symlinks are not followed. Other paths would be host paths (their base the parent of
    ``guest_path``), which `Statics` refuses to serve.
    """
    guest, rel = guest_root(guest_path, workdir)
    if rootfs is not None:
        inside = guest.lstrip("/")
        return rootfs, rootfs / inside if inside else rootfs
    if rel is not None:
        return app_dir, app_dir if rel == "." else app_dir / rel
    root = Path(guest)
    return root.parent, root


class Statics:
    """The app's `[[statics]]` mappings; `match` answers one request."""

    def __init__(
        self,
        specs: list[StaticSpec],
        *,
        app_dir: Path,
        workdir: str | None,
        rootfs: Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """``rootfs``: where the image's files are on this host (copied out of the image);
        None when the app's folder is the image (process and namespace drivers)."""
        self._log = log or (lambda _message: None)
        self._rootfs = rootfs
        #: One sentence per problem found with the mappings, for `up` and `status` to show.
        self.diagnostics: list[str] = []
        self._warned: set[bytes] = set()
        mappings: list[_Mapping] = []
        seen: dict[tuple[bytes, ...], int] = {}
        for i, spec in enumerate(specs):
            mapping = self._mapping(i, spec, app_dir, workdir)
            if mapping is None:
                continue
            if mapping.prefix in seen:
                self._note(
                    f'statics[{i}] uses the url_prefix "{spec.url_prefix}" of '
                    f"statics[{seen[mapping.prefix]}]; only the first is served"
                )
                continue
            seen[mapping.prefix] = i
            mappings.append(mapping)
        # Longest prefix first; equal lengths keep the file's order.
        self._mappings = sorted(mappings, key=lambda m: -len(m.prefix))
        #: First segments of the prefixes, to let most app paths through at once; None
        #: when a mapping is at "/".
        self._heads: frozenset[bytes] | None = (
            None
            if any(not m.prefix for m in mappings)
            else frozenset(m.prefix[0] for m in mappings)
        )

    def _note(self, message: str) -> None:
        self.diagnostics.append(message)
        self._log(message)

    def _mapping(
        self, i: int, spec: StaticSpec, app_dir: Path, workdir: str | None
    ) -> _Mapping | None:
        if not spec.guest_path or not spec.url_prefix:
            self._note(f"statics[{i}] needs a guest_path and a url_prefix; it is not served")
            return None
        where = f"statics[{i}] ({spec.url_prefix} → {spec.guest_path})"
        rootfs = self._rootfs
        refused = refusal(spec.guest_path, workdir, in_image=rootfs is not None)
        if refused is not None:
            self._note(f"{where} is not served: {refused}; requests go to the app")
            return None
        base, root = host_path(spec.guest_path, app_dir=app_dir, workdir=workdir, rootfs=rootfs)
        if spec.tigris_bucket:
            self._note(
                f"{where} is served from the Tigris bucket {spec.tigris_bucket} on the "
                f"platform; taxiway serves it from {root}"
            )
        elif spec.index_document:
            self._note(
                f"{where}: index_document only works for statics served from a "
                "tigris_bucket; it is ignored"
            )
        if root.is_symlink():
            self._note(
                f"{where}: {root} is a symlink, and statics don't follow symlinks; "
                "use the real path"
            )
        elif not root.is_dir():
            self._note(f"{where}: {root} is not a directory; requests go to the app until it is")
        prefix, _ = _segments(("/" + spec.url_prefix.lstrip("/")).encode())
        if prefix is None:
            self._note(f"{where}: the url_prefix climbs above /; it is not served")
            return None
        parts = root.relative_to(base).parts if root != base else ()
        return _Mapping(
            prefix=tuple(prefix),
            base=os.fsencode(base),
            parts=tuple(os.fsencode(p) for p in parts),
            index_document=(
                spec.index_document.encode() if spec.tigris_bucket and spec.index_document else None
            ),
        )

    def match(
        self, method: str, raw_path: bytes, headers: list[tuple[bytes, bytes]]
    ) -> StaticResponse | None:
        """The response for a static file, or None when the app should answer."""
        if not self._mappings or method not in _METHODS or not raw_path.startswith(b"/"):
            return None
        path = raw_path.partition(b"?")[0]
        if b"#" in path:
            path = path.partition(b"#")[0]
        heads = self._heads
        if (
            heads is not None
            and not (b"%" in path or b"/." in path or b"//" in path)
            and path[1:].partition(b"/")[0] not in heads
        ):
            return None  # the fast way out for the app's own paths
        segments, trailing = _segments(path)
        if segments is None:
            return None
        for mapping in self._mappings:
            n = len(mapping.prefix)
            if tuple(segments[:n]) != mapping.prefix:
                continue
            rest = segments[n:]
            if any(b"/" in s or b"\\" in s or b"\x00" in s for s in rest):
                return _error(HTTPStatus.BAD_REQUEST, method)
            if any(is_hidden(s) for s in rest):
                return None  # .taxiway, .git, .env: never a static file (the app decides)
            found = self._lookup(mapping, rest, trailing)
            if found is not None:
                return _respond(method, *found, headers)
        return None

    def _lookup(
        self, mapping: _Mapping, rest: list[bytes], trailing: bool
    ) -> tuple[bytes, bytes, int, os.stat_result] | None:
        """(path, name, fd, stat) of the regular file a request names, or None for a miss."""
        parts = (*mapping.parts, *rest)
        path = mapping.base
        for part in parts[:-1] if rest else parts:
            path = path + b"/" + part
            if not self._is_dir(path):
                return None
        if not rest:  # the prefix itself
            if not (mapping.index_document and trailing):
                return None
            return self._open_file(path + b"/" + mapping.index_document)
        found = self._open_file(path + b"/" + rest[-1], directory_ok=True)
        if found is None or not stat.S_ISDIR(found[3].st_mode):
            return found
        os.close(found[2])
        if not (mapping.index_document and trailing):
            return None  # no listings, no index document (container statics)
        return self._open_file(found[0] + b"/" + mapping.index_document)

    def _is_dir(self, path: bytes) -> bool:
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if stat.S_ISLNK(st.st_mode):
            self._symlink(path)
        return stat.S_ISDIR(st.st_mode)

    def _open_file(
        self, path: bytes, *, directory_ok: bool = False
    ) -> tuple[bytes, bytes, int, os.stat_result] | None:
        """Open a regular file (or directory); never a symlink, fifo or device."""
        try:
            seen = os.lstat(path)
        except OSError:
            return None
        if stat.S_ISLNK(seen.st_mode):
            self._symlink(path)
            return None
        if not (stat.S_ISREG(seen.st_mode) or (directory_ok and stat.S_ISDIR(seen.st_mode))):
            return None
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            return None  # gone, unreadable, or replaced by a symlink (ELOOP) meanwhile
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (seen.st_dev, seen.st_ino):
            return path, path.rsplit(b"/", 1)[-1], fd, st
        os.close(fd)
        return None

    def _symlink(self, path: bytes) -> None:
        if path not in self._warned and len(self._warned) < 1000:
            self._warned.add(path)
            self._log(
                f"statics: {os.fsdecode(path)} is a symlink; statics don't follow symlinks "
                "(as on the platform), so the request goes to the app"
            )


def _segments(path: bytes) -> tuple[list[bytes] | None, bool]:
    """Decoded path segments with dot segments removed (RFC 3986 §5.2.4), and whether the
    path names a directory (ends in ``/``, ``/.`` or ``/..``); None for a path that climbs
    above the root."""
    out: list[bytes] = []
    segment = b""
    for piece in path.split(b"/")[1:]:
        segment = unquote_to_bytes(piece) if b"%" in piece else piece
        if segment in (b"", b"."):
            continue
        if segment == b"..":
            if not out:
                return None, True
            out.pop()
            continue
        out.append(segment)
    return out, segment in (b"", b".", b"..")


def _header_map(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    wanted = (b"if-none-match", b"if-modified-since", b"range", b"if-range")
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        key = name.lower()
        if key in wanted:
            found[key] = found[key] + b", " + value if key in found else value
    return found


def _respond(
    method: str,
    path: bytes,
    name: bytes,
    fd: int,
    st: os.stat_result,
    headers: list[tuple[bytes, bytes]],
) -> StaticResponse:
    try:
        return _build(method, path, name, fd, st, _header_map(headers))
    finally:
        os.close(fd)


def _build(
    method: str, path: bytes, name: bytes, fd: int, st: os.stat_result, req: dict[bytes, bytes]
) -> StaticResponse:
    size = st.st_size
    etag = b'"%x-%x"' % (st.st_mtime_ns, size)
    mtime = int(st.st_mtime)
    last_modified = formatdate(mtime, usegmt=True).encode()
    validators = [(b"ETag", etag), (b"Last-Modified", last_modified)]

    if _not_modified(req, etag, mtime):
        return StaticResponse(304, validators)

    content = [(b"Content-Type", content_type(name)), *validators, (b"Accept-Ranges", b"bytes")]
    offset, length, status = 0, size, 200
    if method == "GET" and b"range" in req and size and _if_range(req, etag, last_modified):
        span = _range(req[b"range"], size)
        if span == "unsatisfiable":
            return _error(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                method,
                [(b"Content-Range", b"bytes */%d" % size)],
            )
        if span is not None:
            offset, end = span
            length, status = end - offset + 1, 206
            content.append((b"Content-Range", b"bytes %d-%d/%d" % (offset, end, size)))
    content.append((b"Content-Length", str(length).encode()))
    if method == "HEAD":
        return StaticResponse(status, content)
    if length <= SMALL_FILE:
        return StaticResponse(status, content, os.pread(fd, length, offset))
    return StaticResponse(status, content, FileBody(path, offset, length, st.st_dev, st.st_ino))


def _not_modified(req: dict[bytes, bytes], etag: bytes, mtime: int) -> bool:
    """If-None-Match (weak comparison) wins over If-Modified-Since (RFC 9110 §13.2.2)."""
    inm = req.get(b"if-none-match")
    if inm is not None:
        tags = [t.strip() for t in inm.split(b",")]
        return any(t == b"*" or t.removeprefix(b"W/") == etag for t in tags)
    ims = req.get(b"if-modified-since")
    if ims is None:
        return False
    try:
        since = parsedate_to_datetime(ims.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return mtime <= since


def _if_range(req: dict[bytes, bytes], etag: bytes, last_modified: bytes) -> bool:
    """Whether the Range applies: no If-Range, or one that matches exactly (strongly)."""
    validator = req.get(b"if-range")
    if validator is None:
        return True
    validator = validator.strip()
    if validator.startswith((b'"', b"W/")):
        return validator == etag
    return validator == last_modified


def _range(value: bytes, size: int) -> tuple[int, int] | str | None:
    """(first, last) byte of a single range, "unsatisfiable", or None to send everything."""
    unit, _, spec = value.partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first, dash, last = spec.strip().partition(b"-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not (first.isdigit() or first == b"") or not (last.isdigit() or last == b""):
        return None
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last), size - 1) if last else size - 1


# --- content types ---------------------------------------------------------------------

# Python's built-in table only (not the host's /etc/mime.types), so every host answers the
# same, with what browsers expect for the web's newer types.
_TYPES = mimetypes.MimeTypes()
for _type, _ext in (
    ("text/javascript", ".js"),
    ("text/javascript", ".mjs"),
    ("application/json", ".map"),
    ("text/markdown", ".md"),
    ("font/woff", ".woff"),
    ("font/woff2", ".woff2"),
    ("font/ttf", ".ttf"),
    ("font/otf", ".otf"),
    ("image/x-icon", ".ico"),
    ("text/plain", ".log"),
):
    _TYPES.add_type(_type, _ext)

_ENCODED = {"gzip": "application/gzip", "br": "application/x-brotli", "zstd": "application/zstd"}
_CHARSET = frozenset({"text/javascript", "application/json", "image/svg+xml"})


def content_type(name: bytes) -> bytes:
    """The Content-Type for a file name; a compressed file is sent as what it is."""
    mime, encoding = _TYPES.guess_type(os.fsdecode(name), strict=False)
    if encoding:
        mime = _ENCODED.get(encoding, "application/octet-stream")
    if mime is None:
        return b"application/octet-stream"
    if mime.startswith("text/") or mime in _CHARSET:
        return f"{mime}; charset=utf-8".encode()
    return mime.encode()


def _error(
    status: HTTPStatus, method: str, extra: list[tuple[bytes, bytes]] | None = None
) -> StaticResponse:
    body = f"{status.phrase.lower()}\n".encode()
    return StaticResponse(
        status.value,
        [
            *(extra or ()),
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Content-Length", b"%d" % len(body)),
        ],
        b"" if method == "HEAD" else body,
    )
