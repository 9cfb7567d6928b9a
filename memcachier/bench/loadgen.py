# -*- test-case-name: tests.unit.test_bench_compare -*-
"""
The project's own load generator (C{loadgen.c}, shipped with the package):
built on demand with the system's C compiler, run pinned to a CPU, its one
line of results parsed.

C Python cannot saturate memcached from one core; a C program with one
epoll loop can, so this is C, built on the machine that measures.
"""

import hashlib
import os
import re
import shutil
import subprocess
from importlib import resources
from typing import Callable, Mapping, Optional, Sequence

import attr

CFLAGS = ("-O2", "-Wall")

_RESULT = re.compile(r"(\w+)=([\d.]+)")
_INTEGERS = ("requests_per_s", "keys_per_s", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
             "requests", "errors")


@attr.s(frozen=True, auto_attribs=True)
class Workload:
    """
    One workload of C{compare.sh}'s four: what each connection sends.
    """

    name: str
    depth: int = 1
    keysPerGet: int = 1
    getRatio: float = 0.9
    binary: bool = False

    def describe(self, connections: int, keys: int, valueBytes: int) -> str:
        """
        One line a reader of the figures needs.
        """
        gets = f"{self.getRatio * 100:g} % gets"
        if self.keysPerGet > 1:
            gets += f" of {self.keysPerGet} keys each"
        protocol = "binary (SASL PLAIN)" if self.binary else "ASCII"
        return (f"{protocol}, {connections} connections, {self.depth} in flight each, {gets}, "
                f"{keys} keys, {valueBytes} B values")


WORKLOADS = {
    w.name: w for w in (
        Workload("ascii"),
        Workload("binary", binary=True),
        Workload("ascii_pipe16", depth=16),
        Workload("ascii_mget100", keysPerGet=100, getRatio=1.0),
    )
}


def source() -> str:
    """
    The path of C{loadgen.c} as installed with the package.
    """
    return str(resources.files("memcachier.bench").joinpath("loadgen.c"))


def defaultBuildDirectory(environ: Mapping[str, str] = os.environ) -> str:
    """
    Where built load generators are kept: C{$XDG_CACHE_HOME/memcachier-bench},
    else C{~/.cache/memcachier-bench}.
    """
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "memcachier-bench")


def findCompiler(environ: Mapping[str, str] = os.environ,
                 which: Callable[[str], Optional[str]] = shutil.which) -> str:
    """
    C{$CC}, else C{cc}, else C{gcc} from C{PATH}.

    @raise SystemExit: none of them is there, naming them.
    """
    wanted = environ.get("CC")
    candidates = [wanted] if wanted else ["cc", "gcc"]
    for name in candidates:
        found = which(name)
        if found:
            return found
    raise SystemExit(
        "no C compiler to build the load generator: "
        + (f"$CC ({wanted}) is not on PATH" if wanted else "neither cc nor gcc is on PATH")
        + " (Debian: apt-get install gcc)"
    )


def build(directory: str, sourcePath: Optional[str] = None, compiler: Optional[str] = None) -> str:
    """
    The load generator built from C{sourcePath} (default: the packaged
    C{loadgen.c}) into C{directory}, compiling it only when no binary of
    this source exists there: the binary's name carries a hash of the
    source and flags, so an edited or upgraded source is never stale.

    @return: the binary's path.
    @raise SystemExit: no compiler, or the compiler failed (its output).
    """
    sourcePath = sourcePath or source()
    with open(sourcePath, "rb") as f:
        text = f.read()
    digest = hashlib.sha256(text + " ".join(CFLAGS).encode()).hexdigest()[:16]
    binary = os.path.join(directory, f"loadgen-{digest}")
    if os.access(binary, os.X_OK):
        return binary
    compiler = compiler or findCompiler()
    os.makedirs(directory, exist_ok=True)
    partial = f"{binary}.{os.getpid()}.tmp"
    result = subprocess.run([compiler, *CFLAGS, "-o", partial, sourcePath],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"building the load generator with {compiler} failed:\n{result.stderr}")
    os.replace(partial, binary)
    return binary


def arguments(workload: Workload, port: int, *, connections: int = 50, keys: int = 100_000,
              valueBytes: int = 100, seconds: float = 5.0, warmup: float = 1.0,
              credentials: Optional[Sequence[str]] = None) -> list[str]:
    """
    The command-line arguments of one run of C{workload} against C{port}.
    """
    args = ["-p", str(port), "-c", str(connections), "-d", str(workload.depth),
            "-r", f"{workload.getRatio:g}", "-m", str(workload.keysPerGet), "-k", str(keys),
            "-s", str(valueBytes), "-t", f"{seconds:g}", "-w", f"{warmup:g}"]
    if workload.binary:
        args.append("-B")
    if credentials:
        username, password = credentials
        args += ["-u", username, "-a", password]
    return args


def parse(output: str) -> dict:
    """
    The results of the last line of the load generator's output.

    @raise ValueError: there is no such line.
    """
    lines = output.strip().splitlines()
    fields = dict(_RESULT.findall(lines[-1])) if lines else {}
    if "requests_per_s" not in fields:
        raise ValueError(f"no results in the load generator's output: {output!r}")
    return {k: int(float(v)) if k in _INTEGERS else float(v) for k, v in fields.items()}


def run(binary: str, args: Sequence[str], cpu: Optional[int] = None, timeout: float = 600) -> dict:
    """
    Run the load generator (on CPU C{cpu} when given) and parse its results.

    @raise RuntimeError: it failed (with what it said).
    """
    preexec = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                            preexec_fn=preexec)
    if result.returncode != 0:
        raise RuntimeError(f"load generator exited with {result.returncode}: "
                           f"{result.stderr.strip()} {result.stdout.strip()}")
    return parse(result.stdout)
