# -*- test-case-name: tests.unit.test_speedups -*-
"""
Whether the request hot path runs its loops in C.

C{memcachier._speedups} (built from C{memcachier/_speedups.c} at install
when a C compiler is there) does the loops a request pays per key or per
line: the multi-get's lookups and the rendering of its C{VALUE} blocks,
and the codecs' runs of one-key gets (ASCII C{get <key>} lines, binary
C{GET}, C{GETQ}, C{GETK} and C{GETKQ} frames), looked up, counted and
tapped as L{memcachier.protocols.session.Session.get} does it.  Their pure-Python
twins (L{memcachier.stores.memory.MemoryKeyspace.getMany},
L{memcachier.protocols.text.renderStream}, the codecs' own line and frame
loops) define the behaviour and run when the module is missing; the tests
run both (docs/performance.md, "The multi-get in C" and "One-key gets in
C").
"""

try:
    from memcachier import _speedups
except ImportError:  # pragma: no cover (installed without a C compiler)
    _speedups = None

#: the C module, or L{None} when the pure-Python loops run
accelerator = _speedups


def describe():
    """
    One word for the startup log and C{stats settings}: C{"c"} or
    C{"python"}.
    """
    return "python" if accelerator is None else "c"
