# -*- test-case-name: tests.unit.test_throttle -*-
"""
Brute-force defence for memcache authentication (SASL PLAIN and ASCII
auth).

Every failed login spends one token from two token buckets: its source
address's and its username's.  An attempt is admitted only while both
buckets hold a token, and that is checked I{before} the password is, so
once a budget is spent the right password gets the same answer, just as
fast, as a wrong one: guesses sent in parallel, pipelined without waiting
for replies or spread over many connections all draw on the same buckets.

Successes cost nothing and refund nothing: an application reconnecting
thousands of times a second is never slowed, and a valid login to one's
own cache cannot buy guesses against another.  Bucket levels are floats
bounded by C{burst}; nothing is exponentiated, so nothing can overflow.
Each table holds at most C{maxEntries} keys (least recently used dropped
first; a dropped key only loses debt it would have repaid anyway), so a
flood of distinct addresses or usernames cannot grow memory.  IPv6
addresses are counted per /64, the block one host usually owns.

The username's budget is shared by everyone who tries that username, so
spraying it with wrong passwords from one address would also refuse the
application that rightly logs in as it from another.  So an address that
has logged in as a username within C{rememberFor} seconds keeps its access:
the username's budget does not refuse it (its own address budget still
does, and its failures still spend both).  Those (username, address) pairs
live in one bounded LRU (C{rememberEntries}); the attacker's address, never
having logged in, still spends and is refused by both budgets.
"""

import ipaddress
import math
from collections import OrderedDict

from twisted.logger import Logger

from memcachier.tx.ceiling import Bursts


#: longest username a log line repeats (it is attacker-controlled)
_LOGGED_USERNAME = 64


def addressKey(host):
    """
    The budget key of a peer address: the address itself, or its /64 for
    IPv6 (a host is handed a whole /64 and could rotate through it).

    @type host: L{str}
    @rtype: L{str}
    """
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class TokenBuckets:
    """
    One token bucket per key, refilled at C{rate} tokens a second up to
    C{burst}, in at most C{maxEntries} keys.

    A key never seen (or forgotten) has a full bucket, so only keys in
    debt need to be stored; the least recently spent are dropped first.
    """

    def __init__(self, rate, burst, maxEntries):
        self.rate = float(rate)
        self.burst = float(burst)
        self.maxEntries = maxEntries
        #: key -> (tokens, clock seconds when counted)
        self._entries = OrderedDict()

    def __len__(self):
        return len(self._entries)

    def level(self, key, now):
        """
        The tokens C{key} holds at C{now}, in [0, C{burst}].
        """
        entry = self._entries.get(key)
        if entry is None:
            return self.burst
        tokens, then = entry
        # a clock stepping back refills nothing; min() bounds the rest
        return min(self.burst, tokens + max(0.0, now - then) * self.rate)

    def spend(self, key, now):
        """
        Take one token from C{key}'s bucket (never below zero).
        """
        tokens = max(0.0, self.level(key, now) - 1.0)
        entries = self._entries
        entries.pop(key, None)
        entries[key] = (tokens, now)
        while len(entries) > self.maxEntries:
            entries.popitem(last=False)


class AuthThrottle:
    """
    Limits authentication failures per source address and per username.

    @ivar refused: attempts refused since start, unchecked.
    @ivar quietPeriod: seconds without a refusal that end a burst; the
        first refusal of each burst is logged (once), not every one.
    """

    _log = Logger()

    def __init__(self, rate=5.0, burst=10, maxEntries=20000, quietPeriod=60.0,
                 rememberFor=24 * 3600.0, rememberEntries=100000):
        """
        @param rate: failures a second each address and each username may
            sustain.
        @param burst: failures allowed at once before the rate applies.
        @param maxEntries: addresses (and, separately, usernames) tracked.
        @param rememberFor: seconds after its last login during which an
            address is not refused by the username's budget; 0: never.
        @param rememberEntries: (username, address) logins remembered.
        """
        self.addresses = TokenBuckets(rate, burst, maxEntries)
        self.usernames = TokenBuckets(rate, burst, maxEntries)
        self.rememberFor = float(rememberFor)
        self.rememberEntries = rememberEntries
        #: (username, address key) -> clock seconds of the last login
        self._known = OrderedDict()
        self._bursts = Bursts(quietPeriod)

    def admit(self, host, username, now):
        """
        Whether an attempt from C{host} for C{username} may have its
        password checked.  Does not depend on the password.

        @type host: L{str}
        @type username: L{bytes}
        @param now: the clock's seconds.
        @rtype: L{bool}
        """
        address = addressKey(host)
        if self.addresses.level(address, now) < 1.0:
            self._refuse("address", host, username, now)
            return False
        if self.usernames.level(username, now) < 1.0 and not self.known(host, username, now):
            self._refuse("username", host, username, now)
            return False
        return True

    def retryAfter(self, host, username, now):
        """
        Whole seconds until an attempt L{admit} refuses now could be
        admitted (at least 1), for an HTTP C{Retry-After}.

        @rtype: L{int}
        """
        levels = [self.addresses.level(addressKey(host), now)]
        if not self.known(host, username, now):
            levels.append(self.usernames.level(username, now))
        missing = 1.0 - min(levels)
        rate = self.addresses.rate
        if missing <= 0 or rate <= 0:
            return 1
        return max(1, math.ceil(missing / rate))

    def failed(self, host, username, now):
        """
        An admitted attempt failed: spend from both budgets.
        """
        self.addresses.spend(addressKey(host), now)
        self.usernames.spend(username, now)

    def succeeded(self, host, username, now):
        """
        C{host} logged in as C{username}: remember it for C{rememberFor}
        seconds (see L{known}).  Spends and refunds nothing.
        """
        if self.rememberFor <= 0:
            return
        known = self._known
        key = (username, addressKey(host))
        known.pop(key, None)
        known[key] = now
        while len(known) > self.rememberEntries:
            known.popitem(last=False)

    def known(self, host, username, now):
        """
        Whether C{host} logged in as C{username} within the last
        C{rememberFor} seconds: then the username's budget does not refuse
        it.
        """
        key = (username, addressKey(host))
        then = self._known.get(key)
        if then is None:
            return False
        if not 0.0 <= now - then <= self.rememberFor:
            del self._known[key]
            return False
        return True

    @property
    def remembered(self):
        """
        How many (username, address) logins are remembered.
        """
        return len(self._known)

    @property
    def refused(self):
        return self._bursts.total

    def _refuse(self, by, host, username, now):
        previous = self._bursts.occurred(now)
        if previous is None:
            return
        self._log.warn(
            "auth flood throttled: {by} over budget (address {address}, username "
            "{username}); refusing logins without checking passwords, logged once "
            "per burst ({previousBurst} refused in the previous burst)",
            event="auth_flood_throttled",
            by=by,
            address=host,
            username=username[:_LOGGED_USERNAME].decode("utf-8", "replace"),
            previousBurst=previous,
        )
