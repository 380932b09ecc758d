"""pki.py: idempotent reuse, re-issue when the CA or the wanted names change, key file modes."""
from __future__ import annotations

import ipaddress
import stat

from cryptography import x509

from netviz_lab import pki
from netviz_lab.cluster import cert_specs


def _bytes(b: pki.Bundle) -> dict[str, bytes]:
    return {n: p.cert.read_bytes() + p.key.read_bytes() for n, p in b.leaves.items()}


def test_reuse_reissue_and_modes(tmp_path):
    d = tmp_path / "pki"
    first = pki.ensure_all(d, cert_specs())
    before = _bytes(first)  # file contents (Bundle only holds paths)
    assert _bytes(pki.ensure_all(d, cert_specs())) == before  # second run reuses every file
    for p in d.glob("*.key"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600

    api = x509.load_pem_x509_certificate(first["apiserver"].cert.read_bytes())
    sans = api.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("198.19.128.1") in sans.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc.cluster.local" in sans.get_values_for_type(x509.DNSName)
    pipeline = x509.load_pem_x509_certificate(first["netviz-pipeline"].cert.read_bytes())
    assert pipeline.subject.rfc4514_string() == "CN=netviz-pipeline"  # no O=: no groups

    changed = [pki.CertSpec(s.name, s.cn, s.orgs, s.dns + ("extra.example",), s.ips, s.server, s.client)
               if s.name == "apiserver" else s for s in cert_specs()]
    after = _bytes(pki.ensure_all(d, changed))
    assert after["apiserver"] != before["apiserver"]
    assert after["admin"] == before["admin"]

    first["admin"].cert.parent.joinpath("ca.crt").unlink()  # new CA -> every leaf re-issued
    renewed = pki.ensure_all(d, cert_specs())
    assert all(_bytes(renewed)[n] != after[n] for n in after)
    ca = x509.load_pem_x509_certificate(renewed.ca.cert.read_bytes())
    for p in renewed.leaves.values():
        x509.load_pem_x509_certificate(p.cert.read_bytes()).verify_directly_issued_by(ca)
