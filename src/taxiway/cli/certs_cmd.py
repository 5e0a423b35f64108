"""`taxiway certs`: the app's local CA, where it is and how to trust it.

The edge terminates TLS (the ``tls`` handler) with certificates from a CA of its own in
``.taxiway/certs``; trusting that CA once makes ``https://localhost`` and
``https://<app>.localhost`` valid. Works without a daemon: the CA is created on first
use, here or in the daemon, and shared by both. ``--add`` remembers more hostnames; a
running edge picks them up at the next handshake.
"""

from __future__ import annotations

import argparse
import json
import sys

from taxiway.api.paths import AppPaths
from taxiway.config.loader import LoadedConfig, load_config
from taxiway.config.names import app_name_for


def certs(args: argparse.Namespace) -> int:
    from taxiway.edge.certs import local_ca

    loaded = load_config(args.config)
    app = app_name_for(loaded.source.path, loaded.config.app)
    paths = AppPaths.for_config(loaded.source.path)
    paths.ensure()
    ca = local_ca(paths.certs, log=lambda message: print(message, file=sys.stderr))
    added = ca.add_hostnames(args.add) if args.add else ca.added_hostnames()
    hostnames = list(dict.fromkeys(["localhost", f"{app}.localhost", *added]))
    ca_cert = str(ca.ca_cert_path)
    if args.json:
        json.dump({"ca_cert": ca_cert, "hostnames": hostnames}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.add:
        print(f"remembered: {', '.join(args.add)}")
    print(f"CA certificate: {ca_cert}")
    print(f"certificates for: {', '.join(hostnames)}")
    print()
    print("To trust it:")
    print(
        f"  Debian/Ubuntu: sudo cp {ca_cert} /usr/local/share/ca-certificates/taxiway-{app}.crt"
        " && sudo update-ca-certificates"
    )
    print(
        "  macOS:         sudo security add-trusted-cert -d -r trustRoot "
        f"-k /Library/Keychains/System.keychain {ca_cert}"
    )
    print(f"  one command:   {_curl_line(loaded, paths, app, ca_cert)}")
    print("Firefox keeps its own list: import the file under Settings > Certificates.")
    return 0


_NO_HTTPS = "(the app has no port with the tls and http handlers: its edge serves no https)"


def _curl_line(loaded: LoadedConfig, paths: AppPaths, app: str, ca_cert: str) -> str:
    """A curl to the edge's https listener: its real port when a daemon runs the app (the
    edge maps a port it can't bind), else the port fly.toml gives it."""
    from taxiway.api.client import Client, DaemonNotRunning

    try:
        status = Client(paths.socket, timeout=5).request("GET", f"/v1/apps/{app}/status")
    except DaemonNotRunning:
        status = None
    if status is not None:
        for binding in status.get("edge") or []:
            if {"tls", "http"} <= set(binding["handlers"]):
                port = str(binding["address"]).rsplit(":", 1)[1]
                return f"curl --cacert {ca_cert} https://localhost:{port}/"
        return _NO_HTTPS
    from taxiway.plan.machine import plan_machines

    ports = sorted(
        {
            p.port
            for spec in plan_machines(loaded.config, base_dir=loaded.base_dir).values()
            for service in spec.services
            for p in service.ports
            if p.port is not None and {"tls", "http"} <= set(p.handlers)
        }
    )
    if not ports:
        return _NO_HTTPS
    return (
        f"curl --cacert {ca_cert} https://localhost:{ports[0]}/  (fly.toml's port; if the "
        "edge can't bind it, `taxiway status` shows the one it took)"
    )
