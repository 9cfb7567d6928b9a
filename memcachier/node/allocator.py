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

import os
import sys
import sysconfig
from typing import Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple

from twisted.logger import Logger

_log = Logger()

#: set in the environment of the re-executed process, so that it never
#: re-executes again (a preload the dynamic linker refused, say)
REEXECUTED = "MEMCACHIER_ALLOCATOR_REEXECUTED"

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
    @param environ: this process's environment.
    @param argv: this process's original command line, interpreter
        included (L{sys.orig_argv}).
    """
    if jemallocMapped(maps) or installed is None or environ.get(REEXECUTED):
        return None
    env = dict(environ)
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
