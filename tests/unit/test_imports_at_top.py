"""
Imports go at the top of a module; inside a function only for what is
optional or must not be imported early (the names below, each with why).
"""

import ast
import pathlib

import memcachier

PACKAGE = pathlib.Path(memcachier.__file__).parent

#: module imported inside a function -> why it may be
ALLOWED = {
    "psycopg": "the PostgreSQL driver is an optional extra (LISTEN/NOTIFY)",
    "ctypes": "libhashkit is optional: the ring falls back to Python",
    "ctypes.util": "libhashkit is optional: the ring falls back to Python",
    "twisted.internet": "the global reactor: importing it installs one, twistd must first",
    "memcachier.plugins": "the default dropin package, scanned only when none is given",
}


def _lateImports(path):
    tree = ast.parse(path.read_text(), str(path))
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom):
                    yield node.lineno, node.module
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        yield node.lineno, alias.name


def test_importsAtTheTop():
    """
    Outside the benchmarks (scripts that import what each run needs) and
    the migrations (Alembic's own layout), every import inside a function
    names an optional or late module of L{ALLOWED}.
    """
    late = [
        f"{path.relative_to(PACKAGE)}:{line}: {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "bench" not in path.parts and "migrations" not in path.parts
        for line, module in _lateImports(path)
        if module not in ALLOWED
    ]
    assert late == []
