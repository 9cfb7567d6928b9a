# -*- test-case-name: tests.unit.test_heroku -*-
"""
Talking back to Heroku, in the background: the oauth grant of each
provisioned resource is exchanged for tokens (and the tokens refreshed
before they expire), and when a Heroku-provisioned cache gets a new
primary credential or moves to another cluster, its config vars are sent
to Heroku's Platform API so the app's C{MEMCACHIER_USERNAME},
C{MEMCACHIER_PASSWORD} and C{MEMCACHIER_SERVERS} follow.

Nothing here ever blocks a request: provisioning and promotion answer at
once, and L{HerokuSync} catches up on the reactor clock.  Promotions are
found by comparing each resource's cache's primary credential (from the
in-memory control index) with the one Heroku was last given, so a
promotion made through the API, the dashboard or C{memcachier-admin} (in
another process) is seen alike.  Each push is a row of
C{heroku_config_pushes}: attempts, last status and error are recorded,
and a failed push is retried with exponential backoff until it succeeds
(or a newer promotion supersedes it).

A move to another cluster is queued by the control plane itself, in the
move's transaction (L{memcachier.control.repository.ControlPlane.setCluster}),
as a push of the same kind: it supersedes, and is superseded by, any
other.  A push carries every config var, the servers read from this
node's control index, so it waits until the index shows the cluster the
database has (another node's move reaches the index within a poll).
"""

import datetime
import json
from typing import Any, Dict, Generator, Optional, Tuple

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from memcachier.heroku.records import ConfigPush, HerokuResource
from memcachier.tx.periodic import PeriodicService

#: Heroku's Platform API media type.
PLATFORM_ACCEPT = b"application/vnd.heroku+json; version=3"


class PlatformError(Exception):
    """
    Heroku answered with an error (or could not be reached: C{code} is
    L{None}).
    """

    def __init__(self, code: Optional[int], message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"HTTP {self.code}: {self.message}" if self.code else self.message


def parseExpiry(text: object) -> Optional[float]:
    """
    Heroku's C{oauth_grant.expires_at} (ISO 8601, e.g.
    C{2016-03-03T18:01:31-0800}) as POSIX seconds, or L{None}.
    """
    if not isinstance(text, str):
        return None
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


class HerokuPlatform:
    """
    Heroku's identity service (oauth tokens) and Platform API (config
    vars), over an injected treq L{treq.client.HTTPClient}.
    """

    def __init__(self, http: Any, settings: Any, clock: IReactorTime, timeout: float = 30.0) -> None:
        """
        @param http: a treq C{HTTPClient} (or C{StubTreq} in tests).
        @param settings: L{memcachier.node.settings.Settings} (C{heroku.id_url},
            C{heroku.api_url}, C{heroku.client_secret}).
        @param clock: the reactor, for request timeouts.
        """
        self.http = http
        self.settings = settings
        self.clock = clock
        self.timeout = timeout

    @defer.inlineCallbacks
    def _json(self, response: Any) -> Generator[Deferred[Any], Any, Any]:
        body = yield response.content()
        if not 200 <= response.code < 300:
            raise PlatformError(response.code, body[:300].decode("utf-8", "replace"))
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise PlatformError(response.code, f"not JSON: {e}")

    @defer.inlineCallbacks
    def _token(
        self, form: Dict[str, str]
    ) -> Generator[Deferred[Any], Any, Dict[str, Any]]:
        url = self.settings.heroku.id_url + "/oauth/token"
        form = dict(form, client_secret=self.settings.heroku.client_secret)
        try:
            response = yield self.http.request(
                "POST", url, data=form, headers={b"Accept": [b"application/json"]},
                timeout=self.timeout, reactor=self.clock,
            )
        except Exception as e:
            raise PlatformError(None, f"POST {url}: {e}")
        value = yield self._json(response)
        if not isinstance(value, dict) or not isinstance(value.get("access_token"), str):
            raise PlatformError(response.code, "no access_token in the answer")
        return value

    def exchangeGrant(self, code: str) -> Deferred[Dict[str, Any]]:
        """
        Trade an oauth grant code for tokens.

        @return: a L{Deferred} of the token answer (C{access_token},
            C{refresh_token}, C{expires_in}, ...).
        """
        return self._token({"grant_type": "authorization_code", "code": code})

    def refresh(self, refreshToken: str) -> Deferred[Dict[str, Any]]:
        """
        @return: a L{Deferred} of a fresh token answer.
        """
        return self._token({"grant_type": "refresh_token", "refresh_token": refreshToken})

    @defer.inlineCallbacks
    def updateConfig(
        self, uuid: str, accessToken: str, config: Dict[str, str]
    ) -> Generator[Deferred[Any], Any, int]:
        """
        C{PATCH {api_url}/addons/<uuid>/config} with the config vars.

        @param config: L{dict} of name to value.
        @return: a L{Deferred} of the HTTP status (2xx).
        @raise PlatformError: any other answer, or no answer.
        """
        url = f"{self.settings.heroku.api_url}/addons/{uuid}/config"
        body = {"config": [{"name": k, "value": v} for k, v in sorted(config.items())]}
        try:
            response = yield self.http.request(
                "PATCH",
                url,
                data=json.dumps(body).encode("utf-8"),
                headers={
                    b"Authorization": [b"Bearer " + accessToken.encode("utf-8")],
                    b"Accept": [PLATFORM_ACCEPT],
                    b"Content-Type": [b"application/json"],
                },
                timeout=self.timeout,
                reactor=self.clock,
            )
        except Exception as e:
            raise PlatformError(None, f"PATCH {url}: {e}")
        if 200 <= response.code < 300:
            yield response.content()  # read it, so the connection is reused
        else:
            yield self._json(response)  # raises PlatformError with the body
        return response.code


class HerokuSync(PeriodicService):
    """
    Exchanges grants, refreshes tokens and pushes config vars, one pass at
    a time on the reactor clock (every C{interval} seconds, or at once
    after L{kick}).

    @ivar refreshMargin: seconds before expiry at which a token is
        refreshed.
    """

    _log = Logger()

    def __init__(
        self, records: Any, index: Any, provisioner: Any, platform: HerokuPlatform,
        clock: IReactorTime, interval: float = 1.0, refreshMargin: float = 600.0,
        firstRetry: float = 1.0, maxRetry: float = 300.0,
    ) -> None:
        """
        @param records: an L{memcachier.heroku.records.AsyncHerokuRecords}.
        @param index: the control index (C{credentials}, C{credential},
            C{addListener}).
        @param provisioner: the L{Provisioner} (config vars of a cache).
        @param platform: a L{HerokuPlatform}.
        @param clock: the reactor.
        """
        PeriodicService.__init__(self, interval, self.tick, clock, "heroku sync")
        self.records = records
        self.index = index
        self.provisioner = provisioner
        self.platform = platform
        self.refreshMargin = refreshMargin
        self.firstRetry = firstRetry
        self.maxRetry = maxRetry
        self._running: Optional[Deferred[Any]] = None
        self._again = False
        self._tokenRetries: Dict[int, Tuple[int, float]] = {}
        self._kickCall: Optional[IDelayedCall] = None

    def backoff(self, attempts: int) -> float:
        """
        Seconds to wait after C{attempts} failed attempts: doubling from
        C{firstRetry}, at most C{maxRetry}.
        """
        return min(self.firstRetry * 2 ** max(attempts - 1, 0), self.maxRetry)

    def startService(self) -> None:
        self.index.addListener(self.kick)
        super().startService()

    def stopService(self) -> Optional[Deferred[Any]]:
        """
        Stop the timer and the listener.

        @return: a L{Deferred} firing once the pass under way is over.
        """
        stopped = super().stopService()
        self.index.removeListener(self.kick)
        if self._kickCall is not None and self._kickCall.active():
            self._kickCall.cancel()
        self._kickCall = None
        waits = [d for d in (stopped, self._running) if d is not None]
        return defer.gatherResults(waits) if waits else None

    def kick(self) -> None:
        """
        Run a pass soon (a provisioning, a promotion); never waits for it.
        """
        if not self.running:
            return
        if self._kickCall is None or not self._kickCall.active():
            self._kickCall = self.clock.callLater(0, self.tick)

    def tick(self) -> Deferred[Any]:
        """
        One pass; a pass asked for while one runs runs right after it.

        @return: a L{Deferred} that fires when the pass is over (its
            failures are logged, never raised).
        """
        if not self.running:
            return defer.succeed(None)
        if self._running is not None:
            self._again = True
            return self._running

        def done(result: object) -> Optional[Deferred[Any]]:
            self._running = None
            if self._again and self.running:
                self._again = False
                return self.tick()
            return None

        def failed(failure: Failure) -> None:
            self._log.failure("heroku sync pass failed", failure)

        self._running = defer.ensureDeferred(self._pass())
        self._running.addErrback(failed)
        self._running.addBoth(done)
        return self._running

    async def _pass(self) -> None:
        resources = await self.records.herokuResources()
        for resource in resources:
            await self._notePromotion(resource)
        for resource in resources:
            await self._keepTokens(resource)
        for push, resource in await self.records.duePushes():
            await self._push(push, resource)

    async def _notePromotion(self, resource: HerokuResource) -> None:
        if resource.cache_id is None:
            return
        credentials = self.index.credentials(resource.cache_id)
        if credentials and credentials[0].username != resource.config_username:
            await self.records.recordPromotion(resource.id, credentials[0].username)

    async def _keepTokens(self, resource: HerokuResource) -> None:
        now = self.clock.seconds()
        attempts, retryAt = self._tokenRetries.get(resource.id, (0, 0.0))
        if now < retryAt:
            return
        if resource.grant_code and not resource.access_token:
            if resource.grant_expires_at is not None and now > resource.grant_expires_at:
                await self.records.tokenFailed(
                    resource.id, "the oauth grant expired before it could be exchanged", True
                )
                return
            what, token = "exchange", resource.grant_code
        elif (
            resource.refresh_token
            and resource.token_expires_at is not None
            and now >= resource.token_expires_at - self.refreshMargin
        ):
            what, token = "refresh", resource.refresh_token
        else:
            return
        if not await self.records.claimTokens(resource.id):
            return  # another node is at it
        if what == "exchange":
            work = self.platform.exchangeGrant(token)
        else:
            work = self.platform.refresh(token)
        try:
            answer = await work
        except PlatformError as e:
            # A refused grant will never work; anything else is retried.
            refused = what == "exchange" and e.code is not None and 400 <= e.code < 500
            await self.records.tokenFailed(resource.id, f"{what}: {e}", refused)
            attempts += 1
            self._tokenRetries[resource.id] = (attempts, now + self.backoff(attempts))
            self._log.warn(
                "heroku oauth {what} for {uuid} failed: {error}",
                what=what, uuid=resource.uuid, error=str(e),
            )
            return
        self._tokenRetries.pop(resource.id, None)
        expiresIn = answer.get("expires_in")
        if not isinstance(expiresIn, (int, float)) or isinstance(expiresIn, bool):
            expiresIn = 28800
        await self.records.storeTokens(
            resource.id, answer["access_token"], answer.get("refresh_token"), now + expiresIn
        )
        self._log.info("heroku oauth {what} for {uuid} done", what=what, uuid=resource.uuid)

    async def _push(self, push: ConfigPush, resource: HerokuResource) -> None:
        if resource.cache_id is not None:
            cache = self.index.cache(resource.cache_id)
            cluster = await self.records.cacheCluster(resource.cache_id)
            if cache is not None and cluster is not None and cache.cluster != cluster:
                return  # the index is behind: its refresh kicks a pass
        if not await self.records.claimPush(push.id):
            return  # another node took it
        now = self.clock.seconds()
        credential = self.index.credential(push.username)
        try:
            if not resource.access_token:
                raise PlatformError(None, "no access token yet (the oauth grant is not exchanged)")
            if credential is None or credential.cache_id != resource.cache_id:
                raise PlatformError(None, f"credential {push.username} is not in the cache")
            config = self.provisioner.configVars(resource.cache_id)
            config["MEMCACHIER_USERNAME"] = credential.username
            config["MEMCACHIER_PASSWORD"] = credential.password
            status = await self.platform.updateConfig(resource.uuid, resource.access_token, config)
        except PlatformError as e:
            if e.code == 401 and resource.refresh_token:
                # Refresh at the next pass, then push again.
                await self.records.storeTokens(
                    resource.id, resource.access_token, None, now
                )
            await self.records.pushFailed(
                push.id, e.code, str(e), now + self.backoff(push.attempts + 1)
            )
            self._log.warn(
                "config var push {pushId} for {uuid} failed (attempt {attempt}): {error}",
                pushId=push.id, uuid=resource.uuid, attempt=push.attempts + 1, error=str(e),
            )
            return
        await self.records.pushSucceeded(push.id, status)
        self._log.info(
            "config vars of {uuid} now name {username}", uuid=resource.uuid, username=push.username
        )
