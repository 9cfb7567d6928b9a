"""
In-process cost of introspection on the hot path: CPU microseconds per
request of the ASCII and binary codecs, introspection off and on, without
sockets (so the kernel's ~10 us per request and other load on the machine
do not blur the difference).

Run pinned to one core::

    taskset -c 1 .venv/bin/python -m memcachier.bench.costbench

The workload mirrors C{../shared/bench} C{ascii}/C{binary}: 90% get / 10%
set of 100-byte values over 100k preloaded keys, one request per
C{dataReceived}; the introspection batches are drained every 5,000
requests, what the 0.1 s timer sees at 50k requests/s.
"""

import random
import struct
import sys
import time

from twisted.internet.task import Clock

from memcachier.analytics.introspection import IntrospectionService
from memcachier.commands import StoreMode
from memcachier.protocols.sniff import MemcacheFactory
from memcachier.runtime import CacheRegistry
from memcachier.stores.memory import MemoryStore
from memcachier.testing import MemoryControlIndex

HEADER = ">BBHBBHIIQ"


class _Transport:
    def write(self, data):
        pass

    def writeSequence(self, data):
        pass

    def loseConnection(self):
        pass

    def getPeer(self):
        return None

    def getHost(self):
        return None

    def registerProducer(self, producer, streaming):
        pass

    def unregisterProducer(self):
        pass


def _requests(binary, n, seed=1):
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        key = b"key:%d" % rnd.randrange(100_000)
        isSet = rnd.random() < 0.1
        if binary and isSet:
            body = struct.pack(">II", 0, 0) + key + b"x" * 100
            out.append(struct.pack(HEADER, 0x80, 0x01, len(key), 8, 0, 0, len(body), 0, 0) + body)
        elif binary:
            out.append(struct.pack(HEADER, 0x80, 0x00, len(key), 0, 0, 0, len(key), 0, 0) + key)
        elif isSet:
            out.append(b"set " + key + b" 0 0 100\r\n" + b"x" * 100 + b"\r\n")
        else:
            out.append(b"get " + key + b"\r\n")
    return out


def run(enabled, binary, requests, batchLimit=500):
    """
    @return: microseconds of CPU per request.
    """
    clock = Clock()
    clock.advance(1_700_000_000)
    index = MemoryControlIndex()
    index.addCache(1, "1g")
    index.addCredential(1, "user", "secret")
    service = IntrospectionService(clock, enabled=enabled, batchLimit=batchLimit)
    registry = CacheRegistry(MemoryStore(clock), index, None, clock, introspection=service)
    proto = MemcacheFactory(registry, clock, authTimeout=0).buildProtocol(None)
    proto.makeConnection(_Transport())
    if binary:
        body = b"PLAIN" + b"\0user\0secret"
        proto.dataReceived(struct.pack(HEADER, 0x80, 0x21, 5, 0, 0, 0, len(body), 0, 0) + body)
    else:
        proto.dataReceived(b"set user 0 0 6\r\nsecret\r\n")
    runtime = registry.existing(1)
    assert runtime is not None and proto.session.authenticated, "authentication failed"
    for i in range(100_000):
        runtime.keyspace.store(StoreMode.SET, b"key:%d" % i, b"x" * 100, 0, 0, 0)
    received = proto.dataReceived
    drain = service.drainAll
    start = time.process_time()
    for i, request in enumerate(requests):
        received(request)
        if i % 5000 == 4999:
            drain()
    drain()
    elapsed = time.process_time() - start
    assert runtime.stats.cmd_get > len(requests) * 0.8
    return elapsed / len(requests) * 1e6


def main(rounds=5, n=100_000):
    for binary in (False, True):
        requests = _requests(binary, n)
        results = {False: [], True: []}
        for _ in range(rounds):
            for enabled in (False, True):
                results[enabled].append(run(enabled, binary, requests))
        off, on = min(results[False]), min(results[True])
        name = "binary" if binary else "ascii"
        print(f"{name}: off {off:.2f} us/request, on {on:.2f} us/request, "
              f"introspection +{on - off:.2f} us")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
