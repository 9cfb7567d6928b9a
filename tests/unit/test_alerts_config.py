"""
C{[alerts]}, C{[alerts.smtp]} and C{[web] public_url}: the issue's names
and defaults, durations, and every mistake reported at once.
"""

import pytest

from memcachier.node.settings import ConfigError, parseDuration, parseSettings, publicUrlOf


def test_defaults():
    s = parseSettings("")
    assert (s.alerts.interval, s.alerts.window, s.alerts.allow_http_loopback) == (60.0, 300.0, False)
    assert (s.alerts.smtp.host, s.alerts.smtp.port, s.alerts.smtp.starttls) == ("localhost", 25, "required")
    assert (s.alerts.smtp.username, s.alerts.smtp.password, s.alerts.smtp.sender) == ("", "", "alerts@localhost")
    assert s.web.public_url == "http://127.0.0.1:8080"


def test_everyKey():
    s = parseSettings(
        '[web]\npublic_url = "https://cache.example.com/"\n'
        '[alerts]\ninterval = "1s"\nwindow = "5s"\nallow_http_loopback = true\n'
        '[alerts.smtp]\nhost = "relay.example.com"\nport = 587\nstarttls = "optional"\n'
        'username = "u"\npassword = "p"\nsender = "ops@example.com"\n'
    )
    assert (s.alerts.interval, s.alerts.window, s.alerts.allow_http_loopback) == (1.0, 5.0, True)
    assert (s.alerts.smtp.host, s.alerts.smtp.port, s.alerts.smtp.starttls) == ("relay.example.com", 587, "optional")
    assert (s.alerts.smtp.username, s.alerts.smtp.password, s.alerts.smtp.sender) == ("u", "p", "ops@example.com")
    assert s.web.public_url == "https://cache.example.com"


def test_publicUrlFollowsTheWebListener():
    assert parseSettings('[web]\nlisten = "tcp:9090:interface=127.0.0.1"\n').web.public_url == (
        "http://127.0.0.1:9090")
    assert publicUrlOf(r"tcp:8080:interface=\:\:1") == "http://[::1]:8080"
    assert publicUrlOf("ssl:8443:privateKey=k.pem:interface=127.0.0.1") == "https://127.0.0.1:8443"
    assert publicUrlOf("unix:/tmp/web.sock") == "http://127.0.0.1:8080"


@pytest.mark.parametrize("value, seconds", [
    ("60s", 60), ("5m", 300), ("1h", 3600), ("500ms", 0.5), (30, 30), (1.5, 1.5), ("2", 2),
])
def test_durations(value, seconds):
    assert parseDuration(value) == seconds


@pytest.mark.parametrize("value", ["", "5 minutes", "-1s", 0, True, "1y", None, "nan"])
def test_badDurations(value):
    assert parseDuration(value) is None


def test_everyMistakeAtOnce():
    with pytest.raises(ConfigError) as e:
        parseSettings(
            '[web]\npublic_url = "ftp://x"\n'
            '[alerts]\ninterval = "soon"\nwindow = 0\nallow_http_loopback = "yes"\ncolour = 1\n'
            '[alerts.smtp]\nport = 70000\nstarttls = "sometimes"\npassword = "p"\n'
            'sender = "nobody"\nusername = 3\n'
        )
    text = str(e.value)
    for fragment in [
        "web.public_url: expected an http:// or https:// URL",
        'alerts.interval: expected a duration such as "60s" or "5m", got "soon"',
        "alerts.window: expected a duration",
        "alerts.allow_http_loopback: expected true or false",
        "alerts.colour: unknown key",
        "alerts.smtp.port: expected a port number, got 70000",
        'alerts.smtp.starttls: expected one of "required", "optional", "off", got "sometimes"',
        "alerts.smtp.username: expected a string",
        "alerts.smtp.password: set without a username",
        'alerts.smtp.sender: expected an email address, got "nobody"',
    ]:
        assert fragment in text, text
