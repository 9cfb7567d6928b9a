"""
Measure three figures of docs/security.md against a running server (they are
timings on a shared machine, so no test asserts them):

    python scripts/measure_hardening.py connect-burst --port 11211 --clients 5000
    python scripts/measure_hardening.py guesses --port 11211 --username U \\
        --password P --seconds 10
    python scripts/measure_hardening.py api-burst --port 8080 --cache 1 --username U \\
        --password P --requests 1000

C{connect-burst}: N clients connect at once and each sends C{version}; prints
the p50/p99/max time to the answer and how many never got one.

C{api-burst}: N HTTP clients connect at once and each asks the API v2
C{info} of the cache with Basic auth; prints the p50/p99/max time to the
status line and how many were not answered 200.

C{guesses}: 200 connections from one address send ASCII-auth guesses without
waiting for replies, reconnecting when closed, for S seconds; prints how
many guesses were checked (answered while the connection stayed open) per
second, and whether the right password, sent last, was accepted.
"""

import argparse
import asyncio
import base64
import time


async def _oneClient(port, request, answer, results, start):
    """
    Connect, send C{request}, and note the time from C{start} if the first
    line of the reply starts with C{answer}.
    """
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout=60
        )
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout=60)
        if line.startswith(answer):
            results.append(time.monotonic() - start)
        writer.close()
    except (OSError, asyncio.TimeoutError):
        pass


async def connectBurst(port, clients):
    results = []
    start = time.monotonic()
    await asyncio.gather(
        *[_oneClient(port, b"version\r\n", b"VERSION ", results, start) for _ in range(clients)]
    )
    _report(f"{clients} clients", clients, results)


async def apiBurst(port, cache, username, password, requests):
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    request = (
        f"GET /api/v2/caches/{cache}/info HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Basic {credentials}\r\nConnection: close\r\n\r\n"
    ).encode()
    results = []
    start = time.monotonic()
    await asyncio.gather(
        *[_oneClient(port, request, b"HTTP/1.1 200", results, start) for _ in range(requests)]
    )
    _report(f"{requests} API requests", requests, results)


def _report(what, count, results):
    results.sort()
    if not results:
        print(f"{what}: none answered")
        return

    def pct(p):
        return results[min(len(results) - 1, int(len(results) * p))]

    print(
        f"{what}: answered {len(results)}, not answered {count - len(results)}; "
        f"p50 {pct(0.5):.3f}s p99 {pct(0.99):.3f}s max {results[-1]:.3f}s"
    )


async def _guesser(port, username, deadline, counts):
    batch = b"".join(
        b"set %s 0 0 5\r\nguess\r\n" % username for _ in range(20)
    )
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        counts["sent"] += 20
        writer.write(batch)
        replies = 0
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), timeout=5)
                if not line:
                    break
                replies += 1
                if replies == 20:
                    break
        except (OSError, asyncio.TimeoutError):
            pass
        # the last reply of a closed connection is the refusal
        counts["checked"] += replies if replies == 20 else max(0, replies - 1)
        writer.close()


async def guesses(port, username, password, seconds):
    counts = {"sent": 0, "checked": 0}
    start = time.monotonic()
    await asyncio.gather(
        *[_guesser(port, username.encode(), start + seconds, counts) for _ in range(200)]
    )
    elapsed = time.monotonic() - start
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"set %s 0 0 %d\r\n%s\r\n" % (username.encode(), len(password), password.encode()))
    reply = await reader.readline()
    writer.close()
    print(
        f"{elapsed:.1f}s: {counts['sent']} guesses sent ({counts['sent'] / elapsed:.0f}/s), "
        f"{counts['checked']} checked ({counts['checked'] / elapsed:.2f}/s); "
        f"right password afterwards: {reply.strip().decode()}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    burst = sub.add_parser("connect-burst")
    burst.add_argument("--port", type=int, default=11211)
    burst.add_argument("--clients", type=int, default=5000)
    api = sub.add_parser("api-burst")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument("--cache", type=int, required=True, help="the cache id")
    api.add_argument("--username", required=True)
    api.add_argument("--password", required=True)
    api.add_argument("--requests", type=int, default=1000)
    guess = sub.add_parser("guesses")
    guess.add_argument("--port", type=int, default=11211)
    guess.add_argument("--username", required=True)
    guess.add_argument("--password", required=True)
    guess.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    if args.what == "connect-burst":
        asyncio.run(connectBurst(args.port, args.clients))
    elif args.what == "api-burst":
        asyncio.run(apiBurst(args.port, args.cache, args.username, args.password, args.requests))
    else:
        asyncio.run(guesses(args.port, args.username, args.password, args.seconds))


if __name__ == "__main__":
    main()
