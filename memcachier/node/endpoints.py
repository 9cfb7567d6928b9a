# -*- test-case-name: tests.unit.test_config_checks -*-
"""
Endpoint descriptions checked the way twistd will use them, without
listening, for the settings' C{endpoint} kinds (L{memcachier.node.settings}).
"""

import json
import socket
from typing import Any, Callable, Dict, List, Tuple

from twisted.internet.ssl import TLSVersion


def endpointArgs(description: str) -> Tuple[List[str], Dict[str, str]]:
    """
    Split an endpoint description at unescaped colons, the way
    L{twisted.internet.endpoints.serverFromString} does.

    @return: the positional parts (the first one is the type) and the
        C{key=value} ones.
    """
    args: List[str] = []
    kw: Dict[str, str] = {}
    parts, current, escaped = [], [], False
    for ch in description:
        if escaped or ch not in "\\:":
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            parts.append("".join(current))
            current = []
    parts.append("".join(current))
    for part in parts:
        key, eq, value = part.partition("=")
        if eq:
            kw[key] = value
        else:
            args.append(part)
    return args, kw


def hostPort(description: str) -> Any:
    """
    The C{host:port} a C{tcp:}/C{ssl:} listener is reachable at (the host
    name when it listens on every interface), or L{None} for other types.
    """
    args, kw = endpointArgs(description)
    if len(args) < 2 or args[0] not in ("tcp", "ssl"):
        return None
    host = kw.get("interface", "")
    host = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    return f"[{host}]:{kw.get('port', args[1])}" if ":" in host else f"{host}:{kw.get('port', args[1])}"


def serverEndpointTypes() -> List[str]:
    """
    The endpoint types a listener description may start with: Twisted's
    built-in C{tcp}, C{ssl} and C{unix}, and every installed parser
    plugin's prefix (C{tcp6}, C{systemd}, ...).
    """
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    return ["tcp", "ssl", "unix"] + sorted(p.prefix for p in getPlugins(IStreamServerEndpointStringParser))


def show(value: Any) -> str:
    """
    A value as the operator wrote it, for messages.
    """
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def checkEndpoint(description: Any, fail: Callable[[str], None]) -> bool:
    """
    Check an endpoint description the way twistd will use it: its type is
    known, its options are what the type's parser accepts, its port is a
    number, and for C{ssl:} the key, certificates and CA files exist and
    load (L{memcachier.node.tls}).  Each mistake goes to C{fail}.
    """
    if not isinstance(description, str) or not description:
        fail(f"expected an endpoint description, got {show(description)}")
        return False
    args, kw = endpointArgs(description)
    kind = args[0] if args else ""
    types = serverEndpointTypes()
    if kind not in types:
        fail(f"unknown endpoint type {show(kind)} in {show(description)}; valid types: {', '.join(types)}")
        return False
    port = kw.get("port", args[1] if len(args) > 1 else None)
    if kind in ("tcp", "ssl", "tcp6") and (port is None or not port.isdigit() or int(port) > 65535):
        fail(f"expected a port number in {show(description)}")
        return False
    if "backlog" in kw and not kw["backlog"].isdigit():
        fail(f"expected a number for backlog in {show(description)}")
        return False
    if kind == "ssl":
        return _checkTLS(description, kw, fail)
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    try:
        serverFromString(MemoryReactor(), description)  # builds the endpoint object only
    except Exception as e:
        fail(f"invalid {kind}: endpoint {show(description)}: {e}")
        return False
    return True


def _checkTLS(description: str, kw: Dict[str, str], fail: Callable[[str], None]) -> bool:
    from memcachier.node.tls import tlsOptions

    if "sslmethod" in kw:
        fail("sslmethod is not supported: TLS versions are set by memcache.tls_min_version")
        return False
    privateKey = kw.get("privateKey", "server.pem")
    for name in ("privateKey", "certKey", "extraCertChain", "dhParameters", "clientCAs"):
        path = kw.get(name, privateKey if name in ("privateKey", "certKey") else None)
        try:
            if path is not None:
                open(path, "rb").close()
        except OSError as e:
            fail(f"{name} file {show(path)} cannot be read: {e.strerror}")
            return False
    try:
        tlsOptions(description, TLSVersion.TLSv1_2)
    except Exception as e:
        fail(f"TLS settings of {show(description)} do not load: {e or type(e).__name__}")
        return False
    return True
