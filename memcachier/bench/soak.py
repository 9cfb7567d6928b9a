# -*- test-case-name: tests.integration.test_bench_entries -*-
"""
The soak: does the server's memory stay flat, and its latency
low, under hours-long replacement and connection churn?

    .venv/bin/python -m memcachier.bench.soak            # 10 minutes
    .venv/bin/python -m memcachier.bench.soak --duration 60 --interval 10

starts C{twistd -n memcachier} in a temporary directory (two caches on
the C{250} plan, so 200k keys fit) unless C{--port}, C{--username} and
C{--password} name a running one, then runs for C{--duration} seconds:

  - C{--connections} (50) connections, each sending one request at a time:
    C{--set-ratio} (50 %) sets of C{--min-size}..C{--max-size} (100-1000)
    random bytes, the rest gets, over C{--keys} (200,000) keys;
  - C{--churn} (5 %) of that many more connections that connect, log in,
    send one get and disconnect, over and over;
  - a bystander connection, logged in to the other cache, that gets one
    key every 10 ms and times it.

Every C{--interval} (30 s) it prints the server's RSS, the cache's
C{bytes}, the requests done, and the bystander's median, p99 and worst
latency and how many requests took over 25 ms and 200 ms; at the end,
the RSS change from the end of the C{--warmup} (120 s) to the end.

The load generator is one asyncio process: on a small machine it, not the
server, may set the pace; the figures that matter are the RSS trend and
the bystander's tail.
"""

import argparse
import asyncio
import os
import random
import shutil
import signal
import sys
import tempfile
import time

from memcachier.bench.fuzz import Server, rss

SOAK_PLAN = "250"


def _percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


class Soak:
    """
    The load, the churn and the bystander, and the figures they collect.
    """

    def __init__(self, port, credentials, bystander, options, pid, out):
        self.port = port
        self.username, self.password = credentials
        self.bystanderCredentials = bystander
        self.options = options
        self.pid = pid
        self.out = out
        self.requests = 0
        self.churned = 0
        self.errors = []
        self.latencies = []
        self.rows = []
        self.stopping = False
        self.rng = random.Random(options.seed)
        self.values = [os.urandom(options.max_size) for _ in range(16)]

    async def _connect(self, username, password):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b"set %b 0 0 %d\r\n%b\r\n" % (username, len(password), password))
        line = await reader.readline()
        if line != b"STORED\r\n":
            raise RuntimeError(f"login refused: {line!r}")
        return reader, writer

    async def _get(self, reader, writer, key):
        writer.write(b"get %b\r\n" % key)
        line = await reader.readline()
        while line != b"END\r\n":
            if not line.startswith(b"VALUE "):
                raise RuntimeError(f"get {key!r}: {line!r}")
            size = int(line.split()[3])
            await reader.readexactly(size + 2)
            line = await reader.readline()

    async def _worker(self):
        options = self.options
        rng = random.Random(self.rng.random())
        reader, writer = await self._connect(self.username, self.password)
        try:
            while not self.stopping:
                key = b"soak:%d" % rng.randrange(options.keys)
                if rng.random() < options.set_ratio:
                    size = rng.randint(options.min_size, options.max_size)
                    value = rng.choice(self.values)[:size]
                    writer.write(b"set %b 0 0 %d\r\n%b\r\n" % (key, size, value))
                    line = await reader.readline()
                    if line != b"STORED\r\n":
                        raise RuntimeError(f"set: {line!r}")
                else:
                    await self._get(reader, writer, key)
                self.requests += 1
        finally:
            writer.close()

    async def _churner(self):
        rng = random.Random(self.rng.random())
        while not self.stopping:
            reader, writer = await self._connect(self.username, self.password)
            await self._get(reader, writer, b"soak:%d" % rng.randrange(self.options.keys))
            writer.close()
            await writer.wait_closed()
            self.churned += 1

    async def _bystander(self):
        reader, writer = await self._connect(*self.bystanderCredentials)
        value = b"b" * 500
        writer.write(b"set bystander 0 0 %d\r\n%b\r\n" % (len(value), value))
        await reader.readline()
        expected = b"VALUE bystander 0 %d\r\n%b\r\nEND\r\n" % (len(value), value)
        while not self.stopping:
            started = time.monotonic()
            writer.write(b"get bystander\r\n")
            answer = await reader.readexactly(len(expected))
            self.latencies.append(time.monotonic() - started)
            if answer != expected:
                self.errors.append(f"bystander read {answer[:60]!r}")
            await asyncio.sleep(0.01)
        writer.close()

    async def _cacheBytes(self):
        reader, writer = await self._connect(self.username, self.password)
        writer.write(b"stats\r\n")
        stats = {}
        while True:
            line = await reader.readline()
            if line in (b"END\r\n", b""):
                break
            parts = line.split()
            stats[parts[1]] = parts[2]
        writer.close()
        return int(stats.get(b"bytes", 0))

    async def _report(self, started):
        options = self.options
        before = 0
        number = 0
        while not self.stopping:
            number += 1
            await asyncio.sleep(max(0.0, started + number * options.interval - time.monotonic()))
            latencies, self.latencies = sorted(self.latencies), []
            done, before = self.requests - before, self.requests
            row = dict(
                t=round(time.monotonic() - started),
                rss=rss(self.pid) if self.pid else 0,
                cache=await self._cacheBytes(),
                rate=done / options.interval,
                p50=_percentile(latencies, 0.5) * 1000,
                p99=_percentile(latencies, 0.99) * 1000,
                worst=(latencies[-1] if latencies else 0) * 1000,
                over25=sum(1 for x in latencies if x > 0.025),
                over200=sum(1 for x in latencies if x > 0.2),
            )
            self.rows.append(row)
            print(
                f"{row['t']:5d} s  RSS {row['rss'] / 2**20:7.1f} MiB  cache {row['cache'] / 2**20:6.1f} MiB"
                f"  {row['rate']:7.0f} req/s  bystander p50 {row['p50']:5.1f} ms"
                f"  p99 {row['p99']:6.1f} ms  max {row['worst']:6.1f} ms"
                f"  >25 ms {row['over25']:4d}  >200 ms {row['over200']:3d}",
                file=self.out, flush=True,
            )

    async def run(self):
        options = self.options
        started = time.monotonic()
        churners = max(1, round(options.connections * options.churn)) if options.churn else 0
        tasks = [asyncio.ensure_future(self._worker()) for _ in range(options.connections)]
        tasks += [asyncio.ensure_future(self._churner()) for _ in range(churners)]
        tasks.append(asyncio.ensure_future(self._bystander()))
        reporter = asyncio.ensure_future(self._report(started))
        print(
            f"soak: {options.connections} connections ({options.set_ratio:.0%} sets over "
            f"{options.keys} keys of {options.min_size}-{options.max_size} B), {churners} churning, "
            f"{options.duration} s, a row every {options.interval} s",
            file=self.out, flush=True,
        )
        done, _ = await asyncio.wait(tasks + [reporter], timeout=options.duration,
                                     return_when=asyncio.FIRST_EXCEPTION)
        self.stopping = True
        for task in done:
            if task.exception() is not None:
                self.errors.append(f"{type(task.exception()).__name__}: {task.exception()}")
        await asyncio.gather(*tasks, reporter, return_exceptions=True)

    def summary(self):
        """
        @return: whether the run had no error.
        """
        rows = [r for r in self.rows if r["t"] >= self.options.warmup] or self.rows[-1:]
        if rows:
            first, last = rows[0]["rss"], self.rows[-1]["rss"]
            change = (last - first) / first * 100 if first else 0.0
            print(
                f"RSS after the {self.options.warmup} s warm-up: {first / 2**20:.1f} -> "
                f"{last / 2**20:.1f} MiB ({change:+.1f} %); "
                f"bystander: worst {max(r['worst'] for r in self.rows):.1f} ms, "
                f"{sum(r['over25'] for r in self.rows)} over 25 ms, "
                f"{sum(r['over200'] for r in self.rows)} over 200 ms; "
                f"{self.requests} requests, {self.churned} churned connections",
                file=self.out, flush=True,
            )
        for error in self.errors[:10]:
            print(f"error: {error}", file=self.out)
        return not self.errors


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(prog="python -m memcachier.bench.soak",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (600)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds per row (30)")
    parser.add_argument("--warmup", type=float, default=120.0,
                        help="seconds before the RSS baseline of the summary (120)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--churn", type=float, default=0.05,
                        help="churning connections, a fraction of --connections (0.05)")
    parser.add_argument("--set-ratio", type=float, default=0.5)
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--min-size", type=int, default=100)
    parser.add_argument("--max-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, help="a running server (default: start one)")
    parser.add_argument("--pid", type=int, help="its process id, for RSS")
    parser.add_argument("--username", help="the loaded cache's credential (with --port)")
    parser.add_argument("--password")
    parser.add_argument("--bystander-username", help="another cache's credential (with --port)")
    parser.add_argument("--bystander-password")
    options = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))

    server = directory = None
    if options.port:
        port, pid = options.port, options.pid
        credentials = (options.username.encode(), options.password.encode())
        bystander = (options.bystander_username.encode(), options.bystander_password.encode())
    else:
        directory = tempfile.mkdtemp(prefix="memcachier-soak-")
        server = Server(directory, plan=SOAK_PLAN)
        server.start()
        port, pid = server.port, server.process.pid
        credentials, bystander = server.fuzzed, server.bystander
    try:
        soak = Soak(port, credentials, bystander, options, pid, out)
        asyncio.run(soak.run())
        ok = soak.summary()
        if server is not None:
            bad = [line for line in server.log().splitlines()
                   if "Traceback" in line or "#critical" in line or "#error" in line]
            print(f"server log: {len(bad)} traceback/error lines", file=out)
            ok = ok and not bad and server.alive()
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(directory, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
