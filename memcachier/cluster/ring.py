# -*- test-case-name: tests.unit.test_cluster -*-
"""
Server-side placement: the same continuum libmemcached builds with the
C{ketama} behaviour (pylibmc C{behaviors={"ketama": True}}, MemCachier's
documented client settings), so a client configured that way reaches a
key's owner directly and the server agrees with it.

libmemcached (C{libmemcached/hosts.cc}, C{update_continuum}, unweighted
ketama) puts 100 points per server on a 32-bit circle; point C{i} of
server C{host:port} is the one-at-a-time hash of C{"host:port-i"}, or of
C{"host-i"} when the port is memcached's default 11211.  A key's hash is
the one-at-a-time hash of the key; its owner is the server of the first
point at or after it, wrapping round to the first point.  Servers are taken
in the order given (C{MEMCACHIER_SERVERS} order): points that collide sort
by hash only, with the earlier server first, as libmemcached's stable
C{qsort} of its continuum does in practice.

Placement is on the hot path of every keyed request of a cluster.  The
hash runs in C through libhashkit (libmemcached's, loaded with C{ctypes})
when the library is installed, in Python otherwise (same values, about
ten times slower); and each ring remembers the owners of up to
L{OWNER_CACHE} recent keys, so a hot key costs one dict lookup.
"""

import bisect

#: libmemcached's MEMCACHED_POINTS_PER_SERVER (unweighted ketama)
POINTS_PER_SERVER = 100
#: memcached's default port: libmemcached leaves it out of the point names
DEFAULT_PORT = 11211
#: owners each ring remembers (forgotten all at once when full)
OWNER_CACHE = 65536


def oneAtATime(data):
    """
    libhashkit's one-at-a-time hash (Bob Jenkins), libmemcached's default
    key hash.  Bytes are sign-extended as the C code's C{char} is.

    @type data: L{bytes}
    @rtype: L{int} (unsigned 32 bits)
    """
    value = 0
    for byte in data:
        if byte >= 0x80:
            byte |= 0xFFFFFF00
        value = (value + byte) & 0xFFFFFFFF
        value = (value + (value << 10)) & 0xFFFFFFFF
        value ^= value >> 6
    value = (value + (value << 3)) & 0xFFFFFFFF
    value ^= value >> 11
    value = (value + (value << 15)) & 0xFFFFFFFF
    return value


def _libhashkit():
    """
    libhashkit's C{libhashkit_one_at_a_time}, or L{None} when the library
    is not installed.
    """
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("hashkit")
        if name is None:
            return None
        function = ctypes.CDLL(name).libhashkit_one_at_a_time
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    function.restype = ctypes.c_uint32
    if function(b"a", 1) != oneAtATime(b"a"):
        return None
    return lambda key: function(key, len(key))


#: the key hash: libhashkit's when available, else L{oneAtATime}
keyHash = _libhashkit() or oneAtATime


def _pointName(server, index):
    host, _, port = server.rpartition(":")
    if port == str(DEFAULT_PORT):
        return f"{host}-{index}".encode("utf-8")
    return f"{server}-{index}".encode("utf-8")


class Ring:
    """
    The ketama continuum of a list of servers.

    @ivar servers: the C{host:port} names, in the order given.
    """

    def __init__(self, servers):
        self.servers = tuple(servers)
        points = []
        for order, server in enumerate(self.servers):
            for index in range(POINTS_PER_SERVER):
                points.append((oneAtATime(_pointName(server, index)), order))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._owners = [self.servers[order] for _, order in points]
        self._cache = {}

    def __len__(self):
        return len(self.servers)

    def owner(self, key):
        """
        The server owning C{key}, or L{None} for an empty ring.

        @type key: L{bytes}
        """
        owner = self._cache.get(key)
        if owner is not None:
            return owner
        owners = self._owners
        if not owners:
            return None
        if len(self.servers) == 1:
            return owners[0]
        i = bisect.bisect_left(self._hashes, keyHash(key))
        if i == len(owners):
            i = 0
        owner = owners[i]
        cache = self._cache
        if len(cache) >= OWNER_CACHE:
            cache.clear()
        cache[key] = owner
        return owner

    def shares(self):
        """
        The fraction of the hash circle each server owns (its plan memory
        share).

        @return: L{dict} of server to a L{float}; the values sum to 1.
        """
        if not self._owners:
            return {}
        if len(self.servers) == 1:
            return {self.servers[0]: 1.0}
        total = 1 << 32
        shares = dict.fromkeys(self.servers, 0)
        previous = self._hashes[-1] - total
        for h, owner in zip(self._hashes, self._owners):
            shares[owner] += h - previous
            previous = h
        return {server: span / total for server, span in shares.items()}
