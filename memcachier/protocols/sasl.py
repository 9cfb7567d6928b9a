# -*- test-case-name: tests.unit.test_binary -*-
"""
SASL for the binary protocol: the mechanisms we offer and a parser for
PLAIN (RFC 4616), the only one memcache clients use with MemCachier.

PLAIN is a single step: the client's first message carries
C{authzid NUL authcid NUL passwd}, so there is never a C{SASL_STEP}.
"""

#: the mechanism names C{SASL_LIST_MECHS} returns (space separated)
MECHANISMS = (b"PLAIN",)

#: RFC 4616 limits each field to 255 octets
_FIELD_MAX = 255


def parsePlain(data):
    """
    Split a SASL PLAIN message into its three fields.

    @param data: C{authzid NUL authcid NUL passwd}.
    @type data: L{bytes}
    @return: a 3-tuple (authzid, user, password) of L{bytes}; C{authzid}
        may be empty.
    @raise ValueError: the message does not have exactly three fields, the
        user or password is empty, or a field is longer than 255 bytes.
    """
    parts = data.split(b"\0")
    if len(parts) != 3:
        raise ValueError("PLAIN message needs exactly three NUL-separated fields")
    authzid, user, password = parts
    if not user or not password:
        raise ValueError("PLAIN message with an empty user or password")
    if len(authzid) > _FIELD_MAX or len(user) > _FIELD_MAX or len(password) > _FIELD_MAX:
        raise ValueError("PLAIN field longer than 255 bytes")
    return authzid, user, password
