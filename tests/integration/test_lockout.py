"""
No lockout of the rightful app: against a real twistd over real sockets,
one address (127.0.0.2) sprays wrong passwords at a cache's username
while the app that rightly logs in as it keeps reconnecting with a real
client (pymemcache, ASCII auth) from its own address (127.0.0.1).

The budgets refill at one token per 100 s, so nothing refills while the
test runs and the counts are exact however slow the machine is: the
sprayer spends its address's budget and the username's within its first
five guesses, and from then on the username's budget refuses every
address that has not logged in as it, the right password included.
"""

import socket
import threading
import time

import pytest
from pymemcache.client.base import Client as PymemcacheClient

from tests.integration.conftest import AsciiConnection

SLOW_REFILL = "auth_failure_rate = 0.01\nauth_failure_burst = 5\n"
FAILURE = b"CLIENT_ERROR authentication failure"

#: the rightful app's logins counted while the spray goes on
LOGINS = 37


def fromAddress(port, source):
    """
    A raw connection to 127.0.0.1:C{port} from the loopback address
    C{source} (all of 127/8 is local on Linux).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return AsciiConnection(port, sock=sock)


class Sprayer:
    """
    Wrong passwords at one username from 127.0.0.2, ten pipelined per
    connection, connection after connection, until stopped.

    @ivar replies: failure replies: one per guess checked, and one for
        the refusal that closes each connection once a budget is spent.
    @ivar closed: connections the server closed (refused, throttled).
    """

    def __init__(self, port, username):
        self.port = port
        self.username = username
        self.replies = self.closed = 0
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(30)

    def _run(self):
        i = 0
        while not self._stop.is_set():
            try:
                conn = fromAddress(self.port, "127.0.0.2")
                guesses = b"".join(
                    b"set %s 0 0 8\r\nwrong%03d\r\n" % (self.username.encode(), (i + n) % 1000)
                    for n in range(10)
                )
                i += 10
                conn.send(guesses)
                for _ in range(10):
                    try:
                        reply = conn.line()
                    except OSError:
                        self.closed += 1
                        break
                    assert reply == FAILURE, reply
                    self.replies += 1
                conn.sock.close()
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(e))
                return


def appLogin(server, key):
    """
    One login of the rightful app: a fresh pymemcache client (a new
    connection from 127.0.0.1) authenticating with ASCII auth, then a set
    and a get.

    @return: whether it logged in and the cache answered.
    """
    client = PymemcacheClient(("127.0.0.1", server.port), timeout=10)
    try:
        if not client.set(server.username, server.password, noreply=False):
            return False
        client.set(key, b"v", noreply=False)
        return client.get(key) == b"v"
    except Exception:  # noqa: BLE001 - a refused login closes the connection
        return False
    finally:
        client.close()


@pytest.mark.parametrize("remember", ["24h", "1ms"])
def test_rightfulAppKeepsLoggingInWhileItsUsernameIsSprayed(memcachier_server_factory, remember):
    """
    The app logs in once, then 127.0.0.2 sprays its username: the spray
    is throttled (its own budget spent, its right-password login refused)
    and has spent the username's budget (a third address, 127.0.0.3, is
    refused with the right password), yet all of the app's 37 fresh logins
    from 127.0.0.1 during the spray succeed.  With the memory of logins
    cut to 1 ms (the throttle as it was without it) the same spray refuses
    every one of them.
    """
    server = memcachier_server_factory(
        memcache=SLOW_REFILL + f'auth_remember_for = "{remember}"\n', web=False
    )
    assert appLogin(server, "app:first")

    sprayer = Sprayer(server.port, server.username)
    sprayer.start()
    try:
        deadline = time.monotonic() + 30
        while sprayer.closed < 3 and not sprayer.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sprayer.closed >= 3, (sprayer.replies, sprayer.closed, sprayer.errors)

        stranger = fromAddress(server.port, "127.0.0.3")
        assert stranger.auth(server.username, server.password) == FAILURE
        assert stranger.closed()

        logged = sum(appLogin(server, f"app:{i}") for i in range(LOGINS))
        closedDuring = sprayer.closed
    finally:
        sprayer.stop()
    assert sprayer.errors == []
    print(f"\nauth_remember_for={remember}: rightful logins: {logged} of {LOGINS} succeeded, {LOGINS - logged} refused; "
          f"spray: {sprayer.replies - sprayer.closed} guesses checked, "
          f"{closedDuring} connections refused during the app's logins")
    assert logged == (LOGINS if remember == "24h" else 0)
    # only the budget's 5 guesses were checked; every later connection got
    # one refusal and was closed
    assert sprayer.replies == 5 + sprayer.closed
    sprayerRight = fromAddress(server.port, "127.0.0.2")
    assert sprayerRight.auth(server.username, server.password) == FAILURE
    assert sprayerRight.closed()
    assert "Traceback" not in server.log()
