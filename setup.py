"""
Everything about the package is in setup.cfg; this file only declares the
C accelerator of the multi-get (memcachier/_speedups.c), which setup.cfg
cannot.  It is optional: without a C compiler the install still works and
the pure-Python twins run (memcachier.speedups says which).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("memcachier._speedups", ["memcachier/_speedups.c"], optional=True),
    ],
)
