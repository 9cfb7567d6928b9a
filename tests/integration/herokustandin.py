"""
A real HTTP server standing in for Heroku's identity service
(C{POST /oauth/token}) and Platform API (C{PATCH /addons/<uuid>/config}),
in a thread of the test process.  It checks what a real Heroku checks
(client secret, grant code, refresh token, bearer token, media type,
JSON shape) and can be told to answer 500 a number of times first.
"""

import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HerokuStandIn:
    """
    @ivar requests: every request, as (method, path, headers dict, body
        bytes, status answered), in arrival order.
    @ivar failConfigPatches: how many config PATCHes still get a 500.
    @ivar answerPatches: a L{threading.Event}; while it is clear, config
        PATCHes are held unanswered (to show that nothing waits on them).
    """

    def __init__(self, clientSecret, grantCode, firstExpiresIn=601):
        self.clientSecret = clientSecret
        self.grantCode = grantCode
        self.firstExpiresIn = firstExpiresIn
        self.requests = []
        self.failConfigPatches = 0
        self.accessToken = None
        self.refreshToken = None
        self.tokensIssued = 0
        self.configs = {}
        #: cleared: config PATCHes wait (up to 30 s) before being answered
        self.answerPatches = threading.Event()
        self.answerPatches.set()
        self.patchesArrived = threading.Event()
        self._lock = threading.Lock()
        standIn = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                standIn._handle(self)

            def do_PATCH(self):
                standIn._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, handler, status, value):
        body = json.dumps(value).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        return status

    def _handle(self, handler):
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        if handler.command == "PATCH":
            self.patchesArrived.set()
            self.answerPatches.wait(30)
        with self._lock:
            status = self._route(handler, body)
            self.requests.append(
                (handler.command, handler.path, dict(handler.headers), body, status)
            )

    def _route(self, handler, body):
        if handler.command == "POST" and handler.path == "/oauth/token":
            return self._token(handler, body)
        match = re.fullmatch(r"/addons/([^/]+)/config", handler.path)
        if handler.command == "PATCH" and match:
            return self._config(handler, match.group(1), body)
        return self._answer(handler, 404, {"id": "not_found", "message": "no such path"})

    def _token(self, handler, body):
        form = urllib.parse.parse_qs(body.decode())
        form = {k: v[0] for k, v in form.items()}
        if form.get("client_secret") != self.clientSecret:
            return self._answer(handler, 401, {"error": "invalid_client"})
        if form.get("grant_type") == "authorization_code":
            if form.get("code") != self.grantCode:
                return self._answer(handler, 400, {"error": "invalid_grant"})
            expiresIn = self.firstExpiresIn
        elif form.get("grant_type") == "refresh_token":
            if form.get("refresh_token") != self.refreshToken:
                return self._answer(handler, 400, {"error": "invalid_grant"})
            expiresIn = 28800
        else:
            return self._answer(handler, 400, {"error": "unsupported_grant_type"})
        self.tokensIssued += 1
        self.accessToken = f"access-{self.tokensIssued}"
        self.refreshToken = f"refresh-{self.tokensIssued}"
        return self._answer(
            handler,
            200,
            {
                "access_token": self.accessToken,
                "refresh_token": self.refreshToken,
                "expires_in": expiresIn,
                "token_type": "Bearer",
            },
        )

    def _config(self, handler, uuid, body):
        if handler.headers.get("Authorization") != f"Bearer {self.accessToken}":
            return self._answer(handler, 401, {"id": "unauthorized", "message": "bad token"})
        if handler.headers.get("Accept") != "application/vnd.heroku+json; version=3":
            return self._answer(handler, 406, {"id": "bad_accept", "message": "Accept"})
        try:
            value = json.loads(body)
            entries = value["config"]
            config = {e["name"]: e["value"] for e in entries}
            assert all(set(e) == {"name", "value"} for e in entries)
            assert all(isinstance(v, str) for v in config.values())
        except Exception:
            return self._answer(handler, 422, {"id": "invalid_params", "message": "bad body"})
        if self.failConfigPatches > 0:
            self.failConfigPatches -= 1
            return self._answer(handler, 500, {"id": "internal", "message": "try again"})
        self.configs.setdefault(uuid, []).append(config)
        return self._answer(handler, 200, entries)

    def seen(self, method, path):
        """
        @return: the requests to C{method path} so far.
        """
        with self._lock:
            return [r for r in self.requests if r[0] == method and r[1] == path]
