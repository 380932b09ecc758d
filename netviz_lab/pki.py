"""The lab cluster's PKI: one CA, the certificates every control-plane process needs, the SA key pair.

Pure functions over a directory, idempotent: an existing certificate is reused when it was issued by
the current CA, still has more than a day left, and has the wanted subject and SANs; anything else is
(re)issued. So `up` after `up` keeps the same files, and deleting the CA re-issues every leaf.

ECDSA P-256 everywhere: generating a key takes microseconds (RSA 2048 takes ~0.1 s each) and every
consumer here accepts it (Go TLS, Python ssl, kube-apiserver ES256 service-account tokens).
Private keys are written 0600.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365


@dataclass(frozen=True)
class CertSpec:
    """What a leaf certificate must say. `name` is the file stem: <name>.crt / <name>.key."""

    name: str
    cn: str
    orgs: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    server: bool = False
    client: bool = False

    def subject(self) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in self.orgs]
        return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, self.cn)])

    def sans(self) -> list[x509.GeneralName]:
        return [*(x509.DNSName(d) for d in self.dns), *(x509.IPAddress(ipaddress.ip_address(i)) for i in self.ips)]


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass
class Bundle:
    """Paths of everything `ensure_all` produced."""

    dir: Path
    ca: Pair
    sa_key: Path
    sa_pub: Path
    leaves: dict[str, Pair] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Pair:
        return self.leaves[name]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _load(pair: Pair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
        key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        return None
    return cert, key  # type: ignore[return-value]


def ensure_ca(d: Path, cn: str = "netviz-lab-ca") -> tuple[Pair, bool]:
    """Reuse or create the CA. Returns (paths, created)."""
    pair = Pair(d / "ca.crt", d / "ca.key")
    loaded = _load(pair)
    if loaded and loaded[0].not_valid_after_utc - _now() > dt.timedelta(days=30):
        return pair, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    d.mkdir(parents=True, exist_ok=True)
    _write_key(pair.key, key)
    _write_cert(pair.cert, cert)
    return pair, True


def _matches(cert: x509.Certificate, ca: x509.Certificate, spec: CertSpec) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 - any failure means "re-issue"
        return False
    if cert.subject != spec.subject() or cert.not_valid_after_utc - _now() < dt.timedelta(days=1):
        return False
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {str(n.value) for n in sans}
    except x509.ExtensionNotFound:
        have = set()
    return have == {str(n.value) for n in spec.sans()}


def ensure_cert(d: Path, ca_pair: Pair, spec: CertSpec) -> Pair:
    """Reuse or issue the leaf `spec` signed by the CA at `ca_pair`."""
    ca_cert, ca_key = _load(ca_pair) or (None, None)
    if ca_cert is None:
        raise FileNotFoundError(f"CA missing or unreadable: {ca_pair.cert}")
    pair = Pair(d / f"{spec.name}.crt", d / f"{spec.name}.key")
    loaded = _load(pair)
    if loaded and _matches(loaded[0], ca_cert, spec):
        return pair
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * spec.server + [ExtendedKeyUsageOID.CLIENT_AUTH] * spec.client
    b = (x509.CertificateBuilder().subject_name(spec.subject()).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(_now() - dt.timedelta(minutes=5))
         .not_valid_after(_now() + dt.timedelta(days=LEAF_DAYS))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if spec.sans():
        b = b.add_extension(x509.SubjectAlternativeName(spec.sans()), critical=False)
    _write_key(pair.key, key)
    _write_cert(pair.cert, b.sign(ca_key, hashes.SHA256()))
    return pair


def ensure_sa_keys(d: Path) -> tuple[Path, Path]:
    """Service-account token signing key (sa.key, for apiserver + controller-manager) and its public half."""
    key_path, pub_path = d / "sa.key", d / "sa.pub"
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        key = ec.generate_private_key(ec.SECP256R1())
        _write_key(key_path, key)  # type: ignore[arg-type]
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not pub_path.exists() or pub_path.read_bytes() != pub:
        pub_path.write_bytes(pub)
    return key_path, pub_path


def ensure_all(d: Path, specs: list[CertSpec]) -> Bundle:
    """CA + SA keys + every leaf in `specs` under `d` (mode 0700)."""
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    ca, _ = ensure_ca(d)
    sa_key, sa_pub = ensure_sa_keys(d)
    return Bundle(dir=d, ca=ca, sa_key=sa_key, sa_pub=sa_pub, leaves={s.name: ensure_cert(d, ca, s) for s in specs})
