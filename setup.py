"""
Everything about the package is in setup.cfg; this file only declares the
C modules, which setup.cfg cannot: the accelerator of the multi-get
(memcachier/_speedups.c) and the segment store's keyspace
(memcachier/_segments.c).  Both are optional: without a C compiler the
install still works, the pure-Python twins of the accelerator run
(memcachier.speedups says which) and the "segment" store plugin says it is
missing when chosen.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("memcachier._speedups", ["memcachier/_speedups.c"], optional=True),
        Extension("memcachier._segments", ["memcachier/_segments.c"], optional=True),
    ],
)
