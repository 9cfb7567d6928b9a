# -*- test-case-name: tests.unit.test_allocator -*-
"""
Which memory allocator the process runs on: jemalloc, however the node
is started, or one warning when it cannot be.

Under a cache of values of mixed sizes replaced at random, glibc's malloc
keeps the memory freed by replaced values in fragmented arenas: resident
memory grew +34 % in the 10-minute soak, while jemalloc stays flat
(C{docs/performance.md}).  C{scripts/run} preloads Debian's
C{libjemalloc2}; an operator starting C{twistd -n memcachier} by hand
would get glibc's, so with C{[node] allocator = "jemalloc"} (the default)
the node re-executes its own command line once with jemalloc preloaded,
before it opens anything.  When jemalloc is not installed it says so once
at start (C{[node] allocator_warning = false} silences it).
"""

import ctypes
import os
import sys
import sysconfig
import time
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from memcachier.tx.periodic import PeriodicService

_log = Logger()

#: set in the environment of the re-executed process, so that it never
#: re-executes again (a preload the dynamic linker refused, say)
REEXECUTED = "MEMCACHIER_ALLOCATOR_REEXECUTED"

#: jemalloc's options for the node (C{MALLOC_CONF}), set by the re-execution
#: and by C{scripts/run} unless the environment already has a C{MALLOC_CONF}
#: (an operator's options win): one reactor thread needs one arena, and
#: pages freed by churn go back to the kernel within a second instead of
#: jemalloc's default ten (C{docs/performance.md}, "Eviction churn")
JEMALLOC_CONF = "narenas:1,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"

#: Debian's jemalloc (package libjemalloc2), for the machine's multiarch
JEMALLOC_PATH = "/usr/lib/{}/libjemalloc.so.2".format(
    sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
)


def jemallocMapped(maps: str) -> bool:
    """
    Whether jemalloc is among a process's mapped files.

    @param maps: the text of C{/proc/PID/maps}.
    @rtype: L{bool}
    """
    return any("libjemalloc" in line for line in maps.splitlines())


def allocatorWarning(
    maps: str, installed: Optional[str]
) -> Optional[Tuple[str, Dict[str, str]]]:
    """
    The warning to log about the allocator, if any.

    @param maps: the text of C{/proc/self/maps}.
    @param installed: the path of an installed jemalloc to preload, or
        L{None}.
    @return: L{None} when jemalloc is loaded, else a 2-tuple of the
        message format and its fields.
    """
    if jemallocMapped(maps):
        return None
    preload = f"LD_PRELOAD={installed or JEMALLOC_PATH} twistd -n memcachier ..."
    how = (
        "preload it" if installed
        else "install Debian's libjemalloc2, then preload it"
    )
    return (
        "glibc's malloc is in use, not jemalloc: resident memory may grow under "
        "churn of values of mixed sizes (+34 % in the 10-minute soak); {how}: "
        "{preload}, or start the node with scripts/run (docs/operations.md, "
        '"Memory allocator"); [node] allocator_warning = false silences this',
        {"how": how, "preload": preload},
    )


def _observe(mapsPath: str, jemallocPath: str) -> Optional[Tuple[str, Optional[str]]]:
    """
    This process's mapped files and the installed jemalloc, if any; or
    L{None} where C{/proc} cannot tell (not Linux).
    """
    try:
        with open(mapsPath) as f:
            maps = f.read()
    except OSError:
        return None
    return maps, (jemallocPath if os.path.exists(jemallocPath) else None)


def warnUnlessJemalloc(
    mapsPath: str = "/proc/self/maps", jemallocPath: str = JEMALLOC_PATH
) -> bool:
    """
    Log one warning if this process does not run on jemalloc.  Says
    nothing where C{/proc} cannot tell (not Linux).

    @return: whether it warned.
    """
    found = _observe(mapsPath, jemallocPath)
    if found is None:
        return False
    warning = allocatorWarning(*found)
    if warning is None:
        return False
    text, fields = warning
    _log.warn(text, event="allocator_warning", **fields)
    return True


def jemallocCommand(
    maps: str,
    installed: Optional[str],
    environ: Mapping[str, str],
    argv: Sequence[str],
) -> Optional[Tuple[List[str], Dict[str, str]]]:
    """
    The command line and environment that run this process again on
    jemalloc, or L{None} when it already runs on it, jemalloc is not
    installed, or this process is that re-execution.

    @param maps: the text of C{/proc/self/maps}.
    @param installed: the path of an installed jemalloc, or L{None}.
    @param environ: this process's environment; its C{MALLOC_CONF}, if
        any, is kept, else L{JEMALLOC_CONF} is set.
    @param argv: this process's original command line, interpreter
        included (L{sys.orig_argv}).
    """
    if jemallocMapped(maps) or installed is None or environ.get(REEXECUTED):
        return None
    env = dict(environ)
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    env["LD_PRELOAD"] = ":".join(filter(None, [installed, environ.get("LD_PRELOAD")]))
    env[REEXECUTED] = installed
    return list(argv), env


def runOnJemalloc(
    mapsPath: str = "/proc/self/maps",
    jemallocPath: str = JEMALLOC_PATH,
    execve: Callable[[str, List[str], Dict[str, str]], NoReturn] = os.execve,
) -> bool:
    """
    Re-execute this process with jemalloc preloaded when it is installed
    and not loaded; call it before anything is opened or started.

    @return: L{False} when nothing was to be done (the process goes on);
        otherwise C{execve} does not return.
    """
    found = _observe(mapsPath, jemallocPath)
    if found is None:
        return False
    command = jemallocCommand(*found, os.environ, sys.orig_argv)
    if command is None:
        return False
    argv, env = command
    sys.stdout.flush()
    sys.stderr.flush()
    execve(sys.executable, argv, env)


def reexecutedOn() -> Optional[str]:
    """
    The jemalloc this process was re-executed with, if it was.
    """
    return os.environ.get(REEXECUTED)


#: seconds between two returns of glibc's free heap pages to the kernel:
#: a trim's cost grows with what it returns, so often and short (a 5 s
#: interval under churn made trims of up to 174 ms)
TRIM_INTERVAL = 1.0


class MallocTrim(PeriodicService):
    """
    Every L{TRIM_INTERVAL} seconds, C{malloc_trim(0)}: on glibc's
    allocator, the pages freed by evicted items inside the heap go back to
    the kernel.  glibc returns memory on its own only from the top of the
    heap, so a cache churning through values of mixed sizes, whose free
    chunks lie everywhere, otherwise holds every page it ever used
    (C{docs/performance.md}, "Eviction churn").

    @ivar trims: how many trims ran.
    @ivar worst: the longest one, in seconds.
    @ivar worstCpu: the most CPU one took, in seconds (the longest may
        have waited for a busy machine's CPU).
    """

    def __init__(
        self,
        clock: IReactorTime,
        trim: Callable[[int], Any],
        interval: float = TRIM_INTERVAL,
        timer: Callable[[], float] = time.perf_counter,
        cpuTimer: Callable[[], float] = time.thread_time,
    ) -> None:
        """
        @param trim: C{malloc_trim} (the C function, or a stand-in).
        @param timer: seconds, to time each trim.
        @param cpuTimer: this thread's CPU seconds.
        """
        super().__init__(interval, self.trim, clock, "malloc_trim", now=False)
        self._trim = trim
        self._timer = timer
        self._cpuTimer = cpuTimer
        self.trims = 0
        self.worst = 0.0
        self.worstCpu = 0.0

    def stopService(self) -> Any:
        if self.trims:
            _log.info("malloc_trim ran {trims} times, the longest {worst:.1f} ms, "
                      "the most CPU {worstCpu:.1f} ms",
                      event="malloc_trim", trims=self.trims, worst=self.worst * 1000,
                      worstCpu=self.worstCpu * 1000)
        return super().stopService()

    def trim(self) -> None:
        started, cpu = self._timer(), self._cpuTimer()
        self._trim(0)
        self.worst = max(self.worst, self._timer() - started)
        self.worstCpu = max(self.worstCpu, self._cpuTimer() - cpu)
        self.trims += 1


def glibcTrim() -> Optional[Callable[[int], Any]]:
    """
    This process's C{malloc_trim}, or L{None} where the C library has
    none (musl, macOS).
    """
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None


def memoryReturner(
    clock: IReactorTime,
    mapsPath: str = "/proc/self/maps",
    trim: Optional[Callable[[int], Any]] = None,
    interval: float = TRIM_INTERVAL,
) -> Optional[MallocTrim]:
    """
    The timer that returns glibc's free memory, when this process runs on
    it: L{None} on jemalloc (which returns memory by itself, on the decay
    of L{JEMALLOC_CONF}), where C{/proc} cannot tell, without a
    C{malloc_trim}, or with C{interval} 0 (C{[node] malloc_trim}).

    @param trim: C{malloc_trim}; by default L{glibcTrim}'s.
    @param interval: seconds between two trims.
    """
    if interval <= 0:
        return None
    try:
        with open(mapsPath) as f:
            maps = f.read()
    except OSError:
        return None
    if jemallocMapped(maps):
        return None
    trim = trim or glibcTrim()
    return None if trim is None else MallocTrim(clock, trim, interval)
