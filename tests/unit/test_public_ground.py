"""
The node stands on Twisted's public API: outside the one fenced module,
L{memcachier.node.fastpaths}, no code reads a C{_private} name of a
Twisted object or assigns to an attribute of one.
"""

import ast
import pathlib

from twisted.internet import epollreactor, tcp
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.web import http, server

import memcachier

PACKAGE = pathlib.Path(memcachier.__file__).parent
FENCED = {PACKAGE / "node" / "fastpaths.py"}

#: the names Twisted objects go by in this code base
TWISTED_NAMES = {
    "reactor", "transport", "clock", "port", "endpoint", "channel", "request",
    "threadpool", "pool", "listeningPort", "connector",
}


#: the methods of the Twisted objects the node handles: replacing one on
#: an instance is patching Twisted
TWISTED_METHODS = {
    name
    for cls in (
        epollreactor.EPollReactor, tcp.Server, TLSMemoryBIOProtocol, server.Request,
        http.HTTPChannel, server.Site,
    )
    for name in dir(cls)
    if callable(getattr(cls, name, None)) and not name.startswith("__")
}


def _lastName(node):
    """
    The last name of an expression: C{transport} for C{self.transport},
    C{reactor} for C{reactor}.
    """
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _offences(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            if private and _lastName(node.value) in TWISTED_NAMES:
                yield f"{path}:{node.lineno}: reads {ast.unparse(node)}"
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and _lastName(target.value) in TWISTED_NAMES
                and target.attr in TWISTED_METHODS
            ):
                yield f"{path}:{target.lineno}: replaces {ast.unparse(target)}"


def test_noTwistedInternalsOutsideTheFence():
    """
    No module but the fenced one touches a private name of a Twisted
    object or replaces one of its methods (the check would have caught
    the TLS transport whose C{loseConnection} was replaced).
    """
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path not in FENCED:
            offences.extend(_offences(path))
    assert offences == []


def test_theCheckFindsOffences(tmp_path):
    """
    The check is not vacuous: it finds both kinds of offence.
    """
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(self, reactor):\n"
        "    reactor._selectables\n"
        "    self.transport.loseConnection = None\n"
    )
    assert len(list(_offences(sample))) == 2
