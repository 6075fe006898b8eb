"""A throwaway self-signed certificate for the simulator's HTTPS mode."""

from __future__ import annotations

import ssl
import tempfile
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path


def self_signed_certificate(key, common_name: str, host: str | None = None):
    """A self-signed X.509 certificate for ``key``, valid for a day (from five minutes ago);
    with ``host``, that IP address as its subject alternative name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )
    if host is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip_address(host))]), False
        )
    return builder.sign(key, hashes.SHA256())


def self_signed_context(host: str = "127.0.0.1") -> tuple[ssl.SSLContext, Path]:
    """A server SSLContext with a fresh self-signed certificate for ``host``; also the PEM path
    of that certificate, for clients that want to trust it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    certificate = self_signed_certificate(key, "ewssim.test", host)
    folder = Path(tempfile.mkdtemp(prefix="ewssim-tls-"))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path
