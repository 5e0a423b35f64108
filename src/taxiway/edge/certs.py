"""The edge's local certificate authority: what stands in for Fly-managed certificates.

On the platform the proxy terminates TLS with certificates Fly issues for the app's
hostnames. Locally one CA per app (ECDSA P-256, under ``.taxiway/certs``) issues leaf
certificates on demand, so a browser or client that trusts the CA once gets valid
HTTPS for ``localhost``, ``<app>.localhost`` and any name the user adds. The CA is
created once and reused (trusting it is a manual step we don't want to repeat); a
corrupt or expired CA is moved aside, never deleted, and replaced.

Files: ``ca.pem``/``ca.key`` (the CA), ``leaves/<name>.pem``/``.key`` (issued certs),
``hostnames`` (names the user added, one a line). Keys are 0600, the folder 0700.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from taxiway.errors import TaxiwayError

log = logging.getLogger("taxiway.edge")

CA_VALID_DAYS = 3650
#: Browsers refuse leaf certificates valid for more than 398 days.
LEAF_VALID_DAYS = 397
#: A cached leaf this close to expiry (or an expired CA this close) is renewed.
RENEW_BEFORE = dt.timedelta(days=30)
#: Names a certificate may be issued for: DNS labels, optionally one leading wildcard.
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(\*\.)?({_LABEL}\.)*{_LABEL}$")
_LOCALHOST_IPS = ("127.0.0.1", "::1")


def normalize_hostname(name: str) -> str:
    """The name as certificates and SNI carry it (lowercase, no trailing dot), or a
    `TaxiwayError` for something that can't be a hostname."""
    cleaned = name.strip().lower().rstrip(".")
    if len(cleaned) > 253 or not _HOSTNAME.match(cleaned):
        raise TaxiwayError(f"{name!r} is not a hostname a certificate can be issued for")
    return cleaned


class LocalCA:
    """A CA in ``folder``, loaded or created on first use; issues leaf certificates."""

    def __init__(self, folder: Path, *, log: Callable[[str], None] | None = None) -> None:
        self.dir = Path(folder)
        self._log = log
        self.ca_cert_path = self.dir / "ca.pem"
        self.ca_key_path = self.dir / "ca.key"
        self.leaves_dir = self.dir / "leaves"
        self.hostnames_path = self.dir / "hostnames"
        self._make_dirs()
        with self._locked():
            self._cert, self._key = self._load_or_create()

    # -- the CA ------------------------------------------------------------------------------

    def _make_dirs(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.leaves_dir.mkdir(mode=0o700, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Daemon and CLI may both create the CA (or a leaf) at once: one wins."""
        fd = os.open(self.dir / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load_or_create(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if self.ca_cert_path.exists() or self.ca_key_path.exists():
            problem = None
            try:
                cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
                key = serialization.load_pem_private_key(
                    self.ca_key_path.read_bytes(), password=None
                )
                if not isinstance(key, ec.EllipticCurvePrivateKey) or _public_bytes(
                    key.public_key()
                ) != _public_bytes(cert.public_key()):
                    problem = "its key does not match its certificate"
                elif cert.not_valid_after_utc - RENEW_BEFORE < _now():
                    problem = "it expired (or is about to)"
            except (OSError, ValueError, TypeError) as exc:
                problem = f"it could not be read ({exc.__class__.__name__})"
            if problem is None:
                return cert, key  # type: ignore[return-value]
            aside = self._move_aside()
            self._say(
                f"the local CA in {self.dir} was replaced because {problem}; the old files "
                f"are in {aside} (trust the new CA: see `taxiway certs`)"
            )
            return self._create(announce=False)
        return self._create()

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.dir / f"old-{stamp}"
        n = 1
        while aside.exists():
            n += 1
            aside = self.dir / f"old-{stamp}-{n}"
        aside.mkdir(mode=0o700)
        for path in (self.ca_cert_path, self.ca_key_path, self.leaves_dir):
            if path.exists():
                path.rename(aside / path.name)
        self.leaves_dir.mkdir(mode=0o700, exist_ok=True)
        return aside

    def _create(
        self, *, announce: bool = True
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        owner = f"{_user()}@{socket.gethostname()}"
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "taxiway local CA"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"taxiway local CA {owner}"[:64]),
            ]
        )
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=CA_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        _write(self.ca_key_path, _key_pem(key), 0o600)
        _write(self.ca_cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        if announce:
            self._say(f"created a local CA in {self.dir} (trust it: see `taxiway certs`)")
        return cert, key

    def _say(self, message: str) -> None:
        if self._log is not None:
            self._log(message)
        else:
            log.warning("edge: %s", message)

    # -- leaves ------------------------------------------------------------------------------

    def certificate_for(self, hostname: str) -> tuple[Path, Path]:
        """(cert path, key path) of a certificate for ``hostname``, issued now unless a
        valid one from this CA is on disk."""
        name = normalize_hostname(hostname)
        stem = name.replace("*", "_wildcard_")
        cert_path = self.leaves_dir / f"{stem}.pem"
        key_path = self.leaves_dir / f"{stem}.key"
        if self._usable(cert_path, key_path):
            return cert_path, key_path
        with self._locked():
            if not self._usable(cert_path, key_path):
                self._issue(name, cert_path, key_path)
        return cert_path, key_path

    def _usable(self, cert_path: Path, key_path: Path) -> bool:
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if not key_path.exists():
                return False
            cert.verify_directly_issued_by(self._cert)
        except Exception:  # unreadable, or signed by a CA since replaced
            return False
        return cert.not_valid_after_utc - RENEW_BEFORE > _now()

    def _issue(self, name: str, cert_path: Path, key_path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(name)]
        if name == "localhost":
            sans += [x509.IPAddress(ip_address(ip)) for ip in _LOCALHOST_IPS]
        now = _now()
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(
                min(now + dt.timedelta(days=LEAF_VALID_DAYS), self._cert.not_valid_after_utc)
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        _write(key_path, _key_pem(key), 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    # -- hostnames the user added ------------------------------------------------------------

    def added_hostnames(self) -> list[str]:
        """Names remembered with `add_hostnames` (``taxiway certs --add``)."""
        try:
            text = self.hostnames_path.read_text()
        except FileNotFoundError:
            return []
        names = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                with contextlib.suppress(TaxiwayError):
                    names.append(normalize_hostname(line))
        return list(dict.fromkeys(names))

    def add_hostnames(self, names: Iterable[str]) -> list[str]:
        """Remember more names (validated first, so a bad one adds nothing); returns all."""
        new = [normalize_hostname(n) for n in names]
        with self._locked():
            merged = list(dict.fromkeys([*self.added_hostnames(), *new]))
            _write(self.hostnames_path, "".join(f"{n}\n" for n in merged).encode(), 0o644)
        return merged


def local_ca(folder: Path, *, log: Callable[[str], None] | None = None) -> LocalCA:
    """The CA in ``folder`` (created there on first use); ``log`` hears of a CA created
    or replaced."""
    return LocalCA(folder, log=log)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return str(os.getuid())


def _public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with ``mode`` from the start: a key is never readable by others,
    and a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
