"""
Benchmarks runnable with C{python -m}: they measure, they are not tests
(see C{docs/performance.md}).
"""
