# -*- test-case-name: tests.unit.test_dashboard -*-
"""
The dashboard's sessions: L{SessionResolver} turns a request's cookie into
a live session, before the router (L{memcachier.web.router}) runs the
handlers of the API and the pages.
"""

from typing import Any, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from memcachier.web.sso import (
    credentialFingerprint,
    credentialOf,
    fingerprint,
    sessionCookie,
)


class SessionResolver:
    """
    Turns a request's session cookie into a live L{memcachier.web.sso.Session}
    or L{None}: unknown, expired, or granted under an SSO secret (or an
    operator password, or a cache credential) that has changed since, in
    which case its row goes.  Checked against the control index on every
    request, so a credential rotated or deleted anywhere ends its sessions
    once the index has polled the change.
    """

    _log = Logger()

    def __init__(self, sessions: Any, index: Any, settings: Any) -> None:
        """
        @param sessions: an L{memcachier.web.sso.AsyncSessionStore}.
        @param index: the control index (C{cache(id)}).
        @param settings: L{memcachier.node.settings.Settings} (the operator hash).
        """
        self.sessions = sessions
        self.index = index
        self.settings = settings

    def expectedFingerprint(self, cacheId: Optional[int]) -> Any:
        """
        The fingerprint a live session of C{cacheId} (L{None}: the
        operator) must carry, or L{None} if no session can be live.
        """
        if cacheId is None:
            secret = self.settings.web.operator_password_hash
            return fingerprint(secret) if secret else None
        cache = self.index.cache(cacheId)
        return None if cache is None else fingerprint(cache.sso_secret)

    def expectedFor(self, session: Any) -> Any:
        """
        The fingerprint C{session} must carry to be live, or L{None} if it
        cannot be: for a session started with a credential, that
        credential as the index has it now (gone, or without the API
        capability: none).
        """
        credentialId = credentialOf(session.fingerprint)
        if credentialId is None:
            return self.expectedFingerprint(session.cacheId)
        cache = self.index.cache(session.cacheId)
        if cache is None:
            return None
        for credential in self.index.credentials(session.cacheId):
            if credential.id == credentialId:
                if not credential.api:
                    return None
                return credentialFingerprint(cache.sso_secret, credential)
        return None

    def resolve(self, request: Any) -> Deferred[Any]:
        """
        @return: a L{Deferred} firing with the session or L{None}.
        """
        cookie = sessionCookie(request)
        if cookie is None:
            return succeed(None)
        return self.sessions.lookup(cookie).addCallback(self._check)

    def _check(self, session):
        if session is None:
            return None
        if session.fingerprint != self.expectedFor(session):
            self.sessions.end(session.key).addErrback(
                lambda f: self._log.failure("ending a stale session failed", f)
            )
            return None
        return session
