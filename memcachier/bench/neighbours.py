# -*- test-case-name: tests.integration.test_neighbours -*-
"""
A noisy neighbour: what a quiet tenant sees while another floods the node,
with the fair share on and off (C{[limits] scheduler}).

    .venv/bin/python -m memcachier.bench.neighbours --mcload ../shared/bench/mcload

starts, in a temporary directory, one node (SQLite) with two caches on a
1 GiB plan, once with the scheduler off and once on, and for each:

  1. B{solo}: tenant B alone, 1 connection, C{--rate} gets a second
     (paced: a request every 1/rate s, the next waiting for the answer);
  2. B{flood}: the same while tenant A floods the node with C{mcload} on
     C{--connections} connections, C{--depth} requests in flight each;
  3. B{login storm} (C{--storm N}, 0 for none): the same paced tenant B
     while N connections of tenant A connect and log in at once.

It prints A's requests/s, B's requests/s and B's p50, p99 and max latency
(microseconds) for each, and the ratio of B's p99 under the flood to its
solo p99.

What is measured is the node's delay, not the clients' own: as tenants
on other machines would, B's client must not wait for a CPU behind the
flood's load generator.  So, on a machine of two CPUs or more, the node
runs alone on C{--server-cpu} (1), and the load generators (A's
C{mcload}, the storm's client, which is this process) on C{--client-cpu}
(0).  Tenant B's client runs in a process of its own (this module,
C{--paced}) on the client CPU too, under the real-time scheduling policy
(C{SCHED_FIFO}) where the system allows it, so that it runs as soon as
its answer arrives or its next request is due; the report says whether
it did.
"""

import argparse
import json
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from memcachier.bench.cluster import findMcload
from memcachier.bench.process import (
    TwistdNode, addMcloadOption, collectLoad, defaultPinning, freePort, pinnedTo, startLoad,
    writeConfig,
)

PLAN = "bench"


def login(sock, username, password):
    """
    MemCachier's ASCII login on a blocking socket.
    """
    sock.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (username.encode(), len(password), password.encode()))
    reply = readUntil(sock, b"\r\n")
    if reply != b"STORED\r\n":
        raise RuntimeError(f"login refused: {reply!r}")


def readUntil(sock, end):
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed after {data!r}")
        data += chunk
    return data


def paced(port, username, password, rate, duration):
    """
    One connection sending C{get} at C{rate} a second for C{duration}
    seconds.

    @return: the latencies, in seconds.
    """
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        login(sock, username, password)
        sock.sendall(b"set bkey 0 0 100\r\n" + b"b" * 100 + b"\r\n")
        readUntil(sock, b"\r\n")
        latencies = []
        interval = 1.0 / rate
        due = time.perf_counter()
        end = due + duration
        while due < end:
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            started = time.perf_counter()
            sock.sendall(b"get bkey\r\n")
            readUntil(sock, b"END\r\n")
            latencies.append(time.perf_counter() - started)
            due += interval
    return latencies


def heldBack(port, credentials):
    """
    A cache's C{held_back_seconds}, from C{stats}.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        login(sock, *credentials)
        sock.sendall(b"stats\r\n")
        found = re.search(rb"STAT held_back_seconds ([\d.]+)", readUntil(sock, b"END\r\n"))
    return float(found.group(1)) if found else float("nan")


#: B's client's priority under C{SCHED_FIFO} (1-99; above any load generator)
REALTIME_PRIORITY = 10


def realtime():
    """
    Put this process under C{SCHED_FIFO}, if the system allows it.

    @return: whether it did.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    except (OSError, AttributeError):
        return False
    return True


def startPaced(port, credentials, rate, duration, cpu=None):
    """
    L{paced} in a process of its own (C{--paced}), on CPU C{cpu} if given.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "memcachier.bench.neighbours", "--paced",
         str(port), credentials[0], credentials[1], str(rate), str(duration)],
        stdout=subprocess.PIPE, text=True, preexec_fn=pinnedTo(cpu),
    )


def pacedResult(process, duration):
    out, _ = process.communicate(timeout=duration + 120)
    if process.returncode != 0:
        raise RuntimeError(f"the paced client failed (exit {process.returncode})")
    result = json.loads(out)
    latencies = sorted(result["latencies"])
    return {
        "ops": len(latencies) / duration,
        "p50": percentile(latencies, 50) * 1e6,
        "p99": percentile(latencies, 99) * 1e6,
        "max": latencies[-1] * 1e6 if latencies else 0.0,
        "realtime": result["realtime"],
    }


def percentile(values, p):
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def storm(port, credentials, count, timeout=60.0, keep=None):
    """
    C{count} connections connect and log in at once.

    @param keep: a list to put the logged-in sockets in, left open (the
        caller closes them); by default they are closed on return.
    @return: seconds until every one logged in.
    """
    selector = selectors.DefaultSelector()
    message = b"set %s 0 0 %d\r\n%s\r\n" % (
        credentials[0].encode(), len(credentials[1]), credentials[1].encode())
    socks = []
    started = time.perf_counter()
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
        selector.register(sock, selectors.EVENT_WRITE, b"")
    pending = count
    deadline = started + timeout
    try:
        while pending and time.perf_counter() < deadline:
            for key, events in selector.select(1.0):
                sock = key.fileobj
                if events & selectors.EVENT_WRITE:
                    sock.send(message)
                    selector.modify(sock, selectors.EVENT_READ, b"")
                    continue
                data = key.data + sock.recv(100)
                if data.endswith(b"\r\n"):
                    if data != b"STORED\r\n":
                        raise RuntimeError(f"a storm login was refused: {data!r}")
                    selector.unregister(sock)
                    pending -= 1
                else:
                    selector.modify(sock, selectors.EVENT_READ, data)
        if pending:
            raise RuntimeError(f"{pending} of {count} storm logins unanswered after {timeout} s")
        elapsed = time.perf_counter() - started
        if keep is not None:
            keep.extend(socks)
            socks = []
        return elapsed
    finally:
        for sock in socks:
            sock.close()


def flood(mcload, port, credentials, options):
    """
    Tenant A's C{mcload}: C{--connections} connections, C{--depth} in
    flight each, over 1000 keys.
    """
    return startLoad(
        mcload, port, credentials,
        ["-c", str(options.connections), "-d", str(options.depth), "-k", "1000",
         "-t", str(options.duration), "-w", str(options.warmup)],
        cpu=options.client_cpu,
    )


def floodResult(process, options):
    return collectLoad([process], options.duration + options.warmup + 120)


def writeNode(directory, scheduler, reading=None, cpu=None, introspection=True, loginBatch=None):
    """
    One node (SQLite) with the scheduler on or off (not started), to run
    on CPU C{cpu} if given.
    """
    port = freePort()
    config = writeConfig(
        directory, port, f"sqlite:///{directory}/memcachier.sqlite",
        "[caches]\n"
        f'default_plan = "{PLAN}"\n'
        f"[plans.{PLAN}]\n"
        'memory = "1GiB"\n'
        "connections = 20000\n"
        "[limits]\n"
        f"scheduler = {'true' if scheduler else 'false'}\n"
        + (f"scheduler_reading = {reading}\n" if reading else "")
        + f"[analytics]\nintrospection = {'true' if introspection else 'false'}\n",
        memcache=f"login_batch = {loginBatch}\n" if loginBatch is not None else "",
    )
    return TwistdNode(directory, config, port, cpu=cpu)


def runMode(scheduler, mcload, options, directory):
    """
    Solo, flood and storm for one setting of the scheduler.
    """
    node = writeNode(os.path.join(directory, "on" if scheduler else "off"), scheduler, options.reading,
                     cpu=options.server_cpu, introspection=options.introspection == "on",
                     loginBatch=options.login_batch)
    created = [node.admin("cache", "create") for _ in range(2)]
    a, b = [(c["username"], c["password"]) for c in created]
    node.start()
    try:
        result = {}
        client = startPaced(node.port, b, options.rate, options.duration, options.client_cpu)
        result["solo"] = pacedResult(client, options.duration)
        noisy = flood(mcload, node.port, a, options)
        time.sleep(options.warmup)
        client = startPaced(node.port, b, options.rate, options.duration, options.client_cpu)
        result["flood"] = pacedResult(client, options.duration)
        result["A"] = floodResult(noisy, options)
        result["held"] = (heldBack(node.port, a), heldBack(node.port, b))
        if options.storm:
            stormSeconds = max(4.0, options.duration / 2)
            client = startPaced(node.port, b, options.rate, stormSeconds, options.client_cpu)
            time.sleep(0.5)
            # The storm's connections stay open until B's run is over: a
            # fleet logging in stays; 5,000 closing at once is another
            # event (docs/performance.md).
            stormed = []
            try:
                result["stormSeconds"] = storm(node.port, a, options.storm, keep=stormed)
                result["storm"] = pacedResult(client, stormSeconds)
            finally:
                for sock in stormed:
                    sock.close()
        return result
    finally:
        node.stop()


def report(results, options, out):
    out.write(
        f"tenant A: {options.connections} connections x {options.depth} in flight (mcload); "
        f"tenant B: 1 connection at {options.rate:g} gets/s; {options.duration:g} s each\n"
    )
    first = next(iter(results.values()))
    out.write(f"node on CPU {options.server_cpu if options.server_cpu is not None else 'any'}, "
              f"clients on CPU {options.client_cpu if options.client_cpu is not None else 'any'}; "
              f"B's client real-time (SCHED_FIFO): {'yes' if first['solo']['realtime'] else 'no'}\n")
    out.write(f"{'scheduler':<10} {'run':<6} {'A req/s':>9} {'B req/s':>8} "
              f"{'B p50 us':>9} {'B p99 us':>9} {'B max us':>9}\n")
    for mode, r in results.items():
        rows = [("solo", "-", r["solo"]), ("flood", str(r["A"]["ops"]), r["flood"])]
        if "storm" in r:
            rows.append(("storm", "-", r["storm"]))
        for name, aOps, b in rows:
            out.write(f"{mode:<10} {name:<6} {aOps:>9} {b['ops']:>8.0f} "
                      f"{b['p50']:>9.0f} {b['p99']:>9.0f} {b['max']:>9.0f}\n")
        ratio = r["flood"]["p99"] / r["solo"]["p99"] if r["solo"]["p99"] else float("nan")
        out.write(f"{mode:<10} B's p99 under the flood / solo: {ratio:.1f}x; "
                  f"A's errors: {r['A']['errors']}\n")
        out.write(f"{mode:<10} held back: A {r['held'][0]:.2f} s, B {r['held'][1]:.2f} s\n")
        if "storm" in r:
            out.write(f"{mode:<10} login storm: {options.storm} connections logged in in "
                      f"{r['stormSeconds']:.2f} s; B's max stall {r['storm']['max'] / 1000:.1f} ms\n")


def main(argv=None, out=sys.stdout):
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--paced"]:
        port, username, password, rate, duration = argv[1:6]
        isRealtime = realtime()
        json.dump({"realtime": isRealtime,
                   "latencies": paced(int(port), username, password, float(rate), float(duration))}, out)
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m memcachier.bench.neighbours", description=__doc__.split("\n\n")[0]
    )
    addMcloadOption(parser, "the mcload binary, or its mcload.c (built with gcc) "
                    "(default: $MCLOAD, ../shared/bench/mcload)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of flood before B is measured (2)")
    parser.add_argument("--rate", type=float, default=400.0, help="tenant B's gets a second (400)")
    parser.add_argument("--connections", type=int, default=50, help="tenant A's connections (50)")
    parser.add_argument("--depth", type=int, default=4, help="tenant A's requests in flight each (4)")
    parser.add_argument("--storm", type=int, default=5000,
                        help="connections logging in at once in the storm run (5000; 0: none)")
    parser.add_argument("--introspection", choices=("on", "off"), default="on",
                        help="[analytics] introspection of the node (on)")
    parser.add_argument("--login-batch", type=int,
                        help="[memcache] login_batch of the node (default: the node's, 16)")
    parser.add_argument("--reading", type=int,
                        help="[limits] scheduler_reading of the node (default: the node's, 8)")
    parser.add_argument("--server-cpu", type=int,
                        help="CPU of the node (1 on a machine of two or more; none: anywhere)")
    parser.add_argument("--client-cpu", type=int,
                        help="CPU of the clients (0 on a machine of two or more)")
    parser.add_argument("--only", choices=("on", "off"), help="run with the scheduler on or off only")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    options = parser.parse_args(argv)
    options.server_cpu, options.client_cpu = defaultPinning(options.server_cpu, options.client_cpu)
    if options.client_cpu is not None:
        os.sched_setaffinity(0, {options.client_cpu})
    directory = tempfile.mkdtemp(prefix="memcachier-bench-neighbours-")
    try:
        mcload = findMcload(options.mcload, directory)
        results = {}
        for mode in ("off", "on"):
            if options.only in (None, mode):
                results[mode] = runMode(mode == "on", mcload, options, directory)
        report(results, options, out)
        return 1 if any(r["A"]["errors"] for r in results.values()) else 0
    finally:
        if options.keep:
            out.write(f"kept {directory}\n")
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
