"""
Wiring a node into its cluster (called by L{memcachier.node.tap.buildService}
when C{[cluster] secret} is set).
"""

from twisted.internet.defer import Deferred, gatherResults

from memcachier.cluster.keyspace import Cluster, ClusterStore, PeerAuthenticator
from memcachier.cluster.membership import Membership
from memcachier.cluster.peer import PeerPool


class ClusterNode:
    """
    This node's membership, peer pool and cluster store.

    @ivar store: the L{ClusterStore} the registry must use.
    @ivar membership: the L{Membership} service.
    """

    def __init__(self, settings, engine, pool, index, store, reactor):
        self.settings = settings
        self.index = index
        self.membership = Membership(
            engine, pool, reactor, settings.node_name, settings.node_cluster,
            settings.clusters, settings.heartbeat_timeout,
        )
        self.peers = PeerPool(
            settings.cluster_secret, reactor, settings.peer_timeout, self.membership.suspect
        )
        self.cluster = Cluster(settings.node_name, self.membership, index, self.peers)
        self.store = ClusterStore(store, self.cluster)
        self.membership.addListener(self._membershipChanged)
        self.membership.controlChanged = index.refresh
        index.addListener(self.store.refresh)
        self.ready = Deferred()
        self.membership.addListener(self._firstView)

    def _firstView(self):
        if not self.ready.called:
            self.ready.callback(None)

    def _membershipChanged(self):
        self.store.refresh()
        live = set()
        for cluster in set(self.settings.clusters) | {r.cluster for r in self.membership.records}:
            live.update(self.membership.servers(cluster))
        self.peers.forget(live)

    def attach(self, registry):
        """
        Serve peers through C{registry} and report its usage in the
        heartbeat.
        """
        registry.cluster = self.cluster
        registry.peerAuthenticator = PeerAuthenticator(self.settings.cluster_secret)

        def usage():
            runtimes = registry.runtimes()
            return (
                sum(r.stats.curr_connections for r in runtimes),
                sum(r.keyspace.stats().get("bytes", 0) for r in runtimes),
                {r.cacheId: r.stats.curr_connections for r in runtimes},
            )

        self.membership.usage = usage


def bothReady(*deferreds):
    """
    A L{Deferred} firing once every one of C{deferreds} fired, without
    taking their results.
    """
    observers = []
    for d in deferreds:
        observer = Deferred()
        d.addBoth(lambda result, o=observer: (o.callback(None), result)[1])
        observers.append(observer)
    return gatherResults(observers)
