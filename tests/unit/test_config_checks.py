"""
Configuration checked before anything starts: endpoint strings the way
twistd parses them, TLS files that must load, durations with units, and
the hardening keys (backlogs, ceilings, timeouts, auth budget).
"""

import pytest

from memcachier.node.settings import ConfigError, Settings, parseDuration, parseSettings


def errors(text):
    with pytest.raises(ConfigError) as raised:
        parseSettings(text)
    return raised.value.errors


def test_unknownEndpointType():
    """
    C{tpc:11211} names the key and the valid types.
    """
    (error,) = errors('[memcache]\nlisten = ["tpc:11211"]\n')
    assert error.startswith('memcache.listen[0]: unknown endpoint type "tpc" in "tpc:11211"')
    assert "valid types: tcp, ssl, unix," in error and "tcp6" in error


def test_endpointOptionsParsedAsTwistedDoes():
    """
    Options the type's parser does not take, and bad values, are errors
    naming the key, found without listening.
    """
    (error,) = errors('[web]\nlisten = "tcp:8080:colour=blue"\n')
    assert error.startswith('web.listen: invalid tcp: endpoint "tcp:8080:colour=blue"')
    (error,) = errors('[memcache]\nlisten = ["tcp:11211:backlog=lots"]\n')
    assert "expected a number for backlog" in error
    assert parseSettings('[memcache]\nlisten = ["unix:/tmp/m.sock:mode=660", "tcp6:11211"]\n')


def test_tlsFilesMustLoad(tmp_path, selfSignedCert):
    """
    An C{ssl:} listener's files must exist and parse; an unknown C{ssl:}
    option is named.
    """
    key, cert = selfSignedCert
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    found = errors(
        "[memcache]\nlisten = [\n"
        f'  "ssl:1:privateKey={key}:certKey={garbage}",\n'
        f'  "ssl:2:privateKey={key}:certKey={cert}:clientCAs={garbage}",\n'
        f'  "ssl:3:privateKey={key}:certKey={cert}:verify=yes",\n'
        f'  "ssl:4:privateKey={key}:certKey={cert}:clientCAs=/nonexistent.pem",\n'
        "]\n"
    )
    assert len(found) == 4
    assert found[0].startswith("memcache.listen[0]: TLS settings of")
    assert found[1].startswith("memcache.listen[1]: TLS settings of") and "no certificate" in found[1]
    assert "unsupported ssl: options verify" in found[2]
    assert 'clientCAs file "/nonexistent.pem" cannot be read' in found[3]
    settings = parseSettings(
        f'[memcache]\nlisten = ["ssl:1:privateKey={key}:certKey={cert}:clientCAs={cert}"]\n'
    )
    assert settings.memcache.listen[0].endswith(f"clientCAs={cert}")


def test_durations():
    """
    Durations are seconds or strings with a unit.
    """
    assert parseDuration(10) == 10.0
    assert parseDuration("500ms") == 0.5
    assert parseDuration("10s") == 10.0
    assert parseDuration("5m") == 300.0
    assert parseDuration("1h") == 3600.0
    for bad in ("soon", "10 parsecs", True, float("inf"), None, "-1s"):
        assert parseDuration(bad) is None


def test_hardeningKeys():
    """
    The limits have memcached-like defaults and are read from their
    tables; every bad value is reported at once.
    """
    defaults = parseSettings("")
    assert (defaults.memcache.backlog, defaults.web.backlog) == (1024, 1024)
    assert (defaults.memcache.max_connections, defaults.web.max_connections) == (0, 0)
    assert (defaults.memcache.auth_failure_rate, defaults.memcache.auth_failure_burst) == (5.0, 10)
    assert (defaults.web.header_timeout, defaults.web.body_timeout,
            defaults.web.idle_timeout, defaults.node.shutdown_timeout) == (10.0, 30.0, 60.0, 10.0)
    assert defaults == Settings()
    settings = parseSettings(
        "[memcache]\nbacklog = 4096\nmax_connections = 5000\nauth_failure_rate = 0.5\n"
        "auth_failure_burst = 3\n[web]\nbacklog = 128\nmax_connections = 100\n"
        'header_timeout = "2s"\nbody_timeout = "1m"\nidle_timeout = 5\n'
        '[node]\nshutdown_timeout = "30s"\n'
    )
    assert (settings.memcache.backlog, settings.memcache.max_connections) == (4096, 5000)
    assert (settings.memcache.auth_failure_rate, settings.memcache.auth_failure_burst) == (0.5, 3)
    assert (settings.web.backlog, settings.web.max_connections) == (128, 100)
    assert (settings.web.header_timeout, settings.web.body_timeout,
            settings.web.idle_timeout, settings.node.shutdown_timeout) == (2.0, 60.0, 5.0, 30.0)
    found = errors(
        '[memcache]\nbacklog = 0\nmax_connections = -1\nauth_failure_rate = "fast"\n'
        '[web]\nheader_timeout = "soon"\nbody_timeout = 0\n[node]\nshutdown_timeout = "x"\n'
    )
    assert [e.split(":")[0] for e in found] == [
        "memcache.backlog", "memcache.max_connections", "memcache.auth_failure_rate",
        "web.header_timeout", "web.body_timeout", "node.shutdown_timeout",
    ]


def test_ceilingsMustFitTheDescriptorLimit(tmp_path):
    """
    Ceilings that do not fit under C{ulimit -n} stop twistd before it
    starts, saying by how much.
    """
    from twisted.python import usage

    from memcachier.tx.ceiling import descriptorLimit
    from memcachier.node.tap import Options

    path = tmp_path / "m.toml"
    path.write_text(f"[memcache]\nmax_connections = {descriptorLimit()}\n")
    with pytest.raises(usage.UsageError, match="exceed the descriptor limit"):
        Options().parseOptions([f"--config={path}"])


def test_exampleConfigIsTheDefaults():
    """
    C{memcachier.example.toml} documents the embedded defaults: loading it
    gives exactly them.
    """
    from pathlib import Path

    from memcachier.node.settings import loadSettings

    example = Path(__file__).resolve().parents[2] / "memcachier.example.toml"
    assert loadSettings(str(example)) == Settings()


def test_allocatorWarning():
    """
    C{[node] allocator_warning} is on by default, can be turned off, and
    takes only a boolean.
    """
    assert parseSettings("").node.allocator_warning is True
    assert parseSettings("[node]\nallocator_warning = false\n").node.allocator_warning is False
    assert errors('[node]\nallocator_warning = "no"\n') == [
        'node.allocator_warning: expected true or false, got "no"'
    ]
