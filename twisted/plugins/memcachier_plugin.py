# -*- test-case-name: tests.unit.test_tap -*-
"""
The twistd plugin: C{twistd -n memcachier --config=memcachier.toml}.

Only a L{ServiceMaker} lives here, so that C{twistd --help} does not import
memcachier itself.
"""

from twisted.application.service import ServiceMaker

Memcachier = ServiceMaker(
    "memcachier",
    "memcachier.node.tap",
    "A multi-tenant memcache service (SASL/ASCII auth, plans, analytics API).",
    "memcachier",
)
