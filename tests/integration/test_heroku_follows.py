"""
Heroku follows the cache: when a Heroku-provisioned cache moves to
another cluster (C{switch_cluster} through the API, an operator's plan
change through C{memcachier-admin}), the real node sends the app's new
C{MEMCACHIER_SERVERS} to a real HTTP stand-in for Heroku's Platform API,
recorded and retried like a promotion, and a newer move supersedes a
push still failing.
"""

import json
import uuid as uuidlib

import requests

from tests.integration.herokustandin import HerokuStandIn
from tests.integration.test_provisioning import (
    CLIENT_SECRET,
    GRANT,
    HEROKU_PASSWORD,
    cacheOf,
    heroku,
    provisionBody,
    pushesOf,
    resourceCacheId,
    waitFor,
)


def followsConfig(standIn):
    """
    Two development clusters and a production one, each named by other
    servers of the one node, so each move changes C{MEMCACHIER_SERVERS}.
    """
    return (
        '[clusters.prod]\nservers = ["127.0.0.1:{memcache_port}", "localhost:{memcache_port}"]\n'
        'kind = "production"\n'
        '[clusters.devs]\nservers = ["127.0.0.1:{memcache_port}"]\nkind = "development"\n'
        '[clusters.devs2]\nservers = ["localhost:{memcache_port}"]\nkind = "development"\n'
        '[caches]\ndefault_cluster = "prod"\n'
        "[heroku]\n"
        f'password = "{HEROKU_PASSWORD}"\nsso_salt = "salty"\n'
        f'api_url = "{standIn.url}"\nid_url = "{standIn.url}"\n'
        f'client_secret = "{CLIENT_SECRET}"\n'
    )


def serversSent(standIn, uuid):
    """
    C{MEMCACHIER_SERVERS} of every config PATCH the stand-in got for
    C{uuid}, answered or refused, in order.
    """
    sent = []
    for request in standIn.seen("PATCH", f"/addons/{uuid}/config"):
        config = {e["name"]: e["value"] for e in json.loads(request[3])["config"]}
        sent.append((config["MEMCACHIER_SERVERS"], request[4]))
    return sent


def test_herokuFollowsClusterMoves(memcachier_server_factory):
    standIn = HerokuStandIn(CLIENT_SECRET, GRANT).start()
    try:
        s = memcachier_server_factory(config=followsConfig(standIn), create_cache=False)
        uuid = str(uuidlib.uuid4())
        answer = heroku(s, "POST", json=provisionBody(uuid))
        assert answer.status_code == 200, answer.text
        config = answer.json()["config"]
        cacheId = resourceCacheId(s, uuid)
        assert cacheOf(s, cacheId)["cluster"] == "devs"
        assert config["MEMCACHIER_SERVERS"] == f"127.0.0.1:{s.port}"
        waitFor(lambda: standIn.tokensIssued >= 2, what="the grant exchange and refresh")
        assert standIn.configs.get(uuid) is None  # nothing moved yet

        # switch_cluster through the API: the new servers go to Heroku.
        api = requests.Session()
        api.auth = (config["MEMCACHIER_USERNAME"], config["MEMCACHIER_PASSWORD"])
        base = f"http://127.0.0.1:{s.web_port}/api/v2/caches/{cacheId}"
        switched = api.post(f"{base}/switch_cluster", timeout=10)
        assert switched.status_code == 200, switched.text
        assert cacheOf(s, cacheId)["cluster"] == "devs2"
        configs = waitFor(lambda: standIn.configs.get(uuid), what="the move's PATCH")
        assert configs == [dict(config, MEMCACHIER_SERVERS=f"localhost:{s.port}")]
        waitFor(lambda: [p["state"] for p in pushesOf(s, uuid)] == ["done"], what="its record")

        # A move back while Heroku fails: retried with backoff...
        standIn.failConfigPatches = 10_000
        assert api.post(f"{base}/switch_cluster", timeout=10).status_code == 200
        waitFor(
            lambda: len([x for x in serversSent(standIn, uuid) if x[1] == 500]) >= 2,
            what="two failed attempts",
        )
        [failing] = [p for p in pushesOf(s, uuid) if p["state"] == "pending"]
        assert failing["attempts"] >= 2 and failing["last_status"] == 500

        # ...until an operator's plan change moves the cache again
        # (memcachier-admin, another process): the failing push is
        # superseded, and the newest servers are the ones Heroku gets.
        s.admin("cache", "set-plan", str(cacheId), "100")
        prod = f"127.0.0.1:{s.port},localhost:{s.port}"
        waitFor(lambda: (prod, 500) in serversSent(standIn, uuid), what="the newest push")
        standIn.failConfigPatches = 0
        waitFor(lambda: standIn.configs[uuid][-1]["MEMCACHIER_SERVERS"] == prod,
                what="the newest servers answered")
        pushes = waitFor(
            lambda: (lambda p: p[-1]["state"] == "done" and p)(pushesOf(s, uuid)),
            what="the newest push's record",
        )
        assert [p["state"] for p in pushes] == ["done", "superseded", "done"]
        sent = [servers for servers, status in serversSent(standIn, uuid)]
        # the superseded push never got through, and nothing went after the newest
        assert [c["MEMCACHIER_SERVERS"] for c in standIn.configs[uuid]] == [
            f"localhost:{s.port}", prod,
        ]
        assert sent[-1] == prod
        assert all(c["MEMCACHIER_USERNAME"] == config["MEMCACHIER_USERNAME"]
                   for c in standIn.configs[uuid])
    finally:
        standIn.stop()
