# -*- test-case-name: tests.unit.test_allocator -*-
"""
Which memory allocator the process runs on, and one warning when it is
glibc's.

Under a cache of values of mixed sizes replaced at random, glibc's malloc
keeps the memory freed by replaced values in fragmented arenas: resident
memory grew +34 % in the 10-minute soak, while jemalloc stays flat
(C{docs/performance.md}).  C{scripts/run} preloads Debian's
C{libjemalloc2}; an operator starting C{twistd -n memcachier} by hand
gets glibc's unless they preload it too, so the node says so once at
start (C{[node] allocator_warning = false} silences it).
"""

import os
import sysconfig
from typing import Dict, Optional, Tuple

from twisted.logger import Logger

_log = Logger()

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


def warnUnlessJemalloc(
    mapsPath: str = "/proc/self/maps", jemallocPath: str = JEMALLOC_PATH
) -> bool:
    """
    Log one warning if this process does not run on jemalloc.  Says
    nothing where C{/proc} cannot tell (not Linux).

    @return: whether it warned.
    """
    try:
        with open(mapsPath) as f:
            maps = f.read()
    except OSError:
        return False
    installed = jemallocPath if os.path.exists(jemallocPath) else None
    warning = allocatorWarning(maps, installed)
    if warning is None:
        return False
    text, fields = warning
    _log.warn(text, event="allocator_warning", **fields)
    return True
