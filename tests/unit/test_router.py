"""
Tests for L{memcachier.web.router}: one router serves every path, and
each part's failures look like that part (the API's C{{"error"}}, Heroku's
C{{"message"}}, the dashboard's pages), through L{StubTreq}.
"""

from tests.unit.provisioningworld import HEROKU_AUTH, ProvisioningWorld
from tests.unit.test_dashboard import Site


def test_everyPartOnOneRouter():
    """
    The API, the provisioning API, Heroku's partner API and C{/metrics}
    answer through the one site.
    """
    world = ProvisioningWorld()
    assert world.call("GET", "/api/v2/openapi.json").code == 200
    assert world.heroku_("POST", body={"uuid": "u-1", "plan": "dev"}).code == 200
    assert world.own("POST", body={}).code == 201
    assert world.call("GET", "/metrics").code == 200


def test_errorsByPart():
    """
    An unknown path or a wrong method is answered in the style of the
    part whose prefix the path starts with; without a dashboard, any
    other path is the API's JSON 404.
    """
    world = ProvisioningWorld()
    api = world.call("GET", "/api/v2/nowhere")
    assert (api.code, api.json()) == (404, {"error": "no such API endpoint: /api/v2/nowhere"})
    heroku = world.call("GET", "/heroku/resources", auth=HEROKU_AUTH)
    assert (heroku.code, heroku.json()) == (405, {"message": "Method Not Allowed"})
    assert heroku.headers.getRawHeaders(b"Allow") == [b"POST"]
    refused = world.heroku_("POST", raw=b"[1]")
    assert (refused.code, refused.json()) == (400, {"message": "expected a JSON object as the request body"})
    elsewhere = world.call("GET", "/nowhere")
    assert (elsewhere.code, set(elsewhere.json())) == (404, {"error"})
    metrics = world.call("GET", "/metrics/x")
    assert (metrics.code, set(metrics.json())) == (404, {"error"})


def test_pagesErrorsAreHTML():
    """
    With the dashboard on, a path outside the API, Heroku and C{/metrics}
    is the dashboard's: its errors are pages; the API's stay JSON.
    """
    site = Site()
    page = site.request("GET", "/nowhere")
    assert page.code == 404
    assert page.headers.getRawHeaders(b"Content-Type") == [b"text/html; charset=utf-8"]
    api = site.request("GET", "/api/v2/nowhere")
    assert api.code == 404 and api.json() == {"error": "no such API endpoint: /api/v2/nowhere"}
