# -*- test-case-name: tests.unit.test_speedups -*-
"""
Whether the multi-get runs its per-key loops in C.

C{memcachier._speedups} (built from C{memcachier/_speedups.c} at install
when a C compiler is there) does the two loops a multi-get pays once per
key: the store's lookups and the rendering of the C{VALUE} blocks.  Their
pure-Python twins (L{memcachier.stores.memory.MemoryKeyspace.getMany},
L{memcachier.protocols.text.renderStream}) define the behaviour and run
when the module is missing; the tests run both (docs/performance.md, "The
multi-get in C").
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
