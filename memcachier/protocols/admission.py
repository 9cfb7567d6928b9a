# -*- test-case-name: tests.unit.test_fairshare -*-
"""
Login storms: new connections' first requests (their logins) are handled
a bounded batch per reactor turn.

Thousands of clients connecting at once (a fleet restarting) each send
their login at once, and the reactor handles every ready connection of one
poll in one pass: thousands of logins in a row, while every other tenant's
request waits for the pass to end.  So a new connection's first read is
handled at once only while fewer than L{LoginAdmission.batch} were in this
turn; the others wait, kept and not read further (C{pauseProducing}, the
producer API), and are handled a batch per turn (C{callLater(0)} on the
injected reactor), oldest first.  Each pass then holds at most about one
batch of logins, and established connections are read between batches.
The gate is at the first read, not at the connection: connections let in
before their clients sent anything would otherwise all become readable
in one pass.

A waiting connection's auth timeout runs as usual: the client must still
log in within it, waiting included.
"""

from collections import deque
from typing import Any, Deque, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: connections that may start being read per reactor turn
DEFAULT_BATCH = 64


class LoginAdmission:
    """
    Lets new connections' first reads be handled L{batch} per reactor turn.

    @ivar batch: connections admitted per turn; C{0}: every one at once.
    @ivar admitted: connections admitted in this turn.
    @ivar waiting: connections whose first read waits, oldest first (each has
        C{admitted()}, called when its turn comes, and C{closed}).
    """

    def __init__(self, reactor: IReactorTime, batch: int = DEFAULT_BATCH) -> None:
        self.reactor = reactor
        self.batch = batch
        self.admitted = 0
        self.waiting: Deque[Any] = deque()
        self._turn: Optional[IDelayedCall] = None

    def admit(self, connection: Any) -> bool:
        """
        A new connection's first read: whether it may be handled now.  If
        not, it waits (keeping the data and pausing reading are the
        caller's) and C{connection.admitted()} is called when its turn
        comes.
        """
        if not self.batch:
            return True
        if self._turn is None:
            self._turn = self.reactor.callLater(0, self._nextTurn)
        if self.admitted < self.batch and not self.waiting:
            self.admitted += 1
            return True
        self.waiting.append(connection)
        return False

    def _nextTurn(self) -> None:
        self._turn = None
        self.admitted = 0
        waiting = self.waiting
        while waiting and self.admitted < self.batch:
            connection = waiting.popleft()
            if connection.closed:
                continue
            self.admitted += 1
            connection.admitted()
        if self.admitted:
            # count this turn's admissions against the next one's too
            self._turn = self.reactor.callLater(0, self._nextTurn)

    def stop(self) -> None:
        """
        Admit every waiting connection (the node is stopping: they are
        drained and closed like the others).
        """
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None
        waiting, self.waiting = self.waiting, deque()
        for connection in waiting:
            if not connection.closed:
                connection.admitted()
