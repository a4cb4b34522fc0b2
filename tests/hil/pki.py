"""A throwaway PKI for TLS tests: a CA, a broker certificate, client certificates (CN = name).

    ca = TestCA(tmp_path / "pki")   # ca.crt / ca.key
    ca.server("broker")             # broker.crt / broker.key, SAN localhost and 127.0.0.1
    ca.client("CAM-A")              # CAM-A.crt / CAM-A.key, CN = CAM-A

Keys are P-256 (what a recorder's mbedTLS handles fastest); files are PEM, as
host_agent/deploy/mosquitto expects; the recorder reads PEM or DER.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "bodycam test CA") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))
        self.ca_file = self.dir / "ca.crt"
        self._write("ca", self.key, self.cert)

    def _write(self, stem: str, key: ec.EllipticCurvePrivateKey,
               cert: x509.Certificate) -> tuple[Path, Path]:
        crt, kf = self.dir / f"{stem}.crt", self.dir / f"{stem}.key"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kf.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        kf.chmod(0o600)
        return crt, kf

    def _leaf(self, stem: str, cn: str, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return self._write(stem, key, builder.sign(self.key, hashes.SHA256()))

    def server(self, stem: str = "broker", cn: str = "localhost") -> tuple[Path, Path]:
        """(cert, key) for the broker: CN `cn`, SAN DNS localhost and IP 127.0.0.1."""
        return self._leaf(stem, cn, server=True)

    def client(self, cn: str) -> tuple[Path, Path]:
        """(cert, key) of a client whose CN, the broker's user name for it, is `cn`."""
        return self._leaf(cn, cn, server=False)
