"""Where a ``[[statics]]`` guest_path lands when taxiway serves it, and what it refuses.

On the platform ``guest_path`` is a folder of the image. taxiway's drivers (process and
namespace) run the app from its folder on this host, so a guest path under the image's
WORKDIR (``/app`` without a Dockerfile) is that folder. Any other guest path would be
this host's own file system — ``/etc`` with the host's password hashes, since the daemon
may run as root — so taxiway never serves it; the config stays valid for the platform,
`config validate` warns and the edge sends such requests to the app.

Hidden names (a path segment starting with ``.``) are never served either, whatever
guest_path says: the state folder ``.taxiway`` holds the local CA's key, every secret and
the logs; ``.git`` and ``.env`` files are as bad. ``.well-known`` (RFC 8615) is public by
design and is served.

With the docker driver the image's files are copied out to a folder on this host (its
"rootfs"), and every guest path is the image's own: ``/etc`` there is the image's, not
the host's, so it is served like any other folder. Two refusals stay: hidden names
anywhere in the path, and ``/`` itself — the whole image (its ``/etc``, ``/root``, the
app's source and whatever secrets a build baked in), which no app means to publish; the
platform would serve it, taxiway says why it doesn't.
"""

from __future__ import annotations

import posixpath

#: The WORKDIR the platform's images commonly use, and the one assumed without a Dockerfile.
DEFAULT_WORKDIR = "/app"
#: Hidden names that exist to be published.
PUBLIC_HIDDEN = frozenset({".well-known", b".well-known"})


def workdir_of(workdir: str | None) -> str:
    """The WORKDIR as an absolute, normalised path."""
    return posixpath.normpath(posixpath.join("/", workdir or DEFAULT_WORKDIR))


def guest_root(guest_path: str, workdir: str | None) -> tuple[str, str | None]:
    """(the absolute guest path, its part below the WORKDIR — ``"."`` for the WORKDIR
    itself — or None when it is outside the WORKDIR). A relative guest path is relative
    to the WORKDIR."""
    work = workdir_of(workdir)
    guest = posixpath.normpath(posixpath.join(work, guest_path))
    if guest == work or guest.startswith(work.rstrip("/") + "/"):
        return guest, posixpath.relpath(guest, work)
    return guest, None


def is_hidden(name: str | bytes) -> bool:
    """Whether a path segment is a hidden name statics never serve."""
    return name[:1] in (".", b".") and name not in PUBLIC_HIDDEN


def refusal(guest_path: str, workdir: str | None, *, in_image: bool = False) -> str | None:
    """Why taxiway won't serve ``guest_path`` (a clause naming the path), or None.

    ``in_image``: the path is read from a copy of the image's files (a rootfs), so paths
    outside the WORKDIR are the image's and allowed; else they would be this host's.
    """
    guest, below = guest_root(guest_path, workdir)
    if in_image:
        if guest == "/":
            return (
                "/ is the image's whole file system (its /etc, /root and the app's source), "
                "which taxiway doesn't publish; name the folder that holds the static files"
            )
        below = guest.lstrip("/")
    elif below is None:
        return (
            f"{guest} is outside the app's folder (the image's WORKDIR "
            f"{workdir_of(workdir)}), and taxiway never serves this host's own files"
        )
    parts = () if below == "." else below.split("/")
    hidden = next((part for part in parts if is_hidden(part)), None)
    if hidden is not None:
        return f"{guest} is in the hidden folder {hidden}, and hidden folders are never served"
    return None
