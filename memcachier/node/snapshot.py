# -*- test-case-name: tests.unit.test_snapshot -*-
"""
Warm restart: the caches' items written to a snapshot on a graceful stop
and put back at the next start, before the memcache port accepts.

The snapshot is one file in C{[node] state_dir}, streamed block by block
(never built whole in memory)::

    magic (8 bytes) | format version (u32)
    block*          | each: kind (u8), length (u32), CRC-32 of kind, length
                    |       and payload (u32), payload
    CACHE block     : JSON of the cache's identity (id, uuid, created_at,
                      cluster) and its pending delayed flush
    ITEMS block*    : the cache's items, least recently used first, each
                      key length (u16), item length (u32), key, item
                      (L{memcachier.commands.packItem}'s bytes as they are)
    END block       : JSON of the counts and the store's CAS floor; the
                      file ends there

It is written to a temporary file, synced and renamed into place, so a
snapshot is whole or absent.  A start that finds one deletes it before
reading it: once the node serves, what it holds changes, and a node killed
later (C{kill -9}) must not come back with the old values.  Any fault (a
missing END, a checksum, another format version) rolls back what was
restored and the node starts cold, with one log line saying why.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import zlib
from time import perf_counter
from types import FrameType
from typing import IO, Any, Callable, Iterator, Optional

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from memcachier.interfaces import IStore, ISnapshottableStore

#: the first bytes of a snapshot (C{\r\n} catches a text-mode copy)
MAGIC = b"MCSNAP\r\n"
#: the layout this node writes and reads; any other starts cold
FORMAT_VERSION = 1
#: the snapshot a graceful stop writes and the next start consumes
SNAPSHOT_NAME = "snapshot"
#: what an on-demand snapshot (C{SIGUSR1}, C{memcachier-admin node
#: snapshot}) writes: never restored by itself (it ages while the node
#: runs); an operator renames it to L{SNAPSHOT_NAME} to restore it
MANUAL_NAME = "snapshot.manual"
#: present while the node runs: a start that finds it and no snapshot
#: knows the last run did not stop cleanly
RUNNING_NAME = "running"
#: a snapshot being written ends so until it is renamed into place
TEMP_SUFFIX = ".tmp"
#: a start with warm restart on hands out CAS uniques from at least the
#: clock's seconds times this (2**20)
CAS_PER_SECOND = 1 << 20

CACHE, ITEMS, END = 1, 2, 3
_HEADER = struct.Struct("<I")
_BLOCK = struct.Struct("<BII")
_ITEM = struct.Struct("<HI")
#: payload bytes gathered before an ITEMS block is written
BLOCK_BYTES = 1 << 20
#: a longer block is corruption (an item is at most a plan's item size,
#: well below this)
MAX_BLOCK = 1 << 30


class SnapshotError(Exception):
    """
    A snapshot that cannot be restored: its text says why.
    """


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Saved:
    """
    What L{writeSnapshot} wrote.
    """

    caches: int
    items: int
    size: int


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Restored:
    """
    What L{restoreSnapshot} did.

    @ivar items: items in the snapshot; C{restored} of them were put back,
        C{dropped} belonged to caches deleted, moved or flushed meanwhile
        (the rest had expired, outgrew the item size or the plan).
    """

    caches: int
    items: int
    restored: int
    dropped: int


def _writeBlock(f: IO[bytes], kind: int, payload: bytes) -> None:
    head = struct.pack("<BI", kind, len(payload))
    f.write(_BLOCK.pack(kind, len(payload), zlib.crc32(payload, zlib.crc32(head))))
    f.write(payload)


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def writeSnapshot(path: str, store: Any, caches: list[tuple[int, dict[str, Any]]]) -> Saved:
    """
    Write the items of C{caches} to C{path}: to a temporary file, synced,
    then renamed over C{path}.  Synchronous: the store must not change
    meanwhile (call it from the reactor thread).

    @param store: an L{ISnapshottableStore}.
    @param caches: C{(cache id, identity)}: the identity is written as it
        is and handed back at restore.
    """
    temp = path + TEMP_SUFFIX
    items = 0
    pack = _ITEM.pack
    try:
        with open(temp, "wb") as f:
            f.write(MAGIC + _HEADER.pack(FORMAT_VERSION))
            floor = store.casFloor()
            for cacheId, identity in caches:
                meta = dict(identity, flush_at=store.pendingFlush(cacheId))
                _writeBlock(f, CACHE, _json(meta))
                parts: list[bytes] = []
                append = parts.append
                size = 0
                for key, item in store.snapshotItems(cacheId):
                    append(pack(len(key), len(item)))
                    append(key)
                    append(item)
                    size += len(key) + len(item)
                    if size >= BLOCK_BYTES:
                        items += len(parts) // 3
                        _writeBlock(f, ITEMS, b"".join(parts))
                        parts.clear()
                        size = 0
                if parts:
                    items += len(parts) // 3
                    _writeBlock(f, ITEMS, b"".join(parts))
            _writeBlock(f, END, _json({"caches": len(caches), "items": items, "cas_floor": floor}))
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(temp, path)
    except BaseException:
        _remove(temp)
        raise
    _syncDirectory(os.path.dirname(path) or ".")
    return Saved(len(caches), items, size)


def _remove(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _syncDirectory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotReader:
    """
    Reads a snapshot as a stream: L{caches} yields each cache's identity
    and an iterator of its items; once it is exhausted the whole file has
    been checked (L{end} then holds the END block).

    @raise SnapshotError: from the constructor or while iterating, for a
        file that is not a whole snapshot of this format.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        head = f.read(len(MAGIC) + _HEADER.size)
        if len(head) < len(MAGIC) + _HEADER.size:
            raise SnapshotError("truncated (no header)")
        if head[:len(MAGIC)] != MAGIC:
            raise SnapshotError("not a snapshot (bad magic)")
        (version,) = _HEADER.unpack_from(head, len(MAGIC))
        if version != FORMAT_VERSION:
            raise SnapshotError(f"format version {version}, this node reads {FORMAT_VERSION}")
        self._blocks = 0
        self._pending: Optional[tuple[int, bytes]] = None
        self.items = 0
        self.end: Optional[dict[str, Any]] = None

    def _block(self) -> tuple[int, bytes]:
        head = self._f.read(_BLOCK.size)
        if len(head) < _BLOCK.size:
            raise SnapshotError(f"truncated after block {self._blocks} (no end block)")
        kind, length, crc = _BLOCK.unpack(head)
        if length > MAX_BLOCK:
            raise SnapshotError(f"corrupt: block {self._blocks + 1} claims {length} bytes")
        payload = self._f.read(length)
        if len(payload) < length:
            raise SnapshotError(f"truncated in block {self._blocks + 1}")
        if zlib.crc32(payload, zlib.crc32(head[:5])) != crc:
            raise SnapshotError(f"corrupt: checksum mismatch in block {self._blocks + 1}")
        self._blocks += 1
        return kind, payload

    def _items(self) -> Iterator[tuple[bytes, bytes]]:
        unpack = _ITEM.unpack_from
        headSize = _ITEM.size
        while True:
            kind, payload = self._block()
            if kind != ITEMS:
                self._pending = (kind, payload)
                return
            pos = 0
            end = len(payload)
            count = 0
            while pos < end:
                keyLength, itemLength = unpack(payload, pos)
                pos += headSize
                key = payload[pos:pos + keyLength]
                pos += keyLength
                item = payload[pos:pos + itemLength]
                pos += itemLength
                count += 1
                yield key, item
            if pos != end:
                raise SnapshotError(f"corrupt: items overrun block {self._blocks}")
            self.items += count

    def caches(self) -> Iterator[tuple[dict[str, Any], Iterator[tuple[bytes, bytes]]]]:
        kind, payload = self._block()
        caches = 0
        while kind == CACHE:
            caches += 1
            items = self._items()
            yield _loads(payload), items
            for _ in items:
                pass
            assert self._pending is not None
            kind, payload = self._pending
        if kind != END:
            raise SnapshotError(f"corrupt: unknown block kind {kind}")
        end = _loads(payload)
        if end.get("caches") != caches or end.get("items") != self.items:
            raise SnapshotError("corrupt: counts do not match the end block")
        if self._f.read(1):
            raise SnapshotError("corrupt: bytes after the end block")
        self.end = end


def _loads(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except ValueError:
        raise SnapshotError("corrupt: unreadable block")
    if not isinstance(value, dict):
        raise SnapshotError("corrupt: unreadable block")
    return value


def restoreSnapshot(
    f: IO[bytes],
    store: Any,
    limitsOf: Callable[[dict[str, Any]], Optional[tuple[int, int]]],
    now: float,
) -> tuple[Restored, list[tuple[int, float]]]:
    """
    Put a snapshot's items back into C{store}, all or nothing: on any
    fault the caches restored so far are dropped again.

    @param store: an L{ISnapshottableStore} (and L{IStore}).
    @param limitsOf: a cache's identity as written to its maximum bytes and
        item size now, or L{None} if the cache is gone or no longer the
        same (deleted, recreated, moved, flushed).
    @param now: the store clock's time.
    @return: what was done, and the delayed flushes still pending, as
        C{(cache id, due time)}, to be scheduled again.
    @raise SnapshotError: the snapshot was not restored (nothing was).
    """
    restored: list[int] = []
    flushes: list[tuple[int, float]] = []
    linked = dropped = 0
    try:
        reader = SnapshotReader(f)
        for meta, items in reader.caches():
            limits = limitsOf(meta)
            flushAt = meta.get("flush_at")
            if limits is None or (flushAt is not None and flushAt <= now):
                dropped += sum(1 for _ in items)
                continue
            cacheId = meta["id"]
            restored.append(cacheId)
            linked += store.restoreItems(cacheId, limits[0], limits[1], items)
            if flushAt is not None:
                flushes.append((cacheId, flushAt))
        assert reader.end is not None
        store.resumeCas(int(reader.end["cas_floor"]))
    except Exception as e:
        for cacheId in restored:
            store.dropKeyspace(cacheId)
        if isinstance(e, SnapshotError):
            raise
        raise SnapshotError(f"corrupt: {type(e).__name__}: {e}") from e
    return Restored(len(restored), reader.items, linked, dropped), flushes


def cacheIdentity(cache: Any) -> dict[str, Any]:
    """
    What says a cache is still the one a snapshot was taken of: its id,
    the uuid and creation time a recreated cache does not share, and its
    cluster (a cache that moved away was emptied here).  The snapshot
    adds the cache's flush generation: one recorded since means the cache
    was flushed meanwhile.
    """
    return {
        "id": cache.id,
        "uuid": cache.uuid,
        "created_at": cache.created_at,
        "cluster": cache.cluster,
    }


class WarmRestart(Service):
    """
    Restores the snapshot once the control index is loaded (then fires
    L{restored}, which the listeners wait for), and writes one when the
    node stops, after the connections drained (it stops after the
    listeners, before the store closes).  On C{SIGUSR1} it writes an
    on-demand snapshot (L{MANUAL_NAME}).

    @ivar restored: fires once the restore is done (or skipped), never
        fails.
    """

    _log = Logger()

    def __init__(
        self,
        store: IStore,
        index: Any,
        stateDir: str,
        enabled: bool,
        clock: Any,
        ready: Deferred[Any],
        installSignal: bool = True,
        storeName: str = "",
    ) -> None:
        """
        @param index: the control index (C{cache}, C{planOf}).
        @param stateDir: C{[node] state_dir}; empty for no warm restart.
        @param ready: fires once the index is loaded.
        """
        self.store = store
        self.index = index
        self.stateDir = stateDir
        self.enabled = bool(stateDir) and enabled
        self.clock = clock
        self.installSignal = installSignal
        self.storeName = storeName
        self.restored: Deferred[None] = Deferred()
        self._done = False
        self._previous: Any = None
        ready.addBoth(self._ready)

    def _path(self, name: str) -> str:
        return os.path.join(self.stateDir, name)

    def _ready(self, result: object) -> object:
        try:
            self.restore()
        except Exception:
            self._log.failure("warm restart: the restore failed; starting cold")
        self._done = True
        self.restored.callback(None)
        return result

    def restore(self) -> None:
        """
        Restore the snapshot if there is one; log one line saying what
        happened.
        """
        if not self.stateDir:
            return
        if not self.enabled:
            self._log.info(
                "warm restart: off ([node] warm_restart = false); starting cold",
                event="warm_restart", outcome="off",
            )
            return
        if not ISnapshottableStore.providedBy(self.store):
            self.enabled = False
            self._log.warn(
                "warm restart: the store plugin {plugin} cannot be snapshotted; starting cold",
                event="warm_restart", outcome="unsupported", plugin=self.storeName,
            )
            return
        try:
            os.makedirs(self.stateDir, exist_ok=True)
        except OSError as e:
            self.enabled = False
            self._log.error(
                "warm restart: cannot use state_dir {dir} ({error}); starting cold, "
                "and no snapshot will be taken",
                event="warm_restart", outcome="no_state_dir", dir=self.stateDir, error=str(e),
            )
            return
        path = self._path(SNAPSHOT_NAME)
        unfinished = _remove(path + TEMP_SUFFIX)
        unclean = os.path.exists(self._path(RUNNING_NAME))
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            self._cold(unfinished, unclean)
            self._markRunning()
            return
        started = perf_counter()
        with f:
            # consumed before it is read: from here on what the node holds
            # changes, and a later kill -9 must not bring this back
            os.unlink(path)
            try:
                done, flushes = restoreSnapshot(f, self.store, self._limitsOf, self.clock.seconds())
            except SnapshotError as e:
                self._log.warn(
                    "warm restart: snapshot {path} is unusable ({reason}); starting cold",
                    event="warm_restart", outcome="unusable", path=path, reason=str(e),
                )
                self._markRunning()
                return
        for cacheId, flushAt in flushes:
            plan = self.index.planOf(cacheId)
            keyspace = self.store.keyspace(cacheId, plan.memory, plan.item_size)
            keyspace.flush(max(0.0, flushAt - self.clock.seconds()))
        self._log.info(
            "warm restart: restored {restored} of {items} items of {caches} caches from {path} "
            "in {seconds:.2f}s ({dropped} of caches deleted, moved or flushed meanwhile; "
            "the rest expired or over the plan)",
            event="warm_restart", outcome="restored", restored=done.restored, items=done.items,
            caches=done.caches, dropped=done.dropped, path=path,
            seconds=perf_counter() - started,
        )
        self._markRunning()

    def _cold(self, unfinished: bool, unclean: bool) -> None:
        if unfinished:
            message = ("warm restart: the last snapshot was not finished (the node was stopped "
                       "while writing it); starting cold")
            outcome = "unfinished"
        elif unclean:
            message = ("warm restart: the node did not stop cleanly last time (kill -9, a crash "
                       "or a power loss), so there is no snapshot; starting cold")
            outcome = "unclean"
        else:
            message = "warm restart: no snapshot in {dir}; starting cold"
            outcome = "missing"
        self._log.info(message, event="warm_restart", outcome=outcome, dir=self.stateDir)

    def _markRunning(self) -> None:
        """
        Note that the node runs (see L{RUNNING_NAME}), and seed the CAS
        counter from the clock, so that even after a start without a
        snapshot (a kill -9) no CAS unique of an earlier run comes back
        while a node hands out fewer than L{CAS_PER_SECOND} a second on
        average.
        """
        self.store.resumeCas(int(self.clock.seconds() * CAS_PER_SECOND))  # type: ignore[attr-defined]
        try:
            with open(self._path(RUNNING_NAME), "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as e:
            self._log.warn("warm restart: cannot write {path}: {error}",
                           path=self._path(RUNNING_NAME), error=str(e))

    def _flushGeneration(self, cacheId: int) -> int:
        """
        The generation of the cache's last flush the control plane
        recorded (L{memcachier.cluster.flushes}), 0 if none.
        """
        recorded = self.index.flushGeneration(cacheId)
        return 0 if recorded is None else int(recorded.generation)

    def _limitsOf(self, meta: dict[str, Any]) -> Optional[tuple[int, int]]:
        cache = self.index.cache(meta.get("id"))
        if cache is None or cacheIdentity(cache) != {k: meta.get(k) for k in cacheIdentity(cache)}:
            return None
        if self._flushGeneration(cache.id) > meta.get("flush_generation", 0):
            # flushed while this node was down (a delayed flush still to
            # come is applied early: a loss of hits, never a stale value)
            return None
        try:
            plan = self.index.planOf(cache.id)
        except Exception:
            # its plan is no longer configured: it is not served as it was
            return None
        return plan.memory, plan.item_size

    def save(self, name: str = SNAPSHOT_NAME) -> Optional[Saved]:
        """
        Write the snapshot of every cache the store holds that the control
        plane still has.

        @return: what was written, or L{None} if nothing could be.
        """
        caches = []
        for cacheId in self.store.snapshotCaches():  # type: ignore[attr-defined]
            cache = self.index.cache(cacheId)
            if cache is not None:
                caches.append((cacheId, dict(
                    cacheIdentity(cache), flush_generation=self._flushGeneration(cacheId)
                )))
        path = self._path(name)
        started = perf_counter()
        try:
            saved = writeSnapshot(path, self.store, caches)
        except OSError as e:
            self._log.error(
                "warm restart: cannot write the snapshot {path} ({error})",
                event="warm_restart_saved", path=path, error=str(e),
            )
            return None
        self._log.info(
            "warm restart: saved {items} items of {caches} caches to {path} "
            "({size} bytes) in {seconds:.2f}s",
            event="warm_restart_saved", items=saved.items, caches=saved.caches, path=path,
            size=saved.size, seconds=perf_counter() - started,
        )
        return saved

    def startService(self) -> None:
        super().startService()
        if self.installSignal and self.enabled:
            self._previous = signal.signal(signal.SIGUSR1, self._signalled)

    def _signalled(self, signum: int, frame: Optional[FrameType]) -> None:
        self.clock.callFromThread(self.saveOnDemand)

    def saveOnDemand(self) -> Optional[Saved]:
        """
        An on-demand snapshot (L{MANUAL_NAME}), once the restore is done.
        """
        if not (self.enabled and self._done):
            return None
        return self.save(MANUAL_NAME)

    def stopService(self) -> None:
        super().stopService()
        if self.installSignal and self._previous is not None:
            signal.signal(signal.SIGUSR1, self._previous)
            self._previous = None
        if not (self.enabled and self._done):
            # stopped before the restore: the snapshot (if any) is still
            # there for the next start
            return
        if self.save() is not None:
            _remove(self._path(RUNNING_NAME))
