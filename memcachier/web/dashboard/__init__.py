"""
The analytics dashboard: one page per cache at C{/caches/<id>/}, a static
client of the API v2 (C{static/dashboard.js}), behind single sign-on
(L{memcachier.web.sso}), and the operator's view at C{/admin/}.

L{memcachier.web.dashboard.resource.SessionResolver} resolves the session
cookie (in the control plane's thread pool) before the router runs a
handler of the API or of the pages (L{memcachier.web.router}).
"""
