"""Server TLS contexts for the ``tls`` handler, with certificates from the local CA.

One context per distinct ``tls_options`` (ALPN list, TLS versions), shared by every port
with those options. The certificate is chosen by SNI, as the platform does per hostname:
``localhost``, ``<app>.localhost`` and the names added with ``taxiway certs --add`` get
their own certificate (issued on first use); any other name, or no SNI, gets the default
(``<app>.localhost`` when the client asked for it, else ``localhost``, which also covers
127.0.0.1 and ::1).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable

from taxiway.edge.certs import LocalCA, local_ca
from taxiway.errors import TaxiwayError
from taxiway.plan.machine import Port

__all__ = ["TlsContexts", "local_ca"]

DEFAULT_ALPN = ("h2", "http/1.1")
_VERSIONS = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}

#: (alpn, versions): the options a context is built from.
_Key = tuple[tuple[str, ...], tuple[str, ...]]


class TlsContexts:
    """The `TlsProvider` of the edge (edge/server.py)."""

    def __init__(self, ca: LocalCA, app: str, hostnames: Iterable[str] = ()) -> None:
        self.ca = ca
        self.app = app
        self.default_names = ("localhost", f"{app}.localhost")
        self._extra = tuple(hostnames)
        self._added: frozenset[str] = frozenset()
        self._added_mtime: int | None = -1
        #: options -> the context a listener uses (the default certificate).
        self._contexts: dict[_Key, ssl.SSLContext] = {}
        #: (options, certificate name) -> the context SNI switches to.
        self._by_name: dict[tuple[_Key, str], ssl.SSLContext] = {}

    def context_for(self, port: Port) -> ssl.SSLContext:
        key = _options(port.tls_options or {})
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._named(key, "localhost")
            ctx.sni_callback = self._sni_callback(key)
            self._named(key, f"{self.app}.localhost")  # issued now, not on the first visit
            self._contexts[key] = ctx
        return ctx

    # -- internals ---------------------------------------------------------------------------

    def _named(self, key: _Key, name: str) -> ssl.SSLContext:
        ctx = self._by_name.get((key, name))
        if ctx is None:
            ctx = _server_context(key)
            cert, private = self.ca.certificate_for(name)
            ctx.load_cert_chain(cert, private)
            self._by_name[(key, name)] = ctx
        return ctx

    def _sni_callback(
        self, key: _Key
    ) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], None]:
        def choose(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            if not server_name:
                return None
            name = self.certificate_name(server_name)
            if name is not None and name != "localhost":
                try:
                    sslobj.context = self._named(key, name)
                except Exception:  # a cert we can't issue: the default one it is
                    return None
            return None

        return choose

    def certificate_name(self, server_name: str) -> str | None:
        """The certificate to serve for an SNI name, or None for the default one."""
        name = server_name.lower().rstrip(".")
        if name in self.default_names:
            return name
        known = self._known()
        if name in known:
            return name
        _, _, parent = name.partition(".")
        if parent and f"*.{parent}" in known:
            return f"*.{parent}"
        return None

    def _known(self) -> frozenset[str]:
        """User-added names, re-read when ``taxiway certs --add`` changed the file."""
        try:
            mtime: int | None = self.ca.hostnames_path.stat().st_mtime_ns
        except OSError:
            mtime = None
        if mtime != self._added_mtime:
            self._added_mtime = mtime
            self._added = frozenset(self.ca.added_hostnames())
        if self._extra:
            return self._added | {n.lower().rstrip(".") for n in self._extra}
        return self._added


def _options(tls_options: dict) -> _Key:
    alpn = tls_options.get("alpn")
    versions = tls_options.get("versions") or ()
    for v in versions:
        if v not in _VERSIONS:
            raise TaxiwayError(
                f'tls_options.versions has {v!r}; the edge offers "TLSv1.2" and "TLSv1.3"'
            )
    return (tuple(alpn) if alpn else DEFAULT_ALPN, tuple(sorted(set(versions))))


def _server_context(key: _Key) -> ssl.SSLContext:
    alpn, versions = key
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if versions:
        chosen = [_VERSIONS[v] for v in versions]
        ctx.minimum_version = min(chosen)
        ctx.maximum_version = max(chosen)
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(list(alpn))
    return ctx
