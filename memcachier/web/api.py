# -*- test-case-name: tests.unit.test_api -*-
"""
The analytics REST API v2, MemCachier's paths and JSON, under
C{/api/v2/caches/<cache_id>/...}, with HTTP Basic auth by a credential of
that cache that has the API capability.

L{CacheAPI} serves info, credentials, management and commands, and the
OpenAPI document of everything at C{/api/v2/openapi.json}.

Adding a route group (insight, alerts, introspection, ...)
=========================================================

Write a class whose handlers carry L{memcachier.web.common.route}, with
paths relative to C{/api/v2/caches/<cacheId>}, and hand an instance to
L{CacheAPI} (C{groups=[...]}, see L{memcachier.web.site.makeSite})::

    from memcachier.web.common import NOT_FOUND, CacheAuth, jsonResponse, route

    class InsightAPI:
        def __init__(self, auth, sampler):
            self.auth = auth            # the CacheAPI's CacheAuth
            self.sampler = sampler

        @route("/insight/latency", ["GET"])
        def latency(self, request, cacheId):
            caller = self.auth.authorize(request, cacheId, unknownCache=NOT_FOUND)
            return jsonResponse(request, self.sampler.latency(caller.cacheId))

        def openapiPaths(self):
            return {"/insight/latency": {"get": {...}}}   # OpenAPI path items

Handlers may return L{Deferred}s or be C{async def}.  Refuse with
L{memcachier.web.common.ApiError} (rendered as JSON); read bodies with
C{readJSONObject}/C{requireNoBody} (size cap, strict fields).  Every
route must appear in C{openapiPaths()}: a unit test compares the routes
with the document, and the schemathesis test runs against all of it.

Why not Klein's class-level C{app = Klein()}: the copies Klein binds to
each instance share the class's URL map, so routes of other classes
cannot be added per instance; L{memcachier.web.router} builds the one
app of the site from the groups' declared routes instead.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger

from memcachier.analytics.events import FLUSH
from memcachier.control.repository import (
    CannotDeletePrimary,
    ControlPlaneError,
    LimitReached,
    UnknownCache,
    UnknownCredential,
)
from memcachier.web import openapi
from memcachier.web.common import (
    CACHE_PREFIX,
    NOT_FOUND,
    ApiError,
    CacheAuth,
    emptyResponse,
    jsonResponse,
    readJSONObject,
    requireNoBody,
    route,
    routesOf,
)
from memcachier.web.router import Route, groupRoutes, makeRouter
from memcachier.web.serialize import (
    CAPABILITIES,
    cacheInfoJSON,
    capabilitiesFromBody,
    capabilitiesJSON,
    credentialJSON,
    statsJSON,
)

OPENAPI_PATH = "/api/v2/openapi.json"


def wholeCacheStats(registry: Any, cacheId: int) -> "Deferred[Any]":
    """
    A cache's cumulative counters on every live node that serves it: what
    the API's C{stats} sums, and what the alert service judges (given to
    it as a callable by L{memcachier.node.build}).

    On a single node, this node's runtime of the cache (none if it has not
    served it: asking does not create it).  With several nodes, this
    node's and every live peer's, asked over the peer connections
    (C{ClusterKeyspace.peerStats}); a peer that fails or does not answer
    within C{[cluster] request_timeout} is left out and named in
    C{missing}.

    @param registry: the node's L{memcachier.runtime.CacheRegistry}.
    @return: a L{Deferred} firing with a 2-tuple: (node name, L{dict} of
        counters) pairs, this node first, and the L{list} of the names of
        the live nodes that did not answer.
    @raise KeyError: (in the L{Deferred}) the cache does not exist.
    """
    cluster = registry.cluster
    if cluster is None:
        runtime = registry.existing(cacheId)
        readings = [] if runtime is None else [(registry.settings.node.name, runtime.statsDict())]
        return succeed((readings, []))
    try:
        runtime = registry.runtime(cacheId)
    except KeyError:
        return fail()
    own = [(cluster.name, runtime.statsDict())]
    live = [node for node in cluster.liveOf(cacheId) if node != cluster.name]

    def gathered(answers):
        answered = {node for node, _ in answers}
        return own + list(answers), [node for node in live if node not in answered]

    return runtime.keyspace.peerStats().addCallback(gathered)


def _controlPlaneError(failure):
    """
    Turn the control plane's refusals into API errors.
    """
    failure.trap(ControlPlaneError)
    value = failure.value
    if failure.check(UnknownCache, UnknownCredential):
        raise ApiError(404, str(value))
    if failure.check(CannotDeletePrimary, LimitReached):
        raise ApiError(409, str(value))
    raise ApiError(400, str(value))


class CacheAPI:
    """
    The v2 API of a node.

    Reads come from the in-memory control index; writes go through the
    L{AsyncControlPlane}, whose Deferreds fire after the index has been
    refreshed, so a change is in force on the memcache port before the
    API answers.  Cache-wide commands (flush, reset_stats) act on this
    node's runtime of the cache, whose cluster keyspace carries them to
    every live node when this node is one of several.

    @ivar app: the L{Klein} app of every route (this class's and the
        groups').
    @ivar auth: the L{CacheAuth} every group shares.
    """

    _log = Logger()

    def __init__(
        self, controlPlane: Any, index: Any, registry: Any, settings: Any, reactor: Any,
        groups: Sequence[Any] = (),
    ) -> None:
        """
        @param controlPlane: an L{memcachier.control.repository.AsyncControlPlane}.
        @param index: the L{memcachier.control.index.ControlIndex}.
        @param registry: the node's L{memcachier.runtime.CacheRegistry}.
        @param settings: L{memcachier.node.settings.Settings} (clusters, node name).
        @param reactor: the clock (C{seconds()}) for C{stats}' C{time}.
        @param groups: more route groups (see the module docstring).
        """
        self.controlPlane = controlPlane
        self.index = index
        self.registry = registry
        self.settings = settings
        self.reactor = reactor
        self.auth = CacheAuth(index)
        self.groups = (self,) + tuple(groups)
        self._document = None

    def endpoints(self) -> List[Route]:
        """
        Every route of the API and its groups, for
        L{memcachier.web.router.makeRouter}.
        """
        found: List[Route] = [(OPENAPI_PATH, ("GET",), self.openapiDocument, False)]
        for group in self.groups:
            found.extend(groupRoutes(group, CACHE_PREFIX))
        return found

    def resource(self) -> Any:
        """
        @return: the L{IResource} of the API alone (a router of this one
            part, for tests and tools).
        """
        return makeRouter(self).resource()

    # -- helpers

    def _servers(self, cluster):
        if self.registry.cluster is not None:
            # the live nodes, in MEMCACHIER_SERVERS order
            return list(self.registry.cluster.membership.servers(cluster))
        return list(self.settings.clusters.get(cluster, (self.settings.node.name,)))

    def switchTarget(self, cluster: str) -> Optional[str]:
        """
        The cluster a cache on C{cluster} would move to: the next one of the
        same kind in name order (wrapping around).

        @return: its name, or L{None} if there is no other of that kind.
        """
        kind = self.settings.clusterKind(cluster)
        others = sorted(
            name
            for name in self.settings.clusters
            if name != cluster and self.settings.clusterKind(name) == kind
        )
        if not others:
            return None
        later = [name for name in others if name > cluster]
        return (later or others)[0]

    def _credentialOf(self, caller, username):
        credential = self.index.credential(username)
        if credential is None or credential.cache_id != caller.cacheId:
            raise ApiError(404, f"no credential {username!r} in cache {caller.cacheId}")
        return credential

    def _requireManagement(self, caller):
        if self.index.planOf(caller.cacheId).development:
            raise ApiError(403, "development caches cannot manage credentials")

    # -- info

    @route("/info", ["GET"])
    def info(self, request: Any, cacheId: str) -> bytes:
        caller = self.auth.authorize(request, cacheId)
        cache = caller.cache
        body = cacheInfoJSON(
            cache,
            self.index.planOf(caller.cacheId),
            self.index.credentials(caller.cacheId),
            self._servers(cache.cluster),
            self.switchTarget(cache.cluster) is not None,
        )
        return jsonResponse(request, body)

    # -- credentials

    @route("/credentials", ["GET"])
    def listCredentials(self, request: Any, cacheId: str) -> bytes:
        caller = self.auth.authorize(request, cacheId)
        return jsonResponse(
            request, [credentialJSON(c) for c in self.index.credentials(caller.cacheId)]
        )

    @route("/credentials", ["POST"])
    async def createCredential(self, request: Any, cacheId: str) -> bytes:
        caller = self.auth.authorize(request, cacheId)
        self._requireManagement(caller)
        body = readJSONObject(request, CAPABILITIES, required=False, booleans=True)
        credential = await self.controlPlane.createCredential(
            caller.cacheId, **capabilitiesFromBody(body, omitted=True)
        ).addErrback(_controlPlaneError)
        return jsonResponse(request, credentialJSON(credential), 201)

    @route("/credentials/<username>", ["PATCH"])
    async def updateCredential(self, request: Any, cacheId: str, username: str) -> bytes:
        caller = self.auth.authorize(request, cacheId)
        self._requireManagement(caller)
        body = readJSONObject(request, CAPABILITIES, booleans=True)
        self._credentialOf(caller, username)
        credential = await self.controlPlane.updateCredential(
            username, **capabilitiesFromBody(body, omitted=False)
        ).addErrback(_controlPlaneError)
        return jsonResponse(request, capabilitiesJSON(credential))

    @route("/credentials/<username>", ["DELETE"])
    async def deleteCredential(self, request: Any, cacheId: str, username: str) -> bytes:
        caller = self.auth.authorize(request, cacheId)
        self._requireManagement(caller)
        requireNoBody(request)
        self._credentialOf(caller, username)
        await self.controlPlane.deleteCredential(username).addErrback(_controlPlaneError)
        return emptyResponse(request, 200)

    @route("/credentials/primary/<username>", ["POST"])
    async def promoteCredential(self, request: Any, cacheId: str, username: str) -> bytes:
        caller = self.auth.authorize(request, cacheId)
        requireNoBody(request)
        self._credentialOf(caller, username)
        credential = await self.controlPlane.promoteCredential(username).addErrback(
            _controlPlaneError
        )
        return jsonResponse(request, credentialJSON(credential))

    # -- management

    @route("/rotate_sso", ["POST"])
    async def rotateSso(self, request: Any, cacheId: str) -> bytes:
        caller = self.auth.authorize(request, cacheId)
        requireNoBody(request)
        secret = await self.controlPlane.rotateSso(caller.cacheId).addErrback(
            _controlPlaneError
        )
        return jsonResponse(request, secret)

    @route("/enable_cache", ["POST"])
    async def enableCache(self, request: Any, cacheId: str) -> bytes:
        caller = self.auth.authorize(request, cacheId)
        requireNoBody(request)
        await self.controlPlane.setEnabled(caller.cacheId, True).addErrback(
            _controlPlaneError
        )
        return emptyResponse(request, 200)

    @route("/switch_cluster", ["POST"])
    async def switchCluster(self, request: Any, cacheId: str) -> bytes:
        caller = self.auth.authorize(request, cacheId)
        requireNoBody(request)
        current = caller.cache.cluster
        target = self.switchTarget(current)
        if target is None:
            kind = self.settings.clusterKind(current)
            raise ApiError(
                409, f"cannot switch: no other {kind} cluster than {current!r}"
            )
        if self.registry.cluster is not None:
            # several nodes: empty the old cluster's nodes while the cache
            # is still placed on them
            await maybeDeferred(self.registry.runtime(caller.cacheId).keyspace.flush, 0)
        cache = await self.controlPlane.setCluster(caller.cacheId, target).addErrback(
            _controlPlaneError
        )
        # The data does not follow the cache to its new servers.  On one
        # node that serves every cluster, what this node holds must go.
        runtime = self.registry.existing(caller.cacheId)
        if runtime is not None:
            await maybeDeferred(runtime.keyspace.flush, 0)
        self._log.info(
            "cache {cacheId} switched from cluster {old} to {new}",
            cacheId=caller.cacheId,
            old=current,
            new=cache.cluster,
        )
        return jsonResponse(request, cache.cluster)

    # -- commands

    @route("/flush", ["POST"])
    async def flush(self, request: Any, cacheId: str) -> bytes:
        """
        C{flush_all} through the API: the same capability, the same
        C{cmd_flush} count and the same recent-log line as on the
        memcache port.
        """
        caller = self.auth.authorize(request, cacheId, unknownCache=NOT_FOUND, capability="flush")
        requireNoBody(request)
        runtime = self.registry.runtime(caller.cacheId)
        runtime.stats.cmd_flush += 1
        introspection = self.registry.introspection
        if introspection is not None:
            introspection.tapFor(runtime)((FLUSH, b"", 0))
        await maybeDeferred(runtime.keyspace.flush, 0)
        return emptyResponse(request, 204)

    @route("/reset_stats", ["POST"])
    async def resetStats(self, request: Any, cacheId: str) -> bytes:
        caller = self.auth.authorize(request, cacheId, unknownCache=NOT_FOUND)
        requireNoBody(request)
        runtime = self.registry.runtime(caller.cacheId)
        await maybeDeferred(runtime.resetStats)
        return emptyResponse(request, 204)

    @route("/stats", ["GET"])
    async def stats(self, request: Any, cacheId: str) -> bytes:
        caller = self.auth.authorize(request, cacheId, unknownCache=NOT_FOUND)
        readings, _ = await wholeCacheStats(self.registry, caller.cacheId)
        body = statsJSON(
            [counters for _, counters in readings], self.reactor.seconds(),
            self.index.planOf(caller.cacheId).memory,
        )
        return jsonResponse(request, body)

    # -- the document

    def openapiPaths(self) -> Dict[str, Any]:
        return openapi.corePaths()

    def openapi(self) -> Dict[str, Any]:
        """
        The OpenAPI 3 document of every route of every group.

        @rtype: L{dict}
        """
        if self._document is None:
            paths = {}
            for group in self.groups:
                prefix = getattr(group, "openapiPrefix", "/api/v2/caches/{cacheId}")
                for path, item in group.openapiPaths().items():
                    paths[prefix + path] = item
            self._document = openapi.document(paths)
        return self._document

    def openapiDocument(self, request: Any) -> bytes:
        return jsonResponse(request, self.openapi())

    def routes(self) -> List[Tuple[str, Sequence[str]]]:
        """
        Every route, as (absolute werkzeug path, methods), for tests and
        documentation.
        """
        found = [(OPENAPI_PATH, ("GET",))]
        for group in self.groups:
            prefix = getattr(group, "routePrefix", "/api/v2/caches/<cacheId>")
            for path, methods, _ in routesOf(group):
                found.append((prefix + path, methods))
        return found
