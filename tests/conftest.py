"""
Fixtures shared by every test tier.
"""

import datetime

import pytest


def makeSelfSignedCertificate(directory, hostname="localhost"):
    """
    Write a self-signed certificate for C{hostname} (and 127.0.0.1) and its
    key as PEM files in C{directory}.

    @type directory: L{pathlib.Path}
    @return: a 2-tuple of the key path and the certificate path (L{str}).
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return writeKeyAndCertificate(directory / "key.pem", directory / "cert.pem", key, certificate)


def writeKeyAndCertificate(keyPath, certPath, key, certificate):
    """
    Write C{key} and C{certificate} as PEM files.

    @return: the 2-tuple of their paths, as L{str}s.
    """
    from cryptography.hazmat.primitives import serialization

    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    certPath.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return str(keyPath), str(certPath)


@pytest.fixture
def selfSignedCert(tmp_path):
    """
    A self-signed certificate for C{localhost}/C{127.0.0.1}: a 2-tuple of
    key and certificate PEM file paths.
    """
    return makeSelfSignedCertificate(tmp_path)
