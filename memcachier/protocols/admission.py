# -*- test-case-name: tests.unit.test_admission -*-
"""
Login storms: new connections are read, and their first requests (their
logins) handled, a bounded batch at a time.

Thousands of clients connecting at once (a fleet restarting) each send
their login at once, and the reactor handles every ready connection of one
poll in one pass: thousands of reads and logins in a row, while every other
tenant's request waits for the pass to end.  Two gates keep a pass short:

  1. B{At the connection} (L{LoginAdmission.arrive}): a new connection is
     read at once only while fewer than L{LoginAdmission.batch} connections
     let in have not yet sent their first bytes; the others are not read
     at all (C{pauseProducing}, the producer API: out of the poll set)
     until a place is free, oldest first.  A connection holds its place
     until its first read, or for L{LoginAdmission.patience} seconds if its
     client is slow to send: then it is not read again until its next
     turn, at the back, so a silent connection holds up the others for no
     longer.  So at most one batch of new connections can be read in a
     pass, not thousands, whenever their clients send.
  2. B{At the first read} (L{LoginAdmission.admit}): whatever the first
     gate let through (connections let in while their clients were still
     silent, which then all send at once), a first read is handled at once
     only while fewer than L{LoginAdmission.batch} were in this turn; the
     others wait, kept and not read further, and are handled a batch per
     turn (C{callLater(0)} on the injected reactor), oldest first.  (A
     wrapping transport may still deliver data to a paused connection.)

Established connections are read between batches.  A waiting connection's
auth timeout runs as usual: the client must still log in within it,
waiting included.
"""

from collections import deque
from typing import Any, Deque, Dict, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: connections that may start being read per reactor turn, and new
#: connections let in that may not have sent anything yet
DEFAULT_BATCH = 16
#: seconds a connection let in holds its place while its client sends nothing
DEFAULT_PATIENCE = 0.01


class LoginAdmission:
    """
    Lets new connections be read, and their first reads be handled, about
    L{batch} at a time (the module docstring).

    @ivar batch: connections per turn, and let in before their first read;
        C{0}: every one at once.
    @ivar patience: seconds a connection let in may take to send its first
        bytes before it loses its place; C{0}: no first gate.
    @ivar admitted: connections admitted in this turn.
    @ivar waiting: connections whose first read waits, oldest first (each has
        C{admitted()}, called when its turn comes, and C{closed}).
    @ivar arriving: new connections not read yet, oldest first (each has
        C{letIn()}, called when a place is free, C{putBack()}, called when
        it lost its place, and C{closed}).
    @ivar unread: the connections let in that have not been read, each with
        when it was let in, oldest first.
    """

    def __init__(self, reactor: IReactorTime, batch: int = DEFAULT_BATCH,
                 patience: float = DEFAULT_PATIENCE) -> None:
        self.reactor = reactor
        self.batch = batch
        self.patience = patience
        self.admitted = 0
        self.waiting: Deque[Any] = deque()
        self.arriving: Deque[Any] = deque()
        self.unread: Dict[Any, float] = {}
        self._turn: Optional[IDelayedCall] = None
        self._wait: Optional[IDelayedCall] = None

    def arrive(self, connection: Any) -> bool:
        """
        A new connection: whether it may be read now.  If not, it waits
        (pausing it is the caller's) and C{connection.letIn()} is called
        when a place is free.
        """
        if not self.batch or not self.patience:
            return True
        if not self.arriving and self._room():
            self.unread[connection] = self.reactor.seconds()
            return True
        self.arriving.append(connection)
        self._comeBack()
        return False

    def read(self, connection: Any) -> None:
        """
        A connection let in was read for the first time, or closed: its
        place is free.
        """
        if self.unread.pop(connection, None) is not None and self.arriving:
            self._letIn()

    def _room(self) -> bool:
        """
        Whether a connection may be let in now.  One let in more than
        L{patience} seconds ago that has still not been read loses its
        place: it is not read again until its next turn, at the back.
        """
        unread = self.unread
        if len(unread) < self.batch:
            return True
        expired = self.reactor.seconds() - self.patience
        for connection, since in list(unread.items()):
            if since > expired:
                break
            del unread[connection]
            if not connection.closed:
                connection.putBack()
                self.arriving.append(connection)
        return len(unread) < self.batch

    def _letIn(self) -> None:
        """
        Let in arriving connections while there is room, and come back when
        the oldest place is due if some still wait.
        """
        arriving = self.arriving
        while arriving and self._room():
            connection = arriving.popleft()
            if connection.closed:
                continue
            self.unread[connection] = self.reactor.seconds()
            connection.letIn()
        self._comeBack()

    def _comeBack(self) -> None:
        """
        If connections wait to be let in, call L{_letIn} again when the
        oldest place is due (if not already).
        """
        if self.arriving and self._wait is None:
            since = next(iter(self.unread.values()), self.reactor.seconds())
            due = max(0.0, since + self.patience - self.reactor.seconds())
            self._wait = self.reactor.callLater(due, self._waited)

    def _waited(self) -> None:
        self._wait = None
        self._letIn()

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
        for call in (self._turn, self._wait):
            if call is not None and call.active():
                call.cancel()
        self._turn = self._wait = None
        self.batch = 0
        arriving, self.arriving = self.arriving, deque()
        self.unread.clear()
        for connection in arriving:
            if not connection.closed:
                connection.letIn()
        waiting, self.waiting = self.waiting, deque()
        for connection in waiting:
            if not connection.closed:
                connection.admitted()
