# -*- test-case-name: tests.integration.test_store_pauses -*-
"""
What the benchmark entries share to run servers as operators do: a
C{twistd -n memcachier} process on a configuration file, started and
waited for until it answers C{version}.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time


def freePort():
    """
    A TCP port on 127.0.0.1 free at the time of asking.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executable(name):
    """
    The path of console script C{name} of this Python's environment.
    """
    return os.path.join(os.path.dirname(sys.executable), name)


def startNode(config, directory, logPath, port, timeout=60):
    """
    Start C{twistd -n memcachier --config=CONFIG} in C{directory}, its
    output to C{logPath}, and wait until it answers C{version} on C{port}.

    @return: the L{subprocess.Popen}.
    @raise RuntimeError: it exited, or did not answer within C{timeout}
        seconds (with its log).
    """
    with open(logPath, "wb") as log:
        process = subprocess.Popen(
            [executable("twistd"), "-n", "--pidfile=", "--logfile=-", "memcachier",
             f"--config={config}"],
            cwd=directory, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        waitForMemcache(port, process, timeout)
    except RuntimeError as e:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise RuntimeError(f"{e}: {_read(logPath)}") from None
    return process


def waitForMemcache(port, process, timeout=30.0):
    """
    Wait until the memcache port on 127.0.0.1 I{answers} (C{version}).

    Accepting a TCP connection is not enough: the server binds at once but
    accepts only once its control index is loaded, so an early client
    sits in the listen backlog, and one with a short timeout (pylibmc's
    SASL exchange) fails.

    @raise RuntimeError: the process exited, or C{timeout} passed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"version\r\n")
                if s.recv(100).startswith(b"VERSION "):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not answering after {timeout}s")


def _read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


class TwistdNode:
    """
    One C{twistd -n memcachier} on the configuration file C{config}, run
    in C{directory} and logging to C{twistd.log} there.
    """

    def __init__(self, directory, config, port):
        self.directory = directory
        self.config = config
        self.port = port
        self.logPath = os.path.join(directory, "twistd.log")
        self.process = None

    def admin(self, *args):
        """
        Run C{memcachier-admin ARGS --json} on this node's configuration.

        @return: what it printed, parsed.
        """
        out = subprocess.run(
            [executable("memcachier-admin"), f"--config={self.config}", *args, "--json"],
            cwd=self.directory, capture_output=True, text=True, check=True, timeout=120,
        ).stdout
        return json.loads(out)

    def start(self):
        self.process = startNode(self.config, self.directory, self.logPath, self.port)

    def alive(self):
        return self.process.poll() is None

    def log(self):
        return _read(self.logPath)

    def stop(self):
        """
        SIGTERM (the graceful stop), then SIGKILL after 30 s.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
