# -*- test-case-name: tests.unit.test_control -*-
"""
Housekeeping of the control plane that runs on a timer.

MemCachier disables free development caches nobody has used for a while;
L{InactiveCacheReaper} does the same.  Activity is known only to the nodes
serving the caches, so each node periodically writes what it saw
(C{touchActive}) and then disables the development caches whose last
activity, as far as the control plane knows, is older than the limit.
"""

from twisted.internet import defer
from twisted.logger import Logger

from memcachier.control.repository import ControlPlaneError, UnknownCache
from memcachier.tx.periodic import PeriodicService


DAY = 24 * 60 * 60


class InactiveCacheReaper(PeriodicService):
    """
    Records cache activity and disables idle development caches.

    @ivar days: days of inactivity after which a development cache is
        disabled.
    @ivar interval: seconds between runs.
    """

    _log = Logger()

    def __init__(self, controlPlane, index, activity, reactor, days=30, interval=3600):
        """
        @param controlPlane: an L{AsyncControlPlane}.
        @param index: the L{ControlIndex} (which caches exist, their plan,
            whether they are enabled, their recorded activity).
        @param activity: a callable returning a L{dict} of cache id to the
            clock seconds at which this node last saw the cache active
            (the cache registry's C{activity}).
        @param reactor: the clock.
        """
        PeriodicService.__init__(self, interval, self._tick, reactor, "reaping inactive caches")
        self._controlPlane = controlPlane
        self._index = index
        self._activity = activity
        self._reactor = reactor
        self.days = days
        self._indexReady = defer.Deferred()

    def startService(self):
        """
        Run once the index is loaded, then every C{interval} seconds.
        """
        self._indexReady = defer.Deferred()

        def ready(result):
            if not self._indexReady.called:
                self._indexReady.callback(True)
            return result

        self._index.ready.addCallback(ready)
        super().startService()

    def stopService(self):
        """
        Stop the timer; a first run still waiting for the index never
        happens.
        """
        if not self._indexReady.called:
            self._indexReady.callback(False)
        return super().stopService()

    def _tick(self):
        """
        One run from the timer; the first waits for the index.
        """
        if self._indexReady.called:
            return self.reap()
        return self._indexReady.addCallback(lambda ready: self.reap() if ready else None)

    @defer.inlineCallbacks
    def reap(self):
        """
        Record this node's activity, then disable the development caches
        idle for longer than C{days}.

        @return: a L{Deferred} firing with the L{list} of ids of the caches
            disabled.
        """
        seen = dict(self._activity())
        if seen:
            yield self._controlPlane.touchActive(seen)
        limit = self._reactor.seconds() - self.days * DAY
        disabled = []
        for cache in self._index.caches():
            if not cache.enabled:
                continue
            try:
                development = self._index.planOf(cache.id).development
            except ControlPlaneError:
                continue
            if not development:
                continue
            lastActive = max(cache.last_active, cache.created_at, seen.get(cache.id, 0))
            if lastActive >= limit:
                continue
            try:
                yield self._controlPlane.setEnabled(cache.id, False)
            except UnknownCache:
                continue  # deleted meanwhile
            self._log.info(
                "disabled development cache {cacheId} {name!r}: inactive for "
                "more than {days} days",
                event="cache_disabled",
                cacheId=cache.id,
                name=cache.name,
                days=self.days,
            )
            disabled.append(cache.id)
        return disabled
