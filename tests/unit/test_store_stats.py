"""
What C{stats slabs} and C{stats items} say about the memory store, over the
ASCII codec without sockets.
"""

from tests.unit.helpers import World


def exchange(conn, data):
    proto, transport = conn
    transport.clear()
    proto.dataReceived(data)
    return transport.value()


def stat(conn, command, name):
    for line in exchange(conn, command + b"\r\n").split(b"\r\n"):
        if line.startswith(b"STAT %s " % name):
            return int(line.split()[2])
    raise AssertionError(f"no STAT {name} in {command}")


def test_storingOverExpiredItemsDoesNotGrowTotalMalloced():
    """
    Once items have expired, storing new ones reuses their room, as
    memcached's tail reclaim does: C{total_malloced} stays where it was,
    the expired items count as reclaimed, nothing is evicted.
    """
    world = World()
    conn = world.connect()
    assert exchange(conn, b"set rw 0 0 6\r\nsecret\r\n") == b"STORED\r\n"
    for i in range(30):
        exchange(conn, b"set old%d 0 5 100\r\n%b\r\n" % (i, b"v" * 100))
    held = stat(conn, b"stats slabs", b"total_malloced")
    assert held >= 30 * 100
    world.clock.advance(10)
    for i in range(30):
        exchange(conn, b"set new%d 0 0 100\r\n%b\r\n" % (i, b"v" * 100))
    assert stat(conn, b"stats slabs", b"total_malloced") <= held
    assert stat(conn, b"stats items", b"items:1:reclaimed") == 30
    assert stat(conn, b"stats items", b"items:1:evicted") == 0
    assert stat(conn, b"stats", b"curr_items") == 30
