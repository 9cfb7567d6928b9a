"""
The HTTP side of a node: the analytics REST API v2 (L{memcachier.web.api}),
served by L{memcachier.web.site.makeSite} on C{[web] listen}.
"""
