# -*- test-case-name: tests.unit.test_analytics_introspection -*-
"""
The introspection event codes the session emits, and the tap that drops
events.  Kept apart from L{memcachier.analytics.introspection} so that the
hot path imports nothing heavy.

Storage commands use their L{memcachier.commands.StoreMode} value (1-6).
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

#: A tap that drops events (introspection off, or before authentication):
#: a C-level no-op append.
discard = collections.deque(maxlen=0).append
