"""
C{python -m memcachier.bench.compare} and its load generator: the command
line, the build on demand, the parsing of the load generator's results and
the report.  The runs themselves are in
C{tests/integration/test_bench_compare.py}.
"""

import json
import os
import shutil

import pytest

from memcachier.bench import compare, loadgen

RESULT_LINE = ("requests_per_s=139012 keys_per_s=139012 hit_rate=1.0000 p50_us=320 p90_us=410 "
               "p99_us=900 p999_us=2100 max_us=4123 requests=695060 errors=0 seconds=5.000")


def test_defaultsAreCompareShs():
    """
    With no arguments: the four workloads, 5 s after 1 s of warm-up, three
    pairs, 50 connections, 100k keys of 100 B; pinned on a 2-core machine
    as compare.sh pins (servers on CPU 1, load generator on CPU 0).
    """
    options = compare.parseArguments([], cpus=2)
    assert options.workloads == ["ascii", "binary", "ascii_pipe16", "ascii_mget100"]
    assert (options.duration, options.warmup, options.pairs) == (5.0, 1.0, 3)
    assert (options.connections, options.keys, options.value_bytes) == (50, 100_000, 100)
    assert (options.server_cpu, options.loadgen_cpu) == (1, 0)
    assert options.port is None and not options.json


def test_oneCpuIsNotPinned():
    """
    On one CPU nothing is pinned (there is no other core to pin to).
    """
    options = compare.parseArguments(["ascii"], cpus=1)
    assert (options.server_cpu, options.loadgen_cpu) == (None, None)


def test_explicitCpusAndTarget():
    options = compare.parseArguments(
        ["binary", "--port", "11311", "--username", "u", "--password", "p", "--server-cpu", "0",
         "--loadgen-cpu", "1", "--json", "--build-dir", "/tmp/x"], cpus=4)
    assert options.workloads == ["binary"]
    assert (options.port, options.username, options.password) == (11311, "u", "p")
    assert (options.server_cpu, options.loadgen_cpu) == (0, 1)
    assert options.json and options.build_dir == "/tmp/x"


@pytest.mark.parametrize("argv, message", [
    (["ascii", "nosuch"], "unknown workload nosuch"),
    (["--port", "1", "--username", "u"], "--username and --password go together"),
    (["--username", "u", "--password", "p"], "node given by --port"),
    (["--pairs", "0"], "--pairs must be at least 1"),
])
def test_badArguments(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        compare.parseArguments(argv, cpus=2)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_workloadArguments():
    """
    Each workload's load generator arguments are run_bench.sh's.
    """
    def args(name, **kw):
        return loadgen.arguments(loadgen.WORKLOADS[name], 5000, **kw)

    assert args("ascii") == ["-p", "5000", "-c", "50", "-d", "1", "-r", "0.9", "-m", "1",
                             "-k", "100000", "-s", "100", "-t", "5", "-w", "1"]
    assert args("binary", credentials=("u", "p"))[-5:] == ["-B", "-u", "u", "-a", "p"]
    assert "-B" in args("binary") and "-B" not in args("ascii")
    pipe = args("ascii_pipe16")
    assert pipe[pipe.index("-d") + 1] == "16"
    mget = args("ascii_mget100", seconds=0.5, warmup=0)
    assert mget[mget.index("-m") + 1] == "100" and mget[mget.index("-r") + 1] == "1"
    assert mget[-4:] == ["-t", "0.5", "-w", "0"]


def test_parseResults():
    result = loadgen.parse("some noise\n" + RESULT_LINE + "\n")
    assert result["requests_per_s"] == 139012 and result["p99_us"] == 900
    assert result["max_us"] == 4123 and result["errors"] == 0
    assert result["hit_rate"] == 1.0 and result["seconds"] == 5.0


@pytest.mark.parametrize("output", ["", "loadgen: connect to 127.0.0.1:1: Connection refused\n"])
def test_parseNoResults(output):
    with pytest.raises(ValueError):
        loadgen.parse(output)


def test_noCompilerNamesCcAndGcc():
    """
    Without a C compiler the error says which were looked for.
    """
    with pytest.raises(SystemExit) as raised:
        loadgen.findCompiler(environ={}, which=lambda name: None)
    assert "cc" in str(raised.value) and "gcc" in str(raised.value)
    with pytest.raises(SystemExit) as raised:
        loadgen.findCompiler(environ={"CC": "clang-99"}, which=lambda name: None)
    assert "clang-99" in str(raised.value)
    assert loadgen.findCompiler(environ={}, which=lambda name: f"/usr/bin/{name}") == "/usr/bin/cc"


def test_buildDirectory():
    assert loadgen.defaultBuildDirectory({"XDG_CACHE_HOME": "/c"}) == "/c/memcachier-bench"
    assert loadgen.defaultBuildDirectory({}).endswith(os.path.join(".cache", "memcachier-bench"))


def test_sourceIsPackaged():
    """
    The C source is found through the package (package data, not a path
    into a checkout).
    """
    with open(loadgen.source()) as f:
        assert "epoll_wait" in f.read()


def test_buildOnceThenAgainWhenTheSourceChanges(tmp_path):
    """
    The binary is built when missing, reused while its source is the
    same, and rebuilt (under another name) when the source changes.
    """
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.fail("no C compiler (cc or gcc): Debian: apt-get install gcc")
    source = tmp_path / "loadgen.c"
    shutil.copy(loadgen.source(), source)
    first = loadgen.build(str(tmp_path / "build"), str(source))
    assert os.access(first, os.X_OK)
    built = os.stat(first).st_mtime_ns
    assert loadgen.build(str(tmp_path / "build"), str(source)) == first
    assert os.stat(first).st_mtime_ns == built
    source.write_text(source.read_text() + "\n/* changed */\n")
    second = loadgen.build(str(tmp_path / "build"), str(source))
    assert second != first and os.access(second, os.X_OK)


def test_buildFailureShowsTheCompilersOutput(tmp_path):
    source = tmp_path / "broken.c"
    source.write_text("int main(void) { return nope; }\n")
    with pytest.raises(SystemExit) as raised:
        loadgen.build(str(tmp_path / "build"), str(source))
    assert "nope" in str(raised.value)


def _side(ops, p50, p99, worst, errors=0):
    return {"requests_per_s": ops, "p50_us": p50, "p99_us": p99, "max_us": worst, "errors": errors}


PAIRS = [
    {"memcached": _side(100_000, 300, 900, 4000), "memcachier": _side(60_000, 500, 1500, 9000), "ratio": 0.6},
    {"memcached": _side(120_000, 280, 800, 3000), "memcachier": _side(84_000, 450, 1400, 12000), "ratio": 0.7},
    {"memcached": _side(110_000, 290, 850, 5000), "memcachier": _side(71_500, 470, 1300, 8000), "ratio": 0.65},
]


def test_summaryIsTheMedianRatioAndLatencies():
    """
    The ratio is the median over pairs; p50 and p99 the median of each
    side's runs, max the worst.
    """
    result = compare.summarize("ascii", PAIRS)
    assert result["ratio"] == 0.65
    assert result["latency"]["memcached"] == {"p50_us": 290, "p99_us": 850, "max_us": 5000}
    assert result["latency"]["memcachier"] == {"p50_us": 470, "p99_us": 1400, "max_us": 12000}
    assert result["errors"] == 0
    assert compare.summarize("ascii", PAIRS[:2])["ratio"] == 0.65


def test_formatWorkload():
    text = compare.formatWorkload(compare.summarize("ascii", PAIRS))
    lines = text.splitlines()
    assert lines[0] == ("  pair 1: memcached 100000 req/s (p50 300 us, p99 900 us, max 4.00 ms), "
                        "memcachier 60000 req/s (p50 500 us, p99 1.50 ms, max 9.00 ms), ratio 0.600")
    assert "ascii: ratio=0.650" in lines
    assert "  memcachier: p50 470 us, p99 1.40 ms, max 12.00 ms" in lines
    assert "ERRORS" not in text


def test_formatWorkloadShowsErrors():
    pairs = [dict(PAIRS[0], memcachier=_side(60_000, 500, 1500, 9000, errors=7))]
    assert "ERRORS: 7 requests answered with an error" in compare.formatWorkload(
        compare.summarize("binary", pairs))


def test_formatMachine():
    info = {"cpu": "Some CPU", "cores": 2, "kernel": "Linux 6.1", "python": "3.11.2",
            "twisted": "24.11.0", "memcached": "memcached 1.6.18", "node_allocator": "glibc",
            "server_cpu": 1, "loadgen_cpu": 0, "load_average": [0.1, 0.2, 0.3]}
    text = compare.formatMachine(info)
    assert text.splitlines()[0] == ("machine: Some CPU, 2 cores, Linux 6.1, Python 3.11.2, "
                                    "Twisted 24.11.0, memcached 1.6.18")
    assert "servers on CPU 1, load generator on CPU 0" in text and "load average 0.1 0.2 0.3" in text
    assert "not pinned" in compare.formatMachine(dict(info, server_cpu=None, loadgen_cpu=None))
    json.dumps(info)


def test_cpuModel(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU @ 2.00GHz\n")
    assert compare.cpuModel(str(cpuinfo)) == "Example CPU @ 2.00GHz"
