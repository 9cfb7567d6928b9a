# -*- test-case-name: tests.unit.test_heroku -*-
"""
The add-on's manifest (C{addon-manifest.json}), which C{memcachier-admin
heroku manifest} prints for Heroku's C{kensa} and partner portal.
"""

import re
from typing import Any, Dict, List, Tuple

#: The config vars every provisioned cache gets, as the manifest declares.
CONFIG_VARS = ("MEMCACHIER_SERVERS", "MEMCACHIER_USERNAME", "MEMCACHIER_PASSWORD")


def endpointArgs(description: str) -> Tuple[List[str], Dict[str, str]]:
    """
    The positional and C{key=value} arguments of an endpoint description
    (C{tcp:8080:interface=127.0.0.1}), split at unescaped colons as
    L{twisted.internet.endpoints.serverFromString} does.
    """
    args: List[str] = []
    kw: Dict[str, str] = {}
    for part in re.split(r"(?<!\\):", description):
        part = part.replace("\\:", ":")
        key, eq, value = part.partition("=")
        if eq:
            kw[key] = value
        else:
            args.append(part)
    return args, kw


def manifest(settings: Any) -> Dict[str, Any]:
    """
    The add-on's C{addon-manifest.json}, from the configuration: the
    production URLs under C{[web] public_url}, the test ones (kensa's, on
    a developer's machine) on the web listener's port.

    @type settings: L{memcachier.node.settings.Settings}
    @rtype: L{dict}
    """
    base = settings.web.public_url
    args, kw = endpointArgs(settings.web.listen)
    port = kw.get("port", args[1] if len(args) > 1 else "8080")
    scheme = "https" if args and args[0] == "ssl" else "http"
    local = f"{scheme}://localhost:{port}"
    return {
        "id": settings.heroku.id,
        "name": "MemCachier",
        "api": {
            "version": "3",
            "password": settings.heroku.password,
            "sso_salt": settings.heroku.sso_salt,
            "regions": ["us", "eu"],
            "requires": [],
            "config_vars": list(CONFIG_VARS),
            "production": {
                "base_url": base + "/heroku/resources",
                "sso_url": base + "/sso/login",
            },
            "test": {
                "base_url": local + "/heroku/resources",
                "sso_url": local + "/sso/login",
            },
        },
    }
