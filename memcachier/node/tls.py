# -*- test-case-name: tests.unit.test_tap -*-
"""
TLS for C{ssl:} listeners: the settings built from an endpoint description
with a floor on the protocol version, optional client certificates (mTLS),
and certificates that reload on C{SIGHUP} without dropping a connection.

Twisted's own C{ssl:} parser has no minimum version and no client
certificate option, so we parse C{ssl:} descriptions ourselves::

    ssl:11219:privateKey=key.pem:certKey=cert.pem[:extraCertChain=chain.pem]
        [:dhParameters=dh.pem][:clientCAs=ca.pem][:interface=...][:backlog=...]

C{clientCAs} names a PEM file of one or more CA certificates: a client
must then present a certificate one of them signed, or the handshake fails.

A reload builds new settings from the same files; only connections made
afterwards use them (a TLS connection keeps the context it was accepted
with), so nothing open is dropped.  If the new files do not load, the old
certificate stays in use and the error is returned for logging.
"""

from typing import Any, List, Optional, Tuple, TypedDict

from constantly import NamedConstant
from OpenSSL.SSL import Context
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.python.filepath import FilePath
from zope.interface import implementer

from memcachier.node.endpoints import endpointArgs

#: C{ssl:} options we understand; any other is an error naming it
SSL_OPTIONS = (
    "port", "privateKey", "certKey", "extraCertChain", "dhParameters", "clientCAs",
    "interface", "backlog",
)


class Listening(TypedDict):
    """
    Where an C{ssl:} listener listens, as its description says: what
    L{twisted.internet.endpoints.SSL4ServerEndpoint} is given beside the
    TLS settings.
    """

    port: int
    interface: str
    backlog: int


def _certificates(path: str) -> List[ssl.Certificate]:
    """
    Every certificate in a PEM file.

    @raise ValueError: the file holds none.
    """
    pem = FilePath(path).getContent()
    parts = pem.split(b"-----BEGIN CERTIFICATE-----")[1:]
    if not parts:
        raise ValueError(f"no certificate in {path}")
    return [ssl.Certificate.loadPEM(b"-----BEGIN CERTIFICATE-----" + part) for part in parts]


def tlsOptions(
    description: str, minimum: NamedConstant, defaultBacklog: int = 50
) -> Tuple[ssl.CertificateOptions, Listening]:
    """
    TLS settings for an C{ssl:} listener, from its description, with a
    floor on the TLS version that the description cannot lower.

    @param description: an C{ssl:} endpoint description (see the module).
    @param minimum: a L{twisted.internet.ssl.TLSVersion} constant.
    @param defaultBacklog: the listen backlog when the description sets
        none.
    @return: a 2-tuple of L{CertificateOptions} and the L{Listening}
        (C{port}, C{interface} and C{backlog}).
    @raise ValueError: an unknown option, a bad number.
    @raise OSError: a file cannot be read.
    @raise Exception: from OpenSSL, a file that does not parse.
    """
    args, kw = endpointArgs(description)
    port = int(kw.pop("port", args[1] if len(args) > 1 else 0))
    privateKey = kw.pop("privateKey", "server.pem")
    certKey = kw.pop("certKey", privateKey)
    extraCertChain = kw.pop("extraCertChain", None)
    dhParameters = kw.pop("dhParameters", None)
    clientCAs = kw.pop("clientCAs", None)
    listening: Listening = {
        "port": port,
        "interface": kw.pop("interface", ""),
        "backlog": int(kw.pop("backlog", defaultBacklog)),
    }
    if kw:
        raise ValueError(
            f"unsupported ssl: options {', '.join(kw)}; known: {', '.join(SSL_OPTIONS)}"
        )
    certificate = ssl.PrivateCertificate.loadPEM(
        FilePath(certKey).getContent() + b"\n" + FilePath(privateKey).getContent()
    )
    chain = None
    if extraCertChain is not None:
        chain = [c.original for c in _certificates(extraCertChain)]
    dh = None
    if dhParameters is not None:
        dh = ssl.DiffieHellmanParameters.fromFile(FilePath(dhParameters))
    verify: dict[str, Any] = {}
    if clientCAs is not None:
        verify = {
            "verify": True,
            "requireCertificate": True,
            "caCerts": [c.original for c in _certificates(clientCAs)],
        }
    options = ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        extraCertChain=chain,
        dhParameters=dh,
        raiseMinimumTo=minimum,
        **verify,
    )
    # build the context now: a key that does not match its certificate
    # fails here, not at the first client's handshake
    options.getContext()
    return options, listening


@implementer(IOpenSSLContextFactory)
class ReloadingContextFactory:
    """
    The context factory of one C{ssl:} listener.  Twisted asks it for a
    context for every new connection, so a L{reload} applies to the next
    connection and never to an open one.

    @ivar description: the listener's endpoint description.
    @ivar listening: C{port}, C{interface} and C{backlog}.
    """

    def __init__(
        self, description: str, minimum: NamedConstant, defaultBacklog: int = 50
    ) -> None:
        self.description = description
        self.minimum = minimum
        self.options, self.listening = tlsOptions(description, minimum, defaultBacklog)

    def getContext(self) -> Context:
        return self.options.getContext()

    def reload(self) -> Optional[Exception]:
        """
        Load the certificate, key and CA files again.

        @return: L{None} if the new files are in use, or the exception
            that kept the old ones in use.
        """
        try:
            self.options, _ = tlsOptions(self.description, self.minimum)
        except Exception as e:
            return e
        return None
