"""
CPU microseconds per request of the ASCII and binary codecs in process,
without sockets (so the kernel's ~10 us per request and other load on the
machine do not blur the difference): introspection off against on, or
(C{--get-run}) the codecs' runs of one-key gets in C against their own
loops.

Run pinned to one core::

    taskset -c 1 .venv/bin/python -m memcachier.bench.costbench [ROUNDS [REQUESTS]]
        [--store memory|segment] [--workload single|mget100] [--get-run]

The C{single} workload mirrors C{../shared/bench} C{ascii}/C{binary}: 90%
get / 10% set of 100-byte values over 100k preloaded keys, one request per
C{dataReceived}; C{mget100} is C{ascii_mget100}'s gets of 100 random keys
(ASCII only).  The introspection batches are drained every 5,000
requests.  Each figure is the best of C{ROUNDS} alternating rounds.
"""

import argparse
import random
import struct
import sys
import time

from twisted.internet.task import Clock

from memcachier.analytics.introspection import IntrospectionService
from memcachier.commands import StoreMode
from memcachier.protocols import ascii, binary as binaryCodec
from memcachier.protocols.sniff import MemcacheFactory
from memcachier.speedups import accelerator
from memcachier.runtime import CacheRegistry
from memcachier.stores.memory import MemoryStore
from memcachier.stores.segment import SegmentStore
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


def _requests(binary, n, seed=1, keysPerGet=1):
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        if keysPerGet > 1:
            keys = b" ".join(b"key:%d" % rnd.randrange(100_000) for _ in range(keysPerGet))
            out.append(b"get " + keys + b"\r\n")
            continue
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


STORES = {"memory": MemoryStore, "segment": SegmentStore}


def run(enabled, binary, requests, batchLimit=100, store=MemoryStore):
    """
    @return: microseconds of CPU per request.
    """
    clock = Clock()
    clock.advance(1_700_000_000)
    index = MemoryControlIndex()
    index.addCache(1, "1g")
    index.addCredential(1, "user", "secret")
    service = IntrospectionService(clock, enabled=enabled, batchLimit=batchLimit)
    registry = CacheRegistry(store(clock), index, None, clock, introspection=service)
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


def _getRuns(on):
    """
    The codecs' runs of one-key gets in C (C{on}), or their own loops.
    """
    ascii.getRun = accelerator.get_run if on and accelerator else None
    binaryCodec.getRun = accelerator.binary_get_run if on and accelerator else None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m memcachier.bench.costbench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", nargs="?", type=int, default=5)
    parser.add_argument("requests", nargs="?", type=int, default=100_000)
    parser.add_argument("--store", choices=sorted(STORES), default="memory")
    parser.add_argument("--workload", choices=("single", "mget100"), default="single")
    parser.add_argument("--get-run", action="store_true",
                        help="the runs of one-key gets in C against the codecs' loops "
                        "(introspection on), instead of introspection off against on")
    options = parser.parse_args(argv)
    store = STORES[options.store]
    mget = options.workload == "mget100"
    for binary in (False,) if mget else (False, True):
        requests = _requests(binary, options.requests // 10 if mget else options.requests,
                             keysPerGet=100 if mget else 1)
        results = {False: [], True: []}
        for _ in range(options.rounds):
            for setting in (False, True):
                if options.get_run:
                    _getRuns(setting)
                results[setting].append(run(options.get_run or setting, binary, requests,
                                            store=store))
        _getRuns(True)
        first, second = min(results[False]), min(results[True])
        name = "ascii_mget100" if mget else "binary" if binary else "ascii"
        if options.get_run:
            print(f"{name} ({options.store}): codec's loop {first:.2f} us/request, "
                  f"C run {second:.2f} us/request")
        else:
            print(f"{name} ({options.store}): introspection off {first:.2f} us/request, "
                  f"on {second:.2f} us/request, +{second - first:.2f} us")


if __name__ == "__main__":
    main()
