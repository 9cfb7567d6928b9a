"""
The source tree's own promises: every C{test-case-name} header names a
test module that exists (a header naming nothing sends C{trial} and the
reader to nothing).
"""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEADER = re.compile(r"-\*-\s*test-case-name:\s*(.+?)\s*-\*-")


def headers():
    """
    @return: (source path, test module name) for every header under
        C{memcachier/} and C{twisted/plugins/}.
    """
    for base in ("memcachier", "twisted/plugins"):
        for path in sorted((ROOT / base).rglob("*.py")):
            with path.open(encoding="utf-8") as f:
                head = [f.readline() for _ in range(2)]
            for line in head:
                match = HEADER.search(line)
                if match:
                    for name in match.group(1).split(","):
                        yield path.relative_to(ROOT), name.strip()


def test_headersNameExistingTests():
    """
    Each C{test-case-name} names a module of C{tests/} that exists.
    """
    found = list(headers())
    assert len(found) > 50
    missing = [
        f"{path}: {name}" for path, name in found
        if not (ROOT / (name.replace(".", "/") + ".py")).is_file()
    ]
    assert missing == []


#: modules no unit or integration test exercises directly (a benchmark
#: entry measured by hand), and the database migrations (exercised by
#: every test that builds a control plane)
WITHOUT_HEADER = {"memcachier/bench/costbench.py"}


def test_everyModuleNamesItsTests():
    """
    Every module of C{memcachier/} (packages' C{__init__} and migrations
    aside) has a C{test-case-name} header.
    """
    named = {str(path) for path, _name in headers()}
    bare = [
        str(path.relative_to(ROOT)) for path in sorted((ROOT / "memcachier").rglob("*.py"))
        if path.name != "__init__.py"
        and "migrations" not in path.parts
        and str(path.relative_to(ROOT)) not in named | WITHOUT_HEADER
    ]
    assert bare == []
