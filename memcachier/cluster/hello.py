# -*- test-case-name: tests.unit.test_peer_protocol -*-
"""
The peer protocol's version and capabilities, and the hello that carries
them when a peer connection opens (L{memcachier.cluster.peer}).  Kept apart
so that the settings can name the capabilities without the peer code.
"""

from typing import FrozenSet, Iterable, Optional, Tuple

#: the version of the peer protocol this node speaks (0: no hello)
PEER_PROTOCOL_VERSION = 1
#: the peer-only item opcodes (L{memcachier.protocols.binary.PEER_GET}, C{PEER_PEEK}, C{PEER_GAT})
CAP_ITEM = "item"
#: the C{cluster_*} stats groups of L{memcachier.cluster.peer.PeerRuntime.statsGroup}
CAP_STATS_TUNNEL = "stats_tunnel"
#: the peer-only hand-off opcode (L{memcachier.protocols.binary.PEER_HANDOFF}):
#: without it a draining node pushes its items as plain C{ADD}s
CAP_HANDOFF = "handoff"
#: every capability this version has
PEER_CAPABILITIES = (CAP_ITEM, CAP_STATS_TUNNEL, CAP_HANDOFF)
#: what a node without the hello (version 0) has
VERSION0_CAPABILITIES = frozenset((CAP_ITEM, CAP_STATS_TUNNEL))
#: the stats group of the hello
HELLO_GROUP = "peer_hello"


def helloRequest(version: int, capabilities: Iterable[str]) -> bytes:
    """
    The key of the hello's C{STAT} request.

    @rtype: L{bytes}
    """
    return f"{HELLO_GROUP} {version} {','.join(sorted(capabilities))}".encode("ascii")


def parseHello(argument: str) -> Optional[Tuple[int, FrozenSet[str]]]:
    """
    The other side's version and capabilities from a hello's argument or
    answer fields; unknown capabilities are kept (and never common).

    @param argument: C{"<version> <cap>,<cap>"}.
    @return: (L{int}, L{frozenset} of L{str}), or L{None} if unreadable.
    """
    version, _, capabilities = argument.partition(" ")
    try:
        number = int(version)
    except ValueError:
        return None
    return number, frozenset(c for c in capabilities.split(",") if c)
