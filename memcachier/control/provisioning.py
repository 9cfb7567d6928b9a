# -*- test-case-name: tests.unit.test_provisioning -*-
"""
Provisioning: the rules every provisioning door shares (Heroku's partner
API in L{memcachier.heroku}, our own provisioning API).

L{Provisioner} holds the rules, on the reactor: a cache lives on a
cluster of its plan's kind (development plans on development clusters),
and a plan change between a development and a production plan moves the
cache to the other kind and empties it, as MemCachier does; any other
plan change keeps the data.
"""

from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from memcachier.control.model import Plan
from memcachier.control.repository import ControlPlaneError, UnknownCache


def clusterForPlan(settings: Any, plan: Plan) -> str:
    """
    The cluster a cache on C{plan} goes to: the default cluster if it is
    of the plan's kind, else the first of that kind by name; the default
    cluster when none is of that kind (one node serving everything).

    @type settings: L{memcachier.node.settings.Settings}
    @type plan: L{memcachier.control.model.Plan}
    @rtype: L{str}
    """
    kind = "development" if plan.development else "production"
    default = settings.caches.default_cluster
    if settings.clusterKind(default) == kind:
        return default
    ofKind = sorted(n for n in settings.clusters if settings.clusterKind(n) == kind)
    return ofKind[0] if ofKind else default


class ClusterUnavailable(ControlPlaneError):
    """
    No configured cluster can take a cache of this kind.
    """


class Provisioner:
    """
    The rules every provisioning door shares, on the reactor.
    """

    _log = Logger()

    def __init__(self, controlPlane: Any, index: Any, registry: Any, settings: Any) -> None:
        """
        @param controlPlane: the L{memcachier.control.repository.AsyncControlPlane}.
        @param index: the L{memcachier.control.index.ControlIndex}.
        @param registry: the L{memcachier.runtime.CacheRegistry} (to empty
            a cache whose data does not follow it).
        @param settings: the L{memcachier.node.settings.Settings}.
        """
        self.controlPlane = controlPlane
        self.index = index
        self.registry = registry
        self.settings = settings

    def clusterFor(self, plan: Plan) -> str:
        """
        The cluster a cache on C{plan} goes to: the default cluster if it
        is of the plan's kind, else the first of that kind by name; the
        default cluster when none is of that kind (one node serving
        everything).

        @type plan: L{memcachier.control.model.Plan}
        @rtype: L{str}
        """
        return clusterForPlan(self.settings, plan)

    def servers(self, cache: Any) -> List[str]:
        """
        @return: a cache's C{MEMCACHIER_SERVERS}, in order.
        """
        return list(self.settings.clusters.get(cache.cluster, (self.settings.node.name,)))

    def configVars(self, cacheId: int) -> Dict[str, str]:
        """
        The three config vars of a cache, from the in-memory index.

        @rtype: L{dict}
        @raise UnknownCache: no such cache.
        """
        cache = self.index.cache(cacheId)
        credentials = self.index.credentials(cacheId)
        if cache is None or not credentials:
            raise UnknownCache(cacheId)
        primary = credentials[0]
        return {
            "MEMCACHIER_SERVERS": ",".join(self.servers(cache)),
            "MEMCACHIER_USERNAME": primary.username,
            "MEMCACHIER_PASSWORD": primary.password,
        }

    def createCache(
        self, slug: str, label: Optional[str] = None, name: Optional[str] = None
    ) -> Deferred[Any]:
        """
        @return: a L{Deferred} of (L{Cache}, primary L{Credential}).
        @raise memcachier.control.repository.UnknownPlan: (synchronously).
        """
        plan = self.index.plan(slug)
        return self.controlPlane.createCache(
            name=name, plan=slug, cluster=self.clusterFor(plan), label=label
        )

    @defer.inlineCallbacks
    def changePlan(self, cacheId: int, slug: str) -> Deferred[Tuple[Any, bool]]:
        """
        Move a cache to plan C{slug}.  Between a development and a
        production plan the cache moves to a cluster of the new plan's
        kind and is emptied; otherwise its data is kept.

        @return: a L{Deferred} of a 2-tuple: the updated L{Cache} and
            whether the data was kept.
        @raise UnknownCache, memcachier.control.repository.UnknownPlan:
            (through the Deferred).
        """
        target = self.index.plan(slug)
        cache = self.index.cache(cacheId)
        if cache is None:
            raise UnknownCache(cacheId)
        current = self.index.planOf(cacheId)
        kept = current.development == target.development
        if not kept:
            cluster = self.clusterFor(target)
            if cluster != cache.cluster:
                if self.registry.cluster is not None:
                    # several nodes: empty the old cluster's nodes while the
                    # cache is still placed on them (each node also empties
                    # its share when it sees the move: CacheRegistry._moved)
                    yield defer.maybeDeferred(self.registry.runtime(cacheId).keyspace.flush, 0)
                yield self.controlPlane.setCluster(cacheId, cluster)
        cache = yield self.controlPlane.setPlan(cacheId, slug)
        if not kept:
            runtime = self.registry.existing(cacheId)
            if runtime is not None:
                yield defer.maybeDeferred(runtime.keyspace.flush, 0)
            self._log.info(
                "cache {cacheId} moved from plan {old} to {new} on cluster {cluster}; emptied",
                cacheId=cacheId,
                old=current.slug,
                new=slug,
                cluster=cache.cluster,
            )
        return cache, kept
