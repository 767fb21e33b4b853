"""Certificates made at run time for the TLS tests (the `cryptography` package): a CA,
server certificates it signs for localhost and 127.0.0.1, client certificates named by
their common name, and expired ones."""
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Ca:
    """A self-signed CA that issues certificates into `directory`."""

    def __init__(self, directory, name="test CA"):
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - DAY)
            .not_valid_after(_now() + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = self._write(name.replace(" ", "-") + ".pem", self.cert.public_bytes(serialization.Encoding.PEM))

    def _write(self, fname, data):
        path = os.path.join(self.dir, fname)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def issue(self, cn, server=False, expired=False, prefix=None, days=30, node=False):
        """Signs a certificate for `cn`; returns (cert_path, key_path). A server
        certificate names localhost and 127.0.0.1; a node one (cluster TLS: a node dials
        and accepts) does too, for both server and client use; an expired one ended
        yesterday, any other one ends `days` from now."""
        key = ec.generate_private_key(ec.SECP256R1())
        start, end = (_now() - 10 * DAY, _now() - DAY) if expired else (_now() - DAY, _now() + days * DAY)
        if node:
            usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        else:
            usage = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        if server or node:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = b.sign(self.key, hashes.SHA256())
        prefix = prefix or f"{cn}-{cert.serial_number}"
        cert_path = self._write(prefix + ".pem", cert.public_bytes(serialization.Encoding.PEM))
        key_path = self._write(
            prefix + ".key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return cert_path, key_path
