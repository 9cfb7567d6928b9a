"""
A node for the provisioning unit tests: a real control plane (in-memory
SQLite run synchronously), the real index and registry, the whole site
(API, provisioning API, /heroku, /metrics) through L{StubTreq}, and a fake
Heroku (id service and Platform API) reached through another L{StubTreq}.
No socket, no reactor.
"""

import json
import urllib.parse

from treq.testing import StubTreq
from twisted.internet.defer import maybeDeferred
from twisted.web.resource import Resource

from memcachier.node.settings import Settings
from memcachier.control import schema
from memcachier.control.index import ControlIndex
from memcachier.control.migrations import upgrade
from memcachier.control.model import DEFAULT_PLANS, Plan
from memcachier.control.repository import AsyncControlPlane, ControlPlane
from memcachier.runtime import CacheRegistry
from memcachier.stores.memory import MemoryStore
from memcachier.heroku.api import makeHeroku
from memcachier.web.api import CacheAPI
from memcachier.web.metrics import MetricsResource
from memcachier.web.provisioning import makeProvisioning
from memcachier.web.site import makeSite
from tests.unit.test_api import START, Response, SynchronousReactor, SynchronousThreadPool, result

PLANS = {p.slug: p for p in DEFAULT_PLANS}
PLANS["dev2"] = Plan("dev2", 50 * 1024 * 1024, 20, development=True)

HEROKU_AUTH = ("memcachier", "heroku-password")
OPERATOR = "operator-token"
SITE = "http://node.test"


class FakeHeroku(Resource):
    """
    Heroku's id service and Platform API, as a resource: answers from
    C{self.answers} (a list of (status, JSON) per path, the last one
    repeated), recording every request.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []
        self.answers = {}

    def render(self, request):
        body = request.content.read()
        path = request.path.decode()
        self.requests.append(
            (request.method.decode(), path, dict(request.requestHeaders.getAllRawHeaders()), body)
        )
        queue = self.answers.get(path, [(404, {"message": "no"})])
        status, value = queue.pop(0) if len(queue) > 1 else queue[0]
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(value).encode()

    def form(self, index):
        return {k: v[0] for k, v in urllib.parse.parse_qs(self.requests[index][3].decode()).items()}


class ProvisioningWorld:
    def __init__(self, inThread=None, node=None, **settings):
        """
        @param inThread: how C{/metrics} formats (at once if L{None}).
        @param node: the L{NodeCounters} of C{/metrics}, or L{None}.
        """
        self.reactor = SynchronousReactor()
        self.reactor.advance(START)
        defaults = dict(
            plans=PLANS,
            clusters={"prod": ("10.0.0.1:11211",), "devs": ("10.0.0.2:11211",)},
            cluster_kinds={"prod": "production", "devs": "development"},
            caches={"default_cluster": "prod"},
            heroku={
                "password": HEROKU_AUTH[1], "api_url": "https://api.heroku.test",
                "id_url": "https://id.heroku.test", "client_secret": "client-secret",
            },
            provisioning={"token": OPERATOR},
            metrics={"access": "open"},
        )
        self.settings = Settings().evolve(**defaults).evolve(**settings)
        engine = schema.makeEngine("sqlite://")
        upgrade(engine)
        self.cp = ControlPlane(
            engine, self.reactor, PLANS, clusters=self.settings.clusters,
            defaultCluster="prod",
        )
        pool = SynchronousThreadPool()
        self.acp = AsyncControlPlane(self.cp, pool, self.reactor)
        self.index = ControlIndex(self.acp, PLANS, self.reactor, defaultPlan="dev")
        self.store = MemoryStore(self.reactor)
        self.registry = CacheRegistry(self.store, self.index, self.settings, self.reactor)
        result(self.index.refresh())
        self.heroku = FakeHeroku()
        provisioning = makeProvisioning(self.acp, self.index, self.registry, self.settings)
        heroku, services = makeHeroku(
            self.cp, pool, self.index, provisioning.provisioner, self.settings, self.reactor,
            http=StubTreq(self.heroku),
        )
        self.services = services
        self.sync = services[0] if services else None
        self.api = CacheAPI(
            self.acp, self.index, self.registry, self.settings, self.reactor, [provisioning]
        )
        metrics = MetricsResource(
            self.index, self.registry, self.settings, self.reactor, inThread or self.inThread,
            node,
        )
        self.site = makeSite(self.api, self.settings, self.reactor, heroku=heroku, metrics=metrics)
        self.treq = StubTreq(self.site.resource)

    def inThread(self, f, *args):
        """
        "Off the reactor", at once: a unit test has no threads.
        """
        return maybeDeferred(f, *args)

    def call(self, method, path, auth=None, body=None, raw=None, headers=None):
        kwargs = {"headers": dict(headers or {})}
        if auth is not None:
            kwargs["auth"] = auth
        if body is not None:
            kwargs["data"] = json.dumps(body).encode()
            kwargs["headers"]["Content-Type"] = "application/json"
        elif raw is not None:
            kwargs["data"] = raw
        response = result(self.treq.request(method, SITE + path, **kwargs))
        content = result(self.treq.content(response))
        return Response(response.code, response.headers, content)

    def heroku_(self, method, path="", body=None, auth=HEROKU_AUTH, **kwargs):
        return self.call(method, "/heroku/resources" + path, auth=auth, body=body, **kwargs)

    def own(self, method, path="", body=None, token=OPERATOR, **kwargs):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.call(method, "/api/v2/caches" + path, body=body, headers=headers, **kwargs)

    def provision(self, uuid="uuid-1", plan="dev", **extra):
        body = {
            "uuid": uuid,
            "plan": plan,
            "name": "my-app",
            "region": "amazon-web-services::us-east-1",
            "oauth_grant": {
                "code": "grant-code",
                "expires_at": "2099-01-01T00:00:00-0800",
                "type": "authorization_code",
            },
            "unknown_field": [1, 2],
            **extra,
        }
        return self.heroku_("POST", body=body)
