# -*- test-case-name: tests.unit.test_control -*-
"""
The control plane, held in memory for the hot path.

Authentication, capability and plan checks happen on every connection and
must never wait on SQL.  L{ControlIndex} keeps every cache and credential
in dictionaries and answers synchronously.  It reloads everything when the
database's C{control_version} changes, which it polls every
C{pollInterval} seconds; writes made through the L{AsyncControlPlane} of
this process reload it at once.  So a change made by the admin CLI or
another node is seen within one poll interval, and a change made through
this node's API before the API answers.

Reloading everything is simple and correct (no event to miss, no ordering
between events), and cheap next to a poll interval for the thousands of
caches a node serves.
"""

import hmac

from twisted.internet import defer
from twisted.logger import Logger

from memcachier.control.repository import UnknownCache, UnknownPlan
from memcachier.tx.periodic import PeriodicService


#: Compared against when the username is unknown, so an unknown username
#: costs about as much as a wrong password.
_DUMMY_PASSWORD = b"0" * 32


class ControlIndex(PeriodicService):
    """
    Every cache and credential, in memory, kept up to date.

    @ivar ready: a L{Deferred} that fires with L{None} once the first load
        has succeeded (the server waits for it before accepting clients).
    @ivar version: the control version of what is loaded, or L{None}
        before the first load.
    """

    _log = Logger()

    def __init__(self, controlPlane, plans, reactor, pollInterval=1.0, defaultPlan=None):
        """
        @param controlPlane: an L{AsyncControlPlane}; the index registers
            itself as a write observer so that writes through it are
            visible as soon as they succeed.
        @param plans: L{dict} of plan slug to L{Plan} (from config).
        @param reactor: provides C{seconds()} and C{callLater} for polling.
        @param pollInterval: seconds between reads of the control version.
        @param defaultPlan: the slug L{planOf} falls back to for a cache
            whose plan is no longer configured; L{None} to raise
            L{UnknownPlan} instead.
        """
        PeriodicService.__init__(self, pollInterval, self._poll, reactor, "control plane poll")
        self._controlPlane = controlPlane
        self._plans = dict(plans)
        self._reactor = reactor
        self.pollInterval = pollInterval
        self._defaultPlan = defaultPlan
        self._caches = {}
        self._credentials = {}
        self._byCache = {}
        self._flushes = {}
        self._listeners = []
        self._polling = False
        self.version = None
        self.ready = defer.Deferred()
        controlPlane.addWriteObserver(self.refresh)

    # -- the hot path: synchronous, no SQL

    def authenticate(self, username, password):
        """
        Check a username and password.

        @type username: L{bytes}
        @type password: L{bytes}
        @return: the L{Credential}, or L{None} if the username is unknown,
            the password wrong, or the cache missing or disabled.
        """
        try:
            name = username.decode("utf-8")
        except UnicodeDecodeError:
            name = None
        credential = self._credentials.get(name) if name is not None else None
        if credential is None:
            hmac.compare_digest(password, _DUMMY_PASSWORD)
            return None
        if not hmac.compare_digest(password, credential.password.encode("utf-8")):
            return None
        cache = self._caches.get(credential.cache_id)
        if cache is None or not cache.enabled:
            return None
        return credential

    def credential(self, username):
        """
        @type username: L{str}
        @return: the L{Credential} or L{None}.
        """
        return self._credentials.get(username)

    def cache(self, cacheId):
        """
        @return: the L{Cache} or L{None}.
        """
        return self._caches.get(cacheId)

    def caches(self):
        """
        @return: every L{Cache}, by id.
        @rtype: L{list}
        """
        return [self._caches[k] for k in sorted(self._caches)]

    def credentials(self, cacheId):
        """
        @return: the credentials of a cache, the primary first (empty for
            an unknown cache).
        @rtype: L{list} of L{Credential}
        """
        return list(self._byCache.get(cacheId, ()))

    def flushGeneration(self, cacheId):
        """
        A cache's last flush as the control plane recorded it.

        @return: a L{memcachier.control.repository.FlushGeneration}, or
            L{None} if the cache was never flushed through a cluster.
        """
        return self._flushes.get(cacheId)

    def flushGenerations(self):
        """
        @return: L{dict} of cache id to its last flush (see
            L{flushGeneration}).
        """
        return dict(self._flushes)

    def plans(self):
        """
        @return: the configured plans, by slug.
        @rtype: L{dict}
        """
        return dict(self._plans)

    def plan(self, slug):
        """
        @rtype: L{Plan}
        @raise UnknownPlan: no such plan is configured.
        """
        try:
            return self._plans[slug]
        except KeyError:
            raise UnknownPlan(slug, sorted(self._plans)) from None

    def planOf(self, cacheId):
        """
        The plan a cache is on.

        @rtype: L{Plan}
        @raise UnknownCache: no such cache.
        @raise UnknownPlan: its plan is not configured and there is no
            default plan to fall back to.
        """
        cache = self._caches.get(cacheId)
        if cache is None:
            raise UnknownCache(cacheId)
        plan = self._plans.get(cache.plan)
        if plan is None:
            if self._defaultPlan is None:
                raise UnknownPlan(cache.plan, sorted(self._plans))
            plan = self._plans[self._defaultPlan]
        return plan

    # -- keeping up to date

    def addListener(self, listener):
        """
        Call C{listener()} after every reload that changed anything.
        Exceptions it raises are logged.
        """
        self._listeners.append(listener)

    def removeListener(self, listener):
        self._listeners.remove(listener)

    def refresh(self):
        """
        Reload everything now.

        @return: a L{Deferred} firing with L{True} if anything changed,
            after the listeners ran.
        """
        return self._controlPlane.snapshot().addCallback(self._apply)

    def _apply(self, snapshot):
        if self.version is not None and snapshot.version < self.version:
            # An older reload finishing after a newer one.
            return False
        self.version = snapshot.version
        caches = {c.id: c for c in snapshot.caches}
        credentials = {c.username: c for c in snapshot.credentials}
        flushes = snapshot.flushes
        changed = (
            caches != self._caches or credentials != self._credentials or flushes != self._flushes
        )
        self._flushes = flushes
        if changed:
            byCache = {}
            for credential in snapshot.credentials:
                byCache.setdefault(credential.cache_id, []).append(credential)
            for creds in byCache.values():
                creds.sort(key=lambda c: (not c.primary, c.id))
            self._caches = caches
            self._credentials = credentials
            self._byCache = byCache
        if not self.ready.called:
            self._log.info(
                "control plane loaded: {caches} caches, {credentials} credentials",
                caches=len(caches),
                credentials=len(credentials),
            )
            self.ready.callback(None)
        if changed:
            for listener in list(self._listeners):
                try:
                    listener()
                except Exception:
                    self._log.failure("control listener {listener!r} failed", listener=listener)
        return changed

    def _poll(self):
        """
        Reload if the control version moved; one poll at a time.
        """
        if self._polling:
            return None
        self._polling = True

        def check(version):
            if version != self.version:
                return self.refresh()

        def failed(failure):
            self._log.failure("could not poll the control plane", failure)

        def done(result):
            self._polling = False

        d = self._controlPlane.version()
        d.addCallback(check)
        d.addErrback(failed)
        d.addBoth(done)
        return d

    def startService(self):
        """
        Load everything, then poll.

        @return: L{ready}'s result as a new L{Deferred}: fires once the
            first load succeeded.  A failed first load is logged and
            retried at each poll.
        """
        super().startService()
        waiting = defer.Deferred()

        def loaded(result):
            waiting.callback(None)
            return result

        self.ready.addCallback(loaded)
        return waiting
