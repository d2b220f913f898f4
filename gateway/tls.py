"""TLS for the gateway: credentials from PEM files, and a local CA for the embedded stack.

The server serves ``AGORA_GATEWAY_TLS_CERT``/``_KEY`` and, with
``AGORA_GATEWAY_TLS_CLIENT_CA``, requires client certificates signed by that CA.
Clients trust ``AGORA_GATEWAY_TLS_CA``. Plaintext happens only when
``AGORA_GATEWAY_PLAINTEXT`` says so.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ops.core.config import Settings
from ops.core.files import write_atomic

CA_DAYS, CERT_DAYS = 3650, 825


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The gateway's TLS credentials; None when plaintext is configured. ValueError when
    neither is."""
    if settings.gateway_plaintext:
        return None
    if not (settings.gateway_tls_cert and settings.gateway_tls_key):
        raise ValueError("the gateway needs AGORA_GATEWAY_TLS_CERT and AGORA_GATEWAY_TLS_KEY "
                         "(agora stack up makes them), or AGORA_GATEWAY_PLAINTEXT=1 to serve "
                         "without TLS")
    pair = (Path(settings.gateway_tls_key).read_bytes(), Path(settings.gateway_tls_cert).read_bytes())
    client_ca = settings.gateway_tls_client_ca
    return grpc.ssl_server_credentials(
        [pair], root_certificates=Path(client_ca).read_bytes() if client_ca else None,
        require_client_auth=bool(client_ca))


def channel_credentials(settings: Settings, cert: str = "", key: str = ""
                        ) -> grpc.ChannelCredentials | None:
    """What a client connects with: TLS trusting AGORA_GATEWAY_TLS_CA (the system's
    roots when empty), with a client certificate when given; None for plaintext."""
    if settings.gateway_plaintext:
        return None
    ca = settings.gateway_tls_ca
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes() if ca else None,
        private_key=Path(key).read_bytes() if key else None,
        certificate_chain=Path(cert).read_bytes() if cert else None)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(subject: str, public_key, issuer: x509.Name, signing_key, days: int,
                 ca: bool, hosts: tuple[str, ...] = (), client: bool = False
                 ) -> x509.Certificate:
    now = datetime.now(timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5))
               .not_valid_after(now + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None),
                              critical=True))
    if hosts:
        names = [x509.IPAddress(ipaddress.ip_address(h)) if h.replace(".", "").isdigit()
                 else x509.DNSName(h) for h in hosts]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def local_ca(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost in ``directory`` (kept when
    present): ca.pem, gateway.pem and gateway-key.pem (0600). The CA's key is not kept:
    nothing else is ever signed with it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = {"ca": directory / "ca.pem", "cert": directory / "gateway.pem",
             "key": directory / "gateway-key.pem"}
    if all(p.exists() for p in files.values()):
        return files
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Agora local CA")])
    ca_cert = _certificate("Agora local CA", ca_key.public_key(), ca_name, ca_key, CA_DAYS,
                           ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("agora-gateway", key.public_key(), ca_name, ca_key, CERT_DAYS, ca=False,
                        hosts=("127.0.0.1", "localhost"))
    write_atomic(files["key"], _pem_key(key))
    write_atomic(files["cert"], cert.public_bytes(serialization.Encoding.PEM), private=False)
    write_atomic(files["ca"], ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    return files
