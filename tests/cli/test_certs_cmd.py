"""`taxiway certs`: the local CA's path, how to trust it, and names to issue for."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from cryptography import x509

from cli_runner import run_taxiway as taxiway


def make_app(folder: Path) -> Path:
    (folder / "fly.toml").write_text('app = "shop"\n[http_service]\ninternal_port = 8080\n')
    return folder


def test_certs_creates_the_ca_once_without_a_daemon(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    result = taxiway(app, "certs")
    assert result.returncode == 0, result.stderr
    ca = app / ".taxiway" / "certs" / "ca.pem"
    assert f"CA certificate: {ca}" in result.stdout
    assert "update-ca-certificates" in result.stdout
    assert "security add-trusted-cert" in result.stdout
    cert = x509.load_pem_x509_certificate(ca.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert stat.S_IMODE((ca.parent / "ca.key").stat().st_mode) == 0o600
    pem = ca.read_bytes()

    listed = json.loads(taxiway(app, "certs", "--json").stdout)
    assert listed == {"ca_cert": str(ca), "hostnames": ["localhost", "shop.localhost"]}
    assert ca.read_bytes() == pem


def test_added_hostnames_are_remembered(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    added = taxiway(other, "certs", "-c", str(app / "fly.toml"), "--add", "Shop.Test", "a.test")
    assert added.returncode == 0, added.stderr
    listed = json.loads(taxiway(app, "certs", "--json").stdout)
    assert listed["hostnames"] == ["localhost", "shop.localhost", "shop.test", "a.test"]
    assert not (other / ".taxiway").exists()


def test_a_bad_hostname_is_one_sentence(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    result = taxiway(app, "certs", "--add", "not a name")
    assert result.returncode == 1
    assert result.stderr.strip().endswith("is not a hostname a certificate can be issued for")
    assert "Traceback" not in result.stderr
    assert json.loads(taxiway(app, "certs", "--json").stdout)["hostnames"] == [
        "localhost",
        "shop.localhost",
    ]
