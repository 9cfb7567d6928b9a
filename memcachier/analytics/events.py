# -*- test-case-name: tests.unit.test_analytics_introspection -*-
"""
The introspection event codes the session emits, and the tap that drops
events.  Kept apart from L{memcachier.analytics.introspection} so that the
hot path imports nothing heavy.

Storage commands use their L{memcachier.commands.StoreMode} value (1-6).

Events hold only ints and bytes (multi-gets excepted, one per request):
such tuples are untracked by the garbage collector at its first pass, so
the events waiting for the next drain are never promoted to the old
generations.  Holding items or enum members there made every full
collection scan them, and full collections came often: they cost a
quarter of the CPU under load.

  - C{(GET|GAT|TOUCH, key, size)}: size of the value, -1 for a miss;
  - C{(GET_MANY, keys, items)}: the lists of the multi-get;
  - C{(mode, key, code, size)}: storage, C{mode} and C{code} the ints of
    L{memcachier.commands.StoreMode} and L{memcachier.commands.StoreResult};
  - C{(DELETE, key, code)}, C{(INCR|DECR, key, code)}: the int of the
    L{memcachier.commands.DeleteResult} / L{memcachier.commands.DeltaResult};
  - C{(FLUSH, b"", 0)};
  - C{(STATS, group, 0)}: a C{stats} command, C{group} the L{bytes} of
    what followed C{stats} (C{b""} for plain C{stats}).
"""

import collections

GET = 10
GET_MANY = 11
GAT = 12
TOUCH = 13
DELETE = 14
INCR = 15
DECR = 16
FLUSH = 17
STATS = 18

#: A tap that drops events (introspection off, or before authentication):
#: a C-level no-op append.
discard = collections.deque(maxlen=0).append
