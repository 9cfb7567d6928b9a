# -*- test-case-name: tests.unit.test_fastpaths -*-
"""
The CPU the streamlined poll loop spends per ready connection, reading
server-side TCP connections itself or through Twisted's C{_doReadOrWrite}
(L{memcachier.node.fastpaths.poll}):

    taskset -c 1 .venv/bin/python -m memcachier.bench.pollcost [ROUNDS]

50 socket pairs, each server side a C{tcp.Server} with a protocol that
does nothing; every client side sends one byte, then one C{poll} reads
them all; C{time.thread_time} around the poll, per ready connection.  It
prints the best and the median of C{ROUNDS} (8) rounds of 1,000 polls
each way, alternating.
"""

import socket
import sys
import time
from types import SimpleNamespace

from twisted.internet import tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import Protocol

from memcachier.node import fastpaths

CONNECTIONS = 50
POLLS = 1000


def connections(reactor):
    port = SimpleNamespace(_realPortNumber=0)
    clients = []
    for n in range(CONNECTIONS):
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        protocol = Protocol()
        server = tcp.Server(ours, protocol, ("127.0.0.1", 0), port, n, reactor)
        protocol.makeConnection(server)
        server.startReading()
        clients.append((theirs, server))
    return clients


def perConnection(reactor, clients, polls=POLLS):
    """
    Microseconds of CPU per ready connection over C{polls} polls.
    """
    spent = 0.0
    for _ in range(polls):
        for client, _ in clients:
            client.send(b"x")
        started = time.thread_time()
        fastpaths.poll(reactor, 0)
        spent += time.thread_time() - started
    return spent / (polls * len(clients)) * 1e6


def main(argv=None, out=sys.stdout):
    argv = sys.argv[1:] if argv is None else argv
    rounds = int(argv[0]) if argv else 8
    reactor = EPollReactor()
    clients = connections(reactor)
    fast, twisted = [], []
    try:
        for _ in range(rounds):
            fastpaths._SERVER = tcp.Server
            fast.append(perConnection(reactor, clients))
            fastpaths._SERVER = None
            twisted.append(perConnection(reactor, clients))
    finally:
        fastpaths._SERVER = tcp.Server
        for client, server in clients:
            server.stopReading()
            server.socket.close()
            client.close()
    median = lambda values: sorted(values)[len(values) // 2]
    out.write(f"read in the loop: best {min(fast):.2f} us, median {median(fast):.2f} us per ready connection\n")
    out.write(f"through Twisted's _doReadOrWrite: best {min(twisted):.2f} us, "
              f"median {median(twisted):.2f} us per ready connection\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
