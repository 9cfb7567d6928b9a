# -*- test-case-name: tests.unit.test_memory_store -*-
"""
The seams of memcachier: stores (pluggable), keyspaces (one cache's keys)
and alert deliverers.

Interface methods are declared without C{self} so that C{verifyObject}
checks real signatures; their annotations are what mypy (with the
C{mypy-zope} plugin) holds implementations and callers to.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar, Union

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, Interface

from memcachier.commands import DeleteResult, DeltaResult, StoreMode, StoreResult

_T = TypeVar("_T")

#: what an answering method of a keyspace returns: the result itself, or
#: a L{Deferred} firing with it
Answer: TypeAlias = Union[_T, "Deferred[_T]"]

#: an item as L{memcachier.commands.packItem} builds it
Item: TypeAlias = bytes


class IKeyspace(Interface):
    """
    The keys of one cache.  A keyspace never sees wire bytes, transports
    or credentials; the session has already checked auth, capabilities and
    key syntax.

    The answering methods (C{get}, C{getMany}, C{peek}, C{touch},
    C{store}, C{delete}, C{delta}, C{flush}) may return their result
    directly or a L{Deferred} firing with it; C{stats}, C{resetStats},
    C{configure} and C{keys} answer directly.  A keyspace whose
    C{synchronous} attribute is true promises to never return a
    L{Deferred}, which lets the session serve it without a Deferred per
    request.  Calls arrive in the order of a connection's requests, even
    while earlier answers are pending.

    A call that cannot be answered raises (or fails its Deferred with)
    L{memcachier.commands.KeyspaceError}, whose text the client sees;
    that request alone is answered with an error.

    Expiry times are absolute seconds of the store's clock (the injected
    reactor's C{seconds()}); C{0} means never, and any time not after
    "now" means already expired.  The session converts memcached's wire
    exptime (relative up to 30 days, absolute beyond, negative = expired)
    before calling.

    Items are handed out as what L{memcachier.commands.packItem} builds:
    one immutable L{bytes} holding the CAS, expiry, flags and value, which
    codecs read with C{itemValue}, C{itemFlags}, C{itemCas}, ... and send
    as they are.  A store that keeps items another way packs them on the
    way out; the memory store keeps exactly these, so the garbage
    collector never sees its items.
    """

    synchronous = Attribute("L{True} if no method ever returns a L{Deferred}.")

    def get(key: bytes) -> Answer[Item | None]:
        """
        Fetch an item and bump it in the LRU.

        @type key: L{bytes}
        @return: the item (L{memcachier.commands.packItem}), or L{None} on a miss
            (missing, expired or flushed).
        """

    def getMany(keys: Sequence[bytes]) -> Answer[list[Item | None]]:
        """
        Fetch several items at once (multi-get), bumping each hit.

        @type keys: L{list} of L{bytes}
        @return: a L{list} as long as C{keys} of items or L{None}s.
        """

    def peek(key: bytes) -> Answer[Item | None]:
        """
        Fetch an item without bumping it or marking it fetched
        (meta C{me}, key stats).

        @return: the item (L{memcachier.commands.packItem}) or L{None}.
        """

    def touch(key: bytes, exptime: float) -> Answer[Item | None]:
        """
        Fetch an item, bump it and set its expiry (C{touch}, C{gat}).

        @param exptime: new absolute expiry, C{0} for never.
        @return: the item (L{memcachier.commands.packItem}) or L{None}.
        """

    def store(
        mode: StoreMode, key: bytes, value: bytes, flags: int, exptime: float, cas: int
    ) -> Answer[tuple[StoreResult, int]]:
        """
        Store an item.

        @type mode: L{memcachier.commands.StoreMode}
        @param cas: for C{StoreMode.CAS} (or any mode when non-zero), the
            CAS unique the existing item must have.
        @return: a 2-tuple of L{memcachier.commands.StoreResult} and the
            stored item's new CAS unique (C{0} when not stored).
            C{TOO_LARGE} when key plus value exceeds the keyspace's item
            size limit, C{NOT_STORED} when append/prepend would grow it
            beyond (memcached's answer); C{NO_MEMORY} when the item cannot
            fit even in an empty keyspace.
        """

    def delete(key: bytes, cas: int) -> Answer[DeleteResult]:
        """
        Remove an item.

        @param cas: if non-zero, delete only if the item's CAS matches.
        @return: a L{memcachier.commands.DeleteResult}.
        """

    def delta(
        key: bytes, incr: bool, delta: int, initial: int | None, exptime: float, cas: int
    ) -> Answer[tuple[DeltaResult, int, int]]:
        """
        Increment or decrement a decimal value: incr wraps at 2**64, decr
        floors at 0.

        @param incr: L{True} for incr, L{False} for decr.
        @param initial: L{None} not to create a missing item, else the value
            to create it with (binary protocol, meta C{N} flag).
        @param exptime: absolute expiry for a created item.
        @param cas: if non-zero, apply only if the item's CAS matches.
        @return: a 3-tuple of L{memcachier.commands.DeltaResult}, the new
            value (L{int}) and the new CAS unique.
        """

    def flush(delay: float) -> Answer[None]:
        """
        Invalidate every item now (C{delay} 0) or all items stored before
        C{delay} seconds from now, as memcached's C{flush_all <delay>}.
        """

    def stats() -> dict[str, int]:
        """
        The keyspace's own counters with memcached's names: C{curr_items},
        C{total_items}, C{bytes}, C{limit_maxbytes}, C{evictions},
        C{get_expired}, C{get_flushed}, C{expired_unfetched},
        C{evicted_unfetched}, C{reclaimed}.

        @rtype: L{dict} of L{str} to L{int}
        """

    def resetStats() -> None:
        """
        Zero the cumulative counters (not C{curr_items} or C{bytes}).
        """

    def configure(maxBytes: int, maxItemSize: int) -> None:
        """
        Change the memory limit (evicting at once if now over it) and the
        key+value size limit, for a plan change.
        """

    def keys() -> Iterable[bytes]:
        """
        Iterate over live keys (introspection, tests).  Need not be fast.
        """


class IStore(Interface):
    """
    A storage backend holding the keyspaces of many caches.
    """

    def keyspace(cacheId: int, maxBytes: int, maxItemSize: int) -> "IKeyspace":
        """
        The keyspace of cache C{cacheId}, created empty on first use.

        @type cacheId: L{int}
        @param maxBytes: memory limit; the keyspace evicts (LRU) to stay
            within it.
        @param maxItemSize: key+value size limit in bytes.
        @rtype: L{IKeyspace}
        """

    def dropKeyspace(cacheId: int) -> None:
        """
        Forget a cache's keyspace and free its memory (cache deleted).
        """

    def close() -> "Deferred[None] | None":
        """
        Release backend resources at shutdown.

        @return: L{None} or a L{Deferred}.
        """


class ISnapshottableStore(Interface):
    """
    A store whose items survive a restart (warm restart,
    L{memcachier.node.snapshot}): it hands out its items to be written to
    a snapshot, and takes them back on the next start.  A store without
    this interface starts cold.
    """

    def snapshotCaches() -> Iterable[int]:
        """
        The ids of the caches this store holds a keyspace of.
        """

    def snapshotItems(cacheId: int) -> Iterable[tuple[bytes, Item]]:
        """
        A cache's live items as C{(key, item)}, least recently used first
        (so restoring them in this order rebuilds the LRU).  Iterated
        synchronously, with nothing else running: the store must not
        change under it.
        """

    def pendingFlush(cacheId: int) -> float | None:
        """
        When a delayed flush (C{flush_all <delay>}) of the cache falls due,
        in store-clock seconds, or L{None} if none is pending.
        """

    def casFloor() -> int:
        """
        A number above every CAS unique this store has handed out.
        """

    def restoreItems(
        cacheId: int, maxBytes: int, maxItemSize: int, items: Iterable[tuple[bytes, Item]]
    ) -> int:
        """
        Put items back into a cache's keyspace (created if missing), the
        least recently used first, as they are (value, flags, absolute
        expiry, CAS), skipping the expired ones and those larger than
        C{maxItemSize}, and evicting as a store would when they exceed
        C{maxBytes}.

        @return: how many were put back.
        """

    def resumeCas(floor: int) -> None:
        """
        Hand out CAS uniques above C{floor} from now on.
        """


class IStorePlugin(Interface):
    """
    A store plugin, found with C{twisted.plugin.getPlugins(IStorePlugin,
    memcachier.plugins)} and chosen by C{name} in the config.
    """

    name = Attribute("The name the config's C{[store] plugin} key selects, e.g. C{'memory'}.")
    description = Attribute("One line for C{memcachier-admin store list}.")

    def makeStore(settings: Mapping[str, Any], reactor: IReactorTime) -> IStore:
        """
        Build the store.

        @param settings: the C{[store]} table of the config, a L{dict}.
        @param reactor: the reactor; its C{seconds()} is the store's clock.
        @rtype: L{IStore}
        """


class IAlertDeliverer(Interface):
    """
    Delivers alert messages to one destination (an email address, a Slack
    incoming webhook, a signed webhook); see L{memcachier.alerts.delivery}.
    A deliverer never blocks: everything it does is on the reactor.
    """

    def deliver(message: Any) -> "Deferred[Any]":
        """
        Send one message.

        @param message: a L{memcachier.alerts.message.AlertMessage}.
        @return: a L{Deferred} that fires when the destination accepted
            the message, and fails (with L{memcachier.alerts.delivery.DeliveryError}
            or the transport's error) otherwise.  It does not retry: the
            caller does (L{memcachier.alerts.service}).
        """
