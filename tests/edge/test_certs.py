"""The local CA: created once, private, reused; broken ones moved aside; leaves on demand."""

from __future__ import annotations

import datetime as dt
import stat
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509

from taxiway.edge.certs import LEAF_VALID_DAYS, LocalCA, local_ca
from taxiway.errors import TaxiwayError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_ca_is_created_private_and_reused(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    ca = local_ca(folder)
    assert mode(folder) == 0o700
    assert mode(ca.ca_key_path) == 0o600
    pem = ca.ca_cert_path.read_bytes()
    cert = load(ca.ca_cert_path)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert LocalCA(folder).ca_cert_path.read_bytes() == pem


def test_leaves_are_issued_once_for_the_name(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    cert_path, key_path = ca.certificate_for("localhost")
    assert mode(key_path) == 0o600
    leaf = load(cert_path)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ip_address("127.0.0.1"),
        ip_address("::1"),
    }
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(days=398)
    assert LEAF_VALID_DAYS <= 398
    leaf.verify_directly_issued_by(load(ca.ca_cert_path))
    again = LocalCA(tmp_path).certificate_for("LOCALHOST")
    assert again == (cert_path, key_path)
    assert load(cert_path).serial_number == leaf.serial_number

    other, _ = ca.certificate_for("shop.localhost")
    sans = load(other).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["shop.localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == []


def test_a_corrupt_ca_is_moved_aside_and_replaced(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    leaf_path, _ = ca.certificate_for("localhost")
    old_leaf = load(leaf_path)
    ca.ca_cert_path.write_bytes(b"not a certificate")
    said: list[str] = []
    fresh = local_ca(tmp_path, log=said.append)
    assert len(said) == 1 and "replaced" in said[0]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("old-")]
    assert len(aside) == 1
    assert (aside[0] / "ca.pem").read_bytes() == b"not a certificate"
    assert (aside[0] / "ca.key").exists()
    new_ca = load(fresh.ca_cert_path)
    leaf_path, _ = fresh.certificate_for("localhost")
    new_leaf = load(leaf_path)
    assert new_leaf.serial_number != old_leaf.serial_number
    new_leaf.verify_directly_issued_by(new_ca)


def test_a_leaf_from_another_ca_is_reissued(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "a")
    other = LocalCA(tmp_path / "b")
    foreign, _ = other.certificate_for("localhost")
    mine, _ = ca.certificate_for("localhost")
    mine.write_bytes(foreign.read_bytes())
    cert_path, _ = ca.certificate_for("localhost")
    load(cert_path).verify_directly_issued_by(load(ca.ca_cert_path))


def test_hostnames_are_remembered_and_checked(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    assert ca.added_hostnames() == []
    assert ca.add_hostnames(["Shop.Test.", "*.dev.test"]) == ["shop.test", "*.dev.test"]
    assert LocalCA(tmp_path).added_hostnames() == ["shop.test", "*.dev.test"]
    with pytest.raises(TaxiwayError, match="not a hostname"):
        ca.add_hostnames(["ok.test", "bad name"])
    assert ca.added_hostnames() == ["shop.test", "*.dev.test"]
    cert_path, _ = ca.certificate_for("*.dev.test")
    assert "/" not in cert_path.name and cert_path.parent == ca.leaves_dir
    with pytest.raises(TaxiwayError):
        ca.certificate_for("../escape")
