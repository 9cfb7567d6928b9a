# -*- test-case-name: tests.unit.test_config -*-
"""
Endpoint descriptions (C{tcp:11211:interface=127.0.0.1}) taken apart the
way Twisted's C{serverFromString} reads them, for the settings checks, the
TLS listeners and the listen backlog.
"""

import socket
from typing import Dict, List, Optional, Tuple


def endpointArgs(description: str) -> Tuple[List[str], Dict[str, str]]:
    """Split an endpoint description at unescaped colons, as L{twisted.internet.endpoints.serverFromString} does, into
    its positional parts (the type first) and its C{key=value} ones."""
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
    pairs = [p.partition("=") for p in parts + ["".join(current)]]
    return [k for k, eq, _ in pairs if not eq], {k: v for k, eq, v in pairs if eq}


def hostPort(description: str) -> Optional[str]:
    """The C{host:port} a C{tcp:}/C{ssl:} listener is reached at (the host name on every interface); L{None} for other
    types."""
    args, kw = endpointArgs(description)
    host = kw.get("interface", "")
    host = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    port = kw.get("port", args[1] if len(args) > 1 else "")
    return None if len(args) < 2 or args[0] not in ("tcp", "ssl") else f"[{host}]:{port}" if ":" in host \
        else f"{host}:{port}"
